"""The similarity stage: LAIONet's text-to-definition filter, kNN distribution matching, and
intra-class diversity.

LAIONet (Shirali & Hardt 2023, code alishiraliGit/eval-on-laion) keeps a web caption for the
class it names when the CLIP text embedding of the caption is close to that of the class's
*definition text*: ``"{name} which is {definition}"``, where ``name`` is the WordNet synset's
name up to ``.n.`` with underscores as spaces (nltk lower-cases the synset's first lemma to make
that name: ``tibetan terrier``) and ``definition`` is the synset's gloss. :func:`definition_text`
writes exactly that text; ``definition_format`` swaps the template (``{name}``, ``{definition}``,
``{lemmas}`` = every lemma joined by `` or ``, as LAIONet's ``lemmas`` query does).

Measuring and deciding are apart: :func:`score_source` (``curate score``) writes one similarity
per matched (caption, class) pair into a Parquet file that records the encoder and the format;
the build then keeps pairs at or above ``--min-similarity`` and/or the ``--top-k-per-class``
most similar (:func:`filter_pool`), so thresholds are re-tuned without re-embedding.

``--profile knn:QUERIES[:K]`` is LAIONet's match-to-ImageNet-Captions: every query text (an
embeddings folder of a source with a ``wnid`` column) keeps the K nearest rows of the pool that
are labelled with its class (K = 1 by default), so the kept classes follow the query set's
frequencies (:func:`knn_select`); the build then keeps those rows as they are (``natural``).

Intra-class diversity (the reference study's "intra-class variation") is the mean pairwise
cosine similarity of a class's embeddings, computed exactly in O(n·d): for unit vectors,
``sum_{i != j} <v_i, v_j> = |sum v|^2 - sum |v_i|^2`` (:func:`intra_class_similarity`).
"""

from __future__ import annotations

import functools
import string
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from curate.errors import CurateError
from curate.wordnet import wnid_synset, wordnet

DEFAULT_DEFINITION_FORMAT = "{name} which is {definition}"
FORMAT_FIELDS = ("name", "definition", "lemmas")
SCORE_SCHEMA = {"uid": pl.Utf8, "label": pl.Int32, "wnid": pl.Utf8, "similarity": pl.Float32}
_META_KEY = b"curate.scores"


# ---------------------------------------------------------------------------------------------
# definition texts


@functools.lru_cache(maxsize=1)
def _wordnet_or_none():
    try:
        return wordnet()
    except CurateError:
        return None


def laionet_name(wnid: str | None, lemmas: list[str] | None) -> str:
    """The synset's name as LAIONet's ``query_name`` writes it: ``synset.name()`` up to ``.n.``,
    underscores as spaces. Without WordNet (or without a wnid) the same rule on the first lemma:
    nltk names a synset after its first lemma, lower-cased (identical on all of ImageNet-1k)."""
    wn = _wordnet_or_none()
    synset = wnid_synset(wn, wnid) if wn is not None else None
    if synset is not None:
        name = synset.name()
        return name[: name.find(".n.")].replace("_", " ")
    if not lemmas:
        return ""
    return str(lemmas[0]).lower().replace("_", " ")


def _definition(wnid: str | None, fallback: str | None) -> str | None:
    wn = _wordnet_or_none()
    synset = wnid_synset(wn, wnid) if wn is not None else None
    if synset is not None:
        return synset.definition()
    return fallback


def check_format(fmt: str) -> str:
    try:
        used = {f for _, f, _, _ in string.Formatter().parse(fmt) if f is not None}
    except ValueError as e:
        raise CurateError(f"--definition-format {fmt!r}: not a format string ({e})") from None
    unknown = sorted(used - set(FORMAT_FIELDS))
    if unknown:
        raise CurateError(f"--definition-format {fmt!r}: unknown field {{{unknown[0]}}} (fields: {', '.join(FORMAT_FIELDS)})")
    return fmt


def definition_text(wnid: str | None, lemmas: list[str] | None, definition: str | None, fmt: str = DEFAULT_DEFINITION_FORMAT) -> str:
    """One class's definition text (LAIONet's ``name_def`` query under the default format)."""
    lemma_list = [str(lem).replace("_", " ") for lem in (lemmas or [])]
    return check_format(fmt).format(
        name=laionet_name(wnid, lemmas),
        definition=_definition(wnid, definition) or "",
        lemmas=" or ".join(lemma_list),
    )


