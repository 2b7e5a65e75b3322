"""What benchmarking a zoo costs: per model, the forward-backward passes per image its protocols need (windows,
scales, flips and attack steps counted as evaluation/inference.py runs them), the measured CPU time and FLOPs of
one pass, and from them the time for the whole val set: on this CPU (measured rate x passes) and on a GPU
(FLOPs / an assumed sustained rate: an estimate, until the GPU path is measured).

    python tool_bench/zoo_cost.py [--zoo zoo/zoo.yaml] [--only NAME,...] [--threads 2] [--gpu-tflops 60]

One JSON line per model, then a markdown table (docs/benchmark.md shows it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch
from torch.utils.flop_counter import FlopCounterMode

from attack.registry import parse_specs
from evaluation.benchmark import mode_cost, model_config, protocols_for
from evaluation.inference import Protocol
from evaluation.rows import markdown_table
from evaluation.specs import distinct_labels, expand_ensembles
from evaluation.zoo import load_zoo
from model import model_from_config

# A typical val image (H, W) and the val set's size, per dataset (VOC: most images are 500 x 375 or 375 x 500).
DATASETS = {
    "voc2012": ((375, 500), 1449),
    "cityscapes": ((1024, 2048), 500),
    "ade20k": ((512, 683), 2000),
    "synthetic": ((96, 128), 50),  # make demo's set: 96 px high, wider by up to max_aspect
}


def pixels_per_pass(protocol: Protocol, size: tuple[int, int], pirat: bool) -> int:
    """Input pixels one pass over an image covers: every window at every scale (PIR-AT's preset: one crop)."""
    if pirat:
        return protocol.crop_h * protocol.crop_w
    total = 0
    for scale in protocol.scales:
        new_h, new_w = protocol.scaled_size(*size, scale)
        _, windows = protocol.layout(new_h, new_w)
        total += sum((e_h - s_h) * (e_w - s_w) for s_h, e_h, s_w, e_w in windows)
    return total


def pixel_passes(entry, size) -> int:
    """Pixels x passes per image over the entry's protocols (clean with its flip)."""
    total = 0
    with tempfile.TemporaryDirectory() as tmp:
        for protocol in protocols_for(entry):
            cfg = model_config(entry, protocol, Path(tmp) / "m.pth", Path(tmp), ["pretrained", "False"])
            pixels = pixels_per_pass(Protocol.from_config(cfg), size, cfg.test_preprocess == "pirat")
            runs = expand_ensembles(distinct_labels(parse_specs(cfg.attacks)))[0]
            total += pixels * ((2 if cfg.flip else 1) + sum(mode_cost(spec) for spec in runs))
    return total


def one_pass(entry, threads: int) -> tuple[float, float, int]:
    """(median ms, FLOPs, pixels) of one forward-backward to the input on one test crop, random weights."""
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = model_config(entry, protocols_for(entry)[-1], Path(tmp) / "m.pth", Path(tmp), ["pretrained", "False"])
    model = model_from_config(cfg).eval().requires_grad_(False)
    x = torch.rand(1, 3, cfg.test_h, cfg.test_w, requires_grad=True)

    def step():
        model(x).sum().backward()  # to the input only: the weights take no gradient
        x.grad = None

    with FlopCounterMode(display=False) as counter:
        step()
    times = []
    for _ in range(2):
        start = time.perf_counter()
        step()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times), counter.get_total_flops(), cfg.test_h * cfg.test_w


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", default=str(ROOT / "zoo/zoo.yaml"))
    parser.add_argument("--only", default="", help="model names, comma-separated")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gpu-tflops", type=float, default=60.0, help="assumed sustained GPU rate (estimate)")
    args = parser.parse_args()
    only = {n for n in args.only.split(",") if n}
    entries = [e for e in load_zoo(args.zoo) if (not only or e.name in only) and e.dataset in DATASETS]
    measured: dict[tuple, tuple[float, float, int]] = {}
    rows = []
    for entry in entries:
        size, images = DATASETS[entry.dataset]
        key = (entry.config.replace("_sat", "").replace("_ddcat", ""), tuple(sorted(entry.overrides.items())))
        if key not in measured:
            measured[key] = one_pass(entry, args.threads)
        ms, flops, crop_pixels = measured[key]
        passes = pixel_passes(entry, size) / crop_pixels  # in crop-sized passes
        cpu_hours = ms * passes * images / 3.6e6
        gpu_hours = flops * passes * images / (args.gpu_tflops * 1e12) / 3600
        row = {"model": entry.name, "crop_passes_per_image": round(passes), "cpu_ms_per_pass": round(ms)}
        row |= {"gflop_per_pass": round(flops / 1e9), "images": images}
        row |= {"cpu_hours": round(cpu_hours, 1), "gpu_hours_estimate": round(gpu_hours, 2)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    header = ["model", "crop passes / image", f"CPU ms / pass ({args.threads} threads)", "GFLOP / pass", "images"]
    header += ["CPU hours", f"GPU hours (estimate, {args.gpu_tflops:g} TFLOP/s)"]
    for line in markdown_table(header, [list(r.values()) for r in rows]):
        print(line)
    total_cpu, total_gpu = sum(r["cpu_hours"] for r in rows), sum(r["gpu_hours_estimate"] for r in rows)
    print(f"total: {total_cpu:.0f} CPU hours, {total_gpu:.1f} GPU hours (estimate)")


if __name__ == "__main__":
    main()
