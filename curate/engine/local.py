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
