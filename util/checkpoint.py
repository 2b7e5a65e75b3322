"""Crash-proof training checkpoints: atomic writes, a ``latest`` pointer, RNG states for exact resume.

A checkpoint is written to a temporary file in its folder, flushed and fsynced, then renamed over the
final name (and the folder fsynced), so a crash at any moment leaves either the old file or the new one,
never a torn one. ``latest`` (a one-line text file next to the checkpoints, replaced the same way after the
checkpoint itself) names the newest complete checkpoint; ``auto_resume`` starts from it.

RNG states are stored as tensors and plain numbers, so checkpoints still load with
``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

import logging
import os
import random
import signal
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch

from util import dist

logger = logging.getLogger(__name__)

LATEST = "latest"
CHECKPOINT_GLOB = "train_*.pth"


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, fsync it, and rename it to ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` atomically to ``path`` and point ``latest`` in its folder at it."""
    path = Path(path)
    atomic_write(path, lambda f: torch.save(state, f))
    atomic_write(path.parent / LATEST, lambda f: f.write(f"{path.name}\n".encode()))


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The checkpoint ``latest`` names in ``folder``, or None when there is none.

    A pointer to a missing file (deleted by hand) falls back to the newest ``train_*.pth`` by
    modification time, so an interrupted run can still continue.
    """
    folder = Path(folder)
    pointer = folder / LATEST
    if pointer.is_file():
        named = folder / pointer.read_text().strip()
        if named.is_file():
            return named
    candidates = sorted(folder.glob(CHECKPOINT_GLOB), key=lambda p: p.stat().st_mtime)
    return candidates[-1] if candidates else None


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA when present) generator states, storable with weights_only."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(mt), gauss],
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class StopSignal:
    """While active, SIGTERM and SIGINT only request a stop: the training loop finishes its step, saves a
    checkpoint and exits 0. A second SIGINT interrupts at once."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict = {}

    def __enter__(self) -> Self:
        try:
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        except ValueError:  # not the main thread (e.g. an embedding application): signals keep their handlers
            self._previous = {}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self.received == "SIGINT" and name == "SIGINT":
            raise KeyboardInterrupt
        self.received = name
        logger.warning(f"{name} received: stopping after this step with a checkpoint")

    def requested(self) -> bool:
        """Whether any process received a stop signal (all processes agree, so they stop together)."""
        flag = torch.tensor([float(self.received is not None)])
        return bool(dist.all_reduce_sum(flag).item() > 0)
