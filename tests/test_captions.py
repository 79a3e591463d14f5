"""The caption ladder: every mode on rows the test makes."""

from __future__ import annotations

from pathlib import Path

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


def test_rows_without_a_class_keep_their_own_text():
    # label -1: a caption naming no class (curate build --keep-unmatched); no class name to render
    df = pl.DataFrame(
        {
            "uid": ["a", "b", "c", "d"],
            "label": [0, -1, 1, -1],
            "class_name": ["tench", None, "goldfish", None],
            "lemmas": [["tench", "Tinca tinca"], None, ["goldfish"], None],
            "caption": ["a tench", "sunset\nover the lake", "my goldfish", "  a walk  "],
            "title": ["T0", "Lake", None, None],
        }
    )
    labelled = df.filter(pl.col("label") >= 0)
    for mode in ("template", "cname", "synset", "a-synset", "openai80"):
        out = render_captions(df, mode, seed=3)
        assert out[1] == "sunset over the lake" and out[3] == "a walk"  # the source caption, as `original` reads it
        assert out.gather([0, 2]).to_list() == render_captions(labelled, mode, seed=3).to_list()  # the others unchanged
    assert render_captions(df, "title+cname").to_list() == ["tench T0", "Lake", "goldfish", "a walk"]
    assert render_captions(df, "original").to_list() == ["a tench", "sunset over the lake", "my goldfish", "a walk"]


PAPER = Path(__file__).resolve().parent.parent / "pipelines" / "paper"


def test_paper_recipes_load_and_name_their_variants_apart():
    from curate.recipe import load_pipeline

    sizes = {p.name: len(load_pipeline(p)) for p in sorted(PAPER.glob("*.yaml"))}
    assert sizes == {
        "captions.yaml": 10, "concept-scale.yaml": 3, "data-scale.yaml": 6, "diversity.yaml": 1,
        "imbalance.yaml": 3, "open-world.yaml": 2, "trim-tail.yaml": 12,
        "laionet-fractions.yaml": 6, "laionet-match-incaps.yaml": 2, "laionet-thresholds.yaml": 4,
    }
    for p in PAPER.glob("*.yaml"):
        names = [r.name or r.slug() for r in load_pipeline(p)]
        assert len(set(names)) == len(names), p.name
    text = "".join(p.read_text() for p in PAPER.glob("*.yaml")) + (PAPER.parent / "README.md").read_text()
    assert "../shared" not in text


def test_paper_caption_variants_keep_the_same_images(tmp_path, capsys):
    from cli_helpers import run_cli

    n = 60
    src = tmp_path / "incaps.parquet"
    pl.DataFrame(
        {
            "uid": [f"img{i}" for i in range(n)],
            "caption": [f"photo {i}" for i in range(n)],
            "path": [f"/imagenet/train/{i}.JPEG" for i in range(n)],
            "title": [f"Title {i}" if i % 3 else None for i in range(n)],
            "tags": [["fish", "lake"] if i % 2 else [] for i in range(n)],
            "description": [None if i % 4 == 0 else f"Caught\nat {i}" for i in range(n)],
            "wnid": ["n01440764" if i % 3 else "n01443537" for i in range(n)],
        }
    ).write_parquet(src)
    vocab = tmp_path / "v.tsv"
    vocab.write_text("wnid\tname\tlemmas\nn01440764\ttench\ttench|Tinca tinca\nn01443537\tgoldfish\tgoldfish\n")
    code, _, err = run_cli(["run", str(PAPER / "captions.yaml"), "--source", str(src), "--vocab", str(vocab), "--out-root", str(tmp_path / "m")], capsys)
    assert code == 0, err
    # a named variant run on another source gets the source's stem: incaps-full-incaps
    built = {p.name.removesuffix("-incaps"): pl.read_parquet(p / "manifest.parquet").sort("uid") for p in (tmp_path / "m").iterdir()}
    assert len(built) == 10
    uids = {tuple(m["uid"].to_list()) for m in built.values()}
    assert len(uids) == 1 and len(next(iter(uids))) == n  # every image, in every variant
    full = dict(zip(built["incaps-full"]["uid"], built["incaps-full"]["caption"]))
    assert full["img1"] == "tench Title 1 fish lake Caught at 1"
    assert full["img3"] == "goldfish fish lake Caught at 3"  # no title
    assert dict(zip(built["incaps-title"]["uid"], built["incaps-title"]["caption"]))["img0"] == "goldfish"  # nothing but the name


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["imbalance", "data-scale", "concept-scale", "diversity", "open-world"])
def test_paper_recipes_build_on_the_demo(recipe, tmp_path, capsys):
    """Every variant of the paper recipes that need no more than the demo dry-runs there (the
    LAIONet ones need a score file, trim-tail's deepest cuts need more classes than 119)."""
    from cli_helpers import run_cli

    code, out, err = run_cli(["run", str(PAPER / f"{recipe}.yaml"), "--dry-run", "--out-root", str(tmp_path)], capsys)
    assert code == 0, err
    from curate.recipe import load_pipeline

    assert (out + err).count("would hold") == len(load_pipeline(PAPER / f"{recipe}.yaml")), out + err
