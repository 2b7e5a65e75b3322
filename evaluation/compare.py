"""One checkpoint under SAM-AT's protocol and under ours, in one table.

    python -m evaluation.compare exp/voc2012/deeplabv3plus_mobilenet_sam/robust_samat \
        exp/voc2012/deeplabv3plus_mobilenet_sam/robust

The first folder is a ``tool_test/voc2012/samat_eval.sh`` run (PGD-10, last iterate, native resolution), the
second a ``robust_eval.sh`` run (the strong suite, SEA and the worst case); both are test.py save_folders. Each
row: the protocol, the mode, its threat model and eps, mIoU (semseg's convention) and VainF's mean over present
classes, and the number of images.
"""

from __future__ import annotations

from pathlib import Path

from evaluation.report import read_result
from evaluation.rows import ResultRow, markdown_table
from util.errors import ArgumentParser, run_main

PROTOCOLS = (("SAM-AT", "run tool_test/voc2012/samat_eval.sh"), ("ours", "run tool_test/<dataset>/robust_eval.sh"))


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


def table(samat: Path, ours: Path) -> str:
    header = ("protocol", "mode", "norm", "eps", "mIoU", "mIoU (present classes)", "images")
    body = [
        row
        for folder, (protocol, how) in zip((samat, ours), PROTOCOLS, strict=True)
        for row in rows(folder, protocol, how)
    ]
    return "\n".join(markdown_table(header, body))


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m evaluation.compare", description=__doc__.splitlines()[0])
    parser.add_argument("samat", type=Path, help="save_folder of tool_test/voc2012/samat_eval.sh")
    parser.add_argument("ours", type=Path, help="save_folder of tool_test/<dataset>/robust_eval.sh")
    args = parser.parse_args(argv)
    print(table(args.samat, args.ours))


if __name__ == "__main__":
    run_main(main)
