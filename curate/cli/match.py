"""``curate match``: which captions of a source mention which vocabulary classes."""

from __future__ import annotations

from pathlib import Path

import typer

from curate.cli import app

_SOURCE_HELP = "'demo', a caption file (.parquet .csv .tsv .jsonl .json .tar ...), a folder, a glob or an http(s) URL (see curate head)."
SHARD_HELP = "Run one shard only: i/N (0 <= i < N; a contiguous 1/N of the rows), or slurm (the task of a job array: SLURM_ARRAY_TASK_ID of SLURM_ARRAY_TASK_COUNT)."
SHARDS_HELP = "Run all N shards: here (local engine, side by side on every core) or on Ray (--engine ray). Default with --engine ray: one shard per source file."
ENGINE_HELP = "local (this process) or ray (Ray Data actors on a local or running cluster; pip install 'curate[ray]')."
RAY_ADDRESS_HELP = "The Ray cluster to join (ray.init(address=...); 'auto' for the one this machine belongs to); default: start a local Ray."


def run_sharded_cli(job, out: Path, *, shard: str | None, shards: int | None, engine: str, ray_address: str | None) -> bool:
    """Run ``job`` sharded when the options ask for it, printing what happened; False when they
    do not (a single run)."""
    from curate.engine import ENGINES, run_all
    from curate.engine.shard import parse_shard, run_shard
    from curate.errors import CurateError
    from curate.ui import info

    if engine not in ENGINES:
        raise CurateError(f"--engine {engine!r} is not one of {', '.join(ENGINES)}")
    if shard is not None:
        if shards is not None or engine != "local":
            raise CurateError("--shard runs one shard in this process: it goes without --shards and --engine ray")
        one = parse_shard(shard)
        skipped, part = run_shard(job, one, out)
        what = "already complete, skipped" if skipped else f"{part.rows:,} captions, {part.matched:,} with a class"
        info(f"shard {one} of {job.source} -> {out}: {what}")
        return True
    if shards is None and engine == "local":
        return False
    if shards is not None and shards < 1:
        raise CurateError(f"--shards {shards}: at least 1")
    results = run_all(engine, job, out, shards=shards, address=ray_address)
    done = sum(1 for skipped, _ in results if not skipped)
    rows = sum(p.rows for _, p in results)
    hit = sum(p.matched for _, p in results)
    info(f"{len(results)} shards of {job.source} in {out} ({done} run now, {len(results) - done} already complete; engine {engine}): {rows:,} captions, {hit:,} with a class")
    return True


_STRICT_HELP = "Stop at the first row whose caption is null or blank, naming it (default: such rows get no label and are counted)."


def open_for_matching(source: str, vocab_spec: str | None, caption_col: str | None, *, strict: bool = False):
    """The source's lazy table and the vocabulary to match it against (the source's default when
    ``vocab_spec`` is None)."""
    from curate.sources import open_source
    from curate.vocab import load_vocab

    src = open_source(source, caption_col=caption_col, strict=strict)
    vocab = load_vocab(vocab_spec or src.vocab)
    return src, vocab


def _count_no_text(captions, counted: list[int]):
    """``captions`` unchanged; the number of them without text (null or blank, as
    :func:`curate.sources.validate_source` counts them) appended to ``counted``."""
    counted.append(captions.null_count() + int((captions.str.strip_chars() == "").sum() or 0))
    return captions


