"""Caption matching, side by side on the same 1,000,000 web-like captions.

Runs, in one process on the same captions:

- curate's matcher (``curate.match.match_captions``: one compiled pass normalises each batch into
  one buffer, a compiled whole-word hash table finds the surface forms, numpy post-processing,
  then the disambiguation cascade on the captions holding a candidate) with imagenet1k and with
  imagenet21k, and the same stage on its numba-free path (numpy normalisation, one Aho–Corasick
  pass per batch, the cascade in Python: what runs without numba);
- the cascade itself: the stage with it compiled (best run, and the first run, which fills its
  word tables), with its Python path (``decide``) on a subset, and without it (candidates only);
- the reference study's method, re-implemented faithfully: per caption, lower-case, tokenise,
  lemmatise every token with nltk's WordNetLemmatizer, then for every class and every synonym check
  that all of the synonym's tokens are present (``curate.match.reference_labels_naive``); run on a
  subset and extrapolated;
- MetaCLIP's way: a ``pyahocorasick`` automaton of the same surface forms, iterated once per
  caption in a Python loop (``automaton.iter``), run on a subset and extrapolated;

then prints captions/s and the ratios, and the peak RSS of a streaming ``scan_parquet ->
match_captions -> sink_parquet`` run at 1M and at 4M captions (flat memory means about equal).

    python benchmarks/bench_match.py [--n 1000000] [--quick]
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

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

FILLER = (
    "the a of and with in on for at by to from new best cheap free shipping sale women men kids "
    "blue red black white green pink grey large small mini vintage style hd wallpaper design home "
    "garden toy beautiful cute funny old modern art print poster photo image stock vector picture "
    "illustration background isolated close up view outdoor indoor summer winter spring autumn day "
    "night city street beach park water wood metal glass paper cotton leather gift set pack size "
    "inch cm 2019 2020 2021 3d 4k high quality premium original custom handmade personalized my our "
    "your this that is are was it its great little big family love happy holiday christmas party"
).split()
DECOR = ["", "", "", "", ",", ".", "!", " -", " |", ":", "'s", "s"]
NON_ASCII = ["café", "naïve", "Ｔｏｋｙｏ", "straße", "—", "“", "”", "…", "é", "ü", "→", "♥"]


def make_captions(n: int, lemmas: list[str], *, seed: int = 0, mention_rate: float = 0.35) -> pl.Series:
    """``n`` deterministic web-like captions: filler words, punctuation, capitals, hashtags, a little
    HTML and non-ASCII, and about ``mention_rate`` of them naming a vocabulary lemma (a few two)."""
    rng = np.random.default_rng(seed)
    filler = np.array(FILLER, dtype=object)
    lengths = rng.integers(3, 14, size=n)
    words = filler[rng.integers(0, len(filler), size=int(lengths.sum()))]
    decor = np.array(DECOR, dtype=object)[rng.integers(0, len(DECOR), size=int(lengths.sum()))]
    words = words + decor
    has = rng.random(n) < mention_rate
    two = rng.random(n) < 0.08
    lem = np.array(lemmas, dtype=object)
    pick = lem[rng.integers(0, len(lem), size=n)]
    pick2 = lem[rng.integers(0, len(lem), size=n)]
    style = rng.integers(0, 10, size=n)
    extra = rng.random(n)
    out = []
    pos = 0
    for i in range(n):
        k = int(lengths[i])
        ws = list(words[pos : pos + k])
        pos += k
        if has[i]:
            m = pick[i]
            s = style[i]
            if s == 0:
                m = m.title()
            elif s == 1:
                m = m.upper()
            elif s == 2:
                m = "#" + m.replace(" ", "")
            elif s == 3:
                m = m.replace(" ", "-")
            elif s == 4:
                m = m + "s"
            ws.insert(int(extra[i] * k), m)
            if two[i]:
                ws.append(pick2[i])
        if extra[i] < 0.03:
            ws.append(NON_ASCII[i % len(NON_ASCII)])
        elif extra[i] > 0.98:
            ws.insert(0, "<b>")
            ws.append("&amp; more</b>")
        text = " ".join(ws)
        out.append(text[:1].upper() + text[1:])
    return pl.Series("caption", out)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_curate(
    captions: pl.Series, vocab: pl.DataFrame, *, repeats: int = 3, compiled: bool = True, disambiguate: bool = True,
    cascade_compiled: bool = True, first: list | None = None,
) -> tuple[float, float, int]:
    """Best wall time of ``repeats`` streaming runs, with its CPU seconds (the machine is shared).

    ``compiled=False`` times the numpy + Aho–Corasick path (what ran before the numba loops, and
    what runs without numba), on the same captions and vocabulary; ``disambiguate=False`` the
    candidates alone, without the cascade; ``cascade_compiled=False`` the cascade's Python path
    (``curate.match.disambiguate.decide`` for every candidate caption). ``first``, when given,
    receives the first run's (wall, CPU) seconds: the cascade fills its word tables then."""
    import curate.match as cm
    import curate.match.cascade as cascade
    import curate.match.kernels as kernels

    kernels.COMPILED = compiled
    cascade.COMPILED = cascade_compiled
    try:
        matcher = cm.compile_matcher(vocab, disambiguate=disambiguate)
        _ = matcher.automaton  # compile outside the timing, as a long run amortises it
        cm.normalised_buffer(captions.head(10))
        if not compiled:
            matcher._find_forms(*cm.normalised_buffer(captions.head(10)))  # builds the automaton
        lf = pl.LazyFrame({"caption": captions})
        best = (float("inf"), 0.0, 0)
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            hits = (
                cm.match_captions(lf, vocab, disambiguate=disambiguate)
                .select(pl.col("labels").list.len().sum())
                .collect(engine="streaming")
                .item()
            )
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            if first is not None and not first:
                first.extend((wall, cpu))
            if wall < best[0]:
                best = (wall, cpu, int(hits))
        return best
    finally:
        kernels.COMPILED = True
        cascade.COMPILED = True


