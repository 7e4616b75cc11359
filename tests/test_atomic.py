"""pdcr_lab.atomic: a file or folder appears at its path complete, or not at all."""

from __future__ import annotations

import os
import time

import pytest

from pdcr_lab.atomic import STALE_SECONDS, atomic_path, write_bytes, write_text


def hidden(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_write_text_and_bytes_create_parents_and_replace(tmp_path):
    path = write_text(tmp_path / "a" / "b" / "note.txt", "first")
    assert path.read_text() == "first"
    write_text(path, "second")
    assert path.read_text() == "second"
    assert write_bytes(tmp_path / "blob.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)  # readable by others, like a normal file
    assert hidden(path.parent) == [] and hidden(tmp_path) == []


def test_a_write_that_raises_leaves_the_old_content_and_no_temporary(tmp_path):
    path = write_text(tmp_path / "result.txt", "old")
    with pytest.raises(RuntimeError, match="interrupted"):
        with atomic_path(path) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("interrupted")
    assert path.read_text() == "old"
    assert hidden(tmp_path) == []


def test_a_writer_that_writes_nothing_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="wrote nothing"):
        with atomic_path(tmp_path / "empty.txt"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_a_folder_replaces_a_folder_whole(tmp_path):
    store = tmp_path / "store.zarr"
    with atomic_path(store) as tmp:
        tmp.mkdir()
        (tmp / "old_only").write_text("1")
        (tmp / "shared").write_text("old")
    with atomic_path(store) as tmp:
        tmp.mkdir()
        (tmp / "shared").write_text("new")
    assert sorted(p.name for p in store.iterdir()) == ["shared"]  # nothing of the old folder survives
    assert (store / "shared").read_text() == "new"
    assert hidden(tmp_path) == []
    with pytest.raises(OSError, match="interrupted"):
        with atomic_path(store) as tmp:
            tmp.mkdir()
            raise OSError("interrupted")
    assert (store / "shared").read_text() == "new" and hidden(tmp_path) == []


def test_stale_temporaries_are_removed_and_fresh_ones_kept(tmp_path):
    path = tmp_path / "result.nc"
    old_tmp = tmp_path / f".{path.name}.killed.tmp"
    old_tmp.mkdir()
    (old_tmp / path.name).write_text("partial")
    old_aside = tmp_path / f".{path.name}.killed.old"
    old_aside.write_text("aside")
    fresh = tmp_path / f".{path.name}.running.tmp"  # another writer, still at work
    fresh.mkdir()
    other = tmp_path / ".other.nc.killed.tmp"  # a temporary of another path
    other.mkdir()
    long_ago = time.time() - STALE_SECONDS - 60
    for p in (old_tmp, old_aside, other):
        os.utime(p, (long_ago, long_ago))
    write_text(path, "done")
    assert hidden(tmp_path) == sorted([fresh.name, other.name])
    assert path.read_text() == "done"
