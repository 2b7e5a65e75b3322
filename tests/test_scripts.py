"""The tool_train / tool_test shell scripts pass the entry point's exit code through tee."""
import os
import shutil
import subprocess
import sys
import uuid

import pytest

from tests.conftest import ROOT


@pytest.mark.parametrize("script", ["tool_train/synthetic/psp_train.sh", "tool_test/synthetic/aspp_test.sh"])
def test_script_fails_with_the_entry_points_message_and_code(script):
    exp_name = f"pytest-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PYTHON": sys.executable, "EXP_NAME": exp_name}
    try:
        proc = subprocess.run(["sh", script, "base_lrr", "1"], cwd=ROOT, env=env, capture_output=True, text=True,
                              check=False, timeout=120)
    finally:
        shutil.rmtree(ROOT / "exp/synthetic" / exp_name, ignore_errors=True)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == ("error: command line: unknown config key 'base_lrr'; "
                                                    "did you mean 'base_lr'?")


@pytest.mark.parametrize("dataset", ["synthetic", "voc2012", "cityscapes"])
@pytest.mark.parametrize("defense", ["", "_sat", "_ddcat"])
@pytest.mark.parametrize("arch", ["psp", "aspp"])
def test_every_defense_has_scripts_and_a_config(dataset, defense, arch):
    """tool_train/<dataset>/{psp,aspp}_train{,_sat,_ddcat}.sh and the test twin name a config whose
    defense matches the script's name."""
    from util.config import load_config
    configs = set()
    for kind in ("train", "test"):
        text = (ROOT / f"tool_{kind}/{dataset}/{arch}_{kind}{defense}.sh").read_text()
        configs |= {word for word in text.split() if word.endswith(".yaml")}
    assert len(configs) == 1
    cfg = load_config(str(ROOT / configs.pop()))
    assert cfg.defense == (defense.lstrip("_") or "none") and cfg.arch == arch