def definition_table(vocab: pl.DataFrame, fmt: str = DEFAULT_DEFINITION_FORMAT) -> pl.DataFrame:
    """``label, wnid, name, text``: every class's definition text."""
    check_format(fmt)
    texts = []
    for row in vocab.iter_rows(named=True):
        if "{definition}" in fmt and not _definition(row["wnid"], row["definition"]):
            raise CurateError(f"class {row['name']!r} ({row['wnid']}) has no definition; --definition-format {fmt!r} needs one")
        texts.append(definition_text(row["wnid"], row["lemmas"], row["definition"], fmt))
    return vocab.select(pl.col("label").cast(pl.Int32), "wnid", "name").with_columns(pl.Series("text", texts, dtype=pl.Utf8))


# ---------------------------------------------------------------------------------------------
# scoring (curate score)


@dataclass
class ScoreResult:
    scores: pl.DataFrame  # SCORE_SCHEMA
    meta: dict
    rows: int  # source rows read
    matched: int  # rows naming at least one class


def score_source(
    source_spec: str,
    vocab_spec: str | None,
    encoder,
    *,
    definition_format: str = DEFAULT_DEFINITION_FORMAT,
    policy: str = "all",
    match_mode: str = "curate",
    preset: str | None = None,
    batch_size: int = 256,
    chunk_rows: int = 65536,
) -> ScoreResult:
    """The text-to-definition cosine similarity of every matched (caption, class) pair."""
    from curate import ui
    from curate.match import match_captions
    from curate.sources import open_source
    from curate.vocab import load_vocab

    source = open_source(source_spec, preset=preset, skip_bad_rows=True)
    vocab_spec = vocab_spec or source.vocab
    vocab = load_vocab(vocab_spec)
    table = definition_table(vocab, definition_format)
    class_emb = encoder.encode(table["text"].to_list(), batch_size=batch_size)
    wnids = vocab["wnid"].to_list()
    n_rows = int(source.lazy.select(pl.len()).collect(engine="streaming").item())
    plan = match_captions(source.lazy.select("uid", "caption"), vocab, policy=policy, mode=match_mode)
    plan = plan.filter(pl.col("labels").list.len() > 0)
    parts: list[pl.DataFrame] = []
    matched = 0
    with ui.make_progress() as progress:
        task = progress.add_task("scoring matched captions", total=None)
        for batch in plan.collect_batches(chunk_size=chunk_rows, maintain_order=True, engine="streaming"):
            matched += batch.height
            emb = encoder.encode(batch["caption"].to_list(), batch_size=batch_size)
            pairs = batch.with_row_index("i").select("i", "uid", "labels").explode("labels")
            lab = pairs["labels"].cast(pl.Int64).to_numpy()
            i = pairs["i"].to_numpy().astype(np.int64)
            sim = np.einsum("nd,nd->n", emb[i], class_emb[lab]).astype(np.float32)
            parts.append(
                pl.DataFrame(
                    {"uid": pairs["uid"], "label": pairs["labels"].cast(pl.Int32), "wnid": [wnids[k] for k in lab], "similarity": sim},
                    schema=SCORE_SCHEMA,
                )
            )
            progress.advance(task, batch.height)
    scores = pl.concat(parts) if parts else pl.DataFrame(schema=SCORE_SCHEMA)
    meta = {
        "source": source_spec,
        "vocab": vocab_spec,
        "encoder": encoder.spec,
        "model": encoder.model_name,
        "definition_format": definition_format,
        "label_policy": policy,
        "match_mode": match_mode,
        "similarity": "cosine of L2-normalised text embeddings (caption vs definition text)",
    }
    return ScoreResult(scores, meta, n_rows, matched)


