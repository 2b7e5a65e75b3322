"""What each attack class declares (defaults, members, minimum norm, class tables, value checks) and what the
registry reads from it."""

import pytest
import torch
from torch import nn

from attack import APGD, SEA, Attack
from attack.base import linf_ball
from attack.registry import ATTACKS, build_attack, check_spec, parse_specs
from util.errors import UserError


def _state(value):
    """An attack's settings as comparable values (tensors as lists, member attacks as their settings)."""
    if isinstance(value, Attack):
        return {k: _state(v) for k, v in vars(value).items() if k not in ("model", "forward")}
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, list):
        return [_state(v) for v in value]
    return value


@pytest.mark.parametrize("name", ATTACKS.names())
def test_constructors_take_their_defaults_from_the_table(name):
    cls = ATTACKS.get(name)
    assert cls.fields == set(cls.defaults) and "eps" in cls.fields
    model = nn.Conv2d(3, 2, 1)
    assert _state(cls(model)) == _state(cls(model, **cls.defaults))


def test_every_attack_registers_itself_once():
    assert sorted(ATTACKS) == sorted(
        ["apgd", "bim", "cospgd", "cw", "dag", "deepfool", "fgsm", "padam", "pgd", "sea", "segpgd"]
    )
    assert all(cls.name == name for name, cls in ATTACKS.items())
    assert {name for name, cls in ATTACKS.items() if cls.min_norm} == {"cw", "dag", "deepfool"}


def test_the_spec_reads_steps_and_norm_from_the_defaults():
    entries = [
        {"name": "pgd", "eps": 8},
        {"name": "segpgd", "eps": 8},
        {"name": "apgd", "eps": 8, "steps": 50},
        {"name": "sea", "eps": 8},
        {"name": "deepfool"},
        {"name": "deepfool", "norm": "linf"},
        {"name": "padam", "eps": 8},
        {"name": "cw"},
    ]
    specs = parse_specs(entries)
    assert [s.steps for s in specs] == [10, 20, 50, None, None, None, 200, None]
    assert [s.norm for s in specs] == ["linf", "linf", "linf", "linf", "l2", "linf", "linf", "l2"]
    assert [s.eps for s in specs[4:]] == [float("inf"), float("inf"), 8 / 255, float("inf")]


def test_sea_members_are_three_apgds_and_plain_attacks_have_none():
    params = {"steps": 30, "class_weights": [0.5, 0.5]}
    assert SEA.members(params) == [
        ("balanced_masked_ce", "apgd", {"steps": 30, "class_weights": [0.5, 0.5], "loss": "balanced_masked_ce"}),
        ("masked_ce", "apgd", {"steps": 30, "loss": "masked_ce"}),
        ("js", "apgd", {"steps": 30, "loss": "js"}),
    ]
    assert params == {"steps": 30, "class_weights": [0.5, 0.5]}  # not changed
    assert [ATTACKS.get(name).members(p) for name in ATTACKS if name != "sea" for p in [{}]] == [[]] * 10


def test_sea_builds_the_members_it_declares():
    sea = SEA(nn.Conv2d(3, 2, 1), eps=4 / 255, steps=6, class_weights=[0.2, 0.8], ignore_index=7)
    for member, (_, name, params) in zip(sea.member_attacks, SEA.members({"steps": 6, "class_weights": [0.2, 0.8]})):
        expected = ATTACKS.get(name)(nn.Conv2d(3, 2, 1), eps=4 / 255, ignore_index=7, **params)
        assert type(member) is APGD and _state(member) == _state(expected)


@pytest.mark.parametrize(
    "name,params,expected",
    [
        ("apgd", {}, False),
        ("apgd", {"loss": "masked_ce"}, False),
        ("apgd", {"loss": "balanced_masked_ce"}, True),
        ("apgd", {"loss": "js", "class_weights": "image"}, True),
        ("sea", {}, True),
        ("pgd", {}, False),
        ("cw", {}, False),
    ],
)
def test_which_specs_take_a_class_table(name, params, expected):
    assert ATTACKS.get(name).takes_class_weights(params) is expected


BAD_VALUES = [
    {"name": "pgd", "eps": 8, "norm": "l3"},
    {"name": "pgd", "eps": 8, "last_iterate": True, "restarts": 2},
    {"name": "segpgd", "eps": 8, "norm": "l1"},
    {"name": "cospgd", "eps": 8, "targeted": "yes"},
    {"name": "padam", "eps": 8, "loss": "dice"},
    {"name": "apgd", "eps": 8, "loss": "dice"},
    {"name": "apgd", "eps": 8, "track": "dice"},
    {"name": "apgd", "eps": 8, "steps": 2},
    {"name": "apgd", "eps": 8, "class_weights": [0, 0]},
    {"name": "apgd", "eps": 8, "class_weights": "train"},
    {"name": "sea", "eps": 8, "steps": 2},
    {"name": "sea", "eps": 8, "class_weights": [-1, 1]},
    {"name": "cw", "c": -1},
    {"name": "cw", "kappa": -1, "lr": 0},
    {"name": "cw", "c": "big"},  # a TypeError of the comparison, reported as the constructor's
    {"name": "deepfool", "norm": "l1"},
    {"name": "deepfool", "overshoot": -1},
]


@pytest.mark.parametrize("entry", BAD_VALUES, ids=lambda e: "-".join(map(str, e.values())))
def test_check_spec_says_what_building_the_attack_says(entry):
    (spec,) = parse_specs([entry])
    with pytest.raises(UserError) as built:
        build_attack(spec, nn.Identity())
    with pytest.raises(UserError) as checked:
        check_spec(spec)
    assert str(checked.value) == str(built.value)
    assert str(checked.value).startswith(f"attack '{spec.label}': ") and "\n" not in str(checked.value)


@pytest.mark.parametrize("name", ATTACKS.names())
def test_check_spec_passes_the_defaults(name):
    entry = {"name": name} if ATTACKS.get(name).min_norm else {"name": name, "eps": 8}
    for spec in parse_specs([entry]):
        check_spec(spec)


def test_eps_below_zero_is_refused_by_every_constructor():
    for name in ATTACKS:
        cls = ATTACKS.get(name)
        with pytest.raises(ValueError, match="eps must be >= 0, got -0.1"):
            cls.validate(eps=-0.1)
        with pytest.raises(ValueError, match="eps must be >= 0, got -0.1"):
            cls(nn.Identity(), eps=-0.1)


def test_linf_ball_is_the_clip_of_the_original():
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 3, 5, 5, generator=g)
    x = x0 + 0.2 * torch.randn(2, 3, 5, 5, generator=g)
    expected = torch.min(torch.max(x, x0 - 0.05), x0 + 0.05).clamp(0.0, 1.0)
    assert torch.equal(linf_ball(x, x0, 0.05), expected)
    assert torch.equal(APGD(nn.Identity(), eps=0.05).project(x, x0), expected)
