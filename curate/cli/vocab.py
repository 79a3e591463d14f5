"""``curate vocab``: show or export a class vocabulary."""

from __future__ import annotations

from pathlib import Path

import typer

from curate.cli import app


@app.command("vocab")
def vocab_command(
    name: str = typer.Argument(
        ...,
        help="imagenet1k | imagenet100 | imagenet21k | imagenet1k-study | demo | wordnet:SYNSET (e.g. wordnet:dog.n.01) | a csv/tsv/json file with a 'name' column.",
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the vocabulary here (.parquet, .json, .jsonl, .csv, .tsv) instead of printing it."),
    depth: int | None = typer.Option(None, "--depth", help="wordnet:SYNSET only: how many hyponym levels below the root to include (default: all)."),
    limit: int | None = typer.Option(None, "--limit", "-n", help="Print only the first N rows."),
) -> None:
    """List a vocabulary: label, wnid, name and WordNet lemmas, one class per line (TSV)."""
    from curate.ui import info
    from curate.vocab import load_vocab, write_vocab

    vocab = load_vocab(name, depth=depth)
    if out is not None:
        write_vocab(vocab, out)
        info(f"wrote {vocab.height} classes to {out}")
        return
    rows = vocab if limit is None else vocab.head(limit)
    lines = ["label\twnid\tname\tlemmas"]
    for r in rows.iter_rows(named=True):
        lines.append(f"{r['label']}\t{r['wnid'] or ''}\t{r['name']}\t{'|'.join(r['lemmas'])}")
    typer.echo("\n".join(lines))
    info(f"{vocab.height} classes in {name}")
