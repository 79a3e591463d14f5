"""Label quality against hand-judged candidates: precision and recall of a ``labels`` column.

A judged set is a table of candidate (row, label) pairs, each judged correct (1) or wrong (0) by a
person reading the caption; pairs judged undecidable are left out. A caption may hold several
mentions of one class: the pair is correct when any of them is.

- precision: of the pairs a matcher keeps that were judged, the share judged correct;
- recall: of the pairs judged correct, the share the matcher keeps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl


@dataclass(frozen=True)
class Quality:
    kept: int  # judged pairs the matcher kept
    correct_kept: int
    correct: int  # pairs judged correct

    @property
    def precision(self) -> float:
        return self.correct_kept / self.kept if self.kept else float("nan")

    @property
    def recall(self) -> float:
        return self.correct_kept / self.correct if self.correct else float("nan")


def judged_pairs(judged: pl.DataFrame) -> pl.DataFrame:
    """(row, label, correct) per judged pair: ``judged`` has columns ``row``, ``label`` and
    ``judgement`` ("1", "0" or "?")."""
    return (
        judged.filter(pl.col("judgement").is_in(["0", "1"]))
        .group_by("row", "label")
        .agg((pl.col("judgement") == "1").any().alias("correct"))
    )


def score_labels(labels: pl.Series, judged: pl.DataFrame, *, rows: list[int] | None = None) -> Quality:
    """Precision and recall of ``labels`` (one list per caption, row i = caption i) against the
    judged pairs, optionally only on ``rows``."""
    pairs = judged_pairs(judged)
    if rows is not None:
        pairs = pairs.filter(pl.col("row").is_in(rows))
    kept = (
        pl.DataFrame({"labels": labels})
        .with_row_index("row")
        .explode("labels")
        .drop_nulls("labels")
        .select(pl.col("row").cast(pl.Int64), pl.col("labels").cast(pl.Int64).alias("label"))
    )
    hit = pairs.with_columns(pl.col("row").cast(pl.Int64), pl.col("label").cast(pl.Int64)).join(
        kept.with_columns(pl.lit(True).alias("kept")), on=["row", "label"], how="left"
    )
    hit = hit.with_columns(pl.col("kept").fill_null(False))
    return Quality(
        kept=int(hit["kept"].sum()),
        correct_kept=int((hit["kept"] & hit["correct"]).sum()),
        correct=int(hit["correct"].sum()),
    )


def keep_scored(labels: pl.Series, scores: pl.DataFrame, threshold: float) -> pl.Series:
    """``labels`` less every (row, label) whose ``similarity`` in ``scores`` (columns ``row``,
    ``label``, ``similarity``) is below ``threshold``, or has none (or NaN): a similarity filter on
    a labels column, as ``curate build --min-similarity`` applies one to a pool. Rows keep their
    order and their labels' order; a null row comes back empty."""
    listed = pl.DataFrame({"labels": labels}).with_row_index("row").with_columns(pl.col("row").cast(pl.Int64))
    kept = (
        listed.explode("labels")
        .drop_nulls("labels")
        .with_row_index("at")
        .join(
            scores.select(pl.col("row").cast(pl.Int64), pl.col("label").cast(labels.dtype.inner), "similarity")
            .unique(["row", "label"], keep="first", maintain_order=True),
            left_on=["row", "labels"], right_on=["row", "label"], how="inner",
        )
        .filter(pl.col("similarity").is_not_nan() & (pl.col("similarity") >= threshold))
        .sort("at")
        .group_by("row", maintain_order=True)
        .agg("labels")
    )
    out = listed.select("row").join(kept, on="row", how="left").sort("row")["labels"]
    return out.fill_null(pl.lit([], dtype=labels.dtype)).alias(labels.name)


def real_judged(data_dir: str | Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The judged real captions of a folder laid out as the project's ``tests/data`` (see its
    README): the captions (``laion_4000.parquet``, column ``caption``) and every judged candidate
    pair, with ``set`` "A" (``laion_1000_judged.tsv``, rows 0-999) or "B"
    (``laion_4000_judged.tsv``, rows 1000-3999), ``split`` (dev/heldout), ``judgement`` and
    ``second`` (another reader's blind judgement: set A's second reader, set B's reader b)."""
    data = Path(data_dir)
    df = pl.read_parquet(data / "laion_4000.parquet").rename({"TEXT": "caption"})
    cols = ("row", "start", "end", "label", "split", "judgement", "second")
    a = pl.read_csv(data / "laion_1000_judged.tsv", separator="\t", infer_schema=False).with_columns(
        pl.col("second_judgement").alias("second"), pl.lit("A").alias("set")
    )
    b = pl.read_csv(data / "laion_4000_judged.tsv", separator="\t", infer_schema=False).with_columns(
        pl.col("reader_b").alias("second"), pl.lit("B").alias("set")
    )
    judged = pl.concat([a.select("set", *cols), b.select("set", *cols)]).with_columns(
        pl.col("row", "start", "end", "label").cast(pl.Int64)
    )
    return df, judged
