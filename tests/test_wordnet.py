"""curate's WordNet reader (curate.wordnet.wordnet: nltk's reader with its lemma index read lazily)
answers every question as nltk's own reader, opened the usual way, does."""

from __future__ import annotations

import warnings

import pytest


@pytest.fixture(scope="module")
def readers():
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    from curate.wordnet import find_wordnet_dir, wordnet

    class Stock(WordNetCorpusReader):
        def map_wn(self, version: str = "wordnet"):  # as curate's: no nltk-downloaded WordNet to map
            return None

    import nltk

    ours = wordnet()
    root = str(find_wordnet_dir())  # (another test's cache folder may hold the shim wordnet() read)
    if root not in nltk.data.path:  # nltk's reader opens only folders on its data path
        nltk.data.path.append(root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        stock = Stock(root, None)
    return ours, stock


def _words(root) -> list[str]:
    """Every 40th lemma of each index file, with its regular and irregular inflections, and words
    WordNet lacks."""
    out = ["geese", "mice", "oxen", "firemen", "boxes", "wolves", "buses", "churches", "happier", "biggest",
           "zorblan", "", "tiger", "Tiger", "TIGER", "crane", "playing", "boston"]
    for suffix in ("noun", "verb", "adj", "adv"):
        with open(root / f"index.{suffix}", encoding="utf-8") as f:
            lines = [line for line in f if not line.startswith(" ")]
        for line in lines[::40]:
            lemma = line.split()[0]
            out += [lemma, lemma + "s", lemma + "es", lemma + "er", lemma + "ing"]
    return out


def test_synsets_of_every_sampled_word_match_nltks_own_reader(readers):
    from curate.wordnet import _LazyIndex, find_wordnet_dir, import_nltk, lazy_index_fits

    ours, stock = readers
    if not lazy_index_fits(import_nltk()):
        pytest.skip("this nltk reads its WordNet index itself (the lazy index is off)")
    assert isinstance(ours._lemma_pos_offset_map, _LazyIndex)  # noqa: SLF001 - the index under test
    words = _words(find_wordnet_dir())
    assert len(words) > 15_000
    for pos in (None, "n", "v", "a", "s", "r"):
        mismatched = [w for w in words if [s.name() for s in ours.synsets(w, pos)] != [s.name() for s in stock.synsets(w, pos)]]
        assert not mismatched, (pos, mismatched[:10])


def test_lemmas_names_relations_and_counts_match_nltks_own_reader(readers):
    ours, stock = readers
    for name in ("dog.n.01", "tiger.n.02", "crane.n.05", "happy.a.01", "run.v.01", "glad.s.02", "quickly.r.01"):
        a, b = ours.synset(name), stock.synset(name)
        assert a.name() == b.name() and a.definition() == b.definition()
        assert [x.name() for x in a.hypernyms()] == [x.name() for x in b.hypernyms()]
        assert [x.name() for x in a.hyponyms()] == [x.name() for x in b.hyponyms()]
        assert [(x.name(), x.key()) for x in a.lemmas()] == [(x.name(), x.key()) for x in b.lemmas()]
    assert ours._morphy("wolves", "n") == stock._morphy("wolves", "n") == ["wolf"]  # noqa: SLF001
    for pos in ("n", "v", "a", "r"):
        assert sorted(ours.all_lemma_names(pos)) == sorted(stock.all_lemma_names(pos))
    assert set(ours.satellite_offsets) == set(stock.satellite_offsets)
