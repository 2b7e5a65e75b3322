"""Evaluate a segmentation model: clean, under the original BIM attack (``--attack``), or clean and under
every attack of the config's ``attacks`` list (the engine: evaluation/suite.py).

    python test.py --config config/synthetic/synthetic_pspnet18.yaml [--attack] [key value ...]
    python test.py --config ... --protocol pirat [key value ...]   # a paper's evaluation (config/protocols/)
    torchrun --nproc_per_node=N test.py --config ... [key value ...]   # the images sharded over N processes
"""

from __future__ import annotations

import argparse
import logging

from attack.registry import parse_specs
from evaluation import protocols
from evaluation.specs import ORIGINAL_BIM, distinct_labels
from evaluation.suite import run_suite
from model import check_names
from util import dist
from util.config import load_config
from util.device import select_device
from util.errors import ArgumentParser, UserError, run_main
from util.log import setup_logging

logger = setup_logging()


def get_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description="Robust semantic segmentation: evaluation")
    parser.add_argument("--config", type=str, required=True, help="YAML config file (see config/)")
    parser.add_argument(
        "--attack",
        action="store_true",
        help="evaluate under the original BIM attack (2 steps, eps 0.03, step 0.01, per crop)",
    )
    parser.add_argument(
        "--protocol",
        help=f"a named evaluation, its keys and attacks set before the overrides: {', '.join(protocols.names())}",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="overrides as 'key value' pairs")
    return parser


def main() -> None:
    args = get_parser().parse_args()
    if args.protocol and args.attack:
        raise UserError("--attack runs DDC-AT's BIM alone; with --protocol give one of the two (ddcat is the same BIM)")
    opts = [*protocols.load_protocol(args.protocol).opts(), *args.opts] if args.protocol else args.opts
    cfg = load_config(args.config, opts)
    check_names(cfg, f"config '{args.config}'")  # arch/backbone/model: the registries of model/
    device = dist.setup(
        select_device(cfg.device, cfg.test_gpu),
        cfg.dist_url,
        cfg.world_size,
        cfg.rank,
        cfg.dist_backend,
        cfg.multiprocessing_distributed,
    )
    if not dist.is_main_process():
        logging.getLogger().setLevel(logging.WARNING)  # rank 0 logs and writes the results
    specs = [ORIGINAL_BIM] if args.attack else [None, *distinct_labels(parse_specs(cfg.attacks))]
    run_suite(cfg, specs, device)
    dist.cleanup()


if __name__ == "__main__":
    run_main(main)
