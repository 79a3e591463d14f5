"""The local engine: a source's size known before matching, and batches matched on every core."""

from __future__ import annotations

import os
from pathlib import Path

# bytes per caption row assumed for text formats, whose row count is unknown until read
_TEXT_BYTES_PER_ROW = 80


def expected_rows(files: tuple[str, ...] | list[str]) -> int | None:
    """About how many rows ``files`` hold, from Parquet footers (exact) or text sizes (estimated);
    None when some file cannot be sized without reading it (a URL, a missing file)."""
    total = 0
    for f in files:
        path = Path(f)
        if not path.is_file():
            return None
        if path.suffix.lower() == ".parquet":
            import polars as pl

            try:  # the footer only
                total += int(pl.scan_parquet(path).select(pl.len()).collect().item())
            except (OSError, pl.exceptions.PolarsError):
                return None
        else:
            total += os.path.getsize(path) // _TEXT_BYTES_PER_ROW + 1
    return total


def run_sharded(job, out: Path, *, shards: int | None = None, address: str | None = None, workers: int | None = None) -> list:
    """All ``shards`` of ``job`` (default: one per source file) in this process, skipping completed
    ones: [(skipped, partial counts)] in shard order. ``workers`` shards run side by side (default:
    one per core, at most one per shard): threads, since the compiled pass, polars' readers and
    writers release the GIL, and they share one loaded matcher. Each shard's files are the same
    whatever runs beside it."""
    from concurrent.futures import ThreadPoolExecutor

    import polars as pl

    from curate.engine.shard import Shard, run_shard
    from curate.errors import CurateError
    from curate.match.kernels import compiled_for

    if address is not None:
        raise CurateError("--ray-address goes with --engine ray")
    opened = job.open()
    src = opened[0]
    n = shards or max(1, len(src.files))
    total = int(src.lazy.select(pl.len()).collect(engine="streaming").item())
    pool = max(1, min(n, workers or os.cpu_count() or 1))
    # decided once for the whole run: the shards share the loaded loops (or the numpy path)
    with compiled_for(total):
        if job.mode == "curate":  # compiled and warmed here, once, before threads share it
            from curate.match.lexicon_cache import cached_matcher

            cached_matcher(opened[1]).warm_up()
        if pool == 1:
            return [run_shard(job, Shard(i, n), out, opened=opened, total_rows=total, decide_compiled=False) for i in range(n)]
        with ThreadPoolExecutor(pool, thread_name_prefix="curate-shard") as ex:
            futures = [ex.submit(run_shard, job, Shard(i, n), out, opened=opened, total_rows=total, decide_compiled=False) for i in range(n)]
            return [f.result() for f in futures]
