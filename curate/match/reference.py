"""The reference study's counting (``--mode reference``)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numpy as np
import polars as pl

from curate.errors import CurateError
from curate.match.forms import _QUALIFIER
from curate.match.matcher import Mentions, check_policy, check_vocab, labels_from_mentions

TOKEN_PATTERN = r"\w+(?:-\w+)*"


@functools.lru_cache(maxsize=1)
def _wordnet():
    from curate.wordnet import wordnet

    return wordnet()


@functools.lru_cache(maxsize=200_000)
def lemmatise(token: str) -> str:
    """nltk's ``WordNetLemmatizer().lemmatize(token)`` (noun), on the offline WordNet reader.

    nltk's class reads the global ``nltk.corpus.wordnet``, which is not installed offline; this is
    its body (the shortest of ``_morphy``'s lemmas, else the token) on :func:`curate.wordnet.wordnet`.
    """
    lemmas = _wordnet()._morphy(token, "n")  # noqa: SLF001 - what WordNetLemmatizer itself calls
    return min(lemmas, key=len) if lemmas else token


def reference_tokens(text: str) -> list[str]:
    """The reference study's tokens of one text: lower-cased, regex-tokenised, lemmatised."""
    return [lemmatise(t) for t in re.findall(TOKEN_PATTERN, text.lower())]


@dataclass
class ReferenceMatcher:
    n_classes: int
    synonyms: pl.DataFrame  # syn, label, token, n_tokens


@functools.lru_cache(maxsize=4)
def _reference_matcher_cached(key: tuple) -> ReferenceMatcher:
    labels, lemma_lists = key
    rows: dict[str, list] = {"syn": [], "label": [], "token": [], "n_tokens": []}
    syn = 0
    for label, lemmas in zip(labels, lemma_lists):
        for lemma in lemmas:
            toks = sorted(set(reference_tokens(_QUALIFIER.sub("", lemma))))
            if not toks:
                continue
            for t in toks:
                rows["syn"].append(syn)
                rows["label"].append(label)
                rows["token"].append(t)
                rows["n_tokens"].append(len(toks))
            syn += 1
    table = pl.DataFrame(rows, schema={"syn": pl.Int64, "label": pl.Int32, "token": pl.Utf8, "n_tokens": pl.UInt32})
    return ReferenceMatcher(n_classes=len(labels), synonyms=table)


def compile_reference_matcher(vocab: pl.DataFrame) -> ReferenceMatcher:
    check_vocab(vocab)
    key = (tuple(vocab["label"].to_list()), tuple(tuple(ls or ()) for ls in vocab["lemmas"].to_list()))
    return _reference_matcher_cached(key)


def reference_labels(captions: pl.Series, ref: ReferenceMatcher, *, policy: str = "all") -> pl.Series:
    """Labels by the reference study's rule: all tokens of a synonym present anywhere (lemmatised)."""
    check_policy(policy)
    if policy == "first":
        raise CurateError("--policy first needs positions; --mode reference has none (use all or drop)")
    n = len(captions)
    toks = (
        pl.DataFrame({"c": captions.cast(pl.Utf8).fill_null("")})
        .with_row_index("row")
        .select("row", pl.col("c").str.to_lowercase().str.extract_all(TOKEN_PATTERN).alias("token"))
        .explode("token")
        .drop_nulls("token")
        .unique()
    )
    uniq = toks["token"].unique().to_list()
    lemma_map = pl.DataFrame({"token": uniq, "lemma": [lemmatise(t) for t in uniq]}, schema={"token": pl.Utf8, "lemma": pl.Utf8})
    pairs = toks.join(lemma_map, on="token").select("row", pl.col("lemma").alias("token")).unique()
    hit = (
        pairs.join(ref.synonyms, on="token")
        .group_by("row", "syn", "label", "n_tokens")
        .len()
        .filter(pl.col("len") == pl.col("n_tokens"))
        .select("row", "label")
        .unique()
    )
    m = Mentions(
        row=hit["row"].to_numpy().astype(np.int64),
        label=hit["label"].to_numpy().astype(np.int32),
        start=np.zeros(hit.height, dtype=np.int64),
        end=np.zeros(hit.height, dtype=np.int64),
        pattern=np.zeros(hit.height, dtype=np.int64),
    )
    return labels_from_mentions(m, n, ref.n_classes, policy=policy)


def reference_labels_naive(caption: str | None, vocab: pl.DataFrame) -> list[int]:
    """The reference method written the slow, obvious way (per class, per synonym): the check for
    :func:`reference_labels` and the baseline of the benchmark."""
    if caption is None:
        return []
    present = set(reference_tokens(caption))
    out = []
    for label, lemmas in zip(vocab["label"].to_list(), vocab["lemmas"].to_list()):
        for lemma in lemmas:
            toks = reference_tokens(_QUALIFIER.sub("", lemma))
            if toks and all(t in present for t in toks):
                out.append(label)
                break
    return sorted(out)