@app.command("match")
def match_command(
    source: str | None = typer.Argument(None, help=_SOURCE_HELP),
    vocab: str | None = typer.Option(
        None, "--vocab", "-v", help="Vocabulary: imagenet1k, imagenet100, imagenet21k, imagenet1k-study (the reference study's synonyms), demo, wordnet:SYNSET or a file (default: the source's own)."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Parquet file to write: uid, labels (list of class indices), then --spans / --keep columns. With --shard, --shards or --engine ray: a folder of shard files."
    ),
    policy: str = typer.Option(
        "all", "--policy", help="Captions naming several classes: all (keep every class), drop (label only single-class captions), first (the first mention)."
    ),
    mode: str = typer.Option(
        "curate", "--mode", help="curate (normalised whole-word matching with plurals, longest match, negative context) or reference (the reference study's counting, caption by caption: Treebank tokens lemmatised, all tokens of a synonym anywhere, its nine veto lists; pair it with --vocab imagenet1k-study)."
    ),
    spans: bool = typer.Option(False, "--spans", help="Also write 'spans': per caption every candidate mention (label, byte offsets into the normalised caption, surface form, reason: kept or why it was dropped)."),
    keep: str | None = typer.Option(None, "--keep", help="Comma-separated input columns to carry into the output (e.g. caption,url)."),
    caption_col: str | None = typer.Option(None, "--caption-col", help="Input column holding the caption (overrides the source's preset)."),
    explain: str | None = typer.Option(
        None, "--explain", help="Instead of a source: print every candidate mention in this one caption and what became of it (kept, or dropped as veto, sense, name, modifier)."
    ),
    disambiguate: bool = typer.Option(
        True, "--disambiguate/--no-disambiguate", help="Mode curate: drop candidates that are another sense of the word, part of a name or a modifier of another noun (WordNet + SemCor evidence; --spans says why each was dropped). --no-disambiguate keeps every candidate that survives the negative-context rules."
    ),
    shard: str | None = typer.Option(None, "--shard", help=SHARD_HELP),
    shards: int | None = typer.Option(None, "--shards", help=SHARDS_HELP),
    engine: str = typer.Option("local", "--engine", help=ENGINE_HELP),
    ray_address: str | None = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP),
    strict: bool = typer.Option(False, "--strict", help=_STRICT_HELP),
) -> None:
    """Match every caption of SOURCE against a class vocabulary and write the labels as Parquet.

    Streams: memory stays flat however many captions the source has. Sharded (--shard i/N on
    many machines, or --shards N / --engine ray here), each shard writes
    OUT/shard-0000i-of-0000N.parquet, its partial counts (.counts.json) and a completion marker
    (.done); a rerun skips completed shards; curate freq OUT --reduce adds the counts."""
    import polars as pl

    from curate.engine.local import expected_rows
    from curate.engine.shard import MatchJob
    from curate.errors import CurateError
    from curate.match import match_captions
    from curate.match.kernels import compiled_for
    from curate.pool import labels_metadata
    from curate.sources import validate_source
    from curate.ui import info
    from curate.util import atomic_path, check_writable_dir

    if explain is not None:
        from curate.match import explain_caption
        from curate.vocab import load_vocab

        voc = load_vocab(vocab or "imagenet1k")
        info(f"vocabulary {vocab or 'imagenet1k'} ({voc.height} classes), mode curate{'' if disambiguate else ', --no-disambiguate'}")
        rows = explain_caption(explain, voc, disambiguate=disambiguate)
        # the command's answer: on stdout, where a pipe reads it
        if not rows:
            typer.echo("no candidate mention: no word sequence of the caption is a lemma of the vocabulary")
        for r in rows:
            typer.echo(f"{r['surface']!r:>24} -> {r['name']} ({r['wnid']}): {r['reason']}")
        return
    if source is None or out is None:
        raise CurateError("curate match needs a SOURCE and --out FILE (or --explain CAPTION)")
    kept = [c.strip() for c in keep.split(",") if c.strip()] if keep else []
    if strict and (shard is not None or shards is not None or engine != "local"):
        raise CurateError("--strict stops a single run at its first row without text: it goes without --shard, --shards and --engine")
    job = MatchJob(source=source, vocab=vocab, policy=policy, mode=mode, kind="match", spans=spans, keep=tuple(kept), caption_col=caption_col, disambiguate=disambiguate)
    if run_sharded_cli(job, out, shard=shard, shards=shards, engine=engine, ray_address=ray_address):
        return
    if out.suffix.lower() != ".parquet":
        raise CurateError(f"--out {out}: write a .parquet file")
    check_writable_dir(out.parent, option="--out")
    src, voc = open_for_matching(source, vocab, caption_col, strict=strict)
    names = src.lazy.collect_schema().names()
    missing = [c for c in kept if c not in names]
    if missing:
        raise CurateError(f"--keep: column(s) {', '.join(missing)} not in source {source} (columns: {', '.join(names)})")
    cols = ["uid", "labels", *(["spans"] if spans else []), *[c for c in kept if c not in ("uid", "labels", "spans")]]
    # rows without caption text, counted in the matching pass rather than by reading the source again
    counted = None if strict or src.skip_bad_rows else []
    lf = src.lazy
    if counted is not None:
        lf = lf.with_columns(pl.col("caption").map_batches(lambda s: _count_no_text(s, counted), return_dtype=pl.Utf8, is_elementwise=True))
    with compiled_for(expected_rows(src.files)), atomic_path(out) as tmp:
        matched = match_captions(lf, voc, policy=policy, mode=mode, spans=spans, disambiguate=disambiguate)
        try:
            matched.select(cols).sink_parquet(tmp, metadata=labels_metadata(voc, mode=mode, policy=policy, spec=vocab or src.vocab))
        except CurateError:
            raise
        except pl.exceptions.PolarsError as e:
            raise CurateError(f"reading source {source} failed: {str(e).splitlines()[0]}") from e
    no_text = 0 if strict else sum(counted) if counted is not None else validate_source(src).bad_captions
    summary = pl.scan_parquet(out).select(
        pl.len().alias("rows"), (pl.col("labels").list.len() > 0).sum().alias("matched")
    ).collect()
    rows, hit = summary.row(0)
    blank = f", {no_text:,} without caption text (no label)" if no_text else ""
    info(f"wrote {out}: {rows:,} captions, {hit:,} with a class ({hit / max(rows, 1):.1%}){blank}; vocabulary {vocab or src.vocab} ({voc.height} classes), policy {policy}, mode {mode}")
