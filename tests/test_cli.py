"""The ``curate`` entry point itself: how usage errors and environment errors reach the user."""

from __future__ import annotations

import pytest
from cli_helpers import run_cli


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["head", "--bogus"], "curate head: No such option: --bogus"),
        (["nosuch"], "curate: No such command 'nosuch'"),
        (["build", "--imbalance", "abc"], "curate build: Invalid value for '--imbalance'"),
        (["freq"], "curate freq: Missing argument 'source'"),
        (["shards", "m", "--resolution"], "Option '--resolution' requires an argument"),
        (["vocab", "demo", "--depth", "2"], "--depth 2: a depth goes with a wordnet:SYNSET vocabulary"),
    ],
)
def test_usage_errors_are_one_line_exit_2(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(args, capsys)
    assert code == 2, err
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: ") and message in err


def test_no_arguments_prints_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli([], capsys)
    assert code == 2 and "build" in (out + err) and "Traceback" not in err


def test_outputs_that_cannot_be_written_are_one_line_before_any_work(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "c.tsv"
    src.write_text("caption\nan apple\na banana\n", encoding="utf-8")
    vocab = tmp_path / "v.tsv"
    vocab.write_text("name\napple\nbanana\n", encoding="utf-8")
    afile = tmp_path / "afile"
    afile.write_text("x")
    common = ["--source", str(src), "--vocab", str(vocab)]
    cases = [
        (["match", str(src), "--vocab", str(vocab), "-o", str(afile / "x.parquet")], f"--out {afile}: exists and is not a folder"),
        (["match", str(src), "--vocab", str(vocab), "-o", "/proc/nope/x.parquet"], "--out /proc/nope: cannot write there"),
        (["freq", str(src), "--vocab", str(vocab), "-o", str(afile / "f")], f"--out {afile}: exists and is not a folder"),
        (["build", *common, "--out-root", str(afile)], f"--out-root {afile}: exists and is not a folder"),
        (["build", *common, "--out-root", str(tmp_path), "--name", "n" * 300], "300 characters, at most 200"),
        (["vocab", str(vocab), "-o", str(afile / "v.csv")], f"{afile}: cannot write"),
    ]
    for args, message in cases:
        code, out, err = run_cli(args, capsys)
        assert code == 2, (args, err)
        assert len(err.strip().splitlines()) == 1 and message in err, (args, err)


def test_help_names_what_the_registries_hold(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from curate.presets import PRESETS

    monkeypatch.setenv("COLUMNS", "400")  # no wrapping inside a name
    for command in ("build", "head"):
        code, out, err = run_cli([command, "--help"], capsys)
        assert code == 0, err
        text = " ".join(out.split())
        assert ", ".join(PRESETS) in text, (command, text)
        assert "laion, cc, yfcc" not in text


def test_explain_prints_each_candidate_and_its_decision(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    import polars as pl

    vocab = tmp_path / "vocab.csv"
    pl.DataFrame({"wnid": ["n01491361", "n02012849"], "name": ["tiger shark", "crane"], "lemmas": ["tiger shark", "crane"]}).write_csv(vocab)
    code, out, err = run_cli(["match", "--explain", "A tiger shark by the construction crane", "--vocab", str(vocab)], capsys)
    assert code == 0 and err == f"vocabulary {vocab} (2 classes), mode curate\n"  # the status on stderr, the answer on stdout
    assert out.splitlines() == [
        f"{repr('tiger shark'):>24} -> tiger shark (n01491361): kept",
        f"{repr('crane'):>24} -> crane (n02012849): veto",
    ]
    code, out, _ = run_cli(["match", "--explain", "nothing to see", "--vocab", str(vocab)], capsys)
    assert code == 0 and out.startswith("no candidate mention")
