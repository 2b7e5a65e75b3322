"""Attack specs of the config (``TEST.attacks``) -> attack objects, one per (attack, eps)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from attack.apgd import APGD
from attack.base import Attack
from attack.bim import BIM
from attack.cw import CW
from attack.dag import DAG
from attack.deepfool import DeepFool
from attack.fgsm import FGSM
from attack.padam import PAdam
from attack.pgd import PGD, CosPGD, SegPGD
from attack.sea import SEA
from attack.transfer import parse_source
from util.errors import UserError

ATTACKS: dict[str, type[Attack]] = {"fgsm": FGSM, "bim": BIM, "pgd": PGD, "segpgd": SegPGD, "cospgd": CosPGD,
                                    "apgd": APGD, "sea": SEA, "padam": PAdam, "dag": DAG, "cw": CW,
                                    "deepfool": DeepFool}
_PGD_FIELDS = {"eps", "steps", "alpha", "norm", "restarts", "random_start"}
# Constructor arguments a spec may set, per attack.
FIELDS = {"fgsm": {"eps"}, "bim": {"eps", "steps", "alpha", "random_start"}, "pgd": _PGD_FIELDS,
          "segpgd": _PGD_FIELDS, "cospgd": _PGD_FIELDS | {"targeted"},
          "apgd": {"eps", "steps", "loss", "momentum", "rho", "track", "random_start"}, "sea": {"eps", "steps"},
          "padam": {"eps", "steps", "alpha", "loss", "restarts", "random_start"},
          "dag": {"eps", "steps", "gamma"},
          "cw": {"eps", "steps", "search_steps", "c", "lr", "kappa", "success_acc"},
          "deepfool": {"eps", "steps", "overshoot", "norm"}}
# Minimum-norm attacks: without eps (or with eps .inf) they report the unclipped result.
MIN_NORM = {"dag", "cw", "deepfool"}
_PIXEL_UNITS = ("alpha", "gamma")  # step sizes given in 1/unit like eps
_SPEC_ONLY = {"name", "unit"}  # spec fields that are not constructor arguments
_NOT_KWARGS = ("name", "label", "protocol", "source")  # expanded-spec fields that are not either


def _label(name: str, eps: float) -> str:
    return f"{name}_eps{eps:g}"


def parse_specs(raw: Sequence[Any], where: str = "config key 'attacks'") -> list[dict]:
    """Expand ``attacks`` entries into one spec per eps, with eps and step sizes in [0, 1] pixel units.

    An entry is a mapping: ``name`` (one of :data:`ATTACKS`), ``eps`` (a number or a list), the
    attack's fields of :data:`FIELDS`, and ``unit`` (default 255: eps 8 means 8/255; 1 for fractions, as
    the original's BIM 0.03). ``alpha`` and ``gamma`` are in the same unit as eps. The minimum-norm
    attacks (:data:`MIN_NORM`) take eps ``.inf`` for their unclipped result, the default without eps.

    Raises:
        UserError: an unknown attack or field, or a bad value, naming the entry.
    """
    specs = []
    for index, entry in enumerate(raw):
        at = f"{where}, entry {index + 1}"
        if not isinstance(entry, Mapping) or "name" not in entry:
            raise UserError(f"{at}: expected a mapping with 'name' and 'eps', got {entry!r}")
        name = str(entry["name"]).lower()
        if name not in ATTACKS:
            raise UserError(f"{at}: unknown attack '{name}'; known: {', '.join(ATTACKS)}")
        allowed = FIELDS[name] | _SPEC_ONLY | {"source"}
        unknown = sorted(set(entry) - allowed)
        if unknown:
            raise UserError(f"{at}: {name} has no field '{unknown[0]}'; it takes {', '.join(sorted(allowed))}")
        unit = float(entry.get("unit", 255))
        eps_list = entry.get("eps", float("inf") if name in MIN_NORM else None)
        eps_list = list(eps_list) if isinstance(eps_list, Sequence) and not isinstance(eps_list, str) else [eps_list]
        for eps in eps_list:
            if not isinstance(eps, (int, float)) or not eps >= 0:
                raise UserError(f"{at}: eps must be numbers >= 0 (in 1/{unit:g} units), got {eps!r}")
            spec = {k: v for k, v in entry.items() if k not in _SPEC_ONLY}
            spec.update(name=name, label=_label(name, eps), eps=eps / unit)
            if "source" in entry:  # transfer attack: crafted on another model (attack/transfer.py)
                spec["source"] = parse_source(entry["source"], at)
                spec["label"] += "_from_" + Path(spec["source"]["config"]).stem
            for key in _PIXEL_UNITS:
                if spec.get(key) is None:
                    continue
                if not isinstance(spec[key], (int, float)):
                    raise UserError(f"{at}: {key} must be a number (in 1/{unit:g} units), got {spec[key]!r}")
                spec[key] = spec[key] / unit
            specs.append(spec)
    return specs


def build_attack(spec: Mapping[str, Any], model: nn.Module, ignore_index: int = 255, **extra: Any) -> Attack:
    """The attack object of one expanded spec (see :func:`parse_specs`) on ``model``; ``extra`` goes to the
    constructor (e.g. ``forward``). A spec's ``source`` is built by the caller (:class:`attack.transfer.Transfer`)."""
    kwargs = {k: v for k, v in spec.items() if k not in _NOT_KWARGS} | extra
    try:
        return ATTACKS[spec["name"]](model, ignore_index=ignore_index, **kwargs)
    except (ValueError, TypeError) as err:  # a bad value, or a value of the wrong type
        raise UserError(f"attack '{spec.get('label', spec['name'])}': {err}") from None
