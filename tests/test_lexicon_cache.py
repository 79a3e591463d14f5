"""The on-disk cache of compiled lexicons (curate.match.lexicon_cache): what it loads matches what
compiling gives, a vocabulary with other content gets its own entry, a damaged entry is compiled
again."""

from __future__ import annotations

import polars as pl
import pytest

import curate.match.lexicon_cache as lc
from curate.match import compile_matcher, match_captions

CAPTIONS = pl.Series(["A tiger shark & two geese", "crane at the construction site", "Bow-tie!", "nothing", None], dtype=pl.Utf8)


def _vocab(extra: str = "") -> pl.DataFrame:
    return pl.DataFrame(
        {
            "label": pl.Series([0, 1, 2, 3], dtype=pl.Int32),
            "wnid": ["n01491361", "n01855672", "n02012849", "n02883205"],
            "name": ["tiger shark", "goose", "crane", "bow tie"],
            "lemmas": [["tiger shark"], ["goose"], ["crane"], ["bow tie", "bowtie", *([extra] if extra else [])]],
        }
    )


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CURATE_CACHE", str(tmp_path))
    monkeypatch.delenv("CURATE_NO_LEXICON_CACHE", raising=False)
    monkeypatch.setattr(lc, "_LOADED", {})
    return tmp_path / "lexicon"


def _run(vocab: pl.DataFrame) -> pl.DataFrame:
    return match_captions(pl.LazyFrame({"caption": CAPTIONS}), vocab, spans=True).collect()


def test_a_loaded_lexicon_matches_like_a_compiled_one(cache, monkeypatch):
    vocab = _vocab()
    first = _run(vocab)
    (entry,) = cache.glob("*.pickle")
    monkeypatch.setattr(lc, "_LOADED", {})  # as a new process: only the file is left
    loaded = lc.cached_matcher(vocab)
    assert loaded is not compile_matcher(vocab)
    assert loaded.patterns == compile_matcher(vocab).patterns
    assert _run(vocab).equals(first)
    assert first["labels"].to_list() == [[0, 1], [], [3], [], []]  # the construction crane is vetoed
    # other content, other entry; the first stays
    _run(_vocab("necktie"))
    assert len(list(cache.glob("*.pickle"))) == 2 and entry.exists()


def test_a_damaged_entry_is_compiled_again(cache, monkeypatch):
    vocab = _vocab()
    want = _run(vocab)
    (entry,) = cache.glob("*.pickle")
    entry.write_bytes(b"not a pickle")
    monkeypatch.setattr(lc, "_LOADED", {})
    assert _run(vocab).equals(want)
    assert entry.read_bytes() != b"not a pickle"
