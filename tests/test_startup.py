"""What a short run loads: a 1-caption ``curate match`` and ``curate --help`` stay clear of the
heavy libraries that used to dominate their start-up (nltk pulled scipy.stats to find WordNet,
numba's loops cost more to load than a short run takes). Asserts on loaded modules, not times."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parents[1]

_RUN = """
import atexit, runpy, sys
atexit.register(lambda: print("MODULES", " ".join(sorted({m.split(".")[0] for m in sys.modules})), file=sys.stderr))
sys.argv = ["curate", *sys.argv[1:]]
runpy.run_module("curate", run_name="__main__")
"""


def _loaded(args: list[str]) -> tuple[int, set[str], str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("TYPER_USE_RICH", None)
    proc = subprocess.run([sys.executable, "-c", _RUN, *args], capture_output=True, text=True, env=env, cwd=REPO)
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("MODULES "))
    return proc.returncode, set(line.split()[1:]), proc.stderr


def test_one_caption_match_loads_no_nltk_scipy_or_numba(tmp_path):
    src = tmp_path / "one.csv"
    src.write_text("caption\nA Tiger Shark and two geese\n")
    out = tmp_path / "one.parquet"
    # the first run compiles the vocabulary's lexicon (WordNet sense evidence through nltk) into
    # the on-disk cache; every later run, the start-up measured here, loads it
    code, _, err = _loaded(["match", str(src), "--vocab", "imagenet1k", "--out", str(out)])
    assert code == 0, err
    code, modules, err = _loaded(["match", str(src), "--vocab", "imagenet1k", "--out", str(out)])
    assert code == 0, err
    assert not modules & {"nltk", "scipy", "numba", "llvmlite"}, modules & {"nltk", "scipy", "numba", "llvmlite"}
    from curate.vocab import load_vocab

    wnids = load_vocab("imagenet1k")["wnid"].to_list()
    labels = pl.read_parquet(out)["labels"].to_list()
    # the shark, and the goose through noun.exc's irregular plural (read without nltk)
    assert [[wnids[x] for x in ls] for ls in labels] == [["n01491361", "n01855672"]]


def test_help_loads_no_data_library():
    code, modules, err = _loaded(["--help"])
    assert code == 0, err
    assert not modules & {"polars", "numpy", "pyarrow", "numba", "torch"}, modules


def test_plural_exceptions_do_not_need_nltk():
    code = "import sys; from curate.wordnet import plural_exceptions; assert plural_exceptions()['goose'] == ['geese']; print('nltk' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.strip() == "False"


def test_usage_errors_and_version_exit_cleanly(capsys):
    from cli_helpers import run_cli

    import curate

    code, _, err = run_cli(["match", "--bogus"], capsys)
    assert code == 2 and "No such option: --bogus" in err and "Traceback" not in err
    code, out, _ = run_cli(["--version"], capsys)
    assert code == 0 and out.strip() == curate.__version__
