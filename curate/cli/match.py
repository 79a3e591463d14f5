"""``curate match``: which captions of a source mention which vocabulary classes."""

from __future__ import annotations

from pathlib import Path

import typer

from curate.cli import app

_SOURCE_HELP = "'demo', a caption file (.parquet .csv .tsv .jsonl .json .tar ...), a folder, a glob or an http(s) URL (see curate head)."


_STRICT_HELP = "Stop at the first row whose caption is null or blank, naming it (default: such rows get no label and are counted)."


def open_for_matching(source: str, vocab_spec: str | None, caption_col: str | None, *, strict: bool = False):
    """The source's lazy table and the vocabulary to match it against (the source's default when
    ``vocab_spec`` is None)."""
    from curate.sources import open_source
    from curate.vocab import load_vocab

    src = open_source(source, caption_col=caption_col, strict=strict)
    vocab = load_vocab(vocab_spec or src.vocab)
    return src, vocab


@app.command("match")
def match_command(
    source: str = typer.Argument(..., help=_SOURCE_HELP),
    vocab: str | None = typer.Option(
        None, "--vocab", "-v", help="Vocabulary: imagenet1k, imagenet100, imagenet21k, demo, wordnet:SYNSET or a file (default: the source's own)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Parquet file to write: uid, labels (list of class indices), then --spans / --keep columns."),
    policy: str = typer.Option(
        "all", "--policy", help="Captions naming several classes: all (keep every class), drop (label only single-class captions), first (the first mention)."
    ),
    mode: str = typer.Option(
        "curate", "--mode", help="curate (normalised whole-word matching with plurals, longest match, negative context) or reference (the reference study's counting: lemmatised tokens of a synonym present anywhere)."
    ),
    spans: bool = typer.Option(False, "--spans", help="Also write 'spans': per caption the mentions (label, byte offsets into the normalised caption, surface form)."),
    keep: str | None = typer.Option(None, "--keep", help="Comma-separated input columns to carry into the output (e.g. caption,url)."),
    caption_col: str | None = typer.Option(None, "--caption-col", help="Input column holding the caption (overrides the source's preset)."),
    strict: bool = typer.Option(False, "--strict", help=_STRICT_HELP),
) -> None:
    """Match every caption of SOURCE against a class vocabulary and write the labels as Parquet.

    Streams: memory stays flat however many captions the source has."""
    import polars as pl

    from curate.errors import CurateError
    from curate.match import match_captions
    from curate.sources import validate_source
    from curate.ui import info
    from curate.util import atomic_path, check_writable_dir

    if out.suffix.lower() != ".parquet":
        raise CurateError(f"--out {out}: write a .parquet file")
    check_writable_dir(out.parent, option="--out")
    src, voc = open_for_matching(source, vocab, caption_col, strict=strict)
    names = src.lazy.collect_schema().names()
    kept = [c.strip() for c in keep.split(",") if c.strip()] if keep else []
    missing = [c for c in kept if c not in names]
    if missing:
        raise CurateError(f"--keep: column(s) {', '.join(missing)} not in source {source} (columns: {', '.join(names)})")
    matched = match_captions(src.lazy, voc, policy=policy, mode=mode, spans=spans)
    cols = ["uid", "labels", *(["spans"] if spans else []), *[c for c in kept if c not in ("uid", "labels", "spans")]]
    with atomic_path(out) as tmp:
        try:
            matched.select(cols).sink_parquet(tmp)
        except CurateError:
            raise
        except pl.exceptions.PolarsError as e:
            raise CurateError(f"reading source {source} failed: {str(e).splitlines()[0]}") from e
    no_text = 0 if strict else validate_source(src).bad_captions
    summary = pl.scan_parquet(out).select(
        pl.len().alias("rows"), (pl.col("labels").list.len() > 0).sum().alias("matched")
    ).collect()
    rows, hit = summary.row(0)
    blank = f", {no_text:,} without caption text (no label)" if no_text else ""
    info(f"wrote {out}: {rows:,} captions, {hit:,} with a class ({hit / max(rows, 1):.1%}){blank}; vocabulary {vocab or src.vocab} ({voc.height} classes), policy {policy}, mode {mode}")
