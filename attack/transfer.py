"""Transfer (black-box) attacks: adversarial examples crafted on a source model, evaluated on the target."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attack.base import Attack
from util.errors import UserError


class Transfer(Attack):
    """Transfer attack (Papernot et al., "Transferability in Machine Learning", 2016; the black-box table
    of Xu et al., "Dynamic Divide-and-Conquer Adversarial Training for Robust Semantic Segmentation",
    ICCV 2021): the examples are those of ``source``, an attack on another model, and the target model is
    never queried. Threat model and eps are the source attack's.

    Args:
        model: the target model (only put in eval mode; its gradients are never used).
        source: any attack built on the source model (per crop, or with a whole-image ``forward``).
        ignore_index: label ignored by the loss.
    """

    def __init__(self, model: nn.Module, source: Attack, ignore_index: int = 255) -> None:
        super().__init__(
            model, source.eps, ignore_index, mean=source.mean.flatten().tolist(), std=source.std.flatten().tolist()
        )
        self.source = source
        self.norm = source.norm

    def perturb(self, x0: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.source.to_pixels(self.source(self.source.normalize(x0), target))


def parse_source(value: Any, at: str) -> dict:
    """Validate an attack spec's ``source: {config: path, model_path: path}`` (model_path defaults to the
    source config's own ``model_path``).

    Raises:
        UserError: not a mapping, unknown keys, or a missing file, naming ``at`` (the spec).
    """
    if not isinstance(value, Mapping) or "config" not in value:
        raise UserError(f"{at}: source must be a mapping {{config: path, model_path: path}}, got {value!r}")
    unknown = sorted(set(value) - {"config", "model_path"})
    if unknown:
        raise UserError(f"{at}: source has no field '{unknown[0]}'; it takes config, model_path")
    source = {"config": str(value["config"]), "model_path": value.get("model_path")}
    for key, path in source.items():
        if path is not None and not Path(path).is_file():
            raise UserError(
                f"{at}: source {key} '{path}' not found; set source.{key} to the source model's "
                f"{'YAML config' if key == 'config' else 'checkpoint'}"
            )
    return source
