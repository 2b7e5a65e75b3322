"""Attack specs of the config (``TEST.attacks``) -> attack objects, one per (attack, eps)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from attack.base import ATTACKS, Attack
from attack.transfer import parse_source
from util.errors import UserError

__all__ = ["ATTACKS", "AttackSpec", "build_attack", "check_spec", "parse_specs"]

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
        return ATTACKS.get(self.name, f"attack '{self.label}'")

    @property
    def steps(self) -> int | None:
        """Iterations of an iterative attack (its default when the entry sets none), else None."""
        if not self.attack_class.iterative:
            return None
        return self.params.get("steps") or self.attack_class.defaults["steps"]

    @property
    def norm(self) -> str:
        """The threat model, 'linf' or 'l2': the entry's ``norm``, else its attack's default."""
        if "norm" in self.params:
            return self.params["norm"]
        cls = self.attack_class
        return cls.defaults.get("norm", cls.norm)

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

    An entry is a mapping: ``name`` (one of :data:`ATTACKS`), ``eps`` (a number or a list), the attack's
    fields (:attr:`Attack.defaults`), and ``unit`` (default 255: eps 8 means 8/255; 1 for fractions, as the
    original's BIM 0.03); ``alpha`` and ``gamma`` are in the same unit as eps. A minimum-norm attack without
    eps (or with eps .inf) reports its unclipped result.

    Raises:
        UserError: an unknown attack or field, or a bad value, naming the entry.
    """
    return [spec for index, entry in enumerate(raw) for spec in _entry_specs(entry, f"{where}, entry {index + 1}")]


def _entry_specs(entry: Any, at: str) -> list[AttackSpec]:
    """The specs of one ``attacks`` entry, one per eps; ``at`` names the entry in errors."""
    cls = _attack_class(entry, at)
    unit = _unit(entry, at)
    eps_list = _eps_list(entry, cls, at)
    _check_values(entry, at)
    specs = []
    for eps in eps_list:
        if not isinstance(eps, (int, float)) or not eps >= 0:
            raise UserError(f"{at}: eps must be numbers >= 0 (in 1/{unit:g} units), got {eps!r}")
        params = {k: v for k, v in entry.items() if k not in _SPEC_ONLY and k != "eps"}
        params.update({k: params[k] / unit for k in _PIXEL_UNITS if params.get(k) is not None})
        spec = AttackSpec(cls.name, _label(cls.name, eps), eps / unit, params)
        if "source" in entry:  # transfer attack: crafted on another model (attack/transfer.py)
            source = parse_source(entry["source"], at)
            spec = spec.replace(source=source, label=f"{spec.label}_from_{Path(source['config']).stem}")
        specs.append(spec)
    return specs


def _attack_class(entry: Any, at: str) -> type[Attack]:
    """The attack class an entry names, after checking that it sets only that attack's fields."""
    if not isinstance(entry, Mapping) or "name" not in entry:
        raise UserError(f"{at}: expected a mapping with 'name' and 'eps', got {entry!r}")
    name = str(entry["name"]).lower()
    if name not in ATTACKS:
        raise UserError(f"{at}: unknown attack '{name}'; known: {', '.join(ATTACKS)}")
    cls = ATTACKS.get(name)
    allowed = cls.fields | _SPEC_ONLY
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise UserError(f"{at}: {name} has no field '{unknown[0]}'; it takes {', '.join(sorted(allowed))}")
    return cls


def _eps_list(entry: Mapping[str, Any], cls: type[Attack], at: str) -> list[Any]:
    """The entry's radii as a list (a minimum-norm attack without eps: [inf], its unclipped result)."""
    eps = entry.get("eps", float("inf") if cls.min_norm else None)
    eps = list(eps) if isinstance(eps, Sequence) and not isinstance(eps, str) else [eps]
    if not eps:
        raise UserError(f"{at}: eps is an empty list; give at least one radius")
    return eps


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


def check_spec(spec: AttackSpec) -> None:
    """Every check the spec's attack constructor makes on its values, without building it.

    Raises:
        UserError: a value the attack refuses, as ``attack '<label>': <reason>``.
    """
    cls = spec.attack_class
    try:
        cls.validate(**{**cls.defaults, **spec.params, "eps": spec.eps})
    except (ValueError, TypeError) as err:  # a bad value, or a value of the wrong type
        raise UserError(f"attack '{spec.label}': {err}") from None


def build_attack(spec: AttackSpec, model: nn.Module, ignore_index: int = 255, **extra: Any) -> Attack:
    """The attack object of one spec on ``model``; ``extra`` goes to the constructor (e.g. ``forward``). A spec's
    ``source`` is built by the caller (:class:`attack.transfer.Transfer`)."""
    try:
        return spec.attack_class(model, eps=spec.eps, ignore_index=ignore_index, **spec.params, **extra)
    except (ValueError, TypeError) as err:  # a bad value, or a value of the wrong type
        raise UserError(f"attack '{spec.label}': {err}") from None
