"""The caption-descriptiveness ladder: the training text each manifest row gets.

Owns the caption modes (a registry, least to most descriptive): ``cname`` ({name}), ``a-cname``
(a {name}), ``template`` (a photo of a {name}), ``openai80`` (one of CLIP's 80 ImageNet templates,
from ``open_clip.zero_shot_metadata``), ``synset`` (a WordNet lemma of the class in one of those
templates), then the source's own text: ``original``, ``title``, ``tags``, ``description``,
``full`` (title, tags and description), each also as ``MODE+cname`` with the class name in front.

Random picks (template, lemma) come from a seeded hash of the row's uid, so a row's caption
depends on (uid, class, seed) only, never on which other rows were drawn.
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
    """One rung of the ladder: the source columns it reads, and how it renders a batch."""

    name: str
    help: str
    needs: tuple[str, ...]  # source text columns; a row qualifies when any of them has text
    render: Callable[[pl.DataFrame, int], pl.Series]  # rows (uid, class_name, lemmas, text cols), seed


CAPTION_MODES: dict[str, CaptionMode] = {}


def _mode(name: str, help: str, needs: tuple[str, ...] = ()):
    def register(fn: Callable[[pl.DataFrame, int], pl.Series]):
        CAPTION_MODES[name] = CaptionMode(name, help, needs, fn)
        return fn

    return register


@_mode("cname", "the class name alone: {name}")
def _cname(df: pl.DataFrame, seed: int) -> pl.Series:
    return df["class_name"]


@_mode("a-cname", "a {name}")
def _a_cname(df: pl.DataFrame, seed: int) -> pl.Series:
    return "a " + df["class_name"]


@_mode("template", "a photo of a {name}")
def _template(df: pl.DataFrame, seed: int) -> pl.Series:
    return "a photo of a " + df["class_name"]


def _in_templates(df: pl.DataFrame, words: list[str], seed: int) -> pl.Series:
    templates = openai_templates()
    pick = stable_choice(df["uid"], seed, "openai80", len(templates))
    return pl.Series([templates[i].format(w) for i, w in zip(pick.tolist(), words)], dtype=pl.Utf8)


@_mode("openai80", "one of CLIP's 80 ImageNet templates (open_clip), chosen per row")
def _openai80(df: pl.DataFrame, seed: int) -> pl.Series:
    return _in_templates(df, df["class_name"].to_list(), seed)


@_mode("synset", "a random WordNet lemma of the class in one of the 80 templates")
def _synset(df: pl.DataFrame, seed: int) -> pl.Series:
    lemmas = [ls if ls else [n] for ls, n in zip(df["lemmas"].to_list(), df["class_name"].to_list())]
    sizes = [len(ls) for ls in lemmas]
    keys = stable_choice(df["uid"], seed, "synset", 1 << 30)
    words = [ls[k % s] for ls, k, s in zip(lemmas, keys.tolist(), sizes)]
    return _in_templates(df, words, seed)


def _text(col: str) -> Callable[[pl.DataFrame, int], pl.Series]:
    def render(df: pl.DataFrame, seed: int) -> pl.Series:
        return df[col].str.strip_chars()

    return render


FULL_PARTS = ("title", "tags", "description")

_mode("original", "the source caption", ("caption",))(_text("caption"))
_mode("title", "the source title", ("title",))(_text("title"))
_mode("tags", "the source tags", ("tags",))(_text("tags"))
_mode("description", "the source description", ("description",))(_text("description"))


@_mode("full", "title, tags and description joined ('. ' between the parts a row has)", FULL_PARTS)
def _full(df: pl.DataFrame, seed: int) -> pl.Series:
    parts = [pl.col(c).str.strip_chars().replace("", None) for c in FULL_PARTS]
    return df.select(pl.concat_str(parts, separator=". ", ignore_nulls=True).alias("caption"))["caption"]


for _base in ("original", "title", "tags", "description", "full"):
    _inner = CAPTION_MODES[_base]

    def _prefixed(df: pl.DataFrame, seed: int, _inner=_inner) -> pl.Series:
        return df["class_name"] + ": " + _inner.render(df, seed)

    CAPTION_MODES[_base + CNAME_SUFFIX] = CaptionMode(
        _base + CNAME_SUFFIX, f"{{name}}: then {_inner.help[4:]}", _inner.needs, _prefixed
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
    missing = [c for c in ("uid", "class_name", *m.needs) if c not in df.columns]
    if m.name.startswith("synset") and "lemmas" not in df.columns:
        missing.append("lemmas")
    if missing:
        raise CurateError(f"--captions {mode}: the rows lack column(s) {', '.join(missing)}")
    return m.render(df, seed).cast(pl.Utf8).alias("caption")
