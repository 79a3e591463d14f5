"""``curate build`` per shard: the build's two passes over the source run shard by shard, the draw
once in between, and the manifest is the single build's, byte for byte, however the source was split.

A build reads its source twice (:mod:`curate.manifest`): pass one matches every row and keeps
``row, key, labels`` of the matched ones (the pool); the draw takes, per class, the rows with the
smallest seeded keys (:mod:`curate.sample`); pass two reads the drawn rows back and renders their
captions. The passes are the work that grows with the source, and both run per shard here. The
draw needs every row's key, not only the class counts: a class's target is met exactly by the rows
of smallest key *among all shards*, which no shard can tell alone (a threshold from the counts
would keep about, not exactly, the target). So it runs once, on the shards' pools laid end to end
(a few bytes per matched row, what a single build holds), and the result cannot depend on the split:
the pool's rows keep their positions in the whole source, and every key and caption comes from a
row's own uid. With ``keep_unmatched`` a shard's pool also holds its rows naming no class that
have caption text (``label`` -1); the draw sets them beside the labelled draw (all, or the nested
share ``unmatched_fraction`` keeps, by the same seeded keys), so they too are the single build's.

The work folder (one every node sees) holds, each file written through a temporary name:

- ``pool/shard-0000i-of-0000N.parquet`` + ``.counts.json`` (rows read, rows with text) + ``.done``:
  round one, a shard's pool (:func:`run_build_shard` before the draw exists);
- ``draw/``: the draw (``picked.parquet``, ``targets.parquet``, ``short.parquet``, ``draw.json``
  with the reasons rows left), written at once by the first :func:`reduce_build`;
- ``parts/shard-0000i-of-0000N.parquet`` + ``.done``: round two, a shard's manifest rows
  (:func:`run_build_shard` once the draw exists); the second :func:`reduce_build` assembles them
  into ``OUT_ROOT/NAME/``, the folder ``curate build`` writes.

Round one's markers record what shapes a pool (:func:`pool_params`: the source, the vocabulary's
content, the classes, how rows are labelled, the text the caption mode needs, the seed of the draw
keys, ``keep_unmatched``); the draw and round two's markers record the whole resolved recipe
(:func:`params`). A rerun skips completed shards, and a folder holding another build's shards is an
error, not a silent mix. So an option that only shapes the draw (the profile, the scale,
``--allow-shortfall``, ...) may change between round one and the first ``--reduce``: the pools are
kept, and a ``--reduce`` that stopped short (exit 2) can be run again with ``--allow-shortfall`` or a
smaller scale. Once the draw is written it is refused instead, in one line: remove ``draw/`` and
``parts/`` to draw again from the same pools.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from curate.captions import caption_mode
from curate.engine.shard import Shard, completed_shards, mark_done, output_path
from curate.errors import CurateError
from curate.manifest import (
    BuildResult,
    BuildSetup,
    Draw,
    assemble,
    check_some_text,
    draw_pool,
    fetch_rows,
    finish_build,
    manifest_part,
    prepare,
    profile_reference,
    scan_pool,
    settle_pool,
    write_manifest,
)
from curate.recipe import Recipe
from curate.util import atomic_path, check_writable_dir, write_text_atomic

POOL, DRAW, PARTS = "pool", "draw", "parts"


@dataclass(frozen=True)
class ShardRun:
    """What one ``curate build --shard`` call did: ``round`` 1 (the pool) or 2 (manifest rows)."""

    shard: Shard
    round: int
    skipped: bool
    rows: int  # round 1: source rows read; round 2: manifest rows written
    pooled: int = 0  # round 1: rows naming a class of the vocabulary (its pool)
    unlabelled: int = 0  # round 1, keep_unmatched: rows naming none, kept for the draw (label -1)


def params(setup: BuildSetup) -> dict:
    """What every marker and the draw record: the resolved recipe (where the manifest lands
    aside) and the vocabulary's content."""
    from curate.match.lexicon_cache import vocab_hash

    recipe = {k: v for k, v in setup.resolved.to_dict().items() if k != "out_root"}
    return {"kind": "build", **recipe, "vocab_sha": vocab_hash(setup.vocab)}


