"""The tool_train / tool_test shell scripts pass the entry point's exit code through tee."""

import os
import re
import shutil
import subprocess
import sys
import uuid

import pytest

from tests.conftest import ROOT


@pytest.mark.parametrize(
    "script",
    ["tool_train/synthetic/psp_train.sh", "tool_test/synthetic/aspp_test.sh", "tool_test/synthetic/robust_eval.sh"],
)
def test_script_fails_with_the_entry_points_message_and_code(script):
    """A refused run (exit 2) leaves the experiment folder as it was: the record of the previous run's config
    is not overwritten, and neither its log nor the folders it made stay."""
    exp_name = f"pytest-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PYTHON": sys.executable, "EXP_NAME": exp_name}
    exp_dir = ROOT / "exp/synthetic" / exp_name
    config_name = "synthetic_aspp18.yaml" if "aspp" in script else "synthetic_pspnet18.yaml"
    try:
        exp_dir.mkdir(parents=True)
        (exp_dir / config_name).write_text("the previous run's config\n")
        proc = subprocess.run(
            ["sh", script, "base_lrr", "1"], cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=120
        )
        kept = (exp_dir / config_name).read_text()
        left = sorted(p.relative_to(exp_dir).as_posix() for p in exp_dir.rglob("*"))
    finally:
        shutil.rmtree(exp_dir, ignore_errors=True)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == (
        "error: command line: unknown config key 'base_lrr'; did you mean 'base_lr'?"
    )
    assert kept == "the previous run's config\n" and left == [config_name]  # no log, no new folder, no copies


@pytest.mark.parametrize(
    "script",
    ["tool_train/synthetic/psp_train.sh", "tool_test/synthetic/psp_test.sh", "tool_test/synthetic/robust_eval.sh"],
)
def test_an_experiment_folder_below_a_file_is_one_line(script, tmp_path):
    blocker = f"pytest-{uuid.uuid4().hex[:8]}"
    (ROOT / "exp/synthetic").mkdir(parents=True, exist_ok=True)
    (ROOT / "exp/synthetic" / blocker).write_text("a file\n")
    env = {**os.environ, "PYTHON": sys.executable, "EXP_NAME": f"{blocker}/run"}
    try:
        proc = subprocess.run(
            ["sh", script], cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=120
        )
    finally:
        (ROOT / "exp/synthetic" / blocker).unlink()
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"error: cannot create 'exp/synthetic/{blocker}/run/") and "EXP_NAME" in proc.stderr


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


@pytest.mark.parametrize("target", ["demo", "demo-strong"])
def test_every_demo_defense_has_its_scripts_and_config(target):
    """The defenses the demos loop over each have a synthetic config and train/test scripts with that defense
    (or SAM's optimizer), so `make demo` / `make demo-strong` cannot stop half-way on a missing file."""
    from util.config import load_config

    dry = subprocess.run(
        ["make", "-n", target, "PYTHON=python"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    loop = next(line for line in dry.splitlines() if line.lstrip().startswith("for defense in"))
    defenses = loop.split(" in ", 1)[1].split(";")[0].split()
    assert {"none", "sat", "ddcat", "sam"} <= set(defenses)
    for defense in defenses:
        suffix = "" if defense == "none" else f"_{defense}"
        for kind in ("train", "test"):
            assert (ROOT / f"tool_{kind}/synthetic/psp_{kind}{suffix}.sh").is_file()
        cfg = load_config(str(ROOT / f"config/synthetic/synthetic_pspnet18{suffix}.yaml"))
        assert (cfg.optimizer == "sam") if defense == "sam" else (cfg.defense == defense)


def _named_attack_lists() -> set[str]:
    """The config/attacks_*.yaml files that the Makefile and the tool_test scripts name."""
    texts = [(ROOT / "Makefile").read_text(), *(p.read_text() for p in (ROOT / "tool_test").rglob("*.sh"))]
    return {name for text in texts for name in re.findall(r"config/attacks_\w+\.yaml", text)}


def test_every_attack_list_is_named_by_a_script_and_parses_as_test_py_reads_it():
    """robust_eval.sh passes the file's text as `attacks`: each list must load through the config and the
    attack registry (a typo in one fails here, not minutes into `make demo`)."""
    from attack.registry import parse_specs
    from util.config import load_config

    on_disk = {p.relative_to(ROOT).as_posix() for p in (ROOT / "config").glob("attacks_*.yaml")}
    assert _named_attack_lists() == on_disk and "config/attacks_suite.yaml" in on_disk
    config = str(ROOT / "config/synthetic/synthetic_pspnet18.yaml")
    for name in sorted(on_disk):
        text = (ROOT / name).read_text()
        entries = load_config(config, ["attacks", text]).attacks
        assert len(entries) == text.count("\n- ") and parse_specs(entries), name  # every entry, each known
    demo = load_config(config, ["attacks", (ROOT / "config/attacks_demo.yaml").read_text()]).attacks
    assert [dict(entry) for entry in demo] == [
        {"name": "bim", "eps": 0.03, "alpha": 0.01, "steps": 2, "unit": 1},
        {"name": "segpgd", "eps": 0.03, "steps": 20, "unit": 1},
    ]  # make demo's table is measured with exactly these (docs/demo.md)


@pytest.mark.parametrize("listed", [True, False])
def test_robust_eval_takes_its_attacks_from_the_file_attacks_names(listed, tmp_path):
    """The file's list reaches test.py (its unknown attack is refused by name); a missing file is one line,
    before any folder is made."""
    exp_name = f"pytest-{uuid.uuid4().hex[:8]}"
    attacks = tmp_path / "attacks.yaml"
    if listed:
        attacks.write_text("# a typo\n- {name: bimm, eps: 4}\n")
    env = {**os.environ, "PYTHON": sys.executable, "EXP_NAME": exp_name, "ATTACKS": str(attacks)}
    try:
        proc = subprocess.run(
            ["sh", "tool_test/synthetic/robust_eval.sh"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        left = (ROOT / "exp/synthetic" / exp_name).exists()
    finally:
        shutil.rmtree(ROOT / "exp/synthetic" / exp_name, ignore_errors=True)
    assert proc.returncode == 2 and not left, proc.stdout + proc.stderr
    if listed:
        line = proc.stdout.strip().splitlines()[-1]
        prefix = "error: config key 'attacks', entry 1: unknown attack 'bimm'; known: "
        assert line.startswith(prefix) and "bim" in line[len(prefix) :].split(", "), line
    else:
        assert proc.stderr == (
            f"error: attack list '{attacks}' not found; set ATTACKS to a YAML list of attacks (config/attacks_*.yaml)\n"
        )
