"""Defense strategies plugged into the single training loop (see docs/ for how each matches the original).

A strategy builds the update batch (:meth:`NoDefense.make_batch`: the adversarial strategies craft their examples
here, input-only gradients, model in eval mode) and computes the training loss on it in train mode
(:meth:`NoDefense.loss`, called once per update, twice with SAM). Each strategy registers itself in
:data:`DEFENSES` where it is defined: a new defense is one new file.
"""

from __future__ import annotations

from omegaconf import DictConfig

from defense.base import (
    DEFENSES,
    NoDefense,
    StepResult,
    TrainingAttack,
    UpdateBatch,
    cross_entropy,
    resize_target,
    unwrap,
)
from defense.ddcat import DDCAT
from defense.pgd_at import PGDAT
from defense.sat import SAT
from defense.step import StepSettings, check_finite, train_step
from defense.trades import TRADES
from util.registry import import_submodules

import_submodules(__name__, __path__)

__all__ = [
    "DDCAT",
    "DEFENSES",
    "PGDAT",
    "SAT",
    "TRADES",
    "NoDefense",
    "StepResult",
    "StepSettings",
    "TrainingAttack",
    "UpdateBatch",
    "build_defense",
    "build_step_settings",
    "build_training_attack",
    "check_finite",
    "cross_entropy",
    "resize_target",
    "train_step",
    "unwrap",
]


def build_training_attack(cfg: DictConfig) -> TrainingAttack:
    """The training attack of the config's ``adv_*`` keys."""
    return TrainingAttack(
        eps=cfg.adv_eps,
        steps=cfg.adv_steps,
        step_size=cfg.adv_step_size,
        random_start=cfg.adv_random_start,
        norm=cfg.adv_norm,
        train_mode=cfg.adv_train_mode,
        unnormalized=cfg.adv_grad_at_unnormalized,
        keep=cfg.adv_keep,
        param_grads=cfg.adv_param_grads,
        mean=tuple(cfg.mean),
        std=tuple(cfg.std),
    )


def build_defense(cfg: DictConfig) -> NoDefense:
    """The strategy the config's ``defense`` names (UserError naming the choices for an unknown one)."""
    strategy = DEFENSES.get(cfg.defense)
    options = {argument: cfg[key] for argument, key in strategy.config_keys.items()}
    return strategy(
        aux_weight=cfg.aux_weight, ignore_label=cfg.ignore_label, attack=build_training_attack(cfg), **options
    )


def build_step_settings(cfg: DictConfig) -> StepSettings:
    """What a training step reads besides the model, the strategy and the optimizer."""
    return StepSettings(
        sam_warmup_iters=cfg.sam_warmup_iters,
        sam_second_pass_updates_bn=cfg.sam_second_pass_updates_bn,
        save_path=str(cfg.save_path),
    )
