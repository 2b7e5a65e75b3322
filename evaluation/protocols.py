"""Evaluation protocols by name: ``config/protocols/<name>.yaml`` holds the config keys a paper's evaluation sets
and the attack list it runs. One place for each, read by ``test.py --protocol``, the tool_test scripts (through
``PROTOCOL``) and the benchmark (evaluation/benchmark.py); a new protocol is one new file there."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from util.config import as_opts
from util.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL_DIR = ROOT / "config" / "protocols"


def names() -> list[str]:
    """The protocols config/protocols/ holds."""
    return sorted(p.stem for p in PROTOCOL_DIR.glob("*.yaml"))


@dataclass(frozen=True)
class EvalProtocol:
    """A named evaluation: ``overrides`` (config key -> value), the attack list files ``attacks``, the result's
    ``metric`` its paper reports (a :data:`evaluation.rows.METRICS` name) and, for models evaluated in L2 too,
    ``l2_attacks``."""

    name: str
    overrides: dict
    attacks: tuple[str, ...]
    metric: str = "mIoU"
    l2_attacks: str | None = None

    def attack_text(self) -> str:
        """The attack lists' YAML text, as test.py's ``attacks`` key takes it."""
        return "\n".join((ROOT / path).read_text() for path in self.attacks)

    def opts(self) -> list[str]:
        """``key value`` overrides for :func:`util.config.load_config`: the protocol's keys and its attacks."""
        return [*as_opts(self.overrides), "attacks", self.attack_text()]


def load_protocol(name: str) -> EvalProtocol:
    """The protocol ``name`` (a file stem of config/protocols/).

    Raises:
        UserError: an unknown name, or a file without ``attacks`` naming an existing list.
    """
    path = PROTOCOL_DIR / f"{name}.yaml"
    if not path.is_file():
        raise UserError(f"unknown evaluation protocol '{name}'; known: {', '.join(names())} (config/protocols/)")
    data = yaml.safe_load(path.read_text()) or {}
    attacks, l2 = data.get("attacks"), data.get("l2_attacks")
    for value in (attacks, *([l2] if l2 else [])):
        if not isinstance(value, str) or not (ROOT / value).is_file():
            raise UserError(f"protocol file '{path}': an attack list must name an existing file, got {value!r}")
    return EvalProtocol(name, dict(data.get("overrides") or {}), (attacks,), data.get("metric", "mIoU"), l2)
