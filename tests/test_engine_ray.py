"""The Ray engine on a local Ray started by the test: the same files, byte for byte, as the local
engine's shards, on three parquet files; a rerun skips completed shards. Skips only where the
``ray`` extra is not installed (``make test`` installs it with ``dev``)."""

from __future__ import annotations

import sys

import numpy as np
import polars as pl
import pytest

from curate.engine.shard import MatchJob
from curate.errors import CurateError

WORDS = ["a tiger shark", "two geese", "golden retriever", "the reef", "Tabby Cat", "lemon", "hot-dog", "crane", "site", "bird"]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("src")
    rng = np.random.default_rng(3)
    for name, n in (("a.parquet", 300), ("b.parquet", 520), ("c.parquet", 180), ("d.parquet", 75)):
        caps = [" ".join(rng.choice(WORDS, size=3)) for _ in range(n)]
        pl.DataFrame({"caption": caps}).write_parquet(root / name)
    return root


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    # two CPUs whatever the machine: the actors below take fractions of them, leaving room for
    # Ray Data's own tasks (whole-CPU actors on every core would starve them)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_engine_writes_what_the_local_engine_writes(source, local_ray, tmp_path):
    from curate.engine.local import run_sharded as run_local
    from curate.engine.ray import run_sharded as run_ray

    for kind in ("match", "freq"):
        job = MatchJob(source=str(source), vocab="imagenet1k", kind=kind, policy="drop" if kind == "freq" else "all")
        local = run_local(job, tmp_path / f"local-{kind}", shards=5)
        on_ray = run_ray(job, tmp_path / f"ray-{kind}", shards=5, actors=2, actor_cpus=0.25)
        assert [s for s, _ in on_ray] == [False] * 5
        for (_, a), (_, b) in zip(local, on_ray):
            assert (a.rows, a.matched) == (b.rows, b.matched) and np.array_equal(a.counts, b.counts)
        names = sorted(p.name for p in (tmp_path / f"local-{kind}").iterdir())
        assert names == sorted(p.name for p in (tmp_path / f"ray-{kind}").iterdir())
        assert len(names) == (15 if kind == "match" else 10)
        for name in names:
            assert (tmp_path / f"local-{kind}" / name).read_bytes() == (tmp_path / f"ray-{kind}" / name).read_bytes(), name
    rows = pl.read_parquet(tmp_path / "ray-match" / "*.parquet")
    assert rows.height == 1075 and rows["labels"].list.len().sum() > 0
    # a rerun finds every marker and runs nothing
    job = MatchJob(source=str(source), vocab="imagenet1k")
    assert [s for s, _ in run_ray(job, tmp_path / "ray-match", shards=5, actors=2, actor_cpus=0.25)] == [True] * 5


def test_without_ray_the_engine_says_how_to_get_it(monkeypatch, source, tmp_path):
    from curate.engine.ray import run_sharded

    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without the extra sees
    with pytest.raises(CurateError, match="needs Ray") as e:
        run_sharded(MatchJob(source=str(source), vocab="imagenet1k"), tmp_path / "x", shards=2)
    assert "curate[ray]" in (e.value.hint or "")
