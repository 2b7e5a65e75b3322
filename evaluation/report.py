"""Collect test.py results into the demo's tables and one JSON per defense.

    python -m evaluation.report exp/synthetic/demo/result --defense none --out exp/synthetic/demo/results.json \
        [--strong exp/synthetic/demo/robust]

``result_dir`` is the save_folder of the original protocol (clean, then ``--attack``: BIM-2). ``--strong``
adds an attack-suite run (``tool_test/<dataset>/robust_eval.sh``, possibly on fewer images): its clean mIoU,
every attack's mIoU and the worst case over them, printed in a second table beside BIM on the same images.
Without ``result_dir`` a row holds the suite run alone (``make demo-strong``). ``--curve PNG`` draws, per
defense, the lowest mIoU measured at each L-inf eps of its suite run (the worst case), from its clean mIoU at eps 0.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from evaluation.rows import ResultRow, markdown_table
from evaluation.summary import draw_series
from util.errors import ArgumentParser, UserError, check_creatable, run_main

RUN_TEST = "run test.py (clean and --attack)"
RUN_SUITE = "run the attack suite (tool_test/<dataset>/robust_eval.sh)"


def read_result(
    path: Path, how: str = RUN_TEST, keys: tuple[str, ...] = ("mIoU",), mode_keys: tuple[str, ...] = ("mIoU",)
) -> dict:
    """One test.py results.json holding ``keys`` and, in each of its 'modes', ``mode_keys``; ``how``: what the
    user runs to make it."""
    if not path.is_file():
        raise UserError(f"result file '{path}' not found; {how} first")
    try:
        result = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"result file '{path}' is not valid JSON; re-run test.py") from None
    modes = result.get("modes", []) if isinstance(result, dict) else None
    if not isinstance(modes, list) or not _has(result, keys) or not all(_has(m, mode_keys) for m in modes):
        raise UserError(
            f"result file '{path}' is not a test.py results.json (it lacks {', '.join(keys)} or a "
            f"mode's {', '.join(mode_keys)}); {how} again"
        )
    return result


def _has(value, keys: tuple[str, ...]) -> bool:
    return isinstance(value, dict) and all(key in value for key in keys)


def mode_label(mode: ResultRow) -> str:
    """Column name of one attack-suite mode: ``segpgd-20``, ``apgd-20 js`` (a SEA member), ``sea``, ``worst case``
    (eps added when not 0.03)."""
    label = "worst case" if mode.name == "worst_case" else mode.name
    if mode.kind == "attack" and mode.steps:
        label += f"-{mode.steps}"
    if "/" in mode.mode:  # an ensemble's member, e.g. SEA's APGD with the JS loss
        label += " " + mode.mode.rsplit("/", 1)[1]
    if abs(mode.eps - 0.03) > 1e-9:
        label += f" @{mode.eps * 255:.3g}/255"
    return label


def collect_strong(folder: Path) -> dict:
    """Images, clean mIoU, mIoU per attack mode and the worst-case curve ((eps /255, lowest mIoU at that eps),
    from (0, clean)) of an attack-suite run."""
    result = read_result(
        folder / "results.json",
        f"{RUN_SUITE} into '{folder}'",
        ("mIoU", "images"),
        ("mode", "kind", "name", "eps", "mIoU"),
    )
    modes = [ResultRow.from_json(m) for m in result.get("modes", [])]
    attacked = [m for m in modes if m.kind != "clean"]
    if not attacked:
        raise UserError(f"'{folder / 'results.json'}' holds no attack modes; {RUN_SUITE} into it")
    lowest: dict[float, float] = {}
    for m in attacked:
        if math.isfinite(m.eps) and m.threat_model == "linf":  # the curve's axis is L-inf eps
            lowest[m.eps] = min(lowest.get(m.eps, 1.0), m.mIoU)
    curve = [(0.0, result["mIoU"])] + [(eps * 255, miou) for eps, miou in sorted(lowest.items())]
    return {
        "images": result["images"],
        "clean": result["mIoU"],
        "miou": {mode_label(m): m.mIoU for m in attacked},
        "curve": curve,
    }


def collect(result_dir: Path | None, strong_dir: Path | None = None) -> dict:
    """Clean and BIM metrics of one evaluated model (save_folder with results.json and bim/results.json),
    and with ``strong_dir`` the attack suite's mIoU per attack."""
    out = {}
    if result_dir is not None:
        clean, bim = (
            read_result(folder / "results.json", keys=("mIoU", "mAcc", "allAcc"))
            for folder in (result_dir, result_dir / "bim")
        )
        out = {
            "clean_miou": clean["mIoU"],
            "clean_macc": clean["mAcc"],
            "clean_allacc": clean["allAcc"],
            "bim_miou": bim["mIoU"],
            "bim_macc": bim["mAcc"],
            "bim_allacc": bim["allAcc"],
        }
    if strong_dir is not None:
        out["strong"] = collect_strong(strong_dir)
    return out


