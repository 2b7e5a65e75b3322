"""Attack specs of the config (``TEST.attacks``) -> attack objects, one per (attack, eps)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from attack.apgd import APGD
from attack.base import Attack, MinNormAttack
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

ATTACKS: dict[str, type[Attack]] = {
    cls.name: cls for cls in (FGSM, BIM, PGD, SegPGD, CosPGD, APGD, SEA, PAdam, DAG, CW, DeepFool)
}
# Constructor arguments a spec may set, per attack.
FIELDS = {name: cls.fields for name, cls in ATTACKS.items()}
# Minimum-norm attacks: without eps (or with eps .inf) they report the unclipped result.
MIN_NORM = {name for name, cls in ATTACKS.items() if issubclass(cls, MinNormAttack)}
_PIXEL_UNITS = ("alpha", "gamma")  # step sizes given in 1/unit like eps
_COUNTS = ("steps", "restarts", "search_steps")  # whole numbers >= 1
_SPEC_ONLY = {"name", "unit", "source"}  # entry fields that are not constructor arguments


@dataclass(frozen=True)
class AttackSpec:
    """One attack at one eps: a config entry expanded by :func:`parse_specs`, in [0, 1] pixel units.

    ``label`` names its mode (folder, row, curve); ``params`` are the entry's other constructor arguments;
    ``source`` makes it a transfer attack crafted on another model (attack/transfer.py); ``protocol``
    overrides the config's ``attack_protocol`` (the original BIM attacks each crop).
    """

    name: str
    label: str
    eps: float
    params: Mapping[str, Any] = field(default_factory=dict)
    source: Mapping[str, Any] | None = None
    protocol: str | None = None

    @property
    def attack_class(self) -> type[Attack]:
        return ATTACKS[self.name]

    @property
    def steps(self) -> int | None:
        """Iterations of an iterative attack (its constructor's default when the entry sets none), else None."""
        if not self.attack_class.iterative:
            return None
        return self.params.get("steps") or self.attack_class.default("steps")

    @property
    def norm(self) -> str:
        """The threat model, 'linf' or 'l2': the entry's ``norm``, else its attack's default."""
        if "norm" in self.params:
            return self.params["norm"]
        cls = self.attack_class
        return cls.default("norm") if "norm" in cls.fields else cls.norm

    def replace(self, **changes: Any) -> AttackSpec:
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """The spec as stored in fingerprints and result rows (JSON)."""
        out = {**self.params, "name": self.name, "label": self.label, "eps": self.eps}
        if self.source is not None:
            out["source"] = dict(self.source)
        if self.protocol is not None:
            out["protocol"] = self.protocol
        return out


def _label(name: str, eps: float) -> str:
    return f"{name}_eps{eps:g}"


def parse_specs(raw: Sequence[Any], where: str = "config key 'attacks'") -> list[AttackSpec]:
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
        allowed = FIELDS[name] | _SPEC_ONLY
        unknown = sorted(set(entry) - allowed)
        if unknown:
            raise UserError(f"{at}: {name} has no field '{unknown[0]}'; it takes {', '.join(sorted(allowed))}")
        unit = _unit(entry, at)
        eps_list = entry.get("eps", float("inf") if name in MIN_NORM else None)
        eps_list = list(eps_list) if isinstance(eps_list, Sequence) and not isinstance(eps_list, str) else [eps_list]
        if not eps_list:
            raise UserError(f"{at}: eps is an empty list; give at least one radius")
        _check_values(entry, at)
        for eps in eps_list:
            if not isinstance(eps, (int, float)) or not eps >= 0:
                raise UserError(f"{at}: eps must be numbers >= 0 (in 1/{unit:g} units), got {eps!r}")
            params = {k: v for k, v in entry.items() if k not in _SPEC_ONLY and k != "eps"}
            for key in _PIXEL_UNITS:
                if params.get(key) is None:
                    continue
                if not isinstance(params[key], (int, float)):
                    raise UserError(f"{at}: {key} must be a number (in 1/{unit:g} units), got {params[key]!r}")
                params[key] = params[key] / unit
            spec = AttackSpec(name, _label(name, eps), eps / unit, params)
            if "source" in entry:  # transfer attack: crafted on another model (attack/transfer.py)
                source = parse_source(entry["source"], at)
                spec = spec.replace(source=source, label=f"{spec.label}_from_{Path(source['config']).stem}")
            specs.append(spec)
    return specs


def _unit(entry: Mapping[str, Any], at: str) -> float:
    unit = entry.get("unit", 255)
    if isinstance(unit, bool) or not isinstance(unit, (int, float)) or not 0 < unit < float("inf"):
        raise UserError(f"{at}: unit must be a number > 0 (255: eps 8 means 8/255; 1: fractions), got {unit!r}")
    return float(unit)


def _check_values(entry: Mapping[str, Any], at: str) -> None:
    """Counts are whole numbers >= 1 and step sizes numbers > 0 (checked before anything runs or is written)."""
    for key in _COUNTS:
        value = entry.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise UserError(f"{at}: {key} must be a whole number >= 1, got {value!r}")
    for key in _PIXEL_UNITS:
        value = entry.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf")
        ):
            raise UserError(f"{at}: {key} must be a number > 0, got {value!r}")


def build_attack(spec: AttackSpec, model: nn.Module, ignore_index: int = 255, **extra: Any) -> Attack:
    """The attack object of one spec on ``model``; ``extra`` goes to the constructor (e.g. ``forward``). A spec's
    ``source`` is built by the caller (:class:`attack.transfer.Transfer`)."""
    try:
        return spec.attack_class(model, eps=spec.eps, ignore_index=ignore_index, **spec.params, **extra)
    except (ValueError, TypeError) as err:  # a bad value, or a value of the wrong type
        raise UserError(f"attack '{spec.label}': {err}") from None
