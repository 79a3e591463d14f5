"""The per-shard contract: many processes (a SLURM array, a shell loop, a cluster's job list) each
take one shard of a source and leave files that a reduce adds up.

Shard ``i`` of ``N`` is a contiguous slice of the source's canonical table (rows
``[i*n//N, (i+1)*n//N)`` of its ``n`` rows), so the shards laid end to end in index order are the
single run's rows, with the same ``uid``s. Into the output folder, shard ``i`` writes, each through
a temporary name:

- ``shard-0000i-of-0000N.parquet`` (``curate match`` only): its matched rows;
- ``shard-0000i-of-0000N.counts.json``: its partial counts: rows, rows with a class, and the
  caption count of every class (added up by :func:`reduce_counts`, as datatrove merges its stats);
- ``shard-0000i-of-0000N.done``: the completion marker, written last, holding the run's parameters
  (source, vocabulary and its content hash, policy, mode, columns). A rerun skips every shard whose
  marker is there with the same parameters, so a killed array job resumes where it stopped; a
  marker from another run is an error, not a silent mix.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from curate.errors import CurateError
from curate.match.lexicon_cache import vocab_hash
from curate.pool import labels_metadata
from curate.util import write_text_atomic

_SPEC = re.compile(r"^(\d+)/(\d+)$")


@dataclass(frozen=True)
class Shard:
    index: int  # 0-based
    count: int

    @property
    def name(self) -> str:
        return f"shard-{self.index:05d}-of-{self.count:05d}"

    def bounds(self, total_rows: int) -> tuple[int, int]:
        """The rows ``[start, stop)`` of this shard among ``total_rows``."""
        return total_rows * self.index // self.count, total_rows * (self.index + 1) // self.count

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(spec: str, env: Mapping[str, str] | None = None) -> Shard:
    """``"i/N"`` (0 <= i < N), or ``"slurm"``: the task of a SLURM job array
    (``SLURM_ARRAY_TASK_ID`` counted from ``SLURM_ARRAY_TASK_MIN``, ``SLURM_ARRAY_TASK_COUNT`` shards)."""
    env = os.environ if env is None else env
    if spec.strip().lower() == "slurm":
        missing = [k for k in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT") if not env.get(k)]
        if missing:
            raise CurateError(f"--shard slurm: {', '.join(missing)} not set (run it as a job array: sbatch --array=0-N ...)")
        try:
            task, count, low = int(env["SLURM_ARRAY_TASK_ID"]), int(env["SLURM_ARRAY_TASK_COUNT"]), int(env.get("SLURM_ARRAY_TASK_MIN") or 0)
        except ValueError:
            raise CurateError("--shard slurm: SLURM_ARRAY_TASK_ID/COUNT/MIN are not integers") from None
        index = task - low
        if not 0 <= index < count:
            raise CurateError(f"--shard slurm: task {task} is outside the array (min {low}, {count} tasks); use a contiguous array such as --array=0-{count - 1}")
        return Shard(index, count)
    m = _SPEC.match(spec.strip())
    if not m:
        raise CurateError(f"--shard {spec!r}: write i/N (e.g. 3/16, counted from 0) or slurm")
    index, count = int(m.group(1)), int(m.group(2))
    if count < 1 or not 0 <= index < count:
        raise CurateError(f"--shard {spec}: the index must be 0..N-1 and N at least 1")
    return Shard(index, count)


def shard_frame(lf: pl.LazyFrame, shard: Shard) -> pl.LazyFrame:
    """This shard's rows of ``lf`` (counting the rows first: Parquet footers, or one pass over text)."""
    total = int(lf.select(pl.len()).collect(engine="streaming").item())
    start, stop = shard.bounds(total)
    return lf.slice(start, stop - start)


@dataclass(frozen=True)
class Partial:
    rows: int
    matched: int  # rows with at least one class
    counts: np.ndarray  # int64, caption count per label

    def __add__(self, other: Partial) -> Partial:
        if len(self.counts) != len(other.counts):
            raise CurateError(f"partial counts over {len(self.counts)} and {len(other.counts)} classes cannot be added")
        return Partial(self.rows + other.rows, self.matched + other.matched, self.counts + other.counts)