def table(results: dict) -> str:
    """Markdown table, one row per defense; a second one for the defenses with an attack-suite run."""
    keys = ("clean_miou", "bim_miou", "clean_allacc", "bim_allacc")
    header = ("defense", "clean mIoU", "BIM mIoU", "clean allAcc", "BIM allAcc")
    lines = markdown_table(
        header, [(name, *(f"{r[k]:.4f}" for k in keys)) for name, r in results.items() if keys[0] in r]
    )
    strong = {name: r["strong"] for name, r in results.items() if "strong" in r}
    if strong:
        columns = list(dict.fromkeys(label for s in strong.values() for label in s["miou"]))
        body = [
            (
                name,
                s["images"],
                f"{s['clean']:.4f}" if "clean" in s else "-",
                *(f"{s['miou'][c]:.4f}" if c in s["miou"] else "-" for c in columns),
            )
            for name, s in strong.items()
        ]
        lines += ["", "Attacked mIoU, the original BIM-2 beside stronger attacks (same images):"]
        lines += markdown_table(("defense", "images", "clean", *columns), body)
    if lines[2:] and not lines[2]:
        lines = lines[3:]  # no row with the original protocol: the suite table alone
    return "\n".join(lines)


def existing_rows(out: Path) -> dict:
    """The rows already in ``out`` ({} when it does not exist), once it is known that ``out`` can be written.

    Raises:
        UserError: ``out`` is a folder, another file than this command's JSON, or cannot be created.
    """
    if out.is_dir():
        raise UserError(f"--out '{out}' is a folder; name a JSON file, e.g. --out results.json")
    try:
        results = json.loads(out.read_text()) if out.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        results = None
    if not isinstance(results, dict) or not all(isinstance(row, dict) for row in results.values()):
        raise UserError(f"--out '{out}' exists and is not this command's JSON; choose another --out")
    check_creatable(str(out.parent), "--out's folder")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result_dir", type=Path, nargs="?", help="test.py save_folder (clean and --attack)")
    parser.add_argument("--defense", required=True, help="row name (the model's defense)")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to create or update")
    parser.add_argument("--strong", type=Path, default=None, help="save_folder of an attack-suite run")
    parser.add_argument("--curve", type=Path, default=None, help="PNG: worst-case mIoU against eps per defense")
    args = parser.parse_args(argv)
    if args.result_dir is None and args.strong is None:
        raise UserError("give a test.py save_folder, an attack-suite run (--strong), or both")
    results = existing_rows(args.out)
    if args.curve is not None:
        if args.curve.suffix.lower() != ".png" or args.curve.is_dir():
            raise UserError(f"--curve '{args.curve}' must name a .png file to write, e.g. --curve curve.png")
        if args.strong is None and not any("strong" in row for row in results.values()):
            raise UserError(
                "--curve draws attack-suite runs, and there is none: add --strong (robust_eval.sh's "
                "folder) or leave --curve out"
            )
        check_creatable(str(args.curve.parent), "--curve's folder")
    results[args.defense] = collect(args.result_dir, args.strong)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    if args.curve is not None:
        draw_series(
            {name: r["strong"]["curve"] for name, r in results.items() if "strong" in r},
            args.curve,
            "worst case over the attacks run",
        )
    print(table(results))
    print(f"written to {args.out}")


if __name__ == "__main__":
    run_main(main)
