"""A 12-variant pipeline (imbalance 1/10/100/1000 x captions template/cname/a-cname) on the same
generated captions, run by ``curate run`` with the matched pool (matching once) and without it
(``CURATE_NO_POOL=1``: matching in every build), side by side; the manifests must be identical.

    python benchmarks/bench_pool.py [--n 300000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
REPO = Path(__file__).resolve().parents[1]

PIPELINE = """
description: 12 variants of one pool (benchmark)
base:
  vocab: imagenet1k
  profile: exp
  order: natural
  max_per_class: 60
  allow_shortfall: true
variants:
""" + "".join(f"  - {{imbalance: {r}, captions: {c}}}\n" for r in (1, 10, 100, 1000) for c in ("template", "cname", "a-cname"))


def run(pipe: Path, src: Path, out: Path, env: dict[str, str]) -> tuple[float, float]:
    t0 = time.perf_counter()
    before = os.times()
    subprocess.run([sys.executable, "-m", "curate", "run", str(pipe), "--source", str(src), "--out-root", str(out)], check=True, capture_output=True, env=env)
    after = os.times()
    return time.perf_counter() - t0, (after.children_user - before.children_user) + (after.children_system - before.children_system)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=300_000, help="captions in the pool")
    args = ap.parse_args()

    from bench_match import make_captions

    from curate.vocab import load_vocab

    lemmas = sorted({lem for ls in load_vocab("imagenet1k")["lemmas"].to_list() for lem in ls})
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        src = tmp / "captions.parquet"
        caps = make_captions(args.n, lemmas)
        pl.DataFrame({"uid": [f"u{i}" for i in range(args.n)], "caption": caps, "url": [f"http://x.invalid/{i}.jpg" for i in range(args.n)]}).write_parquet(src)
        pipe = tmp / "twelve.yaml"
        pipe.write_text(PIPELINE, encoding="utf-8")
        base = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), "CURATE_NO_PROGRESS": "1"}
        no_pool = run(pipe, src, tmp / "no-pool", {**base, "CURATE_NO_POOL": "1", "CURATE_CACHE": str(tmp / "cache-a")})
        pooled = run(pipe, src, tmp / "pool", {**base, "CURATE_CACHE": str(tmp / "cache-b")})
        again = run(pipe, src, tmp / "pool-again", {**base, "CURATE_CACHE": str(tmp / "cache-b")})
        for folder in (tmp / "pool", tmp / "pool-again"):
            for m in sorted((tmp / "no-pool").rglob("manifest.parquet")):
                other = folder / m.relative_to(tmp / "no-pool")
                if other.read_bytes() != m.read_bytes():
                    raise SystemExit(f"{other} differs from the build that matched in place")
        n_manifests = len(list((tmp / "pool").rglob("manifest.parquet")))
    print(f"{n_manifests} manifests from {args.n:,} captions (imagenet1k), identical with and without the pool")
    print(f"{'curate run, 12 variants':45s} {'wall s':>7s} {'CPU s':>7s} {'speed-up':>9s}")
    for name, (wall, cpu) in (("matching in every build (CURATE_NO_POOL=1)", no_pool), ("matched pool written once, read 12 times", pooled), ("pool already there (a second pipeline)", again)):
        print(f"{name:45s} {wall:7.2f} {cpu:7.2f} {no_pool[0] / wall:8.2f}x")
    print(f"cores: {os.cpu_count()}, load average: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
