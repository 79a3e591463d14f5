"""Vocabularies: built-in ImageNet tables, WordNet trees (offline), user files, bad specs."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.errors import CurateError
from curate.vocab import IMAGENET100_INDICES, VOCAB_SCHEMA, load_vocab, write_vocab

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
runner = CliRunner()


def test_imagenet1k_standard_order_and_names():
    v = load_vocab("imagenet1k")
    assert dict(v.schema) == VOCAB_SCHEMA
    assert v.height == 1000
    assert v["label"].to_list() == list(range(1000))
    assert v["wnid"].to_list() == sorted(v["wnid"].to_list())
    first = v.row(0, named=True)
    assert (first["wnid"], first["name"]) == ("n01440764", "tench")
    assert "Tinca tinca" in first["lemmas"]
    assert first["definition"].startswith("freshwater dace-like")
    # the two cranes share a lemma but not a display name
    assert "crane" in v.row(134, named=True)["lemmas"] and "crane" in v.row(517, named=True)["lemmas"]
    # open_clip's names repeat twice (OpenAI's list); wnids tell those classes apart
    assert set(v.filter(pl.col("name").is_duplicated())["name"]) == {"missile", "sunglasses"}


def test_imagenet1k_matches_reference_synonyms():
    ref = json.loads((SHARED / "reference" / "imagenet1k_wnid_synonyms.json").read_text())
    v = load_vocab("imagenet1k")
    assert v["wnid"].to_list() == list(ref)
    # the study's synonyms are WordNet's lemmas plus a few disambiguated extras ("robin bird");
    # nearly all of them are among ours (compared case-insensitively)
    pairs = [(w, s) for w in ref for s in ref[w]]
    ours = {w: {lemma.casefold() for lemma in ls} for w, ls in zip(v["wnid"], v["lemmas"])}
    found = [p for p in pairs if p[1].casefold() in ours[p[0]]]
    assert len(found) / len(pairs) > 0.95


def test_imagenet100_is_the_published_subset():
    v = load_vocab("imagenet100")
    file_indices = [int(x) for x in (SHARED / "reference" / "imagenet100_class_indices.txt").read_text().split()]
    assert list(IMAGENET100_INDICES) == file_indices
    full = load_vocab("imagenet1k")
    assert v["wnid"].to_list() == full[file_indices]["wnid"].to_list()
    assert v["label"].to_list() == list(range(100))


def test_imagenet21k_covers_imagenet1k():
    v = load_vocab("imagenet21k")
    assert v.height == 21843
    # Google's 21k release lacks teddy bear (n04399382), a known quirk of that list
    assert set(load_vocab("imagenet1k")["wnid"]) - set(v["wnid"]) == {"n04399382"}
    assert v.filter(pl.col("lemmas").list.len() == 0).height == 0


def test_wordnet_tree_offline_with_depth():
    dogs = load_vocab("wordnet:dog.n.01")
    wnids = dogs["wnid"].to_list()
    assert "n02084071" in wnids  # dog itself
    assert "n02085620" in wnids  # chihuahua: dog > toy dog > chihuahua
    assert wnids == sorted(wnids)
    shallow = load_vocab("wordnet:dog.n.01", depth=1)
    assert "n02085620" not in shallow["wnid"].to_list()
    assert 1 < shallow.height < dogs.height
    assert load_vocab("wordnet:dog.n.01", depth=0).height == 1


def test_plural_exceptions_from_noun_exc():
    from curate.wordnet import plural_exceptions

    table = plural_exceptions()
    assert table["goose"] == ["geese"]
    assert "mice" in table["mouse"] and "oxen" in table["ox"] and "loaves" in table["loaf"]


def test_user_files(tmp_path):
    csv = tmp_path / "v.csv"
    csv.write_text("name,lemmas,negatives\nkoala,koala bear|koala,zoo keeper\nwombat,,\n")
    v = load_vocab(str(csv))
    assert v["name"].to_list() == ["koala", "wombat"]
    assert v.row(0, named=True)["lemmas"] == ["koala bear", "koala"]
    assert v.row(0, named=True)["negatives"] == ["zoo keeper"]
    assert v.row(1, named=True)["lemmas"] == ["wombat"]
    js = tmp_path / "syn.json"
    js.write_text(json.dumps({"n01440764": ["tench", "tinca tinca"]}))
    assert load_vocab(str(js)).row(0, named=True)["lemmas"] == ["tench", "tinca tinca"]
    for suffix in (".parquet", ".tsv", ".json", ".jsonl"):
        out = write_vocab(v, tmp_path / f"round{suffix}")
        back = load_vocab(str(out))
        assert back["name"].to_list() == v["name"].to_list()
        assert back["lemmas"].to_list() == v["lemmas"].to_list()


@pytest.mark.parametrize(
    "spec, needle",
    [
        ("no-such-vocab", "unknown vocabulary"),
        ("wordnet:zzzz.n.01", "no such synset"),
        ("missing.csv", "does not exist"),
    ],
)
def test_bad_specs(spec, needle):
    with pytest.raises(CurateError, match=needle):
        load_vocab(spec)


def test_bad_files(tmp_path):
    (tmp_path / "empty.csv").write_text("name\n")
    (tmp_path / "noname.csv").write_text("title\nkoala\n")
    (tmp_path / "blank.csv").write_text("name\nkoala\n\"\"\n")
    with pytest.raises(CurateError, match="no rows"):
        load_vocab(str(tmp_path / "empty.csv"))
    with pytest.raises(CurateError, match="no 'name' column"):
        load_vocab(str(tmp_path / "noname.csv"))
    with pytest.raises(CurateError, match="row 2: empty name"):
        load_vocab(str(tmp_path / "blank.csv"))


def test_cli_lists_and_exports(tmp_path):
    result = runner.invoke(app, ["vocab", "imagenet1k"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1001
    assert lines[1].split("\t")[:3] == ["0", "n01440764", "tench"]
    out = tmp_path / "dogs.parquet"
    result = runner.invoke(app, ["vocab", "wordnet:dog.n.01", "--depth", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert pl.read_parquet(out).height == load_vocab("wordnet:dog.n.01", depth=1).height


def test_cli_error_is_one_line_and_exit_2():
    from curate.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["vocab", "nope"])
    assert exc.value.code == 2


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["robin", "gong", "robin", "goose"], "rows 1 and 3 both name the class 'robin'"),
        (["robin", "gong", "Robin"], "rows 1 and 3 both name the class 'robin' / 'Robin'"),
    ],
)
def test_a_name_listed_twice_is_an_error_naming_both_rows(tmp_path, names, message):
    f = tmp_path / "v.csv"
    f.write_text("name\n" + "\n".join(names) + "\n", encoding="utf-8")
    with pytest.raises(CurateError, match=message):
        load_vocab(str(f))


def test_one_name_for_two_wnids_stays_two_classes(tmp_path):
    # ImageNet-1k itself names two classes 'missile': exported and loaded back, it still loads
    out = write_vocab(load_vocab("imagenet1k"), tmp_path / "in1k.tsv")
    assert load_vocab(str(out)).height == 1000
    f = tmp_path / "v.csv"
    f.write_text("wnid,name\nn1,robin\nn1,robin\n", encoding="utf-8")
    with pytest.raises(CurateError, match="rows 1 and 2"):
        load_vocab(str(f))


def test_vocab_does_not_import_demo():
    """vocab owns the demo's class list; demo builds on vocab, never the other way (no cycle)."""
    import ast

    import curate.vocab

    tree = ast.parse(Path(curate.vocab.__file__).read_text(encoding="utf-8"))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    assert "curate.demo" not in imported
    assert load_vocab("demo")["wnid"].to_list() == list(__import__("curate.demo").demo.DEMO_CLASSES)


def test_builtin_vocabularies_are_read_back_from_the_cache_as_built(tmp_path, monkeypatch):
    import curate.vocab as vocab_module

    monkeypatch.setenv("CURATE_CACHE", str(tmp_path))
    vocab_module._builtin.cache_clear()
    try:
        built = vocab_module.BUILTIN["imagenet100"]()
        first = load_vocab("imagenet100")
        (entry,) = (tmp_path / "vocab").glob("imagenet100-*.parquet")
        assert first.equals(built) and pl.read_parquet(entry).equals(built)
        vocab_module._builtin.cache_clear()
        builder = vocab_module.BUILTIN["imagenet100"]

        def not_again():
            raise AssertionError("built again instead of read back from the cache")

        monkeypatch.setitem(vocab_module.BUILTIN, "imagenet100", not_again)
        assert load_vocab("imagenet100").equals(built)  # read back
        monkeypatch.setitem(vocab_module.BUILTIN, "imagenet100", builder)
        entry.write_bytes(b"cut short")  # a damaged entry is built again
        vocab_module._builtin.cache_clear()
        assert load_vocab("imagenet100").equals(built) and pl.read_parquet(entry).equals(built)
    finally:
        vocab_module._builtin.cache_clear()
