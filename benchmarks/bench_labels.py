"""Label quality on real web alt-text, and what the disambiguation costs, in one run.

Precision and recall of every matching mode on the hand-judged real LAION captions of
``tests/data`` (see its README: ``dev`` is the half the rules were written on, ``heldout`` the
half scored only afterwards), then in-process captions/s of ``match_captions`` with and without
the disambiguation cascade on the same generated web-like captions (``bench_match.make_captions``)
and on the real captions repeated.

    python benchmarks/bench_labels.py [--n 200000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import polars as pl

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "tests" / "data"


def quality_table(vocab: pl.DataFrame) -> list[tuple[str, str, float, float, int, float, float]]:
    """(mode, split, precision, recall, kept, precision and recall by the blind second reader)."""
    from curate.match import match_captions
    from curate.match.quality import score_labels

    df = pl.read_parquet(DATA / "laion_1000.parquet").rename({"TEXT": "caption"})
    judged = pl.read_csv(
        DATA / "laion_1000_judged.tsv", separator="\t", schema_overrides={"judgement": pl.Utf8, "second_judgement": pl.Utf8}
    )
    second = judged.with_columns(pl.col("second_judgement").alias("judgement"))
    modes = {
        "curate (default: disambiguation)": dict(mode="curate"),
        "curate --no-disambiguate": dict(mode="curate", disambiguate=False),
        "reference (the study's counting)": dict(mode="reference"),
    }
    rows = []
    for name, kw in modes.items():
        labels = match_captions(df.lazy(), vocab, **kw).collect()["labels"]
        for split in ("dev", "heldout", "all"):
            sub = judged if split == "all" else judged.filter(pl.col("split") == split)
            sub2 = second if split == "all" else second.filter(pl.col("split") == split)
            q = score_labels(labels, sub, rows=sub["row"].unique().to_list())
            q2 = score_labels(labels, sub2, rows=sub2["row"].unique().to_list())
            rows.append((name, split, q.precision, q.recall, q.kept, q2.precision, q2.recall))
    return rows


def speed(captions: pl.Series, vocab: pl.DataFrame, *, disambiguate: bool, repeats: int = 2) -> float:
    from curate.match import compile_matcher, match_captions

    compile_matcher(vocab, disambiguate=disambiguate).warm_up()
    lf = pl.LazyFrame({"caption": captions})
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        match_captions(lf, vocab, disambiguate=disambiguate).select(pl.col("labels").list.len().sum()).collect(engine="streaming")
        best = min(best, time.perf_counter() - t0)
    return len(captions) / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000, help="generated captions for the speed rows")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    from bench_match import make_captions

    from curate.vocab import load_vocab

    v1k = load_vocab("imagenet1k")
    print("label quality on real LAION captions judged by hand (imagenet1k)")
    print(f"{'mode':36} {'split':8} {'precision':>9} {'recall':>7} {'kept':>5}   second reader: {'precision':>9} {'recall':>7}")
    for name, split, p, r, kept, p2, r2 in quality_table(v1k):
        print(f"{name:36} {split:8} {p:9.3f} {r:7.3f} {kept:5d}   {'':15}{p2:9.3f} {r2:7.3f}")

    lemmas = sorted({lem for ls in v1k["lemmas"].to_list() for lem in ls})
    real = pl.read_parquet(DATA / "laion_1000.parquet")["TEXT"]
    sets = {
        f"{args.n:,} generated captions": make_captions(args.n, lemmas),
        f"{args.n:,} real captions (1,000 repeated)": pl.concat([real] * (args.n // len(real))).alias("caption"),
    }
    print("\nin-process match_captions, imagenet1k (captions/s; ratio = with / without the cascade)")
    for name, caps in sets.items():
        plain = speed(caps, v1k, disambiguate=False)
        full = speed(caps, v1k, disambiguate=True)
        print(f"{name:42} without {plain / 1e6:6.2f}M/s   with {full / 1e6:6.3f}M/s   ratio {full / plain:.3f}")


if __name__ == "__main__":
    main()
