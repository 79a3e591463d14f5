"""Recipes: YAML round-trip, pipeline files, validation, names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from curate.errors import CurateError
from curate.recipe import Recipe, load_pipeline

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"


def test_round_trip_of_every_option(tmp_path):
    r = Recipe(
        name="x1", source="data/pool.parquet", preset="laion400m", vocab="imagenet1k", classes="imagenet100",
        labels_from="wnid", label_policy="first", match_mode="reference", profile="match:ref.tsv",
        imbalance=37.5, head_fraction=0.3, order="random", max_per_class=None, total=5000, fraction=None,
        trim_tail="20:1", captions="full+cname", eval_per_class=5, allow_shortfall=True, allow_empty_classes=True, seed=9, out_root="out",
    )
    assert Recipe.loads(r.dump()) == r
    f = tmp_path / "r.yaml"
    f.write_text(r.dump(), encoding="utf-8")
    assert Recipe.load(f) == r
    assert set(r.to_dict()) == set(Recipe.option_names())


def test_defaults_and_yaml_numbers():
    r = Recipe.loads("imbalance: 100\ntrim-tail: 5:0\nclasses: 100\n")
    assert r.imbalance == 100.0 and isinstance(r.imbalance, float)
    assert r.classes == "100" and r.trim_tail == "5:0"
    assert r.captions == "template" and r.profile == "exp" and r.seed == 0


def test_bad_recipes_name_the_option(tmp_path):
    with pytest.raises(CurateError, match="unknown option 'imbalence'"):
        Recipe.loads("imbalence: 10")
    with pytest.raises(CurateError, match="seed must be a whole number"):
        Recipe.loads("seed: one")
    with pytest.raises(CurateError, match="label_policy 'some'"):
        Recipe.loads("label_policy: some")
    with pytest.raises(CurateError, match="not valid YAML"):
        Recipe.loads("a: [1,")
    with pytest.raises(CurateError, match=r"^recipe:2:10: not valid YAML \(mapping values are not allowed here\)"):
        Recipe.loads("source: demo\n  profile: exp\n")  # where it went wrong, as an editor counts
    with pytest.raises(CurateError, match="does not exist"):
        Recipe.load(tmp_path / "missing.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(CurateError, match="empty"):
        Recipe.load(empty)


def test_pipeline_variants_inherit_the_base(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("description: x\nbase: {captions: cname, imbalance: 10}\nvariants:\n  - {seed: 1}\n  - {imbalance: 100}\n", encoding="utf-8")
    a, b = load_pipeline(f)
    assert (a.captions, a.imbalance, a.seed) == ("cname", 10.0, 1)
    assert (b.captions, b.imbalance, b.seed) == ("cname", 100.0, 0)
    with pytest.raises(CurateError, match="2 variants"):
        Recipe.load(f)
    f.write_text("variants: []\n", encoding="utf-8")
    with pytest.raises(CurateError, match="non-empty list"):
        load_pipeline(f)
    f.write_text("variants:\n  - {bogus: 1}\n", encoding="utf-8")
    with pytest.raises(CurateError, match="variant 1: unknown option 'bogus'"):
        load_pipeline(f)


def test_shipped_pipelines_load():
    sizes = {p.name: len(load_pipeline(p)) for p in PIPELINES.glob("*.yaml")}
    assert sizes == {
        "demo.yaml": 1,
        "imbalance-sweep.yaml": 4,
        "caption-ladder.yaml": 9,
        "scale-ablation.yaml": 6,
        "concept-scale.yaml": 2,
        "tail-trimming.yaml": 12,
        "match-reference.yaml": 5,
    }
    demo = Recipe.load(PIPELINES / "demo.yaml")
    # = curate build --imbalance 100 --captions template, plus a balanced eval split for curate eval
    assert demo == Recipe(imbalance=100.0, captions="template", eval_per_class=3)
    fractions = [r.fraction for r in load_pipeline(PIPELINES / "scale-ablation.yaml")]
    assert fractions == [1, 1 / 2, 1 / 4, 1 / 8, 1 / 16, 1 / 32]
    trims = {r.trim_tail for r in load_pipeline(PIPELINES / "tail-trimming.yaml")}
    assert trims == {f"{k}:{c}" for k in (5, 20, 50, 100, 200, 500) for c in (0, 1)}


def test_slug_is_readable_and_distinct():
    assert Recipe(imbalance=100.0).slug() == "demo-exp-r100-template"
    assert Recipe(source="/data/cc3m.tsv", profile="natural", fraction=0.5, captions="full+cname", seed=2).slug() == (
        "cc3m-natural-f0p5-full-plus-cname-s2"
    )
    variants = load_pipeline(PIPELINES / "tail-trimming.yaml") + load_pipeline(PIPELINES / "caption-ladder.yaml")
    slugs = [v.slug() for v in variants]
    assert len(set(slugs)) == len(slugs)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"captions": "nonsense"}, "--captions 'nonsense' is not one of cname"),
        ({"captions": "template", "profile": "zipf"}, "--profile 'zipf' is not one of exp"),
        ({"preset": "laion"}, "preset 'laion' is not one of laion400m"),
        ({"match_mode": "fuzzy"}, "match_mode 'fuzzy' is not one of curate, reference"),
        ({"label_policy": "some"}, "label_policy 'some' is not one of all, drop, first"),
        ({"trim_tail": "x"}, "--trim-tail 'x'"),
        ({"imbalance": 0.5}, "--imbalance 0.5"),
    ],
)
def test_every_option_is_checked_against_its_registry_when_made(options, message):
    with pytest.raises(CurateError, match=re.escape(message)):
        Recipe.from_dict(options, where="x.yaml")
    with pytest.raises(CurateError, match=re.escape(message)):
        Recipe(**options)


def test_with_overrides_is_how_the_command_line_applies_options():
    base = Recipe.from_dict({"name": "r100", "imbalance": 100, "total": 500})
    assert base.with_overrides(seed=None, out_root="elsewhere").name == "r100"  # same dataset, same name
    other = base.with_overrides(imbalance=10, seed=None)
    assert other.name is None and other.imbalance == 10.0 and other.total == 500
    scaled = base.with_overrides(fraction=0.5)
    assert (scaled.total, scaled.fraction) == (None, 0.5)  # one scale replaces another
    assert base.with_overrides(imbalance=10, name="r10").name == "r10"
