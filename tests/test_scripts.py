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
    loop = next(line for line in dry.splitlines() if line.lstrip().startswith(("for defense in", "for run in")))
    runs = [run if ":" in run else f"psp:{run}" for run in loop.split(" in ", 1)[1].split(";")[0].split()]
    assert {"psp:none", "psp:sat", "psp:ddcat", "psp:sam"} <= set(runs)
    if target == "demo-strong":
        assert {"upernet:none", "upernet:pgd_at"} <= set(runs)  # PIR-AT's family, trained and attacked
    names = {"psp": ("psp", "pspnet18"), "upernet": ("upernet_demo", "upernet_demo")}
    for family, defense in (run.split(":") for run in runs):
        suffix = "" if defense == "none" else f"_{defense}"
        script, config = names[family]
        assert (ROOT / f"tool_train/synthetic/{script}_train{suffix}.sh").is_file()
        assert family != "psp" or (ROOT / f"tool_test/synthetic/psp_test{suffix}.sh").is_file()
        cfg = load_config(str(ROOT / f"config/synthetic/synthetic_{config}{suffix}.yaml"))
        assert (cfg.optimizer == "sam") if defense == "sam" else (cfg.defense == defense)
        assert (cfg.model == "upernet_convnext_demo") == (family == "upernet")


def _named_attack_lists() -> set[str]:
    """The config/attacks_*.yaml files that the Makefile, the tool_test scripts and the protocols name."""
    texts = [(ROOT / "Makefile").read_text(), *(p.read_text() for p in (ROOT / "tool_test").rglob("*.sh"))]
    texts += [p.read_text() for p in (ROOT / "config/protocols").glob("*.yaml")]
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


@pytest.mark.parametrize("release,config", sorted(__import__("model.checkpoint").checkpoint.PIRAT_RELEASES.items()))
def test_every_pir_at_release_has_a_config_that_builds_it_and_scripts(release, config):
    """Each released file's config builds its network for raw [0, 1] input, names the file, and its dataset has
    pirat_eval.sh; its training script trains that config."""
    import torch

    from model import model_from_config
    from util.config import load_config

    cfg = load_config(str(ROOT / config))
    with torch.device("meta"):
        model_from_config(cfg)
    assert cfg.model_path.endswith("/" + release) and list(cfg.mean) == [0, 0, 0] and list(cfg.std) == [1, 1, 1]
    dataset = config.split("/")[1]
    assert "PROTOCOL=pirat " in (ROOT / f"tool_test/{dataset}/pirat_eval.sh").read_text()
    name = config.split("/")[-1].removeprefix(f"{dataset}_").removesuffix("_pirat.yaml")
    assert config in (ROOT / f"tool_train/{dataset}/{name}_train_pirat.sh").read_text()


@pytest.mark.parametrize("config", sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("config/*/*_clean.yaml")))
def test_every_pir_at_clean_counterpart_trains_its_network_without_attack(config):
    import torch

    from model import model_from_config
    from util.config import load_config

    cfg = load_config(str(ROOT / config))
    pirat = load_config(str(ROOT / config.replace("_clean.yaml", "_pirat.yaml")))
    with torch.device("meta"):
        model_from_config(cfg)
    assert cfg.defense == "none" and pirat.defense == "pgd_at" and cfg.model == pirat.model
    assert (cfg.optimizer, cfg.base_lr, cfg.epochs) == (pirat.optimizer, pirat.base_lr, pirat.epochs)
    dataset = config.split("/")[1]
    name = config.split("/")[-1].removeprefix(f"{dataset}_").removesuffix("_clean.yaml")
    assert config in (ROOT / f"tool_train/{dataset}/{name}_train_clean.sh").read_text()


def test_demo_pirat_trains_and_evaluates_with_files_that_exist():
    """make demo-pirat: its pre-training and fine-tuning scripts, configs and attack list exist, the three starts
    are fine-tuned with PGD-AT, and the robust and clean pre-trainings hand their checkpoints on as init_path."""
    dry = subprocess.run(
        ["make", "-n", "demo-pirat", "PYTHON=python"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert "tool_train/synthetic/upernet_demo_train$suffix.sh" in dry  # suffix: _pgd_at for the robust one
    assert "tool_train/synthetic/upernet_demo_train_pgd_at.sh" in dry
    for path in ("tool_train/synthetic/upernet_demo_train.sh", "tool_train/synthetic/upernet_demo_train_pgd_at.sh"):
        assert (ROOT / path).is_file()
    assert "for start in robust clean scratch" in dry and "init_path exp/synthetic/pirat_pre_$start/model/" in dry
    assert (ROOT / "config/attacks_demo_pirat.yaml").is_file() and "ATTACKS=config/attacks_demo_pirat.yaml" in dry
