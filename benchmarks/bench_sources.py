"""What the canonical source plan costs over a bare polars scan, measured side by side.

Writes a LAION-like parquet and a CC12M-like TSV (``ROWS`` rows, default 1,000,000) to a temp
folder, then times reading caption + url + uid: the bare ``scan_*`` of the same columns versus
``open_source(...).lazy`` (column mapping, FILE:ROW or own-id uid, the null-caption check, or
with ``skip_bad_rows`` the filter). Prints seconds (best of 3) and the ratio to the bare scan.

Run: ``python benchmarks/bench_sources.py`` (``ROWS=200000`` for a quicker run).
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl

from curate.sources import open_source


def best_of(fn: Callable[[], pl.DataFrame], repeat: int = 3) -> tuple[float, int]:
    times, height = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        height = fn().height
        times.append(time.perf_counter() - t0)
    return min(times), height


def main() -> None:
    rows = int(os.environ.get("ROWS", "1000000"))
    rng = random.Random(0)
    words = "a the dog cat tench goldfish crane on in with red small photo of my beach park".split()
    captions = [" ".join(rng.choices(words, k=rng.randint(3, 12))) for _ in range(rows)]
    urls = [f"http://img.example/{i}.jpg" for i in range(rows)]
    with tempfile.TemporaryDirectory() as d:
        laion = Path(d) / "part-00000.parquet"
        pl.DataFrame(
            {"SAMPLE_ID": range(rows), "URL": urls, "TEXT": captions, "similarity": [0.3] * rows}
        ).write_parquet(laion)
        tsv = Path(d) / "cc12m.tsv"
        pl.DataFrame({"url": urls, "caption": captions}).write_csv(tsv, separator="\t", include_header=False, quote_style="never")

        cases: list[tuple[str, Callable[[], pl.DataFrame]]] = [
            ("parquet: bare scan_parquet", lambda: pl.scan_parquet(laion).select("SAMPLE_ID", "TEXT", "URL").collect()),
            ("parquet: open_source (checked)", lambda: open_source(str(laion)).lazy.select("uid", "caption", "url").collect()),
            (
                "parquet: open_source (skip_bad_rows)",
                lambda: open_source(str(laion), skip_bad_rows=True).lazy.select("uid", "caption", "url").collect(),
            ),
            (
                "tsv: bare scan_csv",
                lambda: pl.scan_csv(tsv, separator="\t", has_header=False, quote_char=None, infer_schema=False)
                .with_row_index()
                .collect(),
            ),
            ("tsv: open_source (checked)", lambda: open_source(str(tsv), preset="cc12m").lazy.select("uid", "caption", "url").collect()),
        ]
        results = {name: best_of(fn) for name, fn in cases}
    print(f"rows: {rows:,}")
    print(f"{'case':42s} {'seconds':>8s} {'ratio':>6s}")
    for name, (secs, height) in results.items():
        base = results["parquet: bare scan_parquet" if name.startswith("parquet") else "tsv: bare scan_csv"][0]
        assert height == rows, (name, height)
        print(f"{name:42s} {secs:8.3f} {secs / base:6.2f}")


if __name__ == "__main__":
    main()
