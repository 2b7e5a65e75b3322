"""Result rows: :class:`ResultRow`, written to and read from results.json here only; the rows of one mode (from
per-image counts) and of the worst cases over the modes at one eps (from stored predictions, without
re-attacking); and the one markdown table writer of the reports."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attack.registry import AttackSpec
from evaluation.worstcase import worst_case
from util.metrics import summarize

logger = logging.getLogger(__name__)

METRICS = ("mIoU", "fg_mIoU", "present_mIoU", "image_mIoU", "mAcc", "allAcc")
_RUN_KEYS = ("model_path", "seconds", "config")  # a mode test.py ran (not a worst case over stored modes)


@dataclass
class ResultRow:
    """One evaluated mode: clean, one attack at one eps, a transfer, or a worst case (kind ``ensemble``)."""

    mode: str  # the mode's label and folder: clean, pgd_eps8, sea_eps8/js, worst_case_eps8, ...
    kind: str  # clean | attack | transfer | ensemble
    name: str  # the attack's name (bim, pgd, sea, worst_case, ...) or clean
    series: str  # the label without its eps: one line of the robustness curve
    eps: float  # in [0, 1] pixel units
    steps: int | None  # iterations of an iterative attack, else None
    norm: str | None  # threat model, linf | l2; None when clean
    attack: dict | None  # the spec as fingerprints store it (a worst case: its members)
    mIoU: float
    fg_mIoU: float
    present_mIoU: float | None
    image_mIoU: float
    mAcc: float
    allAcc: float
    classes: list[dict] = field(default_factory=list)  # per class: name, iou, acc
    images: int = 0
    median_norm: float | None = None  # a minimum-norm attack's median unclipped norm, over norm_count crops
    norm_count: int | None = None
    model_path: str | None = None
    seconds: float | None = None
    config: dict | None = None

    @property
    def threat_model(self) -> str:
        """'linf' (also for clean rows) or 'l2'."""
        return self.norm or "linf"

    def to_json(self, config: bool = True) -> dict[str, Any]:
        """The row as results.json holds it (without ``config`` when it is False)."""
        out = dataclasses.asdict(self)
        for key in ("median_norm", "norm_count"):
            if out[key] is None:
                del out[key]
        if self.config is None or not config:
            for key in _RUN_KEYS if self.config is None else ("config",):
                del out[key]
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ResultRow:
        """A row of a results.json, also one written before a key existed: a row without ``norm`` takes its
        attack entry's (else linf), one without ``kind``, ``name`` or ``series`` is read from its mode label."""
        mode, attack = data.get("mode", "clean"), data.get("attack")
        values = {f.name: data.get(f.name) for f in dataclasses.fields(cls)}
        values.update(
            mode=mode,
            kind=data.get("kind", "clean" if mode == "clean" else "attack"),
            name=data.get("name", "clean" if mode == "clean" else mode.split("_eps")[0]),
            series=data.get("series", series_of(mode)),
            eps=data.get("eps", 0.0),
            norm=data.get("norm") or (attack or {}).get("norm"),
            classes=data.get("classes", []),
            images=data.get("images", 0),
            **{key: data.get(key, math.nan) for key in METRICS if key != "present_mIoU"},
        )
        return cls(**values)


def markdown_table(header: Sequence[str], body: Iterable[Sequence[object]], rule: bool = True) -> list[str]:
    """The lines of a markdown table: the header, the ``|---|`` rule (unless ``rule`` is False), a line per row."""

    def line(cells: Sequence[object]) -> str:
        return "| " + " | ".join(str(cell) for cell in cells) + " |"

    return [line(header), *(["|" + "---|" * len(header)] if rule else []), *(line(cells) for cells in body)]


def series_of(mode: str) -> str:
    """A mode's series, its label without the eps: one line of the robustness curve."""
    return re.sub(r"_eps[^_/]*", "", mode)


