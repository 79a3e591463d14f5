"""Compiled lexicons kept on disk: a vocabulary's :class:`~curate.match.matcher.Matcher` (its surface
forms, senses and veto tables, before any automaton is built) pickled into the cache, so the next
process loads it in milliseconds instead of compiling it again (a fifth of a second for
ImageNet-1k, seconds for ImageNet-21k).

The key covers everything compiling reads: the vocabulary's content, the source of the matching
code and the package's data files (any edit recompiles), and WordNet's ``noun.exc`` (path, size,
time). A
matcher that cannot be pickled, or a cache entry that cannot be read back, is simply compiled
again: the cache only ever saves time.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import os
import pickle
from importlib import resources
from pathlib import Path

import polars as pl

from curate.util import cache_dir, stable_hash, write_cache_entry


def vocab_hash(vocab: pl.DataFrame) -> str:
    """A content hash of what matching reads from a vocabulary."""
    cols = [c for c in ("label", "wnid", "name", "lemmas", "negatives") if c in vocab.columns]
    return stable_hash(*(vocab[c].to_list() for c in cols))


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """A hash of the matching code and data that shape a compiled lexicon."""
    h = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for path in [*sorted(here.glob("*.py")), here.parent / "wordnet.py"]:  # the WordNet reader too
        h.update(path.name.encode())
        h.update(path.read_bytes())
    data = Path(str(resources.files("curate.data")))
    for path in sorted(q for q in data.rglob("*") if q.is_file() and "__pycache__" not in q.parts):
        h.update(str(path.relative_to(data)).encode())  # rules, and any table matching may come to read
        h.update(path.read_bytes())
    try:
        from curate.wordnet import _wordnet_source_dir

        exc = _wordnet_source_dir()[0] / "noun.exc"
        st = exc.stat()
        h.update(f"{exc}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    except Exception:  # noqa: BLE001 - no WordNet: compiling will say so, the key need not
        h.update(b"no-wordnet")
    return h.hexdigest()[:16]


def _key(vocab: pl.DataFrame) -> str:
    return hashlib.sha256(f"{vocab_hash(vocab)}:{code_version()}".encode()).hexdigest()[:24]


# entries kept on disk (the least recently written go first): a few vocabularies in use at a time
KEEP = 32
_LOADED: dict[str, object] = {}


def cached_matcher(vocab: pl.DataFrame, *, disambiguate: bool = True):
    """``compile_matcher(vocab, disambiguate=...)``, through the on-disk cache (``$CURATE_CACHE/lexicon``); one
    object per vocabulary within a process, so its automata are built once."""
    from curate.match.matcher import check_vocab, compile_matcher

    check_vocab(vocab)
    if os.environ.get("CURATE_NO_LEXICON_CACHE"):
        return compile_matcher(vocab, disambiguate=disambiguate)
    key = _key(vocab) + ("" if disambiguate else "-candidates")
    if key in _LOADED:
        return _LOADED[key]
    matcher = _load_or_compile(
        vocab, cache_dir() / "lexicon" / f"{key}.pickle", functools.partial(compile_matcher, disambiguate=disambiguate)
    )
    if disambiguate:
        # the compiled cascade's word and sense tables, kept between processes under the same key
        matcher.cascade_store = cache_dir() / "cascade" / f"{key}.pickle"
    if len(_LOADED) >= 8:
        _LOADED.clear()
    _LOADED[key] = matcher
    return matcher


def _load_or_compile(vocab: pl.DataFrame, path: Path, compile_matcher):
    if path.is_file():
        try:
            with open(path, "rb") as f:
                return pickle.load(f)
        except Exception:  # noqa: BLE001 - unreadable (truncated by a full disk, older code): recompile
            pass
    matcher = compile_matcher(vocab)
    blank = copy.copy(matcher)
    if isinstance(getattr(blank, "_automata", None), list):
        blank._automata = []  # built per process (numba's tables, automata), never pickled
    try:
        data = pickle.dumps(blank, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - something in the matcher does not pickle: no cache, same result
        return matcher
    write_cache_entry(path, data, keep=KEEP)  # a read-only cache: still correct, only slower next time
    return matcher
