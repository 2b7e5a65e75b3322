"""Evaluation protocols by name: ``config/protocols/<name>.yaml`` holds the config keys a paper's evaluation sets
and the attack list it runs. One place for each, read by ``test.py --protocol``, the tool_test scripts (through
``PROTOCOL``) and the benchmark (evaluation/benchmark.py); a new protocol is one new file there."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from util.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL_DIR = ROOT / "config" / "protocols"


def names() -> list[str]:
    """The protocols config/protocols/ holds."""
    return sorted(p.stem for p in PROTOCOL_DIR.glob("*.yaml"))


@dataclass(frozen=True)
class EvalProtocol:
    """A named evaluation: ``overrides`` (config key -> value) and the attack list file ``attacks``."""

    name: str
    overrides: dict
    attacks: str

    def attack_text(self) -> str:
        """The attack list's YAML text, as test.py's ``attacks`` key takes it."""
        return (ROOT / self.attacks).read_text()

    def opts(self) -> list[str]:
        """``key value`` overrides for :func:`util.config.load_config`: the protocol's keys and its attacks."""
        out = []
        for key, value in self.overrides.items():
            out += [key, yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()]
        return [*out, "attacks", self.attack_text()]


def load_protocol(name: str) -> EvalProtocol:
    """The protocol ``name`` (a file stem of config/protocols/).

    Raises:
        UserError: an unknown name, or a file without ``attacks`` naming an existing list.
    """
    path = PROTOCOL_DIR / f"{name}.yaml"
    if not path.is_file():
        raise UserError(f"unknown evaluation protocol '{name}'; known: {', '.join(names())} (config/protocols/)")
    data = yaml.safe_load(path.read_text()) or {}
    attacks = data.get("attacks")
    if not isinstance(attacks, str) or not (ROOT / attacks).is_file():
        raise UserError(f"protocol file '{path}': 'attacks' must name an attack list file, got {attacks!r}")
    return EvalProtocol(name, dict(data.get("overrides") or {}), attacks)
