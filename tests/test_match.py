"""curate.match: normalisation, surface forms, longest match, negative context, policies, the
reference mode, streaming, and ``curate match`` on real files."""

from __future__ import annotations

import random
import re
import string
import unicodedata

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from curate.cli import app
from curate.errors import CurateError
from curate.match import (
    compile_matcher,
    compile_reference_matcher,
    match_captions,
    normalise,
    reference_labels,
    reference_labels_naive,
    surface_forms,
)
from curate.vocab import load_vocab

runner = CliRunner()


@pytest.fixture(scope="module")
def in1k() -> pl.DataFrame:
    return load_vocab("imagenet1k")


@pytest.fixture(scope="module")
def label_of(in1k):
    names = dict(zip(in1k["name"].to_list(), in1k["label"].to_list()))
    return lambda name: names[name]


# (caption, the display names of the classes it must be labelled with, under policy "all")
TRICKY: list[tuple[str | None, list[str]]] = [
    # case, plurals, irregular plurals
    ("A tiger in the zoo", ["tiger"]),
    ("TIGER", ["tiger"]),
    ("tigers at rest", ["tiger"]),
    ("the tiger's cub", ["tiger"]),
    ("two oxen in a field", ["ox"]),
    ("OX", ["ox"]),
    ("geese on the lake", ["goose"]),
    ("mice everywhere", ["computer mouse"]),
    ("homemade meat loaves", ["meatloaf"]),
    ("Granny Smith apples", ["Granny Smith apple"]),
    ("German Shepherds playing", ["German Shepherd Dog"]),
    ("sea lions", ["sea lion"]),
    ("tee shirts", ["T-shirt"]),
    ("blue jeans", ["jeans"]),
    # whole words only
    ("a box of toys", []),
    ("a computer program", []),
    ("oxford shoes", []),
    ("scattered catalogs", []),
    ("tigerlily", []),
    # hyphen / space / joined spellings
    ("german-shepherd puppy", ["German Shepherd Dog"]),
    ("#germanshepherd", ["German Shepherd Dog"]),
    ("bow tie", ["bow tie"]),
    ("a bow-tie", ["bow tie"]),
    ("BOWTIE", ["bow tie"]),
    ("bow ties for men", ["bow tie"]),
    ("t-shirt", ["T-shirt"]),
    ("tshirt", ["T-shirt"]),
    ("U-boat in the harbour", ["submarine"]),
    ("sealions", ["sea lion"]),
    ("ice-cream cone", ["ice cream"]),
    ("rosehip tea", ["rose hip"]),
    # possessives
    ("potter's wheel", ["potter's wheel"]),
    ("potters wheel", ["potter's wheel"]),
    ("the goldfish&#39;s bowl", ["goldfish"]),
    # longest match wins
    ("a tiger shark off the reef", ["tiger shark"]),
    ("tiger sharks", ["tiger shark"]),
    ("a tiger cat on the sofa", ["tiger cat"]),
    ("a white shark", ["great white shark"]),
    ("hammerhead shark", ["hammerhead shark"]),
    # Unicode width, HTML, whitespace
    ("Ｔｉｇｅｒ", ["tiger"]),
    ("<b>Goldfish</b> for sale", ["goldfish"]),
    ("Café goldfish", ["goldfish"]),
    ("STRAẞE school bus", ["school bus"]),
    ("whitespace   and\ttabs goldfish\n", ["goldfish"]),
    ("school\u00a0bus", ["school bus"]),
    ("school—bus", ["school bus"]),
    ("", []),
    (None, []),
    # negative context: each built-in trap
    ("Tiger Woods wins at golf", []),
    ("Detroit Tigers win the pennant", []),
    ("Mickey Mouse cartoon", []),
    ("pink hair bow", []),
    ("the cast take a bow", []),
    ("a bow and arrow", ["hunting bow"]),
    ("crane lifting steel at a construction site", ["construction crane"]),
    ("a crane wading in the marsh", ["crane bird"]),
    ("origami paper crane", []),
    ("crane", ["crane bird", "construction crane"]),
    ("16GB DDR4 RAM", []),
    ("a ram on the hillside", ["ram (adult male sheep)"]),
    ("italian sub sandwich", []),
    ("a nuclear sub at sea", ["submarine"]),
    ("Chevy Impala 1964", []),
    ("an impala grazing", ["impala (antelope)"]),
    ("sorrel soup recipe", []),
    ("a sorrel mare", ["common sorrel horse"]),
    ("horizontal bar chart", []),
    ("gymnast on the horizontal bar", ["gymnastic horizontal bar"]),
    ("ringlet curls hairstyle", []),
    ("a ringlet on a leaf", ["ringlet butterfly"]),
    ("the AIM-9 Sidewinder", []),
    ("a sidewinder in the sand", ["sidewinder rattlesnake"]),
    ("Drake performing live", []),
    ("a drake mallard", ["duck"]),
    ("Jaguar XF sedan", []),
    ("jaguar in the jungle", ["jaguar"]),
    ("knitted cardigan", ["cardigan"]),
    ("Cardigan Welsh corgi", ["Cardigan Welsh Corgi"]),
    ("hip hop dancer", []),
    ("visit our web site", ["website"]),
    ("construction site", []),
    ("light blue", []),
    ("a lighter", ["lighter"]),
    ("CHEESY PICKUP LINES", []),
    ("goose bumps", []),
    ("Taco Bell drive-thru", []),
    ("punk rocker with a mohawk", []),
    ("harp seal pup", []),
    # several classes
    ("pizza and a cheeseburger", ["cheeseburger", "pizza"]),
    ("a goldfish, a tiger and a school bus", ["goldfish", "tiger", "school bus"]),
]


