"""Match once, decide many times: the matched pool of a source.

The pool is the ``labels`` column of every row of a source (in its row order) for one vocabulary,
matching mode and label policy, written once into the cache (``$CURATE_CACHE/pools``) and read
back by every later build of the same (source, vocabulary, mode, policy): a pipeline of twelve
variants matches its captions once. Measuring (matching) is kept apart from deciding (sampling,
caption modes), as data-juicer keeps a score column apart from its threshold.

The key covers the source's plan (files, columns, presets), each file's size and modification
time, the vocabulary's content, mode, policy and the matching code (see
:func:`curate.match.lexicon_cache.code_version`): any change writes a new pool.
``CURATE_NO_POOL=1`` matches in place instead.

A recipe's ``labels_from: FILE`` names labels matched once already, by ``curate match --out FILE``
(or a folder of its shard files): :func:`labels_from_file` reads them in place of the pool, after
checking them uid by uid against the source.
"""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from curate.errors import CurateError
from curate.util import atomic_path, cache_dir, stable_hash

# pools kept (the least recently written go first)
KEEP = 16


def pool_key(source, vocab: pl.DataFrame, *, policy: str, mode: str) -> str:
    from curate.match.lexicon_cache import code_version, vocab_hash

    files = []
    for f in source.files:
        try:
            st = os.stat(f)
            files.append((f, st.st_size, st.st_mtime_ns))
        except OSError:
            files.append((f, None, None))
    return stable_hash(source.lazy.explain(optimized=False), files, vocab_hash(vocab), policy, mode, code_version())


def pool_path(source, vocab: pl.DataFrame, *, policy: str, mode: str) -> Path:
    return cache_dir() / "pools" / f"{pool_key(source, vocab, policy=policy, mode=mode)}.parquet"


def matched_pool(source, vocab: pl.DataFrame, *, policy: str = "all", mode: str = "curate") -> pl.LazyFrame | None:
    """The source's ``labels``, one row per source row in order, from the pool (written now when
    missing); None when pools are switched off or the source cannot be fingerprinted (a URL)."""
    if os.environ.get("CURATE_NO_POOL") or not source.files or any(not Path(f).is_file() for f in source.files):
        return None
    path = pool_path(source, vocab, policy=policy, mode=mode)
    if not path.is_file():
        write_pool(source, vocab, path, policy=policy, mode=mode)
    return pl.scan_parquet(path).select("labels")


