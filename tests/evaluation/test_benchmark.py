"""python -m evaluation.benchmark end to end on a zoo the test writes: a model measured under its paper's protocol
and ours with the claims beside the measured numbers; a missing, a truncated and a foreign file reported in one
line each while the benchmark goes on; a stopped run resumed from its stored predictions; the release as a zip."""

from __future__ import annotations

import dataclasses
import json
import zipfile

import pytest
import torch
import yaml

from evaluation import benchmark
from evaluation.zoo import ModelSource, load_zoo
from model import build_model
from tests.conftest import ROOT
from util.errors import UserError

CONFIG = "config/synthetic/synthetic_pspnet18.yaml"


def _entry(name, file, **extra):
    return {"name": name, "paper": "test", "dataset": "synthetic", "config": CONFIG, "file": file, "url": "here"} | {
        "protocol": "ddcat",
        **extra,
    }


@pytest.fixture
def zoo(tmp_path):
    """Four entries: one that runs (with claims), and a missing, a truncated and a foreign file."""
    models = tmp_path / "models"
    (models / "good").mkdir(parents=True)
    torch.manual_seed(0)
    torch.save({"state_dict": build_model("psp", 18, 5).state_dict()}, models / "good/train_epoch_2.pth")
    (models / "truncated.pth").write_bytes((models / "good/train_epoch_2.pth").read_bytes()[:5000])
    torch.save({"state_dict": build_model("psp", 18, 3).state_dict()}, models / "foreign.pth")
    claims = {"source": "made up", "clean": 50.0, "attacked": [{"attack": "bim", "eps": 0.03, "unit": 1, "mIoU": 20}]}
    entries = [
        _entry("good", "good/train_epoch_2.pth", claims=claims),
        _entry("missing", "nowhere.pth"),
        _entry("truncated", "truncated.pth"),
        _entry("foreign", "foreign.pth", note="a 3-class model"),
    ]
    (tmp_path / "zoo.yaml").write_text(yaml.safe_dump({"models": entries}))
    attacks = tmp_path / "attacks.yaml"
    attacks.write_text("- {name: sea, eps: [4, 8], steps: 4}\n")
    return tmp_path


def _run(zoo, tiny_opts, models, out, *extra):
    data = tiny_opts[: tiny_opts.index("batch_size")]  # the data and sizes, not the run's own folders
    argv = ["--zoo", str(zoo / "zoo.yaml"), "--models-dir", str(models), "--out", str(out), "--images", "2"]
    benchmark.main([*argv, "--attacks", str(zoo / "attacks.yaml"), *extra, *data, "workers", "0", "panels", "0"])
    return json.loads((out / "leaderboard.json").read_text())


def test_the_zoo_is_benchmarked_with_bad_files_reported_and_a_stop_resumed(zoo, tiny_opts, capsys):
    out = zoo / "bench"
    rows = {r["model"]: r for r in _run(zoo, tiny_opts, zoo / "models", out)}
    good = rows["good"]
    assert good["status"] == "measured" and good["images"] == 2
    ours = benchmark.read_rows(out / "good/ours")
    assert good["clean"] == round(100 * ours[0].mIoU, 2) and ours[0].kind == "clean"
    worst = {r.eps: r for r in ours if r.name == "sea"}  # SEA's per-image worst over its members
    assert good["worst_4"] == round(100 * worst[4 / 255].mIoU, 2) <= good["clean"]
    bim = next(r for r in benchmark.read_rows(out / "good/ddcat") if r.name == "bim")
    [clean_claim, bim_claim] = good["comparisons"]
    assert bim_claim["measured"] == round(100 * bim.mIoU, 2) and bim.steps == 2 and bim.eps == 0.03
    assert bim_claim["difference"] == pytest.approx(bim_claim["measured"] - 20, abs=0.011)
    assert clean_claim["claimed"] == 50.0 and clean_claim["protocol"] == "ddcat"
    assert (
        rows["missing"]["status"] == "missing: no 'nowhere.pth' in '" + str(zoo / "models") + "'; where to get it: here"
    )
    assert "truncated.pth' is not a loadable torch checkpoint" in rows["truncated"]["status"]
    assert "does not fit" in rows["foreign"]["status"] and rows["foreign"]["clean"] is None
    assert all("\n" not in r["status"] for r in rows.values())
    text = (out / "leaderboard.md").read_text()
    assert "| good | test | synthetic |" in text and "bim linf 7.65/255 (ddcat): 20.0 ->" in text
    assert (out / "leaderboard.png").stat().st_size > 0 and "good" in (out / "leaderboard.csv").read_text()

    # A stop in the middle of our SEA: its results and half its member's predictions gone; the rest is kept.
    member = next(p for p in (out / "good/ours").glob("sea_eps4/*") if p.is_dir())
    (out / "good/ours/results.json").unlink()
    next((member / "gray").iterdir()).unlink()
    capsys.readouterr()
    again = {r["model"]: r for r in _run(zoo, tiny_opts, zoo / "models", out, "--only", "good")}
    assert again["good"] == good
    log = capsys.readouterr().out
    assert "1 of 2 predictions already stored" in log and "2 of 2 predictions already stored" in log


