"""Console logging in semseg's format, set up once per entry point."""

from __future__ import annotations

import logging
import sys


def setup_logging(name: str = "main-logger") -> logging.Logger:
    """Log INFO and above to stdout with a timestamp; returns the entry point's logger."""
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stdout,
        format="[%(asctime)s %(levelname)s %(filename)s line %(lineno)d] %(message)s",
        force=True,
    )
    return logging.getLogger(name)


def format_seconds(seconds: float) -> str:
    """hh:mm:ss for ETAs."""
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