def write_pool(source, vocab: pl.DataFrame, dest: Path, *, policy: str, mode: str) -> Path:
    from curate.engine.local import expected_rows
    from curate.match import match_captions
    from curate.match.kernels import compiled_for

    with compiled_for(expected_rows(source.files)), atomic_path(dest) as tmp:
        try:
            match_captions(source.lazy, vocab, policy=policy, mode=mode).select("labels").sink_parquet(tmp)
        except CurateError:
            raise
        except pl.exceptions.PolarsError as e:
            raise CurateError(f"reading source {source.location} failed: {str(e).splitlines()[0]}") from None
    try:
        entries = sorted(dest.parent.glob("*.parquet"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
        for old in entries[KEEP:]:
            old.unlink(missing_ok=True)
    except OSError:
        pass
    return dest


#: Parquet key-value metadata of a ``curate match --out`` file: what its labels index
VOCAB_KEY = "curate.vocab_sha"
#: ... and the vocabulary as the user named it (the default of a later command reading the file)
VOCAB_SPEC_KEY = "curate.vocab"


def labels_metadata(vocab: pl.DataFrame, *, mode: str, policy: str, spec: str | None = None) -> dict[str, str]:
    """The key-value metadata ``curate match --out`` writes beside its labels: the vocabulary's
    content hash (a class index means nothing without it) and, given, the name it was loaded by;
    the mode and the label policy."""
    from curate.match.lexicon_cache import vocab_hash

    named = {VOCAB_SPEC_KEY: str(spec)} if spec is not None else {}
    return {VOCAB_KEY: vocab_hash(vocab), **named, "curate.mode": str(mode), "curate.policy": str(policy)}


def labels_vocab_spec(path: str | Path) -> str | None:
    """The vocabulary a ``curate match --out`` file was matched with, as it was named (None when
    the file does not say)."""
    try:
        return pl.read_parquet_metadata(path).get(VOCAB_SPEC_KEY)
    except (OSError, pl.exceptions.PolarsError) as e:
        raise CurateError(f"reading {path} failed: {str(e).splitlines()[0]}") from None


def check_vocabulary(files: list[Path], vocab: pl.DataFrame, where: str) -> None:
    """Refuse labels matched against another vocabulary (or of unknown origin): their class
    indices would silently name other classes."""
    from curate.match.lexicon_cache import vocab_hash

    want = vocab_hash(vocab)
    for f in files:
        try:
            meta = pl.read_parquet_metadata(f)
        except (OSError, pl.exceptions.PolarsError) as e:
            raise CurateError(f"{where}: reading {f} failed: {str(e).splitlines()[0]}") from None
        got = meta.get(VOCAB_KEY)
        if got is None:
            raise CurateError(f"{where}: {f.name} does not say which vocabulary its class indices belong to; write it with curate match --out")
        if got != want:
            raise CurateError(f"{where}: {f.name} was matched with another vocabulary (its class indices would name other classes); match with this vocabulary")


def labels_from_file(
    source, vocab: pl.DataFrame, spec: str | Path, *, policy: str = "all", bounds: tuple[int, int] | None = None
) -> pl.LazyFrame:
    """The ``labels`` written by ``curate match --out`` (a Parquet file, or the folder of shard files
    of a sharded run) for this source and vocabulary: one row per source row, in order, checked
    uid by uid against the source and by the vocabulary hash the file records (a build never pairs
    labels with the wrong captions, nor class indices with another vocabulary's classes). Used as
    they are; ``policy`` ``drop`` keeps the rows naming one class (what matching with policy
    drop gives), ``first`` needs positions a labels file does not hold. With ``bounds``
    ``(start, stop)`` (one shard's rows) only those rows are read and checked, and returned; the
    row counts are compared from the Parquet footers (the source's as polars counts it)."""
    path = Path(spec)
    where = f"labels_from {spec}"
    if policy == "first":
        raise CurateError(f"{where}: label policy first needs the positions of the mentions; a labels file holds classes only (use all, drop or each)")
    if path.is_dir():
        files = sorted(path.glob("shard-*.parquet")) or sorted(path.glob("*.parquet"))
        if not files:
            raise CurateError(f"{where}: the folder holds no Parquet file")
    elif path.is_file():
        files = [path]
    else:
        raise CurateError(f"{where}: no such file or folder (a file written by curate match --out)")
    lf = pl.scan_parquet(files)
    try:
        schema = lf.collect_schema()
        missing = [c for c in ("uid", "labels") if c not in schema]
        if missing:
            raise CurateError(f"{where}: no column {' or '.join(missing)} (columns: {', '.join(schema.names())}); write it with curate match --out")
        if not (isinstance(schema["labels"], pl.List) and schema["labels"].inner.is_integer()):
            raise CurateError(f"{where}: 'labels' is {schema['labels']}, not a list of class indices")
        # a row count alone reads only the footers
        n_file = int(lf.select(pl.len()).collect().item())
        n_source = int(source.lazy.select(pl.len()).collect(engine="streaming").item())
        if n_file != n_source:
            raise CurateError(f"{where}: {n_file:,} rows, the source {source.location} has {n_source:,}; match this source with curate match --out")
        src = source.lazy.select("uid").with_row_index("row")
        if bounds is not None:
            lf, src = (x.slice(bounds[0], bounds[1] - bounds[0]) for x in (lf, src))
        stats = lf.select(
            pl.col("labels").list.min().min().alias("lo"),
            pl.col("labels").list.max().max().alias("hi"),
        ).collect(engine="streaming").row(0, named=True)
        if stats["lo"] is not None and (stats["lo"] < 0 or stats["hi"] >= vocab.height):
            raise CurateError(f"{where}: class index {stats['hi'] if stats['hi'] >= vocab.height else stats['lo']} is outside the vocabulary's 0..{vocab.height - 1}; match with this vocabulary")
        pairs = pl.concat([src, lf.select(pl.col("uid").alias("file_uid"))], how="horizontal")
        off = pairs.filter(pl.col("uid").ne_missing(pl.col("file_uid"))).head(1).collect(engine="streaming")
    except pl.exceptions.PolarsError as e:
        raise CurateError(f"{where}: reading it failed: {str(e).splitlines()[0]}") from None
    if off.height:
        row = off.row(0, named=True)
        raise CurateError(f"{where}: row {row['row']} has uid {row['file_uid']!r}, the source {source.location} has {row['uid']!r}; match this source with curate match --out")
    check_vocabulary(files, vocab, where)
    labels = pl.col("labels").cast(pl.List(pl.Int32))
    if policy == "drop":
        labels = pl.when(labels.list.len() == 1).then(labels).otherwise(pl.lit([], dtype=pl.List(pl.Int32)))
    return lf.select(labels.alias("labels"))
