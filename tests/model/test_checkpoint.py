"""Atomic checkpoints, the ``latest`` pointer, RNG state capture, and the resumable batch order."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch

from model.checkpoint import (
    LATEST,
    latest_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from util.data.sampler import EpochSeeded, ResumableBatchSampler


def test_save_points_latest_and_loads_weights_only(tmp_path) -> None:
    save_checkpoint({"epoch": 1, "w": torch.ones(2)}, tmp_path / "train_iter_4.pth")
    save_checkpoint({"epoch": 2, "w": torch.zeros(2)}, tmp_path / "train_iter_8.pth")
    assert (tmp_path / LATEST).read_text().strip() == "train_iter_8.pth"
    assert latest_checkpoint(tmp_path) == tmp_path / "train_iter_8.pth"
    assert torch.load(tmp_path / "train_iter_8.pth", weights_only=True)["epoch"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [LATEST, "train_iter_4.pth", "train_iter_8.pth"]


def test_crash_during_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch) -> None:
    save_checkpoint({"epoch": 1, "w": torch.arange(3.0)}, tmp_path / "train_epoch_1.pth")
    before = (tmp_path / "train_epoch_1.pth").read_bytes()

    def torn_save(obj, f) -> None:
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"epoch": 2}, tmp_path / "train_epoch_2.pth")
    with pytest.raises(OSError, match="disk full"):  # overwriting the same name keeps the old bytes too
        save_checkpoint({"epoch": 3}, tmp_path / "train_epoch_1.pth")
    assert (tmp_path / "train_epoch_1.pth").read_bytes() == before
    assert not (tmp_path / "train_epoch_2.pth").exists()
    assert latest_checkpoint(tmp_path) == tmp_path / "train_epoch_1.pth"
    assert sorted(p.name for p in tmp_path.iterdir()) == [LATEST, "train_epoch_1.pth"]


def test_latest_falls_back_to_the_newest_file(tmp_path) -> None:
    assert latest_checkpoint(tmp_path) is None
    save_checkpoint({"epoch": 1}, tmp_path / "train_epoch_1.pth")
    save_checkpoint({"epoch": 2}, tmp_path / "train_epoch_2.pth")
    (tmp_path / "train_epoch_2.pth").unlink()
    assert latest_checkpoint(tmp_path) == tmp_path / "train_epoch_1.pth"


def test_rng_state_round_trips_through_a_safe_load() -> None:
    random.seed(3)
    np.random.seed(4)
    torch.manual_seed(5)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    buffer = io.BytesIO()
    torch.save({"rng": rng_state()}, buffer)
    expected = (random.random(), np.random.randn(), torch.rand(3))
    buffer.seek(0)
    set_rng_state(torch.load(buffer, weights_only=True)["rng"])
    again = (random.random(), np.random.randn(), torch.rand(3))
    assert expected[0] == again[0] and expected[1] == again[1] and torch.equal(expected[2], again[2])


def test_sampler_shards_each_global_batch_and_resumes_mid_epoch() -> None:
    single = ResumableBatchSampler(23, 6, seed=7)
    single.set_epoch(2)
    batches = list(single)
    assert len(batches) == len(single) == 3 and all(len(b) == 6 for b in batches)
    assert len({i for b in batches for _, i in b}) == 18 and {e for b in batches for e, _ in b} == {2}

    ranks = [ResumableBatchSampler(23, 6, seed=7, rank=r, world_size=2) for r in range(2)]
    for sampler in ranks:
        sampler.set_epoch(2)
    for k, (first, second) in enumerate(zip(*ranks)):
        assert first == batches[k][0::2] and second == batches[k][1::2]
    four = ResumableBatchSampler(23, 4, seed=7)
    halves = [ResumableBatchSampler(23, 4, seed=7, rank=r, world_size=2) for r in range(2)]
    for whole, first, second in zip(four, *halves):  # SAT's clean halves: the global batch's first half
        assert sorted(first[:1] + second[:1]) == sorted(whole[:2])

    single.set_epoch(2, start=1)
    assert list(single) == batches[1:]
    single.set_epoch(3)
    assert list(single) != [[(3, i) for _, i in b] for b in batches]
    with pytest.raises(ValueError, match="divisible"):
        ResumableBatchSampler(23, 6, seed=7, world_size=4)


class _RandomItem(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 10

    def __getitem__(self, index: int) -> tuple[int, float]:
        return index, random.random()


def test_epoch_seeded_samples_do_not_depend_on_what_was_loaded_before() -> None:
    data = EpochSeeded(_RandomItem(), seed=1)
    random.seed(0)
    outside = random.getstate()
    first = data[(0, 3)]
    data[(0, 4)]
    assert data[(0, 3)] == first and data[(1, 3)] != first and EpochSeeded(_RandomItem(), 2)[(0, 3)] != first
    assert random.getstate() == outside  # the caller's stream is untouched