def test_table_is_large_enough():
    assert len(TRICKY) >= 60


# Where the default mode's disambiguation (curate.match.disambiguate) answers otherwise than the
# candidate stage above, and why: by the judging rules of real captions (tests/data/README.md)
# mice are animals, not computer mice, and rosehip tea is tea. "a lighter" is a known miss: the
# untagged lemma's first WordNet noun sense is the barge, so the igniter needs context.
DISAMBIGUATED: dict[str, list[str]] = {
    "mice everywhere": [],
    "rosehip tea": [],
    "ice-cream cone": [],
    "a lighter": [],
}


@pytest.mark.parametrize(("caption", "expected"), TRICKY, ids=[repr(c)[:40] for c, _ in TRICKY])
def test_tricky_captions(in1k, label_of, caption, expected):
    """The candidate stage: normalisation, surface forms, longest match, negative context."""
    got = compile_matcher(in1k, disambiguate=False).labels(pl.Series([caption], dtype=pl.Utf8)).to_list()[0]
    assert got == sorted(label_of(n) for n in expected)


@pytest.mark.parametrize(("caption", "expected"), TRICKY, ids=[repr(c)[:40] for c, _ in TRICKY])
def test_tricky_captions_in_the_default_mode(in1k, label_of, caption, expected):
    expected = DISAMBIGUATED.get(caption, expected)
    got = compile_matcher(in1k).labels(pl.Series([caption], dtype=pl.Utf8)).to_list()[0]
    assert got == sorted(label_of(n) for n in expected)


def test_batch_equals_one_by_one(in1k):
    # rows laid end to end in one buffer must not leak matches into each other
    caps = [c for c, _ in TRICKY] + ["tiger", "shark", "great white", "shark"]
    m = compile_matcher(in1k)
    batch = m.labels(pl.Series(caps, dtype=pl.Utf8)).to_list()
    single = [m.labels(pl.Series([c], dtype=pl.Utf8)).to_list()[0] for c in caps]
    assert batch == single
    assert batch[-4:] == [[292], [], [], []]


def test_numpy_and_automaton_path_gives_the_same_labels_and_spans(in1k, monkeypatch):
    # without numba the stage runs numpy normalisation and the Aho-Corasick automaton: same output
    import curate.match.kernels as cm

    caps = pl.Series([c for c, _ in TRICKY] * 2 + ["tiger shark and a great white shark", "Hot-Dog", None], dtype=pl.Utf8)
    lf = pl.LazyFrame({"caption": caps})
    runs = []
    for compiled in (True, False):
        monkeypatch.setattr(cm, "COMPILED", compiled)
        for policy in ("all", "drop", "first"):
            runs.append(match_captions(lf, in1k, policy=policy, spans=True).collect())
    assert all(r.height == len(caps) for r in runs)
    for a, b in zip(runs[:3], runs[3:]):
        assert a.equals(b)


