"""A run owns its output folder while it writes: a second run on the same folder is refused, naming the first.

The lock is a file ``.lock`` in the folder, created atomically (O_EXCL) with the owner's host, pid and start
time, and removed when the run ends. A lock left by a run that crashed on this host (its pid is gone) is taken
over; one from another host is reported with the file to delete once that run is known to be gone. A run takes
the lock before it reads the folder; when it fails before writing anything, the folders the lock created go
again, so a refused input leaves the disk as it was.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from contextlib import nullcontext
from pathlib import Path

from util.errors import UserError

logger = logging.getLogger(__name__)

LOCK = ".lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def owned(folder: str | Path, key: str, holder: bool = True):
    """:class:`RunLock` on ``folder`` for the process that writes (``holder``: rank 0), a no-op for the others."""
    return RunLock(folder, key) if holder else nullcontext()


class RunLock:
    """``with RunLock(folder, key):`` holds ``folder`` (created if needed) for this process."""

    def __init__(self, folder: str | Path, key: str) -> None:
        self.path = Path(folder) / LOCK
        self.key = key
        self.created: list[Path] = []  # the folders the lock made, innermost first

    def __enter__(self) -> RunLock:
        folder = self.path.parent.absolute()
        self.created = [p for p in (folder, *folder.parents) if not p.exists()]
        folder.mkdir(parents=True, exist_ok=True)
        me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._refuse_or_clear(me["host"])
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            return self
        raise UserError(f"{self.key} '{self.path.parent}' is being taken by another run at this moment; try again")

    def _refuse_or_clear(self, host: str) -> None:
        """Refuse while the owner may live; remove the lock of an owner that died on this host."""
        try:
            owner = json.loads(self.path.read_text())
        except (OSError, ValueError):
            owner = {}
        if owner.get("host") == host and isinstance(owner.get("pid"), int) and not _alive(owner["pid"]):
            logger.info(f"{self.path}: the run that held it (pid {owner['pid']}) is gone; taking the folder over")
            self.path.unlink(missing_ok=True)
            return
        who = f"pid {owner.get('pid', '?')} on {owner.get('host', '?')} since {owner.get('since', '?')}"
        raise UserError(
            f"{self.key} '{self.path.parent}' is in use by another run ({who}); wait for it, choose "
            f"another {self.key}, or delete '{self.path}' if that run is gone"
        )

    def __exit__(self, exc_type, *exc) -> None:
        self.path.unlink(missing_ok=True)
        if exc_type is None:
            return
        for folder in self.created:  # a run that failed before writing leaves no empty folder behind
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