def mode_row(
    mode: str,
    attack_spec: AttackSpec | None,
    counts: tuple[np.ndarray, ...],
    names: list[str],
    background: int | None = 0,
) -> ResultRow:
    """A mode's row with per-class IoU and accuracy, from per-image counts."""
    metrics = summarize(*counts, background=background)
    kind = "clean" if attack_spec is None else "transfer" if attack_spec.source else "attack"
    return ResultRow(
        mode=mode,
        kind=kind,
        name=attack_spec.name if attack_spec else "clean",
        series=series_of(mode),
        eps=attack_spec.eps if attack_spec else 0.0,
        steps=attack_spec.steps if kind == "attack" else None,
        norm=attack_spec.norm if attack_spec else None,
        attack=attack_spec.as_dict() if attack_spec else None,
        **{k: metrics[k] for k in METRICS},
        classes=[
            {"name": n, "iou": metrics["iou_class"][i], "acc": metrics["acc_class"][i]} for i, n in enumerate(names)
        ],
        images=len(counts[0]),
    )


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
    members: list[tuple[ResultRow, tuple]],
    names: list[str],
    folder: Path,
    background: int | None = 0,
) -> ResultRow:
    """The worst case over ``members`` (result row, counts) evaluated at one eps, without re-attacking (see
    evaluation/worstcase.py): each metric minimised over per-image choices of a member's prediction, the pooled
    mIoU (and its per-class IoU) by SEA's greedy search. Writes folder/results.json with the choices."""
    inter, union = (np.stack([counts[k] for _, counts in members]) for k in (0, 1))
    target = members[0][1][2]
    choice = worst_case(inter, union, target, background)
    images = np.arange(inter.shape[1])

    def chosen(selection: np.ndarray) -> dict:
        return summarize(inter[selection, images], union[selection, images], target, background)

    norm = members[0][0].threat_model
    spec = {"name": name, "eps": eps, "norm": norm, "members": [row.mode for row, _ in members]}
    counts = (inter[choice.miou, images], union[choice.miou, images], target)
    row = dataclasses.replace(
        mode_row(mode, None, counts, names, background), kind="ensemble", name=name, eps=eps, norm=norm, attack=spec
    )
    for key, selection in (
        ("fg_mIoU", choice.fg_miou),
        ("image_mIoU", choice.image_miou),
        ("mAcc", choice.macc),
        ("allAcc", choice.allacc),
    ):
        setattr(row, key, chosen(selection)[key])
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
    (folder / "results.json").write_text(json.dumps({**row.to_json(), "chosen_member_per_image": selections}, indent=2))
    logger.info(
        f"{mode}: worst case over {', '.join(spec['members'])}: mIoU {row.mIoU:.4f} (SEA greedy search), "
        f"aAcc {row.allAcc:.4f}"
    )
    return row


def worst_cases(
    evaluated: list[tuple[ResultRow, tuple]],
    ensembles: list[tuple[AttackSpec, list[str]]],
    names: list[str],
    save_folder: Path,
    background: int | None = 0,
) -> list[ResultRow]:
    """SEA's rows (worst case over its members) and, per threat model and eps shared by two or more attack
    entries, a worst_case row over every attack evaluated there (an L2 ball is not an L-inf one of the same
    radius: their attacks are not mixed)."""
    by_mode = {row.mode: (row, counts) for row, counts in evaluated}
    rows = [
        ensemble_row(
            spec.label, spec.name, spec.eps, [by_mode[m] for m in members], names, save_folder / spec.label, background
        )
        for spec, members in ensembles
    ]
    entry = {m: spec.label for spec, members in ensembles for m in members}  # SEA member -> its entry
    by_eps = defaultdict(list)
    for row, counts in evaluated:
        if row.kind in ("attack", "transfer") and math.isfinite(row.eps):
            by_eps[row.threat_model, round(row.eps, 9)].append((row, counts))
    for (norm, eps), members in sorted(by_eps.items()):
        if len({entry.get(row.mode, row.mode) for row, _ in members}) >= 2:
            mode = f"worst_case_eps{round(eps * 255, 4):g}" if norm == "linf" else f"worst_case_{norm}_eps{eps:g}"
            rows.append(ensemble_row(mode, "worst_case", eps, members, names, save_folder / mode, background))
    return rows
