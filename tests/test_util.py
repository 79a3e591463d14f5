"""``curate.util``: atomic writes that a kill -9 at any moment cannot leave half-done."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from curate.errors import CurateError
from curate.util import atomic_path


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    proc = subprocess.run([sys.executable, "-c", "pass"], check=True)
    del proc
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def folder(path: Path, **files: str) -> Path:
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    return path


def test_temporaries_of_dead_writers_are_removed_by_the_next_write(tmp_path: Path) -> None:
    pid = dead_pid()
    (tmp_path / f".out.parquet.{pid}-abc123.tmp").write_bytes(b"half a file")  # a killed `curate match`
    folder(tmp_path / f".ckpt.{pid}-zz_9.tmp", **{"data": "x" * 100})  # a killed folder write
    live = tmp_path / f".out.parquet.{os.getppid()}-live.tmp"  # a writer still running
    live.write_bytes(b"in progress")
    other = tmp_path / ".unrelated.tmp"
    other.write_bytes(b"not ours")
    with atomic_path(tmp_path / "out.parquet") as tmp:
        tmp.write_bytes(b"new")
    with atomic_path(tmp_path / "ckpt") as tmp:
        tmp.mkdir()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out.parquet", "ckpt", live.name, other.name])


def test_a_swap_killed_before_the_new_copy_was_complete_restores_the_old(tmp_path: Path) -> None:
    from curate.util import recover

    pid = dead_pid()
    # killed after moving the old folder aside, with the new one still a temporary
    folder(tmp_path / f".m.old-{pid}", **{"manifest.parquet": "old", "images/0.tar": "img"})
    folder(tmp_path / f".m.{pid}-x1.tmp", **{"manifest.parquet": "half"})
    recover(tmp_path / "m", carry=("images",))
    assert (tmp_path / "m" / "manifest.parquet").read_text() == "old"
    assert (tmp_path / "m" / "images" / "0.tar").read_text() == "img"
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_a_swap_killed_after_the_new_copy_was_complete_is_finished(tmp_path: Path) -> None:
    from curate.util import recover

    for state in ("old moved aside", "new in place"):
        root = tmp_path / state.replace(" ", "-")
        pid = dead_pid()
        folder(root / f".m.old-{pid}", **{"manifest.parquet": "old", "images/0.tar": "img", "shards/i.json": "s"})
        if state == "old moved aside":
            folder(root / f".m.new-{pid}", **{"manifest.parquet": "new"})
        else:  # the new folder is visible but its images/ and shards/ are still in the old one
            folder(root / "m", **{"manifest.parquet": "new"})
        recover(root / "m", carry=("images", "shards"))
        assert (root / "m" / "manifest.parquet").read_text() == "new", state
        assert (root / "m" / "images" / "0.tar").read_text() == "img", state
        assert (root / "m" / "shards" / "i.json").read_text() == "s", state
        assert [p.name for p in root.iterdir()] == ["m"], state


def test_unwritable_destinations_are_one_clear_error(tmp_path: Path) -> None:
    afile = tmp_path / "file"
    afile.write_text("x")
    for dest in (afile / "sub" / "x.parquet", tmp_path / ("n" * 300)):
        with pytest.raises(CurateError, match="cannot write"), atomic_path(dest) as tmp:
            tmp.write_text("never")


def test_a_cache_entry_is_written_whole_keeps_the_newest_and_never_raises(tmp_path):
    import os

    from curate.util import write_cache_entry

    folder = tmp_path / "cache"
    for k in range(4):
        assert write_cache_entry(folder / f"e{k}.pickle", b"x" * k, keep=2)
        os.utime(folder / f"e{k}.pickle", ns=(k * 10**9, k * 10**9))
    assert write_cache_entry(folder / "e4.pickle", b"new", keep=2)
    assert sorted(p.name for p in folder.glob("*.pickle")) == ["e3.pickle", "e4.pickle"]
    assert (folder / "e4.pickle").read_bytes() == b"new"
    assert not list(folder.glob(".*tmp"))
    # an unwritable place (here a file where the folder should be): False, nothing raised
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert write_cache_entry(blocker / "e.pickle", b"x", keep=2) is False