def pool_params(setup: BuildSetup) -> dict:
    """What round one's markers record: every option that shapes a shard's pool
    (:func:`~curate.manifest.scan_pool`), and nothing that shapes only the draw or the captions'
    rendering. The source and how it is opened (preset, image root), the vocabulary's content and
    the classes selected from it (seeded), how rows get their labels (matching mode, label policy,
    a labels file or the wnid column), the text columns the caption mode needs (a row without
    them is not pooled), the seed (the draw keys), ``keep_unmatched`` and whether the pool keeps
    each row's uid (for the similarity filter or a knn profile)."""
    from curate.match.lexicon_cache import vocab_hash

    r = setup.resolved
    return {
        "kind": "build-pool",
        **{k: getattr(r, k) for k in ("source", "preset", "image_root", "classes", "labels_from", "label_policy", "match_mode", "keep_unmatched", "seed")},
        "caption_needs": sorted(caption_mode(r.captions).needs),
        "keeps_uid": r.similarity_from is not None or setup.knn_arg is not None,
        "vocab_sha": vocab_hash(setup.vocab),
    }


def _total_rows(setup: BuildSetup) -> int:
    try:
        return int(setup.source.lazy.select(pl.len()).collect(engine="streaming").item())
    except pl.exceptions.PolarsError as e:
        raise CurateError(f"reading source {setup.source.location} failed: {str(e).splitlines()[0]}") from None


def _clear_stale(folder: Path, shard: Shard) -> None:
    # temporaries of a killed run of this shard (one task per shard; its pid may be on another node)
    for stale in folder.glob(f".{shard.name}.*.tmp"):
        stale.unlink(missing_ok=True)


def run_build_shard(recipe: Recipe, work: str | Path, shard: Shard) -> ShardRun:
    """One shard of a sharded build: round one (its pool) while the work folder has no draw,
    round two (its manifest rows) once it has; a shard whose marker is there is skipped."""
    work = Path(work)
    if work.exists() and not work.is_dir():
        raise CurateError(f"--work {work}: exists and is not a folder")
    setup = prepare(recipe, write=False)
    p = params(setup)
    if (work / DRAW).is_dir():
        return _run_part(setup, p, *read_draw(work, p, pool_params(setup)), work / PARTS, shard)
    folder, p = work / POOL, pool_params(setup)
    if _complete(folder, shard, p):
        body = _read_counts(folder, shard)
        return ShardRun(shard, 1, True, body["rows"], body["pooled"], body["unlabelled"])
    check_writable_dir(folder, option="--work")
    _clear_stale(folder, shard)
    bounds = shard.bounds(_total_rows(setup))
    raw, n_rows, n_text = scan_pool(setup.source, setup.vocab, setup.chosen, recipe, bounds=bounds)
    with atomic_path(output_path(folder, shard)) as tmp:
        raw.write_parquet(tmp, compression="zstd")
    unlabelled = int((raw["n_any"] == 0).sum())
    pooled = raw.height - unlabelled
    body = {"shard": shard.index, "shards": shard.count, "start": bounds[0], "rows": n_rows, "text": n_text, "pooled": pooled, "unlabelled": unlabelled}
    write_text_atomic(folder / f"{shard.name}.counts.json", json.dumps(body, sort_keys=True) + "\n")
    mark_done(folder, shard, p)
    return ShardRun(shard, 1, False, n_rows, pooled, unlabelled)


