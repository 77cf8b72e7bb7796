"""Atomic writes give the permissions a plain `open()` or `os.mkdir` would."""

import os
import stat

import pytest

from simmim_tf.atomic import (
    atomic_directory,
    atomic_path,
    atomic_write_text,
    current_umask,
)


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_current_umask_reads_without_changing_it():
    previous = os.umask(0o027)
    try:
        assert current_umask() == 0o027
        assert current_umask() == 0o027
    finally:
        os.umask(previous)


def test_new_atomic_directory_gets_the_mkdir_mode(tmp_path, umask_022):
    target = tmp_path / "out" / "backbone"
    with atomic_directory(target) as temp:
        with open(os.path.join(temp, "weights.bin"), "wb") as stream:
            stream.write(b"\x00")
    assert mode_of(target) == 0o755
    assert (target / "weights.bin").is_file()
    assert sorted(p.name for p in target.parent.iterdir()) == ["backbone"]


def test_replaced_atomic_directory_keeps_its_mode(tmp_path, umask_022):
    target = tmp_path / "backbone"
    target.mkdir()
    (target / "old.txt").write_text("old")
    os.chmod(target, 0o750)
    with atomic_directory(target) as temp:
        with open(os.path.join(temp, "new.txt"), "w") as stream:
            stream.write("new")
    assert mode_of(target) == 0o750
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backbone"]


def test_new_atomic_file_gets_the_open_mode(tmp_path, umask_022):
    target = atomic_write_text(tmp_path / "report.md", "hello")
    assert mode_of(target) == 0o644
    os.umask(0o077)
    with atomic_path(tmp_path / "private.bin") as temp:
        with open(temp, "wb") as stream:
            stream.write(b"\x00")
    assert mode_of(tmp_path / "private.bin") == 0o600


def test_replaced_atomic_file_keeps_its_mode(tmp_path, umask_022):
    target = tmp_path / "report.md"
    target.write_text("old")
    os.chmod(target, 0o640)
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert mode_of(target) == 0o640