def label_counts(matched: pl.LazyFrame, n_classes: int) -> Partial:
    """Rows, rows with a class, and per-class caption counts of a table with ``labels`` (a caption
    naming a class twice counts once for it, as :func:`curate.freq.class_table` counts)."""
    labels = matched.select("labels").collect(engine="streaming")["labels"]
    counts = np.zeros(n_classes, dtype=np.int64)
    flat = labels.list.unique().explode().drop_nulls().to_numpy()
    if len(flat):
        if flat.min() < 0 or flat.max() >= n_classes:
            raise CurateError(f"labels outside 0..{n_classes - 1} in the matched table")
        counts += np.bincount(flat.astype(np.int64), minlength=n_classes)
    return Partial(len(labels), int((labels.list.len() > 0).sum()), counts)


def _paths(out: Path, shard: Shard) -> tuple[Path, Path, Path]:
    return out / f"{shard.name}.parquet", out / f"{shard.name}.counts.json", out / f"{shard.name}.done"


def output_path(out: Path, shard: Shard) -> Path:
    """Where ``curate match`` writes this shard's rows."""
    return _paths(out, shard)[0]


def is_complete(out: Path, shard: Shard, params: dict) -> bool:
    """Whether this shard's marker is there. A marker of another run in the folder (other
    parameters, or another split) is an error: one folder holds one run's shards."""
    marker = _paths(out, shard)[2]
    others = sorted(p for p in out.glob("shard-*-of-*.done") if p != marker) if out.is_dir() else []
    for path in ([marker] if marker.is_file() else []) + others[:1]:
        try:
            done = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise CurateError(f"{path}: unreadable completion marker ({e}); remove it to redo the shard") from None
        theirs = done.get("params", {})
        if done.get("shards") != shard.count:
            raise CurateError(f"{out} holds shards of a run split {done.get('shards')} ways, not {shard.count}; write to another --out or remove them")
        if theirs != params:
            diff = sorted(k for k in {*params, *theirs} if params.get(k) != theirs.get(k))
            raise CurateError(f"{out} holds shards of another run (differs in {', '.join(diff)}); write to another --out or remove them")
    return marker.is_file()


def finish(out: Path, shard: Shard, params: dict, partial: Partial) -> None:
    """Write the shard's partial counts, then its completion marker (last)."""
    _, counts_path, _ = _paths(out, shard)
    body = {"shard": shard.index, "shards": shard.count, "rows": partial.rows, "matched": partial.matched, "counts": partial.counts.tolist()}
    write_text_atomic(counts_path, json.dumps(body, separators=(",", ":")) + "\n")
    mark_done(out, shard, params)


def mark_done(out: Path, shard: Shard, params: dict) -> None:
    """Write the shard's completion marker: the last file a shard writes."""
    marker = _paths(out, shard)[2]
    write_text_atomic(marker, json.dumps({"shard": shard.index, "shards": shard.count, "params": params}, indent=1, sort_keys=True) + "\n")


_DONE = re.compile(r"^shard-(\d{5,})-of-(\d{5,})\.done$")


def completed_shards(folder: str | Path, *, what: str = "--reduce") -> int:
    """How many shards the run in ``folder`` was split into, once every one of them has its
    completion marker; an error names the ones still missing (``what`` starts the message)."""
    folder = Path(folder)
    found: dict[int, int] = {}
    for p in sorted(folder.iterdir()) if folder.is_dir() else []:
        m = _DONE.match(p.name)
        if m:
            found[int(m.group(1))] = int(m.group(2))
    if not found:
        raise CurateError(f"{what} {folder}: no completed shard (no shard-*-of-*.done file)")
    counts_of = set(found.values())
    if len(counts_of) != 1:
        raise CurateError(f"{what} {folder}: shards of runs split {sorted(counts_of)} ways are mixed")
    n = counts_of.pop()
    missing = [i for i in range(n) if i not in found]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise CurateError(f"{what} {folder}: {len(missing)} of {n} shards are not complete ({shown}); run them first")
    return n