# ---------------------------------------------------------------------------------------------
# normalisation and surface forms


def test_normalise_examples():
    got = normalise(pl.Series(["The Tiger&#39;s <b>Bow-Tie</b>!", "ＣＡＴ", None, "Straße café — “dogs”", "a  b,,c", ""])).to_list()
    assert got == [" the tiger s bow tie ", " cat ", " ", " strasse café dogs ", " a b c ", " "]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=string.printable.replace("<", "").replace("&", ""), max_size=40), min_size=1, max_size=8))
def test_ascii_normalisation_matches_an_independent_oracle(texts):
    got = normalise(pl.Series(texts, dtype=pl.Utf8)).to_list()
    want = [" " + " ".join(re.findall(r"[a-z0-9]+", t.lower())) + " " if re.search(r"[a-z0-9]", t.lower()) else " " for t in texts]
    assert got == want


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(max_size=30), min_size=1, max_size=6))
def test_normalisation_is_idempotent_and_padded(texts):
    once = normalise(pl.Series(texts, dtype=pl.Utf8))
    twice = normalise(once)
    assert once.to_list() == twice.to_list()
    for s in once.to_list():
        assert s.startswith(" ") and s.endswith(" ") and "  " not in s.strip(" ") and s.strip(" ") == s[1:-1]



_UNICODE_PIECES = ["Straße", "café", "ＣＡＴ", "e\u0301", "ﬁsh", "—", "“", "”", "…", "→", "♥", "\u00a0", "«", "¿", "·",
                   "naïve", "Ｔｏｋｙｏ", "²", "½", "ǅ", "ς", "ſ", "x", "-", "'s", ", ", "  ", "٣", "日本"]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.sampled_from(_UNICODE_PIECES), max_size=8).map("".join), min_size=1, max_size=6))
def test_unicode_normalisation_matches_an_independent_oracle(texts):
    # NFKC, lower case, the extra case folds, and every character that is not a letter, digit or
    # mark (ASCII or not) separates words
    def oracle(t):
        t = unicodedata.normalize("NFKC", t).lower()
        for k, v in {"ß": "ss", "ς": "σ", "ſ": "s"}.items():
            t = t.replace(k, v)
        words = "".join(c if unicodedata.category(c)[0] in "LNM" else " " for c in t).split()
        return f" {' '.join(words)} " if words else " "

    assert normalise(pl.Series(texts, dtype=pl.Utf8)).to_list() == [oracle(t) for t in texts]

_PIECES = ["Tiger", "cat", "<b>", "</i>", "&amp;", "&#39;", "&bogus;", "&", "<", "\x00", "ＣＡＴ", "Straße", "—", "“", "é",
           "e\u0301", "ﬁ", "  ", "-", "'s", "_", "\t", "\n", "#hash", "2024", "ǅ", "İ", "ς"]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.none(), st.lists(st.sampled_from(_PIECES), max_size=10).map("".join), st.text(max_size=20)),
                min_size=0, max_size=12))
def test_compiled_and_numpy_normalisation_agree(texts):
    # the numba loops (when installed) and the numpy path must lay out identical bytes
    from curate.match.kernels import _kernels
    from curate.match.normalise import _normalised_buffer_numpy, normalised_buffer

    if _kernels() is None:
        pytest.skip("numba is not installed: only the numpy path runs")
    s = pl.Series(texts, dtype=pl.Utf8)
    data, offsets = normalised_buffer(s)
    ref_data, ref_offsets = _normalised_buffer_numpy(s)
    assert len(offsets) == len(texts) + 1
    assert np.array_equal(offsets - offsets[0], ref_offsets - ref_offsets[0])
    assert data[offsets[0] : offsets[-1]].tobytes() == ref_data[ref_offsets[0] : ref_offsets[-1]].tobytes()


_FORMS = ["tiger", "tiger shark", "shark", "great white shark", "white", "white shark", "german shepherd",
          "shepherd", "shepherd dog", "dog", "hot dog", "a b", "ab", "sea lion", "lion", "sea"]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.sampled_from([w for f in _FORMS for w in f.split()] + ["x", "tigers", "seal", "!"]), max_size=9)
                .map(" ".join), min_size=1, max_size=10))
