"""The robustness report of test.py over all evaluated modes: log table, results.csv, sanity checks and
robustness_curve.png.

A row is one mode's result dict with ``mode``, ``kind`` (clean | attack | transfer | ensemble), ``name``
(the attack: bim, pgd, sea, worst_case, ...), ``series`` (the mode label without its eps: one attack
setting over eps), ``eps`` in [0, 1] pixel units, ``steps`` (None where not iterative or unknown) and the
metrics ``mIoU``, ``fg_mIoU``, ``image_mIoU``, ``mAcc``, ``allAcc``.
"""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

# mIoU may rise by this much (one mIoU point) before a sanity check warns: small evaluation sets are noisy.
TOLERANCE = 0.01
CSV_COLUMNS = ("mode", "eps", "mIoU", "mAcc", "allAcc", "fg_mIoU", "image_mIoU", "attack", "series")


def table(rows: list[dict]) -> list[str]:
    """The human table, one line per mode; eps in /255."""
    lines = ["| mode | eps | mIoU | fg-mIoU | per-image mIoU | mAcc | aAcc |"]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['eps'] * 255:.2f}/255 | {r['mIoU']:.4f} | {r['fg_mIoU']:.4f} | "
                     f"{r['image_mIoU']:.4f} | {r['mAcc']:.4f} | {r['allAcc']:.4f} |")
    return lines


def csv_text(rows: list[dict]) -> str:
    """results.csv: mode, eps (fraction), mIoU, mAcc, allAcc first (the older readers' columns), then
    fg_mIoU, image_mIoU, the attack name and the series."""
    lines = [",".join(CSV_COLUMNS)]
    for r in rows:
        lines.append(f"{r['mode']},{r['eps']:.6f},{r['mIoU']:.6f},{r['mAcc']:.6f},{r['allAcc']:.6f},"
                     f"{r['fg_mIoU']:.6f},{r['image_mIoU']:.6f},{r['name']},{r['series']}")
    return "\n".join(lines) + "\n"


def sanity_warnings(rows: list[dict], tolerance: float = TOLERANCE) -> list[str]:
    """Gradient-masking checks: within a series mIoU must not rise with eps (clean counts as eps 0), and at
    one eps neither an attack with more steps than BIM nor an ensemble may leave a higher mIoU than BIM."""
    warnings = []
    clean = next((r for r in rows if r["kind"] == "clean"), None)
    attacked = [r for r in rows if r["kind"] != "clean" and math.isfinite(r["eps"])]
    series = defaultdict(list)
    for r in attacked:
        series[r["series"]].append(r)
    for name, members in series.items():
        previous = [clean] if clean else []
        for r in sorted(members, key=lambda r: r["eps"]):
            low = min(previous, key=lambda p: p["mIoU"], default=None)
            if low is not None and r["mIoU"] > low["mIoU"] + tolerance:
                warnings.append(f"possible gradient masking: {name} mIoU rises with eps, {low['mIoU']:.4f} at "
                                f"{low['eps'] * 255:.2f}/255 ({low['mode']}) -> {r['mIoU']:.4f} at "
                                f"{r['eps'] * 255:.2f}/255 ({r['mode']})")
            previous.append(r)
    for bim in (r for r in attacked if r["name"] == "bim" and r["kind"] == "attack"):
        for r in attacked:
            stronger = r["kind"] == "ensemble" or (r["kind"] == "attack" and r["steps"] is not None
                                                   and bim["steps"] is not None and r["steps"] > bim["steps"])
            if stronger and math.isclose(r["eps"], bim["eps"], abs_tol=1e-9) \
                    and r["mIoU"] > bim["mIoU"] + tolerance:
                what = "ensemble" if r["kind"] == "ensemble" else f"{r['steps']} steps"
                warnings.append(f"possible gradient masking: {r['mode']} ({what}) is weaker than {bim['mode']} "
                                f"({bim['steps']} steps) at {r['eps'] * 255:.2f}/255, mIoU {r['mIoU']:.4f} > "
                                f"{bim['mIoU']:.4f}")
    return warnings


# Distinct BGR line colours (Tableau 10).
PALETTE = [(180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148), (75, 86, 140),
           (194, 119, 227), (127, 127, 127), (34, 189, 188), (207, 190, 23)]


def _nice_step(span: float, ticks: int = 6) -> float:
    raw = span / ticks
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)


def draw_curve(rows: list[dict], path: Path, size: tuple[int, int] = (900, 560)) -> None:
    """robustness_curve.png: mIoU against eps (/255), one line per series, clean as a dashed line."""
    width, height = size
    left, right, top, bottom = 70, 250, 30, 60
    image = np.full((height, width, 3), 255, np.uint8)
    font, black, grey = cv2.FONT_HERSHEY_SIMPLEX, (0, 0, 0), (200, 200, 200)
    series = defaultdict(list)
    for r in rows:
        if r["kind"] != "clean" and math.isfinite(r["eps"]):
            series[r["series"]].append(r)
    x_max = 1.05 * max([r["eps"] * 255 for members in series.values() for r in members], default=1.0) or 1.0
    x_step = _nice_step(x_max)
    x_max = math.ceil(x_max / x_step) * x_step

    def point(eps255: float, miou: float) -> tuple[int, int]:
        x = left + eps255 / x_max * (width - left - right)
        y = height - bottom - miou * (height - top - bottom)
        return round(x), round(y)

    for k in range(6):  # y grid every 0.2
        y = point(0, k / 5)[1]
        cv2.line(image, (left, y), (width - right, y), grey, 1)
        cv2.putText(image, f"{k / 5:.1f}", (left - 40, y + 5), font, 0.45, black, 1, cv2.LINE_AA)
    for k in range(round(x_max / x_step) + 1):
        x = point(k * x_step, 0)[0]
        cv2.line(image, (x, top), (x, height - bottom), grey, 1)
        cv2.putText(image, f"{k * x_step:g}", (x - 8, height - bottom + 20), font, 0.45, black, 1, cv2.LINE_AA)
    cv2.rectangle(image, (left, top), (width - right, height - bottom), black, 1)
    cv2.putText(image, "eps (/255)", ((left + width - right) // 2 - 35, height - 15), font, 0.5, black, 1,
                cv2.LINE_AA)
    cv2.putText(image, "mIoU", (10, top - 10), font, 0.5, black, 1, cv2.LINE_AA)

    legend = []
    clean = next((r for r in rows if r["kind"] == "clean"), None)
    if clean is not None:
        y = point(0, clean["mIoU"])[1]
        for x in range(left, width - right, 12):
            cv2.line(image, (x, y), (min(x + 6, width - right), y), black, 2)
        legend.append(("clean", black))
    for k, (name, members) in enumerate(series.items()):
        colour = PALETTE[k % len(PALETTE)]
        points = np.array([point(r["eps"] * 255, r["mIoU"]) for r in sorted(members, key=lambda r: r["eps"])])
        cv2.polylines(image, [points.reshape(-1, 1, 2)], False, colour, 2, cv2.LINE_AA)
        for p in points:
            cv2.circle(image, (int(p[0]), int(p[1])), 4, colour, -1, cv2.LINE_AA)
        legend.append((name, colour))
    for k, (name, colour) in enumerate(legend):
        y = top + 15 + 22 * k
        cv2.line(image, (width - right + 15, y - 4), (width - right + 40, y - 4), colour, 3)
        cv2.putText(image, name[:26], (width - right + 48, y), font, 0.45, black, 1, cv2.LINE_AA)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"could not write '{path}'")
