"""Small shared helpers: atomic writes, the cache folder, stable hashing.

Writing is always to a temporary name in the destination folder, then ``os.replace``: a crash
never leaves a half-written file (or folder) that looks finished.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def cache_dir() -> Path:
    """Where curate keeps generated and downloaded data (``$CURATE_CACHE``, else ~/.cache/curate)."""
    root = os.environ.get("CURATE_CACHE")
    path = Path(root) if root else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "curate"
    path.mkdir(parents=True, exist_ok=True)
    return path


# what atomic_path leaves beside DEST while it works, each naming the process that made it:
#   .DEST.PID-RANDOM.tmp  being written (incomplete until renamed)
#   .DEST.new-PID         a complete folder, about to replace DEST
#   .DEST.old-PID         the folder it replaces, until the swap is over
_TEMP_NAME = re.compile(r"\.(?P<pid>\d+)-[^.]*\.tmp|\.(?P<kind>new|old)-(?P<pid2>\d+)")


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _finish_swap(dest: Path, ready: Path, old: Path, carry: tuple[str, ...]) -> None:
    """Bring DEST to the end state of a swap, from wherever a (maybe killed) writer stopped.

    ``ready`` is complete, so it always wins; without it the swap either finished (drop ``old``)
    or never began (``old`` is the only copy: it goes back). ``carry`` names sub-folders of the
    old DEST that the new one takes over (a manifest's images/ and shards/).
    """
    if ready.exists():
        if dest.exists() or dest.is_symlink():
            if old.exists():
                raise OSError(errno.EEXIST, "an interrupted swap left both old and new copies; remove one", str(old))
            os.replace(dest, old)
        os.replace(ready, dest)
    elif not dest.exists() and old.exists():
        os.replace(old, dest)  # killed between its two renames, before the new copy was ready
        return
    if old.is_dir() and dest.is_dir():
        for sub in carry:
            if (old / sub).exists() and not (dest / sub).exists():
                os.replace(old / sub, dest / sub)
    if old.exists():
        _remove(old)


def recover(dest: str | os.PathLike[str], *, carry: tuple[str, ...] = ()) -> None:
    """Finish or undo what writers of ``dest`` killed midway left beside it, and remove their
    unfinished temporaries. Entries of live processes are left alone."""
    dest = Path(dest)
    prefix = f".{dest.name}"
    try:
        entries = [p for p in dest.parent.iterdir() if p.name.startswith(prefix)]
    except (FileNotFoundError, NotADirectoryError):
        return
    swaps: set[int] = set()
    for p in entries:
        m = _TEMP_NAME.fullmatch(p.name[len(prefix) :])
        if m is None:
            continue
        pid = int(m["pid"] or m["pid2"])
        if pid == os.getpid() or pid_alive(pid):
            continue
        if m["kind"]:
            swaps.add(pid)
        else:
            _remove(p)
    for pid in sorted(swaps):
        _finish_swap(dest, dest.with_name(f"{prefix}.new-{pid}"), dest.with_name(f"{prefix}.old-{pid}"), carry)


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str], *, carry: tuple[str, ...] = ()) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success rename it onto ``dest``.

    Works for a file or a folder. On error the temporary is removed and ``dest`` is untouched.
    A folder replaces an existing one in three renames (complete copy → ``.DEST.new-PID``, old
    ``dest`` → ``.DEST.old-PID``, new → ``dest``); a process killed anywhere in between is
    recovered by the next ``atomic_path``/``recover`` of the same ``dest``, as are the temporaries
    of killed writers. ``carry``: sub-folders the new folder takes over from the old one.
    """
    from curate.errors import CurateError, os_error_line

    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        recover(dest, carry=carry)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.{os.getpid()}-", suffix=".tmp", dir=dest.parent)
    except OSError as e:
        raise CurateError(os_error_line(e if e.filename else OSError(e.errno, e.strerror, str(dest)))) from e
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    try:
        yield tmp
        if tmp.is_dir():
            pid = os.getpid()
            ready = dest.with_name(f".{dest.name}.new-{pid}")
            os.replace(tmp, ready)  # complete from here on: a killed run's successor finishes the swap
            _finish_swap(dest, ready, dest.with_name(f".{dest.name}.old-{pid}"), carry)
        else:
            os.replace(tmp, dest)
    finally:
        if tmp.exists():
            _remove(tmp)


def write_cache_entry(path: str | os.PathLike[str], data: bytes, *, keep: int) -> bool:
    """Write one cache entry (atomically) and drop all but the ``keep`` newest ``*.pickle`` beside
    it; False, and nothing raised, where the cache folder cannot be written (a cache only spares
    time: the caller goes on with what it computed)."""
    from curate.errors import CurateError

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        entries = sorted(path.parent.glob("*.pickle"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
        for old in entries[keep:]:
            old.unlink(missing_ok=True)
    except (OSError, CurateError):  # atomic_path reports an unwritable folder as a CurateError
        return False
    return True


@contextlib.contextmanager
def file_lock(lock_path: str | os.PathLike[str], *, wait: bool = True, busy: str | None = None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (created if missing) for the block.

    The kernel drops the lock when its holder dies, even by SIGKILL, so a lock never outlives a
    killed run. ``wait=False`` raises ``CurateError(busy)`` instead of waiting for another holder.
    Without flock (Windows) the block runs unlocked.
    """
    from curate.errors import CurateError

    try:
        import fcntl
    except ImportError:
        yield
        return
    path = Path(lock_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError as e:
            raise CurateError(busy or f"{path}: held by another process") from e
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def check_replaceable(dest: str | os.PathLike[str], allowed: tuple[str, ...], *, name: str, not_folder: str, foreign: str) -> None:
    """Refuse, in one line, a folder that a writer replaces as a whole (``atomic_path``) when it is
    not a folder (``"{name} exists and is not a folder{not_folder}"``) or holds entries other than
    ``allowed`` (``"{name} {foreign}"``, ``{names}`` in ``foreign`` standing for the first three)."""
    from curate.errors import CurateError

    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise CurateError(f"{name} exists and is not a folder{not_folder}")
    if dest.is_dir():
        others = sorted(p.name for p in dest.iterdir() if p.name not in allowed)
        if others:
            names = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
            raise CurateError(f"{name} {foreign.format(names=names)}")


def check_writable_dir(folder: str | os.PathLike[str], *, option: str) -> Path:
    """Create ``folder`` if needed and prove a file can be written in it, before any long work;
    ``CurateError`` naming ``option`` otherwise."""
    from curate.errors import CurateError

    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise CurateError(f"{option} {path}: exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".probe.{os.getpid()}-", suffix=".tmp", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise CurateError(f"{option} {path}: cannot write there ({e.strerror or type(e).__name__})") from e
    return path


def write_text_atomic(dest: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``dest`` through a temporary file."""
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(dest)


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def stable_hash(*parts: object) -> str:
    """A short, stable hex id from ``parts`` (same input, same id, on every machine)."""
    h = hashlib.blake2b(digest_size=8)
    for p in parts:
        h.update(str(p).encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
    return h.hexdigest()
