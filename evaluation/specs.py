"""Attack specs prepared for a run: the original BIM, labels told apart, class tables resolved, ensembles
expanded into the members that are stored and scored."""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from collections import defaultdict

from omegaconf import DictConfig

from attack.apgd import inverse_frequency_weights
from attack.registry import AttackSpec
from evaluation.rows import series_of
from util.data.dataset import SemData
from util.errors import UserError

logger = logging.getLogger(__name__)


# The original DDC-AT evaluation attack (``--attack``): BIM, 2 steps, eps 0.03, step 0.01, on each crop.
ORIGINAL_BIM = AttackSpec("bim", "bim", 0.03, {"steps": 2, "alpha": 0.01}, protocol="per_crop")


def _short(value) -> str:
    """A setting as a label shows it: floats to 4 significant digits (a step of 0.25/255 is 0.0009804)."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def distinct_labels(specs: list[AttackSpec | None]) -> list[AttackSpec | None]:
    """Entries of one attack with different settings (PGD-20 and PGD-100) are told apart by the fields they
    differ in, at every eps: pgd_steps20_eps8, pgd_steps100_eps8. So they never share a mode folder, nor a
    series (a line of the robustness curve, along which mIoU must not rise with eps), even at distinct eps.
    Transfers from a source config are a series of their own already (``..._from_<config>``)."""

    def settings_of(spec: AttackSpec) -> dict:
        return {k: v for k, v in spec.as_dict().items() if k not in ("eps", "label")}

    settings = defaultdict(dict)  # series -> {entry settings (all but eps and label): their fields}
    for spec in filter(None, specs):
        fields = settings_of(spec)
        settings[series_of(spec.label)][json.dumps(fields, sort_keys=True, default=str)] = fields
    out = []
    for spec in specs:
        variants = list(settings[series_of(spec.label)].values()) if spec else []
        if spec is None or len(variants) == 1:
            out.append(spec)
            continue
        keys = sorted({k for v in variants for k in v if any(w.get(k) != v.get(k) for w in variants)})
        fields = {**settings_of(spec), "norm": spec.norm}
        suffix = "_".join(re.sub(r"[^A-Za-z0-9.+-]", "-", f"{k}{_short(fields.get(k, 'default'))}") for k in keys)
        out.append(spec.replace(label=spec.label.replace(f"{spec.name}_eps", f"{spec.name}_{suffix}_eps", 1)))
    return out


def resolve_class_weights(cfg: DictConfig, specs: list[AttackSpec | None]) -> list[AttackSpec | None]:
    """The class table of every balanced masked CE (SEA's balanced member, APGD with that loss): ``train`` (the
    default where ``train_list`` exists) becomes :func:`~attack.apgd.inverse_frequency_weights` of the training
    labels, as the official code's fixed table; ``image`` (the default without a train_list) weights by each
    image's own counts. The resolved table is part of the spec, so stored predictions carry it.

    Raises:
        UserError: ``train`` without a readable train_list or with a broken label, naming what to do.
    """

    def balanced(spec: AttackSpec | None) -> bool:
        return spec is not None and spec.attack_class.takes_class_weights(spec.params)

    @functools.cache
    def train_table() -> tuple[float, ...]:
        hint = "; give class_weights: image (per-image weights) or a list to evaluate without training labels"
        if not os.path.isfile(cfg.train_list):
            raise UserError(
                f"class_weights 'train' needs the training labels, but train_list '{cfg.train_list}' "
                f"is not a file{hint}"
            )
        try:
            counts = SemData("train", cfg.data_root, cfg.train_list, None, cfg.classes, cfg.ignore_label)
            counts = counts.class_pixel_counts()
        except UserError as err:
            raise UserError(f"{err} (class_weights 'train' reads every training label){hint}") from None
        table = tuple(inverse_frequency_weights(counts))
        logger.info(
            f"balanced masked CE: class weights from the {int(counts.sum())} labelled pixels of "
            f"'{cfg.train_list}' (1 / pixels per class, summing to 1): {list(table)}"
        )
        return table

    out = []
    for spec in specs:
        if balanced(spec):
            default = "train" if os.path.isfile(cfg.train_list) else "image"
            weights = spec.params.get("class_weights", default)
            if weights == "train":
                spec = spec.replace(params={**spec.params, "class_weights": list(train_table())})
            elif "class_weights" not in spec.params:
                logger.info(
                    f"{spec.label}: no train_list '{cfg.train_list}': balanced masked CE weights each "
                    f"class by its pixels in each image"
                )
                spec = spec.replace(params={**spec.params, "class_weights": weights})
        out.append(spec)
    return out


def expand_ensembles(
    specs: list[AttackSpec | None],
) -> tuple[list[AttackSpec | None], list[tuple[AttackSpec, list[str]]]]:
    """An ensemble's entry (SEA) becomes its members (one stored mode each, label <entry label>/<suffix>), so its
    worst case is computed over stored predictions; returns the specs to run and (entry spec, member labels)."""
    runs, ensembles = [], []
    for spec in specs:
        members = spec.attack_class.members(spec.params) if spec else []
        if not members:
            runs.append(spec)
            continue
        member_specs = [
            spec.replace(name=name, label=f"{spec.label}/{suffix}", params=params) for suffix, name, params in members
        ]
        runs += member_specs
        ensembles.append((spec, [m.label for m in member_specs]))
    return runs, ensembles