def time_reference(captions: list[str], vocab: pl.DataFrame) -> tuple[float, float, int]:
    from curate.match import reference_labels_naive

    t0, c0 = time.perf_counter(), time.process_time()
    hits = sum(len(reference_labels_naive(c, vocab)) for c in captions)
    return time.perf_counter() - t0, time.process_time() - c0, hits


def time_metaclip(captions: list[str], vocab: pl.DataFrame) -> tuple[float, float, float, int]:
    """MetaCLIP's substring matching: one automaton of the entries, one Python iteration per caption."""
    import ahocorasick

    from curate.match import compile_matcher

    m = compile_matcher(vocab)
    t0 = time.perf_counter()
    automaton = ahocorasick.Automaton()
    for i, p in enumerate(m.patterns):
        if m.pat_sense_ptr[i + 1] > m.pat_sense_ptr[i]:
            automaton.add_word(p, i)
    automaton.make_automaton()
    build = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    hits = 0
    for c in captions:
        text = f" {c.lower()} "
        for _end, _idx in automaton.iter(text):
            hits += 1
    return build, time.perf_counter() - t0, time.process_time() - c0, hits


def demo_quality() -> list[tuple[str, float, float, int, int, int]]:
    """Micro-averaged precision and recall over (caption, class) pairs on the demo corpus, whose
    ground truth is ``wnid`` (and ``wnid2`` for two-class captions)."""
    from curate.match import match_captions
    from curate.sources import open_source
    from curate.vocab import load_vocab

    src, vocab = open_source("demo"), load_vocab("demo")
    wnid_to_label = dict(zip(vocab["wnid"].to_list(), vocab["label"].to_list()))
    out = []
    for mode in ("curate", "reference"):
        df = match_captions(src.lazy, vocab, mode=mode).select("wnid", "wnid2", "labels").collect()
        tp = fp = fn = 0
        for w1, w2, labels in df.iter_rows():
            truth = {wnid_to_label[w] for w in (w1, w2) if w is not None and w in wnid_to_label}
            pred = set(labels)
            tp, fp, fn = tp + len(truth & pred), fp + len(pred - truth), fn + len(truth - pred)
        out.append((mode, tp / max(tp + fp, 1), tp / max(tp + fn, 1), tp, fp, fn))
    return out


STREAM_SCRIPT = """
import resource, sys, time, polars as pl
from curate.vocab import load_vocab
from curate.match import match_captions
src, dst = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
match_captions(pl.scan_parquet(src), load_vocab("imagenet1k")).select("labels").sink_parquet(dst)
dt = time.perf_counter() - t0
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, dt)
"""