def label_scores(
    captions: pl.Series,
    labels: pl.Series,
    vocab: pl.DataFrame,
    encoder,
    *,
    definition_format: str = DEFAULT_DEFINITION_FORMAT,
    batch_size: int = 256,
) -> pl.DataFrame:
    """``row, label, similarity`` for every label of every caption (row i = caption i): the
    measure :func:`score_source` writes, for captions and labels held in memory (only the
    captions with a label are embedded)."""
    if len(captions) != len(labels):
        raise CurateError(f"label_scores: {len(captions)} captions but {len(labels)} rows of labels")
    table = definition_table(vocab, definition_format)
    pairs = (
        pl.DataFrame({"labels": labels}).with_row_index("row").explode("labels").drop_nulls("labels")
        .select(pl.col("row").cast(pl.Int64), pl.col("labels").cast(pl.Int32).alias("label"))
    )
    label_at = {int(x): k for k, x in enumerate(table["label"].to_list())}  # a class's row in the table
    unknown = sorted(set(pairs["label"].to_list()) - label_at.keys())
    if unknown:
        raise CurateError(f"label_scores: label {unknown[0]} is no class of the vocabulary ({vocab.height} classes)")
    if pairs.is_empty():
        return pairs.with_columns(pl.lit(None, dtype=pl.Float32).alias("similarity"))
    rows = pairs["row"].unique(maintain_order=True)
    emb = encoder.encode([c or "" for c in captions.gather(rows).to_list()], batch_size=batch_size)
    class_emb = encoder.encode(table["text"].to_list(), batch_size=batch_size)
    position = pairs.join(pl.DataFrame({"row": rows, "i": np.arange(len(rows), dtype=np.int64)}), on="row", how="left", maintain_order="left")
    lab = np.array([label_at[int(x)] for x in pairs["label"].to_list()], dtype=np.int64)
    sim = np.einsum("nd,nd->n", emb[position["i"].to_numpy()], class_emb[lab]).astype(np.float32)
    return pairs.with_columns(pl.Series("similarity", sim, dtype=pl.Float32))


def write_scores(result: ScoreResult, dest: str | Path) -> Path:
    """The scores as Parquet, their provenance in the file's metadata (``curate.scores``)."""
    import json

    from curate.util import atomic_path

    table = result.scores.to_arrow()
    table = table.replace_schema_metadata({_META_KEY: json.dumps(result.meta, sort_keys=True).encode()})
    with atomic_path(dest) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return Path(dest)


def _score_file(path: str | Path, read) -> tuple[object, dict]:
    """``read(path)`` (a Parquet schema or table) of a ``curate score`` file and its provenance,
    each failure one line naming the file."""
    import json

    path = Path(path)
    if not path.is_file():
        raise CurateError(f"--similarity-from {path}: no such file (write one with curate score)")
    try:
        got = read(path)
    except (OSError, pa.ArrowException) as e:
        raise CurateError(f"--similarity-from {path}: not a Parquet file ({str(e).splitlines()[0]})") from None
    schema = got if isinstance(got, pa.Schema) else got.schema
    raw = (schema.metadata or {}).get(_META_KEY)
    missing = [c for c in SCORE_SCHEMA if c not in schema.names]
    if raw is None or missing:
        raise CurateError(f"--similarity-from {path}: not written by curate score (no {'provenance' if raw is None else missing[0]})")
    return got, json.loads(raw)


def check_scores(path: str | Path, vocab_spec: str) -> dict:
    """The provenance of a ``curate score`` file, checked against the build's vocabulary (read
    before any pass over the source: the schema alone)."""
    _, meta = _score_file(path, pq.read_schema)
    if meta.get("vocab") != vocab_spec:
        raise CurateError(f"--similarity-from {path}: scored against vocabulary {meta.get('vocab')!r}, this build uses {vocab_spec!r}")
    return meta


def read_scores(path: str | Path) -> tuple[pl.DataFrame, dict]:
    """A file written by ``curate score``: the scores and their provenance."""
    table, meta = _score_file(path, pq.read_table)
    return pl.from_arrow(table).cast(SCORE_SCHEMA), meta


# ---------------------------------------------------------------------------------------------
# deciding, in the build


@dataclass
class SimilarityReport:
    """What the similarity stage did in one build (for stats.json and the card). ``reasons``: rows
    left out, by stable key (one of :data:`SIMILARITY_REASONS`; curate.manifest.describe_reason
    says each in words)."""

    info: dict = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)


#: The keys of :attr:`SimilarityReport.reasons`.
SIMILARITY_REASONS = ("no_similarity_score", "below_min_similarity", "not_top_k_similar", "no_embedding", "not_knn_nearest")


def _pairs(pool: pl.DataFrame) -> pl.DataFrame:
    """Compact pool (``label`` or ``labels``) -> one row per (row, class)."""
    single = pool.filter(pl.col("label").is_not_null()).drop("labels")
    multi = pool.filter(pl.col("labels").is_not_null()).drop("label").explode("labels").rename({"labels": "label"})
    return pl.concat([single, multi.select(single.columns).cast(single.schema)]).sort("row", "label")


