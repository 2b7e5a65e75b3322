"""build_defense(cfg): the registry resolves the config's name, each strategy's own keys reach its constructor."""

import pytest

from defense import DDCAT, DEFENSES, PGDAT, SAT, TRADES, NoDefense, build_defense, build_step_settings
from util.config import load_config
from util.errors import UserError


def _cfg(*opts: str):
    return load_config(None, list(opts))


def test_every_defense_is_registered_where_it_is_defined():
    assert DEFENSES.names() == ["none", "ddcat", "pgd_at", "sat", "trades"]
    assert [DEFENSES.get(n) for n in ("none", "sat", "ddcat", "pgd_at", "trades")] == [
        NoDefense,
        SAT,
        DDCAT,
        PGDAT,
        TRADES,
    ]
    assert [n for n in DEFENSES if DEFENSES.get(n).ddcat_heads] == ["ddcat"]


def test_the_config_becomes_typed_arguments_once():
    cfg = _cfg(
        "defense", "pgd_at", "adv_eps", "0.5", "adv_steps", "2", "adv_step_size", "0.3", "adv_norm", "l2",
        "adv_random_start", "True", "adv_train_mode", "True", "adv_clean_fraction", "0.25", "aux_weight", "0.2",
        "ignore_label", "250",
    )  # fmt: skip
    defense = build_defense(cfg)
    assert type(defense) is PGDAT and defense.clean_fraction == 0.25
    assert (defense.aux_weight, defense.ignore_label) == (0.2, 250)
    attack = defense.attack
    assert (attack.eps, attack.steps, attack.alpha, attack.norm) == (0.5, 2, 0.3, "l2")
    assert attack.random_start and attack.train_mode and not attack.unnormalized
    trades = build_defense(_cfg("defense", "trades", "trades_beta", "2.5"))
    assert type(trades) is TRADES and trades.beta == 2.5 and trades.attack.alpha == pytest.approx(0.01)
    settings = build_step_settings(_cfg("sam_warmup_iters", "3", "save_path", "exp/x"))
    assert (settings.sam_warmup_iters, settings.sam_second_pass_updates_bn, settings.save_path) == (3, False, "exp/x")


def test_an_unknown_defense_is_one_line_naming_the_choices():
    with pytest.raises(
        UserError, match=r"defense must be one of \['none', 'ddcat', 'pgd_at', 'sat', 'trades'\], got 'madry'"
    ):
        build_defense(_cfg("defense", "madry"))
