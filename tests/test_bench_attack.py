"""tool_bench/attack.py end to end on the data it generates, so that the timing of APGD and SEA cannot rot."""

import json
import re
import subprocess
import sys

from tests.conftest import ROOT


def test_attack_bench_times_apgd_and_sea_per_image_as_test_py_runs_them():
    """One JSON line per attack; SEA's budget is its three members' APGD runs; its balanced member takes the
    generated training labels' class table, as test.py's does."""
    done = subprocess.run(
        [sys.executable, "tool_bench/attack.py", "--images", "1", "--steps", "3", "--threads", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {row["attack"]: row for row in map(json.loads, re.findall(r"^\{.*\}$", done.stdout, re.M))}
    assert set(rows) == {"apgd", "sea"}
    assert rows["sea"]["budget_per_image"] == 3 * rows["apgd"]["budget_per_image"] > 0
    assert all(row["s_per_image"] > 0 and row["crops_through_model_per_image"] > 0 for row in rows.values())
    assert "class weights from the" in done.stdout + done.stderr
