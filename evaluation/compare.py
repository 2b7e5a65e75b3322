"""One checkpoint under a paper's own protocol and under ours, in one table.

    python -m evaluation.compare exp/voc2012/deeplabv3plus_mobilenet_sam/robust_samat \
        exp/voc2012/deeplabv3plus_mobilenet_sam/robust
    python -m evaluation.compare --reference pirat exp/voc2012/upernet_convnext_t_pirat/robust_pirat \
        exp/voc2012/upernet_convnext_t_pirat/robust

The first folder is a run of the paper's protocol: ``tool_test/voc2012/samat_eval.sh`` (SAM-AT: PGD-10, last
iterate, native resolution) or, with ``--reference pirat``, ``tool_test/<dataset>/pirat_eval.sh`` (PIR-AT: resize
and centre crop, SEA-300); the second a ``robust_eval.sh`` run (the strong suite, SEA and the worst case); both are
test.py save_folders. Each row: the protocol, the mode, its threat model and eps, mIoU (semseg's convention) and
the mean over present classes (VainF's and PIR-AT's mIoU), and the number of images.
"""

from __future__ import annotations

from pathlib import Path

from evaluation.report import read_result
from evaluation.rows import ResultRow, markdown_table
from util.errors import ArgumentParser, run_main

REFERENCES = {
    "samat": ("SAM-AT", "run tool_test/voc2012/samat_eval.sh"),
    "pirat": ("PIR-AT", "run tool_test/<dataset>/pirat_eval.sh"),
}
OURS = ("ours", "run tool_test/<dataset>/robust_eval.sh")


def rows(folder: Path, protocol: str, how: str) -> list[tuple]:
    """The table's rows of one test.py save_folder."""
    result = read_result(folder / "results.json", f"{how} into '{folder}'")
    out = []
    for data in result.get("modes", [result]):
        mode = ResultRow.from_json(data)
        norm = mode.threat_model if mode.kind != "clean" else "-"
        shown = f"{mode.eps * 255:.3g}/255" if norm == "linf" else f"{mode.eps:.3g}" if norm == "l2" else "0"
        present = "-" if mode.present_mIoU is None else f"{mode.present_mIoU:.4f}"
        out.append((protocol, mode.mode, norm, shown, f"{mode.mIoU:.4f}", present, data.get("images", "-")))
    return out


def table(reference: Path, ours: Path, kind: str = "samat") -> str:
    """The table of a ``kind`` protocol's save_folder and ours."""
    header = ("protocol", "mode", "norm", "eps", "mIoU", "mIoU (present classes)", "images")
    body = [
        row
        for folder, (protocol, how) in ((reference, REFERENCES[kind]), (ours, OURS))
        for row in rows(folder, protocol, how)
    ]
    return "\n".join(markdown_table(header, body))


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m evaluation.compare", description=__doc__.splitlines()[0])
    parser.add_argument(
        "reference", type=Path, help="save_folder of the paper's protocol (samat_eval.sh, pirat_eval.sh)"
    )
    parser.add_argument("ours", type=Path, help="save_folder of tool_test/<dataset>/robust_eval.sh")
    parser.add_argument(
        "--reference",
        dest="kind",
        choices=list(REFERENCES),
        default="samat",
        help="whose protocol the first folder ran",
    )
    args = parser.parse_args(argv)
    print(table(args.reference, args.ours, args.kind))


if __name__ == "__main__":
    run_main(main)
