"""curate.match.disambiguate: each rule family on captions written for the test, and label quality
on real LAION captions judged by hand (tests/data, see its README)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from curate.match import compile_matcher, match_captions
from curate.match.disambiguate import DROP_REASONS
from curate.match.lexicon import is_noun, singular_forms
from curate.match.quality import score_labels
from curate.vocab import load_vocab

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def in1k() -> pl.DataFrame:
    return load_vocab("imagenet1k")


@pytest.fixture(scope="module")
def matcher(in1k):
    return compile_matcher(in1k, disambiguate=True)


def _decisions(matcher, in1k, caption: str) -> dict[str, str]:
    c = matcher.candidates(pl.Series([caption], dtype=pl.Utf8))
    names = in1k["name"].to_list()
    return {names[int(lab)]: DROP_REASONS[int(r)] for lab, r in zip(c.label, c.reason)}


def test_part_of_speech_by_use():
    assert is_noun("chairs") and is_noun("magnet") and is_noun("keyboard")
    assert not is_noun("free") and not is_noun("quickly") and not is_noun("buy")
    assert not is_noun("istanbul")  # a proper name heads no compound
    assert "shade" in singular_forms("shades")


# (caption, class display name, reason): one or more captions per rule family, written for the test
RULE_FAMILIES = [
    # head-final compounds: the class word modifies another noun
    ("vintage violin case for sale", "violin", "modifier"),
    ("goldfish lamp for sale", "goldfish", "modifier"),
    ("my banana bread recipe", "banana", "modifier"),
    # ... unless the head is a picture of it, or a kind of thing the class is
    ("banana illustration on white", "banana", "kept"),
    ("old violin photo", "violin", "kept"),
    ("a violin, a bow and sheet music", "violin", "kept"),
    # ... or a picture of it as the web sells one: a file format, a stock-image word, a card
    ("retro goldfish vector on white", "goldfish", "kept"),
    ("cute hedgehog clipart set", "porcupine", "kept"),
    ("flamingo png transparent", "flamingo", "kept"),
    ("mosque silhouette background", "mosque", "kept"),
    ("hand drawn toucan birthday card", "toucan", "kept"),
    # a compound WordNet files beside the class (a sister under its hypernym) is still the thing
    ("blue velvet throw pillow 45x45", "pillow", "kept"),
    # coordination shares the head
    ("cotton and wool blend scarf", "wool", "modifier"),
    # a picture of another thing the class word modifies is not the class
    ("sleepy goldfish bowl photo", "goldfish", "modifier"),
    # a set or pair of the thing is the thing; so is a kindred animal ("sorrel mare")
    ("vintage teapot set", "teapot", "kept"),
    ("a sorrel mare in the paddock", "common sorrel horse", "kept"),
    # a hypernym that completes the class's name is read past: what follows it is the head
    ("rugged cell phone holster with belt clip", "mobile phone", "modifier"),
    ("my old cell phone", "mobile phone", "kept"),
    # ... but a food before another food names the dish
    ("homemade lemon muffins with cream", "lemon", "modifier"),
    ("roasted pineapple shoulder of pork", "pineapple", "modifier"),
    # who a product is for and its size follow a class word without heading it
    ("knitted cardigan womens grey", "cardigan", "kept"),
    ("ceramic vase medium glazed blue", "vase", "kept"),
    # a participle is a verb, not the head of a compound
    ("goldfish swimming in circles", "goldfish", "kept"),
    # a compound WordNet knows names another thing
    ("our new tank top collection", "tank", "veto"),
    ("the ski slope at dawn", "ski", "modifier"),
    # after a brand written in camel case
    ("Seagate FreeAgent Desk drive", "desk", "name"),
    # a capitalised plural animal after a city is a team; after a state, or an artifact, it is not
    ("Detroit Lions vs Green Bay", "lion", "name"),
    ("Boston Bruins celebrate the win", "brown bear", "name"),
    ("Alaska Brown Bears in the river", "brown bear", "kept"),
    ("Venice Gondolas on the canal", "gondola", "kept"),
    # ... unless the class takes several words: then it is what the brand sells
    ("GourmetPro Chocolate Sauce, 500 ml bottle", "chocolate syrup", "kept"),
    # names: honorifics, capitals inside a caption that is not in capitals
    ("interview with Dr. Banana about fruit", "banana", "name"),
    ("new GOLDFISH brand shoes for everyday wear", "goldfish", "name"),
    # a maker's or author's name after "by"
    ("Landscape Painting By Jane Robin", "American robin", "name"),
    ("a robin photographed by a birdwatcher", "American robin", "kept"),
    # another sense: the class sense is not the word's common use and nothing speaks for it
    ("the board of directors met on monday", "dining table", "sense"),
    ("a board laden with meals", "dining table", "kept"),
    # untagged, a single word whose first sense is another kind of thing needs evidence
    # (WordNet's gondola is first a freight car) ...
    ("a gondola ride to the summit of the resort", "gondola", "sense"),
    ("a gondola on the grand canal", "gondola", "kept"),
    # ... but look-alikes (a fungus and the food it is) and multi-word lemmas stand
    ("fresh mushrooms on the grill", "mushroom", "kept"),
    ("a red fox in the snow", "red fox", "kept"),
]


@pytest.mark.parametrize(("caption", "name", "reason"), RULE_FAMILIES)
def test_rule_families(matcher, in1k, caption, name, reason):
    got = _decisions(matcher, in1k, caption)
    assert got.get(name) == reason, got


def test_the_default_mode_disambiguates_and_spans_say_why(in1k):
    lf = pl.LazyFrame({"caption": ["vintage violin case for sale"]})
    plain = match_captions(lf, in1k, disambiguate=False).collect()["labels"].to_list()
    strict = match_captions(lf, in1k).collect()["labels"].to_list()
    violin = in1k.filter(pl.col("name") == "violin")["label"].item()
    assert violin in plain[0] and violin not in strict[0]
    spans = match_captions(lf, in1k, spans=True).collect()["spans"].to_list()[0]
    assert [(x["label"], x["surface"], x["reason"]) for x in spans] == [(violin, "violin", "modifier")]


def test_label_quality_on_real_captions(in1k):
    """Real LAION alt-text (not tuned on for the held-out halves): the cascade must keep most correct
    pairs while removing most wrong ones. Figures as measured when written (P / R): set A dev
    0.81 / 0.92, held-out 0.76 / 0.79; set B (three blind readers) dev 0.75 / 0.75, held-out
    0.68 / 0.71; against 0.38-0.44 precision without it."""
    from curate.match.quality import real_judged

    df, judged = real_judged(DATA)
    base_labels = match_captions(df.lazy(), in1k, disambiguate=False).collect()["labels"]
    labels = match_captions(df.lazy(), in1k).collect()["labels"]
    # every pair judged correct is found before the cascade, but one: the chain class's negative
    # rule ("dog" in the caption) vetoes "a dog (dragging a broken chain)" in the matcher itself
    kept = base_labels.to_list()
    missed = {(r, lab) for r, lab, j in zip(judged["row"], judged["label"], judged["judgement"]) if j == "1" and lab not in kept[r]}
    assert missed == {(1549, in1k.filter(pl.col("name") == "chain")["label"].item())}, missed
    for which, split, min_recall in (("A", "dev", 0.85), ("A", "heldout", 0.75), ("B", "dev", 0.70), ("B", "heldout", 0.65)):
        sub = judged.filter((pl.col("set") == which) & (pl.col("split") == split))
        rows = sub["row"].unique().to_list()
        base = score_labels(base_labels, sub, rows=rows)
        q = score_labels(labels, sub, rows=rows)
        assert q.precision >= base.precision + 0.25, (which, split, q, base)
        assert q.recall >= min_recall, (which, split, q)


def test_parallel_batches_decide_as_one_thread_does(in1k, tmp_path):
    """polars runs match batches on several threads, and the cascade looks WordNet up lazily (under
    one lock): a fresh process's parallel run must label exactly as a single-threaded pass."""
    import os
    import subprocess
    import sys

    src = tmp_path / "real20.parquet"
    df = pl.read_parquet(DATA / "laion_4000.parquet").head(1000).rename({"TEXT": "caption"})
    pl.concat([df] * 20).select("caption").write_parquet(src, row_group_size=1_000)
    code = (
        "import sys, polars as pl; from curate.vocab import load_vocab; from curate.match import match_captions; "
        "out = match_captions(pl.scan_parquet(sys.argv[1]), load_vocab('imagenet1k')).select('labels')"
        ".collect(engine='streaming'); out.write_parquet(sys.argv[2])"
    )
    parallel = tmp_path / "parallel.parquet"
    env = {**os.environ, "CURATE_CACHE": str(tmp_path / "cache")}
    subprocess.run([sys.executable, "-c", code, str(src), str(parallel)], check=True, env=env)
    m = compile_matcher(in1k)
    one = [m.labels(df["caption"]).to_list()] * 20
    assert pl.read_parquet(parallel)["labels"].to_list() == [x for part in one for x in part]


def test_city_words_are_read_once_as_the_reader_reads_them():
    # the team rule's places, computed with the lexicon: names WordNet knows only as places with a
    # city among them, and the plurals WordNet's reader takes for them ("bostons")
    from curate.match.disambiguate import city_words
    from curate.wordnet import wordnet

    wn = wordnet()
    cities = city_words(wn)
    assert {"detroit", "boston", "bostons", "venice"} <= cities
    assert not {"buffalo", "buffaloes", "bengal", "alaska", "wisconsin", "tiger"} & cities
    for word in ("detroit", "bostons", "buffalo", "alaska", "paris"):
        found = wn.synsets(word, "n")
        only_places = bool(found) and all(x.instance_hypernyms() for x in found)
        assert (word in cities) <= only_places
