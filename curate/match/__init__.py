"""Concept matching: which captions mention which vocabulary classes.

The package, one concern per module: ``normalise`` (caption and lemma normalisation),
``kernels`` (the optional numba loops; ``aot``: their ahead-of-time copies), ``forms`` (surface forms), ``rules`` (the rule data of
``curate/data/match_rules.json``), ``matcher`` (the compiled matcher, longest match, vetoes, label
policies, spans), ``lexicon`` and ``disambiguate`` (which candidates stand), ``cascade`` (the same
decisions from a compiled loop), ``reference`` (the
reference study's counting), ``quality`` (precision and recall against hand-judged pairs); this
module is the stage, :func:`match_captions`.

How a caption is matched (``mode="curate"``):

1. **Normalise** (:func:`normalise`, the same code for captions and for lemmas): HTML tags become
   spaces and common HTML entities are decoded, then Unicode NFKC, lower case plus the few
   case-folds that lower-casing misses (ß→ss, ς→σ), and every character that is not a letter,
   digit or combining mark (punctuation, apostrophes, hyphens, dashes, underscores, whitespace)
   separates words; runs collapse to one space and the text is padded with one space each side.
   A possessive ``tiger's`` thus reads ``tiger s`` (the word "tiger" is there), ``bow-tie`` reads
   ``bow tie``. Pure-ASCII rows (most web text) skip NFKC and take a byte-table path over the whole
   batch with the same result: with numba installed, one compiled pass (no GIL) that also flags the
   rows holding HTML or non-ASCII text, which alone go through polars' kernels and are spliced
   back; without numba, vectorised numpy over the batch.
2. **Surface forms** per lemma (:func:`surface_forms`): the normalised lemma, its regular plural,
   WordNet's irregular plurals (``noun.exc``: geese, mice, oxen, loaves) applied to
   the last word (so multi-word lemmas get plurals: "german shepherds"), and the joined spelling of
   multi-word lemmas ("bowtie", hashtags such as "#germanshepherd"). Hyphenated and spaced
   spellings need no variant: hyphens normalise to spaces on both sides; a possessive lemma also
   gets its run-together spelling ("potter's wheel" -> "potters wheel"). Parenthesised qualifiers
   in display names ("ram (adult male sheep)") are dropped.
3. **One pass** over the whole batch of normalised captions laid end to end in one buffer, finding
   every occurrence of every form as whole words ("cat" never matches "catalog"), overlapping ones
   included. With numba this is :class:`WordTable`: a hash table of the forms and of their leading
   words, probed once per word of the text (and for the next words only while they extend some
   form), every hit checked byte for byte; without numba (or on a 64-bit hash clash between two
   forms) it is an Aho–Corasick automaton (``ahocorasick-rs``) of the patterns `` form `` padded
   with a space each side: the same hits. Overlaps are then resolved so the **longest match wins**
   ("tiger shark" is not also "tiger"; when two mentions cross, the longer one is kept, the earlier
   one on a tie).
4. **Negative context**: a rule vetoes one class's match (optionally only through some of its
   lemmas) when any of its context words occurs anywhere in the caption as a whole word (crane the
   bird is vetoed by "construction", crane the machine by "bird"). Built-in rules live in
   ``NEGATIVE_RULES``; the vocabulary's ``negatives`` column adds more (vetoing every lemma of that
   class). Single characters and English function words (``STOP_FORMS``: "a", "it", "who", "may",
   all lemmas somewhere in WordNet) are never matched. Context words sit in a second automaton that only runs over the captions holding a
   mention some rule could veto. ``BLOCKED_LEMMAS`` lists lemmas too generic to be evidence on
   their own ("light" for the lighter class).
5. **Disambiguation** (:mod:`curate.match.disambiguate`, on by default; ``disambiguate=False``
   keeps every candidate left by step 4): a candidate stands unless WordNet and SemCor say it is
   another sense of the word with nothing in the caption speaking for the class (``sense``), part of
   a name (``name``), or a modifier of another noun in a head-final compound (``modifier``). Only
   captions holding a candidate reach this step. With ``spans`` every candidate is listed with its
   ``reason`` (``kept``, ``veto``, ``sense``, ``name``, ``modifier``); :func:`explain_caption` does
   the same for one caption (``curate match --explain``). With numba the cascade runs as a compiled
   loop without the GIL (:mod:`curate.match.cascade`, the same reason codes as ``decide``).
6. **Label policy** turns the mentions into ``labels`` (class indices, the vocabulary's ``label``):

   - ``all``: every matched class, sorted ascending, each once;
   - ``drop``: the class when exactly one class matched, else an empty list (captions that name two
     or more classes are dropped from labelling, as LAIONet did; the row itself stays so the table
     keeps its length: filter ``labels.list.len() == 1`` for the subset);
   - ``first``: the class of the first mention by position; a first mention that is itself
     ambiguous (one surface form, several classes, none vetoed) gives the lowest label.

   Null or empty captions get an empty list.

``mode="reference"`` reproduces the reference study's counting instead, caption by caption the
same labels (see :mod:`curate.match.reference`): nltk's Treebank tokens of the lower-cased letters,
WordNet noun lemmas, a class when all tokens of one of its synonyms occur anywhere in the caption,
vetoed by the study's nine negative word lists. No positions (so policy ``first`` and spans are
not available in this mode).
"""

