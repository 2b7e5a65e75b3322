"""Config loading: original files load unchanged, overrides, unknown keys and wrong types are errors."""

import pytest

from tests.conftest import ROOT
from util.config import load_config, parse_opts, save_config
from util.errors import UserError

# The original DDC-AT voc2012_pspnet50.yaml, verbatim apart from the data paths.
ORIGINAL = """\
DATA:
  data_root: /data/voc2012
  train_list: /data/voc2012/list/train_aug.txt
  val_list: /data/voc2012/list/val.txt
  classes: 21

TRAIN:
  layers: 50
  sync_bn: True  # adopt syncbn or not
  train_h: 473
  train_w: 473
  scale_min: 0.5  # minimum random scale
  scale_max: 2.0  # maximum random scale
  rotate_min: -10  # minimum random rotate
  rotate_max: 10  # maximum random rotate
  zoom_factor: 8  # zoom factor for final prediction during training, be in [1, 2, 4, 8]
  ignore_label: 255
  aux_weight: 0.4
  train_gpu: [0, 1, 2, 3]
  workers: 16  # data loader workers
  batch_size: 16  # batch size for training
  batch_size_val: 1  # batch size for validation during training, memory and speed tradeoff
  base_lr: 0.01
  epochs: 50
  start_epoch: 0
  power: 0.9
  momentum: 0.9
  weight_decay: 0.0001
  manual_seed:
  print_freq: 10
  save_freq: 10
  save_path: exp/voc2012/pspnet50/model
  weight:  # path to initial weight (default: none)
  resume:  # path to latest checkpoint (default: none)
  evaluate: True  # evaluate on validation set, extra gpu memory needed and small batch_size_val is recommend
Distributed:
  dist_url: tcp://127.0.0.1:6789
  dist_backend: 'nccl'
  multiprocessing_distributed: True
  world_size: 1
  rank: 0
  use_apex: True
  opt_level: 'O0'
  keep_batchnorm_fp32:
  loss_scale:

TEST:
  test_list: /data/voc2012/list/val.txt
  split: val  # split in [train, val and test]
  base_size: 512  # based size for scaling
  test_h: 473
  test_w: 473
  scales: [1.0]  # evaluation scales, ms as [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
  has_prediction: False  # has prediction already or not
  index_start: 0  # evaluation start index in list
  index_step: 0  # evaluation step index in list, 0 means to end
  test_gpu: [0]
  model_path: pretrain/voc2012/pspnet/no_defense/train_epoch_50.pth  # evaluation model path
  save_folder: exp/voc2012/pspnet50/result/epoch_50_test/val/ss  # results save folder
  colors_path: dataset/voc2012/voc2012_colors.txt  # path of dataset colors
  names_path: dataset/voc2012/voc2012_names.txt  # path of dataset category names
"""


@pytest.fixture
def original(tmp_path):
    path = tmp_path / "voc2012_pspnet50.yaml"
    path.write_text(ORIGINAL)
    return path


def test_original_config_loads_unchanged(original):
    cfg = load_config(str(original))
    assert cfg.classes == 21 and cfg.layers == 50 and cfg.train_gpu == [0, 1, 2, 3]
    assert cfg.manual_seed is None and cfg.weight is None and cfg.keep_batchnorm_fp32 is None
    assert cfg.rotate_min == -10.0 and isinstance(cfg.rotate_min, float)
    assert cfg.arch == "psp" and cfg.defense == "none"


@pytest.mark.parametrize(
    "path", sorted(p for p in (ROOT / "config").glob("*/*.yaml") if p.parent.name != "protocols"), ids=lambda p: p.name
)
def test_project_configs_load(path):
    load_config(str(path))


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "config/protocols").glob("*.yaml")))
def test_every_protocol_sets_known_keys_and_attacks(name):
    """config/protocols/ files are not configs: their keys and attack list load on top of one."""
    from evaluation.protocols import load_protocol

    protocol = load_protocol(name)
    cfg = load_config(str(ROOT / "config/synthetic/synthetic_pspnet18.yaml"), protocol.opts())
    assert cfg.attacks and all(cfg[key] == value for key, value in protocol.overrides.items())


