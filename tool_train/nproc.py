"""Print the default process count for a config (tool_train/launch.sh, when NPROC is not set).

python -m tool_train.nproc --config CONFIG [--gpu_key test_gpu] [key value ...]
"""

from __future__ import annotations

import argparse

import torch

from util.config import load_config
from util.errors import ArgumentParser, run_main


def default_nproc(config: str, opts: list[str], gpu_key: str = "train_gpu") -> int:
    """Processes per machine: the entries of ``gpu_key`` (train_gpu or test_gpu; at most the visible GPUs) when
    CUDA is present, else 1. The config is checked either way (UserError)."""
    gpus = load_config(config, opts)[gpu_key]
    if not torch.cuda.is_available():
        return 1
    return max(1, min(len(gpus), torch.cuda.device_count()))


def main() -> None:
    parser = ArgumentParser(description="Print the default process count for a config")
    parser.add_argument("--config", required=True)
    parser.add_argument("--gpu_key", default="train_gpu", choices=["train_gpu", "test_gpu"])
    parser.add_argument("opts", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    print(default_nproc(args.config, args.opts, args.gpu_key))


if __name__ == "__main__":
    run_main(main)  # a bad config: one line and exit 2 (launch.sh then falls back to 1; the entry point reports it)
