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
