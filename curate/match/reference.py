"""The reference study's counting (``--mode reference``), caption by caption the same labels.

Wen et al. (NeurIPS 2024) count a class in a caption (``concept_freq_utils/calc_class_frequency.py``
of CVMI-Lab/clip-beyond-tail) as follows; this module re-implements it, batch-wise:

- **caption tokens**: Python's ``str.lower()``, then every character that is not an ASCII letter or
  a space becomes a space (digits, hyphens, underscores and apostrophes included: ``tiger's`` reads
  ``tiger s``), then nltk's ``word_tokenize``, which on letters and spaces is the Treebank word
  tokenizer (``NLTKWordTokenizer``): it splits on whitespace and splits the contractions
  ``cannot gimme gonna gotta lemme wanna`` (``can not`` ...); then every token through nltk's
  ``WordNetLemmatizer`` as a noun. A caption is the *set* of its tokens: order and position play
  no part. A null caption has no tokens.
- **class synonyms** ("templates"): the class's synonym list (the vocabulary's ``lemmas``;
  ``imagenet1k-study`` holds the study's own), each lower-cased, ``(...)`` removed, then tokenised
  and lemmatised the same way. The study splits a template on `` or `` and `` / `` only when it is
  one string (its non-ImageNet datasets); ImageNet's templates are lists and are not split:
  :func:`study_template` does both, the vocabulary path takes the list branch.
- **negative words**: the first entry of the study's if/elif chain (``curate/data/
  study_negatives.json``) whose word is one of the class's synonyms (exact, after lower-casing and
  removing ``(...)``, not stripped) gives the class a veto list, tokenised and lemmatised; *any*
  token of any veto phrase present in the caption vetoes the class (``random access`` vetoes ram
  through ``access`` alone). The chain is keyed by synonym, not class: in a vocabulary where both
  cranes have the synonym ``crane`` (``imagenet1k``), both take the bird's veto list; in the
  study's own synonyms the bird is ``crane bird`` and only the machine does.
- **a match**: no veto token present, and all tokens of at least one synonym present. A synonym
  with no tokens left (``"(x)"``, ``"42"``) has ``all([])`` true: its class matches every caption,
  null ones included, as in the study.

Batches are vectorised: captions become (row, raw token) pairs in polars; each distinct raw token
goes once through the tokenizer and the lemmatiser; joins against the synonym and veto tables give
the labels. :func:`reference_labels_naive` is the same rule written per caption and per class.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from curate.errors import CurateError
from curate.match.matcher import LABELS_DTYPE, Mentions, check_policy, check_vocab, labels_from_mentions

_NOT_LETTER = re.compile(r"[^a-zA-Z ]")
_PARENS = re.compile(r"\([^)]*\)")
_SPLIT = re.compile(" or | / ")
# Python's str.lower() gives ASCII letters for exactly these non-ASCII characters (checked over
# every code point by the tests); the batch path spells them out, the rest lower-cases ASCII only.
LOWER_TO_ASCII = {"\u0130": "i ", "\u212a": "k"}
_NEGATIVES_FILE = Path(__file__).resolve().parent.parent / "data" / "study_negatives.json"


@functools.lru_cache(maxsize=1)
def study_negative_chain() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The study's (synonym, veto words) pairs for ImageNet, in the order of its if/elif chain."""
    data = json.loads(_NEGATIVES_FILE.read_text(encoding="utf-8"))
    return tuple((e["when"], tuple(e["veto"])) for e in data["chain"])


@functools.lru_cache(maxsize=1)
def _wordnet():
    from curate.wordnet import wordnet

    return wordnet()


@functools.lru_cache(maxsize=1)
def _tokenizer():
    from curate.wordnet import import_nltk

    import_nltk()  # without scipy.stats
    from nltk.tokenize import NLTKWordTokenizer

    return NLTKWordTokenizer()


@functools.lru_cache(maxsize=200_000)
def lemmatise(token: str) -> str:
    """nltk's ``WordNetLemmatizer().lemmatize(token)`` (noun), on the offline WordNet reader.

    nltk's class reads the global ``nltk.corpus.wordnet``, which is not installed offline; this is
    its body (the shortest of ``_morphy``'s lemmas, else the token) on :func:`curate.wordnet.wordnet`.
    """
    lemmas = _wordnet()._morphy(token, "n")  # noqa: SLF001 - what WordNetLemmatizer itself calls
    return min(lemmas, key=len) if lemmas else token


