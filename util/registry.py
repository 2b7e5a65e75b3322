"""Registries of names: each model family, backbone, defense and attack registers itself where it is defined
(timm's ``@register_model``), and whoever resolves a config name reads it here, so no list is kept twice."""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from util.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names of one kind (``arch``, ``defense``, ...) -> what builds them, in registration order.

    Args:
        kind: the config key the names are given under, used in error messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated class or function under ``name``."""

        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice ({self._entries[name]!r}, {obj!r})")
            self._entries[name] = obj
            return obj

        return add

    def get(self, name: str, where: str = "config") -> T:
        """What ``name`` builds.

        Raises:
            UserError: an unregistered name, with the known ones and the closest.
        """
        if name not in self._entries:
            close = difflib.get_close_matches(str(name), self.names(), n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UserError(f"{where}: {self.kind} must be one of {self.names()}, got {name!r}{hint}")
        return self._entries[name]

    def names(self) -> list[str]:
        return list(self._entries)

    def items(self) -> Iterable[tuple[str, T]]:
        return self._entries.items()

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def import_submodules(package: str, path: Iterable[str]) -> None:
    """Import every module of a package (its ``__name__`` and ``__path__``), so that each registers what it
    defines: a new family is one new file, and no import list is edited."""
    for module in sorted(pkgutil.iter_modules(path), key=lambda m: m.name):
        importlib.import_module(f"{package}.{module.name}")
