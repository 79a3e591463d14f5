"""The caption-descriptiveness ladder: the training text each manifest row gets.

Owns the caption modes (a registry, least to most descriptive): ``cname`` ({name}), ``a-cname``
(a {name}), ``template`` (a photo of a {name}), ``a-synset`` (a {random lemma of the class}),
``openai80`` (one of CLIP's 80 ImageNet templates, from ``open_clip.zero_shot_metadata``),
``synset`` (a random lemma in one of those templates), then the source's own text: ``original``
(the caption), ``title``, ``tags``, ``description``, the pairs ``no-title`` (tags description),
``no-tags`` (title description), ``no-description`` (title tags), and ``full`` (title tags
description).

Source text is joined as the reference study joins it (``create_incaps_caption_variants.py``):
the parts a row has, in that order, separated by one space; tags separated by spaces; line
breaks and tabs become spaces. A plain text mode keeps only rows that have some of its text.
``MODE+cname`` puts the class name first, ``{name} {text}``, and keeps **every** row (the class
name alone where the row has none of the text), so caption variants of one draw differ in their
text only, never in their images (the study's ``--append_cname``).

Random picks (template, lemma) come from a seeded hash of the row's uid, so a row's caption
depends on (uid, class, seed) only, never on which other rows were drawn.

A row that names no class (``curate build --keep-unmatched``, label -1) has no name to render:
it keeps its own text, the text the mode reads without the class name (``title`` its title,
``full+cname`` its title, tags and description), and where that is none (``template``, ``cname``
and the other modes that write only the class; a ``+cname`` row with none of its text) its
source caption.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from curate.errors import CurateError
from curate.sample import stable_choice

CNAME_SUFFIX = "+cname"


@functools.lru_cache(maxsize=1)
def openai_templates() -> tuple[str, ...]:
    """CLIP's 80 ImageNet prompt templates as format strings with ``{}`` for the class."""
    from curate.vocab import open_clip_metadata

    return tuple(t("{}") for t in open_clip_metadata()["OPENAI_IMAGENET_TEMPLATES"])


@dataclass(frozen=True)
class CaptionMode:
    """One rung of the ladder: the source columns it reads, which of them a row must have, and how
    it renders a batch."""

    name: str
    help: str
    needs: tuple[str, ...]  # a row qualifies when any of these has text (empty: every row does)
    render: Callable[[pl.DataFrame, int], pl.Series]  # rows (uid, class_name, lemmas, text cols), seed
    reads: tuple[str, ...] = ()  # source text columns the render reads (defaults to needs)
    lemmas: bool = False  # the render reads the class's lemmas

    @property
    def columns(self) -> tuple[str, ...]:
        return self.reads or self.needs


CAPTION_MODES: dict[str, CaptionMode] = {}


def _mode(name: str, help: str, needs: tuple[str, ...] = (), *, lemmas: bool = False):
    def register(fn: Callable[[pl.DataFrame, int], pl.Series]):
        CAPTION_MODES[name] = CaptionMode(name, help, needs, fn, lemmas=lemmas)
        return fn

    return register


@_mode("cname", "the class name alone: {name}")
def _cname(df: pl.DataFrame, seed: int) -> pl.Series:
    return df["class_name"]


@_mode("a-cname", "a {name} (the study's 'Template')")
def _a_cname(df: pl.DataFrame, seed: int) -> pl.Series:
    return "a " + df["class_name"]


@_mode("template", "a photo of a {name}")
def _template(df: pl.DataFrame, seed: int) -> pl.Series:
    return "a photo of a " + df["class_name"]


def _random_lemmas(df: pl.DataFrame, seed: int) -> list[str]:
    lemmas = [ls if ls else [n] for ls, n in zip(df["lemmas"].to_list(), df["class_name"].to_list())]
    keys = stable_choice(df["uid"], seed, "synset", 1 << 30)
    return [ls[k % len(ls)] for ls, k in zip(lemmas, keys.tolist())]


def _in_templates(df: pl.DataFrame, words: list[str], seed: int) -> pl.Series:
    templates = openai_templates()
    pick = stable_choice(df["uid"], seed, "openai80", len(templates))
    return pl.Series([templates[i].format(w) for i, w in zip(pick.tolist(), words)], dtype=pl.Utf8)


@_mode("a-synset", "a {lemma}: a random WordNet lemma of the class, chosen per row", lemmas=True)
def _a_synset(df: pl.DataFrame, seed: int) -> pl.Series:
    return pl.Series(["a " + w for w in _random_lemmas(df, seed)], dtype=pl.Utf8)


@_mode("openai80", "one of CLIP's 80 ImageNet templates (open_clip), chosen per row")
def _openai80(df: pl.DataFrame, seed: int) -> pl.Series:
    return _in_templates(df, df["class_name"].to_list(), seed)


@_mode("synset", "a random WordNet lemma of the class in one of the 80 templates", lemmas=True)
def _synset(df: pl.DataFrame, seed: int) -> pl.Series:
    return _in_templates(df, _random_lemmas(df, seed), seed)


