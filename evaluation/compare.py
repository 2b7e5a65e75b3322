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
from util.errors import ArgumentParser, run_main

PROTOCOLS = (("SAM-AT", "run tool_test/voc2012/samat_eval.sh"), ("ours", "run tool_test/<dataset>/robust_eval.sh"))


def rows(folder: Path, protocol: str, how: str) -> list[str]:
    result = read_result(folder / "results.json", f"{how} into '{folder}'")
    out = []
    for mode in result.get("modes", [result]):
        attack = mode.get("attack") or {}
        norm = attack.get("norm", "linf") if mode.get("kind") != "clean" else "-"
        eps = mode.get("eps", 0.0)
        shown = f"{eps * 255:.3g}/255" if norm == "linf" else f"{eps:.3g}" if norm == "l2" else "0"
        present = mode.get("present_mIoU")
        out.append(
            f"| {protocol} | {mode.get('mode', 'clean')} | {norm} | {shown} | {mode['mIoU']:.4f} | "
            f"{'-' if present is None else f'{present:.4f}'} | {mode.get('images', '-')} |"
        )
    return out


def table(samat: Path, ours: Path) -> str:
    lines = [
        "| protocol | mode | norm | eps | mIoU | mIoU (present classes) | images |",
        "|---|---|---|---|---|---|---|",
    ]
    for folder, (protocol, how) in zip((samat, ours), PROTOCOLS, strict=True):
        lines += rows(folder, protocol, how)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m evaluation.compare", description=__doc__.splitlines()[0])
    parser.add_argument("samat", type=Path, help="save_folder of tool_test/voc2012/samat_eval.sh")
    parser.add_argument("ours", type=Path, help="save_folder of tool_test/<dataset>/robust_eval.sh")
    args = parser.parse_args(argv)
    print(table(args.samat, args.ours))


if __name__ == "__main__":
    run_main(main)
