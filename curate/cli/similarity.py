"""``curate score``, ``curate dedup``, ``curate diversity``: the similarity stage's measurements."""

from __future__ import annotations

from pathlib import Path

import typer

from curate.cli import app
from curate.cli.embed import _SOURCE_HELP, DEVICE_HELP, ENCODER_HELP


@app.command("score")
def score_command(
    source: str = typer.Argument(..., help=_SOURCE_HELP),
    encoder: str = typer.Option(..., "--encoder", "-e", help=ENCODER_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="Parquet file to write: uid, label, wnid, similarity (one row per matched caption and class)."),
    vocab: str | None = typer.Option(None, "--vocab", "-v", help="Vocabulary: imagenet1k, imagenet100, imagenet21k, demo, wordnet:SYNSET or a file (default: the source's own)."),
    definition_format: str = typer.Option("{name} which is {definition}", "--definition-format", help="Template of the class text: fields {name} (LAIONet's synset name), {definition} (WordNet gloss), {lemmas} (synonyms joined by ' or ')."),
    policy: str = typer.Option("all", "--policy", help="Captions naming several classes: all (score every class), drop (only single-class captions, as LAIONet), first."),
    mode: str = typer.Option("curate", "--mode", help="Matching mode: curate or reference (see curate match)."),
    preset: str | None = typer.Option(None, "--preset", help="Source column layout (default: detected)."),
    batch_size: int = typer.Option(256, "--batch-size", help="Texts per encoder batch."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
) -> None:
    """LAIONet's text-to-definition similarity: for every caption of SOURCE that names a class, the cosine similarity of the caption's text embedding and the class's definition text ('{name} which is {definition}'). Filter with curate build --similarity-from OUT --min-similarity T."""  # noqa: E501
    from curate.embed import load_encoder
    from curate.errors import CurateError
    from curate.similarity import check_format, score_source, write_scores
    from curate.ui import info

    if out.suffix.lower() != ".parquet":
        raise CurateError(f"--out {out}: write a .parquet file")
    check_format(definition_format)
    enc = load_encoder(encoder, device=device)
    result = score_source(
        source, vocab, enc, definition_format=definition_format, policy=policy, match_mode=mode, preset=preset, batch_size=batch_size
    )
    write_scores(result, out)
    s = result.scores["similarity"]
    spread = "" if s.is_empty() else f"; similarity min {s.min():.3f}, median {s.median():.3f}, max {s.max():.3f}"
    info(f"wrote {out}: {result.scores.height:,} (caption, class) pairs from {result.matched:,} of {result.rows:,} captions{spread}; encoder {encoder}")


@app.command("dedup")
def dedup_command(
    embeddings: Path = typer.Argument(..., help="An embeddings folder written by curate embed."),
    eps: float = typer.Option(0.05, "--eps", help="Rows whose embeddings have cosine similarity > 1 - EPS are near-duplicates."),
    out: Path = typer.Option(..., "--out", "-o", help="Parquet file to write: removed_uid, kept_uid, similarity (one row per removed row)."),
    index: str = typer.Option("auto", "--index", help="auto (exact below 100,000 vectors, IVF k-means clusters above), flat or ivf."),
    nlist: int | None = typer.Option(None, "--nlist", help="IVF: number of k-means clusters (default: about 4·sqrt(n))."),
    nprobe: int | None = typer.Option(None, "--nprobe", help="IVF: clusters searched per row (default: max(16, nlist/16))."),
    seed: int = typer.Option(0, "--seed", help="Seed of the k-means clustering."),
) -> None:
    """Find near-duplicate captions SemDeDup-style (k-means clusters, then cosine > 1 - EPS within them); of each group the earliest row stays. Writes the removed rows with the kept row each duplicates."""  # noqa: E501
    import polars as pl

    from curate.dedup import near_duplicates
    from curate.embed import open_embeddings
    from curate.errors import CurateError
    from curate.ui import info
    from curate.util import atomic_path

    if out.suffix.lower() != ".parquet":
        raise CurateError(f"--out {out}: write a .parquet file")
    emb = open_embeddings(embeddings)
    result = near_duplicates(emb.matrix(), eps=eps, index=index, nlist=nlist, nprobe=nprobe, seed=seed)
    uids = emb.index["uid"]
    table = pl.DataFrame(
        {"removed_uid": uids.gather(result.removed), "kept_uid": uids.gather(result.kept_partner), "similarity": result.similarity},
        schema={"removed_uid": pl.Utf8, "kept_uid": pl.Utf8, "similarity": pl.Float32},
    )
    with atomic_path(out) as tmp:
        table.write_parquet(tmp, compression="zstd")
    info(
        f"wrote {out}: {len(result.removed):,} of {emb.rows:,} rows are near-duplicates (cosine > {1 - eps:g}) of a kept row; "
        f"{result.candidate_pairs:,} pairs found with an {result.index}"
    )


@app.command("diversity")
def diversity_command(
    manifest: str = typer.Argument(..., help="A manifest: NAME under --out-root, or a folder path."),
    embeddings: Path = typer.Option(..., "--embeddings", help="Caption embeddings of the manifest's source (curate embed)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Parquet file to write: label, class_name, n, mean_cosine."),
    out_root: str = typer.Option("manifests", "--out-root", help="Folder holding manifest folders."),
) -> None:
    """Intra-class diversity of a manifest: per class, the mean pairwise cosine similarity of its captions' embeddings (lower = more varied)."""
    import polars as pl

    from curate import ui
    from curate.manifest import manifest_dir, read_manifest
    from curate.similarity import manifest_diversity
    from curate.util import atomic_path

    m = read_manifest(manifest_dir(manifest, out_root))
    table = manifest_diversity(m.train, str(embeddings)).join(
        m.classes.select(pl.col("label").cast(pl.Int32), pl.col("name").alias("class_name")), on="label", how="left"
    ).select("label", "class_name", "n", "mean_cosine").sort("label")
    if out is not None:
        with atomic_path(out) as tmp:
            table.write_parquet(tmp, compression="zstd")
    ui.print_frame(table.sort("mean_cosine", descending=True, nulls_last=True))
    mean = table["mean_cosine"].mean()
    ui.info(f"{m.folder}: {table.height} classes, {int(table['n'].sum()):,} rows with embeddings; mean intra-class cosine {mean:.4f}" if mean is not None else f"{m.folder}: no class has two rows with embeddings")