def _part(col: str) -> pl.Expr:
    """One source text field as the study reads it: line breaks and tabs as spaces, tags separated
    by spaces (curate's source table joins a tag list with ', '), blank as missing."""
    expr = pl.col(col).str.replace_all(r"[\n\r\t]", " ")
    if col == "tags":
        expr = expr.str.replace_all(r",\s*", " ")
    expr = expr.str.strip_chars()
    return pl.when(expr == "").then(None).otherwise(expr)


def _joined_text(parts: tuple[str, ...]) -> pl.Expr:
    """The fields ``parts`` joined with one space (null where the row has none of them)."""
    text = pl.concat_str([_part(c) for c in parts], separator=" ", ignore_nulls=True)
    return pl.when(text == "").then(None).otherwise(text)


def _joined(parts: tuple[str, ...]) -> Callable[[pl.DataFrame, int], pl.Series]:
    def render(df: pl.DataFrame, seed: int) -> pl.Series:
        return df.select(_joined_text(parts).alias("caption"))["caption"]

    return render


# (mode, the source fields it joins, help)
TEXT_MODES = (
    ("original", ("caption",), "the source caption"),
    ("title", ("title",), "the source title"),
    ("tags", ("tags",), "the source tags, space-separated"),
    ("description", ("description",), "the source description"),
    ("no-title", ("tags", "description"), "tags and description (the study's no_title)"),
    ("no-tags", ("title", "description"), "title and description (the study's no_tags)"),
    ("no-description", ("title", "tags"), "title and tags (the study's no_description)"),
    ("full", ("title", "tags", "description"), "title, tags and description, space-joined (the study's full text)"),
)
FULL_PARTS = ("title", "tags", "description")

for _name, _parts, _help in TEXT_MODES:
    _render = _joined(_parts)
    CAPTION_MODES[_name] = CaptionMode(_name, _help, _parts, _render)

    def _prefixed(df: pl.DataFrame, seed: int, _render=_render) -> pl.Series:
        return df.select(pl.concat_str([pl.col("class_name"), _render(df, seed)], separator=" ", ignore_nulls=True))[
            "class_name"
        ]

    CAPTION_MODES[_name + CNAME_SUFFIX] = CaptionMode(
        _name + CNAME_SUFFIX, f"{{name}}, then {_help}; every row kept (the name alone where the row has none)", (), _prefixed, reads=_parts
    )


def caption_mode(name: str) -> CaptionMode:
    if name not in CAPTION_MODES:
        raise CurateError(f"--captions {name!r} is not one of {', '.join(CAPTION_MODES)}")
    return CAPTION_MODES[name]


def has_text(mode: str) -> pl.Expr:
    """True for source rows that carry the text ``mode`` needs (always true for name-only modes)."""
    needs = caption_mode(mode).needs
    if not needs:
        return pl.lit(True)
    return pl.any_horizontal([(pl.col(c).str.strip_chars().str.len_bytes() > 0).fill_null(False) for c in needs])


def render_captions(df: pl.DataFrame, mode: str, vocab: pl.DataFrame | None = None, seed: int = 0) -> pl.Series:
    """The training caption of every row of ``df`` (``uid``, ``class_name`` or ``label``, and the
    source text columns the mode reads); ``vocab`` supplies names and lemmas by ``label`` when
    ``df`` lacks them."""
    m = caption_mode(mode)
    if vocab is not None and ("class_name" not in df.columns or "lemmas" not in df.columns):
        lookup = vocab.select(
            pl.col("label").cast(pl.Int32), pl.col("name").alias("class_name"), pl.col("lemmas")
        )
        df = df.drop([c for c in ("class_name", "lemmas") if c in df.columns]).with_columns(
            pl.col("label").cast(pl.Int32)
        ).join(lookup, on="label", how="left", maintain_order="left")
    unlabelled = (df["label"] < 0).fill_null(False) if "label" in df.columns else pl.Series([False] * df.height)
    own = bool(unlabelled.any())
    missing = [c for c in ("uid", "class_name", *m.columns, *(["caption"] if own else [])) if c not in df.columns]
    if m.lemmas and "lemmas" not in df.columns:
        missing.append("lemmas")
    if missing:
        raise CurateError(f"--captions {mode}: the rows lack column(s) {', '.join(missing)}")
    if not own:
        return m.render(df, seed).cast(pl.Utf8).alias("caption")
    # every render works row by row, so rendering the labelled rows apart changes none of them
    at = pl.Series("at", range(df.height), dtype=pl.Int64)
    named = df.filter(~unlabelled)
    parts = [pl.DataFrame({"at": at.filter(~unlabelled), "caption": m.render(named, seed).cast(pl.Utf8)})] if named.height else []
    parts.append(pl.DataFrame({"at": at.filter(unlabelled), "caption": own_text(df.filter(unlabelled), m)}))
    return pl.concat(parts).sort("at")["caption"].alias("caption")


def own_text(df: pl.DataFrame, m: CaptionMode) -> pl.Series:
    """The caption of rows without a class: the text ``m`` reads, else the source caption."""
    texts = [_joined_text(m.columns)] if m.columns else []
    return df.select(pl.coalesce(*texts, _joined_text(("caption",))).cast(pl.Utf8).alias("caption"))["caption"]
