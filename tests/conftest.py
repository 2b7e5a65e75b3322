"""Shared fixtures: a tiny synthetic dataset and a config pointing at it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import TinySeg, fit

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Two cores: one intra-op thread per process keeps the suite fast and predictable.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _on_cuda_when_present(request):
    """Tests marked ``device`` create their tensors and modules on CUDA when it exists (tool_bench/gpu_check.sh)."""
    if request.node.get_closest_marker("device") is None or not torch.cuda.is_available():
        yield
        return
    torch.set_default_device("cuda")
    try:
        yield
    finally:
        torch.set_default_device("cpu")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A 16 + 4 image synthetic dataset, 48 px high, in full contrast with colourful backgrounds and hue
    families 30 degrees wide: the pipeline tests' models learn it in a few iterations (the demo's low-contrast
    default is made to be hard for undefended models)."""
    from tool_data.synthetic import generate

    root = tmp_path_factory.mktemp("synthetic")
    generate(root, seed=1, num_train=16, num_val=4, size=48, hue_spread=30.0, background_chroma=1.0, contrast=1.0)
    return root


@pytest.fixture
def tiny_opts(tiny_data, tmp_path) -> list[str]:
    """Overrides that turn the synthetic PSPNet-18 config into a seconds-long run in tmp_path."""
    return [
        "data_root",
        str(tiny_data),
        "train_list",
        str(tiny_data / "list/train.txt"),
        "val_list",
        str(tiny_data / "list/val.txt"),
        "test_list",
        str(tiny_data / "list/val.txt"),
        "train_h",
        "33",
        "train_w",
        "33",
        "test_h",
        "33",
        "test_w",
        "33",
        "base_size",
        "56",
        "batch_size",
        "4",
        "batch_size_val",
        "4",
        "workers",
        "0",
        "epochs",
        "2",
        "save_freq",
        "1",
        "print_freq",
        "1",
        "base_lr",
        "0.02",
        "manual_seed",
        "0",
        "save_path",
        str(tmp_path / "model"),
        "save_folder",
        str(tmp_path / "result"),
        "model_path",
        str(tmp_path / "model/train_epoch_2.pth"),
    ]


@pytest.fixture
def run_cli(monkeypatch, capsys):
    """Run train.py / test.py main in-process; returns (exit code, stdout, stderr)."""

    def run(module, argv: list[str]) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", [Path(module.__file__).name, *argv])
        from util.errors import run_main
        from util.log import setup_logging

        setup_logging()  # log to the captured stdout
        code = 0
        try:
            run_main(module.main)
        except SystemExit as exit_:
            code = exit_.code or 0
        out, err = capsys.readouterr()
        return code, out, err

    return run


def attack_data(seed: int = 0, n: int = 4, size: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """[0, 1] pixels whose label is the brightest channel, the first two rows ignored."""
    g = torch.Generator().manual_seed(seed)
    pixels = torch.rand(n, 3, size, size, generator=g)
    target = pixels.argmax(1)
    target[:, :2] = 255
    return pixels, target


@pytest.fixture(scope="session")
def trained():
    """(model, normalized images, labels): a :class:`tests.helpers.TinySeg` fitted to :func:`attack_data`, the
    network every attack test attacks."""
    from attack.base import Attack

    torch.manual_seed(0)
    model = TinySeg()
    pixels, target = attack_data()
    x = Attack(model, eps=0).normalize(pixels)
    return fit(model, x, target, steps=150), x, target