def _compact(pairs: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """One row per (row, class) -> the compact pool layout, in row order."""
    grouped = pairs.group_by("row", maintain_order=True).agg(pl.col("key").first(), pl.col("uid").first(), pl.col("label"))
    n = pl.col("label").list.len()
    return grouped.select(
        "row", "key", "uid",
        pl.when(n == 1).then(pl.col("label").list.first()).cast(pl.Int32).alias("label"),
        pl.when(n > 1).then(pl.col("label")).alias("labels"),
    ).select(columns).sort("row")


def filter_pool(
    pool: pl.DataFrame,
    chosen: pl.DataFrame,
    *,
    scores_path: str,
    vocab_spec: str,
    min_similarity: float | None,
    top_k: int | None,
    report: SimilarityReport,
) -> pl.DataFrame:
    """Keep the pool's (row, class) pairs whose text-to-definition similarity is at least
    ``min_similarity`` and among the ``top_k`` most similar of their class (ties: the row's
    draw key). ``pool`` is the build's compact pool with ``uid``; rows that lose every class leave,
    counted by reason in ``report``."""
    check_scores(scores_path, vocab_spec)
    scores, meta = read_scores(scores_path)
    columns = pool.columns
    pairs = _pairs(pool).join(chosen.select("label", "vocab_label"), on="label", how="left")
    scores = scores.unique(["uid", "label"], keep="first", maintain_order=True).select(
        "uid", pl.col("label").alias("vocab_label"), "similarity"
    )
    pairs = pairs.join(scores, on=["uid", "vocab_label"], how="left")
    rows = pairs["row"].n_unique()

    def step(frame: pl.DataFrame, reason: str) -> pl.DataFrame:
        nonlocal rows
        left = frame["row"].n_unique()
        report.reasons[reason] = rows - left
        rows = left
        return frame

    pairs = step(pairs.filter(pl.col("similarity").is_not_null()), "no_similarity_score")
    if min_similarity is not None:
        pairs = step(pairs.filter(pl.col("similarity") >= min_similarity), "below_min_similarity")
    if top_k is not None:
        pairs = pairs.sort(["label", "similarity", "key", "row"], descending=[False, True, False, False])
        pairs = step(pairs.filter(pl.int_range(pl.len()).over("label") < top_k), "not_top_k_similar")
    report.info.update(
        {
            "scores": scores_path,
            "encoder": meta.get("encoder"),
            "model": meta.get("model"),
            "definition_format": meta.get("definition_format"),
            "min_similarity": min_similarity,
            "top_k_per_class": top_k,
            "kept_pairs": pairs.height,
            "similarity_of_kept": {
                "min": None if pairs.is_empty() else float(pairs["similarity"].min()),
                "mean": None if pairs.is_empty() else float(pairs["similarity"].mean()),
            },
        }
    )
    return _compact(pairs, columns)


# ---------------------------------------------------------------------------------------------
# kNN distribution matching


def parse_knn(arg: str | None) -> tuple[str, int]:
    """``QUERIES`` or ``QUERIES:K`` -> (folder, K)."""
    if not arg:
        raise CurateError("--profile knn needs a query embeddings folder: knn:QUERIES (or knn:QUERIES:K)")
    head, sep, tail = arg.rpartition(":")
    if sep and tail.isdigit():
        if int(tail) < 1:
            raise CurateError(f"--profile knn:{arg}: K must be at least 1")
        return head, int(tail)
    return arg, 1


def split_knn(profile: str) -> str | None:
    """The argument of a ``knn:QUERIES[:K]`` profile ("" for a bare ``knn``), None for any other
    profile. knn is not one of curate.sample's profiles: it chooses rows, not counts, and the build
    then keeps the chosen rows as they are (profile ``natural``)."""
    name, sep, arg = profile.partition(":")
    return (arg if sep else "") if name == "knn" else None


def knn_select(
    pool: pl.DataFrame,
    uids: pl.DataFrame,
    chosen: pl.DataFrame,
    *,
    embeddings: str | None,
    arg: str | None,
    report: SimilarityReport,
    seed: int = 0,
) -> pl.DataFrame:
    """The pool rows (``row, label, key``) nearest to the query texts of their own class."""
    from curate.embed import open_embeddings
    from curate.knn import build_index, search

    queries_dir, k = parse_knn(arg)
    if not embeddings:
        raise CurateError("--profile knn needs --embeddings DIR: the source's caption embeddings (curate embed SOURCE ...)")
    src, qry = open_embeddings(embeddings), open_embeddings(queries_dir)
    if src.meta.get("encoder") != qry.meta.get("encoder") or src.dim != qry.dim:
        raise CurateError(
            f"--profile knn:{queries_dir}: its embeddings come from {qry.meta.get('encoder')!r}, --embeddings {embeddings} from "
            f"{src.meta.get('encoder')!r}; embed both with the same --encoder"
        )
    if "wnid" not in qry.index.columns:
        raise CurateError(f"--profile knn:{queries_dir}: the query embeddings carry no wnid (embed a source with a wnid column, e.g. ImageNet-Captions)")
    by_wnid = dict(zip(chosen["wnid"].to_list(), chosen["label"].to_list()))
    q_labels = qry.index["wnid"].replace_strict(by_wnid, default=None, return_dtype=pl.Int32)
    src_rows = src.index.unique("uid", keep="first", maintain_order=True).select("uid", pl.col("row").alias("emb_row"))
    pool = pool.join(uids, on="row", how="left").join(src_rows, on="uid", how="left")
    report.reasons["no_embedding"] = int(pool["emb_row"].null_count())
    pool = pool.filter(pl.col("emb_row").is_not_null())
    picked: list[np.ndarray] = []
    kinds: dict[str, int] = {}
    hits = 0
    q_label_np = q_labels.fill_null(-1).to_numpy()
    for label, part in pool.group_by("label", maintain_order=True):
        q_rows = np.flatnonzero(q_label_np == label[0])
        if not len(q_rows):
            continue
        part = part.sort("row")
        vindex = build_index(src.take(part["emb_row"].to_numpy()), seed=seed)
        kinds[vindex.kind] = kinds.get(vindex.kind, 0) + 1
        _, ids = search(vindex, qry.take(q_rows), min(k, part.height))
        ids = ids[ids >= 0]
        hits += len(ids)
        picked.append(part["row"].to_numpy()[np.unique(ids)])
    rows = np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)
    out = pool.filter(pl.col("row").is_in(pl.Series(rows).implode())).select("row", "label", "key")
    report.reasons["not_knn_nearest"] = pool.height - out.height
    report.info.update(
        {
            "knn_queries": queries_dir,
            "knn_k": k,
            "encoder": src.meta.get("encoder"),
            "queries": qry.rows,
            "queries_in_selected_classes": int((q_label_np >= 0).sum()),
            "neighbours_found": hits,
            "distinct_rows_kept": out.height,
            "index_per_class": kinds,
        }
    )
    return out