def stream_rss(captions: pl.Series, copies: int, tmp: Path) -> tuple[float, float]:
    src = tmp / f"captions_{copies}.parquet"
    table = pa.table({"caption": captions.to_arrow()})
    with pq.ParquetWriter(src, table.schema) as w:
        for _ in range(copies):
            w.write_table(table, row_group_size=100_000)
    out = subprocess.run(
        [sys.executable, "-c", STREAM_SCRIPT, str(src), str(tmp / "out.parquet")],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    return float(out[0]), float(out[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="captions to generate")
    ap.add_argument("--reference-subset", type=int, default=2_000, help="captions for the reference method")
    ap.add_argument("--cascade-subset", type=int, default=100_000, help="captions for the cascade's Python path")
    ap.add_argument("--metaclip-subset", type=int, default=200_000, help="captions for the pyahocorasick loop")
    ap.add_argument("--quick", action="store_true", help="skip imagenet21k, the RSS runs and the demo corpus")
    args = ap.parse_args()

    from curate.vocab import load_vocab

    v1k = load_vocab("imagenet1k")
    lemmas = sorted({lem for ls in v1k["lemmas"].to_list() for lem in ls})
    t0 = time.perf_counter()
    caps = make_captions(args.n, lemmas)
    print(f"{args.n:,} captions, mean {caps.str.len_bytes().mean():.1f} bytes, generated in {time.perf_counter() - t0:.1f}s;"
          f" cores: {os.cpu_count()}, polars threads: {pl.thread_pool_size()}")

    from curate.match.kernels import _kernels

    compiled = _kernels() is not None
    if not compiled:
        print("numba is not installed: both curate rows run the numpy + Aho-Corasick path")
    rows: list[tuple[str, int, float, float, int]] = []
    cold: list[float] = []
    dt, cpu, hits = time_curate(caps, v1k, first=cold)
    rows.append(("curate match, imagenet1k", args.n, dt, cpu, hits))
    cascade_rows = [("with the cascade (compiled), best of 3", args.n, dt, cpu, hits)]
    cascade_rows.append(("  its first run (word tables filled as captions need)", args.n, cold[0], cold[1], hits))
    dt, cpu, hits_py = time_curate(caps.head(args.cascade_subset), v1k, repeats=1, cascade_compiled=False)
    cascade_rows.append(("with the cascade's Python path (decide)", args.cascade_subset, dt, cpu, hits_py))
    dt, cpu, hits_off = time_curate(caps, v1k, disambiguate=False)
    cascade_rows.append(("candidates only (disambiguate=False)", args.n, dt, cpu, hits_off))
    dt, cpu, hits_np = time_curate(caps, v1k, compiled=False, repeats=1)
    rows.append(("  same, numpy + Aho-Corasick path, cascade in Python (no numba)", args.n, dt, cpu, hits_np))
    if not args.quick:
        v21k = load_vocab("imagenet21k")
        t0 = time.perf_counter()
        from curate.match import compile_matcher

        _ = compile_matcher(v21k).automaton
        print(f"imagenet21k matcher compiled in {time.perf_counter() - t0:.1f}s")
        dt, cpu, hits21 = time_curate(caps, v21k)
        rows.append(("curate match, imagenet21k", args.n, dt, cpu, hits21))
        dt, cpu, hits21_np = time_curate(caps, v21k, compiled=False, repeats=1)
        rows.append(("  same, numpy + Aho-Corasick path, cascade in Python (no numba)", args.n, dt, cpu, hits21_np))
        if hits21_np != hits21:
            raise SystemExit(f"the two paths disagree on imagenet21k: {hits21:,} vs {hits21_np:,} labels")
    if hits_np != hits:
        raise SystemExit(f"the two paths disagree on imagenet1k: {hits:,} vs {hits_np:,} labels")

    sub = caps.head(args.metaclip_subset).to_list()
    build, dt, cpu, hits_mc = time_metaclip(sub, v1k)
    rows.append(("MetaCLIP pyahocorasick loop, imagenet1k", len(sub), dt, cpu, hits_mc))

    sub = caps.head(args.reference_subset).to_list()
    dt, cpu, hits_ref = time_reference(sub, v1k)
    rows.append(("reference study (tokenise+lemmatise, per class), imagenet1k", len(sub), dt, cpu, hits_ref))

    base = rows[0][1] / rows[0][2]
    print()
    print(f"{'method':58s} {'captions':>10s} {'wall s':>7s} {'CPU s':>7s} {'captions/s':>11s} {'per CPU-s':>10s} {'slower':>8s}")
    for name, n, dt, cpu, _ in rows:
        rate = n / dt
        print(f"{name:58s} {n:>10,d} {dt:>7.2f} {cpu:>7.2f} {rate:>11,.0f} {n / cpu:>10,.0f} {base / rate:>7.1f}x")
    print("(slower: curate-imagenet1k's captions/s over the row's; subset rows are timed on the first N captions and extrapolate)")
    print()
    print("the disambiguation cascade, in-process, imagenet1k (captions/s of the whole match stage):")
    off = cascade_rows[-1][1] / cascade_rows[-1][2]
    for name, n, dt, cpu, h in cascade_rows:
        rate = n / dt
        print(f"  {name:58s} {n:>10,d} {dt:>7.2f} {cpu:>7.2f} {rate:>11,.0f}  x{rate / off:.2f} of candidates only  ({h:,} labels)")
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())} (other jobs share these cores)")

    if not args.quick:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            r1, t1 = stream_rss(caps, 1, tmp)
            r4, t4 = stream_rss(caps, 4, tmp)
        print()
        print("streaming scan_parquet -> match_captions(imagenet1k) -> sink_parquet, peak RSS of the process:")
        print(f"  {args.n:>10,d} captions: {r1:7.0f} MB  ({args.n / t1:,.0f} captions/s incl. parquet I/O)")
        print(f"  {4 * args.n:>10,d} captions: {r4:7.0f} MB  ({4 * args.n / t4:,.0f} captions/s incl. parquet I/O)")
        print(f"  ratio 4M/1M: {r4 / r1:.2f}")

        print()
        print("demo corpus (ground truth wnid/wnid2), micro-averaged over (caption, class) pairs:")
        for mode, p, r, tp, fp, fn in demo_quality():
            print(f"  mode {mode:9s} precision {p:.4f}  recall {r:.4f}  (tp {tp:,}, fp {fp:,}, fn {fn:,})")


if __name__ == "__main__":
    main()
