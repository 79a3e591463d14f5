"""curate.match.cascade: the compiled cascade gives decide()'s reason code for every mention, on
real captions, generated ones, the tricky and rule-family captions, HTML and non-ASCII text, and
across table growth, restarts and pickling."""

from __future__ import annotations

import importlib.util
import os
import pickle
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from test_disambiguate import RULE_FAMILIES
from test_match import TRICKY

from curate.match import cascade, compile_matcher
from curate.match.disambiguate import DROP_REASONS
from curate.vocab import load_vocab

pytest.importorskip("numba")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def in1k() -> pl.DataFrame:
    return load_vocab("imagenet1k")


@pytest.fixture(scope="module")
def matcher(in1k):
    return compile_matcher(in1k)


def _both(matcher, captions: list[str | None], monkeypatch) -> tuple[np.ndarray, np.ndarray, object]:
    """The candidates' reasons through the compiled cascade and through decide() alone."""
    s = pl.Series(captions, dtype=pl.Utf8)
    monkeypatch.setattr(cascade, "COMPILED", True)
    assert cascade.enabled()
    fast = matcher.candidates(s)
    monkeypatch.setattr(cascade, "COMPILED", False)
    slow = matcher.candidates(s)
    monkeypatch.setattr(cascade, "COMPILED", True)
    assert np.array_equal(fast.row, slow.row) and np.array_equal(fast.start, slow.start)
    assert np.array_equal(fast.sense, slow.sense)
    return fast.reason, slow.reason, fast


def _assert_same(matcher, captions, monkeypatch, *, min_mentions: int = 1) -> None:
    fast, slow, m = _both(matcher, captions, monkeypatch)
    assert len(fast) >= min_mentions
    bad = np.flatnonzero(fast != slow)
    shown = [
        (captions[int(m.row[i])], matcher.patterns[int(m.pattern[i])].strip(), DROP_REASONS[fast[i]], DROP_REASONS[slow[i]])
        for i in bad[:10]
    ]
    assert not len(bad), f"{len(bad)} of {len(fast)} mentions differ (caption, form, compiled, python): {shown}"


def test_real_captions(matcher, monkeypatch):
    captions = pl.read_parquet(ROOT / "tests/data/laion_4000.parquet")["TEXT"].to_list()
    _assert_same(matcher, captions, monkeypatch, min_mentions=300)
    # once its tables hold what these captions need, the compiled loop decides every mention
    state = matcher._cascade[0]
    before = (state.decided, state.left)
    n = len(matcher.candidates(pl.Series(captions)).row)
    assert state.left == before[1] and state.decided >= before[0] + n - 50  # vetoed ones never reach it


