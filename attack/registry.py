"""Attack specs of the config (``TEST.attacks``) -> attack objects, one per (attack, eps)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from attack.apgd import APGD
from attack.base import Attack
from attack.bim import BIM
from attack.fgsm import FGSM
from attack.pgd import PGD, CosPGD, SegPGD
from attack.sea import SEA
from util.errors import UserError

ATTACKS: dict[str, type[Attack]] = {"fgsm": FGSM, "bim": BIM, "pgd": PGD, "segpgd": SegPGD, "cospgd": CosPGD,
                                    "apgd": APGD, "sea": SEA}
_PGD_FIELDS = {"eps", "steps", "alpha", "norm", "restarts", "random_start"}
# Constructor arguments a spec may set, per attack.
FIELDS = {"fgsm": {"eps"}, "bim": {"eps", "steps", "alpha", "random_start"}, "pgd": _PGD_FIELDS,
          "segpgd": _PGD_FIELDS, "cospgd": _PGD_FIELDS, "apgd": {"eps", "steps", "loss", "momentum", "rho"}, "sea": {"eps", "steps"}}
_SPEC_ONLY = {"name", "unit"}  # spec fields that are not constructor arguments


def _label(name: str, eps: float) -> str:
    return f"{name}_eps{eps:g}"


def parse_specs(raw: Sequence[Any], where: str = "config key 'attacks'") -> list[dict]:
    """Expand ``attacks`` entries into one spec per eps, with eps and alpha in [0, 1] pixel units.

    An entry is a mapping: ``name`` (fgsm | bim | pgd | segpgd | cospgd), ``eps`` (a number or a list),
    optional ``steps``, ``alpha``, ``restarts``, ``norm``, ``random_start`` where the attack has them,
    and ``unit`` (default 255: eps 8 means 8/255; 1 for fractions, as the original's BIM 0.03).

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
        unit = float(entry.get("unit", 255))
        eps_list = entry.get("eps")
        eps_list = list(eps_list) if isinstance(eps_list, Sequence) and not isinstance(eps_list, str) else [eps_list]
        for eps in eps_list:
            if not isinstance(eps, (int, float)) or eps < 0:
                raise UserError(f"{at}: eps must be numbers >= 0 (in 1/{unit:g} units), got {eps!r}")
            spec = {k: v for k, v in entry.items() if k not in _SPEC_ONLY}
            spec.update(name=name, label=_label(name, eps), eps=eps / unit)
            if spec.get("alpha") is not None:
                spec["alpha"] = spec["alpha"] / unit
            specs.append(spec)
    return specs


def build_attack(spec: Mapping[str, Any], model: nn.Module, ignore_index: int = 255) -> Attack:
    """The attack object of one expanded spec (see :func:`parse_specs`)."""
    kwargs = {k: v for k, v in spec.items() if k not in ("name", "label", "protocol")}
    try:
        return ATTACKS[spec["name"]](model, ignore_index=ignore_index, **kwargs)
    except ValueError as err:
        raise UserError(f"attack '{spec.get('label', spec['name'])}': {err}") from None
