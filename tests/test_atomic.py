"""Atomic writes: all or nothing, and the result is an ordinary file (not mkstemp's private one)."""

from __future__ import annotations

import os
import stat

import pytest

from companion import atomic


def test_new_file_gets_the_umask_mode_and_a_replaced_file_keeps_its_mode(tmp_path):
    new = tmp_path / "report.json"
    atomic.write_text(new, "{}")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(new.stat().st_mode) == 0o666 & ~umask
    new.chmod(0o600)
    atomic.write_text(new, '{"a": 1}')
    assert stat.S_IMODE(new.stat().st_mode) == 0o600 and new.read_text() == '{"a": 1}'


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("old")

    with pytest.raises(TypeError):  # fails halfway: the temporary file exists when write() raises
        atomic.write_bytes(path, "text, not bytes")  # type: ignore[arg-type]
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["data.txt"]