# ---------------------------------------------------------------------------------------------
# intra-class diversity


def intra_class_similarity(vectors: np.ndarray, labels: np.ndarray) -> pl.DataFrame:
    """``label, n, mean_cosine``: the mean cosine similarity over the distinct pairs of each
    class's (unit) vectors; null for a class with fewer than two."""
    labels = np.asarray(labels, dtype=np.int64)
    if not len(labels):
        return pl.DataFrame(schema={"label": pl.Int32, "n": pl.Int64, "mean_cosine": pl.Float64})
    uniq, inv = np.unique(labels, return_inverse=True)
    sums = np.zeros((len(uniq), vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, inv, vectors.astype(np.float64))
    n = np.bincount(inv, minlength=len(uniq)).astype(np.float64)
    norms = np.zeros(len(uniq))
    np.add.at(norms, inv, (np.asarray(vectors, dtype=np.float64) ** 2).sum(axis=1))
    sq = (sums * sums).sum(axis=1) - norms
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 1, sq / (n * (n - 1)), np.nan)
    return pl.DataFrame({"label": uniq.astype(np.int32), "n": n.astype(np.int64), "mean_cosine": mean}).with_columns(
        pl.col("mean_cosine").fill_nan(None)
    )


def manifest_diversity(train: pl.DataFrame, embeddings: str) -> pl.DataFrame:
    """Per class of a manifest's rows: the intra-class similarity of their caption embeddings
    (``label, n, mean_cosine``; rows without an embedding are left out)."""
    from curate.embed import open_embeddings

    emb = open_embeddings(embeddings)
    idx = emb.index.unique("uid", keep="first", maintain_order=True).select("uid", "row")
    rows = train.select("uid", "label").join(idx, on="uid", how="inner")
    return intra_class_similarity(emb.take(rows["row"].to_numpy()), rows["label"].to_numpy())
