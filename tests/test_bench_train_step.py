"""tool_bench/train_step.py: a tiny real run, the median over repeats, and its refusal of a repeat count of 0."""

import argparse
import json
import subprocess
import sys

from tests.conftest import ROOT
from tool_bench.train_step import summarize


def _bench(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "tool_bench/train_step.py", "--layers", "18", "--crop", "33", "--batch", "2", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False, timeout=300)


def test_one_line_per_implementation_with_the_speedup_and_the_flop_bound():
    done = _bench("--steps", "1", "--threads", "1", "--defense", "sat", "--original", "--flops", "--repeat", "2")
    assert done.returncode == 0, done.stderr[-2000:]
    original, ours = map(json.loads, done.stdout.strip().splitlines())
    assert original["impl"] == "original" and "impl" not in ours and ours["repeats"] == 2
    assert original["gflop_per_step"] > ours["gflop_per_step"] > 0  # SAT attacks half the batch, input grads only
    low, high = ours["speedup_range"]
    assert (
        low <= ours["speedup"] <= high and abs(ours["of_flop_bound"] - ours["speedup"] / ours["flop_ratio"]) <= 0.02
    )  # from unrounded ratios


def test_the_speedup_is_the_median_of_the_back_to_back_ratios_not_the_ratio_of_medians():
    args = argparse.Namespace(original=True, repeat=3, batch=4, flops=False)
    times = [(100.0, 200.0), (200.0, 300.0), (50.0, 200.0)]  # (ours, original) ms per step per repeat
    base = {"defense": "sat", "ms_per_step": 0.0}
    runs = [
        {"ours": base | {"ms_per_step": a}, "original": base | {"ms_per_step": b, "impl": "original"}} for a, b in times
    ]
    original, ours = summarize(runs, args)
    assert (ours["ms_per_step"], original["ms_per_step"]) == (100.0, 200.0)
    assert ours["speedup"] == 2.0 and ours["speedup_range"] == [1.5, 4.0]  # ratios 2, 1.5, 4
    assert ours["images_per_s"] == 40.0


def test_a_repeat_count_below_one_is_one_line_and_exit_code_2():
    done = _bench("--repeat", "0")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: train_step.py: --repeat and --steps must be at least 1, got 0")
    assert len(done.stderr.splitlines()) == 1


def test_a_named_model_is_timed_and_an_unknown_name_is_one_line():
    done = _bench("--model", "upernet_convnext_t_cvst", "--steps", "1", "--threads", "2", "--defense", "none")
    assert done.returncode == 0, done.stderr[-2000:]
    (line,) = map(json.loads, done.stdout.strip().splitlines())
    assert line["model"] == "upernet_convnext_t_cvst" and line["ms_per_step"] > 0
    unknown = _bench("--model", "upernet_convnext_x", "--defense", "none")
    assert unknown.returncode == 2 and len(unknown.stderr.splitlines()) == 1
    assert "model must be one of" in unknown.stderr and "did you mean" in unknown.stderr


def test_a_named_model_with_the_original_or_ddcat_is_one_line():
    for extra in (["--original", "--defense", "none"], ["--defense", "ddcat"]):
        done = _bench("--model", "upernet_convnext_t_cvst", *extra)
        assert done.returncode == 2 and done.stdout == "" and len(done.stderr.splitlines()) == 1
        assert done.stderr.startswith("error: train_step.py: --model times ours with --defense none, sat or pgd_at;")
    done = _bench("--defense", "pgd_at")
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1 and "give --model" in done.stderr


def test_pir_at_s_step_is_timed_against_the_reference_s_with_the_work_it_skips():
    """Ours crafts without parameter gradients (fewer FLOPs than the reference's iteration); with PIR-AT's slip
    (--adv-param-grads) it computes them as the reference does, so the counts meet."""
    common = ("--model", "upernet_convnext_demo", "--defense", "pgd_at", "--classes", "5", "--steps", "1")
    done = _bench(*common, "--original", "--flops", "--threads", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    original, ours = map(json.loads, done.stdout.strip().splitlines())
    assert original["impl"] == "original" and original["gflop_per_step"] > ours["gflop_per_step"] > 0
    slip = _bench(*common, "--flops", "--threads", "1", "--adv-param-grads")
    (line,) = map(json.loads, slip.stdout.strip().splitlines())
    assert (
        line["adv_param_grads"]
        and abs(line["gflop_per_step"] - original["gflop_per_step"]) <= 0.02 * original["gflop_per_step"]
    )
