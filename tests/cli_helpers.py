"""Running the real ``curate`` entry point inside a test."""

from __future__ import annotations

import pytest


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``curate.cli.main`` on ``args``; return (exit code, stdout, stderr)."""
    from curate.cli import main

    capsys.readouterr()
    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err
