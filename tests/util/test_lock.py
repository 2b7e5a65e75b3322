"""The run lock: one run per folder, and a run refused before writing leaves no folder behind."""

from __future__ import annotations

import pytest

from util.errors import UserError
from util.lock import LOCK, RunLock


def test_a_failed_run_removes_the_folders_its_lock_created_and_only_those(tmp_path):
    folder = tmp_path / "exp" / "run"
    with pytest.raises(UserError), RunLock(folder, "save_path"):
        assert (folder / LOCK).is_file()
        raise UserError("bad input")
    assert not (tmp_path / "exp").exists()
    folder.mkdir(parents=True)
    with pytest.raises(UserError), RunLock(folder, "save_path"):
        raise UserError("bad input")
    assert folder.is_dir() and not any(folder.iterdir())


def test_a_failed_run_keeps_what_it_wrote_and_a_finished_run_keeps_its_folder(tmp_path):
    with pytest.raises(UserError), RunLock(tmp_path / "a", "save_path"):
        (tmp_path / "a" / "written.txt").write_text("x")
        raise UserError("late")
    assert (tmp_path / "a" / "written.txt").is_file()
    with RunLock(tmp_path / "b", "save_path"):
        pass
    assert (tmp_path / "b").is_dir() and not (tmp_path / "b" / LOCK).exists()


def test_a_second_lock_on_a_held_folder_is_refused(tmp_path):
    held, again = RunLock(tmp_path, "save_folder"), RunLock(tmp_path, "save_folder")
    with held, pytest.raises(UserError, match="in use by another run"), again:
        pass