def test_generated_captions(matcher, in1k, monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_match", ROOT / "benchmarks/bench_match.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    lemmas = sorted({lem for ls in in1k["lemmas"].to_list() for lem in ls})
    captions = bench.make_captions(20_000, lemmas, seed=7).to_list()
    _assert_same(matcher, captions, monkeypatch, min_mentions=8_000)


def test_tricky_and_rule_family_captions(matcher, monkeypatch):
    captions = [c for c, _ in TRICKY] + [c for c, _, _ in RULE_FAMILIES]
    # the same captions in other cases and with HTML around them
    captions += [c.upper() for c in captions if c] + [c.title() for c in captions if c]
    captions += [f"<b>{c}</b> &amp; more" for c in captions if c]
    _assert_same(matcher, captions, monkeypatch, min_mentions=100)


# what decide's tokeniser sees differently from the plain words: entities, tags, separators, case
EDGE = [
    "Tiger &amp; Shark", "tiger&amp;shark", "tiger &#39;s cub", "tiger&#039;s cub", "tiger &apos; shark",
    "tiger &quot;shark&quot;", "&lt;b&gt;Tiger&lt;/b&gt; shark", "tiger &copy; shark", "tiger &P shark",
    "tiger &#x27;s cub", "tiger & shark", "tiger &", "&tiger", "tiger &#; shark", "tiger &#60;b> shark",
    "<b>Tiger</b> shark", "<i>tiger</i>shark", "tiger <notatag shark", "tiger <b shark> cub", "<!-- tiger -->",
    "tiger < b> shark", "</br>tiger<br/>shark", "tiger<>shark", "tiger's cub", "tiger' s cub",
    "tiger - shark", "tiger-shark", "tiger_shark", "tiger / shark", "tiger. Shark", "tiger: Shark", "tiger\tShark",
    "Dr.Tiger", "Dr. Tiger", "Dr . Tiger", "Mr Tiger Shark", "PlayStation Tiger", "iPhone Case", "TIGER shark",
    "the TIGER SHARK photo", "Tiger Shark Photo", "a Tiger in a Box", "café tiger photo", "tiger café",
    "Ｔｉｇｅｒ photo", "tiger — shark", "straße tiger case", "naïve Tiger Print", "TIGER…", "tiger\u00a0case",
    "tiger\u2019s cub", "3 tigers", "the tigers", "tigers and lions", "tiger and leopard print",
    "wool and silk knit sweater", "leopard gecko photo", "dining chairs", "crane lifting steel", "Socks Mens",
    "Painting by Jane Robin", "Photo BY Tiger Woods", "designed by: Tiger", "by Big Red Tiger Shark", "By-Tiger",
    "a tiger by the lake", "Art by ｂｙ Tiger", "Ｂy Tiger",
]


def test_html_separators_and_case(matcher, monkeypatch):
    _assert_same(matcher, EDGE, monkeypatch, min_mentions=60)


def test_random_captions(matcher, in1k, monkeypatch):
    """Captions drawn from class words, words that modify or head them, names, punctuation and
    markup in every combination (seeded)."""
    rng = random.Random(3)
    lemmas = sorted({lem for ls in in1k["lemmas"].to_list() for lem in ls})
    words = [w for _, n, _ in RULE_FAMILIES for w in n.split()] + (
        "photo case print bag set pair mare puppy shoes bread top the a my of and or with 3 two Dr Mr Miss "
        "PlayStation FreeAgent mens kids playing lifting dining board meals fruit jungle gecko wool"
    ).split()
    seps = [" ", " ", " ", "-", " - ", ", ", ". ", "'", "'s ", " & ", " &amp; ", "<b>", "</b> ", ": ", "_", "/", " | "]
    captions = []
    for _ in range(3_000):
        parts = []
        for _ in range(rng.randint(1, 9)):
            w = rng.choice(lemmas) if rng.random() < 0.3 else rng.choice(words)
            w = rng.choice([w, w, w.title(), w.upper(), w + "s"])
            parts += [w, rng.choice(seps)]
        captions.append("".join(parts))
    _assert_same(matcher, captions, monkeypatch, min_mentions=2_000)


def test_tables_that_start_over_and_pickled_matchers_decide_alike(in1k, monkeypatch):
    """A word table past its size limit starts over (memory stays flat); a matcher's compiled
    tables are per process: a pickled matcher carries none and builds them again."""
    captions = pl.read_parquet(ROOT / "tests/data/laion_4000.parquet").head(1000)["TEXT"].to_list()
    fresh = compile_matcher(in1k)
    fresh._cascade.clear()  # tables from nothing
    monkeypatch.setattr(cascade, "MAX_WORDS", 200)
    monkeypatch.setattr(cascade, "COMPILED", False)
    want = fresh.candidates(pl.Series(captions)).reason
    monkeypatch.setattr(cascade, "COMPILED", True)
    for start in range(0, 1_000, 100):  # batches: the table starts over between them
        fresh.candidates(pl.Series(captions[start : start + 100]))
    assert fresh._cascade and len(fresh._cascade[0].tables.words) < 5_000
    assert np.array_equal(fresh.candidates(pl.Series(captions)).reason, want)
    copy = pickle.loads(pickle.dumps(fresh))
    assert copy._cascade == []
    assert np.array_equal(copy.candidates(pl.Series(captions)).reason, want)


def test_the_python_path_can_be_forced_from_the_environment():
    code = "import curate.match.cascade as c; print(c.COMPILED, c.enabled())"
    env = {**os.environ, "CURATE_CASCADE": "python"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_tables_kept_between_processes_decide_alike_without_filling(in1k, tmp_path, monkeypatch):
    """What one run filled, the next loads from the matcher's store: the same reasons, and no
    table filled again for captions the first run saw."""
    captions = pl.Series(pl.read_parquet(ROOT / "tests/data/laion_4000.parquet").head(1000)["TEXT"].to_list())
    store = tmp_path / "cascade" / "key.pickle"
    first = pickle.loads(pickle.dumps(compile_matcher(in1k)))  # a copy with no tables yet
    first.cascade_store = store
    monkeypatch.setattr(cascade, "COMPILED", True)
    want = first.candidates(captions).reason
    assert first._cascade[0].save() and store.is_file()
    assert not first._cascade[0].save()  # nothing new since: not written again

    second = pickle.loads(pickle.dumps(first))  # as another process gets it: no tables of its own
    assert second._cascade == [] and second.cascade_store == store
    filled = []
    real_fill = cascade.CompiledCascade._fill_locked
    monkeypatch.setattr(cascade.CompiledCascade, "_fill_locked", lambda self, *a: filled.append(1) or real_fill(self, *a))
    assert np.array_equal(second.candidates(captions).reason, want)
    assert second._cascade[0].tables is not first._cascade[0].tables and not filled

    store.write_bytes(b"cut short")  # an unreadable store: filled afresh, same reasons
    third = pickle.loads(pickle.dumps(first))
    assert np.array_equal(third.candidates(captions).reason, want) and filled


def test_character_classes_are_pythons_own():
    # the loop classifies non-ASCII characters by this table: it must say what str's methods say
    from curate.match import cascade as c

    table = c._char_classes()
    for cp in range(1 << 16):
        ch = chr(cp)
        want = (c.C_WORD if ch.isalnum() else 0) | (c.C_UPPER if ch.isupper() else 0)
        want |= c.C_LOWTITLE if ch.islower() or (ch.istitle() and not ch.isupper()) else 0
        want |= (c.C_ALPHA if ch.isalpha() else 0) | (c.C_SPACE if ch.isspace() else 0)
        assert table[cp] == want, hex(cp)
