"""``curate build``, ``curate run`` and ``curate export``: controlled subsets as manifest folders."""

from __future__ import annotations

from pathlib import Path

import typer

from curate.cli import app
from curate.presets import preset_names

_SOURCE_HELP = "Caption source: 'demo', a file (.parquet .csv .tsv .jsonl .json .tar ...), a folder, a glob or a URL."


def _report(result) -> None:
    from curate import ui

    s = result.stats
    ratio = "n/a" if s["max_min_ratio"] is None else f"{s['max_min_ratio']:.2f}"
    ui.console.print(
        f"{result.out}: {s['total']:,} training rows over {s['classes']} classes "
        f"(max {s['max']:,}, min {int(result.classes['count'].min()):,}, max/min {ratio}, Gini {s['gini']:.3f})"
        + (f", {s['eval_total']:,} eval rows" if s["eval_total"] else "")
        + (f", {s['unlabelled']:,} unlabelled rows (--keep-unmatched)" if "unlabelled" in s else "")
        + (f"; {s['short_classes']} class(es) short (--allow-shortfall)" if s["short_classes"] else ""),
        highlight=False,
        soft_wrap=True,
    )


def _print_shortfall(err) -> None:
    from rich.table import Table

    from curate import ui

    table = Table(title="classes that fall short", title_justify="left")
    for col in ("class", "pool", "eval", "target", "needed", "short by"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for row in err.table.head(40).iter_rows(named=True):
        table.add_row(row["name"], str(row["pool"]), str(row["eval_target"]), str(row["target"]), str(row["needed"]), str(row["short"]))
    if err.table.height > 40:
        table.add_row(f"... {err.table.height - 40} more", "", "", "", "", "")
    ui.err_console.print(table)


def _run_build(recipe, *, dry_run: bool = False, strict: bool = False, variant: bool = False, header: bool = True):
    """One build. ``variant`` (one of a pipeline's): a dry run's class table gets a leading
    ``manifest`` column and its header only where ``header`` (the first table printed), so a
    pipeline's tables read as one."""
    from curate.manifest import build
    from curate.sample import ShortfallError

    try:
        result = build(recipe, write=not dry_run, strict=strict)
    except ShortfallError as e:
        _print_shortfall(e)
        raise
    if dry_run:
        import polars as pl

        from curate import ui

        table = result.classes.sort("head_rank").select("head_rank", "name", "pool", "target", "count", "eval_count")
        if variant:
            table = table.select(pl.lit(str(result.recipe.name)).alias("manifest"), pl.all())
        ui.print_frame(table, header=header)
        unlabelled = f" and {result.stats['unlabelled']:,} unlabelled rows" if "unlabelled" in result.stats else ""
        ui.info(f"dry run: {result.recipe.name} would hold {result.stats['total']:,} training rows{unlabelled}; nothing written")
    else:
        _report(result)
    return result


@app.command("build")
def build_command(
    source: str | None = typer.Option(None, "--source", "-s", help=_SOURCE_HELP + " (default: demo)"),
    recipe_file: Path | None = typer.Option(None, "--recipe", help="Load every option from a recipe YAML (e.g. a manifest's recipe.yaml); options given here override it."),
    name: str | None = typer.Option(None, "--name", help="Manifest folder name under --out-root (default: a readable slug of the options)."),
    preset: str | None = typer.Option(None, "--preset", help=f"Source column layout: {preset_names()} (default: recognised from the columns)."),
    image_root: str | None = typer.Option(None, "--image-root", help="ImageNet-Captions: the ImageNet folder holding train/WNID/FILENAME; the manifest's path column points there for curate shards."),
    vocab: str | None = typer.Option(None, "--vocab", "-v", help="Vocabulary: imagenet1k, imagenet100, imagenet21k, imagenet1k-study (the reference study's synonyms), demo, wordnet:SYNSET or a file (default: the source's own; imagenet1k for web sources)."),
    classes: str | None = typer.Option(None, "--classes", "-k", help="Subset of concepts: a number K (a seeded random K of the vocabulary), a vocabulary spec (imagenet100) or a file of names/wnids, one a line (default: all)."),
    class_list: Path | None = typer.Option(None, "--class-list", help="A file of class names or wnids, one a line (same as --classes FILE)."),
    labels_from: str | None = typer.Option(None, "--labels-from", help="Where labels come from: match (caption matching, once per source, vocabulary, mode and policy: later builds read the matched pool), wnid (the source's ground-truth wnid column) or FILE (labels written by curate match --out for this source and vocabulary: a .parquet file or a folder of shard files) (default: match)."),
    label_policy: str | None = typer.Option(None, "--label-policy", help="Captions naming several classes: all (the row joins the rarest of its classes), drop (left out), first (the class mentioned first), each (a row per class, as the study's YFCC-15M-Cls) (default: all)."),
    match_mode: str | None = typer.Option(None, "--match-mode", help="Matching: curate (normalised whole words, plurals, negative context) or reference (the reference study's counting) (default: curate)."),
    profile: str | None = typer.Option(None, "--profile", "-p", help="Target distribution: exp (n_i = n_max·R^(-i/(C-1))), pareto (power law, max/min = R), step (head/tail levels), natural (the source's own), balanced, match:FILE|NAME (a name<TAB>count reference, scaled; NAME: a published table such as laion400m), metaclip:T (min(count, T) per class), metaclip-entry:t (MetaCLIP's probabilistic balancing, per caption), knn:QUERIES[:K] (the K rows of its class nearest to each query text of a curate embed folder, LAIONet's match to ImageNet-Captions; needs --embeddings) (default: exp)."),
    imbalance: float | None = typer.Option(None, "--imbalance", "-r", help="R, the max/min class-count ratio for exp, pareto and step (default: 1, balanced)."),
    head_fraction: float | None = typer.Option(None, "--head-fraction", help="step: the share of classes at the head level (default: 0.5)."),
    order: str | None = typer.Option(None, "--order", help="Which classes are head: natural (the source's ranking), random (seeded) or a file listing every class head first (default: natural)."),
    max_per_class: int | None = typer.Option(None, "--max-per-class", help="n_max: the head class's count (default: the largest the pool allows)."),
    total: int | None = typer.Option(None, "--total", help="Total training rows; the profile's shape, scaled to sum to exactly this."),
    fraction: float | None = typer.Option(None, "--fraction", help="Scale the largest feasible build by F in (0, 1] (scale ablations: 1, 1/2, ... 1/32)."),
    sampling: str | None = typer.Option(None, "--sampling", help="How --total/--fraction scale the build: classes (each class's target scaled, the profile's shape exact) or rows (that many training rows drawn at random whatever their class, the study's subsets) (default: classes)."),
    min_per_class: int | None = typer.Option(None, "--min-per-class", help="--sampling rows: every class that had rows keeps at least this many (default: 1, as the study)."),
    trim_tail: str | None = typer.Option(None, "--trim-tail", help="K:C — cap the K tail-most classes (by --order) at C training samples; C may be 0."),
    captions: str | None = typer.Option(None, "--captions", "-c", help="Caption mode: cname, a-cname, template, a-synset, openai80, synset, original, title, tags, description, no-title, no-tags, no-description, full, or MODE+cname for the source text modes (class name first, every row kept) (default: template)."),
    eval_per_class: int | None = typer.Option(None, "--eval-per-class", help="N held-out rows per class in eval.parquet (balanced, disjoint from training) (default: 0, none)."),
    min_similarity: float | None = typer.Option(None, "--min-similarity", help="LAIONet's filter: keep a (caption, class) pair only when its text-to-definition similarity in --similarity-from is at least this (0.82 in LAIONet; thresholds never transfer between encoders)."),
    similarity_from: str | None = typer.Option(None, "--similarity-from", help="The scores for --min-similarity / --top-k-per-class: a Parquet file written by curate score."),
    top_k_per_class: int | None = typer.Option(None, "--top-k-per-class", help="Keep only each class's K most similar (caption, class) pairs in --similarity-from."),
    embeddings: str | None = typer.Option(None, "--embeddings", help="The source's caption embeddings (curate embed): needed by --profile knn:QUERIES; adds intra-class similarity to the card."),
    allow_shortfall: bool | None = typer.Option(None, "--allow-shortfall/--no-allow-shortfall", help="When the pool cannot meet a target, keep what exists (recorded in the card) instead of failing."),
    allow_empty_classes: bool | None = typer.Option(None, "--allow-empty-classes/--no-allow-empty-classes", help="Let the profile give classes that have rows in the pool zero training rows (an extreme --imbalance) instead of failing."),
    keep_unmatched: bool | None = typer.Option(None, "--keep-unmatched/--no-keep-unmatched", help="Open world (the study's YFCC-15M beside YFCC-15M-Cls): keep every row whose caption names no class, unlabelled (label -1), with its own text, in the training split, all of them (or --unmatched-fraction); the profile, --total/--fraction and --eval-per-class shape the labelled rows only (default: such rows are left out, no_class)."),
    unmatched_fraction: float | None = typer.Option(None, "--unmatched-fraction", help="--keep-unmatched: keep this share F in (0, 1] of the rows naming no class, a seeded random sample that nests (for open-world scale ablations, with --fraction F) (default: all of them)."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of the draw, the random order, templates and synonyms (default: 0)."),
    out_root: str | None = typer.Option(None, "--out-root", help="Folder holding manifest folders (default: manifests)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Compute targets and the draw, print the class table, write nothing."),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first source row whose caption is null or blank, naming it (default: such rows are left out and counted as no_text)."),
    shard: str | None = typer.Option(None, "--shard", help="Run one shard of a sharded build in --work: i/N (0 <= i < N; a contiguous 1/N of the rows) or slurm (the task of a job array). Before the draw exists it matches its rows (round one); after, it writes its manifest rows (round two)."),
    work: Path | None = typer.Option(None, "--work", help="The work folder of a sharded build (--shard, --reduce): one every node sees."),
    reduce: bool = typer.Option(False, "--reduce", help="Sharded build: after round one, draw from every shard's pool (written into --work); after round two, write the manifest folder from the shards' rows. Round one depends only on what shapes the pools: a --reduce that stopped short may be rerun with --allow-shortfall or another scale."),
) -> None:
    """Build a controlled subset of a caption source (class distribution, captions, scale exactly as asked) and write it as manifests/NAME/: manifest.parquet, eval.parquet, classes.tsv, classes.parquet, stats.json, recipe.yaml, card.md, freq.png.

    When the pool cannot meet the targets, nothing is written: the classes that fall short are listed and the command exits 2 (or pass --allow-shortfall). A rebuild replaces manifests/NAME/ as a whole (keeping its images/ and shards/); a folder NAME holding files curate did not write there is refused.

    Sharded (the same options every time): every shard with --shard i/N --work DIR, then --reduce --work DIR (the draw), every shard again, then --reduce again: the manifest is the single build's, byte for byte, however the rows were split; a rerun skips completed shards.
    """  # noqa: E501 - one line per paragraph: rich keeps line breaks inside a paragraph
    from curate.errors import CurateError
    from curate.recipe import Recipe

    if classes is not None and class_list is not None:
        raise CurateError("give --classes or --class-list, not both")
    options = {k: v for k, v in locals().items() if k in Recipe.option_names()}  # those named as Recipe's fields
    if class_list is not None:
        options["classes"] = str(class_list)
    base = Recipe.load(recipe_file) if recipe_file is not None else Recipe()
    recipe = base.with_overrides(**options)
    if shard is not None or reduce or work is not None:
        _run_sharded(recipe, work=work, shard=shard, reduce=reduce, dry_run=dry_run, strict=strict)
        return
    _run_build(recipe, dry_run=dry_run, strict=strict)


def _run_sharded(recipe, *, work: Path | None, shard: str | None, reduce: bool, dry_run: bool, strict: bool) -> None:
    from curate import ui
    from curate.engine.build import reduce_build, run_build_shard
    from curate.engine.shard import parse_shard
    from curate.errors import CurateError
    from curate.sample import ShortfallError

    if work is None:
        raise CurateError("--shard and --reduce need --work DIR, the sharded build's work folder")
    if (shard is None) == (not reduce):
        raise CurateError("--work goes with one of --shard i/N (a shard) and --reduce (the draw, then the manifest)")
    if dry_run or strict:
        raise CurateError(f"{'--dry-run' if dry_run else '--strict'} goes with a single build, not --shard or --reduce")
    if shard is not None:
        one = parse_shard(shard)
        run = run_build_shard(recipe, work, one)
        what = f"{run.rows:,} source rows read, {run.pooled:,} naming a class (its pool)" if run.round == 1 else f"{run.rows:,} manifest rows written"
        if run.round == 1 and recipe.keep_unmatched:
            what += f", {run.unlabelled:,} naming none, kept unlabelled (--keep-unmatched)"
        done = "already complete, skipped" if run.skipped else what
        ui.info(f"shard {one}, round {'one' if run.round == 1 else 'two'}, of build {recipe.name or recipe.slug()} in {work}: {done}")
        return
    try:
        stage, out = reduce_build(recipe, work)
    except ShortfallError as e:
        _print_shortfall(e)
        raise
    if stage == 1:
        n_eval = int((out.picked["split"] == "eval").sum())
        n_unlabelled = int((out.picked["label"] < 0).sum())
        ui.info(
            f"the draw in {work}: {out.picked.height - n_eval - n_unlabelled:,} training and {n_eval:,} eval rows over {out.targets.height} classes"
            + (f", {n_unlabelled:,} unlabelled training rows (--keep-unmatched)" if recipe.keep_unmatched else "")
            + "; now run every shard again (round two), then --reduce again"
        )
    else:
        _report(out)


@app.command("run")
def run_command(
    pipeline: Path = typer.Argument(..., help="A pipeline file (pipelines/*.yaml): one recipe, or base + variants."),
    source: str | None = typer.Option(None, "--source", "-s", help=_SOURCE_HELP + " Replaces every variant's source."),
    vocab: str | None = typer.Option(None, "--vocab", "-v", help="Replaces every variant's vocabulary."),
    image_root: str | None = typer.Option(None, "--image-root", help="ImageNet-Captions: the ImageNet folder (train/WNID/FILENAME) for every variant."),
    only: str | None = typer.Option(None, "--only", help="Run only the variants whose resolved name contains this text."),
    seed: int | None = typer.Option(None, "--seed", help="Replaces every variant's seed."),
    allow_shortfall: bool | None = typer.Option(None, "--allow-shortfall/--no-allow-shortfall", help="Replaces every variant's shortfall setting."),
    out_root: str | None = typer.Option(None, "--out-root", help="Folder holding manifest folders (default: manifests)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Compute every variant's targets and draw; write nothing."),
    stop_on_error: bool = typer.Option(False, "--stop-on-error", help="Stop at the first variant that fails (default: build the others, then exit 2 naming the failures)."),
) -> None:
    """Build every variant of a pipeline file in order (e.g. the imbalance sweep), each into its own manifest folder. A failing variant is reported and the others still run; the command then exits 2 naming the failures."""  # noqa: E501
    from curate.errors import CurateError
    from curate.manifest import say
    from curate.recipe import load_pipeline

    recipes = load_pipeline(pipeline)
    chosen = []
    for r in recipes:
        r = r.replace(source=source, vocab=vocab, image_root=image_root, seed=seed, allow_shortfall=allow_shortfall, out_root=out_root)
        if source is not None and r.name is not None:
            # a named variant run on another source must not overwrite the original's folder
            from curate.recipe import _slug_text

            r = r.replace(name=f"{r.name}-{_slug_text(Path(source).stem)}")
        if only is None or only in (r.name or r.slug()):
            chosen.append(r)
    if not chosen:
        raise CurateError(f"{pipeline}: no variant matches --only {only!r}")
    failed: list[str] = []
    printed = False  # a dry run's class tables: one header for all
    for i, r in enumerate(chosen, 1):
        label = r.name or r.slug()
        say(f"[{i}/{len(chosen)}] {label}")
        try:
            _run_build(r, dry_run=dry_run, variant=True, header=not printed)
            printed = True
        except CurateError as e:
            if stop_on_error:
                raise
            # one impossible variant (say K=500 trimmed on a 100-class source) does not stop a sweep
            say(f"[{i}/{len(chosen)}] {label} failed: {e}")
            failed.append(label)
    if failed:
        raise CurateError(f"{pipeline}: {len(failed)} of {len(chosen)} variant(s) failed: {', '.join(failed)}")


@app.command("export")
def export_command(
    name: str = typer.Argument(..., help="A manifest: NAME under --out-root, or a folder path."),
    format: str = typer.Option(..., "--format", "-f", help="openclip-csv (tab-separated filepath/title for open_clip --train-data), img2dataset (parquet with url, caption, uid, label), or jsonl (every column)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Folder to write into (default: NAME/export/)."),
    out_root: str = typer.Option("manifests", "--out-root", help="Folder holding manifest folders."),
) -> None:
    """Write a manifest's splits in a format other tools read (one file per split)."""
    from curate.manifest import export, manifest_dir

    for path in export(manifest_dir(name, out_root), format, out=out):
        typer.echo(str(path))
