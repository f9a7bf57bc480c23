"""Atomic writes: a failed write leaves the old file, a finished one is complete and readable."""

import os

import pytest

from mfcalc.files import atomic_write, atomic_write_text, check_writable_dir


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    path = tmp_path / "metrics.json"
    atomic_write_text(str(path), "old")

    def half_then_crash(tmp):
        with open(tmp, "w") as fh:
            fh.write("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(str(path), half_then_crash)
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_finished_files_are_shareable_and_folders_are_created(tmp_path):
    path = tmp_path / "new" / "model.pt"
    atomic_write(str(path), lambda tmp: open(tmp, "wb").close())
    assert path.exists() and (path.stat().st_mode & 0o777) == 0o644


def test_unwritable_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="cannot write to output directory"):
        check_writable_dir(str(blocker / "sub"))
