"""``curate freq``: class frequencies of a caption source, their statistics and plot."""

from __future__ import annotations

from pathlib import Path

import typer

from curate.cli import app
from curate.cli.match import _SOURCE_HELP, _STRICT_HELP, open_for_matching


@app.command("freq")
def freq_command(
    source: str = typer.Argument(..., help=_SOURCE_HELP + " Or a Parquet file written by curate match (has a 'labels' column)."),
    vocab: str | None = typer.Option(
        None, "--vocab", "-v", help="Vocabulary: imagenet1k, imagenet100, imagenet21k, demo, wordnet:SYNSET or a file (default: the source's own)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write classes.tsv, classes.parquet, stats.json and freq.png into."),
    reference: Path | None = typer.Option(
        None, "--reference", "-r", help="A name<TAB>count table (e.g. ../shared/reference/freqs/laion400m_imagenet_ori.tsv, or a classes.tsv written here) to compare with."
    ),
    policy: str = typer.Option("all", "--policy", help="Label policy when matching: all, drop or first (see curate match)."),
    mode: str = typer.Option("curate", "--mode", help="Matching mode: curate or reference (see curate match)."),
    caption_col: str | None = typer.Option(None, "--caption-col", help="Input column holding the caption (overrides the source's preset)."),
    strict: bool = typer.Option(False, "--strict", help=_STRICT_HELP),
) -> None:
    """Count how many captions of SOURCE mention each class; write the class table, statistics and
    plot, and print the headline numbers."""
    import polars as pl

    from curate.errors import CurateError
    from curate.freq import class_table, distribution_stats, read_reference, write_freq
    from curate.match import match_captions
    from curate.sources import validate_source
    from curate.util import check_writable_dir
    from curate.vocab import load_vocab

    check_writable_dir(out.parent, option="--out")
    ref = read_reference(reference) if reference is not None else None
    no_text = None
    if source.endswith(".parquet") and Path(source).is_file() and "labels" in pl.scan_parquet(source).collect_schema().names():
        if vocab is None:
            raise CurateError(f"{source} holds matched labels; say which vocabulary they index with --vocab")
        voc = load_vocab(vocab)
        matched = pl.scan_parquet(source)
    else:
        src, voc = open_for_matching(source, vocab, caption_col, strict=strict)
        matched = match_captions(src.lazy, voc, policy=policy, mode=mode)
        no_text = validate_source(src).bad_captions
    try:
        table = class_table(matched, voc)
    except pl.exceptions.PolarsError as e:
        raise CurateError(f"reading source {source} failed: {str(e).splitlines()[0]}") from e
    stats = distribution_stats(table["count"], ref, names=table["name"].to_list())
    stats.update({"source": source, "vocab": vocab, "policy": policy, "mode": mode})
    if no_text is not None:
        stats["no_text"] = no_text  # captions without text: no label, so in no class's count
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
    lines.append(f"wrote {out}/classes.tsv, classes.parquet, stats.json, freq.png")
    typer.echo("\n".join(lines))


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
