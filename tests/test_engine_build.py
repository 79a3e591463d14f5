"""``curate build`` per shard (curate.engine.build), through the real CLI on parquet files the tests
write: split 1, 2 or 3 ways, the manifest folder is the single build's byte for byte; a killed run
resumes, skipping completed shards; a work folder of another build is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from cli_helpers import run_cli

from curate.util import file_sha256

FRUITS = ["apple", "banana", "cherry", "durian", "elderberry", "fig"]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> tuple[Path, Path]:
    """Three parquet files of different lengths (one with its own uid column, two with positional
    uids) of captions naming one fruit, two fruits or none, with urls and titles; and the vocab."""
    root = tmp_path_factory.mktemp("src")
    rng = np.random.default_rng(11)
    weights = np.array([40, 20, 12, 6, 3, 2], dtype=float)
    for name, n, own_uid in (("a.parquet", 170, True), ("b.parquet", 230, False), ("c.parquet", 95, False)):
        caps, titles = [], []
        for j in range(n):
            kind = rng.random()
            c = int(rng.choice(6, p=weights / weights.sum()))
            if kind < 0.1:
                caps.append(f"nothing to see here {j}")
            elif kind < 0.2:
                caps.append(f"an {FRUITS[c]} next to a {FRUITS[(c + 3) % 6]}, shot {j}")
            else:
                caps.append(f"a fresh {FRUITS[c]} on my table, shot {j}")
            titles.append(None if j % 7 == 0 else f"My photo {j}")
        df = pl.DataFrame({"caption": caps, "url": [f"http://example.invalid/{name}/{j}.jpg" for j in range(n)], "title": titles})
        if own_uid:
            df = df.with_columns(pl.format("a-{}", pl.int_range(pl.len())).alias("uid"))
        df.write_parquet(root / name, row_group_size=50)
    vocab = root.parent / "fruits.tsv"
    vocab.write_text("wnid\tname\tlemmas\n" + "".join(f"n{i:08d}\t{f}\t{f}\n" for i, f in enumerate(FRUITS)), encoding="utf-8")
    return root, vocab


RECIPES = {
    "exp": ["--imbalance", "10", "--eval-per-class", "2", "--captions", "synset"],
    # a caption drawn for two classes (two rows, one uid), a seeded sample of rows, the title
    "each-rows": ["--label-policy", "each", "--profile", "natural", "--sampling", "rows", "--total", "150", "--captions", "title+cname"],
    # open world: a seeded share of the rows naming no fruit, unlabelled, captioned by their own
    # title, or their source caption where they have none
    "open": ["--keep-unmatched", "--unmatched-fraction", "0.6", "--imbalance", "5", "--eval-per-class", "1", "--captions", "title+cname"],
}


def _args(source, root: Path, name: str) -> list[str]:
    src, vocab = source
    return ["build", "--source", str(src), "--vocab", str(vocab), "--out-root", str(root), "--name", name, *RECIPES[name]]


def _files(folder: Path) -> dict[str, str]:
    return {p.name: file_sha256(p) for p in sorted(folder.iterdir()) if p.is_file()}


def _sharded(args: list[str], work: Path, n: int, capsys, *, shards: list[int] | None = None) -> None:
    """Round one on every shard, the draw, round two, the manifest."""
    for _ in range(2):
        for i in shards if shards is not None else range(n):
            code, _, err = run_cli([*args, "--shard", f"{i}/{n}", "--work", str(work)], capsys)
            assert code == 0, err
        code, _, err = run_cli([*args, "--reduce", "--work", str(work)], capsys)
        assert code == 0, err


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_a_sharded_build_is_the_single_build_however_split(source, tmp_path, capsys, name):
    args = _args(source, tmp_path / "m", name)
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    single = _files(tmp_path / "m" / name)
    rows = pl.read_parquet(tmp_path / "m" / name / "manifest.parquet")
    assert rows.height > 100 and rows["uid"].n_unique() == rows.height
    if name == "each-rows":
        assert rows["uid"].str.contains("#").sum() > 0  # a caption drawn for both its classes
    elif name == "open":
        stats = json.loads((tmp_path / "m" / name / "stats.json").read_text(encoding="utf-8"))
        open_rows = rows.filter(pl.col("label") == -1)
        assert 0 < open_rows.height == stats["stats"]["unlabelled"] and stats["dropped"]["unmatched_not_drawn"] > 0
        assert open_rows["source_caption"].str.starts_with("nothing to see here").all()
        assert set(open_rows["caption"].str.starts_with("My photo")) == {True, False}  # own title, else own caption
    else:
        assert pl.read_parquet(tmp_path / "m" / name / "eval.parquet").height == 12
    shutil.rmtree(tmp_path / "m" / name)
    for n in (1, 2, 3):
        _sharded(args, tmp_path / f"work{n}", n, capsys)
        folder = tmp_path / "m" / name
        # the same rows as a set, and the same bytes in the documented order (the seeded key)
        assert pl.read_parquet(folder / "manifest.parquet").sort("uid").equals(rows.sort("uid"))
        assert _files(folder) == single, n
        shutil.rmtree(folder)


def test_a_killed_sharded_build_resumes_skipping_completed_shards(source, tmp_path, capsys, monkeypatch):
    args = _args(source, tmp_path / "m", "exp")
    assert run_cli(args, capsys)[0] == 0
    single = _files(tmp_path / "m" / "exp")
    shutil.rmtree(tmp_path / "m" / "exp")
    work = tmp_path / "w"
    # round one: shards 0 and 2 finish; shard 1 is killed midway (a temporary, no marker)
    for i in (0, 2):
        assert run_cli([*args, "--shard", f"{i}/3", "--work", str(work)], capsys)[0] == 0
    (work / "pool" / ".shard-00001-of-00003.parquet.4194301-x.tmp").write_bytes(b"half a file")
    code, _, err = run_cli([*args, "--reduce", "--work", str(work)], capsys)
    assert code == 2 and "1 of 3 shards are not complete (1)" in err
    done = (work / "pool" / "shard-00000-of-00003.parquet").stat().st_mtime_ns
    # the rerun of the whole array (here as SLURM tasks 1..3) redoes only shard 1
    for task in (1, 2, 3):
        monkeypatch.setenv("SLURM_ARRAY_TASK_ID", str(task))
        monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "1")
        monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "3")
        code, _, err = run_cli([*args, "--shard", "slurm", "--work", str(work)], capsys)
        assert code == 0 and ("already complete, skipped" in err) == (task != 2), err
    assert (work / "pool" / "shard-00000-of-00003.parquet").stat().st_mtime_ns == done
    assert not list((work / "pool").glob(".*.tmp"))
    code, _, err = run_cli([*args, "--reduce", "--work", str(work)], capsys)
    assert code == 0 and "now run every shard again" in err
    # round two: shard 1 first, the manifest refused until all are there, then the rest
    assert run_cli([*args, "--shard", "1/3", "--work", str(work)], capsys)[0] == 0
    code, _, err = run_cli([*args, "--reduce", "--work", str(work)], capsys)
    assert code == 2 and "2 of 3 shards are not complete (0, 2)" in err and not (tmp_path / "m" / "exp").exists()
    code, _, err = run_cli([*args, "--shard", "3/4", "--work", str(work)], capsys)
    assert code == 2 and "made from 3 shards" in err
    for i in range(3):
        code, _, err = run_cli([*args, "--shard", f"{i}/3", "--work", str(work)], capsys)
        assert code == 0 and ("already complete, skipped" in err) == (i == 1) and "round two" in err
    assert run_cli([*args, "--reduce", "--work", str(work)], capsys)[0] == 0
    assert _files(tmp_path / "m" / "exp") == single


def test_a_work_folder_of_another_build_is_refused(source, tmp_path, capsys):
    args = _args(source, tmp_path / "m", "exp")
    work = tmp_path / "w"
    assert run_cli([*args, "--shard", "0/2", "--work", str(work)], capsys)[0] == 0
    # round one's pools are another build's when an option shaping them differs
    for extra, option in ((["--label-policy", "drop"], "label_policy"), (["--captions", "title"], "caption_needs")):
        code, _, err = run_cli([*args, *extra, "--shard", "1/2", "--work", str(work)], capsys)
        assert code == 2 and option in err and "another build" in err and len(err.strip().splitlines()) <= 2, err
    # ... not when only the draw's options do: the pool is the same
    assert run_cli([*args, "--imbalance", "5", "--shard", "1/2", "--work", str(work)], capsys)[0] == 0
    code, _, err = run_cli([*args, "--seed", "3", "--reduce", "--work", str(work)], capsys)
    assert code == 2 and "seed" in err
    for extra, message in (
        (["--shard", "0/2"], "need --work"),
        (["--shard", "0/2", "--reduce", "--work", str(work)], "one of --shard"),
        (["--shard", "0/2", "--work", str(work), "--dry-run"], "--dry-run"),
        (["--shard", "2/2", "--work", str(work)], "0..N-1"),
    ):
        code, _, err = run_cli([*args, *extra], capsys)
        assert code == 2 and message in err, (extra, err)


def test_a_sharded_build_refuses_a_manifest_folder_it_may_not_replace_at_round_one(source, tmp_path, capsys):
    args = _args(source, tmp_path / "m", "exp")
    (tmp_path / "m" / "exp").mkdir(parents=True)
    (tmp_path / "m" / "exp" / "notes.txt").write_text("mine")
    work = tmp_path / "w"
    for i in range(2):
        assert run_cli([*args, "--shard", f"{i}/2", "--work", str(work)], capsys)[0] == 0
    # the draw, not the end of round two, says so
    code, _, err = run_cli([*args, "--reduce", "--work", str(work)], capsys)
    assert code == 2 and "notes.txt" in err and not (work / "draw").exists()
    assert (tmp_path / "m" / "exp" / "notes.txt").read_text() == "mine"


def test_a_sharded_build_reads_its_rows_of_a_labels_file(source, tmp_path, capsys):
    # labels matched once by curate match: each shard reads its slice, the manifest is the matching build's
    src, vocab = source
    code, _, err = run_cli(["match", str(src), "--vocab", str(vocab), "--out", str(tmp_path / "labels.parquet")], capsys)
    assert code == 0, err
    args = _args(source, tmp_path / "m", "exp")
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    same = ("manifest.parquet", "eval.parquet", "classes.tsv")
    matched = {k: v for k, v in _files(tmp_path / "m" / "exp").items() if k in same}
    _sharded([*args, "--labels-from", str(tmp_path / "labels.parquet"), "--out-root", str(tmp_path / "f")], tmp_path / "work", 2, capsys)
    assert {k: v for k, v in _files(tmp_path / "f" / "exp").items() if k in same} == matched


def test_a_sharded_build_short_of_its_targets_draws_again_without_matching_again(source, tmp_path, capsys):
    # round one's pools do not depend on --allow-shortfall: after a --reduce that stops short, the
    # --reduce with --allow-shortfall draws from the same files (not rematched), and the manifest
    # is the single build's with --allow-shortfall
    args = [*_args(source, tmp_path / "m", "exp"), "--max-per-class", "400"]
    code, _, err = run_cli([*args, "--allow-shortfall"], capsys)
    assert code == 0, err
    single = _files(tmp_path / "m" / "exp")
    shutil.rmtree(tmp_path / "m" / "exp")
    work = tmp_path / "w"
    for i in range(2):
        assert run_cli([*args, "--shard", f"{i}/2", "--work", str(work)], capsys)[0] == 0
    code, _, err = run_cli([*args, "--reduce", "--work", str(work)], capsys)
    assert code == 2 and "--allow-shortfall" in err and not (work / "draw").exists()
    before = {f.name: f.stat().st_mtime_ns for f in (work / "pool").iterdir()}
    code, _, err = run_cli([*args, "--allow-shortfall", "--reduce", "--work", str(work)], capsys)
    assert code == 0 and "now run every shard again" in err, err
    # a draw option changed once the draw exists: refused in one line saying how to draw again
    code, _, err = run_cli([*args, "--shard", "0/2", "--work", str(work)], capsys)
    assert code == 2 and "allow_shortfall" in err and "draw again" in err and len(err.strip().splitlines()) == 1, err
    for i in range(2):
        code, _, err = run_cli([*args, "--allow-shortfall", "--shard", f"{i}/2", "--work", str(work)], capsys)
        assert code == 0 and "round two" in err, err
    assert run_cli([*args, "--allow-shortfall", "--reduce", "--work", str(work)], capsys)[0] == 0
    assert {f.name: f.stat().st_mtime_ns for f in (work / "pool").iterdir()} == before
    assert _files(tmp_path / "m" / "exp") == single


def test_a_damaged_file_of_round_one_is_named(source, tmp_path, capsys):
    args = _args(source, tmp_path / "m", "exp")
    work = tmp_path / "w"
    for i in range(2):
        assert run_cli([*args, "--shard", f"{i}/2", "--work", str(work)], capsys)[0] == 0
    counts = work / "pool" / "shard-00001-of-00002.counts.json"
    counts.write_text('{"rows": 12', encoding="utf-8")
    code, _, err = run_cli([*args, "--reduce", "--work", str(work)], capsys)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert counts.name in err and "redo shard 1" in err
    # the shard's rerun names it too, not a traceback; removing it and the marker redoes the shard
    code, _, err = run_cli([*args, "--shard", "1/2", "--work", str(work)], capsys)
    assert code == 2 and counts.name in err and "Traceback" not in err
    counts.unlink()
    (work / "pool" / "shard-00001-of-00002.done").unlink()
    (work / "pool" / "shard-00001-of-00002.parquet").write_bytes(b"not parquet")
    assert run_cli([*args, "--shard", "1/2", "--work", str(work)], capsys)[0] == 0
    assert run_cli([*args, "--reduce", "--work", str(work)], capsys)[0] == 0


def test_a_shard_checks_only_its_rows_of_a_labels_file(source, tmp_path, capsys):
    # a uid in the second half differs: shard 0 of 2 never reads it, shard 1 names its row
    src, vocab = source
    labels = tmp_path / "labels.parquet"
    code, _, err = run_cli(["match", str(src), "--vocab", str(vocab), "--out", str(labels)], capsys)
    assert code == 0, err
    table = pl.read_parquet(labels)
    meta = pl.read_parquet_metadata(labels)
    bad = table.height - 3
    table.with_columns(pl.when(pl.int_range(pl.len()) == bad).then(pl.lit("stranger")).otherwise(pl.col("uid")).alias("uid")).write_parquet(labels, metadata=meta)
    args = [*_args(source, tmp_path / "m", "exp"), "--labels-from", str(labels)]
    code, _, err = run_cli([*args, "--shard", "0/2", "--work", str(tmp_path / "w")], capsys)
    assert code == 0, err
    code, _, err = run_cli([*args, "--shard", "1/2", "--work", str(tmp_path / "w")], capsys)
    assert code == 2 and f"row {bad} has uid 'stranger'" in err, err