def _run_part(setup: BuildSetup, p: dict, drawn: Draw, n: int, folder: Path, shard: Shard) -> ShardRun:
    if shard.count != n:
        raise CurateError(f"--shard {shard}: the draw in {folder.parent} was made from {n} shards; run round two split the same way (--shard i/{n})")
    if _complete(folder, shard, p):
        return ShardRun(shard, 2, True, _part_rows(folder, shard))
    check_writable_dir(folder, option="--work")
    _clear_stale(folder, shard)
    bounds = shard.bounds(int(drawn.reasons["rows"]))
    # a row drawn for several classes (label policy each) is read once
    mine = drawn.picked.filter(pl.col("row").is_between(bounds[0], bounds[1], closed="left"))["row"].unique().sort()
    rows = fetch_rows(setup.source, mine, text=caption_mode(setup.recipe.captions).columns, bounds=bounds)
    if rows.height != mine.len():
        raise CurateError(f"source {setup.source.location}: shard {shard} found {rows.height} of its {mine.len()} drawn rows; has the source changed since round one?")
    part = manifest_part(setup, drawn, rows)
    with atomic_path(output_path(folder, shard)) as tmp:
        part.write_parquet(tmp, compression="zstd")
    mark_done(folder, shard, p)
    return ShardRun(shard, 2, False, part.height)


# ---------------------------------------------------------------------------------------------
# the draw, written once and read by every shard of round two


def _redo(path: Path, shard: Shard, rnd: int, e: BaseException) -> CurateError:
    why = str(e).splitlines()[0] if str(e) else type(e).__name__
    return CurateError(f"{path}: unreadable ({why}); remove it and {shard.name}.done beside it, then run --shard {shard} again to redo shard {shard.index} (round {'one' if rnd == 1 else 'two'})")


def _read_counts(folder: Path, shard: Shard) -> dict[str, int]:
    """Round one's counts of ``shard``; an error naming the file when it is missing or damaged."""
    path = folder / f"{shard.name}.counts.json"
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        return {k: int(body[k]) for k in ("rows", "text", "pooled", "unlabelled")}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise _redo(path, shard, 1, e) from None


def _read_part(folder: Path, shard: Shard, rnd: int) -> pl.DataFrame:
    """A shard's pool (round one) or manifest rows (round two); an error naming the file."""
    path = output_path(folder, shard)
    try:
        return pl.read_parquet(path)
    except (OSError, ValueError, pl.exceptions.PolarsError) as e:
        raise _redo(path, shard, rnd, e) from None


def _part_rows(folder: Path, shard: Shard) -> int:
    """How many manifest rows a completed shard of round two wrote (its Parquet footer)."""
    path = output_path(folder, shard)
    try:
        return int(pl.scan_parquet(path).select(pl.len()).collect().item())
    except (OSError, ValueError, pl.exceptions.PolarsError) as e:
        raise _redo(path, shard, 2, e) from None


def _check_markers(folder: Path, p: dict, *, shards: int | None = None) -> None:
    """Every completion marker in ``folder`` is this build's (and of a split ``shards`` ways)."""
    for marker in sorted(folder.glob("shard-*-of-*.done")) if folder.is_dir() else []:
        try:
            done = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise CurateError(f"{marker}: unreadable completion marker ({e}); remove it to redo the shard") from None
        if shards is not None and done.get("shards") != shards:
            raise CurateError(f"--work {folder.parent}: holds shards of a build split {done.get('shards')} ways, not {shards}; split it the same way, or give another --work")
        theirs = done.get("params") or {}
        if theirs != p:
            diff = sorted(k for k in {*p, *theirs} if p.get(k) != theirs.get(k))
            raise CurateError(
                f"--work {folder.parent}: holds shards of another build (it differs in {', '.join(diff)}: "
                f"{marker.name}); give the same options, or another --work"
            )


def _complete(folder: Path, shard: Shard, p: dict) -> bool:
    _check_markers(folder, p, shards=shard.count)
    return (folder / f"{shard.name}.done").is_file()


def write_draw(work: Path, p: dict, pool: dict, n: int, drawn: Draw) -> None:
    with atomic_path(work / DRAW) as tmp:
        tmp.mkdir()
        drawn.picked.write_parquet(tmp / "picked.parquet", compression="zstd")
        drawn.targets.write_parquet(tmp / "targets.parquet", compression="zstd")
        drawn.short.write_parquet(tmp / "short.parquet", compression="zstd")
        body = {"shards": n, "params": p, "pool": pool, "reasons": drawn.reasons, "similarity": drawn.similarity}
        (tmp / "draw.json").write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")


