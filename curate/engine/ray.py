"""The Ray engine: every shard of a job on a Ray cluster (or a Ray started here), through Ray Data.

The dataset is the job's shard descriptors; ``map_batches`` sends them to a pool of stateful
actors, each holding the opened source and the compiled matcher (built once per actor, not per
shard), which run :func:`curate.engine.shard.run_shard`: each shard's rows, partial counts and
completion marker land in the output folder (a path every node sees: a shared filesystem), and
the partial counts come back to the driver. The files are the ones ``--shard i/N`` writes, byte
for byte: the same code writes them. (Ray Data's own ``read_parquet`` would lose the row position
that positional uids are made of, and would write through another Parquet writer.)

Ray is an optional extra (``pip install 'curate[ray]'``), imported only here.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from curate.engine.shard import MatchJob, Partial, Shard, run_shard
from curate.errors import CurateError

HOW_TO_GET = "pip install 'curate[ray]' (Ray Data)"


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise CurateError("--engine ray needs Ray, which is not installed", hint=HOW_TO_GET) from None
    return ray


class _ShardActor:
    """One per worker: opens the source and compiles the matcher once, then runs shards."""

    def __init__(self, job: MatchJob, out: str) -> None:
        from curate.match.lexicon_cache import cached_matcher

        self.job, self.out = job, out
        self.opened = job.open()
        if self.job.mode == "curate":
            cached_matcher(self.opened[1]).warm_up()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        job, out = self.job, Path(self.out)
        results: dict[str, list] = {"shard": [], "skipped": [], "rows": [], "matched": [], "counts": []}
        for index, count, total in zip(batch["shard"], batch["shards"], batch["total"]):
            skipped, part = run_shard(job, Shard(int(index), int(count)), out, opened=self.opened, total_rows=int(total))
            results["shard"].append(int(index))
            results["skipped"].append(skipped)
            results["rows"].append(part.rows)
            results["matched"].append(part.matched)
            results["counts"].append(part.counts)
        return {k: np.asarray(v) for k, v in results.items()}


def run_sharded(
    job: MatchJob,
    out: Path,
    *,
    shards: int | None = None,
    address: str | None = None,
    actors: int | None = None,
    actor_cpus: float | None = None,
) -> list[tuple[bool, Partial]]:
    """All ``shards`` of ``job`` (default: one per source file) on Ray: [(skipped, partial counts)]
    in shard order. Joins the cluster at ``address`` ('auto': the one this machine belongs to),
    else the Ray already initialised in this process, else starts a local one. ``actors``
    (default: one per CPU, at most one per shard) each reserve ``actor_cpus`` (default: a share
    that leaves room for Ray Data's own tasks: whole-CPU actors on every core starve them)."""
    import polars as pl

    ray = _ray()
    if address is not None:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    elif not ray.is_initialized():
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
    job = dataclasses.replace(job, workdir=job.workdir or os.getcwd())  # actors may run in another folder
    opened = job.open()  # here first: a bad source or vocabulary fails before any actor starts
    src = opened[0]
    n = shards or max(1, len(src.files))
    total = int(src.lazy.select(pl.len()).collect(engine="streaming").item())
    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    pool = max(1, min(n, actors or int(cpus)))
    per_actor = actor_cpus if actor_cpus is not None else min(1.0, cpus / (pool + 1))
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    ctx = ray.data.DataContext.get_current()
    # progress is the caller's to report: Ray Data's own bars and banners would interleave with it
    ctx.enable_progress_bars = ctx.enable_operator_progress_bars = False
    ctx.print_on_execution_start = False
    ds = ray.data.from_items([{"shard": i, "shards": n, "total": total} for i in range(n)], override_num_blocks=n)
    done = ds.map_batches(
        _ShardActor,
        fn_constructor_kwargs={"job": job, "out": str(out)},
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=pool),
        num_cpus=per_actor,
    ).take_all()
    by_shard = {int(r["shard"]): r for r in done}
    missing = [i for i in range(n) if i not in by_shard]
    if missing:
        raise CurateError(f"Ray returned no result for shard(s) {missing[:10]} of {n}")
    return [
        (bool(r["skipped"]), Partial(int(r["rows"]), int(r["matched"]), np.asarray(r["counts"], dtype=np.int64)))
        for r in (by_shard[i] for i in range(n))
    ]
