"""Whole-process matching and the engines, side by side in one run, printed as ratios.

What a user waits for: ``curate match`` as a fresh process (start-up included) on 1 caption, on
``--n`` and on ``4 x --n`` generated captions (``bench_match.make_captions``), with the study's
method (tokenise + lemmatise + per-class check) timed on a subset in this process and
extrapolated; then the same 8 parquet files matched by the local engine (``--shards 8``) and by the
Ray engine (``--engine ray --shards 8``, a local Ray started by that process), whose shard files
must be byte-identical.

    python benchmarks/bench_engine.py [--n 1000000] [--repeats 3] [--no-ray]

Wall times on a shared machine vary: each row is the best of ``--repeats`` runs, with the CPU
seconds of that run, and the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
REPO = Path(__file__).resolve().parents[1]


def run(args: list[str], repeats: int) -> tuple[float, float]:
    """Best wall time of ``repeats`` fresh ``curate`` processes, and the CPU seconds of that run."""
    best = (float("inf"), 0.0)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "curate", *args], check=True, capture_output=True, env=env)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        if wall < best[0]:
            best = (wall, cpu)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="captions of the first source (the second has 4x)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--reference-subset", type=int, default=1_000)
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray engine row")
    args = ap.parse_args()

    from bench_match import make_captions, time_reference

    from curate.vocab import load_vocab

    v1k = load_vocab("imagenet1k")
    lemmas = sorted({lem for ls in v1k["lemmas"].to_list() for lem in ls})
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        caps = make_captions(args.n, lemmas)
        one = tmp / "one.csv"
        one.write_text("caption\nA tiger shark and two geese\n")
        small = tmp / "small.parquet"
        big = tmp / "big.parquet"
        pl.DataFrame({"caption": caps}).write_parquet(small, row_group_size=100_000)
        pl.DataFrame({"caption": pl.concat([caps] * 4)}).write_parquet(big, row_group_size=100_000)
        parts = tmp / "parts"
        parts.mkdir()
        per = (args.n + 7) // 8
        for i in range(8):
            pl.DataFrame({"caption": caps[i * per : (i + 1) * per]}).write_parquet(parts / f"part-{i}.parquet")

        rows: list[tuple[str, int, float, float]] = []
        wall, cpu = run(["--help"], args.repeats)
        rows.append(("curate --help", 0, wall, cpu))
        wall, cpu = run(["match", str(one), "--vocab", "imagenet1k", "--out", str(tmp / "o1.parquet")], args.repeats)
        rows.append(("curate match, 1 caption", 1, wall, cpu))
        for name, src, n in (("curate match", small, args.n), ("curate match", big, 4 * args.n)):
            wall, cpu = run(["match", str(src), "--vocab", "imagenet1k", "--out", str(tmp / "o.parquet")], args.repeats)
            rows.append((f"{name}, {n:,} captions", n, wall, cpu))
        engines: list[tuple[str, Path]] = [("local", tmp / "local")]
        wall, cpu = run(["match", str(parts), "--vocab", "imagenet1k", "--out", str(tmp / "local"), "--shards", "8"], 1)
        rows.append(("local engine, 8 parquet files, --shards 8", args.n, wall, cpu))
        if not args.no_ray:
            try:
                import ray  # noqa: F401
            except ImportError:
                print("ray is not installed (pip install 'curate[ray]'): no Ray row")
            else:
                wall, cpu = run(["match", str(parts), "--vocab", "imagenet1k", "--out", str(tmp / "ray"), "--engine", "ray", "--shards", "8"], 1)
                rows.append(("ray engine (local Ray), same files and shards", args.n, wall, cpu))
                engines.append(("ray", tmp / "ray"))
        if len(engines) == 2:
            names = sorted(p.name for p in engines[0][1].iterdir())
            same = names == sorted(p.name for p in engines[1][1].iterdir()) and all(
                (engines[0][1] / n).read_bytes() == (engines[1][1] / n).read_bytes() for n in names
            )
            if not same:
                raise SystemExit("the local and Ray engines wrote different files")
            print(f"local and Ray engines: {len(names)} files, byte-identical")

        sub = caps.head(args.reference_subset).to_list()
        dt, _cpu, _ = time_reference(sub, v1k)
        ref_rate = len(sub) / dt

    print()
    print(f"{'whole process (start-up included)':50s} {'captions':>10s} {'wall s':>7s} {'CPU s':>7s} {'captions/s':>12s} {'x study':>9s}")
    for name, n, wall, cpu in rows:
        rate = n / wall if n else 0.0
        ratio = f"{rate / ref_rate:9,.0f}" if n > 1 else ""
        print(f"{name:50s} {n:>10,d} {wall:>7.2f} {cpu:>7.2f} {rate:>12,.0f} {ratio}")
    print(f"{'reference study (in process, extrapolated)':50s} {len(sub):>10,d} {'':>7s} {'':>7s} {ref_rate:>12,.0f} {1:9,.0f}")
    local = next(r for r in rows if r[0].startswith("local engine"))
    ray_row = next((r for r in rows if r[0].startswith("ray engine")), None)
    if ray_row is not None:
        print(f"Ray engine / local engine wall time on 8 files: {ray_row[2] / local[2]:.2f}x (Ray's start-up included)")
    print(f"cores: {os.cpu_count()}, load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