def test_the_release_zip_is_read_as_the_models_dir(zoo, tmp_path):
    """A member below the zip's top folder is found by its path, extracted once, byte for byte; a file that is no
    zip is one line per model."""
    good = zoo / "models/good/train_epoch_2.pth"
    with zipfile.ZipFile(tmp_path / "release.zip", "w") as archive:
        archive.write(good, "release/good/train_epoch_2.pth")
    entries = {e.name: e for e in load_zoo(str(zoo / "zoo.yaml"))}
    source = ModelSource(str(tmp_path / "release.zip"), tmp_path / "cache")
    path, problem = source.find(entries["good"])
    assert problem == "" and path == tmp_path / "cache/good/train_epoch_2.pth"
    assert path.read_bytes() == good.read_bytes()
    assert source.find(entries["missing"])[1].startswith("missing: no 'nowhere.pth' in")
    sized = dataclasses.replace(entries["good"], size=good.stat().st_size + 1)
    assert "(truncated or another file)" in source.find(sized)[1]
    (tmp_path / "broken.zip").write_bytes(b"PK not a zip")
    problem = ModelSource(str(tmp_path / "broken.zip"), tmp_path / "cache").find(entries["good"])[1]
    assert "is a file Python's zipfile cannot read" in problem and "\n" not in problem


def test_a_bad_zoo_or_models_dir_is_one_line(tmp_path, zoo):
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"models": [_entry("a", "x.pth"), _entry("a", "y.pth")]}))
    with pytest.raises(UserError, match="model 'a' is listed twice"):
        load_zoo(str(tmp_path / "bad.yaml"))
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"models": [_entry("a", "x.pth", protocol="bimm")]}))
    with pytest.raises(UserError, match="unknown protocol 'bimm'; known: none, ddcat, ours, pirat, samat"):
        load_zoo(str(tmp_path / "bad.yaml"))
    with pytest.raises(UserError, match="--only: zoo .* has no model 'goood'"):
        benchmark.main(["--zoo", str(zoo / "zoo.yaml"), "--models-dir", str(zoo / "models"), "--only", "goood"])
    with pytest.raises(UserError, match="is neither a folder nor a zip file"):
        benchmark.main(["--zoo", str(zoo / "zoo.yaml"), "--models-dir", str(tmp_path / "nothing")])
    assert not (zoo / "exp").exists()


@pytest.mark.parametrize("zoo_file", ["zoo/zoo.yaml", "zoo/demo.yaml"])
def test_every_zoo_entry_builds_its_network_from_its_config(zoo_file):
    """Each entry's config with its overrides builds (on the meta device) and its protocol exists."""
    from model import model_from_config
    from util.config import load_config

    entries = load_zoo(str(ROOT / zoo_file))
    assert entries
    for entry in entries:
        cfg = load_config(str(ROOT / entry.config), [*entry.opts(), "pretrained", "False"])
        with torch.device("meta"):
            model_from_config(cfg)
        assert all(p.attacks for p in benchmark.protocols_for(entry))