def reduce_counts(folder: str | Path) -> tuple[dict, Partial]:
    """The parameters and the added partial counts of every shard in ``folder``; an error names the
    shards that are missing or were run with other parameters."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CurateError(f"--reduce {folder}: not a folder of shard outputs")
    n = completed_shards(folder)
    params = None
    total: Partial | None = None
    for i in range(n):
        shard = Shard(i, n)
        _, counts_path, marker = _paths(folder, shard)
        done = json.loads(marker.read_text(encoding="utf-8"))
        if params is None:
            params = done["params"]
        elif done["params"] != params:
            raise CurateError(f"--reduce {folder}: shard {shard} was run with other parameters than shard 0/{n}")
        try:
            part = read_partial(folder, shard)
        except (OSError, ValueError, KeyError) as e:
            raise CurateError(f"{counts_path}: unreadable partial counts ({e}); remove {marker.name} and rerun the shard") from None
        total = part if total is None else total + part
    assert params is not None and total is not None
    return params, total


@dataclass(frozen=True)
class MatchJob:
    """What one sharded run does to every shard: match ``source`` against ``vocab`` and keep the
    rows (``kind="match"``) or only the counts (``kind="freq"``). Plain values, so a job travels to
    other processes (Ray actors) and its parameters go into every completion marker."""

    source: str
    vocab: str | None = None  # None: the source's own
    policy: str = "all"
    mode: str = "curate"
    kind: str = "match"
    spans: bool = False
    keep: tuple[str, ...] = ()
    caption_col: str | None = None
    disambiguate: bool = True
    # where relative paths in source/vocab were written (the driver's folder, for workers that run
    # elsewhere); not a parameter of the run: the markers record the paths as given
    workdir: str | None = None

    def _here(self, spec: str) -> str:
        if self.workdir and not os.path.isabs(spec) and os.path.exists(os.path.join(self.workdir, spec)):
            return os.path.join(self.workdir, spec)
        return spec

    def open(self):
        """The opened source, the vocabulary table and the parameters recorded in markers."""
        from curate.sources import open_source
        from curate.vocab import load_vocab

        src = open_source(self._here(self.source), caption_col=self.caption_col)
        spec = self.vocab or src.vocab
        voc = load_vocab(self._here(spec))
        params = {
            "kind": self.kind, "source": self.source, "vocab": self.vocab, "vocab_spec": spec, "vocab_sha": vocab_hash(voc),
            "policy": self.policy, "mode": self.mode, "columns": self.columns(), "caption_col": self.caption_col,
            "disambiguate": self.disambiguate,
        }
        return src, voc, params

    def columns(self) -> list[str]:
        if self.kind != "match":
            return ["labels"]
        return ["uid", "labels", *(["spans"] if self.spans else []), *[c for c in self.keep if c not in ("uid", "labels", "spans")]]


def run_shard(
    job: MatchJob, shard: Shard, out: str | Path, *, opened=None, total_rows: int | None = None, decide_compiled: bool = True
) -> tuple[bool, Partial]:
    """Run one shard of ``job`` into ``out`` unless its marker is there; returns (skipped, its
    partial counts). ``opened`` reuses :meth:`MatchJob.open`'s result (an actor keeps it);
    ``total_rows`` spares counting the source again; ``decide_compiled=False`` leaves the choice
    of compiled loops to the caller (shards running side by side share one choice)."""
    from curate.match import match_captions
    from curate.match.kernels import compiled_for
    from curate.util import atomic_path

    out = Path(out)
    if (out.exists() and not out.is_dir()) or (not out.exists() and out.suffix.lower() == ".parquet"):
        raise CurateError(f"--out {out}: a sharded run writes a folder of shard files; give a folder")
    src, voc, params = opened if opened is not None else job.open()
    if is_complete(out, shard, params):
        return True, read_partial(out, shard)
    names = src.lazy.collect_schema().names()
    missing = [c for c in job.keep if c not in names]
    if missing:
        raise CurateError(f"--keep: column(s) {', '.join(missing)} not in source {job.source} (columns: {', '.join(names)})")
    if total_rows is None:
        total_rows = int(src.lazy.select(pl.len()).collect(engine="streaming").item())
    start, stop = shard.bounds(total_rows)
    part = src.lazy.slice(start, stop - start)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(f".{shard.name}.*.tmp"):  # left by a killed run of this shard (one task per shard)
        stale.unlink(missing_ok=True)
    with compiled_for(stop - start) if decide_compiled else contextlib.nullcontext():
        matched = match_captions(part, voc, policy=job.policy, mode=job.mode, spans=job.spans, disambiguate=job.disambiguate)
        try:
            if job.kind == "match":
                dest = output_path(out, shard)
                with atomic_path(dest) as tmp:
                    matched.select(job.columns()).sink_parquet(tmp, metadata=labels_metadata(voc, mode=job.mode, policy=job.policy, spec=params["vocab_spec"]))
                partial = label_counts(pl.scan_parquet(dest), voc.height)
            else:
                partial = label_counts(matched, voc.height)
        except pl.exceptions.PolarsError as e:
            raise CurateError(f"reading source {job.source} failed: {str(e).splitlines()[0]}") from None
    finish(out, shard, params, partial)
    return False, partial


def read_partial(out: Path, shard: Shard) -> Partial:
    body = json.loads(_paths(out, shard)[1].read_text(encoding="utf-8"))
    return Partial(int(body["rows"]), int(body["matched"]), np.asarray(body["counts"], dtype=np.int64))
