"""Result rows: one mode's scores from per-image counts, minimum-norm medians, and the worst cases over the
modes evaluated at one eps (computed from stored predictions, without re-attacking)."""

from __future__ import annotations

import json
import logging
import math
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from attack.registry import AttackSpec
from evaluation import summary
from evaluation.worstcase import worst_case
from util.metrics import summarize

logger = logging.getLogger(__name__)


def series_of(mode: str) -> str:
    """A mode's series, its label without the eps: one line of the robustness curve."""
    return re.sub(r"_eps[^_/]*", "", mode)


def mode_row(
    mode: str,
    attack_spec: AttackSpec | None,
    counts: tuple[np.ndarray, ...],
    names: list[str],
    background: int | None = 0,
) -> dict:
    """A mode's report row (see evaluation/summary.py) with per-class IoU and accuracy, from per-image counts."""
    metrics = summarize(*counts, background=background)
    kind = "clean" if attack_spec is None else "transfer" if attack_spec.source else "attack"
    return {
        "mode": mode,
        "kind": kind,
        "name": attack_spec.name if attack_spec else "clean",
        "series": series_of(mode),
        "eps": attack_spec.eps if attack_spec else 0.0,
        "steps": attack_spec.steps if kind == "attack" else None,
        "norm": attack_spec.norm if attack_spec else None,
        "attack": attack_spec.as_dict() if attack_spec else None,
        **{k: metrics[k] for k in ("mIoU", "fg_mIoU", "present_mIoU", "image_mIoU", "mAcc", "allAcc")},
        "classes": [
            {"name": n, "iou": metrics["iou_class"][i], "acc": metrics["acc_class"][i]} for i, n in enumerate(names)
        ],
        "images": len(counts[0]),
    }


def median_norm(folder: Path, image_names: list[str]) -> dict:
    """A minimum-norm attack's median unclipped perturbation norm over the attacked crops (or images with
    whole_image) of the evaluated images, from the norms stored beside the predictions; {} for others."""
    stored = [json.loads((folder / f"{n}.json").read_text()) for n in image_names if (folder / f"{n}.json").is_file()]
    values = [v for entry in stored for v in entry["values"]]
    if not values:
        return {}
    norm = stored[0]["norm"]
    logger.info(
        f"Median unclipped {norm} norm of the perturbation: {np.median(values):.4f} "
        f"({np.median(values) * 255:.2f}/255) over {len(values)} attacked crops"
    )
    return {"median_norm": float(np.median(values)), "norm": norm, "norm_count": len(values)}


def ensemble_row(
    mode: str,
    name: str,
    eps: float,
    members: list[tuple[dict, tuple]],
    names: list[str],
    folder: Path,
    background: int | None = 0,
) -> dict:
    """The worst case over ``members`` (result row, counts) evaluated at one eps, without re-attacking (see
    evaluation/worstcase.py): each metric minimised over per-image choices of a member's prediction, the pooled
    mIoU (and its per-class IoU) by SEA's greedy search. Writes folder/results.json with the choices."""
    inter, union = (np.stack([counts[k] for _, counts in members]) for k in (0, 1))
    target = members[0][1][2]
    choice = worst_case(inter, union, target, background)
    images = np.arange(inter.shape[1])

    def chosen(selection: np.ndarray) -> dict:
        return summarize(inter[selection, images], union[selection, images], target, background)

    norm = summary.norm_of(members[0][0])
    spec = {"name": name, "eps": eps, "norm": norm, "members": [row["mode"] for row, _ in members]}
    counts = (inter[choice.miou, images], union[choice.miou, images], target)
    row = {
        **mode_row(mode, None, counts, names, background),
        "kind": "ensemble",
        "name": name,
        "eps": eps,
        "norm": norm,
        "attack": spec,
    }
    for key, selection in (
        ("fg_mIoU", choice.fg_miou),
        ("image_mIoU", choice.image_miou),
        ("mAcc", choice.macc),
        ("allAcc", choice.allacc),
    ):
        row[key] = chosen(selection)[key]
    selections = {
        key: [spec["members"][a] for a in getattr(choice, field)]
        for key, field in (
            ("mIoU", "miou"),
            ("fg_mIoU", "fg_miou"),
            ("image_mIoU", "image_miou"),
            ("mAcc", "macc"),
            ("allAcc", "allacc"),
        )
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps({**row, "chosen_member_per_image": selections}, indent=2))
    logger.info(
        f"{mode}: worst case over {', '.join(spec['members'])}: mIoU {row['mIoU']:.4f} (SEA greedy search), "
        f"aAcc {row['allAcc']:.4f}"
    )
    return row


def worst_cases(
    evaluated: list[tuple[dict, tuple]],
    ensembles: list[tuple[AttackSpec, list[str]]],
    names: list[str],
    save_folder: Path,
    background: int | None = 0,
) -> list[dict]:
    """SEA's rows (worst case over its members) and, per threat model and eps shared by two or more attack
    entries, a worst_case row over every attack evaluated there (an L2 ball is not an L-inf one of the same
    radius: their attacks are not mixed)."""
    by_mode = {row["mode"]: (row, counts) for row, counts in evaluated}
    rows = [
        ensemble_row(
            spec.label, spec.name, spec.eps, [by_mode[m] for m in members], names, save_folder / spec.label, background
        )
        for spec, members in ensembles
    ]
    entry = {m: spec.label for spec, members in ensembles for m in members}  # SEA member -> its entry
    by_eps = defaultdict(list)
    for row, counts in evaluated:
        if row["kind"] in ("attack", "transfer") and math.isfinite(row["eps"]):
            by_eps[summary.norm_of(row), round(row["eps"], 9)].append((row, counts))
    for (norm, eps), members in sorted(by_eps.items()):
        if len({entry.get(row["mode"], row["mode"]) for row, _ in members}) >= 2:
            mode = f"worst_case_eps{round(eps * 255, 4):g}" if norm == "linf" else f"worst_case_{norm}_eps{eps:g}"
            rows.append(ensemble_row(mode, "worst_case", eps, members, names, save_folder / mode, background))
    return rows
