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
        proc = subprocess.run(["sh", script, "base_lrr", "1"], cwd=ROOT, env=env, capture_output=True, text=True, check=False,
                              timeout=120)
    finally:
        shutil.rmtree(ROOT / "exp/synthetic" / exp_name, ignore_errors=True)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == ("error: command line: unknown config key 'base_lrr'; "
                                                    "did you mean 'base_lr'?")
