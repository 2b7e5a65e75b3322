"""Collect test.py results into one table and one JSON: ``{"<defense>": {"clean_miou": x, "bim_miou": y}}``.

    python -m util.report exp/synthetic/demo/result --defense none --out exp/synthetic/demo/results.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from util.errors import UserError, run_main


def read_result(path: Path) -> dict:
    """One test.py results.json."""
    if not path.is_file():
        raise UserError(f"result file '{path}' not found; run test.py (clean and --attack) first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise UserError(f"result file '{path}' is not valid JSON; re-run test.py") from None


def collect(result_dir: Path) -> dict:
    """Clean and BIM metrics of one evaluated model (save_folder with results.json and bim/results.json)."""
    clean = read_result(result_dir / "results.json")
    bim = read_result(result_dir / "bim" / "results.json")
    return {"clean_miou": clean["mIoU"], "clean_macc": clean["mAcc"], "clean_allacc": clean["allAcc"],
            "bim_miou": bim["mIoU"], "bim_macc": bim["mAcc"], "bim_allacc": bim["allAcc"]}


def table(results: dict) -> str:
    """Markdown table, one row per defense."""
    lines = ["| defense | clean mIoU | BIM mIoU | clean allAcc | BIM allAcc |", "|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['clean_miou']:.4f} | {r['bim_miou']:.4f} | {r['clean_allacc']:.4f} | "
                     f"{r['bim_allacc']:.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result_dir", type=Path, help="test.py save_folder")
    parser.add_argument("--defense", required=True, help="row name (the model's defense)")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to create or update")
    args = parser.parse_args(argv)
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results[args.defense] = collect(args.result_dir)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"written to {args.out}")


if __name__ == "__main__":
    run_main(main)
