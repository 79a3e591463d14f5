"""``--mode reference``: the reference study's counting, checked caption by caption against a
second, line-by-line transcription of its ``calc_class_frequency.py`` written here with nltk's own
``word_tokenize`` and ``WordNetLemmatizer`` (on the offline WordNet reader)."""

from __future__ import annotations

import functools
import random
import re
import sys
from pathlib import Path

import polars as pl
import pytest
from cli_helpers import run_cli
from nltk.stem import WordNetLemmatizer
from nltk.tokenize import word_tokenize

from curate.match import match_captions
from curate.match.reference import (
    LOWER_TO_ASCII,
    compile_reference_matcher,
    reference_labels,
    reference_labels_naive,
    study_template,
)
from curate.vocab import load_vocab

DATA = Path(__file__).parent / "data"

# The study's if/elif chain, typed again from its source (not read from curate/data).
STUDY_CHAIN = [
    ("sorrel", ["plant", "herb", "flower", "leaf"]),
    ("horizontal bar", ["chart", "plot", "graph", "diagram"]),
    ("impala", ["car", "automobile", "vehicle", "chevy"]),
    ("bow", ["tie"]),
    ("ringlet", ["hair"]),
    ("ram", ["car", "truck", "automobile", "vehicle", "dodge", "logo", "computer", "memory", "random access", "chip", "review"]),
    ("crane", ["bird", "fish", "water", "wing", "leg", "zoo"]),
    ("sub", ["sandwich", "bread", "italian", "meatball", "grill", "menu"]),
    ("sidewinder", ["missile", "army", "military", "resort", "park"]),
]


@pytest.fixture(scope="module")
def study():
    """The study's functions, transcribed. nltk's lemmatiser reads ``nltk.corpus.wordnet``; that
    name is pointed at the offline WordNet reader for the module (no download here)."""
    import nltk.corpus

    from curate.wordnet import wordnet

    lemmatizer = WordNetLemmatizer()
    lemmatizer.lemmatize = functools.lru_cache(maxsize=None)(lemmatizer.lemmatize)  # memoised: same answers, faster

    def tokenize(text: str) -> list[str]:
        # word_tokenize runs punkt's sentence splitter first; on letters and spaces it finds no
        # sentence end, so preserve_line=True (no punkt data needed) gives the same tokens.
        return word_tokenize(text, preserve_line=True)

    @functools.cache
    def preprocess_text(text):
        if text is None:
            return []
        tokens = tokenize(re.sub(r"[^a-zA-Z ]", " ", text.lower()).replace("'", ""))
        tokens = [lemmatizer.lemmatize(token) for token in tokens]
        return set(tokens)

    def preprocess_template(template):
        if isinstance(template, str):
            template = template.lower()
            template = re.sub(r"\([^)]*\)", "", template)
            template = [_t.strip() for _t in re.split(" or | / ", template)]
        else:
            template = [t.lower() for t in template]
            template = [re.sub(r"\([^)]*\)", "", t) for t in template]
        neg_template = []
        for word, negs in STUDY_CHAIN:
            if word in template:
                neg_template = negs
                break
        template = [tokenize(re.sub(r"[^a-zA-Z ]", " ", _t).replace("'", "")) for _t in template]
        neg_template = [tokenize(re.sub(r"[^a-zA-Z ]", " ", _t).replace("'", "")) for _t in neg_template]
        template = [[lemmatizer.lemmatize(token) for token in _t] for _t in template]
        neg_template = [[lemmatizer.lemmatize(token) for token in _t] for _t in neg_template]
        return template, neg_template

    def labels(captions: list, vocab: pl.DataFrame) -> list[list[int]]:
        # calc_frequency's loops, with `any(_w in token for _w in _nt)` written as a set
        # intersection and `all(_w in token for _w in _t)` as a subset test (same truth values,
        # all([]) included): 10^6 (caption, class) pairs for the real set.
        templates = []
        for label, ls in zip(vocab["label"].to_list(), vocab["lemmas"].to_list()):
            t, neg_t = preprocess_template(list(ls))
            templates.append((label, [frozenset(_t) for _t in t], [frozenset(_nt) for _nt in neg_t]))
        out = []
        for c in captions:
            token = frozenset(preprocess_text(c))
            out.append(sorted(label for label, t, neg_t in templates if not any(token & _nt for _nt in neg_t) and any(_t <= token for _t in t)))
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(nltk.corpus, "wordnet", wordnet())
        yield {"labels": labels, "template": preprocess_template, "text": preprocess_text}


