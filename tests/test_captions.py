"""The caption ladder: every mode on rows the test makes."""

from __future__ import annotations

import polars as pl
import pytest

from curate.captions import CAPTION_MODES, has_text, openai_templates, render_captions
from curate.errors import CurateError


def rows(n: int = 40) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "uid": [f"u{i}" for i in range(n)],
            "label": pl.Series([i % 2 for i in range(n)], dtype=pl.Int32),
            "class_name": ["tiger shark" if i % 2 == 0 else "goldfish" for i in range(n)],
            "lemmas": [["tiger shark", "Galeocerdo cuvieri"] if i % 2 == 0 else ["goldfish", "Carassius auratus"] for i in range(n)],
            "caption": [f"my fish number {i}" for i in range(n)],
            "title": [f"Title {i}" if i % 3 else None for i in range(n)],
            "tags": [f"fish, sea, {i}" for i in range(n)],
            "description": [f"seen at the aquarium {i}" if i % 4 else "  " for i in range(n)],
        }
    )


def test_name_modes_are_exact():
    df = rows()
    assert render_captions(df, "cname").to_list() == df["class_name"].to_list()
    assert render_captions(df, "a-cname").to_list() == ["a " + n for n in df["class_name"]]
    assert render_captions(df, "template").to_list() == ["a photo of a " + n for n in df["class_name"]]


def test_openai80_uses_the_clip_templates_per_row_and_seed():
    df = rows(400)
    templates = openai_templates()
    assert len(templates) == 80 and templates[0] == "a bad photo of a {}."
    out = render_captions(df, "openai80", seed=3).to_list()
    allowed = {t.format(n) for t in templates for n in ("tiger shark", "goldfish")}
    assert set(out) <= allowed
    assert len(set(out)) > 60  # many templates in use
    assert out == render_captions(df, "openai80", seed=3).to_list()
    assert out != render_captions(df, "openai80", seed=4).to_list()
    # a row's caption depends on its own uid, not on its neighbours
    assert render_captions(df.slice(100, 50), "openai80", seed=3).to_list() == out[100:150]


def test_synset_uses_a_lemma_of_the_class_in_a_template():
    df = rows(400)
    out = render_captions(df, "synset", seed=0).to_list()
    templates = openai_templates()
    for caption, lemmas in zip(out, df["lemmas"].to_list()):
        assert any(t.format(lemma) == caption for t in templates for lemma in lemmas)
    used = {lemma for c, ls in zip(out, df["lemmas"]) for lemma in ls if lemma in c}
    assert {"Galeocerdo cuvieri", "tiger shark", "goldfish", "Carassius auratus"} <= used


def test_source_text_modes():
    df = rows()
    assert render_captions(df, "original").to_list() == df["caption"].to_list()
    assert render_captions(df, "title").to_list() == df["title"].to_list()
    assert render_captions(df, "tags").to_list() == df["tags"].str.replace_all(", ", " ").to_list()
    assert render_captions(df, "description").to_list() == [d.strip() or None for d in df["description"]]
    full = render_captions(df, "full").to_list()
    assert full[1] == "Title 1 fish sea 1 seen at the aquarium 1"  # the study's join: spaces, tags too
    assert full[0] == "fish sea 0"  # no title, blank description: only what the row has
    assert render_captions(df, "no-title").to_list()[1] == "fish sea 1 seen at the aquarium 1"
    assert render_captions(df, "no-tags").to_list()[1] == "Title 1 seen at the aquarium 1"
    assert render_captions(df, "no-description").to_list()[1] == "Title 1 fish sea 1"
    assert render_captions(df, "no-tags").to_list()[0] is None  # neither field: no text


def test_the_studys_full_text_example():
    df = pl.DataFrame(
        {
            "uid": ["x"], "class_name": ["tench"], "title": ["Tench fishing"], "tags": ["fish, lake, tench"],
            "description": ["Caught\ntoday"],
        }
    )
    assert render_captions(df, "full+cname").to_list() == ["tench Tench fishing fish lake tench Caught today"]


def test_cname_variants_put_the_name_first_and_keep_every_row():
    df = rows()
    for base in ("original", "title", "tags", "description", "no-title", "no-tags", "no-description", "full"):
        plain = render_captions(df, base).to_list()
        prefixed = render_captions(df, base + "+cname").to_list()
        for p, q, n in zip(plain, prefixed, df["class_name"]):
            assert q == (n if p is None else f"{n} {p}")
        assert df.filter(has_text(base + "+cname")).height == df.height
        assert CAPTION_MODES[base + "+cname"].columns == CAPTION_MODES[base].needs


def test_a_synset_is_a_random_lemma_after_a():
    df = rows(200)
    out = render_captions(df, "a-synset", seed=1).to_list()
    assert all(c in {"a " + lemma for lemma in ls} for c, ls in zip(out, df["lemmas"]))
    assert {"a Galeocerdo cuvieri", "a tiger shark"} <= set(out)
    assert out == render_captions(df, "a-synset", seed=1).to_list()


def test_every_mode_is_covered():
    texts = {"original", "title", "tags", "description", "no-title", "no-tags", "no-description", "full"}
    assert set(CAPTION_MODES) == {"cname", "a-cname", "template", "a-synset", "openai80", "synset"} | texts | {t + "+cname" for t in texts}


def test_has_text_selects_rows_with_the_needed_column():
    df = rows(12)
    assert df.filter(has_text("title")).height == 8
    assert df.filter(has_text("description")).height == 9
    assert df.filter(has_text("full")).height == 12
    assert df.filter(has_text("template")).height == 12


def test_names_from_the_vocabulary_and_errors():
    vocab = pl.DataFrame(
        {"label": pl.Series([0, 1], dtype=pl.Int32), "name": ["tench", "goldfish"], "lemmas": [["tench"], ["goldfish"]]}
    )
    df = pl.DataFrame({"uid": ["a", "b"], "label": [1, 0]})
    assert render_captions(df, "template", vocab).to_list() == ["a photo of a goldfish", "a photo of a tench"]
    with pytest.raises(CurateError, match="--captions 'poem'"):
        render_captions(df, "poem", vocab)
    with pytest.raises(CurateError, match="title"):
        render_captions(df, "title", vocab)
