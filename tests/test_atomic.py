"""pdcr_lab.atomic: a file or folder appears at its path complete, or not at all."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest

from pdcr_lab import atomic
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


# -- writers that were killed ------------------------------------------------------------------------
# Writers run in forked processes (quick to start: no second import of torch); POSIX only.
_FORK = multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None
needs_fork = pytest.mark.skipif(_FORK is None, reason="needs the fork start method (POSIX)")


def dead_pid() -> int:
    """The process id of a process that has exited (and been reaped)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(done.stdout)


def test_temporaries_are_named_after_the_host_and_process_of_their_writer(tmp_path):
    with atomic_path(tmp_path / "result.nc") as tmp:
        assert f".{atomic.HOST}~{os.getpid()}~" in tmp.parent.name, tmp.parent.name
        tmp.write_text("x")


def test_temporaries_of_dead_writers_on_this_host_are_removed_at_once(tmp_path):
    path = tmp_path / "result.nc"
    dead, alive = dead_pid(), os.getpid()
    killed = tmp_path / f".{path.name}.{atomic.HOST}~{dead}~abcd1234.tmp"  # fresh, but its writer is gone
    killed.mkdir()
    (killed / path.name).write_text("partial")
    aside = tmp_path / f".{path.name}.{atomic.HOST}~{dead}~efgh5678.old"  # an old version set aside
    aside.mkdir()
    running = tmp_path / f".{path.name}.{atomic.HOST}~{alive}~ijkl9012.tmp"  # a writer still at work
    running.mkdir()
    elsewhere = tmp_path / f".{path.name}.otherhost~{dead}~mnop3456.tmp"  # another host: only the age rule
    elsewhere.mkdir()
    old_elsewhere = tmp_path / f".{path.name}.otherhost~{dead}~qrst7890.tmp"
    old_elsewhere.mkdir()
    long_ago = time.time() - STALE_SECONDS - 60
    os.utime(old_elsewhere, (long_ago, long_ago))
    write_text(path, "done")
    assert hidden(tmp_path) == sorted([running.name, elsewhere.name])
    assert path.read_text() == "done"


def _write_and_hang(path, reached):
    with atomic_path(path) as tmp:
        tmp.write_text("half of it")
        reached.set()
        time.sleep(600)


@needs_fork
def test_a_writer_killed_mid_write_is_cleaned_up_by_the_next_write(tmp_path):
    path = write_text(tmp_path / "result.txt", "old")
    reached = _FORK.Event()
    writer = _FORK.Process(target=_write_and_hang, args=(path, reached), daemon=True)
    writer.start()
    assert reached.wait(60)
    os.kill(writer.pid, signal.SIGKILL)
    writer.join(60)
    assert path.read_text() == "old" and len(hidden(tmp_path)) == 1
    write_text(path, "new")
    assert path.read_text() == "new" and hidden(tmp_path) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the one-step swap of two folders is Linux's")
def test_replacing_a_folder_never_leaves_its_path_empty(tmp_path, monkeypatch):
    store = tmp_path / "store.zarr"
    with atomic_path(store) as tmp:
        tmp.mkdir()
        (tmp / "data").write_text("old")
    gaps = []
    for name in ("replace", "rename"):
        original = getattr(os, name)

        def watched(src, dst, *args, _original=original, **kwargs):
            _original(src, dst, *args, **kwargs)
            if not store.exists():
                gaps.append((src, dst))

        monkeypatch.setattr(os, name, watched)
    with atomic_path(store) as tmp:
        tmp.mkdir()
        (tmp / "data").write_text("new")
    monkeypatch.undo()
    assert gaps == [] and (store / "data").read_text() == "new" and hidden(tmp_path) == []


def test_a_folder_left_aside_by_a_writer_killed_between_two_renames_is_put_back(tmp_path):
    store = tmp_path / "store.zarr"
    aside = tmp_path / f".{store.name}.{atomic.HOST}~{dead_pid()}~abcd1234.old"
    (aside / store.name).mkdir(parents=True)
    (aside / store.name / "data").write_text("old")  # and nothing at `store`: the writer died in between
    with pytest.raises(OSError, match="interrupted"), atomic_path(store):  # the next writer fails ...
        raise OSError("interrupted")  # ... yet the old folder is back
    assert (store / "data").read_text() == "old" and hidden(tmp_path) == []
