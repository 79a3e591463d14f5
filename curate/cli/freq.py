"""``curate freq``: class frequencies of a caption source, their statistics and plot."""

from __future__ import annotations

from pathlib import Path

import typer

from curate.cli import app
from curate.cli.match import (
    _SOURCE_HELP,
    _STRICT_HELP,
    ENGINE_HELP,
    RAY_ADDRESS_HELP,
    SHARD_HELP,
    SHARDS_HELP,
    open_for_matching,
    run_sharded_cli,
)


@app.command("freq")
def freq_command(
    source: str = typer.Argument(..., help=_SOURCE_HELP + " Or a Parquet file written by curate match (has a 'labels' column)."),
    vocab: str | None = typer.Option(
        None, "--vocab", "-v", help="Vocabulary: imagenet1k, imagenet100, imagenet21k, imagenet1k-study (the reference study's synonyms), demo, wordnet:SYNSET or a file (default: the source's own; for a file curate match wrote, the vocabulary it was matched with)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write classes.tsv, classes.parquet, stats.json and freq.png into."),
    reference: str | None = typer.Option(
        None,
        "--reference",
        "-r",
        help="A name<TAB>count table to compare with: a file (e.g. a classes.tsv written here) or one the reference study "
        "published: laion400m, laion2b, cc12m, yfcc15m, metaclip400m, incaps, laionet-0.7, laionet-0.82.",
    ),
    policy: str = typer.Option("all", "--policy", help="Label policy when matching: all, drop or first (see curate match)."),
    mode: str = typer.Option("curate", "--mode", help="Matching mode: curate or reference (see curate match)."),
    caption_col: str | None = typer.Option(None, "--caption-col", help="Input column holding the caption (overrides the source's preset)."),
    entry_counts: bool = typer.Option(
        False, "--entry-counts", help="SOURCE is a MetaCLIP entry -> count JSON (datacard_400m.json): each entry is matched as a caption and adds its count to its classes (the study's MetaCLIP counting)."
    ),
    shard: str | None = typer.Option(None, "--shard", help=SHARD_HELP + " Writes only the shard's partial counts into --out; add them with --reduce."),
    shards: int | None = typer.Option(None, "--shards", help=SHARDS_HELP + " Partial counts go to OUT/shards/, the tables to OUT."),
    engine: str = typer.Option("local", "--engine", help=ENGINE_HELP),
    ray_address: str | None = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP),
    reduce: bool = typer.Option(
        False, "--reduce", help="SOURCE is a folder of shard outputs (curate match/freq --shard): add their partial counts and write what one run over the whole source writes."
    ),
    strict: bool = typer.Option(False, "--strict", help=_STRICT_HELP),
) -> None:
    """Count how many captions of SOURCE mention each class; write the class table, statistics and
    plot, and print the headline numbers."""
    import polars as pl

    from curate.engine.local import expected_rows
    from curate.engine.shard import MatchJob
    from curate.errors import CurateError
    from curate.freq import check_freq_dest, class_table, distribution_stats, read_reference, write_freq
    from curate.match import match_captions
    from curate.match.kernels import compiled_for
    from curate.sources import validate_source
    from curate.ui import info
    from curate.util import check_writable_dir
    from curate.vocab import load_vocab

    check_writable_dir(out.parent, option="--out")
    if shard is None:  # before the work (a --shard run writes its partial counts into a folder of shards)
        check_freq_dest(out)
    ref = read_reference(reference) if reference is not None else None
    src = None
    weight = None
    no_text = None
    sharded = shard is not None or shards is not None or engine != "local"
    if strict and (reduce or sharded):
        raise CurateError("--strict stops a single run at its first row without text: it goes without --reduce, --shard, --shards and --engine")
    if reduce:
        if sharded:
            raise CurateError("--reduce adds the partial counts already written: it goes without --shard, --shards and --engine")
        table, params = _reduced(Path(source), vocab)
        source, vocab, policy, mode = params["source"], params["vocab"], params["policy"], params["mode"]
    elif sharded:
        if entry_counts:
            raise CurateError("--entry-counts reads one entry -> count file: it goes without --shard, --shards and --engine")
        job = MatchJob(source=source, vocab=vocab, policy=policy, mode=mode, kind="freq", caption_col=caption_col)
        if shard is not None:
            run_sharded_cli(job, out, shard=shard, shards=None, engine=engine, ray_address=ray_address)
            return
        run_sharded_cli(job, out / "shards", shard=None, shards=shards, engine=engine, ray_address=ray_address)
        table, _ = _reduced(out / "shards", vocab)
    else:
        if entry_counts:
            from curate.match.reference import read_entry_counts

            voc = load_vocab(vocab or "imagenet1k")
            matched = match_captions(read_entry_counts(source).lazy(), voc, policy=policy, mode=mode)
            weight = "count"
        elif source.endswith(".parquet") and Path(source).is_file() and "labels" in pl.scan_parquet(source).collect_schema().names():
            from curate.pool import check_vocabulary, labels_vocab_spec

            given = vocab is not None
            vocab = vocab or labels_vocab_spec(source)  # by default the vocabulary it was matched with
            if vocab is None:
                raise CurateError(f"{source} holds matched labels; say which vocabulary they index with --vocab")
            try:
                voc = load_vocab(vocab)
            except CurateError as e:
                if given:
                    raise
                raise CurateError(f"{source} was matched with vocabulary {vocab!r}, which does not load here ({e}); give it with --vocab") from None
            # class indices of another vocabulary name other classes
            check_vocabulary([Path(source)], voc, f"--vocab {vocab}" if given else f"the vocabulary {source} names ({vocab})")
            matched = pl.scan_parquet(source)
        else:
            src, voc = open_for_matching(source, vocab, caption_col, strict=strict)
        with compiled_for(expected_rows(src.files) if src is not None else 0):
            if src is not None:
                matched = match_captions(src.lazy, voc, policy=policy, mode=mode)
                no_text = validate_source(src).bad_captions
            try:
                table = class_table(matched, voc, weight=weight)
            except pl.exceptions.PolarsError as e:
                raise CurateError(f"reading source {source} failed: {str(e).splitlines()[0]}") from e
    stats = distribution_stats(table["count"], ref, names=table["name"].to_list())
    stats.update({"source": source, "vocab": vocab, "policy": policy, "mode": mode})
    if no_text:
        # captions without text: no label, so in no class's count (left out when there are none, so a
        # clean source's stats.json is the same bytes as its sharded and reduced run's)
        stats["no_text"] = no_text
    write_freq(out, table, stats, reference=ref)
    lines = [
        f"classes {stats['classes']}, total {stats['total']:,} ({stats['count_unit']})",
        f"zero-count classes {stats['zero_count_classes']}, max {stats['max']:,}, median {stats['median']:g}, min>0 {stats['min_nonzero']}",
        f"max/min {_fmt(stats['max_min_ratio'])}, max/median {_fmt(stats['max_median_ratio'])}, Gini {stats['gini']:.3f}, "
        f"entropy {_fmt(stats['normalised_entropy'])}, Zipf {_fmt(stats['zipf_exponent'])}, top-10% share {_fmt(stats['top10pct_share'])}",
    ]
    if stats.get("no_text"):
        lines.append(f"{stats['no_text']:,} captions without text (null or blank): no label, counted in no class")
    if "reference" in stats:
        r = stats["reference"]
        lines.append(f"vs reference: Spearman {_fmt(r['spearman'])}, Pearson(log) {_fmt(r['pearson_log'])}, KL {r['kl_divergence']:.3f}")
    typer.echo("\n".join(lines))  # the answer, on stdout; where it went, on stderr as match says it
    info(f"wrote {out}/classes.tsv, classes.parquet, stats.json, freq.png")


def _reduced(folder: Path, vocab: str | None):
    """The class table of a folder of shard outputs, added up, and the run's parameters."""
    from curate.engine.shard import reduce_counts, vocab_hash
    from curate.errors import CurateError
    from curate.freq import class_table_from_counts
    from curate.vocab import load_vocab

    params, total = reduce_counts(folder)
    voc = load_vocab(vocab or params["vocab_spec"])
    if vocab_hash(voc) != params["vocab_sha"]:
        raise CurateError(f"--reduce {folder}: the shards were matched against another vocabulary than {vocab or params['vocab_spec']} (its content changed)")
    return class_table_from_counts(total.counts, voc), params


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value + 0.0:.3f}".replace("-0.000", "0.000")  # no negative zero