def test_word_table_finds_what_the_automaton_finds(captions):
    # every whole-word occurrence, overlapping and nested, across row boundaries that must not join
    from curate.match.kernels import WordTable, _word_kernels
    from curate.match.matcher import _automaton, _find
    from curate.match.normalise import normalised_buffer

    if _word_kernels() is None:
        pytest.skip("numba is not installed: the automaton is the only matcher")
    patterns = [f" {f} " for f in _FORMS]
    data, offsets = normalised_buffer(pl.Series(captions, dtype=pl.Utf8))
    table = WordTable(patterns)
    assert table.ok
    got = sorted(zip(*(a.tolist() for a in table.find(data, offsets))))
    want = sorted(zip(*(a.tolist() for a in _find(_automaton(patterns), data, offsets))))
    assert got == want



# words of 7-9 and 15-17 bytes: the table hashes 8 bytes at a time, so these sit on chunk edges
_LONG_FORMS = ["bluebird", "bluebirds", "bluebir", "mountainbluebird", "mountainbluebirds", "mountainbluebir",
               "mountain bluebird", "bluebird mountainbluebirds", "cafés", "crème brûlée", "brûlée"]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.sampled_from([w for f in _LONG_FORMS for w in f.split()] + ["blue", "bird", "mountains"]),
                         max_size=7).map(" ".join), min_size=1, max_size=8))
def test_word_table_on_chunk_edges(captions):
    # an exact-size copy of the buffer: the last word's 8-byte reads must stop at its end
    from curate.match.kernels import WordTable, _word_kernels
    from curate.match.matcher import _automaton, _find
    from curate.match.normalise import normalised_buffer

    if _word_kernels() is None:
        pytest.skip("numba is not installed: the automaton is the only matcher")
    patterns = [f" {f} " for f in _LONG_FORMS]
    data, offsets = normalised_buffer(pl.Series(captions, dtype=pl.Utf8))
    data = data[: offsets[-1]].copy()
    table = WordTable(patterns)
    assert table.ok
    got = sorted(zip(*(a.tolist() for a in table.find(data, offsets))))
    want = sorted(zip(*(a.tolist() for a in _find(_automaton(patterns), data, offsets))))
    assert got == want

def test_surface_forms():
    irregular = {"mouse": ["mice"], "loaf": ["loaves"]}
    assert surface_forms("german shepherd", irregular) == ["german shepherd", "german shepherds", "germanshepherd", "germanshepherds"]
    assert "mice" in surface_forms("mouse", irregular)
    assert "meat loaves" in surface_forms("meat loaf", irregular)
    assert "buses" in surface_forms("bus", irregular) and "boxes" in surface_forms("box", irregular)
    assert "puppies" in surface_forms("puppy", irregular) and "toys" in surface_forms("toy", irregular)
    assert "potters wheel" in surface_forms("potter s wheel", irregular)


def test_user_negatives_and_custom_vocab(tmp_path):
    path = tmp_path / "v.csv"
    path.write_text("name,lemmas,negatives\napple,apple|apples tree,iphone|macbook\npear,pear,\n", encoding="utf-8")
    voc = load_vocab(str(path))
    m = compile_matcher(voc)
    got = m.labels(pl.Series(["an apple a day", "Apple iPhone 15", "apple and pear", "MacBook apple logo", "pear"])).to_list()
    assert got == [[0], [], [0, 1], [], [1]]


# ---------------------------------------------------------------------------------------------
# policies, spans, modes


def test_policies(in1k, label_of):
    caps = pl.Series(["a school bus behind a goldfish", "goldfish", "nothing here", None, "crane"])
    lf = pl.LazyFrame({"caption": caps, "uid": ["a", "b", "c", "d", "e"]})
    bus, fish = label_of("school bus"), label_of("goldfish")
    every = match_captions(lf, in1k, policy="all").collect()["labels"].to_list()
    assert every == [sorted([bus, fish]), [fish], [], [], sorted([label_of("crane bird"), label_of("construction crane")])]
    drop = match_captions(lf, in1k, policy="drop").collect()["labels"].to_list()
    assert drop == [[], [fish], [], [], []]
    first = match_captions(lf, in1k, policy="first").collect()["labels"].to_list()
    # first by position; an ambiguous first mention gives the lowest label
    assert first == [[bus], [fish], [], [], [min(label_of("crane bird"), label_of("construction crane"))]]
    out = match_captions(lf, in1k).collect()
    assert out.columns == ["caption", "uid", "labels"] and out.schema["labels"] == pl.List(pl.Int32)