def study_text(text: str) -> str:
    """The study's text before tokenising: lower-cased, every non-letter a space."""
    return _NOT_LETTER.sub(" ", text.lower())


def reference_tokens(text: str | None) -> list[str]:
    """The study's tokens of one text, in order: Treebank-tokenised and lemmatised."""
    if text is None:
        return []
    return [lemmatise(t) for t in _tokenizer().tokenize(study_text(text))]


@functools.lru_cache(maxsize=1)
def _contractions() -> tuple[re.Pattern, ...]:
    tok = _tokenizer()
    return tuple(tok.CONTRACTIONS2) + tuple(tok.CONTRACTIONS3)


@functools.lru_cache(maxsize=500_000)
def _word_lemmas(word: str) -> tuple[str, ...]:
    """Lemmas of one run of lower-case letters (a contraction gives two).

    On a run of letters between spaces, the only Treebank rules that can fire are its contraction
    patterns (every other rule needs a quote, a dash, a bracket or punctuation), so the tokenizer
    (slow: ~1 ms a call) runs only on the words one of those patterns finds.
    """
    padded = f" {word} "
    tokens = _tokenizer().tokenize(word) if any(p.search(padded) for p in _contractions()) else [word]
    return tuple(lemmatise(t) for t in tokens)


def _phrase_tokens(text: str) -> list[str]:
    """:func:`reference_tokens` word by word (the same tokens: words never interact)."""
    return [t for word in study_text(text).split() for t in _word_lemmas(word)]


def study_template(entry: str | Sequence[str]) -> tuple[list[list[str]], list[list[str]]]:
    """One class's synonyms and veto phrases as the study prepares them: token lists, lemmatised."""
    if isinstance(entry, str):
        phrases = [p.strip() for p in _SPLIT.split(_PARENS.sub("", entry.lower()))]
    else:
        phrases = [_PARENS.sub("", p.lower()) for p in entry]
    veto: tuple[str, ...] = ()
    for when, words in study_negative_chain():
        if when in phrases:
            veto = words
            break
    return [_phrase_tokens(p) for p in phrases], [_phrase_tokens(w) for w in veto]


@functools.lru_cache(maxsize=100_000)
def _template_cached(lemmas: tuple[str, ...]) -> tuple[list[list[str]], list[list[str]]]:
    return study_template(list(lemmas))


@dataclass
class ReferenceMatcher:
    n_classes: int
    synonyms: pl.DataFrame  # syn, label, token, n_tokens: one row per distinct token of a synonym
    vetoes: pl.DataFrame  # label, token
    match_all: np.ndarray  # int32 labels with a synonym of no tokens: they match every caption


@functools.lru_cache(maxsize=4)
def _reference_matcher_cached(key: tuple) -> ReferenceMatcher:
    labels, lemma_lists = key
    rows: dict[str, list] = {"syn": [], "label": [], "token": [], "n_tokens": []}
    vetoes: dict[str, list] = {"label": [], "token": []}
    match_all = []
    syn = 0
    for label, lemmas in zip(labels, lemma_lists):
        synonyms, veto = study_template(list(lemmas))
        for tokens in synonyms:
            toks = sorted(set(tokens))
            if not toks:
                match_all.append(label)
            for t in toks:
                rows["syn"].append(syn)
                rows["label"].append(label)
                rows["token"].append(t)
                rows["n_tokens"].append(len(toks))
            syn += 1
        for t in sorted({t for phrase in veto for t in phrase}):
            vetoes["label"].append(label)
            vetoes["token"].append(t)
    return ReferenceMatcher(
        n_classes=len(labels),
        synonyms=pl.DataFrame(rows, schema={"syn": pl.Int64, "label": pl.Int32, "token": pl.Utf8, "n_tokens": pl.UInt32}),
        vetoes=pl.DataFrame(vetoes, schema={"label": pl.Int32, "token": pl.Utf8}),
        match_all=np.array(sorted(set(match_all)), dtype=np.int32),
    )


def compile_reference_matcher(vocab: pl.DataFrame) -> ReferenceMatcher:
    check_vocab(vocab)
    key = (tuple(vocab["label"].to_list()), tuple(tuple(ls or ()) for ls in vocab["lemmas"].to_list()))
    return _reference_matcher_cached(key)


