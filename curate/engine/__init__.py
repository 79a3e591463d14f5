"""Where matching runs, kept apart from what matching does (:mod:`curate.match`).

- :mod:`curate.engine.shard`: the per-shard contract. Shard ``i`` of ``N`` is a contiguous slice of
  a source's rows; it writes its outputs, its partial counts and a completion marker; a reduce adds
  the partials; a rerun skips completed shards. Any scheduler can run it (``curate match --shard
  i/N``, a SLURM array with ``--shard slurm``).
- :mod:`curate.engine.local`: all shards here, one after another (and the size of a source, which
  decides whether numba's loops are worth loading).
- :mod:`curate.engine.ray`: all shards on Ray Data: a stateful actor per worker holds the opened
  source and the compiled matcher; optional extra ``curate[ray]``.

Engines are looked up by name in :data:`ENGINES` and give the same files: every engine runs a
shard through :func:`curate.engine.shard.run_shard`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

ENGINES = ("local", "ray")


def _runner(name: str) -> Callable:
    if name == "local":
        from curate.engine.local import run_sharded
    else:
        from curate.engine.ray import run_sharded
    return run_sharded


def run_all(engine: str, job, out: str | Path, *, shards: int | None = None, address: str | None = None) -> list:
    """Every shard of ``job`` into ``out`` on ``engine``: [(skipped, partial counts)] in shard order."""
    from curate.errors import CurateError

    if engine not in ENGINES:
        raise CurateError(f"--engine {engine!r} is not one of {', '.join(ENGINES)}")
    return _runner(engine)(job, Path(out), shards=shards, address=address)
