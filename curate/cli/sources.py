"""``curate head`` (preview a caption source) and ``curate fetch`` (download caption metadata)."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from curate.cli import app
from curate.presets import preset_names

_SOURCE_HELP = (
    "'demo' (the embedded corpus), a file (.parquet .csv .tsv .jsonl .json .tar, also .gz/.bz2/.xz "
    "or a .zip of them), a folder (e.g. img2dataset output), a glob ('parts/*.parquet') or an "
    "http(s) URL of a file (downloaded once into the cache)."
)


@app.command("head")
def head_command(
    source: str = typer.Argument("demo", help=_SOURCE_HELP),
    rows: int = typer.Option(10, "--rows", "-n", min=0, help="How many rows to print."),
    preset: str | None = typer.Option(
        None,
        "--preset",
        help=f"Column layout: {preset_names()} (default: recognised from the columns, LAION's URL/TEXT included).",
    ),
    caption_col: str | None = typer.Option(None, "--caption-col", help="Input column holding the caption (overrides the preset)."),
    url_col: str | None = typer.Option(None, "--url-col", help="Input column holding the image URL (overrides the preset)."),
    uid_col: str | None = typer.Option(
        None, "--uid-col", help="Input column holding a stable row id (default: the source's own id, else FILE:ROW)."
    ),
    skip_bad_rows: bool = typer.Option(
        False, "--skip-bad-rows", help="Leave out rows whose caption is null or blank (default: show them; --check counts them)."
    ),
    strict: bool = typer.Option(
        False, "--strict", help="Stop at the first row whose caption is null or blank, naming it (reads the captions up front)."
    ),
    check: bool = typer.Option(
        False, "--check", help="Also read the whole source and report its row count and bad captions."
    ),
    all_columns: bool = typer.Option(
        False, "--all-columns", help="Print the source's extra columns too, not only the canonical ones."
    ),
) -> None:
    """Print the first rows of a source's canonical table (uid, caption, url, path, title, tags,
    description, wnid) as TSV, after mapping its columns through the preset."""
    from curate.sources import CANONICAL, open_source, validate_source
    from curate.ui import info

    src = open_source(
        source, preset=preset, caption_col=caption_col, url_col=url_col, uid_col=uid_col, skip_bad_rows=skip_bad_rows,
        strict=strict,
    )
    df = src.collect(limit=rows)
    columns = df.columns if all_columns else list(CANONICAL)
    lines = ["\t".join(columns)]
    for r in df.select(columns).iter_rows():
        lines.append("\t".join("" if v is None else re.sub(r"[\t\r\n]+", " ", str(v)) for v in r))
    typer.echo("\n".join(lines))
    info(f"source {src.name}: preset {src.preset or '-'}, vocabulary {src.vocab}, {len(src.files)} file(s)")
    if check:
        report = validate_source(src)
        info(report.summary() + (f"; first: {report.first_bad}" if report.first_bad else ""))
        if report.bad_captions and skip_bad_rows:
            info(f"left out {report.bad_captions} rows with a null or blank caption")


@app.command("fetch")
def fetch_command(
    targets: list[str] = typer.Argument(
        None,
        help="A metadata preset (see --list: relaion400m, relaion2b-en-research-safe, datacomp-small from the Hugging Face Hub; cc3m, cc12m, yfcc15m, imagenet-captions) or one or more http(s) URLs.",
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Folder to download into (default: CACHE/metadata/PRESET, or CACHE/metadata/urls)."
    ),
    parts: str | None = typer.Option(
        None, "--parts", help="Presets only: which parts, by index or range ('0', '0-3,7') or file name (default: all)."
    ),
    retries: int = typer.Option(5, "--retries", min=0, help="Extra attempts after a dropped connection or an HTTP 5xx/429."),
    backoff: float = typer.Option(1.0, "--backoff", min=0.0, help="Seconds before the first retry; doubles each time (max 60)."),
    timeout: float = typer.Option(60.0, "--timeout", min=0.1, help="Seconds to wait for the server before a retry."),
    list_presets: bool = typer.Option(False, "--list", help="List the metadata presets (name, number of parts, what they hold), then exit."),
) -> None:
    """Download caption metadata (not images), resuming interrupted files and verifying checksums.

    Files land under their final name only when complete; an interrupted file stays as NAME.part
    and the next run continues it with an HTTP Range request.
    """
    from curate.errors import CurateError
    from curate.fetch import FETCH_PRESETS, default_out, fetch, fetch_parts, parts_from_urls
    from curate.ui import info

    if list_presets:
        for p in FETCH_PRESETS.values():
            where = "Hub: " + p.hub.repo_id if p.hub else "bring your own copy" if p.withdrawn else f"{len(p.parts)} part(s)"
            typer.echo(f"{p.name}\t{where}\t{p.description}")
        return
    targets = targets or []
    if not targets:
        raise CurateError("fetch: name a preset (" + ", ".join(FETCH_PRESETS) + ") or give http(s) URLs")
    urls = [t for t in targets if re.match(r"^https?://", t, re.I)]
    if urls and len(urls) != len(targets):
        raise CurateError("fetch: give either one preset or only http(s) URLs, not both")
    if urls:
        if parts is not None:
            raise CurateError("fetch: --parts applies to presets, not to URLs")
        paths = fetch_parts(parts_from_urls(urls), out or default_out("urls"), retries=retries, backoff=backoff, timeout=timeout)
    else:
        if len(targets) != 1:
            raise CurateError(f"fetch: one preset at a time (got {', '.join(targets)})")
        paths = fetch(targets[0], out, parts, retries=retries, backoff=backoff, timeout=timeout)
    for p in paths:
        typer.echo(str(p))
    info(f"{len(paths)} file(s) ready")
