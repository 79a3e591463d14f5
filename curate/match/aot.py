"""Ahead-of-time copies of the compiled loops of :mod:`curate.match.kernels` and of the
disambiguation cascade (:mod:`curate.match.cascade`): an extension module built once into the
cache (``$CURATE_CACHE/kernels``) with numba's ``pycc``, then imported in a millisecond by every
later run, which then never imports numba.

Loading numba's just-in-time copies costs about 0.5 CPU-seconds per process even from its cache
(its import, its typing registries, the cached machine code): a fifth of a whole 1M-caption
``curate match``. The ahead-of-time module holds the same functions compiled from the same source
(the loops themselves, and ``_load_u64`` as one unaligned load), releasing the GIL as the
just-in-time ones do; its name carries a hash of that source, numba's and Python's versions, so
any change builds a new one.

Built by :func:`ensure` (a run large enough to use the compiled loops calls it, through
:func:`curate.match.kernels.compiled_for`) in a child process under a file lock, so concurrent runs
build it once. Where it cannot be built (no C compiler and linker for ``pycc``, numba missing or
too new to have ``pycc``), a marker says so and the just-in-time loops are used, as before.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

# versions of the module kept in the cache (each with its lock and failure files)
KEEP = 4
# seconds a build may take (it takes 10-20 s); past it, the just-in-time loops, and a marker
BUILD_TIMEOUT = 300
# seconds before a failed build is tried again
RETRY_AFTER = 24 * 3600

# exported name -> (module of curate.match, its function, numba signature of how it is called)
_A1, _A2, _I1, _I2, _U2 = "u1[::1]", "b1[::1]", "i8[::1]", "i8[:, ::1]", "u8[:, ::1]"
SIGNATURES = {
    "squeeze_rows": ("kernels", "_squeeze_rows", "void(u1[::1], i8[::1], u1[::1], u1[::1], u1[::1], i8[::1], u1[::1])"),
    "splice_rows": ("kernels", "_splice_rows", "void(u1[::1], i8[::1], i8[::1], u1[::1], i8[::1], u1[::1], i8[::1])"),
    "build_table": ("kernels", "_build_table", "b1(u1[::1], i8[::1], u8[:, ::1], u8[::1])"),
    "word_find": ("kernels", "_word_find", "i8(u1[::1], i8[::1], u8[:, ::1], u8[::1], u1[::1], i8[::1], i8[::1], i8[::1], i8[::1], i8[::1])"),
    # the disambiguation cascade's loops (curate.match.cascade), argument for argument as it calls them
    "cascade_rows": ("cascade", "_cascade_rows", f"void({_A1}, {_I1}, {_A1}, {_I1}, {_I1}, {_I1}, {_I1}, {_I1}, {_I1}, {_I1}, {_I1}, "
                     f"{_U2}, {_A1}, {_I1}, {_I1}, {_I1}, {_I2}, {_U2}, {_A1}, {_A1}, {_A2}, {_A2}, {_A2}, {_A2}, b1, {_A1}, i1[::1], {_I2}, {_I1})"),
    "insert_words": ("cascade", "_insert_words", f"void({_U2}, {_A1}, {_I1}, i8, i8)"),
    "insert_facts": ("cascade", "_insert_facts", f"i8({_U2}, {_I1}, {_I1}, {_I1})"),
}


@functools.lru_cache(maxsize=1)
def module_name() -> str | None:
    """``curate_kernels_<hash>`` of the loops' source and the toolchain; None without numba."""
    spec = importlib.util.find_spec("numba")
    if spec is None or spec.origin is None:
        return None
    h = hashlib.sha256()
    # the loops' source, and the module whose reason codes the cascade's loop compiles in
    for name in ("kernels.py", "cascade.py", "disambiguate.py", "aot.py"):
        path = Path(__file__).with_name(name)
        h.update(path.read_bytes())
    st = os.stat(spec.origin)
    h.update(f"{spec.origin}\0{st.st_size}\0{st.st_mtime_ns}\0{sys.version}\0{sysconfig.get_config_var('EXT_SUFFIX')}".encode())
    return f"curate_kernels_{h.hexdigest()[:16]}"


