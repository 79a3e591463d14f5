"""``curate build`` against the obvious in-memory way, side by side on the same web-like source.

Generates N rows (uid, caption, url; about 80% name one ImageNet-1k class with a Zipf-like
distribution) as parquet parts in a temporary folder, then runs, each in its own process so peak
RSS is its own:

- **curate**: ``curate.manifest.build`` (exp profile, R = 100, 100,000 training rows): a streaming
  match pass keeping (row, class, key) per matched row, the draw, a second streaming pass for the
  drawn rows only;
- **in memory**: read the whole source, match it, explode, ``sample`` per class with polars —
  what a one-off script does;

and prints wall time, peak RSS and the ratios, at N and at N/4 (a flat curate column means memory
does not grow with the source).

    python benchmarks/bench_build.py [--n 4000000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ADJ = ["my", "a cute", "the old", "beautiful", "vintage", "a small", "two", "our new"]
FILL = ["at the park", "on sale now", "photo by john", "in the garden", "#travel #photo", "close-up shot"]


def generate(folder: Path, n: int, parts: int = 4) -> None:
    import numpy as np
    import polars as pl

    from curate.vocab import load_vocab

    names = load_vocab("imagenet1k")["name"].to_list()
    k = len(names)
    rng = np.random.default_rng(0)
    w = 1.0 / np.arange(1, k + 1) ** 1.1
    w /= w.sum()
    perm = rng.permutation(k)
    per = n // parts
    for p in range(parts):
        cls = perm[rng.choice(k, size=per, p=w)]
        df = pl.DataFrame(
            {
                "i": np.arange(p * per, (p + 1) * per),
                "c": cls,
                "none": rng.random(per) < 0.2,
                "a": rng.integers(0, len(ADJ), per),
                "f": rng.integers(0, len(FILL), per),
            }
        )
        df.with_columns(
            pl.format("web-{}", "i").alias("uid"),
            pl.when("none")
            .then(pl.format("some random picture number {}", "i"))
            .otherwise(
                pl.format(
                    "{} {} {}",
                    pl.col("a").replace_strict(dict(enumerate(ADJ))),
                    pl.col("c").replace_strict(dict(enumerate(names))),
                    pl.col("f").replace_strict(dict(enumerate(FILL))),
                )
            )
            .alias("caption"),
            pl.format("http://img.example.invalid/{}.jpg", "i").alias("url"),
        ).select("uid", "caption", "url").write_parquet(folder / f"part-{p:03d}.parquet", row_group_size=100_000)


def run_curate(source: str, out: str) -> None:
    from curate.manifest import build
    from curate.recipe import Recipe

    build(Recipe(source=source, imbalance=100.0, total=100_000, allow_shortfall=True, out_root=out))


def run_in_memory(source: str, out: str) -> None:
    import polars as pl

    from curate.match import match_captions
    from curate.vocab import load_vocab

    vocab = load_vocab("imagenet1k")
    df = pl.read_parquet(f"{source}/*.parquet")
    matched = match_captions(df.lazy(), vocab).collect()
    rows = matched.with_columns(pl.col("labels").list.first().alias("label")).drop_nulls("label")
    counts = rows.group_by("label").len()
    n_max = 100_000 / 21.5  # about the same size as curate's build
    want = counts.with_columns(pl.min_horizontal(pl.col("len"), pl.lit(int(n_max))).alias("want"))
    sample = (
        rows.join(want, on="label")
        .with_columns(pl.int_range(pl.len()).shuffle(seed=0).over("label").alias("r"))
        .filter(pl.col("r") < pl.col("want"))
    )
    sample.select("uid", "label", "caption", "url").write_parquet(f"{out}/manifest.parquet")


def child(kind: str, source: str, out: str) -> None:
    os.environ["CURATE_NO_PROGRESS"] = "1"
    t = time.perf_counter()
    {"curate": run_curate, "memory": run_in_memory}[kind](source, out)
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"wall_s": wall, "peak_mib": peak}))


def measure(kind: str, source: Path, out: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(source), str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4_000_000, help="rows of the larger source")
    ap.add_argument("--child", nargs=3, metavar=("KIND", "SOURCE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory(prefix="bench-build-") as tmp:
        print(f"{'rows':>10} {'method':>10} {'wall s':>8} {'peak MiB':>9}")
        results: dict[tuple[int, str], dict] = {}
        for n in (args.n // 4, args.n):
            src = Path(tmp) / f"src-{n}"
            src.mkdir()
            generate(src, n)
            for kind in ("curate", "memory"):
                out = Path(tmp) / f"out-{kind}-{n}"
                out.mkdir()
                r = results[(n, kind)] = measure(kind, src, out)
                print(f"{n:>10,} {kind:>10} {r['wall_s']:>8.1f} {r['peak_mib']:>9.0f}", flush=True)
        big, small = args.n, args.n // 4
        for kind in ("curate", "memory"):
            growth = results[(big, kind)]["peak_mib"] / results[(small, kind)]["peak_mib"]
            print(f"{kind}: peak RSS x{growth:.2f} for x4 the rows")
        ratio = results[(big, "memory")]["peak_mib"] / results[(big, "curate")]["peak_mib"]
        speed = results[(big, "memory")]["wall_s"] / results[(big, "curate")]["wall_s"]
        print(f"at {big:,} rows: in-memory peak RSS / curate = {ratio:.2f}; in-memory time / curate = {speed:.2f}")


if __name__ == "__main__":
    main()