def test_spans_point_into_the_normalised_caption(in1k, label_of):
    caps = pl.Series(["A Tiger-Shark & a TIGER!", "no match"])
    out = match_captions(pl.LazyFrame({"caption": caps}), in1k, spans=True).collect()
    spans = out["spans"].to_list()
    norm = normalise(caps).to_list()[0].strip()
    assert [s["surface"] for s in spans[0]] == ["tiger shark", "tiger"]
    for s in spans[0]:
        assert norm.encode()[s["start"] : s["end"]].decode() == s["surface"]
    assert [s["label"] for s in spans[0]] == [label_of("tiger shark"), label_of("tiger")]
    assert spans[1] == []


def test_reference_mode_equals_the_naive_method(in1k):
    rng = random.Random(7)
    lemmas = [lem for ls in in1k["lemmas"].to_list() for lem in ls]
    words = ["the", "a", "photo", "of", "dogs", "in", "sale", "new", "churches", "geese", "blue", "white", "shark", "great"]
    caps = []
    for _ in range(150):
        ws = [rng.choice(words) for _ in range(rng.randint(1, 8))]
        for _ in range(rng.randint(0, 2)):
            ws.insert(rng.randint(0, len(ws)), rng.choice(lemmas))
        caps.append(" ".join(ws))
    caps += ["shark white great", "German shepherds", "bow-tie", None]
    got = reference_labels(pl.Series(caps, dtype=pl.Utf8), compile_reference_matcher(in1k)).to_list()
    assert got == [reference_labels_naive(c, in1k) for c in caps]
    # order-free and lemmatised, unlike curate mode
    assert got[-4] == [2]
    assert got[-3] == [235]


def test_reference_mode_rejects_positions(in1k):
    lf = pl.LazyFrame({"caption": ["tiger"]})
    with pytest.raises(CurateError, match="first"):
        match_captions(lf, in1k, mode="reference", policy="first")
    with pytest.raises(CurateError, match="spans"):
        match_captions(lf, in1k, mode="reference", spans=True)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"policy": "most"}, "--policy"), ({"mode": "fast"}, "--mode"), ({"caption_col": "text"}, "caption column 'text'")],
)
def test_bad_arguments(in1k, kwargs, message):
    with pytest.raises(CurateError, match=message):
        match_captions(pl.LazyFrame({"caption": ["x"]}), in1k, **kwargs)


def test_bad_vocabulary():
    with pytest.raises(CurateError, match="lemmas"):
        compile_matcher(pl.DataFrame({"label": [0], "name": ["x"]}))
    with pytest.raises(CurateError, match="label"):
        compile_matcher(pl.DataFrame({"label": [3], "lemmas": [["x"]]}))


def test_streams_from_parquet_to_parquet(tmp_path, in1k):
    rng = np.random.default_rng(0)
    pool = np.array(["tiger", "goldfish", "school bus", "nothing", "a photo", "crane", "Tiger Woods golf"], dtype=object)
    caps = [" ".join(pool[rng.integers(0, len(pool), 3)]) for _ in range(30_000)]
    src = tmp_path / "caps.parquet"
    pl.DataFrame({"uid": [str(i) for i in range(len(caps))], "caption": caps}).write_parquet(src, row_group_size=4_000)
    dst = tmp_path / "out.parquet"
    match_captions(pl.scan_parquet(src), in1k).sink_parquet(dst)
    streamed = pl.read_parquet(dst)
    eager = compile_matcher(in1k).labels(pl.Series(caps)).to_list()
    assert streamed["uid"].to_list() == [str(i) for i in range(len(caps))]
    assert streamed["labels"].to_list() == eager


# ---------------------------------------------------------------------------------------------
# the command


def _captions_file(tmp_path):
    path = tmp_path / "caps.parquet"
    pl.DataFrame(
        {
            "uid": ["u1", "u2", "u3", "u4"],
            "caption": ["a tiger shark", "goldfish and a school bus", "nothing", "origami crane"],
            "url": ["http://x/1.jpg", "http://x/2.jpg", "http://x/3.jpg", "http://x/4.jpg"],
        }
    ).write_parquet(path)
    return path