@pytest.fixture(scope="module")
def study_vocab() -> pl.DataFrame:
    return load_vocab("imagenet1k-study")


@pytest.fixture(scope="module")
def laion() -> list:
    return pl.read_parquet(DATA / "laion_4000.parquet").head(1000)["TEXT"].to_list()


def _ours(captions: list, vocab: pl.DataFrame) -> list[list[int]]:
    return reference_labels(pl.Series(captions, dtype=pl.Utf8), compile_reference_matcher(vocab)).to_list()


@pytest.mark.parametrize("vocab_name", ["imagenet1k-study", "imagenet1k"])
def test_real_laion_captions_get_the_studys_labels(study, laion, vocab_name):
    vocab = load_vocab(vocab_name)
    want = study["labels"](laion, vocab)
    got = _ours(laion, vocab)
    differ = [(c, g, w) for c, g, w in zip(laion, got, want) if g != w]
    assert differ == []
    assert sum(bool(w) for w in want) > 50  # the set is not trivially empty


def _generated(vocab: pl.DataFrame, n: int, seed: int) -> list:
    rng = random.Random(seed)
    lemmas = [lem for ls in vocab["lemmas"].to_list() for lem in ls]
    noise = [
        "the", "a", "of", "cannot", "gonna", "gimme", "lemme", "gotta", "wanna", "Cannot", "GONNA",
        "don't", "tiger's", "it's", "o'clock", "42", "x2", "mp3", "3d", "snake_rail", "t-shirt",
        "bow-tie", "hot-dog", "_underscore_", "a.b", "dogs", "geese", "mice", "churches", "random",
        "access", "bird", "car", "tie", "hair", "leaf", "zoo", "sandwich", "park", "Crane", "RAM",
        "İstanbul", "\u212aelvin", "Straße", "naïve", "\t", "\n", "  ", "(crane)", "ram/sub", "bows",
        "wan na", "can not", "s", "u", "us", "glasses", "cactus", "cacti",
    ]
    out: list = []
    for _ in range(n):
        words = [rng.choice(noise) for _ in range(rng.randint(0, 7))]
        for _ in range(rng.randint(0, 3)):
            lemma = rng.choice(lemmas)
            lemma = rng.choice([lemma, lemma.upper(), lemma.replace(" ", "-"), lemma.replace(" ", "_"), lemma + "s", lemma + "'s", lemma.replace(" ", "")])
            words.insert(rng.randint(0, len(words)), lemma)
        sep = rng.choice([" ", "-", "_", ", ", "'", "1", " 2 "])
        out.append(sep.join(words))
    return out + [None, "", "   ", "cannot", "gonna wanna", "bow tie", "random access ram", "crane bird", "construction crane zoo"]


@pytest.mark.parametrize("vocab_name", ["imagenet1k-study", "imagenet1k"])
def test_generated_captions_get_the_studys_labels(study, vocab_name):
    vocab = load_vocab(vocab_name)
    caps = _generated(vocab, 400, seed=11)
    want = study["labels"](caps, vocab)
    assert _ours(caps, vocab) == want
    assert [reference_labels_naive(c, vocab) for c in caps[:80]] == want[:80]


def test_quirks_of_the_studys_rule(study_vocab):
    in1k = load_vocab("imagenet1k")
    name = dict(zip(study_vocab["name"].to_list(), study_vocab["label"].to_list()))
    ram, crane_machine, crane_bird = name["ram (adult male sheep)"] if "ram (adult male sheep)" in name else name["ram"], name["construction crane"], name["crane bird"]
    got = _ours(["ram", "ram access", "crane", "crane bird", "crane water", "bird crane"], study_vocab)
    assert got[0] == [ram]
    assert ram not in got[1]  # one word of "random access" vetoes
    assert got[2] == [crane_machine]
    assert crane_bird in got[3] and crane_machine not in got[3]  # the study's bird is "crane bird"
    assert got[4] == [] and crane_machine not in got[5]
    # in a vocabulary where both cranes are "crane", both take the bird list: "crane bird" is neither
    assert _ours(["crane", "crane bird"], in1k) == [[134, 517], []]


def test_a_synonym_without_letters_matches_every_caption(study):
    vocab = pl.DataFrame(
        {"label": [0, 1], "lemmas": [["(only a qualifier)"], ["tiger"]]},
        schema={"label": pl.Int32, "lemmas": pl.List(pl.Utf8)},
    )
    caps = ["tiger", "nothing", None]
    assert _ours(caps, vocab) == study["labels"](caps, vocab) == [[0, 1], [0], [0]]


