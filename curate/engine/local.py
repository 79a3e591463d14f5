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


def run_sharded(job, out: Path, *, shards: int | None = None, address: str | None = None) -> list:
    """All ``shards`` of ``job`` (default: one per source file) in this process, in order,
    skipping completed ones: [(skipped, partial counts)]."""
    import polars as pl

    from curate.engine.shard import Shard, run_shard
    from curate.errors import CurateError

    if address is not None:
        raise CurateError("--ray-address goes with --engine ray")
    opened = job.open()
    src = opened[0]
    n = shards or max(1, len(src.files))
    total = int(src.lazy.select(pl.len()).collect(engine="streaming").item())
    return [run_shard(job, Shard(i, n), out, opened=opened, total_rows=total) for i in range(n)]