def test_cli_match_writes_parquet(tmp_path, label_of):
    src = _captions_file(tmp_path)
    out = tmp_path / "m.parquet"
    result = runner.invoke(app, ["match", str(src), "--vocab", "imagenet1k", "--out", str(out), "--keep", "caption,url", "--spans"])
    assert result.exit_code == 0, result.output
    df = pl.read_parquet(out)
    assert df.columns == ["uid", "labels", "spans", "caption", "url"]
    assert df["labels"].to_list() == [[label_of("tiger shark")], sorted([label_of("goldfish"), label_of("school bus")]), [], []]
    out2 = tmp_path / "d.parquet"
    result = runner.invoke(app, ["match", str(src), "--vocab", "imagenet1k", "--out", str(out2), "--policy", "drop"])
    assert result.exit_code == 0, result.output
    assert pl.read_parquet(out2)["labels"].to_list()[1] == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--vocab", "imagenet5k"], "unknown vocabulary"),
        (["--vocab", "imagenet1k", "--keep", "caption,nope"], "--keep"),
        (["--vocab", "imagenet1k", "--caption-col", "nope"], "nope"),
        (["--vocab", "imagenet1k", "--policy", "most"], "--policy"),
        (["--vocab", "imagenet1k", "--mode", "fast"], "--mode"),
    ],
)
def test_cli_match_bad_input_exits_2(tmp_path, capsys, args, message):
    from curate.cli import main

    src = _captions_file(tmp_path)
    out = tmp_path / "m.parquet"
    with pytest.raises(SystemExit) as exc:
        main(["match", str(src), "--out", str(out), *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_match_missing_file_exits_2(tmp_path, capsys):
    from curate.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["match", str(tmp_path / "absent.parquet"), "--vocab", "imagenet1k", "--out", str(tmp_path / "o.parquet")])
    assert exc.value.code == 2
    assert "absent.parquet" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# every built-in rule, checked against the vocabulary it is written for


def _rule_cases():
    from curate.match import NEGATIVE_RULES

    return sorted(NEGATIVE_RULES.items())


@pytest.mark.parametrize(("wnid", "rule"), _rule_cases(), ids=[w for w, _ in _rule_cases()])
def test_each_negative_rule_vetoes_only_in_context(in1k, wnid, rule):
    from curate.match import normalise_text

    row = in1k.filter(pl.col("wnid") == wnid)
    assert row.height == 1, f"rule {wnid} names no imagenet1k class"
    label = row["label"].item()
    lemmas = {normalise_text(x) for x in row["lemmas"].item()}
    targets = [normalise_text(x) for x in rule.lemmas if normalise_text(x) in lemmas]
    assert targets, f"rule {wnid}: none of {rule.lemmas} is a lemma of {row['name'].item()}"
    m = compile_matcher(in1k, disambiguate=False)  # the rules alone
    own = set(m.surfaces.filter(pl.col("label") == label)["surface"].to_list())
    context = next(w for w in rule.context if normalise_text(w) not in own)
    lemma = targets[0]
    alone, vetoed, far = m.labels(pl.Series([f"look: {lemma}!", f"{lemma} {context}", f"{context.upper()}, and then the {lemma}"])).to_list()
    assert label in alone
    assert label not in vetoed and label not in far


def test_single_letters_and_function_words_never_match(tmp_path):
    path = tmp_path / "v.csv"
    path.write_text("name,lemmas\nvitamin A,A|vitamin A\nWHO,who|World Health Organization\nox,ox\n", encoding="utf-8")
    m = compile_matcher(load_vocab(str(path)), disambiguate=False)  # the candidate stage
    got = m.labels(pl.Series(["a photo of a dog", "who is it", "Vitamin A tablets", "the World Health Organization", "an ox"])).to_list()
    assert got == [[], [], [0], [1], [2]]


def test_matching_leaves_the_input_series_alone(in1k):
    caps = pl.Series(["a <b>tiger</b> &amp; cub", "Ｔｉｇｅｒ café", "plain tiger"])
    before = caps.to_list()
    assert compile_matcher(in1k).labels(caps).to_list() == [[292], [292], [292]]
    assert caps.to_list() == before
