"""Label quality on real web alt-text, and what the disambiguation costs, in one run.

Precision and recall of every matching mode on the hand-judged real LAION captions of
``tests/data`` (see its README): set A (rows 0-999, judged by the developers, a blind second
reader beside) and set B (rows 1000-3999, three blind readers, the majority), each halved into
``dev`` (the rules were written looking at it) and ``heldout`` (scored only, never read for
rules); then in-process captions/s of ``match_captions`` with and without
the disambiguation cascade on the same generated web-like captions (``bench_match.make_captions``)
and on the real captions repeated.

With ``--encoder SPEC`` (a CLIP text tower, as ``curate score`` takes it: ``openclip:MODEL:PATH``
with a local checkpoint, or a ``runs/NAME`` folder), also LAIONet's text-to-definition filter on the
labels (``curate score`` + ``curate build --min-similarity``): each mode's labels keeping only the
pairs whose caption-to-definition similarity reaches a threshold, at LAIONet's two published
thresholds (0.7 and 0.82) and at the one that gives the best F1 on the dev halves, which is then
applied unchanged to the held-out halves.

    python benchmarks/bench_labels.py [--n 200000] [--encoder openclip:ViT-B-32:/models/vit-b-32.pt]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import polars as pl

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "tests" / "data"


SETS = {  # name -> (set, split); the rules were written looking at the dev halves only
    "A dev": ("A", "dev"), "A heldout": ("A", "heldout"),
    "B dev": ("B", "dev"), "B heldout": ("B", "heldout"),
    "A+B dev": (None, "dev"), "A+B heldout": (None, "heldout"),
}


def quality_table(vocab: pl.DataFrame) -> list[tuple[str, str, float, float, int, float, float]]:
    """(mode, set and split, precision, recall, kept, precision and recall by the other reader)."""
    from curate.match import match_captions
    from curate.match.quality import real_judged, score_labels

    df, judged = real_judged(DATA)
    modes = {
        "curate (default: disambiguation)": dict(mode="curate"),
        "curate --no-disambiguate": dict(mode="curate", disambiguate=False),
        "reference (the study's counting)": dict(mode="reference"),
    }
    rows = []
    for name, kw in modes.items():
        labels = match_captions(df.lazy(), vocab, **kw).collect()["labels"]
        for label, (which, split) in SETS.items():
            sub = judged.filter(pl.col("split") == split)
            if which is not None:
                sub = sub.filter(pl.col("set") == which)
            sub2 = sub.with_columns(pl.col("second").alias("judgement"))
            q = score_labels(labels, sub, rows=sub["row"].unique().to_list())
            q2 = score_labels(labels, sub2, rows=sub2["row"].unique().to_list())
            rows.append((name, label, q.precision, q.recall, q.kept, q2.precision, q2.recall))
    return rows


def filter_table(vocab: pl.DataFrame, spec: str, device: str) -> tuple[list[tuple[str, str, str, float, float, int]], str]:
    """(mode, threshold, set and split, precision, recall, kept) of each mode's labels under
    LAIONet's similarity filter, and the encoder's model name."""
    import numpy as np

    from curate.embed import load_encoder
    from curate.match import match_captions
    from curate.match.quality import keep_scored, real_judged, score_labels
    from curate.similarity import label_scores

    df, judged = real_judged(DATA)
    encoder = load_encoder(spec, device=device)
    modes = {"curate (default) + filter": dict(mode="curate"), "--no-disambiguate + filter": dict(mode="curate", disambiguate=False)}

    def quality(labels: pl.Series, split: str):
        sub = judged.filter(pl.col("split") == split)
        return score_labels(labels, sub, rows=sub["row"].unique().to_list())

    rows = []
    for name, kw in modes.items():
        labels = match_captions(df.lazy(), vocab, **kw).collect()["labels"]
        scores = label_scores(df["caption"], labels, vocab, encoder)

        def f1(t: float, labels: pl.Series = labels, scores: pl.DataFrame = scores) -> float:
            q = quality(keep_scored(labels, scores, t), "dev")
            return 2 * q.precision * q.recall / (q.precision + q.recall) if q.correct_kept else 0.0

        best = max(np.round(np.arange(-1.0, 1.0, 0.01), 2), key=f1)
        for t, why in ((0.7, "0.70 (LAIONet)"), (0.82, "0.82 (LAIONet)"), (float(best), f"{best:.2f} (dev F1)")):
            kept = keep_scored(labels, scores, t)
            for split in ("dev", "heldout"):
                q = quality(kept, split)
                rows.append((name, why, f"A+B {split}", q.precision, q.recall, q.kept))
    return rows, encoder.model_name


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
    ap.add_argument("--encoder", default=None, help="a CLIP text encoder (openclip:MODEL:PATH or runs/NAME): adds LAIONet's filter rows")
    ap.add_argument("--device", default="auto", help="where the encoder runs (auto, cpu, cuda)")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    from bench_match import make_captions

    from curate.vocab import load_vocab

    v1k = load_vocab("imagenet1k")
    print("label quality on real LAION captions judged by hand (imagenet1k)")
    print(f"{'mode':36} {'pairs':12} {'precision':>9} {'recall':>7} {'kept':>5}   other reader: {'precision':>9} {'recall':>7}")
    for name, split, p, r, kept, p2, r2 in quality_table(v1k):
        print(f"{name:36} {split:12} {p:9.3f} {r:7.3f} {kept:5d}   {'':14}{p2:9.3f} {r2:7.3f}")

    if args.encoder:
        rows, model = filter_table(v1k, args.encoder, args.device)
        print(f"\nLAIONet's text-to-definition filter on the labels ({model}: caption vs \"{{name}} which is {{definition}}\")")
        print(f"{'mode':36} {'threshold':16} {'pairs':12} {'precision':>9} {'recall':>7} {'kept':>5}")
        for name, why, split, p, r, kept in rows:
            print(f"{name:36} {why:16} {split:12} {p:9.3f} {r:7.3f} {kept:5d}")

    lemmas = sorted({lem for ls in v1k["lemmas"].to_list() for lem in ls})
    real = pl.read_parquet(DATA / "laion_4000.parquet")["TEXT"].head(1000)
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
