"""curate.freq: class counts, distribution statistics, the frequency files, ``curate freq``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.errors import CurateError
from curate.freq import class_table, distribution_stats, gini, read_reference, write_freq, zipf_exponent
from curate.vocab import load_vocab

runner = CliRunner()
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FREQS = SHARED / "reference" / "freqs"


def test_gini_on_known_vectors():
    assert gini([5, 5, 5, 5]) == 0.0
    assert gini([0, 0, 0, 10]) == pytest.approx(0.75)  # (n-1)/n for all mass in one of n
    assert gini([1, 2, 3, 4]) == pytest.approx(0.25)
    assert gini([0, 0]) == 0.0


def test_zipf_exponent_recovers_a_power_law():
    ranks = np.arange(1, 501)
    assert zipf_exponent(1e6 * ranks**-1.3) == pytest.approx(1.3, abs=1e-9)
    assert zipf_exponent([5, 0, 0]) is None


def test_distribution_stats_on_a_known_vector():
    s = distribution_stats([0, 1, 2, 3, 4, 10, 0, 5, 5, 10])
    assert s["total"] == 40 and s["classes"] == 10 and s["zero_count_classes"] == 2
    assert s["max"] == 10 and s["median"] == 3.5 and s["min_nonzero"] == 1
    assert s["max_min_ratio"] == 10 and s["max_median_ratio"] == pytest.approx(10 / 3.5)
    assert s["top10pct_share"] == pytest.approx(10 / 40)  # top 10% of 10 classes = 1 class
    p = np.array([1, 2, 3, 4, 10, 5, 5, 10]) / 40
    assert s["normalised_entropy"] == pytest.approx(-(p * np.log(p)).sum() / math.log(10))
    assert "caption" in s["count_unit"]
    balanced = distribution_stats([7] * 20)
    assert balanced["gini"] == 0 and balanced["normalised_entropy"] == pytest.approx(1.0) and balanced["zipf_exponent"] == pytest.approx(0)


def test_reference_comparison():
    x = np.array([100, 50, 20, 10, 5, 1])
    same = distribution_stats(x, x)
    assert same["reference"]["spearman"] == pytest.approx(1.0)
    assert same["reference"]["pearson_log"] == pytest.approx(1.0)
    assert same["reference"]["kl_divergence"] == pytest.approx(0.0)
    scaled = distribution_stats(x, x * 3)["reference"]
    assert scaled["spearman"] == pytest.approx(1.0) and 0.99 < scaled["pearson_log"] < 1.0 and scaled["kl_divergence"] < 0.01
    flipped = distribution_stats(x, x[::-1])
    assert flipped["reference"]["spearman"] == pytest.approx(-1.0)
    assert flipped["reference"]["kl_divergence"] > 1.0
    with pytest.raises(CurateError, match="classes"):
        distribution_stats(x, [1, 2, 3])


@pytest.mark.parametrize(
    ("table", "total_m", "max_k", "median_k", "gini_", "top10"),
    [
        ("laion400m_imagenet_ori.tsv", 93.7, 6140, 16.4, 0.80, 0.68),
        ("laion2b_imagenet_ori.tsv", 551, 36600, 94, 0.80, 0.69),
        ("cc12m_imagenet_ori.tsv", 4.0, 267, 0.792, 0.80, 0.70),
        ("yfcc15m_imagenet_ori.tsv", 3.4, 280, 0.542, 0.83, 0.75),
        ("metaclip_400m_imagenet_ori.tsv", 27.9, 410, 11.0, 0.66, 0.46),
        ("incaps_imagenet_ori.tsv", 0.449, 0.961, 0.454, 0.22, 0.16),
    ],
)
def test_stats_reproduce_the_design_reference_table(table, total_m, max_k, median_k, gini_, top10):
    path = FREQS / table
    if not path.is_file():
        pytest.skip(f"{path} is not beside the checkout")
    s = distribution_stats(read_reference(path)["count"])
    assert s["classes"] == 1000
    assert s["total"] / 1e6 == pytest.approx(total_m, rel=0.01)
    assert s["max"] / 1e3 == pytest.approx(max_k, rel=0.01)
    assert s["median"] / 1e3 == pytest.approx(median_k, rel=0.01)
    assert round(s["gini"], 2) == gini_
    assert round(s["top10pct_share"], 2) == top10


def _vocab3() -> pl.DataFrame:
    return pl.DataFrame(
        {"label": [0, 1, 2], "wnid": ["n1", "n2", "n3"], "name": ["cat", "dog", "eel"], "lemmas": [["cat"], ["dog"], ["eel"]]},
        schema_overrides={"label": pl.Int32},
    )


def test_class_table_counts_captions_once():
    matched = pl.LazyFrame({"labels": [[0, 0, 1], [1], [], None, [1, 0]]}, schema={"labels": pl.List(pl.Int32)})
    t = class_table(matched, _vocab3())
    assert t.columns == ["label", "wnid", "name", "count", "rank", "share"]
    assert t["count"].to_list() == [2, 3, 0]
    assert t["rank"].to_list() == [2, 1, 3]
    assert t["share"].to_list() == pytest.approx([0.4, 0.6, 0.0])
    with pytest.raises(CurateError, match="not classes"):
        class_table(pl.DataFrame({"labels": [[7]]}), _vocab3())
    with pytest.raises(CurateError, match="labels"):
        class_table(pl.DataFrame({"caption": ["x"]}), _vocab3())


def test_write_freq_round_trips_and_is_deterministic(tmp_path):
    t = class_table(pl.DataFrame({"labels": [[0], [1], [1], [0, 1]]}), _vocab3())
    stats = distribution_stats(t["count"])
    a, b = tmp_path / "a", tmp_path / "b"
    write_freq(a, t, stats)
    write_freq(b, t, stats)
    for name in ("classes.tsv", "classes.parquet", "stats.json", "freq.png"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "classes.tsv").read_text() == "cat\t2\ndog\t3\neel\t0\n"
    ref = read_reference(a / "classes.tsv")
    assert ref.to_dicts() == [{"name": "cat", "count": 2}, {"name": "dog", "count": 3}, {"name": "eel", "count": 0}]
    assert json.loads((a / "stats.json").read_text())["total"] == 5
    assert (a / "freq.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in a.iterdir() if p.name.startswith(".")]  # no temporaries left


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "no rows"), ("cat\t3\ndog\n", "line 2"), ("cat\tmany\n", "line 1"), ("cat\t-1\n", "negative")],
)
def test_read_reference_rejects_bad_files(tmp_path, text, message):
    path = tmp_path / "ref.tsv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CurateError, match=message):
        read_reference(path)
    with pytest.raises(CurateError, match="does not exist"):
        read_reference(tmp_path / "absent.tsv")


def _source(tmp_path: Path) -> Path:
    path = tmp_path / "caps.jsonl"
    rows = ["a tiger shark", "goldfish and a school bus", "goldfish", "nothing at all", "two goldfish"]
    pl.DataFrame({"uid": [f"u{i}" for i in range(len(rows))], "caption": rows}).write_ndjson(path)
    return path


def test_cli_freq_writes_outputs_and_round_trips_as_reference(tmp_path):
    src = _source(tmp_path)
    out = tmp_path / "freq"
    result = runner.invoke(app, ["freq", str(src), "--vocab", "imagenet1k", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Gini" in result.stdout and "total 5" in result.stdout
    lines = (out / "classes.tsv").read_text(encoding="utf-8").splitlines()
    vocab = load_vocab("imagenet1k")
    assert len(lines) == 1000 and lines[1] == f"{vocab['name'][1]}\t3"
    # its own classes.tsv loads back as the reference: identical distributions
    again = tmp_path / "again"
    result = runner.invoke(app, ["freq", str(src), "--vocab", "imagenet1k", "--out", str(again), "--reference", str(out / "classes.tsv")])
    assert result.exit_code == 0, result.output
    ref = json.loads((again / "stats.json").read_text())["reference"]
    assert ref["spearman"] == pytest.approx(1.0) and ref["kl_divergence"] == pytest.approx(0.0)
    # matched labels from curate match count the same
    matched = tmp_path / "m.parquet"
    assert runner.invoke(app, ["match", str(src), "--vocab", "imagenet1k", "--out", str(matched)]).exit_code == 0
    third = tmp_path / "third"
    result = runner.invoke(app, ["freq", str(matched), "--vocab", "imagenet1k", "--out", str(third)])
    assert result.exit_code == 0, result.output
    assert (third / "classes.tsv").read_bytes() == (out / "classes.tsv").read_bytes()
    # without --vocab: the vocabulary the file was matched with
    fourth = tmp_path / "fourth"
    result = runner.invoke(app, ["freq", str(matched), "--out", str(fourth)])
    assert result.exit_code == 0, result.output
    assert (fourth / "classes.tsv").read_bytes() == (out / "classes.tsv").read_bytes()
    # a vocabulary the file names that does not load here: said as such
    import polars as pl

    named = tmp_path / "named.parquet"
    table = pl.read_parquet(matched)
    meta = {**pl.read_parquet_metadata(matched), "curate.vocab": "gone.tsv"}
    table.write_parquet(named, metadata=meta)
    result = runner.invoke(app, ["freq", str(named), "--out", str(tmp_path / "sixth")])
    assert result.exit_code != 0 and "was matched with vocabulary 'gone.tsv', which does not load here" in str(result.exception)
    # another vocabulary's classes: refused (its class indices would name other classes)
    result = runner.invoke(app, ["freq", str(matched), "--vocab", "imagenet100", "--out", str(tmp_path / "fifth")])
    assert result.exit_code != 0 and "another vocabulary" in str(result.exception) and not (tmp_path / "fifth").exists()


def test_cli_freq_against_a_shared_reference(tmp_path):
    ref = FREQS / "laion400m_imagenet_ori.tsv"
    if not ref.is_file():
        pytest.skip("shared reference tables are not beside the checkout")
    out = tmp_path / "freq"
    result = runner.invoke(app, ["freq", str(_source(tmp_path)), "--vocab", "imagenet1k", "--out", str(out), "--reference", str(ref)])
    assert result.exit_code == 0, result.output
    assert "vs reference" in result.stdout
    assert json.loads((out / "stats.json").read_text())["reference"]["total"] == 93654164


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--vocab", "nope"], "unknown vocabulary"),
        (["--vocab", "imagenet1k", "--reference", "MISSING"], "does not exist"),
        (["--vocab", "imagenet1k", "--caption-col", "nope"], "nope"),
        (["--vocab", "imagenet100", "--reference", "SHORT"], "reference has 2 classes"),
    ],
)
def test_cli_freq_bad_input_exits_2(tmp_path, capsys, args, message):
    from curate.cli import main

    short = tmp_path / "short.tsv"
    short.write_text("a\t1\nb\t2\n", encoding="utf-8")
    args = [str(tmp_path / "missing.tsv") if a == "MISSING" else str(short) if a == "SHORT" else a for a in args]
    with pytest.raises(SystemExit) as exc:
        main(["freq", str(_source(tmp_path)), "--out", str(tmp_path / "f"), *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_write_freq_replaces_the_folder_as_a_unit(tmp_path, monkeypatch):
    import curate.freq

    vocab = _vocab3()
    old = class_table(pl.DataFrame({"labels": [[0], [1]]}), vocab)
    new = class_table(pl.DataFrame({"labels": [[2], [2], [1]]}), vocab)
    out = tmp_path / "f"
    write_freq(out, old, distribution_stats(old["count"]))
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def killed(*args, **kwargs):  # the run dies while drawing the last file
        raise KeyboardInterrupt

    monkeypatch.setattr(curate.freq, "plot_freq", killed)
    with pytest.raises(KeyboardInterrupt):
        write_freq(out, new, distribution_stats(new["count"]))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old set, whole
    assert [p.name for p in tmp_path.iterdir()] == ["f"]
    # a folder holding anything else is not replaced
    (out / "notes.txt").write_text("mine")
    monkeypatch.undo()
    with pytest.raises(CurateError, match="holds other files"):
        write_freq(out, new, distribution_stats(new["count"]))
    assert (out / "notes.txt").read_text() == "mine"


def test_write_freq_keeps_a_sharded_runs_partial_counts(tmp_path):
    vocab = _vocab3()
    table = class_table(pl.DataFrame({"labels": [[0], [1]]}), vocab)
    out = tmp_path / "f"
    (out / "shards").mkdir(parents=True)
    (out / "shards" / "part.counts.json").write_text("{}")
    write_freq(out, table, distribution_stats(table["count"]))
    write_freq(out, table, distribution_stats(table["count"]))  # and again over the finished folder
    assert sorted(p.name for p in out.iterdir()) == ["classes.parquet", "classes.tsv", "freq.png", "shards", "stats.json"]
    assert (out / "shards" / "part.counts.json").read_text() == "{}"


@pytest.mark.parametrize("extra", [["--shards", "2"], ["--shard", "0/2"], ["--reduce"]])
def test_cli_freq_strict_is_for_a_single_run(tmp_path, capsys, extra):
    from curate.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["freq", str(_source(tmp_path)), "--vocab", "imagenet1k", "--out", str(tmp_path / "f"), "--strict", *extra])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--strict" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "f").exists()


def test_cli_freq_refuses_an_out_it_may_not_replace_before_any_work(tmp_path, capsys, monkeypatch):
    import curate.match
    from curate.cli import main

    monkeypatch.setattr(curate.match, "match_captions", lambda *a, **k: pytest.fail("matched before refusing"))
    src = _source(tmp_path)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    for out, message in ((src, "is not a folder"), (tmp_path / "mine", "holds other files")):
        with pytest.raises(SystemExit) as exc:
            main(["freq", str(src), "--vocab", "imagenet1k", "--out", str(out)])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "mine" / "notes.txt").read_text() == "x"
