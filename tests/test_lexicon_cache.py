"""The on-disk cache of compiled lexicons (curate.match.lexicon_cache): what it loads matches what
compiling gives, a vocabulary with other content gets its own entry, a damaged entry is compiled
again."""

from __future__ import annotations

import polars as pl
import pytest

import curate.match.lexicon_cache as lc
from curate.match import compile_matcher, explain_caption, match_captions

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


def test_explain_reads_the_lexicon_a_match_run_stored(cache, monkeypatch):
    # `curate match --explain` is a one-caption question: it loads the stored lexicon, as a match
    # run does, rather than compiling the vocabulary again (seconds with WordNet)
    import curate.match
    import curate.match.matcher as matcher

    vocab = _vocab()
    assert [r["reason"] for r in explain_caption("goose feather pillow", vocab, disambiguate=False)] == ["kept"]
    _run(vocab)
    monkeypatch.setattr(lc, "_LOADED", {})

    def compile_again(*args, **kwargs):
        raise AssertionError("compiled the lexicon again")

    monkeypatch.setattr(matcher, "compile_matcher", compile_again)
    monkeypatch.setattr(curate.match, "compile_matcher", compile_again)
    rows = explain_caption("A tiger shark by the construction crane; two bow ties", vocab)
    assert [(r["surface"], r["name"], r["wnid"], r["reason"]) for r in rows] == [
        ("tiger shark", "tiger shark", "n01491361", "kept"),
        ("crane", "crane", "n02012849", "veto"),  # the construction crane: the bird's negative rule
        ("bow ties", "bow tie", "n02883205", "kept"),
    ]
    assert rows[0]["start"] == 2 and rows[0]["end"] == 13  # byte offsets in the normalised caption
    assert [r["reason"] for r in explain_caption("goose feather pillow", vocab)] == ["modifier"]  # the pillow is the thing
    assert explain_caption("nothing here", vocab) == []
