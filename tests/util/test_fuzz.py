"""Random list files and command-line overrides, fed to the parsers: every outcome is a result or a UserError
(the one-line error of the entry points), never another exception (a traceback)."""

from __future__ import annotations

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from attack.registry import build_attack, parse_specs
from util.config import load_config
from util.data.dataset import make_dataset
from util.errors import UserError

# derandomize: the same examples on every run, so CI cannot fail by chance; widen max_examples locally to search.
FAST = settings(
    max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
KEYS = [
    "base_lr",
    "epochs",
    "classes",
    "train_h",
    "scales",
    "attacks",
    "amp",
    "model",
    "iters",
    "base_size",
    "adv_norm",
    "defense",
    "ignore_label",
    "sam_rho",
    "head_lr_mult",
    "base_lrr",
    "",
    "TRAIN",
]
WORDS = st.one_of(
    st.sampled_from(
        [
            "0",
            "-1",
            "1e9",
            "nan",
            "True",
            "[1, 2]",
            "{a: 1}",
            "[",
            "",
            "~",
            "l2",
            "ddcat",
            "deeplabv3plus_mobilenet",
            "fp16",
        ]
    ),
    st.text(string.printable, max_size=12),
)


@FAST
@given(st.lists(st.tuples(st.sampled_from(KEYS), WORDS), max_size=4))
def test_random_overrides_give_a_config_or_one_line(pairs):
    opts = [word for pair in pairs for word in pair]
    try:
        load_config("config/synthetic/synthetic_pspnet18.yaml", opts)
    except UserError as err:
        assert "\n" not in str(err).strip()


LINE = st.lists(
    st.one_of(
        st.sampled_from(["a.png", "b.png", "a b.png", "missing.png", "\t", " ", "\ufeff", "\r"]),
        st.text(string.printable, max_size=8),
    ),
    max_size=4,
).map(" ".join)


@FAST
@given(st.lists(LINE, max_size=6), st.sampled_from(["train", "val", "test"]))
def test_random_list_files_give_pairs_or_one_line(tmp_path_factory, lines, split):
    root = tmp_path_factory.mktemp("list")
    for name in ("a.png", "b.png", "a b.png"):
        (root / name).write_bytes(b"")
    path = root / "list.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    try:
        items = make_dataset(split, str(root), str(path))
    except UserError as err:
        assert "\n" not in str(err).strip()
    else:
        assert items and all(len(item) == 2 for item in items)


ENTRY = st.dictionaries(
    st.sampled_from(["name", "eps", "steps", "alpha", "unit", "loss", "norm", "source", "x"]),
    st.one_of(
        st.sampled_from(["pgd", "sea", "dag", "apgd", "cw", "bim"]),
        st.integers(-3, 300),
        st.floats(allow_nan=True),
        st.lists(st.integers(0, 9), max_size=3),
        st.text(max_size=4),
        st.none(),
    ),
    max_size=5,
)


@FAST
@given(st.lists(ENTRY, max_size=3))
def test_random_attack_entries_give_specs_or_one_line(entries):
    try:
        for spec in parse_specs(entries):
            build_attack(spec, nn.Identity())  # the constructors' checks too
    except UserError as err:
        assert "\n" not in str(err).strip()