def test_template_as_one_string_splits_on_or_and_slash(study):
    for entry in ["red wolf or maned wolf", "shoji screen / room divider", "military hat (bearskin or shako)", ["red wolf or maned wolf"]]:
        assert study_template(entry) == study["template"](entry)
    assert study_template("red wolf or maned wolf")[0] == [["red", "wolf"], ["maned", "wolf"]]
    assert study_template(["red wolf or maned wolf"])[0] == [["red", "wolf", "or", "maned", "wolf"]]


def test_lower_case_table_covers_every_code_point():
    found = {}
    for cp in range(128, sys.maxunicode + 1):
        low = chr(cp).lower()
        if re.search("[a-zA-Z]", low):
            found[chr(cp)] = re.sub("[^a-zA-Z]", " ", low)
    assert found == LOWER_TO_ASCII


def test_match_captions_reference_mode_policies(study_vocab):
    lf = pl.LazyFrame({"caption": ["goldfish and tench", "goldfish", None]})
    all_ = match_captions(lf, study_vocab, mode="reference").collect()["labels"].to_list()
    drop = match_captions(lf, study_vocab, mode="reference", policy="drop").collect()["labels"].to_list()
    assert all_ == [[0, 1], [1], []]
    assert drop == [[], [1], []]


def test_study_vocabulary_is_the_studys_file():
    vocab = load_vocab("imagenet1k-study")
    assert vocab.height == 1000 and vocab["wnid"].to_list() == sorted(vocab["wnid"].to_list())
    row = vocab.row(2, named=True)
    assert row["name"] == "great white shark"
    assert row["lemmas"] == ["great white shark", "white shark", "man-eater", "man-eating shark", "carcharodon carcharias"]


@pytest.mark.parametrize("name", ["laion400m", "laion2b", "cc12m", "yfcc15m", "metaclip400m", "incaps", "laionet-0.7", "laionet-0.82"])
def test_published_tables_ship_by_name(name):
    from curate.freq import read_reference

    table = read_reference(name)
    assert table.height == 1000
    assert table["name"].to_list() == load_vocab("imagenet1k-study")["name"].to_list()
    assert table["count"].min() >= 0 and table["count"].sum() > 100_000


def test_reference_names_and_files_work_in_freq(tmp_path, capsys):
    from curate.freq import read_reference

    assert read_reference("laion400m")["count"].sum() == 93654164
    own = tmp_path / "mine.tsv"
    own.write_text("tench\t3\ngoldfish\t1\n")
    assert read_reference(own)["count"].to_list() == [3, 1]
    src = tmp_path / "caps.parquet"
    pl.DataFrame({"caption": ["a tench", "goldfish in a bowl", "two goldfish", "nothing"]}).write_parquet(src)
    args = ["freq", str(src), "--vocab", "imagenet1k-study", "--mode", "reference", "--out", str(tmp_path / "f")]
    code, out, err = run_cli([*args, "--reference", "laion400m"], capsys)
    assert code == 0, err
    assert "vs reference" in out
    code, out, err = run_cli([*args, "--reference", "laion401m"], capsys)
    assert code == 2 and "laion400m" in err


def test_metaclip_entry_counts_add_up_per_class(study, tmp_path, capsys):
    import json

    card = {"goldfish": 10, "Goldfish bowl": 5, "tench": 3, "ram": 2, "ram memory": 7, "random access ram": 4, "hammerhead": 6}
    path = tmp_path / "datacard_400m.json"
    path.write_text(json.dumps(card))
    vocab = load_vocab("imagenet1k-study")
    # the study's calc_class_frequency_metaclip: every class adds the count of every entry it matches
    want = [0] * vocab.height
    for entry, labels in zip(card, study["labels"](list(card), vocab)):
        for label in labels:
            want[label] += card[entry]
    code, _, err = run_cli(
        ["freq", str(path), "--entry-counts", "--vocab", "imagenet1k-study", "--mode", "reference", "--out", str(tmp_path / "f")], capsys
    )
    assert code == 0, err
    got = [int(line.split("\t")[1]) for line in (tmp_path / "f" / "classes.tsv").read_text().splitlines()]
    assert got == want
    assert got[1] == 15 and sum(got) == 15 + 3 + 2 + 6  # the ram entries with veto words add nothing
    path.write_text(json.dumps({"goldfish": "many"}))
    code, _, err = run_cli(["freq", str(path), "--entry-counts", "--out", str(tmp_path / "g")], capsys)
    assert code == 2 and "goldfish" in err
