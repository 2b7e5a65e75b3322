"""Defense strategies plugged into the single training loop.

A strategy does two things per iteration. :meth:`NoDefense.make_batch` builds the update batch (the
adversarial training strategies craft their examples here, with input-only gradients and the model in
eval mode); :meth:`NoDefense.loss` computes the training loss on it in train mode. The loop calls
``loss`` once per update, twice with SAM (the second time at the perturbed weights, on the same batch).

Only what the algorithm needs is computed; the examples, labels and update are those of the original
code (DDC-AT, ICCV 2021), which the tests check against a plain restatement:

* SAT attacks only the second half of the batch (the first half is trained on clean).
* DDC-AT attacks ``cls1`` only (no ``cls2``/``mask1``/aux heads, no losses times 0), takes the clean
  routed prediction of the first half from the first attack step's features, and computes the
  adversarial routed prediction only for that half (the second half's router target is all 0).
* TRADES adds beta * KL(clean || adversarial) per valid pixel to the clean loss, the example maximising it.
* PGD-AT attacks every image (but a ``clean_fraction``); with ``adv_train_mode`` it crafts in train mode,
  as SAM-AT's ``--adv`` does.
"""

from __future__ import annotations

from defense.base import NoDefense, StepResult, TrainingAttack, UpdateBatch, cross_entropy, resize_target, unwrap
from defense.ddcat import DDCAT
from defense.pgd_at import PGDAT
from defense.sat import SAT
from defense.step import check_finite, train_step
from defense.trades import TRADES

__all__ = [
    "DDCAT",
    "DEFENSES",
    "PGDAT",
    "SAT",
    "TRADES",
    "NoDefense",
    "StepResult",
    "TrainingAttack",
    "UpdateBatch",
    "build_defense",
    "check_finite",
    "cross_entropy",
    "resize_target",
    "train_step",
    "unwrap",
]

DEFENSES = {cls.name: cls for cls in (NoDefense, SAT, DDCAT, PGDAT, TRADES)}


def build_defense(
    name: str,
    aux_weight: float,
    ignore_label: int,
    attack: TrainingAttack | None = None,
    clean_fraction: float = 0.0,
    trades_beta: float = 6.0,
) -> NoDefense:
    """The strategy named by the config key ``defense``."""
    if name not in DEFENSES:
        raise ValueError(f"unknown defense {name!r}; expected one of {sorted(DEFENSES)}")
    if name == "pgd_at":
        return PGDAT(aux_weight, ignore_label, attack, clean_fraction)
    if name == "trades":
        return TRADES(aux_weight, ignore_label, attack, trades_beta)
    return DEFENSES[name](aux_weight=aux_weight, ignore_label=ignore_label, attack=attack)
