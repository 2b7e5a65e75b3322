"""Write the inference checkpoint of a trained model: DDC-AT's extra heads dropped.

    python -m model.export exp/voc2012/pspnet50_ddcat/model/train_epoch_50.pth pspnet50_ddcat.pth

A DDC-AT checkpoint becomes a plain one (``cls1`` -> ``cls``, ``aux_cls1`` -> ``aux``, ``cls2`` and
``mask1`` dropped), with exactly the undefended model's parameters; the optimizer state is left out.
test.py loads either form.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from model.checkpoint import read_checkpoint
from model.ddcat import is_ddcat_state, to_plain_state_dict
from util.errors import ArgumentParser, UserError, run_main
from util.log import setup_logging

logger = logging.getLogger(__name__)


def export(src: str, dst: str) -> dict[str, torch.Tensor]:
    """Write the inference form of checkpoint ``src`` to ``dst`` (refuses to overwrite)."""
    if os.path.exists(dst):
        raise UserError(f"'{dst}' already exists; remove it or choose another output path")
    checkpoint, state = read_checkpoint(src)
    plain = to_plain_state_dict(state) if is_ddcat_state(state) else state
    out = {"state_dict": plain}
    if "epoch" in checkpoint:
        out["epoch"] = checkpoint["epoch"]
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{dst}.tmp"
    torch.save(out, tmp)
    os.replace(tmp, dst)
    dropped = len(state) - len(plain)
    logger.info(f"wrote {dst}: {len(plain)} tensors ({dropped} DDC-AT training-only tensors dropped)")
    return plain


def main() -> None:
    setup_logging()
    parser = ArgumentParser(description="Export an inference checkpoint (DDC-AT heads dropped)")
    parser.add_argument("checkpoint", help="training checkpoint (train_epoch_N.pth)")
    parser.add_argument("out", help="output file; must not exist")
    args = parser.parse_args()
    export(args.checkpoint, args.out)


if __name__ == "__main__":
    run_main(main)
