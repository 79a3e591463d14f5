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
