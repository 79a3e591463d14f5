"""What a short run loads: a 1-caption ``curate match`` and ``curate --help`` stay clear of the
heavy libraries that used to dominate their start-up (nltk pulled scipy.stats to find WordNet,
numba's loops cost more to load than a short run takes, pandas came with pyarrow's array
constructor, pydantic with typer's option coercion). Asserts on loaded modules, not times."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parents[1]

_RUN = """
import atexit, runpy, sys
atexit.register(lambda: print("MODULES", " ".join(sorted(sys.modules)), file=sys.stderr))
sys.argv = ["curate", *sys.argv[1:]]
runpy.run_module("curate", run_name="__main__")
"""


def _loaded(args: list[str]) -> tuple[int, set[str], str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("TYPER_USE_RICH", None)
    proc = subprocess.run([sys.executable, "-c", _RUN, *args], capture_output=True, text=True, env=env, cwd=REPO)
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("MODULES "))
    loaded = set(line.split()[1:])
    return proc.returncode, loaded | {m.split(".")[0] for m in loaded}, proc.stderr


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
    # pandas came with pa.array on numpy (the labels column), pydantic with typer's option coercion
    # numpy.ma (12 ms) with np.unique and with polars' Series made of a numpy array
    heavy = {"nltk", "scipy", "numba", "llvmlite", "pandas", "pydantic", "numpy.ma", "pyarrow.parquet"}
    assert not modules & heavy, modules & heavy
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


def test_loading_the_compiled_loops_leaves_scipy_out(tmp_path):
    # numba's array maths looks for scipy's BLAS when its registries load; the loops never use it.
    # A cache of its own: no ahead-of-time loops there, so numba itself must load.
    code = (
        "import sys; import polars as pl; from curate.match.kernels import _load_kernels;"
        "from curate.match.normalise import normalised_buffer;"
        "k = _load_kernels(); d, o = normalised_buffer(pl.Series(['A crane']));"
        "print(k is not None, bytes(d[o[0]:o[1]]).decode(), 'numba' in sys.modules, 'scipy' in sys.modules);"
        "import scipy.linalg; print('after', 'scipy.linalg' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "CURATE_CACHE": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout.split()
    if out[0] == "False":  # no numba here: the numpy path, nothing to check
        return
    assert out == ["True", "a", "crane", "True", "False", "after", "True"], out


def test_plain_options_convert_without_pydantic_as_typer_would(capsys):
    import typer
    from typer.testing import CliRunner

    import curate.cli  # noqa: F401 - installs the plain coercion

    seen = {}
    app = typer.Typer()

    @app.command()
    def cmd(
        n: int = typer.Option(1, "--n"),
        rows: int = typer.Option(10, "--rows", min=0),
        timeout: float = typer.Option(60.0, "--timeout", min=0.1),
        x: float = typer.Option(0.5, "--x"),
        flag: bool = typer.Option(False, "--flag"),
        path: Path | None = typer.Option(None, "--path"),
        name: str | None = typer.Option(None, "--name"),
    ) -> None:
        seen.update(n=n, x=x, flag=flag, path=path, name=name, rows=rows, timeout=timeout)

    runner = CliRunner()
    result = runner.invoke(app, ["--n", "3.0", "--x", "1e3", "--flag", "--path", "a/b", "--name", " tiger "])
    assert result.exit_code == 0, result.output
    assert seen == {"n": 3, "x": 1000.0, "flag": True, "path": Path("a/b"), "name": " tiger ", "rows": 10, "timeout": 60.0}
    result = runner.invoke(app, ["--rows", "0", "--timeout", "0.1"])
    assert result.exit_code == 0 and seen == {"n": 1, "x": 0.5, "flag": False, "path": None, "name": None, "rows": 0, "timeout": 0.1}
    failures = (
        (["--n", "3.5"], "valid integer"),
        (["--x", "abc"], "valid number"),
        (["--rows", "-1"], "greater than or equal to 0"),
        (["--timeout", "0.05"], "greater than or equal to 0.1"),
    )
    for args, message in failures:
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and message in result.output, result.output


def test_nltk_loads_without_scipy_stats_which_still_imports_after(tmp_path):
    code = (
        "import sys; from curate.wordnet import import_nltk, wordnet; import_nltk();"
        "print('scipy.stats' in sys.modules, wordnet().synsets('tiger', 'n')[1].name());"
        "import scipy.stats; print(float(scipy.stats.norm.cdf(0)))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "CURATE_CACHE": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout.split()
    assert out == ["False", "tiger.n.02", "0.5"], out


def test_the_part_of_speech_table_is_parsed_once_and_loaded_after(tmp_path):
    code = (
        "from curate.match.lexicon import pos_table, _parse_pos_table; from curate.wordnet import find_wordnet_dir;"
        "t = pos_table(); fresh = _parse_pos_table(find_wordnet_dir());"
        "print(len(t) == len(fresh), all(tuple(t[w].__dict__.values()) == fresh[w] for w in ('tiger', 'crane', 'playing', 'boston')),"
        "t.get('zzzq') is None, t['tiger'].is_noun)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "CURATE_CACHE": str(tmp_path)}
    for _ in range(2):  # the first process parses and writes the file, the second loads it
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout.split()
        assert out == ["True", "True", "True", "True"], out
        assert len(list((tmp_path / "wordnet-pos").glob("*.pickle"))) == 1
