"""``curate shards``: download a manifest's images (img2dataset) and write its tensor shards."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from curate.cli import app
from curate.errors import CurateError


@app.command()
def shards(
    manifest: Path = typer.Argument(..., help="A manifest folder (manifests/NAME) holding manifest.parquet."),
    *,
    resolution: int = typer.Option(
        64,
        "--resolution",
        "-r",
        help="Side in pixels of the square images, both downloaded and in the tensor shards.",
    ),
    processes: int = typer.Option(
        0, "--processes", "-p", help="img2dataset download processes (0: one per CPU core)."
    ),
    threads: int = typer.Option(32, "--threads", "-t", help="Download threads per img2dataset process."),
    distributor: str = typer.Option(
        "multiprocessing",
        "--distributor",
        help="img2dataset's own distributor: multiprocessing (one machine), ray (joins the Ray cluster at $RAY_ADDRESS, else starts a local Ray) or pyspark (the active Spark session, else a local one); install ray or pyspark first. The manifest folder must be one every worker sees.",
    ),
    shard_size: int = typer.Option(
        1000, "--shard-size", help="Rows per img2dataset tar, and so at most per tensor shard."
    ),
    workers: int = typer.Option(
        0, "--workers", "-w", help="Processes decoding images into tensors (0: one per core)."
    ),
    timeout: int = typer.Option(10, "--timeout", help="Seconds before one image download gives up."),
    retries: int = typer.Option(0, "--retries", help="Extra attempts for an image that failed to download."),
    skip_download: bool = typer.Option(
        False, "--skip-download", help="Only tensorize the tars already under images/ (no network)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the reports as JSON instead of tables."),
) -> None:
    """Download MANIFEST's images into webdataset tars (images/), then write memory-mappable tensor
    shards (shards/{train,eval}/, with index.json). Re-running resumes: finished shards are kept.
    Failed downloads and undecodable images are counted by reason."""
    from rich.table import Table

    from curate import ui
    from curate.shards import SKIP_REASONS, download_images, manifest_splits, tensorize

    for name, value in (("--processes", processes), ("--workers", workers), ("--retries", retries)):
        if value < 0:
            raise CurateError(f"{name} {value}: must be 0 or more")
    if timeout < 1:
        raise CurateError(f"--timeout {timeout}: must be at least 1 second")
    if skip_download:
        # train must be there; eval only when it was downloaded
        splits = [
            p.split
            for p in manifest_splits(manifest)
            if p.split == "train" or (manifest / "images" / p.split).is_dir()
        ]
        downloads = []
    else:
        downloads = download_images(
            manifest, resolution=resolution, processes=processes or None, threads=threads,
            distributor=distributor, shard_size=shard_size, timeout=timeout, retries=retries,
        )  # fmt: skip
        splits = [d.split for d in downloads if d.succeeded > 0]
        dead = [d for d in downloads if d.succeeded == 0]
        if dead and not splits:
            d = dead[0]
            top = next(iter(d.failed), "no rows")
            raise CurateError(
                f"{manifest}: no image of split {d.split} could be downloaded ({d.rows} rows; most: {top})"
            )
    tensors = [tensorize(manifest, split=s, resolution=resolution, workers=workers or None) for s in splits]
    if as_json:
        ui.console.print_json(
            json.dumps(
                {"download": [d.to_dict() for d in downloads], "tensorize": [t.to_dict() for t in tensors]}
            )
        )
        return
    for d in downloads:
        head = f"download {d.split}: {d.succeeded}/{d.rows} images ({d.success_rate:.1%}) -> {d.output}"
        if not d.failed:
            ui.console.print(head, highlight=False, soft_wrap=True)
            continue
        table = Table(title=head, title_justify="left")
        table.add_column("failure reason", overflow="fold")
        table.add_column("rows", justify="right")
        for reason, n in d.failed.items():
            table.add_row(reason, str(n))
        ui.console.print(table)
    for t in tensors:
        kept = ", ".join(f"{n} {SKIP_REASONS.get(r, r)} ({r})" for r, n in t.skipped.items()) or "none"
        ui.console.print(
            f"tensorize {t.split}: {t.num_samples} samples in {t.shards} shards "
            f"({t.shards_done_before} already done); skipped: {kept} -> {t.index}",
            highlight=False,
            soft_wrap=True,
        )
