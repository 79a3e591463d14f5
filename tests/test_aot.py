"""The ahead-of-time loops (curate.match.aot): built once into the cache, then a run matches with
them without loading numba (the disambiguation cascade's loop too), and with the same output as
the numpy path (the cascade: as its Python original); a build that fails is
tried once and leaves the just-in-time loops in charge."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

pytest.importorskip("numba")

REPO = Path(__file__).resolve().parents[1]

CAPTIONS = [
    "A Tiger Shark and two geese",
    "<b>crane</b> at the construction site &amp; a hot-dog",
    "Straße café — “German Shepherds” in the snow",
    "#germanshepherd puppy",
    "",
    None,
    "tiger tiger shark great white shark",
]

_RUN = """
import json, sys
import polars as pl
from curate.match import match_captions
from curate.match.kernels import compiled_for
from curate.vocab import load_vocab
caps = json.loads(sys.argv[1])
with compiled_for(10**6) as compiled:
    frame = pl.LazyFrame({"caption": pl.Series(caps, dtype=pl.Utf8)})
    out = match_captions(frame, load_vocab("imagenet1k"), spans=True, disambiguate=False).collect()
    decided = match_captions(frame, load_vocab("imagenet1k"), spans=True).collect()  # the cascade too
from curate.match.lexicon_cache import cached_matcher
state = cached_matcher(load_vocab("imagenet1k"))._cascade  # the compiled cascade's counts, where it ran
print(json.dumps({"compiled": compiled, "numba": "numba" in sys.modules, "rows": out.select("labels", "spans").to_dicts(),
                  "decided": decided.select("labels", "spans").to_dicts(),
                  "loop": [state[0].decided, state[0].left] if state else None}))
"""


def _run(cache: Path, **env: str) -> dict:
    full = {**os.environ, "CURATE_CACHE": str(cache), "PYTHONPATH": str(REPO), **env}
    proc = subprocess.run([sys.executable, "-c", _RUN, json.dumps(CAPTIONS)], capture_output=True, text=True, env=full, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _numpy_path() -> list[dict]:
    import curate.match.kernels as kernels
    from curate.match import match_captions
    from curate.vocab import load_vocab

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(kernels, "COMPILED", False)
        out = match_captions(pl.LazyFrame({"caption": pl.Series(CAPTIONS, dtype=pl.Utf8)}), load_vocab("imagenet1k"), spans=True, disambiguate=False).collect()
    return out.select("labels", "spans").to_dicts()


@pytest.mark.slow
def test_a_large_run_builds_the_loops_once_and_later_runs_load_no_numba(tmp_path):
    first = _run(tmp_path)  # builds the module (a child process), matches
    failed = list((tmp_path / "kernels").glob("curate_kernels_*.failed"))
    if failed:  # no C compiler and linker for numba's pycc on this machine
        pytest.skip(f"pycc cannot build here: {failed[0].read_text(encoding='utf-8').strip()[:200]}")
    (built,) = (tmp_path / "kernels").glob("curate_kernels_*.so")
    stamp = built.stat().st_mtime_ns
    again = _run(tmp_path)
    assert built.stat().st_mtime_ns == stamp  # not built twice
    assert again["compiled"] and not again["numba"]  # the ahead-of-time loops (and cascade), no numba
    assert again["rows"] == first["rows"] == _numpy_path()
    # the cascade's ahead-of-time loop decides as its Python original does
    python = _run(tmp_path, CURATE_CASCADE="python")
    assert again["decided"] == first["decided"] == python["decided"]
    assert python["loop"] is None and again["loop"][0] > 0 and again["loop"][1] == 0  # the built loop decided every one
    assert any(row["labels"] for row in python["decided"]) and python["decided"] != python["rows"]
    # a short run with the cascade loads no numba either (it takes the built loops); nor, on words
    # no run has met, nltk: the loop's word flags (part of speech, compounds with the class lemmas,
    # city names) come from tables read without nltk's WordNet reader
    code = (
        "import sys, polars as pl; from curate.match import match_captions; from curate.match.kernels import compiled_for;"
        "from curate.vocab import load_vocab\n"
        "with compiled_for(1):\n"
        "    out = match_captions(pl.LazyFrame({'caption': ['A Tiger Shark and two geese', 'A grizzled tiger by the Zorblan harbour at dusk']}), load_vocab('imagenet1k')).collect()\n"
        "print(json.dumps(out['labels'].to_list()), 'numba' in sys.modules, 'nltk' in sys.modules)"
    )
    env = {**os.environ, "CURATE_CACHE": str(tmp_path), "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", "import json\n" + code], capture_output=True, text=True, env=env, cwd=REPO)
    assert out.returncode == 0, out.stderr
    labels, numba, nltk = out.stdout.strip().splitlines()[-1].rsplit(" ", 2)
    assert (numba, nltk) == ("False", "False"), out.stdout
    from curate.vocab import load_vocab

    wnids = load_vocab("imagenet1k")["wnid"].to_list()
    assert [[wnids[x] for x in ls] for ls in json.loads(labels)] == [["n01491361", "n01855672"], ["n02129604"]]


@pytest.mark.slow
def test_a_failed_build_is_tried_once_and_the_jit_loops_run(tmp_path):
    # no C compiler for pycc: the build fails, a marker says so, numba's own loops run
    first = _run(tmp_path, CC="/bin/false", LDSHARED="/bin/false")
    (marker,) = (tmp_path / "kernels").glob("curate_kernels_*.failed")
    assert not list((tmp_path / "kernels").glob("curate_kernels_*.so"))
    assert first["compiled"] and first["numba"]
    stamp = marker.stat().st_mtime_ns
    second = _run(tmp_path)
    assert marker.stat().st_mtime_ns == stamp and second["numba"]
    assert first["rows"] == second["rows"] == _numpy_path()


def test_a_failed_build_is_tried_again_a_day_later(tmp_path):
    from curate.match import aot

    marker = tmp_path / "curate_kernels_x.failed"
    assert not aot._failed_lately(marker)  # never failed
    marker.write_text("cc: not found\n", encoding="utf-8")
    assert aot._failed_lately(marker)
    old = marker.stat().st_mtime - aot.RETRY_AFTER - 60
    os.utime(marker, (old, old))
    assert not aot._failed_lately(marker)