def caption_lemmas(captions: pl.Series) -> pl.DataFrame:
    """Distinct (row, lemma) pairs of a batch of captions under the study's tokenising."""
    words = (
        pl.DataFrame({"c": captions.cast(pl.Utf8)})
        .with_row_index("row")
        .select(
            "row",
            pl.col("c")
            .str.replace_many(list(LOWER_TO_ASCII), list(LOWER_TO_ASCII.values()))
            .str.extract_all("[A-Za-z]+")
            .alias("word"),
        )
        .explode("word")
        .drop_nulls("word")
        .with_columns(pl.col("word").str.to_lowercase())  # ASCII letters only here: same as str.lower()
        .unique()
    )
    distinct = words["word"].unique().to_list()
    lemma_map = pl.DataFrame(
        {"word": distinct, "token": [list(_word_lemmas(w)) for w in distinct]},
        schema={"word": pl.Utf8, "token": pl.List(pl.Utf8)},
    ).explode("token")
    return words.join(lemma_map, on="word").select(pl.col("row").cast(pl.Int64), "token").unique()


def reference_labels(captions: pl.Series, ref: ReferenceMatcher, *, policy: str = "all") -> pl.Series:
    """Labels by the study's rule (module docstring), for a batch of captions."""
    check_policy(policy)
    if policy == "first":
        raise CurateError("--policy first needs positions; --mode reference has none (use all or drop)")
    n = len(captions)
    if n == 0:
        return pl.Series("labels", [], dtype=LABELS_DTYPE)
    pairs = caption_lemmas(captions)
    hit = (
        pairs.join(ref.synonyms, on="token")
        .group_by("row", "syn", "label", "n_tokens")
        .len()
        .filter(pl.col("len") == pl.col("n_tokens"))
        .select("row", "label")
    )
    if len(ref.match_all):
        every = pl.DataFrame({"row": np.repeat(np.arange(n, dtype=np.int64), len(ref.match_all)), "label": np.tile(ref.match_all, n)})
        hit = pl.concat([hit, every])
    hit = hit.unique()
    if ref.vetoes.height:
        vetoed = pairs.join(ref.vetoes, on="token").select("row", "label").unique()
        hit = hit.join(vetoed, on=["row", "label"], how="anti")
    m = Mentions(
        row=hit["row"].to_numpy().astype(np.int64),
        label=hit["label"].to_numpy().astype(np.int32),
        start=np.zeros(hit.height, dtype=np.int64),
        end=np.zeros(hit.height, dtype=np.int64),
        pattern=np.zeros(hit.height, dtype=np.int64),
    )
    return labels_from_mentions(m, n, ref.n_classes, policy=policy)


def reference_labels_naive(caption: str | None, vocab: pl.DataFrame) -> list[int]:
    """The study's rule written the slow, obvious way (per caption, per class, per synonym): the
    check for :func:`reference_labels` and the baseline of the benchmark."""
    present = set(reference_tokens(caption))
    out = []
    for label, lemmas in zip(vocab["label"].to_list(), vocab["lemmas"].to_list()):
        synonyms, veto = _template_cached(tuple(lemmas or ()))
        if any(any(w in present for w in phrase) for phrase in veto):
            continue
        if any(all(w in present for w in phrase) for phrase in synonyms):
            out.append(label)
    return sorted(out)


def read_entry_counts(path: str | Path) -> pl.DataFrame:
    """A MetaCLIP entry -> count table (``datacard_400m.json``: a JSON object of metadata entry to
    the number of pairs it matched) as ``caption, count`` rows: the input of the study's
    ``calc_class_frequency_metaclip.py``, which matches each entry as a caption and adds its count
    to every class it names."""
    path = Path(path)
    if not path.is_file():
        raise CurateError(f"entry-count file {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CurateError(f"{path}: not a JSON object of entry -> count ({e})") from None
    if not isinstance(data, dict):
        raise CurateError(f"{path}: expected a JSON object of entry -> count, got {type(data).__name__}")
    bad = next(((k, v) for k, v in data.items() if not isinstance(v, int) or isinstance(v, bool) or v < 0), None)
    if bad is not None:
        raise CurateError(f"{path}: entry {bad[0]!r} has count {bad[1]!r}; counts must be whole numbers >= 0")
    return pl.DataFrame({"caption": list(data), "count": list(data.values())}, schema={"caption": pl.Utf8, "count": pl.Int64})
