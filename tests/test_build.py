"""``curate build`` / ``run`` / ``export`` end to end on sources the tests make, plus the demo
acceptance build."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from cli_helpers import run_cli

from curate.recipe import Recipe
from curate.util import file_sha256

FRUITS = ["apple", "banana", "cherry", "durian", "elderberry", "fig"]
POOLS = [400, 200, 120, 60, 30, 20]



def make_source(folder: Path, *, pools: list[int] = POOLS, unmatched: int = 50, two_class: int = 10, seed: int = 0) -> tuple[Path, Path]:
    """A web-like caption parquet (uid, caption, url, title, tags, description) and its vocab file."""
    rng = np.random.default_rng(seed)
    rows = []
    for c, n in enumerate(pools):
        for j in range(n):
            rows.append((f"{FRUITS[c]}-{j}", f"a fresh {FRUITS[c]} on my table, shot {j}", c))
    for j in range(unmatched):
        rows.append((f"none-{j}", f"nothing to see here {j}", -1))
    for j in range(two_class):
        rows.append((f"two-{j}", f"an {FRUITS[0]} next to a {FRUITS[5]}", 5))
    order = rng.permutation(len(rows))
    rows = [rows[i] for i in order]
    df = pl.DataFrame(
        {
            "uid": [r[0] for r in rows],
            "caption": [r[1] for r in rows],
            "url": [f"http://example.invalid/{r[0]}.jpg" for r in rows],
            "title": [f"My {FRUITS[r[2]]} photo" if r[2] >= 0 and i % 5 else None for i, r in enumerate(rows)],
            "tags": [f"fruit, {FRUITS[r[2]]}, food" if r[2] >= 0 else "misc" for r in rows],
            "description": [f"Bought at the market ({i})" for i in range(len(rows))],
        }
    )
    src = folder / "pool.parquet"
    df.write_parquet(src, row_group_size=97)
    vocab = folder / "fruits.tsv"
    vocab.write_text(
        "wnid\tname\tlemmas\n" + "".join(f"n{i:08d}\t{f}\t{f}\n" for i, f in enumerate(FRUITS)), encoding="utf-8"
    )
    return src, vocab


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> tuple[Path, Path]:
    return make_source(tmp_path_factory.mktemp("pool"))


def build_args(pool, out: Path, *extra: str) -> list[str]:
    src, vocab = pool
    return ["build", "--source", str(src), "--vocab", str(vocab), "--out-root", str(out), *extra]


def only_folder(root: Path) -> Path:
    (folder,) = [p for p in root.iterdir() if not p.name.startswith(".")]
    return folder


def test_build_writes_the_manifest_folder(pool, tmp_path, capsys):
    code, out, err = run_cli(build_args(pool, tmp_path, "--imbalance", "10", "--max-per-class", "100", "--eval-per-class", "5"), capsys)
    assert code == 0, err
    folder = tmp_path / "pool-fruits-exp-r10-max100-template-eval5"
    assert str(folder) in out
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["card.md", "classes.parquet", "classes.tsv", "eval.parquet", "freq.png", "manifest.parquet", "recipe.yaml", "stats.json"]
    m = pl.read_parquet(folder / "manifest.parquet")
    assert m.columns == ["uid", "label", "wnid", "class_name", "caption", "source_caption", "url", "path", "source", "split"]
    counts = m.group_by("class_name").len().sort("len", descending=True)
    want = [round(100 * 10 ** (-i / 5) + 1e-9) for i in range(6)]
    assert counts["len"].to_list() == want
    assert (m["caption"] == "a photo of a " + m["class_name"]).all()
    assert m.select((pl.col("source_caption").str.contains(pl.col("class_name"))).all()).item()
    ev = pl.read_parquet(folder / "eval.parquet")
    assert ev.group_by("label").len()["len"].to_list() == [5] * 6
    assert set(ev["uid"]).isdisjoint(m["uid"])
    assert (ev["split"] == "eval").all() and (m["split"] == "train").all()
    tsv = [line.split("\t") for line in (folder / "classes.tsv").read_text().splitlines()]
    assert [n for n, _ in tsv] == FRUITS and sorted(int(c) for _, c in tsv) == sorted(want)
    classes = pl.read_parquet(folder / "classes.parquet")
    assert (classes["target"] == classes["count"]).all() and classes["label"].to_list() == list(range(6))
    card = (folder / "card.md").read_text()
    assert "Every class got exactly its target" in card and "freq.png" in card
    assert Recipe.load(folder / "recipe.yaml").vocab == str(pool[1])
    stats = json.loads((folder / "stats.json").read_text())
    assert stats["dropped"]["no_class"] == 50


def test_same_recipe_same_bytes_other_seed_other_rows(pool, tmp_path, capsys):
    args = ("--imbalance", "5", "--captions", "openai80")
    assert run_cli(build_args(pool, tmp_path / "a", *args), capsys)[0] == 0
    assert run_cli(build_args(pool, tmp_path / "b", *args), capsys)[0] == 0
    assert run_cli(build_args(pool, tmp_path / "c", *args, "--seed", "1"), capsys)[0] == 0
    a, b, c = (only_folder(tmp_path / x) for x in "abc")
    assert file_sha256(a / "manifest.parquet") == file_sha256(b / "manifest.parquet")
    assert (a / "classes.tsv").read_text() == (c / "classes.tsv").read_text()
    ma, mc = pl.read_parquet(a / "manifest.parquet"), pl.read_parquet(c / "manifest.parquet")
    assert set(ma["uid"]) != set(mc["uid"])
    # rebuilding from the saved recipe gives the same bytes again
    code, _, err = run_cli(["build", "--recipe", str(a / "recipe.yaml"), "--out-root", str(tmp_path / "d")], capsys)
    assert code == 0, err
    assert file_sha256(only_folder(tmp_path / "d") / "manifest.parquet") == file_sha256(a / "manifest.parquet")


def test_recipe_options_are_overridden_by_the_command_line(pool, tmp_path, capsys):
    assert run_cli(build_args(pool, tmp_path, "--imbalance", "5", "--name", "base"), capsys)[0] == 0
    code, _, err = run_cli(
        ["build", "--recipe", str(tmp_path / "base" / "recipe.yaml"), "--captions", "cname", "--total", "300"], capsys
    )
    assert code == 0, err
    folder = tmp_path / "pool-fruits-exp-r5-n300-cname"  # out_root came from the recipe, the name did not
    m = pl.read_parquet(folder / "manifest.parquet")
    assert m.height == 300 and (m["caption"] == m["class_name"]).all()
    assert Recipe.load(folder / "recipe.yaml").imbalance == 5.0


def test_shortfall_fails_before_writing_with_a_table(pool, tmp_path, capsys):
    code, out, err = run_cli(build_args(pool, tmp_path, "--profile", "balanced", "--max-per-class", "100"), capsys)
    assert code == 2
    assert "3 class(es) fall short" in err and "nothing was written" in err
    cells = [[c.strip() for c in ln.split("│")[1:-1]] for ln in err.splitlines() if ln.startswith("│")]
    table = {c[0]: c[1:] for c in cells}
    # fig has 20 rows of its own and wins the 10 apple-and-fig rows (the rarer class takes them)
    assert table == {"elderberry": ["30", "0", "100", "100", "70"], "fig": ["30", "0", "100", "100", "70"], "durian": ["60", "0", "100", "100", "40"]}
    assert not tmp_path.exists() or not any(tmp_path.iterdir())
    assert "lower the targets" in err and "no row in the pool" not in err
    # a class the source never names: no target is low enough, the advice says what is
    src, vocab = pool
    more = tmp_path.parent / f"{tmp_path.name}-vocab.tsv"
    more.write_text(vocab.read_text(encoding="utf-8") + "n00000099\tkiwi\tkiwi\n", encoding="utf-8")
    code, _, err = run_cli(["build", "--source", str(src), "--vocab", str(more), "--out-root", str(tmp_path), "--profile", "balanced", "--max-per-class", "100"], capsys)
    assert code == 2 and "4 class(es) fall short" in err
    assert "1 of them have no row in the pool (the source never names them" in err and "(--classes FILE" in err
    assert "for the others, lower the targets" in err


def test_allow_shortfall_keeps_what_exists_and_says_so(pool, tmp_path, capsys):
    code, out, err = run_cli(build_args(pool, tmp_path, "--profile", "balanced", "--max-per-class", "100", "--allow-shortfall"), capsys)
    assert code == 0, err
    folder = only_folder(tmp_path)
    classes = pl.read_parquet(folder / "classes.parquet").sort("label")
    assert classes["target"].to_list() == [100] * 6
    assert classes["count"].to_list() == [100, 100, 100, 60, 30, 30]
    assert "**Shortfall**: 3 class(es)" in (folder / "card.md").read_text()


def test_multi_class_captions_follow_the_label_policy(pool, tmp_path, capsys):
    for policy in ("all", "drop", "first"):
        assert run_cli(build_args(pool, tmp_path, "--profile", "natural", "--label-policy", policy), capsys)[0] == 0
    pools = {
        p: dict(pl.read_parquet(tmp_path / f"pool-fruits{'' if p == 'all' else '-' + p}-natural-template" / "classes.parquet").select("name", "pool").iter_rows())
        for p in ("all", "drop", "first")
    }
    assert pools["all"]["fig"] == 30 and pools["all"]["apple"] == 400  # the rarer class wins the row
    assert pools["drop"]["fig"] == 20 and pools["drop"]["apple"] == 400
    assert pools["first"]["fig"] == 20 and pools["first"]["apple"] == 410


def test_trim_tail_and_classes_subset(pool, tmp_path, capsys):
    code, _, err = run_cli(build_args(pool, tmp_path, "--profile", "natural", "--trim-tail", "2:0", "--name", "t"), capsys)
    assert code == 0, err
    c = pl.read_parquet(tmp_path / "t" / "classes.parquet").sort("head_rank")
    assert c["count"].to_list() == [400, 200, 120, 60, 0, 0]
    assert c["name"].to_list()[-2:] == ["elderberry", "fig"]
    lst = tmp_path / "two.txt"
    lst.write_text("cherry\nn00000005\n", encoding="utf-8")
    code, _, err = run_cli(build_args(pool, tmp_path, "--class-list", str(lst), "--profile", "balanced", "--name", "k2"), capsys)
    assert code == 0, err
    m = pl.read_parquet(tmp_path / "k2" / "manifest.parquet")
    assert sorted(set(zip(m["label"], m["class_name"]))) == [(0, "cherry"), (1, "fig")]
    assert m.group_by("label").len()["len"].to_list() == [30, 30]


def test_caption_modes_from_source_text(pool, tmp_path, capsys):
    code, _, err = run_cli(build_args(pool, tmp_path, "--profile", "natural", "--captions", "title", "--name", "t"), capsys)
    assert code == 0, err
    m = pl.read_parquet(tmp_path / "t" / "manifest.parquet")
    assert m.height < 840 and m["caption"].str.starts_with("My ").all()
    stats = json.loads((tmp_path / "t" / "stats.json").read_text())
    assert stats["dropped"]["no_text"] > 100
    assert "no caption / title text (null or blank; --captions title)" in (tmp_path / "t" / "card.md").read_text()
    # +cname keeps every image: the class name alone where the row has no title (the study's --append_cname)
    code, _, err = run_cli(build_args(pool, tmp_path, "--profile", "natural", "--captions", "title+cname", "--name", "tc"), capsys)
    assert code == 0, err
    mc = pl.read_parquet(tmp_path / "tc" / "manifest.parquet")
    assert mc.height > m.height
    titled = mc["caption"].str.starts_with(mc["class_name"] + " My ")
    assert (titled | (mc["caption"] == mc["class_name"])).all() and titled.sum() == m.height


def test_bad_options_exit_2_with_one_line(pool, tmp_path, capsys):
    cases = [
        (["--profile", "zipf"], "--profile 'zipf'"),
        (["--captions", "poem"], "--captions 'poem'"),
        (["--trim-tail", "x"], "--trim-tail 'x'"),
        (["--total", "10", "--fraction", "0.5"], "at most one"),
        (["--classes", "99"], "--classes 99"),
        (["--label-policy", "some"], "label_policy 'some'"),
    ]
    for extra, message in cases:
        code, _, err = run_cli(build_args(pool, tmp_path, *extra), capsys)
        assert code == 2 and message in err, (extra, err)
        assert len(err.strip().splitlines()) == 1, err  # checked before any work: no status lines either
    code, _, err = run_cli(["build", "--source", str(tmp_path / "nope.parquet"), "--out-root", str(tmp_path)], capsys)
    assert code == 2 and "nope.parquet" in err
    assert not any(p for p in tmp_path.iterdir() if not p.name.startswith("."))


def test_interrupted_write_leaves_nothing_that_looks_finished(pool, tmp_path, capsys, monkeypatch):
    import curate.manifest

    def disk_full(*args, **kwargs):  # the last file of the folder fails to write
        raise OSError(28, "No space left on device", str(tmp_path / "x" / "card.md"))

    monkeypatch.setattr(curate.manifest, "render_card", disk_full)
    code, _, err = run_cli(build_args(pool, tmp_path, "--name", "x"), capsys)
    assert code == 2 and "card.md: cannot write (No space left on device)" in err
    assert list(tmp_path.iterdir()) == []  # neither x nor a temporary folder


def test_rebuild_keeps_derived_folders(pool, tmp_path, capsys):
    assert run_cli(build_args(pool, tmp_path, "--name", "x"), capsys)[0] == 0
    (tmp_path / "x" / "shards").mkdir()
    (tmp_path / "x" / "shards" / "marker").write_text("kept")
    assert run_cli(build_args(pool, tmp_path, "--name", "x", "--seed", "3"), capsys)[0] == 0
    assert (tmp_path / "x" / "shards" / "marker").read_text() == "kept"


def test_a_build_never_replaces_what_it_did_not_write(pool, tmp_path, capsys, monkeypatch):
    import curate.manifest

    # a folder of the user's under the manifest's name: refused before any work, nothing touched
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("my notes")
    monkeypatch.setattr(curate.manifest, "pool_pass", lambda *a, **k: pytest.fail("worked before refusing"))
    code, _, err = run_cli(build_args(pool, tmp_path, "--name", "mine"), capsys)
    assert code == 2 and err.count("\n") == 1 and "notes.txt" in err and "--name" in err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "my notes" and sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]
    # a file of that name
    (tmp_path / "afile").write_text("data")
    code, _, err = run_cli(build_args(pool, tmp_path, "--name", "afile"), capsys)
    assert code == 2 and "not a folder" in err and (tmp_path / "afile").read_text() == "data"
    monkeypatch.undo()
    # what curate wrote or added there (a manifest, its images/, shards/ and export/) it may replace
    assert run_cli(build_args(pool, tmp_path, "--name", "x"), capsys)[0] == 0
    assert run_cli(["export", "x", "--format", "jsonl", "--out-root", str(tmp_path)], capsys)[0] == 0
    for d in ("images", "shards"):
        (tmp_path / "x" / d).mkdir()
    assert run_cli(build_args(pool, tmp_path, "--name", "x", "--seed", "5"), capsys)[0] == 0
    (tmp_path / "x" / ".DS_Store").write_bytes(b"\0")  # a file browser's, in any folder it shows
    assert run_cli(build_args(pool, tmp_path, "--name", "x", "--seed", "4"), capsys)[0] == 0
    # a stray file added later is caught at the rebuild too
    (tmp_path / "x" / "todo.md").write_text("x")
    code, _, err = run_cli(build_args(pool, tmp_path, "--name", "x", "--seed", "6"), capsys)
    assert code == 2 and "todo.md" in err and (tmp_path / "x" / "todo.md").exists()


def test_a_total_too_small_for_the_imbalance_says_so(pool, tmp_path, capsys):
    # 6 classes at max/min 10 need 1 + ... + 10 rows at least; 8 rows cannot hold it
    code, _, err = run_cli(build_args(pool, tmp_path, "--imbalance", "10", "--total", "8", "--name", "t"), capsys)
    assert code == 0
    assert "note: --total 8 over 6 classes cannot hold max/min = 10" in err and "classes get none" in err
    code, _, err = run_cli(build_args(pool, tmp_path, "--imbalance", "10", "--total", "300", "--name", "u"), capsys)
    assert code == 0 and "cannot hold" not in err


def test_a_pipelines_dry_run_prints_one_table_naming_each_variant(pool, tmp_path, capsys):
    src, vocab = pool
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        f"base: {{source: {src}, vocab: {vocab}}}\nvariants:\n  - {{imbalance: 1, name: flat}}\n  - {{imbalance: 10, name: steep}}\n",
        encoding="utf-8",
    )
    code, out, err = run_cli(["run", str(pipeline), "--dry-run", "--out-root", str(tmp_path / "m")], capsys)
    assert code == 0, err
    rows = [line.split("\t") for line in out.splitlines()]
    assert rows[0] == ["manifest", "head_rank", "name", "pool", "target", "count", "eval_count"]
    assert [r[0] for r in rows[1:]] == ["flat"] * len(FRUITS) + ["steep"] * len(FRUITS)
    assert err.count("would hold") == 2 and not (tmp_path / "m").exists()


def test_export_formats(pool, tmp_path, capsys):
    assert run_cli(build_args(pool, tmp_path, "--name", "x", "--eval-per-class", "2"), capsys)[0] == 0
    m = pl.read_parquet(tmp_path / "x" / "manifest.parquet")
    for fmt, suffix in (("openclip-csv", "csv"), ("img2dataset", "parquet"), ("jsonl", "jsonl")):
        code, out, err = run_cli(["export", "x", "--format", fmt, "--out-root", str(tmp_path)], capsys)
        assert code == 0, err
        train = tmp_path / "x" / "export" / f"train.{fmt}.{suffix}"
        assert str(train) in out and (tmp_path / "x" / "export" / f"eval.{fmt}.{suffix}").is_file()
    csv = pl.read_csv(tmp_path / "x" / "export" / "train.openclip-csv.csv", separator="\t")
    assert csv.columns == ["filepath", "title"] and csv["title"].to_list() == m["caption"].to_list()
    i2d = pl.read_parquet(tmp_path / "x" / "export" / "train.img2dataset.parquet")
    assert i2d.columns == ["url", "caption", "uid", "label"] and i2d["url"].to_list() == m["url"].to_list()
    lines = (tmp_path / "x" / "export" / "train.jsonl.jsonl").read_text().splitlines()
    assert len(lines) == m.height and json.loads(lines[0])["uid"] == m["uid"][0]
    code, _, err = run_cli(["export", "x", "--format", "tfrecord", "--out-root", str(tmp_path)], capsys)
    assert code == 2 and "tfrecord" in err


def test_run_builds_every_variant_and_reports_failures(pool, tmp_path, capsys):
    src, vocab = pool
    pipe = tmp_path / "sweep.yaml"
    pipe.write_text(
        f"base: {{vocab: {vocab}, out_root: {tmp_path / 'm'}, captions: cname}}\n"
        "variants:\n  - {imbalance: 1}\n  - {imbalance: 10}\n  - {profile: natural, trim_tail: 50:0}\n",
        encoding="utf-8",
    )
    code, out, err = run_cli(["run", str(pipe), "--source", str(src)], capsys)
    assert code == 2 and "1 of 3 variant(s) failed" in err and "no training rows" in err
    built = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert built == ["pool-fruits-exp-r1-cname", "pool-fruits-exp-r10-cname"]
    r1 = pl.read_parquet(tmp_path / "m" / built[0] / "classes.parquet")
    assert r1["count"].unique().to_list() == [30]  # elderberry and fig (with the shared rows) have 30


def test_the_pool_pass_streams_in_batches(pool, tmp_path, monkeypatch):
    """The first pass hands the matcher and the key function batches, never the whole source, and
    keeps three small columns per matched row."""
    import curate.manifest
    from curate.sources import open_source
    from curate.vocab import load_vocab

    src = make_source(tmp_path, pools=[20_000, 15_000, 5000, 3000, 1000, 500], unmatched=5000)[0]
    seen: list[int] = []
    real = curate.manifest.stable_keys

    def recording(values, seed, salt=""):
        seen.append(len(values))
        return real(values, seed, salt)

    monkeypatch.setattr(curate.manifest, "stable_keys", recording)
    monkeypatch.setenv("POLARS_IDEAL_MORSEL_SIZE", "5000")
    source = open_source(str(src))
    vocab = load_vocab(str(pool[1]))
    chosen = curate.manifest.select_classes(vocab, None, seed=0)
    table, reasons = curate.manifest.pool_pass(source, vocab, chosen, Recipe(source=str(src)))
    assert sum(seen) == 49_510 and len(seen) > 1 and max(seen) < 49_510
    assert table.columns == ["row", "key", "label", "labels"] and table.height == 44_510
    # ten rows name apple and fig; only they carry a list
    assert table["labels"].drop_nulls().to_list() == [[0, 5]] * 10
    assert reasons["no_class"] == 5000


def test_demo_acceptance(tmp_path, capsys):
    code, out, err = run_cli(["build", "--imbalance", "100", "--captions", "template", "--out-root", str(tmp_path)], capsys)
    assert code == 0, err
    folder = tmp_path / "demo-exp-r100-template"
    counts = [int(line.split("\t")[1]) for line in (folder / "classes.tsv").read_text().splitlines()]
    assert max(counts) / min(counts) == 100
    m = pl.read_parquet(folder / "manifest.parquet")
    assert (m["caption"] == "a photo of a " + m["class_name"]).all()
    assert m["uid"].n_unique() == m.height == sum(counts)
    assert Recipe.load(folder / "recipe.yaml") == Recipe(name="demo-exp-r100-template", vocab="demo", imbalance=100.0, out_root=str(tmp_path))


def test_dry_run_writes_nothing(pool, tmp_path, capsys):
    code, out, err = run_cli(build_args(pool, tmp_path, "--imbalance", "10", "--dry-run"), capsys)
    assert code == 0, err
    assert "dry run: pool-fruits-exp-r10-template would hold" in err
    # the answer, the class table, whole on stdout: tab-separated in a pipe, a line per class
    lines = out.splitlines()
    assert lines[0].split("\t") == ["head_rank", "name", "pool", "target", "count", "eval_count"]
    assert len(lines) == 1 + len(FRUITS) and lines[1].split("\t")[:3] == ["0", "apple", "400"]
    assert not tmp_path.exists() or list(tmp_path.iterdir()) == []


def test_labels_from_the_ground_truth_wnid_column(pool, tmp_path, capsys):
    n = [40, 30, 0, 0, 0, 12]
    df = pl.DataFrame(
        {
            "uid": [f"gt-{c}-{j}" for c in range(6) for j in range(n[c])] + ["gt-x"],
            "caption": ["a picture" for c in range(6) for _ in range(n[c])] + ["a picture"],
            "url": [f"http://x.invalid/{c}/{j}.jpg" for c in range(6) for j in range(n[c])] + ["http://x.invalid/x.jpg"],
            "wnid": [f"n{c:08d}" for c in range(6) for _ in range(n[c])] + ["n99999999"],
        }
    )
    src = tmp_path / "gt.parquet"
    df.write_parquet(src)
    code, out, err = run_cli(
        ["build", "--source", str(src), "--vocab", str(pool[1]), "--out-root", str(tmp_path / "m"), "--labels-from", "wnid",
         "--profile", "natural", "--classes", str(_write(tmp_path / "k.txt", "apple\nbanana\nfig\n")), "--name", "gt"],
        capsys,
    )
    assert code == 0, err
    c = pl.read_parquet(tmp_path / "m" / "gt" / "classes.parquet")
    assert dict(zip(c["name"], c["count"])) == {"apple": 40, "banana": 30, "fig": 12}
    stats = json.loads((tmp_path / "m" / "gt" / "stats.json").read_text())
    assert stats["dropped"]["no_class"] == 1
    code, _, err = run_cli(["build", "--source", str(pool[0]), "--labels-from", "wnid", "--out-root", str(tmp_path)], capsys)
    assert code == 2 and "no row of source" in err and "has a wnid" in err and "890 wnid missing or not in the vocabulary" in err


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_repeated_source_ids_are_an_error_naming_the_first(tmp_path, capsys):
    src = tmp_path / "same.parquet"
    n = 40
    pl.DataFrame(
        {"id": ["unique-0", *(["same"] * (n - 1))], "caption": [f"an {FRUITS[i % 2]} photo {i}" for i in range(n)]}
    ).write_parquet(src)
    vocab = _write(tmp_path / "v.tsv", "name\n" + "\n".join(FRUITS[:2]) + "\n")
    code, _, err = run_cli(["build", "--source", str(src), "--vocab", str(vocab), "--out-root", str(tmp_path / "m")], capsys)
    assert code == 2, err
    assert "uid 'same' appears more than once (source rows 1 and 2)" in err
    assert not (tmp_path / "m").exists() or not list((tmp_path / "m").iterdir())


def test_a_rebuild_killed_between_its_renames_is_recovered_by_the_next_command(pool, tmp_path, capsys):
    from test_util import dead_pid

    assert run_cli(build_args(pool, tmp_path, "--name", "x"), capsys)[0] == 0
    (tmp_path / "x" / "images").mkdir()
    (tmp_path / "x" / "images" / "marker").write_text("kept")
    before = (tmp_path / "x" / "manifest.parquet").read_bytes()
    # killed after moving the old folder aside, before the new one took its place
    (tmp_path / "x").rename(tmp_path / f".x.old-{dead_pid()}")
    code, _, err = run_cli(["export", "x", "--format", "jsonl", "--out-root", str(tmp_path), "--out", str(tmp_path / "e")], capsys)
    assert code == 0, err
    assert (tmp_path / "x" / "manifest.parquet").read_bytes() == before
    assert (tmp_path / "x" / "images" / "marker").read_text() == "kept"
    # killed after the new folder took its place, before images/ moved over from the old one
    old = tmp_path / f".x.old-{dead_pid()}"
    old.mkdir()
    (tmp_path / "x" / "images").rename(old / "images")
    (tmp_path / "x" / "shards").mkdir()
    code, _, err = run_cli(["shards", str(tmp_path / "x"), "--skip-download"], capsys)
    assert (tmp_path / "x" / "images" / "marker").read_text() == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e", "x"]


def test_a_profile_that_empties_classes_is_refused_unless_asked(pool, tmp_path, capsys):
    code, _, err = run_cli(build_args(pool, tmp_path, "--imbalance", "1e9"), capsys)
    assert code == 2, err
    assert "4 of 6 classes would get no training rows though the pool has some" in err
    assert "--allow-empty-classes" in err and len(err.strip().splitlines()) == 2  # the status line, then the error
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    code, _, err = run_cli(build_args(pool, tmp_path, "--imbalance", "1e9", "--allow-empty-classes", "--name", "e"), capsys)
    assert code == 0, err
    assert Recipe.load(tmp_path / "e" / "recipe.yaml").allow_empty_classes is True
    assert (pl.read_parquet(tmp_path / "e" / "classes.parquet")["count"] == 0).sum() == 4
    # a tail trimmed to zero on purpose is no accident
    assert run_cli(build_args(pool, tmp_path, "--trim-tail", "2:0", "--name", "t"), capsys)[0] == 0


# ---------------------------------------------------------------------------------------------
# --keep-unmatched: the open world (rows naming no class, unlabelled)


def test_keep_unmatched_keeps_the_rows_naming_no_class_unlabelled(pool, tmp_path, capsys):
    args = ("--imbalance", "10", "--max-per-class", "100", "--eval-per-class", "5")
    for out, extra in (("a", ["--keep-unmatched"]), ("b", ["--keep-unmatched"]), ("plain", [])):
        code, stdout, err = run_cli(build_args(pool, tmp_path / out, *args, *extra), capsys)
        assert code == 0, err
        assert ("50 unlabelled rows (--keep-unmatched)" in stdout) == bool(extra)
    a, b, plain = (only_folder(tmp_path / x) for x in ("a", "b", "plain"))
    assert a.name == "pool-fruits-open-exp-r10-max100-template-eval5"
    assert file_sha256(a / "manifest.parquet") == file_sha256(b / "manifest.parquet")  # deterministic
    m, p = pl.read_parquet(a / "manifest.parquet"), pl.read_parquet(plain / "manifest.parquet")
    none = m.filter(pl.col("label") == -1)
    # the source's 50 captions naming no fruit, every one, in the training split, with their own text
    assert sorted(none["uid"]) == sorted(f"none-{j}" for j in range(50))
    assert none["wnid"].null_count() == none["class_name"].null_count() == 50
    assert (none["caption"] == none["source_caption"]).all() and none["caption"].str.starts_with("nothing to see here").all()
    assert (none["split"] == "train").all() and m.schema == p.schema
    # the labelled rows, the eval split and the class table are the build without the flag, byte for byte
    assert m.filter(pl.col("label") >= 0).equals(p) and p["label"].min() >= 0
    assert file_sha256(a / "eval.parquet") == file_sha256(plain / "eval.parquet")
    assert (a / "classes.tsv").read_text() == (plain / "classes.tsv").read_text()
    # a seeded shuffle of all rows: the unlabelled ones are spread through the file, not appended
    at = m.with_row_index().filter(pl.col("label") == -1)["index"]
    assert at.min() < m.height // 4 and at.max() > 3 * m.height // 4
    stats, plain_stats = (json.loads((f / "stats.json").read_text()) for f in (a, plain))
    assert stats["stats"]["unlabelled"] == 50 and "unlabelled" not in plain_stats["stats"]
    assert stats["dropped"]["no_class"] == 0 and plain_stats["dropped"]["no_class"] == 50
    assert stats["stats"]["total"] == plain_stats["stats"]["total"] == p.height  # not a class: outside the statistics
    card = (a / "card.md").read_text()
    assert "| unlabelled training rows (no class, label -1; --keep-unmatched) | all | 50 |" in card
    assert Recipe.load(a / "recipe.yaml").keep_unmatched is True


def test_keep_unmatched_with_scale_label_policy_and_caption_modes(pool, tmp_path, capsys):
    def build(name, *extra):
        code, _, err = run_cli(build_args(pool, tmp_path, "--profile", "natural", "--keep-unmatched", "--name", name, *extra), capsys)
        assert code == 0, err
        return pl.read_parquet(tmp_path / name / "manifest.parquet")

    # --total counts the labelled rows; the unlabelled ones come on top, all of them
    m = build("n", "--total", "120", "--sampling", "rows")
    assert (m["label"] >= 0).sum() == 120 and (m["label"] == -1).sum() == 50
    # label policy each: a caption naming two classes is a row of each, one naming none is one row
    m = build("each", "--label-policy", "each")
    assert m.height == sum(POOLS) + 2 * 10 + 50 and m["uid"].is_unique().all() and (m["label"] == -1).sum() == 50
    # a mode that writes only the class keeps the row's own caption; a text mode its text without the class name
    m = build("tags", "--captions", "tags+cname")
    none = m.filter(pl.col("label") == -1)
    assert (none["caption"] == "misc").all()
    assert m.filter(pl.col("label") >= 0)["caption"].str.starts_with(m.filter(pl.col("label") >= 0)["class_name"] + " fruit").all()
    # a text mode still needs its text: the rows naming no class have no title, so they leave as no_text
    m = build("title", "--captions", "title")
    assert (m["label"] == -1).sum() == 0
    assert json.loads((tmp_path / "title" / "stats.json").read_text())["stats"]["unlabelled"] == 0
    # as a recipe key, through the checks and overrides every option goes through
    r = Recipe.load(tmp_path / "title" / "recipe.yaml")
    assert r.with_overrides(keep_unmatched=False).keep_unmatched is False and r.with_overrides(keep_unmatched=False).name is None
    code, _, err = run_cli(build_args(pool, tmp_path, "--recipe", str(_write(tmp_path / "r.yaml", "keep_unmatched: sometimes\n"))), capsys)
    assert code == 2 and "keep_unmatched must be true or false, got 'sometimes'" in err


def test_unmatched_fraction_keeps_a_nested_share_of_the_unlabelled_rows(pool, tmp_path, capsys):
    def build(name, *extra):
        code, _, err = run_cli(build_args(pool, tmp_path, "--profile", "natural", "--keep-unmatched", "--name", name, *extra), capsys)
        assert code == 0, err
        return pl.read_parquet(tmp_path / name / "manifest.parquet")

    # a share of them, a sample that nests; the labelled rows stay as they were
    full, half, most = build("uf1", "--unmatched-fraction", "1"), build("uf05", "--unmatched-fraction", "0.5"), build("uf08", "--unmatched-fraction", "0.8")
    none_of = {k: set(m.filter(pl.col("label") == -1)["uid"]) for k, m in (("full", full), ("half", half), ("most", most))}
    assert (len(none_of["full"]), len(none_of["half"]), len(none_of["most"])) == (50, 25, 40)
    assert none_of["half"] < none_of["most"] < none_of["full"]
    assert half.filter(pl.col("label") >= 0).equals(full.filter(pl.col("label") >= 0))
    assert json.loads((tmp_path / "uf05" / "stats.json").read_text())["dropped"]["unmatched_not_drawn"] == 25
    assert "names no class, beyond --unmatched-fraction 0.5" in (tmp_path / "uf05" / "card.md").read_text()
    code, _, err = run_cli(build_args(pool, tmp_path, "--unmatched-fraction", "0.5"), capsys)
    assert code == 2 and "unmatched_fraction needs keep_unmatched" in err
    code, out, err = run_cli(build_args(pool, tmp_path / "dry", "--keep-unmatched", "--unmatched-fraction", "0.5", "--dry-run"), capsys)
    assert code == 0, err
    assert "dry run: pool-fruits-open0p5-exp-r1-template would hold 180 training rows and 25 unlabelled rows; nothing written" in err