def test_overrides_are_yaml_literals(original):
    cfg = load_config(
        str(original),
        ["batch_size", "4", "scales", "[0.5, 1]", "manual_seed", "7", "evaluate", "False", "weight", "a.pth"],
    )
    assert cfg.batch_size == 4 and cfg.scales == [0.5, 1.0] and cfg.manual_seed == 7
    assert cfg.evaluate is False and cfg.weight == "a.pth"
    assert parse_opts(["resume", ""]) == {"resume": None}


def test_resolved_config_round_trips(original, tmp_path):
    cfg = load_config(str(original), ["batch_size", "3"])
    save_config(cfg, tmp_path / "out" / "config.yaml")
    assert load_config(str(tmp_path / "out" / "config.yaml")) == cfg


@pytest.mark.parametrize(
    "opts, message",
    [
        (["batch_sze", "4"], "unknown config key 'batch_sze'; did you mean 'batch_size'?"),
        (["batch_size", "abc"], "config key 'batch_size' expects int, got 'abc'"),
        (["batch_size", "2.5"], "config key 'batch_size' expects int"),
        (["scales", "3"], "config key 'scales' expects"),
        (["zoom_factor", "3"], "zoom_factor must be one of [1, 2, 4, 8]"),
        (["classes", "1"], "classes must be >= 2"),
        (["train_h", "8"], "train_h must be >= 9"),
        (["test_w", "5"], "test_w must be >= 9"),
        (["adv_eps", "-0.03"], "need adv_eps > 0"),
        (["save_every_iters", "-1"], "save_every_iters must be >= 0"),
        (["scale_min", "3.0"], "scale_min <= scale_max"),
        (["batch_size"], "'key value' pairs"),
    ],
)
def test_bad_overrides(original, opts, message):
    with pytest.raises(UserError, match=None) as err:
        load_config(str(original), opts)
    assert message in str(err.value)


def test_model_names_are_checked_by_the_registries_of_model(original):
    """util/ sits below model/ and knows no model names; model.check_names reads the registries."""
    from model import check_names

    for key, value in (("arch", "unet"), ("backbone", "vgg"), ("model", "unet_resnet50")):
        cfg = load_config(str(original), [key, value])
        with pytest.raises(UserError, match=rf"^config 'c.yaml': {key} must be one of \[.*\], got '{value}'"):
            check_names(cfg, "config 'c.yaml'")
    check_names(load_config(str(original), ["model", "deeplabv3_mobilenet"]))


def test_unknown_key_in_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("TRAIN:\n  base_lrr: 0.1\n")
    with pytest.raises(UserError) as err:
        load_config(str(path))
    assert f"config file '{path}': unknown config key 'base_lrr'; did you mean 'base_lr'?" in str(err.value)


def test_wrong_type_in_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("TRAIN:\n  epochs: many\n")
    with pytest.raises(UserError, match="config key 'epochs' expects int, got 'many'"):
        load_config(str(path))


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(UserError, match="config file '.*nope.yaml' not found"):
        load_config(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("TRAIN:\n  epochs: [1, 2\n")
    with pytest.raises(UserError, match="is not valid YAML at line"):
        load_config(str(bad))
    section = tmp_path / "section.yaml"
    section.write_text("TRAINING:\n  epochs: 2\n")
    with pytest.raises(UserError, match="unknown section 'TRAINING'"):
        load_config(str(section))


@pytest.mark.parametrize(
    "text,needle",
    [
        ("", "is empty; give its sections"),
        ("- DATA\n- TRAIN\n", "is not a mapping of sections/keys"),
        ("TRAIN:\n  base_lr: 0.01\n  epochs: 2\n  base_lr: 0.02\n", "line 4: key 'base_lr' is given twice; keep one"),
        ("TRAIN:\n  epochs: 2\nTRAIN:\n  epochs: 3\n", "line 3: key 'TRAIN' is given twice"),
    ],
)
def test_empty_list_and_duplicate_key_configs_are_refused(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=needle) as err:
        load_config(str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("key,value", [("scales", "{a: 1}"), ("train_gpu", "{x: 2}"), ("attacks", "{name: pgd}")])
def test_a_mapping_for_a_list_key_is_one_line(key, value):
    """Found by tests/util/test_fuzz.py: OmegaConf raised a bare TypeError for a mapping given to a list key."""
    with pytest.raises(UserError, match=f"config key '{key}' expects"):
        load_config("config/synthetic/synthetic_pspnet18.yaml", [key, value])