def read_draw(work: Path, p: dict, pool: dict) -> tuple[Draw, int]:
    """The draw in ``work`` and how many shards it was made from; an error when it is another build's
    (``p``: this build's :func:`params`), saying so when only the draw's options differ (``pool``:
    this build's :func:`pool_params`, round one's being the same)."""
    folder = work / DRAW
    try:
        body = json.loads((folder / "draw.json").read_text(encoding="utf-8"))
        picked, targets, short = (pl.read_parquet(folder / f"{name}.parquet") for name in ("picked", "targets", "short"))
    except (OSError, ValueError, pl.exceptions.PolarsError) as e:
        raise CurateError(f"{folder}: unreadable draw ({str(e).splitlines()[0]}); remove the folder and run --reduce again") from None
    theirs = body.get("params") if isinstance(body, dict) else None
    if not isinstance(theirs, dict):
        raise CurateError(f"{folder / 'draw.json'}: unreadable draw (no params); remove the folder and run --reduce again")
    if theirs != p:
        diff = ", ".join(sorted(k for k in {*p, *theirs} if p.get(k) != theirs.get(k)))
        if body.get("pool") == pool:
            raise CurateError(
                f"--work {work}: its draw was made with other options (it differs in {diff}); give the same options, "
                f"or remove {folder} and {work / PARTS} to draw again from round one's pools (kept) with these"
            )
        raise CurateError(f"--work {work}: holds the draw of another build (it differs in {diff}); give the same options, or another --work")
    try:
        return Draw(picked, targets, short, body["reasons"], body["similarity"]), int(body["shards"])
    except (KeyError, TypeError, ValueError) as e:
        raise CurateError(f"{folder / 'draw.json'}: unreadable draw (no {e}); remove the folder and run --reduce again") from None


def reduce_build(recipe: Recipe, work: str | Path) -> tuple[int, Draw | BuildResult]:
    """After round one (every shard's pool there): the draw, written into the work folder, and
    (1, the draw). After round two (every shard's manifest rows there): the manifest folder
    ``OUT_ROOT/NAME/``, written as ``curate build`` writes it, and (2, the build's result)."""
    work = Path(work)
    if not work.is_dir():
        raise CurateError(f"--work {work}: not a folder of build shards (run curate build --shard i/N --work {work} first)")
    setup = prepare(recipe, write=True)  # the manifest folder judged at round one, not after round two
    p = params(setup)
    if (work / DRAW).is_dir():
        drawn, n_drawn = read_draw(work, p, pool_params(setup))
        n = completed_shards(work / PARTS, what="--reduce: round two,")
        if n != n_drawn:
            raise CurateError(f"--reduce: {work / PARTS} holds {n} shards, the draw was made from {n_drawn}")
        _check_markers(work / PARTS, p)
        parts = [_read_part(work / PARTS, Shard(i, n), 2) for i in range(n)]
        manifest = assemble(parts, setup.recipe)
        if manifest.height != drawn.picked.height:
            raise CurateError(f"--reduce {work}: the shards' manifest parts hold {manifest.height} rows, the draw {drawn.picked.height}")
        result = finish_build(setup, drawn, manifest)
        write_manifest(result, reference=profile_reference(setup))
        return 2, result
    folder = work / POOL
    n = completed_shards(folder, what="--reduce: round one,")
    pool_p = pool_params(setup)
    _check_markers(folder, pool_p)
    raws, n_rows, n_text = [], 0, 0
    for i in range(n):
        shard = Shard(i, n)
        body = _read_counts(folder, shard)
        raws.append(_read_part(folder, shard, 1))
        n_rows, n_text = n_rows + body["rows"], n_text + body["text"]
    check_some_text(n_rows, n_text, setup.recipe)
    pool, reasons = settle_pool(setup.source, pl.concat(raws), n_rows, n_text, setup.recipe)
    del raws
    drawn = draw_pool(setup, pool, reasons)
    write_draw(work, p, pool_p, n, drawn)
    return 1, drawn
