"""Match once, decide many times (curate.pool): builds read the matched pool written by the first
one, and give the same bytes as builds that match in place."""

from __future__ import annotations

import os

import numpy as np
import polars as pl
import pytest
from cli_helpers import run_cli

from curate.util import file_sha256

FRUITS = ["apple", "banana", "cherry", "durian", "elderberry", "fig"]


@pytest.fixture
def source(tmp_path, monkeypatch):
    """Three parquet files (so the pool's rows must line up across files) and a vocabulary."""
    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CURATE_NO_POOL", raising=False)
    rng = np.random.default_rng(5)
    root = tmp_path / "src"
    root.mkdir()
    for f, n in enumerate((310, 170, 240)):
        picks = rng.integers(-1, len(FRUITS), size=n)
        df = pl.DataFrame(
            {
                "uid": [f"f{f}-{i}" for i in range(n)],
                "caption": [f"a fresh {FRUITS[c]} on my table {i}" if c >= 0 else f"nothing here {i}" for i, c in enumerate(picks)],
                "url": [f"http://example.invalid/{f}/{i}.jpg" for i in range(n)],
                "title": [f"my {FRUITS[c]}" if c >= 0 and i % 3 else None for i, c in enumerate(picks)],
            }
        )
        df.write_parquet(root / f"part-{f}.parquet", row_group_size=64)
    vocab = tmp_path / "fruits.tsv"
    vocab.write_text("wnid\tname\tlemmas\n" + "".join(f"n{i:08d}\t{f}\t{f}\n" for i, f in enumerate(FRUITS)), encoding="utf-8")
    return root, vocab, tmp_path


def _build(source, out: str, capsys, *extra: str) -> dict[str, str]:
    root, vocab, tmp = source
    args = ["build", "--source", str(root), "--vocab", str(vocab), "--out-root", str(tmp / out), "--max-per-class", "40", *extra]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    (folder,) = [p for p in (tmp / out).iterdir() if not p.name.startswith(".")]
    return {p.name: file_sha256(p) for p in folder.iterdir() if p.suffix in (".parquet", ".tsv")}


def test_builds_share_one_pool_and_match_in_place_builds(source, capsys, monkeypatch):
    pools = source[2] / "cache" / "pools"
    variants = [("--imbalance", "10"), ("--imbalance", "2", "--captions", "title"), ("--profile", "balanced", "--captions", "cname")]
    with_pool = [_build(source, f"p{i}", capsys, *v) for i, v in enumerate(variants)]
    (entry,) = pools.glob("*.parquet")  # one pool for the three variants
    written = entry.stat().st_mtime_ns
    assert pl.read_parquet(entry).height == 720
    monkeypatch.setenv("CURATE_NO_POOL", "1")
    in_place = [_build(source, f"n{i}", capsys, *v) for i, v in enumerate(variants)]
    assert with_pool == in_place
    assert all(len(h) >= 3 for h in with_pool)
    monkeypatch.delenv("CURATE_NO_POOL")
    _build(source, "again", capsys, *variants[0])
    assert entry.stat().st_mtime_ns == written and len(list(pools.glob("*.parquet"))) == 1
    # other label policy: its own pool
    _build(source, "drop", capsys, "--imbalance", "10", "--label-policy", "drop")
    assert len(list(pools.glob("*.parquet"))) == 2


def test_a_changed_source_gets_a_new_pool(source, capsys):
    root, _, tmp = source
    first = _build(source, "a", capsys, "--imbalance", "5")
    part = root / "part-1.parquet"
    df = pl.read_parquet(part)
    df.with_columns(pl.lit("a ripe fig").alias("caption")).write_parquet(part)
    os.utime(part, ns=(1, 1))  # even with an old time stamp: the size differs
    second = _build(source, "b", capsys, "--imbalance", "5")
    assert len(list((tmp / "cache" / "pools").glob("*.parquet"))) == 2
    assert first != second


def _counting(monkeypatch, module, name: str) -> list[int]:
    """Count the calls of the real ``module.name`` (still called)."""
    calls: list[int] = []
    real = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def _run(source, pipeline_text: str, out: str, capsys) -> list[dict[str, str]]:
    """``curate run`` of a pipeline over the fixture's source: each variant's output hashes, in order."""
    root, vocab, tmp = source
    pipe = tmp / f"{out}.yaml"
    pipe.write_text(pipeline_text, encoding="utf-8")
    code, _, err = run_cli(["run", str(pipe), "--source", str(root), "--vocab", str(vocab), "--out-root", str(tmp / out)], capsys)
    assert code == 0, err
    folders = sorted((p for p in (tmp / out).iterdir() if not p.name.startswith(".")), key=lambda p: p.name)
    return [{p.name: file_sha256(p) for p in f.iterdir() if p.suffix in (".parquet", ".tsv")} for f in folders]


