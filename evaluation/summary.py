"""The robustness report of test.py over all evaluated modes: log table, results.csv, sanity checks and
robustness_curve.png.

Rows are :class:`evaluation.rows.ResultRow`. L-inf eps are shown in /255, L2 eps as they are; the curve of each
threat model is its own picture.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from evaluation.rows import ResultRow, markdown_table

# mIoU may rise by this much (one mIoU point) before a sanity check warns: small evaluation sets are noisy.
TOLERANCE = 0.01
CSV_COLUMNS = ("mode", "eps", "mIoU", "mAcc", "allAcc", "fg_mIoU", "image_mIoU", "attack", "series")


def eps_text(row: ResultRow) -> str:
    """eps as the tables show it: L-inf in /255, L2 as it is."""
    return f"{row.eps * 255:.2f}/255" if row.threat_model == "linf" else f"{row.eps:.3g} ({row.threat_model.upper()})"


def table(rows: list[ResultRow]) -> list[str]:
    """The human table, one line per mode."""
    header = ("mode", "eps", "mIoU", "fg-mIoU", "per-image mIoU", "mAcc", "aAcc")
    body = [
        (r.mode, eps_text(r), *(f"{v:.4f}" for v in (r.mIoU, r.fg_mIoU, r.image_mIoU, r.mAcc, r.allAcc))) for r in rows
    ]
    return markdown_table(header, body, rule=False)


def csv_text(rows: list[ResultRow]) -> str:
    """results.csv: mode, eps (fraction), mIoU, mAcc, allAcc first (the older readers' columns), then
    fg_mIoU, image_mIoU, the attack name and the series."""
    lines = [",".join(CSV_COLUMNS)]
    for r in rows:
        lines.append(
            f"{r.mode},{r.eps:.6f},{r.mIoU:.6f},{r.mAcc:.6f},{r.allAcc:.6f},"
            f"{r.fg_mIoU:.6f},{r.image_mIoU:.6f},{r.name},{r.series}"
        )
    return "\n".join(lines) + "\n"


def sanity_warnings(rows: list[ResultRow], tolerance: float = TOLERANCE) -> list[str]:
    """Gradient-masking checks: within a series mIoU must not rise with eps (clean counts as eps 0), and at
    one eps neither an attack with more steps than BIM nor an ensemble may leave a higher mIoU than BIM."""
    warnings = []
    clean = next((r for r in rows if r.kind == "clean"), None)
    attacked = [r for r in rows if r.kind != "clean" and math.isfinite(r.eps)]
    series = defaultdict(list)
    for r in attacked:
        series[r.series].append(r)
    for name, members in series.items():
        previous = [clean] if clean else []
        for r in sorted(members, key=lambda r: r.eps):
            low = min(previous, key=lambda p: p.mIoU, default=None)
            if low is not None and r.mIoU > low.mIoU + tolerance:
                warnings.append(
                    f"possible gradient masking: {name} mIoU rises with eps, {low.mIoU:.4f} at "
                    f"{eps_text(low)} ({low.mode}) -> {r.mIoU:.4f} at {eps_text(r)} ({r.mode})"
                )
            previous.append(r)
    for bim in (r for r in attacked if r.name == "bim" and r.kind == "attack"):
        for r in attacked:
            stronger = r.kind == "ensemble" or (
                r.kind == "attack" and r.steps is not None and bim.steps is not None and r.steps > bim.steps
            )
            if (
                stronger
                and r.threat_model == bim.threat_model
                and math.isclose(r.eps, bim.eps, abs_tol=1e-9)
                and r.mIoU > bim.mIoU + tolerance
            ):
                what = "ensemble" if r.kind == "ensemble" else f"{r.steps} steps"
                warnings.append(
                    f"possible gradient masking: {r.mode} ({what}) is weaker than {bim.mode} "
                    f"({bim.steps} steps) at {eps_text(r)}, mIoU {r.mIoU:.4f} > "
                    f"{bim.mIoU:.4f}"
                )
    return warnings


# Each series gets its own marker and dash as well as its colour, and lines drawn later are thinner, so a
# series that coincides with another (SegPGD under the worst case) stays visible.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
DASHES = ("-", "--", "-.", ":")


def curve_series(rows: list[ResultRow], norm: str = "linf") -> dict[str, list[tuple[float, float]]]:
    """The curve's lines for one threat model: per series, (eps, mIoU) by rising eps (L-inf eps in /255), from
    the clean point at eps 0."""
    clean = next((r for r in rows if r.kind == "clean"), None)
    start = [(0.0, clean.mIoU)] if clean is not None else []
    scale = 255 if norm == "linf" else 1
    series = defaultdict(list)
    for r in sorted(rows, key=lambda r: r.eps):
        if r.kind != "clean" and math.isfinite(r.eps) and r.threat_model == norm:
            series[r.series].append((r.eps * scale, r.mIoU))
    return {name: start + points for name, points in series.items()}


def draw_curve(rows: list[ResultRow], path: Path) -> None:
    """``path``: mIoU against L-inf eps (/255), one line per series (see :func:`curve_series`), the clean mIoU
    as a dashed grey line; the L2 attacks, when there are any, beside it in ``<stem>_l2.png``."""
    clean_miou = next((r.mIoU for r in rows if r.kind == "clean"), None)
    draw_series(curve_series(rows), path, clean=clean_miou)
    l2, l2_path = curve_series(rows, "l2"), path.with_name(f"{path.stem}_l2{path.suffix}")
    if l2:
        draw_series(l2, l2_path, clean=clean_miou, xlabel="eps (L2)")
    else:
        l2_path.unlink(missing_ok=True)  # an earlier run's, no longer this folder's


def draw_series(
    series: dict[str, list[tuple[float, float]]],
    path: Path,
    title: str = "",
    clean: float | None = None,
    xlabel: str = "eps (/255)",
) -> None:
    """mIoU against eps, one line per series of (eps, mIoU) points; ``clean`` as a dashed grey line."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 5.6), dpi=100)
    if clean is not None:
        axes.axhline(clean, color="0.5", linestyle="--", linewidth=1, label="clean")
    for k, (name, points) in enumerate(series.items()):
        axes.plot(
            *zip(*points, strict=True),
            color=f"C{k % 10}",
            marker=MARKERS[k % len(MARKERS)],
            linestyle=DASHES[k % len(DASHES)],
            linewidth=max(4.0 - 0.8 * k, 1.0),
            markersize=max(10 - 1.5 * k, 4),
            label=name[:40],
        )
    axes.set(xlabel=xlabel, ylabel="mIoU", ylim=(0, 1.02), xlim=(0, None), title=title)
    axes.grid(True, color="0.9")
    axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small", frameon=False)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
