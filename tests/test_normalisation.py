"""The config keys ``mean`` and ``std`` (a model's input normalisation; PIR-AT's models take [0, 1] pixels) reach
everything that hands a model pixels: the training data and its padding, the test protocol and its padding, the
attacks of test.py and of training, and the stored predictions' fingerprint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from attack.registry import parse_specs
from defense import build_training_attack
from evaluation.inference import Protocol, predict
from evaluation.predictions import prediction_settings
from evaluation.suite import make_attack
from util.config import load_config
from util.data.loaders import build_loaders
from util.errors import UserError

CONFIG = "config/synthetic/synthetic_pspnet18.yaml"
RAW = ["mean", "[0, 0, 0]", "std", "[1, 1, 1]"]


class Recorder(nn.Module):
    """A 1x1-conv segmenter that keeps the range of every input it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        self.seen: list[tuple[float, float]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append((x.min().item(), x.max().item()))
        return self.conv(x)


def test_the_test_protocol_and_its_attacks_hand_the_model_pixels_in_0_1():
    cfg = load_config(CONFIG, RAW)
    protocol = Protocol(2, 48, 48, 48, mean=tuple(cfg.mean), std=tuple(cfg.std))  # pads the 40 x 30 image
    image = np.random.default_rng(0).uniform(0, 255, (30, 40, 3)).astype(np.float32)
    label = np.zeros((30, 40), dtype=np.int64)
    model = Recorder().eval()
    predict(model, image, label, protocol, torch.device("cpu"))
    low, high = min(s[0] for s in model.seen), max(s[1] for s in model.seen)
    assert low >= 0 and 0.9 < high <= 1  # ImageNet's normalisation would give -2.1 .. 2.6
    (spec,) = parse_specs([{"name": "pgd", "eps": 4, "steps": 2}])
    attack = make_attack(spec, model, torch.device("cpu"), protocol)
    assert attack.mean.flatten().tolist() == [0, 0, 0] and attack.std.flatten().tolist() == [1, 1, 1]
    model.seen.clear()
    predict(model, image, label, protocol, torch.device("cpu"), attack)
    assert min(s[0] for s in model.seen) >= 0 and max(s[1] for s in model.seen) <= 1


def test_training_data_and_the_training_attack_use_the_configured_normalisation(tiny_opts):
    cfg = load_config(CONFIG, [*tiny_opts, *RAW, "evaluate", "False"])
    images, _ = next(iter(build_loaders(cfg, torch.device("cpu"), 0)[0]))
    assert images.min() >= 0 and images.max() <= 1 and images.max() > 0.5
    default = load_config(CONFIG, [*tiny_opts, "evaluate", "False"])
    default, _ = next(iter(build_loaders(default, torch.device("cpu"), 0)[0]))
    assert default.min() < -1  # ImageNet's, as before
    attack = build_training_attack(cfg).build(Recorder(), 255)
    assert attack.mean.flatten().tolist() == [0, 0, 0] and attack.std.flatten().tolist() == [1, 1, 1]


def test_the_fingerprint_holds_a_normalisation_other_than_imagenets_and_older_ones_stay_valid():
    assert "mean" not in prediction_settings(load_config(CONFIG))  # fingerprints stored before the keys existed
    settings = prediction_settings(load_config(CONFIG, RAW))
    assert settings["mean"] == [0, 0, 0] and settings["std"] == [1, 1, 1]


@pytest.mark.parametrize("opts", [["std", "[0.2, 0, 0.2]"], ["mean", "[0.5, 0.5]"]])
def test_a_normalisation_that_is_not_three_values_with_std_above_0_is_one_line(opts):
    with pytest.raises(UserError, match="mean and std are three values each") as err:
        load_config(CONFIG, opts)
    assert "\n" not in str(err.value)
