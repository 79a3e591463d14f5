"""Class frequencies: how many captions mention each class, and how skewed that is.

Owns the class table (``label, wnid, name, count, rank, share``), the distribution statistics,
and the frequency files: ``classes.tsv`` (``name<TAB>count`` in class order, no header: the format
of the reference study's tables, so one loads back as a ``--reference``), ``classes.parquet``,
``stats.json`` and ``freq.png``.

Counts are caption counts: a caption that names a class twice counts once for it; a caption naming
two classes counts once for each (under the label policy used when matching).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl

from curate.errors import CurateError
from curate.util import atomic_path, check_replaceable

COUNT_UNIT = "captions (a caption that names a class several times counts once for it)"
CLASS_TABLE_SCHEMA = {
    "label": pl.Int32,
    "wnid": pl.Utf8,
    "name": pl.Utf8,
    "count": pl.Int64,
    "rank": pl.Int32,
    "share": pl.Float64,
}


def class_table(matched: pl.LazyFrame | pl.DataFrame, vocab: pl.DataFrame, *, weight: str | None = None) -> pl.DataFrame:
    """Caption count per vocabulary class: ``label, wnid, name, count, rank, share``.

    ``rank`` 1 is the most frequent class (ties: lower label first); ``share`` is the class's part
    of all class mentions (sums to 1 when anything matched). With ``weight`` (a column) a row counts
    that many times (MetaCLIP's entry -> count tables: a matched entry adds its count).
    """
    lf = matched.lazy()
    if "labels" not in lf.collect_schema().names():
        raise CurateError("the matched table has no 'labels' column; run curate match first")
    w = pl.col(weight).cast(pl.Int64) if weight else pl.lit(1, dtype=pl.Int64)
    counts = (
        lf.select(pl.col("labels").list.unique().alias("label"), w.alias("_w"))
        .explode("label")
        .drop_nulls("label")
        .group_by("label")
        .agg(pl.col("_w").sum().alias("count"))
        .collect(engine="streaming")
        .with_columns(pl.col("label").cast(pl.Int32), pl.col("count").cast(pl.Int64))
    )
    return _class_table(counts, vocab)


def class_table_from_counts(counts: np.ndarray | list[int], vocab: pl.DataFrame) -> pl.DataFrame:
    """:func:`class_table` from caption counts already made, one per label (partial counts of
    shards, added)."""
    arr = np.asarray(counts, dtype=np.int64)
    if arr.shape != (vocab.height,):
        raise CurateError(f"{arr.size} counts for a vocabulary of {vocab.height} classes")
    frame = pl.DataFrame({"label": np.arange(len(arr), dtype=np.int32), "count": arr}).filter(pl.col("count") > 0)
    return _class_table(frame, vocab)


def _class_table(counts: pl.DataFrame, vocab: pl.DataFrame) -> pl.DataFrame:
    base = vocab.select(
        pl.col("label").cast(pl.Int32),
        (pl.col("wnid") if "wnid" in vocab.columns else pl.lit(None)).cast(pl.Utf8).alias("wnid"),
        pl.col("name").cast(pl.Utf8),
    )
    unknown = counts.join(base, on="label", how="anti")
    if unknown.height:
        raise CurateError(f"labels {unknown['label'].head(5).to_list()} are not classes of this vocabulary ({vocab.height} classes)")
    table = base.join(counts, on="label", how="left").with_columns(pl.col("count").fill_null(0)).sort("label")
    total = int(table["count"].sum())
    order = np.lexsort((table["label"].to_numpy(), -table["count"].to_numpy()))
    rank = np.empty(table.height, dtype=np.int32)
    rank[order] = np.arange(1, table.height + 1, dtype=np.int32)
    return table.with_columns(
        pl.Series("rank", rank, dtype=pl.Int32),
        (pl.col("count") / total if total else pl.lit(0.0)).cast(pl.Float64).alias("share"),
    ).select(list(CLASS_TABLE_SCHEMA))


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of the counts (0: balanced, towards 1: everything in one class)."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = len(x), x.sum()
    if n == 0 or total == 0:
        return 0.0
    return float((2 * np.arange(1, n + 1) - n - 1) @ x / (n * total))


def top_share(counts: np.ndarray | list[int], fraction: float = 0.1) -> float | None:
    """Share of the total held by the ``fraction`` most frequent classes (at least one class);
    None when every count is zero."""
    x = np.sort(np.asarray(counts, dtype=np.float64))[::-1]
    total = x.sum()
    if total == 0:
        return None
    return float(x[: max(1, math.ceil(fraction * len(x)))].sum() / total)


def zipf_exponent(counts: np.ndarray) -> float | None:
    """Least-squares slope of log(count) against log(rank) over the non-zero classes, negated
    (count ∝ rank^-s); None with fewer than two non-zero classes."""
    x = np.sort(np.asarray(counts, dtype=np.float64))[::-1]
    x = x[x > 0]
    if len(x) < 2:
        return None
    slope = np.polyfit(np.log(np.arange(1, len(x) + 1)), np.log(x), 1)[0]
    return float(-slope)


def _align(counts: np.ndarray, names: list[str] | None, reference: pl.DataFrame) -> np.ndarray:
    ref_names = reference["name"].to_list()
    ref_counts = reference["count"].to_numpy().astype(np.float64)
    if names is not None and len(set(ref_names)) == len(ref_names):
        lookup = dict(zip(ref_names, ref_counts))
        if all(n in lookup for n in names):
            return np.array([lookup[n] for n in names], dtype=np.float64)
    if len(ref_counts) == len(counts):
        return ref_counts
    raise CurateError(
        f"reference has {len(ref_counts)} classes and names that do not cover this vocabulary's "
        f"{len(counts)}; give a reference for the same classes"
    )


def distribution_stats(
    counts: np.ndarray | list[int] | pl.Series,
    reference: pl.DataFrame | np.ndarray | list[int] | None = None,
    *,
    names: list[str] | None = None,
) -> dict:
    """Headline statistics of a class-count vector (one count per class, zeros included).

    With ``reference`` (a ``name, count`` frame from :func:`read_reference`, aligned by name when
    ``names`` are given and all found, else by position; or a plain count vector), also the rank
    (Spearman) and log-count (Pearson, on log(1+count)) correlations and the KL divergence
    KL(this || reference) of the two class distributions, each smoothed by adding 1 to every count.
    """
    x = np.asarray(counts.to_numpy() if isinstance(counts, pl.Series) else counts, dtype=np.float64)
    if x.ndim != 1 or len(x) == 0:
        raise CurateError("distribution statistics need a non-empty vector of class counts")
    if (x < 0).any() or not np.isfinite(x).all():
        raise CurateError("class counts must be finite and non-negative")
    k = len(x)
    total = float(x.sum())
    nonzero = x[x > 0]
    median = float(np.median(x))
    p = x / total if total else np.zeros(k)
    ent = float(-(p[p > 0] * np.log(p[p > 0])).sum())
    stats: dict = {
        "count_unit": COUNT_UNIT,
        "classes": k,
        "total": int(total),
        "zero_count_classes": int((x == 0).sum()),
        "max": int(x.max()),
        "median": median,
        "min_nonzero": int(nonzero.min()) if len(nonzero) else None,
        "max_min_ratio": float(x.max() / nonzero.min()) if len(nonzero) else None,
        "max_median_ratio": float(x.max() / median) if median > 0 else None,
        "gini": gini(x),
        "normalised_entropy": ent / math.log(k) if k > 1 and total else None,
        "zipf_exponent": zipf_exponent(x),
        "top10pct_share": top_share(x, 0.1),
    }
    if reference is not None:
        from scipy.stats import pearsonr, spearmanr

        if isinstance(reference, pl.DataFrame):
            r = _align(x, names, reference)
        else:
            r = np.asarray(reference, dtype=np.float64)
            if len(r) != k:
                raise CurateError(f"reference has {len(r)} classes, the counts {k}")
        constant = np.ptp(x) == 0 or np.ptp(r) == 0
        stats["reference"] = {
            "total": int(r.sum()),
            "spearman": None if constant else float(spearmanr(x, r).statistic),
            "pearson_log": None if constant else float(pearsonr(np.log1p(x), np.log1p(r)).statistic),
            "kl_divergence": _kl(x + 1, r + 1),
            "smoothing": "add-one on both distributions for KL",
        }
    return stats


def _kl(a: np.ndarray, b: np.ndarray) -> float:
    p, q = a / a.sum(), b / b.sum()
    return float((p * np.log(p / q)).sum())


# The reference study's published ImageNet-1k class-frequency tables, shipped as package data
# (curate/data/freqs_NAME.tsv; where each comes from: curate/data/README.md).
REFERENCE_TABLES = ("laion400m", "laion2b", "cc12m", "yfcc15m", "metaclip400m", "incaps", "laionet-0.7", "laionet-0.82")


def reference_path(spec: str | Path) -> Path:
    """The file of a reference: a name of ``REFERENCE_TABLES`` (packaged table), else a path."""
    name = str(spec).strip().lower()
    if name in REFERENCE_TABLES:
        return Path(__file__).resolve().parent / "data" / f"freqs_{name}.tsv"
    return Path(spec)


def read_reference(path: str | Path) -> pl.DataFrame:
    """A ``name<TAB>count`` file (no header, one class per line, class order) as ``name, count``;
    ``path`` may also name a packaged table (``REFERENCE_TABLES``)."""
    path = reference_path(path)
    if not path.is_file():
        raise CurateError(f"reference file {path} does not exist (or name a packaged table: {', '.join(REFERENCE_TABLES)})")
    names: list[str] = []
    counts: list[int] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n\r")
            if not line.strip():
                continue
            name, sep, count = line.rpartition("\t")
            if not sep or not name:
                raise CurateError(f"{path}, line {lineno}: expected 'name<TAB>count', got {line[:60]!r}")
            try:
                value = int(count)
            except ValueError as e:
                raise CurateError(f"{path}, line {lineno}: count {count[:20]!r} is not an integer") from e
            if value < 0:
                raise CurateError(f"{path}, line {lineno}: negative count {value}")
            names.append(name)
            counts.append(value)
    if not names:
        raise CurateError(f"reference file {path} has no rows")
    return pl.DataFrame({"name": names, "count": counts}, schema={"name": pl.Utf8, "count": pl.Int64})


def classes_tsv(table: pl.DataFrame) -> str:
    """The ``classes.tsv`` text: ``name<TAB>count`` in class order, no header."""
    bad = [n for n in table["name"].to_list() if "\t" in n or "\n" in n]
    if bad:
        raise CurateError(f"class name {bad[0]!r} holds a tab or newline; it cannot be written to classes.tsv")
    return "".join(f"{n}\t{c}\n" for n, c in zip(table.sort("label")["name"].to_list(), table.sort("label")["count"].to_list()))


def plot_freq(table: pl.DataFrame, dest: Path, *, reference: pl.DataFrame | None = None, title: str | None = None) -> None:
    """Sorted class counts on a log scale (the reference's sorted counts beside them when given)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def curve(counts: np.ndarray, label: str, **style) -> None:
        # a log axis has no zero: classes at zero are named in the legend, not drawn
        counts = np.sort(counts)[::-1]
        zeros = int((counts == 0).sum())
        nz = counts[counts > 0]
        note = f"{label} ({int(counts.sum()):,} class mentions" + (f"; {zeros} classes at 0)" if zeros else ")")
        ax.plot(np.arange(1, len(nz) + 1), nz, label=note, **style)

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    curve(table["count"].to_numpy(), "this", lw=1.8)
    if reference is not None:
        curve(reference["count"].to_numpy(), "reference", lw=1.2, ls="--")
    ax.set_yscale("log")
    ax.set_xlabel("class rank")
    ax.set_ylabel("captions per class (log scale)")
    ax.set_title(title or "class frequency, sorted")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    # no timestamps or version strings in the file: same counts, same bytes
    fig.savefig(dest, format="png", metadata={"Software": None})
    plt.close(fig)


FREQ_FILES = ("classes.tsv", "classes.parquet", "stats.json", "freq.png")
FREQ_CARRY = ("shards",)  # partial counts of a sharded run, kept across a rewrite


def check_freq_dest(out: str | Path) -> None:
    """Refuse an ``--out`` that :func:`write_freq` may not replace (a file, or a folder holding
    other files), in one line; commands call it before their work too."""
    check_replaceable(
        out, FREQ_FILES + FREQ_CARRY, name=f"--out {out}", not_folder="",
        foreign="holds other files ({names}); it is replaced as a whole, so give a new folder or one curate freq wrote",
    )


def write_freq(out_dir: str | Path, table: pl.DataFrame, stats: dict, *, reference: pl.DataFrame | None = None) -> Path:
    """Write ``classes.tsv``, ``classes.parquet``, ``stats.json`` and ``freq.png`` as one folder:
    built under a temporary name and swapped in whole, so a kill leaves the old set or the new.

    ``out_dir`` must be new or hold only these files (it is replaced as a unit), plus the
    ``shards/`` of partial counts a sharded run (``--shards``) wrote there, which the new folder keeps.
    """
    out = Path(out_dir)
    check_freq_dest(out)
    text = classes_tsv(table)  # checked before anything is written
    with atomic_path(out, carry=FREQ_CARRY) as tmp:
        tmp.mkdir()
        (tmp / "classes.tsv").write_text(text, encoding="utf-8")
        table.write_parquet(tmp / "classes.parquet")
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        plot_freq(table, tmp / "freq.png", reference=reference)
    return out