VARIANTS = "variants:\n  - {name: a, imbalance: 10}\n  - {name: b, imbalance: 2, captions: title}\n  - {name: c, profile: balanced, captions: cname}\n"


def test_a_pipeline_matches_once_and_labels_from_a_match_file_not_at_all(source, capsys, monkeypatch, tmp_path):
    import curate.match
    import curate.pool

    root, vocab, tmp = source
    base = "base: {max_per_class: 40, allow_shortfall: true}\n"
    matching = _counting(monkeypatch, curate.match, "match_captions")
    writes = _counting(monkeypatch, curate.pool, "write_pool")
    pooled = _run(source, base + VARIANTS, "pooled", capsys)
    assert len(matching) == 1 and len(writes) == 1  # three variants, one matching pass
    assert len(pooled) == 3 and pooled[0] != pooled[1]

    # matched once by curate match (one file, or a sharded run's folder): no variant matches again
    code, _, err = run_cli(["match", str(root), "--vocab", str(vocab), "--out", str(tmp / "m.parquet")], capsys)
    assert code == 0, err
    code, _, err = run_cli(["match", str(root), "--vocab", str(vocab), "--shards", "2", "--out", str(tmp / "m-shards")], capsys)
    assert code == 0, err
    matching.clear()
    for labels in (tmp / "m.parquet", tmp / "m-shards"):
        from_file = _run(source, f"base: {{max_per_class: 40, allow_shortfall: true, labels_from: {labels}}}\n" + VARIANTS, f"file-{labels.stem}", capsys)
        assert from_file == pooled
    assert matching == []


def test_labels_from_a_file_of_another_source_is_refused(source, capsys):
    root, vocab, tmp = source
    other = tmp / "other.parquet"
    pl.DataFrame({"uid": ["x"], "caption": ["a fig"]}).write_parquet(other)
    code, _, err = run_cli(["match", str(other), "--vocab", str(vocab), "--out", str(tmp / "m-other.parquet")], capsys)
    assert code == 0, err
    args = ["build", "--source", str(root), "--vocab", str(vocab), "--out-root", str(tmp / "x"), "--max-per-class", "40"]
    code, _, err = run_cli([*args, "--labels-from", str(tmp / "m-other.parquet")], capsys)
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and "1 rows, the source" in errors[0] and "Traceback" not in err, err
    # the same row count, other uids (here the rows reversed): named by row
    shuffled = pl.concat([pl.read_parquet(p) for p in sorted(root.glob("*.parquet"))]).select("uid").reverse()
    shuffled.with_columns(pl.lit([0], dtype=pl.List(pl.Int32)).alias("labels")).write_parquet(tmp / "m-shuffled.parquet")
    code, _, err = run_cli([*args, "--labels-from", str(tmp / "m-shuffled.parquet")], capsys)
    assert code == 2 and "row 0 has uid" in err, err
    code, _, err = run_cli([*args, "--labels-from", "first", "--label-policy", "first"], capsys)
    assert code == 2 and "labels_from 'first' is not one of match, wnid" in err, err
    # this source, matched with another vocabulary of as many classes: its indices name other classes
    lines = vocab.read_text(encoding="utf-8").splitlines()
    other_vocab = tmp / "reordered.tsv"
    other_vocab.write_text("\n".join([lines[0], *reversed(lines[1:])]) + "\n", encoding="utf-8")
    code, _, err = run_cli(["match", str(root), "--vocab", str(other_vocab), "--out", str(tmp / "m-reordered.parquet")], capsys)
    assert code == 0, err
    code, _, err = run_cli([*args, "--labels-from", str(tmp / "m-reordered.parquet")], capsys)
    assert code == 2 and "matched with another vocabulary" in err and "Traceback" not in err, err
    shuffled.reverse().with_columns(pl.lit([0], dtype=pl.List(pl.Int32)).alias("labels")).write_parquet(tmp / "m-handmade.parquet")
    code, _, err = run_cli([*args, "--labels-from", str(tmp / "m-handmade.parquet")], capsys)
    assert code == 2 and "does not say which vocabulary" in err, err
