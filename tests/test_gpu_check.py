"""tool_bench/gpu_check.sh end to end in its CPU dry run, so that the GPU check cannot rot between GPU sessions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tool_bench.gpu_check import Plan

ROOT = Path(__file__).resolve().parents[1]


def test_dry_run_goes_through_every_phase(tmp_path) -> None:
    out = tmp_path / "check"
    done = subprocess.run(
        ["sh", "tool_bench/gpu_check.sh", str(out), "--dry-run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    summary = json.loads((out / "gpu_check.json").read_text())
    assert (out / "gpu_check.log").read_text().count("== ") >= 5 and summary["failures"] == []
    phases = summary["phases"]
    assert phases["tests"]["result"]["rc"] == 0 and "tests collected" in phases["tests"]["result"]["summary"]
    cases = phases["matrix"]["result"]["cases"]
    assert [(c["model"], c["defense"], c["precision"], c["channels_last"]) for c in cases] == Plan.for_run(True).cases()
    assert {c["precision"] for c in cases} == {"fp32", "bf16", "fp16"} and {c["channels_last"] for c in cases} == {
        False,
        True,
    }
    assert all(c["finite"] and len(c["losses"]) == 2 for c in cases)
    runs = phases["torchrun"]["result"]
    assert [entry["rc"] for entry in runs if "rc" in entry] == [0, 0]
    assert "torch.distributed.run" in runs[0]["command"]
    modes = runs[-1]["results"]["modes"]
    assert {mode["name"] for mode in modes} >= {"clean", "bim", "sea"}, modes
    assert all(0 <= mode["mIoU"] <= 1 for mode in modes)
    bench = [row for row in phases["bench"]["result"] if "ms_per_step" in row]
    assert {row.get("impl", "ours") for row in bench} == {"ours", "original"}
    assert all(row["speedup"] > 0 for row in bench if "speedup" in row)
    assert any("ours_s_per_image" in row for row in phases["bench"]["result"])


def test_the_gpu_plan_covers_every_model_defense_precision_and_layout() -> None:
    cases = Plan.for_run(False).cases()
    assert len(cases) == len(set(cases)) == 2 * 4 * 3 * 2 + 2 * 3 * 3 * 2  # DDC-AT on our two models only
    assert {c[0] for c in cases} == {"psp50", "aspp50", "deeplabv3plus_mobilenet", "deeplabv3_resnet50"}
    assert {(c[1], c[2], c[3]) for c in cases if c[0] == "psp50"} == {
        (d, p, cl) for d in ("none", "sat", "ddcat", "sam") for p in ("fp32", "bf16", "fp16") for cl in (False, True)
    }


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_without_cuda_and_without_dry_run_it_says_what_to_do(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "tool_bench/gpu_check.py", "--out", str(tmp_path / "x")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--dry-run" in done.stderr
    assert not (tmp_path / "x").exists()
    done = subprocess.run(["sh", "tool_bench/gpu_check.sh"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "OUT_DIR" in done.stderr and done.stderr.count("\n") == 1