def module_path() -> Path | None:
    from curate.util import cache_dir

    name = module_name()
    if name is None:
        return None
    return cache_dir() / "kernels" / f"{name}{sysconfig.get_config_var('EXT_SUFFIX') or '.so'}"


def available() -> bool:
    """Whether the ahead-of-time module is built (a cheap check: one stat)."""
    path = module_path()
    return path is not None and path.is_file()


@functools.lru_cache(maxsize=1)
def load():
    """The ahead-of-time module, or None where it is not built (or does not import)."""
    path = module_path()
    if path is None or not path.is_file():
        return None
    try:
        spec = importlib.util.spec_from_file_location(module_name(), path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except (ImportError, OSError):
        return None
    if not all(hasattr(module, name) for name in SIGNATURES):
        return None
    return module


def ensure() -> bool:
    """Build the ahead-of-time module unless it is there (or known not to build); whether it is there."""
    from curate.util import file_lock, write_text_atomic

    path = module_path()
    if path is None:
        return False
    failed = path.with_suffix(".failed")
    if path.is_file():
        return True
    if _failed_lately(failed):
        return False
    try:
        with file_lock(path.with_suffix(".lock")):
            if path.is_file() or _failed_lately(failed):  # another process built it (or tried) meanwhile
                return path.is_file()
            package_root = str(Path(__file__).resolve().parents[2])
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([package_root, *[p for p in sys.path if p]])}
            try:
                proc = subprocess.run(
                    [sys.executable, "-c", "import sys; from curate.match.aot import build; build(sys.argv[1])", str(path)],
                    capture_output=True, text=True, env=env, timeout=BUILD_TIMEOUT,
                )
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:] if proc.returncode != 0 else []
            except subprocess.TimeoutExpired:  # a hung compiler must not hold the lock of every later run
                tail = [f"the build took over {BUILD_TIMEOUT} s"]
            if tail or not path.is_file():
                write_text_atomic(failed, "\n".join(tail or ["no module written"]) + "\n")
                return False
            # the modules of earlier versions of the loops: a few stay (another checkout may use them)
            others = sorted(path.parent.glob("curate_kernels_*"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
            for old in [p for p in others if not p.name.startswith(path.name.split(".")[0])][3 * KEEP :]:
                old.unlink(missing_ok=True)
    except OSError:  # a read-only cache: the just-in-time loops, as before
        return path.is_file()
    return True


def _failed_lately(marker: Path) -> bool:
    """A failed build is not tried again for :data:`RETRY_AFTER` seconds (a missing compiler stays
    missing; a full disk or a killed build may not)."""
    import time

    try:
        return time.time() - marker.stat().st_mtime < RETRY_AFTER
    except OSError:
        return False


def build(dest: str | Path) -> None:
    """Compile the loops into the extension module ``dest`` (run in a child process: it patches
    pycc's compile flags so the exported functions release the GIL, as ``nogil=True`` does)."""
    import tempfile

    import numba.pycc.compiler as pycc_compiler
    from numba.pycc import CC

    from curate.match import cascade, kernels

    class _NoGilFlags(pycc_compiler.Flags):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.release_gil = True

    pycc_compiler.Flags = _NoGilFlags
    kernels.register_helpers()  # _load_u64 as one unaligned load, as the just-in-time loops have it
    cascade.register_helpers()  # the cascade's helper functions, compiled into its loops
    dest = Path(dest)
    name = dest.name[: -len(sysconfig.get_config_var("EXT_SUFFIX") or ".so")]
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{name}.") as tmp:
        cc = CC(name)
        cc.output_dir = tmp
        modules = {"kernels": kernels, "cascade": cascade}
        for exported, (module, func, signature) in SIGNATURES.items():
            cc.export(exported, signature)(getattr(modules[module], func))
        cc.compile()
        (built,) = Path(tmp).glob(f"{name}*")
        os.replace(built, dest)  # whole or not at all
