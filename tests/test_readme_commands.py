"""Every command in the README's shell blocks runs on a fresh clone: for real where it takes seconds, else its
first step (the steps after it need minutes of training).

The clone is `git clone` of this checkout, so it holds what is committed: commit before running these."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

TESTED = {
    "make demo",
    "make test",
    "make demo-strong",
    "make demo-pirat",
    "make benchmark-demo",
    "sh tool_train/voc2012/psp_train.sh",
    "sh tool_test/voc2012/robust_eval.sh",
}


# Set when the suite runs under `make test`: a nested make would print "Entering directory" lines.
MAKE_VARS = {"MAKELEVEL", "MAKEFLAGS", "MFLAGS"}


def _readme_commands() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    lines = (line.split("#", 1)[0].strip() for block in blocks for line in block.splitlines())
    return [line for line in lines if line]


def test_every_readme_command_has_a_test_here():
    commands = _readme_commands()
    assert commands and set(commands) <= TESTED, set(commands) - TESTED


@pytest.fixture
def clone(tmp_path) -> Path:
    """A fresh clone: the tracked files only (no dataset images, exp/ or .venv)."""
    if subprocess.run(["git", "-C", str(ROOT), "rev-parse"], capture_output=True, check=False).returncode:
        pytest.skip("not a git checkout")
    dest = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True, capture_output=True, timeout=60)
    return dest


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in MAKE_VARS}
    env |= {"PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=120)


def _steps(clone: Path, target: str) -> list[str]:
    """The shell commands of `make TARGET` after the venv's (which install packages), as `make -n` prints them."""

    def dry(name: str) -> list[str]:
        proc = _run(["make", "-n", name, f"PYTHON={sys.executable}"], clone)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.splitlines()

    venv, lines = dry("venv"), dry(target)
    assert venv and lines[: len(venv)] == venv  # a fresh clone has no .venv: the target makes it first
    return lines[len(venv) :]


def _clean(clone: Path) -> bool:
    """Nothing tracked changed and nothing untracked outside .gitignore appeared."""
    return _run(["git", "status", "--porcelain"], clone).stdout == ""


@pytest.mark.parametrize("target", ["demo", "demo-strong", "demo-pirat"])
def test_the_demos_first_step_writes_the_dataset_on_a_fresh_clone(clone, target):
    """The data step of the demos on a clone that holds only the tracked class names (demo-strong used to
    refuse it); demo-strong's keeps that set on a second run and refuses one made with other parameters;
    demo-pirat's second step writes its pre-training set, which git ignores."""
    step = _steps(clone, target)[0]
    assert "tool_data.synthetic" in step
    proc = _run(["sh", "-c", step], clone)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    root = clone / "dataset/synthetic"
    assert len((root / "list/train.txt").read_text().splitlines()) == 400
    assert len((root / "list/val.txt").read_text().splitlines()) == 50
    assert _clean(clone)  # the class-name files are as committed
    if target == "demo-pirat":
        second = _steps(clone, target)[1]
        assert "--root dataset/synthetic_pretrain" in second
        proc = _run(["sh", "-c", second], clone)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert len((clone / "dataset/synthetic_pretrain/list/train.txt").read_text().splitlines()) == 400
        assert _clean(clone)
    if target == "demo-strong":
        again = _run(["sh", "-c", step], clone)
        assert again.returncode == 0 and "dataset up to date" in again.stdout
        other = _run(
            [sys.executable, "-m", "tool_data.synthetic", "--root", str(root), "--seed", "1", "--overwrite"], clone
        )
        assert other.returncode == 0, other.stderr
        refused = _run(["sh", "-c", step], clone)
        assert refused.returncode == 2 and refused.stderr.startswith("error: dataset/synthetic holds a synthetic")


def test_make_benchmark_demo_on_a_fresh_clone_reports_each_model_missing_and_how_to_make_it(clone):
    """Without demo-strong's models the benchmark goes through the embedded zoo, one line per model, and still
    writes its leaderboard (the run over real models: tests/evaluation/test_benchmark.py)."""
    script = "\n".join(_steps(clone, "benchmark-demo"))
    assert "tool_data.synthetic" in script and "-m evaluation.benchmark --zoo zoo/demo.yaml" in script
    proc = _run(["sh", "-c", script], clone)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads((clone / "exp/synthetic/benchmark/leaderboard.json").read_text())
    assert len(rows) == 8 and all(r["status"].startswith("missing: ") for r in rows)
    assert "where to get it: run make demo-strong (it trains exp/synthetic/strong_none)" in rows[0]["status"]
    assert _clean(clone)


def test_make_test_lints_and_collects_the_suite_on_a_fresh_clone(clone):
    """`make test`'s ruff steps for real; its pytest step collects the suite (running it takes minutes)."""
    steps = _steps(clone, "test")
    assert [step.split(" -m ", 1)[1] for step in steps] == ["ruff check .", "ruff format --check .", "pytest -q tests"]
    for step in steps[:2]:
        proc = _run(["sh", "-c", step], clone)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = _run(["sh", "-c", steps[2] + " --collect-only"], clone)
    assert proc.returncode == 0 and re.search(r"^\d+ tests collected", proc.stdout, flags=re.M), proc.stdout[-2000:]


@pytest.mark.parametrize(
    "script,missing",
    [
        ("tool_train/voc2012/psp_train.sh", "'initmodel/resnet50_v2.pth' not found"),
        ("tool_test/voc2012/robust_eval.sh", "list file 'dataset/voc2012/list/val.txt' not found"),
    ],
)
def test_the_real_data_scripts_name_what_to_download_on_a_fresh_clone(clone, script, missing):
    """Without VOC 2012 and the ImageNet weights, the README's real-data commands end in one line that names the
    missing file (exit 2) and leave nothing behind."""
    proc = _run(["sh", script], clone)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    last = (proc.stdout + proc.stderr).strip().splitlines()[-1]
    assert last.startswith("error: ") and missing in last
    assert not (clone / "exp").exists() and _clean(clone)
