"""``curate embed``: caption (and class-definition) embeddings of a source, as float16 shards."""

from __future__ import annotations

from pathlib import Path

import typer

from curate.cli import app

_SOURCE_HELP = "'demo', a caption file (.parquet .csv .tsv .jsonl .json .tar ...), a folder, a glob or an http(s) URL (see curate head)."
ENCODER_HELP = (
    "Text encoder: openclip:MODEL:PATH (an open_clip architecture such as ViT-B-32 with a local checkpoint file) "
    "or a runs/NAME folder of curate train --objective clip. Weights are never downloaded."
)
DEVICE_HELP = "Where to run the encoder: auto (CUDA when present), cpu or cuda."


@app.command("embed")
def embed_command(
    source: str = typer.Argument(..., help=_SOURCE_HELP),
    encoder: str = typer.Option(..., "--encoder", "-e", help=ENCODER_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write: embed.json, shards/NNNNN.npy + .parquet, index.parquet (uid, row, wnid)."),
    vocab: str | None = typer.Option(None, "--vocab", "-v", help="Also embed each class's definition text (classes.npy, classes.parquet) for this vocabulary."),
    definition_format: str | None = typer.Option(None, "--definition-format", help="Template of the class texts with --vocab: fields {name}, {definition}, {lemmas} (default: LAIONet's '{name} which is {definition}')."),
    preset: str | None = typer.Option(None, "--preset", help="Source column layout (laion, cc, yfcc, imagenet-captions, generic) (default: detected)."),
    shard_size: int = typer.Option(65536, "--shard-size", help="Captions per shard: the unit of resume."),
    batch_size: int = typer.Option(256, "--batch-size", help="Captions per encoder batch."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
) -> None:
    """Embed every caption of SOURCE with a CLIP text tower: L2-normalised float16 rows in shards, with a uid index. A killed run resumes at the first unfinished shard; the same input gives the same bytes."""  # noqa: E501
    from curate.embed import embed_source, load_encoder
    from curate.ui import info

    enc = load_encoder(encoder, device=device)
    result = embed_source(
        source, enc, out, vocab=vocab, definition_format=definition_format, preset=preset,
        shard_size=shard_size, batch_size=batch_size,
    )
    info(
        f"wrote {result.out}: {result.rows:,} captions x {result.dim} dims in {result.shards} shard(s)"
        + (f" ({result.reused} from an earlier run)" if result.reused else "")
        + (f", {result.classes} class definitions" if result.classes else "")
        + f"; encoder {encoder} on {enc.device}"
    )