from __future__ import annotations

import polars as pl

from curate.errors import CurateError
from curate.match.forms import regular_plural, surface_forms
from curate.match.lexicon_cache import cached_matcher
from curate.match.matcher import (
    LABELS_DTYPE,
    POLICIES,
    SPANS_DTYPE,
    Matcher,
    Mentions,
    check_policy,
    compile_matcher,
    labels_from_mentions,
    spans_from_mentions,
)
from curate.match.normalise import normalise, normalise_many, normalise_text, normalised_buffer
from curate.match.reference import compile_reference_matcher, reference_labels, reference_labels_naive
from curate.match.rules import BLOCKED_LEMMAS, NEGATIVE_RULES, STOP_FORMS, NegativeRule

MODES = ("curate", "reference")


def explain_caption(caption: str, vocab: pl.DataFrame, *, disambiguate: bool = True) -> list[dict]:
    """Every candidate mention of one caption in order: surface form, class (label, wnid, name) and
    ``reason`` (``kept`` or why it was dropped, see :mod:`curate.match.disambiguate`)."""
    from curate.match.disambiguate import DROP_REASONS

    matcher = cached_matcher(vocab, disambiguate=disambiguate)  # the lexicon a match run compiled and stored
    m = matcher.candidates(pl.Series([caption], dtype=pl.Utf8))
    wnids = vocab["wnid"].to_list() if "wnid" in vocab.columns else [None] * vocab.height
    names = vocab["name"].to_list()
    order = sorted(range(len(m.row)), key=lambda i: (int(m.start[i]), int(m.label[i])))
    return [
        {
            "surface": matcher.patterns[int(m.pattern[i])].strip(),
            "start": int(m.start[i]),
            "end": int(m.end[i]),
            "label": int(m.label[i]),
            "wnid": wnids[int(m.label[i])],
            "name": names[int(m.label[i])],
            "reason": DROP_REASONS[int(m.reason[i])],
        }
        for i in order
    ]

__all__ = [
    "BLOCKED_LEMMAS", "LABELS_DTYPE", "MODES", "NEGATIVE_RULES", "POLICIES", "SPANS_DTYPE", "STOP_FORMS",
    "Matcher", "Mentions", "NegativeRule", "compile_matcher", "explain_caption", "compile_reference_matcher", "labels_from_mentions",
    "match_captions", "normalise", "normalise_many", "normalise_text", "normalised_buffer", "reference_labels",
    "reference_labels_naive", "regular_plural", "spans_from_mentions", "surface_forms",
]


def match_captions(
    lf: pl.LazyFrame,
    vocab: pl.DataFrame,
    *,
    policy: str = "all",
    mode: str = "curate",
    spans: bool = False,
    caption_col: str = "caption",
    disambiguate: bool = True,
) -> pl.LazyFrame:
    """The input rows plus ``labels`` (List[Int32], vocabulary ``label`` values); see the module
    docstring for the policies and modes. With ``spans``, also ``spans``: the accepted mentions
    (label, byte offsets into the normalised caption, surface form) before the policy.

    Runs batch by batch (``map_batches``, elementwise), so it streams under
    ``collect(engine="streaming")`` and ``sink_parquet``, and polars runs batches side by side: the
    heavy steps (polars kernels, the automaton, large numpy operations) release the GIL.
    """
    check_policy(policy)
    if mode not in MODES:
        raise CurateError(f"--mode {mode!r} is not one of {', '.join(MODES)}")
    names = lf.collect_schema().names()
    if caption_col not in names:
        raise CurateError(f"caption column {caption_col!r} not found (columns: {', '.join(names)})")
    if "labels" in names:
        raise CurateError("the input already has a 'labels' column; rename or drop it first")
    if mode == "reference":
        if policy == "first":
            raise CurateError("--policy first needs positions; --mode reference has none (use all or drop)")
        if spans:
            raise CurateError("--spans needs positions; --mode reference has none")
        ref = compile_reference_matcher(vocab)
        return lf.with_columns(
            pl.col(caption_col)
            .map_batches(lambda s: reference_labels(s, ref, policy=policy), return_dtype=LABELS_DTYPE, is_elementwise=True)
            .alias("labels")
        )
    matcher = cached_matcher(vocab, disambiguate=disambiguate)  # compiled once, kept on disk between processes
    matcher.warm_up()  # build and compile now, not inside the first batch of every worker
    if not spans:
        return lf.with_columns(
            pl.col(caption_col)
            .map_batches(lambda s: matcher.labels(s, policy=policy), return_dtype=LABELS_DTYPE, is_elementwise=True)
            .alias("labels")
        )

    struct_dtype = pl.Struct({"labels": LABELS_DTYPE, "spans": SPANS_DTYPE})

    def both(s: pl.Series) -> pl.Series:
        m = matcher.candidates(s)
        return pl.struct(
            labels_from_mentions(m.select(m.reason == 0), len(s), matcher.n_classes, policy=policy),
            spans_from_mentions(m, len(s), matcher.patterns),
            eager=True,
        ).alias("_match")

    return (
        lf.with_columns(
            pl.col(caption_col)
            .map_batches(both, return_dtype=struct_dtype, is_elementwise=True)
            .alias("_match")
        )
        .with_columns(pl.col("_match").struct.field("labels"), pl.col("_match").struct.field("spans"))
        .drop("_match")
    )

