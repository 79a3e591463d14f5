"""The per-shard contract (curate.engine.shard) and the local engine, through the real CLI on
parquet files the tests write: shards laid end to end are the single run, partial counts reduce
to the single run's tables byte for byte, a killed run resumes, bad shard specs fail clearly."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from cli_helpers import run_cli

from curate.engine.shard import Shard, parse_shard
from curate.errors import CurateError
from curate.util import file_sha256

CAPTIONS = [
    "A tiger shark near the reef", "two geese on a pond", "my Golden Retriever at the beach", "nothing to see here",
    "a crane lifting steel at the construction site", "a crane bird in the marsh", "Tabby cat &amp; a lemon",
    "goldfish bowl", "great white shark and a tiger shark", "hot-dog stand", "an old pickup truck", "Ｂａｎａｎａ split",
]


@pytest.fixture(scope="module")
def three_files(tmp_path_factory):
    """Three parquet files of different lengths, one with its own uid column and two without
    (positional uids), so a shard boundary falls inside files and across them."""
    root = tmp_path_factory.mktemp("src")
    rng = np.random.default_rng(7)
    for name, n, own_uid in (("a.parquet", 23, False), ("b.parquet", 41, True), ("c.parquet", 17, False)):
        caps = [CAPTIONS[i] for i in rng.integers(0, len(CAPTIONS), size=n)]
        df = pl.DataFrame({"caption": caps})
        if own_uid:
            df = df.with_columns(pl.format("b-{}", pl.int_range(pl.len())).alias("uid"))
        df.write_parquet(root / name)
    return root


def test_shard_specs():
    assert parse_shard("3/16") == Shard(3, 16)
    assert Shard(3, 16).name == "shard-00003-of-00016"
    env = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "8", "SLURM_ARRAY_TASK_MIN": "1"}
    assert parse_shard("slurm", env) == Shard(4, 8)
    for bad, env in (("16/16", {}), ("-1/4", {}), ("a/b", {}), ("slurm", {}), ("slurm", {"SLURM_ARRAY_TASK_ID": "9", "SLURM_ARRAY_TASK_COUNT": "4"})):
        with pytest.raises(CurateError):
            parse_shard(bad, env)
    # the bounds tile the rows exactly, whatever the split
    for n_rows in (0, 1, 7, 81):
        for n in (1, 2, 5, 9):
            spans = [Shard(i, n).bounds(n_rows) for i in range(n)]
            assert spans[0][0] == 0 and spans[-1][1] == n_rows
            assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))


def test_match_shards_end_to_end_are_the_single_run(three_files, tmp_path, capsys):
    single = tmp_path / "single.parquet"
    assert run_cli(["match", str(three_files), "--vocab", "imagenet1k", "--out", str(single)], capsys)[0] == 0
    out = tmp_path / "shards"
    for i in range(4):
        code, _, err = run_cli(["match", str(three_files), "--vocab", "imagenet1k", "--out", str(out), "--shard", f"{i}/4"], capsys)
        assert code == 0, err
    parts = [pl.read_parquet(out / f"shard-{i:05d}-of-00004.parquet") for i in range(4)]
    assert [p.height for p in parts] == [20, 20, 20, 21]
    whole = pl.read_parquet(single)
    assert pl.concat(parts).equals(whole)
    assert whole["labels"].list.len().sum() > 0 and whole["uid"].str.starts_with("b-").sum() == 41
    # each shard's partial counts are what its rows hold
    body = json.loads((out / "shard-00002-of-00004.counts.json").read_text())
    assert body["rows"] == 20 and body["matched"] == int((parts[2]["labels"].list.len() > 0).sum())
    assert sum(body["counts"]) == parts[2]["labels"].list.unique().list.len().sum()


def test_shards_reduce_to_the_single_run_byte_for_byte(three_files, tmp_path, capsys):
    assert run_cli(["freq", str(three_files), "--vocab", "imagenet1k", "--out", str(tmp_path / "single")], capsys)[0] == 0
    # freq shards, split 3 ways, then reduced
    for i in range(3):
        assert run_cli(["freq", str(three_files), "--vocab", "imagenet1k", "--out", str(tmp_path / "fp"), "--shard", f"{i}/3"], capsys)[0] == 0
    assert run_cli(["freq", str(tmp_path / "fp"), "--reduce", "--out", str(tmp_path / "reduced")], capsys)[0] == 0
    # match shards, split 5 ways here in one go, reduced by the same command
    assert run_cli(["match", str(three_files), "--vocab", "imagenet1k", "--out", str(tmp_path / "mp"), "--shards", "5"], capsys)[0] == 0
    assert run_cli(["freq", str(tmp_path / "mp"), "--reduce", "--out", str(tmp_path / "reduced5")], capsys)[0] == 0
    # and freq --shards 2: partials under OUT/shards, the tables in OUT
    assert run_cli(["freq", str(three_files), "--vocab", "imagenet1k", "--out", str(tmp_path / "two"), "--shards", "2"], capsys)[0] == 0
    for name in ("classes.tsv", "classes.parquet", "stats.json", "freq.png"):
        want = file_sha256(tmp_path / "single" / name)
        for folder in ("reduced", "reduced5", "two"):
            assert file_sha256(tmp_path / folder / name) == want, (folder, name)


def test_a_killed_run_resumes_and_skips_completed_shards(three_files, tmp_path, capsys):
    out = tmp_path / "mp"
    args = ["match", str(three_files), "--vocab", "imagenet1k", "--out", str(out), "--shards", "3"]
    assert run_cli(args, capsys)[0] == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    # as if the job died while writing shard 1: its rows written, no marker yet
    (out / "shard-00001-of-00003.done").unlink()
    (out / "shard-00001-of-00003.counts.json").unlink()
    stale = out / ".shard-00001-of-00003.parquet.k1ll3d.tmp"  # what a SIGKILL mid-write leaves
    stale.write_bytes(b"half a parquet file")
    code, _, err = run_cli(args, capsys)
    assert not stale.exists()
    assert code == 0 and "1 run now, 2 already complete" in err
    after = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert set(after) == set(before)
    assert [n for n in sorted(after) if after[n] != before.get(n)] == [
        "shard-00001-of-00003.counts.json", "shard-00001-of-00003.done", "shard-00001-of-00003.parquet"
    ]
    # a single shard reports the skip too
    code, _, err = run_cli([*args[:-2], "--shard", "2/3"], capsys)
    assert code == 0 and "already complete" in err


def test_reduce_refuses_missing_or_mixed_shards(three_files, tmp_path, capsys):
    out = tmp_path / "fp"
    assert run_cli(["freq", str(three_files), "--vocab", "imagenet1k", "--out", str(out), "--shard", "0/3"], capsys)[0] == 0
    code, _, err = run_cli(["freq", str(out), "--reduce", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "2 of 3 shards are not complete (1, 2)" in err
    # a shard of another run (other policy) in the same folder is an error, not a mix
    code, _, err = run_cli(["freq", str(three_files), "--vocab", "imagenet1k", "--policy", "drop", "--out", str(out), "--shard", "1/3"], capsys)
    assert code == 2 and "another run" in err and "policy" in err
    assert not (tmp_path / "r").exists()
    code, _, err = run_cli(["match", str(three_files), "--out", str(tmp_path / "x"), "--shard", "1/3", "--shards", "3"], capsys)
    assert code == 2 and "--shard" in err
    code, _, err = run_cli(["match", str(three_files), "--out", str(tmp_path / "m.parquet"), "--shard", "1/3"], capsys)
    assert code == 2 and "a folder of shard files" in err


def test_engine_names_are_checked(three_files, tmp_path, capsys):
    code, _, err = run_cli(["match", str(three_files), "--vocab", "imagenet1k", "--out", str(tmp_path / "x"), "--engine", "spark"], capsys)
    assert code == 2 and "--engine 'spark'" in err
