"""The manifest folder: building it from a recipe, writing it atomically, reading and exporting it.

Owns ``manifests/NAME/``: ``manifest.parquet`` (training rows), ``eval.parquet`` (the balanced
held-out rows, when asked), ``classes.tsv`` / ``classes.parquet`` (target vs achieved per class),
``stats.json``, ``freq.png``, ``recipe.yaml`` (resolved, loads back) and ``card.md``. The schema is
documented in ``manifests/README.md``.

:func:`build` is the ``curate build`` stage. It reads the source twice and never holds it whole:
pass one streams every row through matching and keeps ``row, labels, key`` for matched rows only
(and, with ``keep_unmatched``, ``row, key`` of the rows naming no class, which join the drawn rows
unlabelled, ``label`` :data:`UNLABELLED`); the targets and the draw work on the labelled rows; pass
two streams the source again and keeps the drawn rows.
Nothing is written until the draw has succeeded, and then the whole folder appears at once.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from curate.captions import caption_mode, has_text, render_captions
from curate.errors import CurateError
from curate.recipe import Recipe
from curate.sample import (
    ShortfallError,
    check_target_options,
    clip_to_pool,
    draw,
    each_label,
    metaclip_entry_keep,
    sample_rows,
    sample_unlabelled,
    shortfall,
    single_labels,
    split_profile,
    stable_keys,
    target_counts,
)
from curate.similarity import (
    SIMILARITY_REASONS,
    SimilarityReport,
    check_scores,
    filter_pool,
    knn_select,
    manifest_diversity,
    parse_knn,
    split_knn,
)
from curate.util import atomic_path, check_replaceable, file_sha256, recover

MANIFEST_SCHEMA = {
    "uid": pl.Utf8,
    "label": pl.Int32,
    "wnid": pl.Utf8,
    "class_name": pl.Utf8,
    "caption": pl.Utf8,
    "source_caption": pl.Utf8,
    "url": pl.Utf8,
    "path": pl.Utf8,
    "source": pl.Utf8,
    "split": pl.Utf8,
}
#: The ``label`` of a row that names no class, kept by ``--keep-unmatched`` (its ``wnid`` and
#: ``class_name`` are null). The same value in the manifest, the tensor shards and the trainer's
#: batches: class indices are ``0..K-1``, so any reader can tell the unlabelled rows by ``label < 0``.
UNLABELLED = -1
TEXT_COLUMNS = ("title", "tags", "description")
# folders other stages add to a manifest folder; a rebuild carries them over (they check the
# manifest's sha256 themselves and start over when it changed)
DERIVED_FOLDERS = ("images", "shards")


@dataclass
class BuildResult:
    """What a build produced (``out`` is None for a dry run)."""

    recipe: Recipe  # resolved: name and vocab filled in
    train: pl.DataFrame
    eval: pl.DataFrame
    classes: pl.DataFrame
    stats: dict
    reasons: dict[str, int]
    shortfall: pl.DataFrame
    out: Path | None = None
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256


def say(message: str) -> None:
    """A status line on stderr, never wrapped (paths stay whole for whoever greps the log)."""
    from curate import ui

    ui.err_console.print(message, highlight=False, soft_wrap=True, markup=False)


# ---------------------------------------------------------------------------------------------
# class selection


def select_classes(vocab: pl.DataFrame, classes: str | None, *, seed: int) -> pl.DataFrame:
    """The vocabulary rows the build uses, in vocabulary order, with ``vocab_label`` (the
    vocabulary's own index) and ``label`` renumbered 0..k-1.

    ``classes``: None (all), a number K (a seeded random K), a file of names or wnids one a line,
    or a vocabulary spec (``imagenet100``) whose wnids select.
    """
    vocab = vocab.with_columns(pl.col("label").cast(pl.Int32).alias("vocab_label"))
    if classes is None or str(classes).strip() == "":
        chosen = vocab
    elif str(classes).strip().isdigit():
        k = int(classes)
        if not 1 <= k <= vocab.height:
            raise CurateError(f"--classes {k}: the vocabulary has {vocab.height} classes")
        keys = stable_keys(vocab["wnid"].fill_null("").cast(pl.Utf8) + "\x1f" + vocab["name"], seed, "classes")
        keep = np.sort(np.argsort(keys, kind="stable")[:k])
        chosen = vocab[keep]
    else:
        spec = str(classes)
        path = Path(spec)
        if path.is_file() and path.suffix.lower() in ("", ".txt", ".list"):
            items = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip() and not ln.startswith("#")]
            where = f"--classes {path}"
        else:
            from curate.vocab import load_vocab

            other = load_vocab(spec)
            items = [w for w in other["wnid"].to_list() if w]
            where = f"--classes {spec}"
            if not items:
                raise CurateError(f"{where}: that vocabulary has no wnids to select by")
        names, wnids = vocab["name"].to_list(), vocab["wnid"].to_list()
        index = {n: i for i, n in enumerate(names)} | {w: i for i, w in enumerate(wnids) if w}
        missing = [it for it in items if it not in index]
        if missing:
            raise CurateError(f"{where}: {len(missing)} class(es) not in the vocabulary (e.g. {missing[0]!r})")
        chosen = vocab[sorted({index[it] for it in items})]
    return chosen.sort("vocab_label").with_columns(pl.int_range(pl.len(), dtype=pl.Int32).alias("label"))


# ---------------------------------------------------------------------------------------------
# the two passes


def _labels_expr(recipe: Recipe, vocab: pl.DataFrame, lf: pl.LazyFrame) -> pl.LazyFrame:
    """``lf`` plus ``labels`` (vocabulary indices) from matching or the ground-truth wnid column."""
    if recipe.labels_from == "wnid":
        mapping = dict(zip(vocab["wnid"].to_list(), vocab["label"].to_list()))
        label = pl.col("wnid").replace_strict(mapping, default=None, return_dtype=pl.Int32)
        return lf.with_columns(
            pl.when(label.is_null()).then(pl.lit([], dtype=pl.List(pl.Int32))).otherwise(pl.concat_list(label)).alias("labels")
        )
    from curate.match import match_captions

    policy = "all" if recipe.label_policy == "each" else recipe.label_policy  # each: all classes, a row per class later
    return match_captions(lf, vocab, policy=policy, mode=recipe.match_mode)


def pool_pass(source, vocab: pl.DataFrame, chosen: pl.DataFrame, recipe: Recipe) -> tuple[pl.DataFrame, dict[str, int]]:
    """Stream the source once: ``row, key, label, labels`` for rows with the caption mode's text
    and at least one selected class (classes renumbered to the build's; ``label`` when the row has
    one, ``labels`` when it has several, see :func:`~curate.sample.single_labels`), and the reasons
    rows left the pool, counted. With ``keep_unmatched`` the rows naming no class of the
    vocabulary that have caption text stay too, with ``label`` :data:`UNLABELLED`."""
    raw, n_rows, n_text = scan_pool(source, vocab, chosen, recipe)
    return settle_pool(source, raw, n_rows, n_text, recipe)


def scan_pool(
    source, vocab: pl.DataFrame, chosen: pl.DataFrame, recipe: Recipe, *, bounds: tuple[int, int] | None = None
) -> tuple[pl.DataFrame, int, int]:
    """The streaming half of :func:`pool_pass` over the source's rows (or only the rows
    ``[start, stop)`` of ``bounds``, one shard's: their ``row`` stays the position in the whole
    source): ``row, key, n_any, label, labels`` of every row naming a class of the vocabulary
    (``n_any``: how many; ``label``/``labels`` null when none is selected) and, with
    ``keep_unmatched``, of every row naming none that has caption text (``n_any`` 0, ``label``
    :data:`UNLABELLED`), the rows read and the rows with the needed text. A shard's tables laid
    end to end are the whole source's."""
    from curate import ui
    from curate.pool import labels_from_file, matched_pool
    from curate.sources import no_text

    lf = source.lazy.with_row_index("row")
    if bounds is not None:
        lf = lf.slice(bounds[0], bounds[1] - bounds[0])
    names = lf.collect_schema().names()
    mode = caption_mode(recipe.captions)
    if recipe.labels_from == "wnid" and "wnid" not in names:
        raise CurateError(f"--labels-from wnid: source {recipe.source} has no wnid column")
    wanted = (*mode.needs, "wnid") if recipe.labels_from == "wnid" else mode.needs
    keep = ["row", "uid", "caption", *[c for c in wanted if c in names and c != "caption"]]
    # matching reads the caption; the caption mode may read other text too
    usable = has_text(recipe.captions)
    if recipe.labels_from != "wnid":  # matched here, or by curate match into a labels file
        usable = usable & ~no_text("caption")
    try:
        counts = lf.select(pl.len().alias("rows"), usable.sum().alias("text")).collect(engine="streaming")
    except pl.exceptions.ColumnNotFoundError as e:
        raise CurateError(f"--captions {recipe.captions}: source {recipe.source} has no such column ({str(e).splitlines()[0]})") from e
    n_rows = int(counts["rows"][0])
    # a literal True sums to 1, not to the rows
    n_text = int(counts["text"][0]) if mode.needs or recipe.labels_from != "wnid" else n_rows
    if bounds is None:
        check_some_text(n_rows, n_text, recipe)

    remap = dict(zip(chosen["vocab_label"].to_list(), chosen["label"].to_list()))
    with ui.make_progress(transient=True) as progress:
        task = progress.add_task("matching", total=n_rows)

        def keys(uids: pl.Series) -> pl.Series:
            progress.advance(task, len(uids))
            return pl.Series(stable_keys(uids, recipe.seed, "draw"), dtype=pl.UInt64)

        policy = "all" if recipe.label_policy == "each" else recipe.label_policy  # each: a row per class later
        # the pool of the whole source is matched once; a shard matches only its own rows
        pool = matched_pool(source, vocab, policy=policy, mode=recipe.match_mode) if recipe.labels_from == "match" and bounds is None else None
        if recipe.labels_file is not None:  # matched once by curate match, read back here (a shard: its rows)
            pool = labels_from_file(source, vocab, recipe.labels_file, policy=policy, bounds=bounds)
        if pool is not None:  # matched once per (source, vocabulary, mode, policy), read back here
            plan = pl.concat([lf, pool], how="horizontal").filter(usable).select(*keep, "labels")
        else:
            plan = _labels_expr(recipe, vocab, lf.filter(usable).select(keep))
        # the similarity stage joins its scores and embeddings on uid
        with_uid = ["uid"] if recipe.similarity_from is not None or split_knn(recipe.profile) is not None else []
        # a row naming no class stays (--keep-unmatched) when it has its own caption to train on
        unmatched = (pl.col("n_any") == 0) & pl.col("has_caption") if recipe.keep_unmatched else pl.lit(False)
        plan = (
            plan.select(
                "row",
                *with_uid,
                pl.col("labels").list.len().alias("n_any"),
                pl.col("labels").list.eval(pl.element().replace_strict(remap, default=None, return_dtype=pl.Int32)).list.drop_nulls().alias("labels"),
                pl.col("uid").map_batches(keys, return_dtype=pl.UInt64, is_elementwise=True).alias("key"),
                *([(~no_text("caption")).alias("has_caption")] if recipe.keep_unmatched else []),
            )
            .filter((pl.col("n_any") > 0) | unmatched)
            .with_columns(pl.col("labels").list.len().alias("n"))
            .select(
                "row",
                *with_uid,
                "key",
                "n_any",
                # compact: most rows name one class; only the others keep a list
                pl.when(pl.col("n_any") == 0).then(pl.lit(UNLABELLED, dtype=pl.Int32))
                .when(pl.col("n") == 1).then(pl.col("labels").list.first()).alias("label"),
                pl.when(pl.col("n") > 1).then(pl.col("labels")).alias("labels"),
            )
        )
        try:
            pool = plan.collect(engine="streaming")
        except pl.exceptions.PolarsError as e:
            raise CurateError(f"reading source {recipe.source} failed: {str(e).splitlines()[0]}") from e
    return pool, n_rows, n_text


def check_some_text(n_rows: int, n_text: int, recipe: Recipe) -> None:
    if n_text == 0 and n_rows:
        raise CurateError(f"no row of source {recipe.source} has {_needed_text(recipe)} text")


def settle_pool(source, raw: pl.DataFrame, n_rows: int, n_text: int, recipe: Recipe) -> tuple[pl.DataFrame, dict[str, int]]:
    """The other half of :func:`pool_pass`, over the whole source's :func:`scan_pool` table (one
    run's, or the shards' laid end to end): repeated uids refused, rows without a selected class
    out (the unlabelled rows of ``keep_unmatched`` stay), the reasons counted."""
    _check_unique_ids(source, raw)
    n_unlabelled = int((raw["n_any"] == 0).sum())
    matched = raw.height - n_unlabelled
    pool = raw.filter(pl.col("label").is_not_null() | pl.col("labels").is_not_null()).drop("n_any")
    selected = pool.height - n_unlabelled
    reasons = {"no_text": n_rows - n_text, "no_class": n_text - matched - n_unlabelled, "class_not_selected": matched - selected}
    return pool, {"rows": n_rows, **reasons}


#: Why a source row is not in the manifest: stable keys (stats.json's ``dropped``, so the counts
#: of two builds add up; ``rows`` is the rows read) and, per recipe, what each means.
DROP_REASONS = ("no_text", "no_class", "class_not_selected", *SIMILARITY_REASONS, "metaclip_not_kept", "not_drawn", "unmatched_not_drawn")


def _needed_text(recipe: Recipe) -> str:
    needs = list(caption_mode(recipe.captions).needs)
    if recipe.labels_from != "wnid" and "caption" not in needs:
        needs.insert(0, "caption")
    return " / ".join(needs) or "caption"


def describe_reason(key: str, recipe: Recipe) -> str:
    """A drop reason's key in words, for this recipe."""
    if key == "no_text":
        return f"no {_needed_text(recipe)} text (null or blank; --captions {recipe.captions})"
    if key == "no_class":
        if recipe.labels_from == "wnid":
            return "wnid missing or not in the vocabulary"
        return "names no class of the vocabulary" + (" (or several, under label policy drop)" if recipe.label_policy == "drop" else "")
    if key in SIMILARITY_REASONS:
        return _similarity_reason(key, recipe)
    return {
        "class_not_selected": "its classes are not selected (--classes)",
        "metaclip_not_kept": f"not kept by MetaCLIP balancing ({recipe.profile})",
        "not_drawn": "not drawn (beyond its class's target)",
        "unmatched_not_drawn": f"names no class, beyond --unmatched-fraction {recipe.unmatched_fraction:g}" if recipe.unmatched_fraction else "",
        "rows": "source rows read",
    }.get(key, key)


def _similarity_reason(key: str, recipe: Recipe) -> str:
    if key == "no_similarity_score":
        return f"no similarity score in {recipe.similarity_from} (--similarity-from)"
    if key == "below_min_similarity":
        return f"text-to-definition similarity below {recipe.min_similarity:g} (--min-similarity)"
    if key == "not_top_k_similar":
        return f"not among its class's {recipe.top_k_per_class} most similar (--top-k-per-class)"
    if key == "no_embedding":
        return "no embedding in --embeddings"
    knn_arg = split_knn(recipe.profile)
    k = parse_knn(knn_arg)[1] if knn_arg else 1
    return f"not among the {k} nearest of a query of its class (--profile knn)"


def _check_unique_ids(source, pool: pl.DataFrame) -> None:
    """Raise naming the first repeated uid among the matched rows (a manifest holds each uid once).

    The draw keys hash the uid, so equal uids have equal keys: only rows sharing a key are read back.
    """
    dup = pool.select("row", "key").filter(pl.col("key").is_duplicated()).sort("row")
    if dup.height == 0:
        return
    rows = fetch_rows(source, dup["row"], text=()).select("row", "uid").sort("row")
    first = rows.filter(pl.col("uid").is_duplicated()).head(1)
    if first.height == 0:
        return  # equal 64-bit keys of different uids: harmless to the draw
    uid = first["uid"][0]
    where = rows.filter(pl.col("uid") == uid)["row"].head(2).to_list()
    raise CurateError(
        f"source {source.location}: uid {uid!r} appears more than once (source rows {where[0]} and {where[1]})",
        hint="ids must be unique: fix the id column, or remove it so each row gets the stable FILE:ROW id",
    )


def fetch_rows(source, rows: pl.Series, *, text: tuple[str, ...] = TEXT_COLUMNS, bounds: tuple[int, int] | None = None) -> pl.DataFrame:
    """Stream the source again and keep the rows at these positions (with the ``text`` columns);
    with ``bounds`` (a shard's ``[start, stop)``) only that slice is read."""
    lf = source.lazy.with_row_index("row")
    if bounds is not None:
        lf = lf.slice(bounds[0], bounds[1] - bounds[0])
    names = lf.collect_schema().names()
    cols = ["row", "uid", "caption", "url", "path", *[c for c in text if c in names and c != "caption"]]
    try:
        return lf.filter(pl.col("row").is_in(rows.implode())).select([c for c in cols if c in names]).collect(engine="streaming")
    except pl.exceptions.PolarsError as e:
        raise CurateError(f"reading source {source.location} failed: {str(e).splitlines()[0]}") from e


# ---------------------------------------------------------------------------------------------
# build


@dataclass
class BuildSetup:
    """What every step of a build (one run, or a shard's) opens first: the source, the vocabulary,
    the selected classes and the recipe resolved (name and vocabulary filled in)."""

    recipe: Recipe
    resolved: Recipe
    source: object  # curate.sources.Source
    vocab: pl.DataFrame
    vocab_spec: str
    chosen: pl.DataFrame
    knn_arg: str | None  # knn:QUERIES narrows the pool to the rows the queries choose ...
    target_profile: str  # ... then keeps them as they are (profile natural)


@dataclass
class Draw:
    """The draw of a build: the chosen ``row, label, key, split``, the targets (the class table so
    far), the classes that fall short, why rows left, and what the similarity stage measured."""

    picked: pl.DataFrame
    targets: pl.DataFrame
    short: pl.DataFrame
    reasons: dict[str, int]
    similarity: dict


def prepare(recipe: Recipe, *, write: bool = True, strict: bool = False) -> BuildSetup:
    """Check the recipe's options, open its source and vocabulary, select its classes."""
    from curate.sources import open_source
    from curate.vocab import load_vocab

    caption_mode(recipe.captions)
    knn_arg = split_knn(recipe.profile)
    target_profile = "natural" if knn_arg is not None else recipe.profile
    check_target_options(
        profile=target_profile, imbalance=recipe.imbalance, head_fraction=recipe.head_fraction,
        max_per_class=recipe.max_per_class, total=recipe.total, fraction=recipe.fraction,
        trim_tail=recipe.trim_tail, eval_per_class=recipe.eval_per_class,
    )
    if write:
        from curate.util import check_writable_dir

        check_writable_dir(recipe.out_root, option="--out-root")
    source = open_source(recipe.source, preset=recipe.preset, strict=strict, image_root=recipe.image_root)
    vocab_spec = recipe.vocab or source.vocab
    vocab = load_vocab(vocab_spec)
    # the slug names the vocabulary only when it is not the source's own
    resolved = recipe.replace(name=recipe.name or recipe.slug(), vocab=vocab_spec)
    if write:  # before any work: a folder a build may not replace
        recover(Path(resolved.out_root) / str(resolved.name), carry=DERIVED_FOLDERS)
        check_manifest_dest(Path(resolved.out_root) / str(resolved.name))
    chosen = select_classes(vocab, recipe.classes, seed=recipe.seed)
    if recipe.similarity_from is not None:
        check_scores(recipe.similarity_from, vocab_spec)
    return BuildSetup(recipe, resolved, source, vocab, vocab_spec, chosen, knn_arg, target_profile)


def build(recipe: Recipe, *, write: bool = True, strict: bool = False) -> BuildResult:
    """Build the controlled subset ``recipe`` asks for; write ``manifests/NAME/`` unless ``write``
    is False. Raises :class:`~curate.sample.ShortfallError` (nothing written) when the pool cannot
    meet the targets and ``allow_shortfall`` is off. Source rows without caption text are counted
    (``no_text``); with ``strict`` the first one is an error instead."""
    setup = prepare(recipe, write=write, strict=strict)
    say(f"build {setup.resolved.name}: {setup.source.name} × {setup.vocab_spec} ({setup.chosen.height} classes), captions {recipe.captions}")
    pool_multi, reasons = pool_pass(setup.source, setup.vocab, setup.chosen, recipe)
    drawn = draw_pool(setup, pool_multi, reasons)
    del pool_multi
    rows = fetch_rows(setup.source, drawn.picked["row"], text=caption_mode(recipe.captions).columns)
    manifest = assemble([manifest_part(setup, drawn, rows)], recipe)
    result = finish_build(setup, drawn, manifest)
    if write:
        write_manifest(result, reference=profile_reference(setup))
    return result


def draw_pool(setup: BuildSetup, pool_multi: pl.DataFrame, reasons: dict[str, int]) -> Draw:
    """From the settled pool (:func:`pool_pass`) to the drawn rows: the similarity filter, one
    class per row, the targets and the draw, then the unlabelled rows ``keep_unmatched`` keeps.
    Works on the pool alone, never the source."""
    recipe, chosen, knn_arg = setup.recipe, setup.chosen, setup.knn_arg
    reasons = dict(reasons)
    profile_name, profile_arg = split_profile(setup.target_profile)
    # --keep-unmatched: the rows naming no class join the manifest as they are (all of them, or
    # --unmatched-fraction of them) after the draw; the profile, the scale, the similarity filter
    # and the eval split shape the labelled rows
    is_unlabelled = (pl.col("label") == UNLABELLED).fill_null(False)
    unlabelled = pool_multi.filter(is_unlabelled).select("row", "key")
    pool_multi = pool_multi.filter(~is_unlabelled)
    if recipe.unmatched_fraction is not None:
        kept = sample_unlabelled(unlabelled, recipe.unmatched_fraction)
        reasons["unmatched_not_drawn"] = unlabelled.height - kept.height
        unlabelled = kept
    if pool_multi.height == 0:
        how = "has a wnid (--labels-from wnid) that is" if recipe.labels_from == "wnid" else "names"
        left = ", ".join(f"{v:,} {describe_reason(k, recipe)}" for k, v in reasons.items() if k != "rows" and v)
        raise CurateError(f"no row of source {recipe.source} {how} a selected class of vocabulary {setup.vocab_spec} ({reasons['rows']:,} rows: {left})")
    sim = SimilarityReport()
    if recipe.similarity_from is not None:
        pool_multi = filter_pool(
            pool_multi, chosen, scores_path=recipe.similarity_from, vocab_spec=setup.vocab_spec,
            min_similarity=recipe.min_similarity, top_k=recipe.top_k_per_class, report=sim,
        )
    if profile_name == "metaclip-entry":
        before = pool_multi.height
        pool_multi = metaclip_entry_keep(pool_multi, profile_arg)
        reasons["metaclip_not_kept"] = before - pool_multi.height
    uids = pool_multi.select("row", "uid") if knn_arg is not None else None
    pool = each_label(pool_multi) if recipe.label_policy == "each" else single_labels(pool_multi)
    del pool_multi
    if knn_arg is not None:
        pool = knn_select(pool, uids, chosen, embeddings=recipe.embeddings, arg=knn_arg, report=sim, seed=recipe.seed)
    reasons.update(sim.reasons)
    pool_counts = pool.group_by("label").agg(pl.len().alias("pool"))
    classes = (
        chosen.select("label", "vocab_label", "wnid", "name", "lemmas")
        .join(pool_counts, on="label", how="left")
        .with_columns(pl.col("pool").fill_null(0).cast(pl.Int64))
        .sort("label")
    )
    by_rows = recipe.sampling == "rows" and (recipe.total is not None or recipe.fraction is not None)
    shape = dict(
        profile=setup.target_profile,
        imbalance=recipe.imbalance,
        head_fraction=recipe.head_fraction,
        order=recipe.order,
        seed=recipe.seed,
        max_per_class=recipe.max_per_class,
        trim_tail=recipe.trim_tail,
        eval_per_class=recipe.eval_per_class,
    )
    scaled = not by_rows and (recipe.total is not None or recipe.fraction is not None)
    targets = target_counts(classes, **shape, total=recipe.total if scaled else None, fraction=recipe.fraction if scaled else None)
    if int(targets["target"].sum()) == 0:
        raise CurateError(
            f"the targets add up to no training rows ({recipe.profile}, {targets.height} classes"
            + (f", --trim-tail {recipe.trim_tail}" if recipe.trim_tail else "")
            + "); nothing to build"
        )
    # a class that --total/--fraction scales down to no rows was asked for (a small subset of many
    # classes); one that the profile's shape itself empties (an extreme --imbalance) was not
    _check_no_class_emptied(target_counts(classes, **shape) if scaled else targets, recipe)
    if profile_name in ("exp", "pareto", "step") and recipe.max_per_class is None and (recipe.total is None or scaled):
        tmin = int(targets["target"].min())
        ratio = int(targets["target"].max()) / tmin if tmin else float("inf")
        if tmin == 0 or abs(ratio - recipe.imbalance) > 0.5 * recipe.imbalance / max(tmin, 1):
            empty = int((targets["target"] == 0).sum())
            what = (
                f"--total {recipe.total}" if recipe.total is not None else f"--fraction {recipe.fraction:g}"
            ) + f" over {targets.height} classes" if scaled else "this pool"
            say(
                f"note: {what} cannot hold max/min = {recipe.imbalance:g} with whole samples in every class; "
                f"the targets span {int(targets['target'].max())}..{tmin}" + (f" ({empty} classes get none)" if empty else "")
            )
    short = shortfall(targets)
    if short.height and not recipe.allow_shortfall:
        raise ShortfallError(short)
    targets = clip_to_pool(targets) if short.height else targets.with_columns(pl.col("target").alias("asked"))

    picked = draw(pool, targets)
    if by_rows:
        picked = sample_rows(picked, total=recipe.total, fraction=recipe.fraction, min_per_class=recipe.min_per_class)
        drawn = picked.filter(pl.col("split") == "train").group_by("label").agg(pl.len().alias("_n"))
        targets = (
            targets.join(drawn, on="label", how="left")
            .with_columns(pl.col("_n").fill_null(0).cast(pl.Int64).alias("target"))
            .with_columns(pl.col("target").alias("asked"))
            .drop("_n")
        )
    reasons["not_drawn"] = pool.height - picked.height
    del pool
    if unlabelled.height:
        picked = pl.concat([
            picked,
            unlabelled.select(
                pl.col("row").cast(picked.schema["row"]), pl.lit(UNLABELLED, dtype=pl.Int32).alias("label"),
                "key", pl.lit("train", dtype=pl.Utf8).alias("split"),
            ),
        ])  # fmt: skip
    return Draw(picked, targets, short, reasons, sim.info)


def manifest_part(setup: BuildSetup, drawn: Draw, rows: pl.DataFrame) -> pl.DataFrame:
    """The manifest rows of the drawn rows found in ``rows`` (:func:`fetch_rows` of the whole
    source, or of one shard's slice): captions rendered (each row's by its own uid, so a part
    renders as the whole would; an unlabelled row's from its own text), plus ``key`` for
    :func:`assemble`."""
    recipe = setup.recipe
    picked = drawn.picked.filter(pl.col("row").is_in(rows["row"].implode()))
    class_cols = [pl.col("wnid").alias("class_wnid"), pl.col("name").alias("class_name")]
    if caption_mode(recipe.captions).lemmas:
        class_cols.append(pl.col("lemmas"))
    df = picked.join(rows, on="row", how="left").join(drawn.targets.select("label", *class_cols), on="label", how="left")
    df = df.sort(["key", "uid", "label"])
    df = df.with_columns(render_captions(df, recipe.captions, seed=recipe.seed).alias("_caption"))
    return df.select(
        "key",
        pl.col("uid").cast(pl.Utf8),
        pl.col("label").cast(pl.Int32),
        pl.col("class_wnid").cast(pl.Utf8).alias("wnid"),
        pl.col("class_name").cast(pl.Utf8),
        pl.col("_caption").cast(pl.Utf8).alias("caption"),
        pl.col("caption").cast(pl.Utf8).alias("source_caption"),
        pl.col("url").cast(pl.Utf8) if "url" in df.columns else pl.lit(None, dtype=pl.Utf8).alias("url"),
        pl.col("path").cast(pl.Utf8) if "path" in df.columns else pl.lit(None, dtype=pl.Utf8).alias("path"),
        pl.lit(setup.source.name, dtype=pl.Utf8).alias("source"),
        pl.col("split").cast(pl.Utf8),
    )


def assemble(parts: list[pl.DataFrame], recipe: Recipe) -> pl.DataFrame:
    """The manifest rows (train and eval) from :func:`manifest_part` parts, in any split of the
    source: ordered by the seeded key (a shuffle: any prefix of the manifest is a random sample;
    ties, one caption drawn for several classes, by uid and label)."""
    df = pl.concat(parts).sort(["key", "uid", "label"]).rechunk()
    uid = pl.col("uid")
    if recipe.label_policy == "each":
        # a caption that is a sample of several classes: one row each, told apart as UID#WNID (uids stay unique)
        tag = pl.coalesce(pl.col("wnid"), pl.col("label").cast(pl.Utf8))
        uid = pl.when(pl.col("uid").is_duplicated()).then(pl.format("{}#{}", uid, tag)).otherwise(uid)
    return df.with_columns(uid.alias("uid")).select(list(MANIFEST_SCHEMA))


def profile_reference(setup: BuildSetup) -> pl.DataFrame | None:
    from curate.freq import read_reference

    name, arg = split_profile(setup.target_profile)
    return read_reference(arg) if name == "match" and arg else None


def finish_build(setup: BuildSetup, drawn: Draw, manifest: pl.DataFrame) -> BuildResult:
    """The class table (targets against what was drawn) and the statistics of an assembled manifest."""
    from curate.freq import distribution_stats

    recipe = setup.recipe
    train = manifest.filter(pl.col("split") == "train")
    evals = manifest.filter(pl.col("split") == "eval")
    labelled = train.filter(pl.col("label") != UNLABELLED)
    achieved = labelled.group_by("label").agg(pl.len().alias("count"))
    achieved_eval = evals.group_by("label").agg(pl.len().alias("eval_count"))
    table = (
        drawn.targets.join(achieved, on="label", how="left")
        .join(achieved_eval, on="label", how="left")
        .with_columns(pl.col("count").fill_null(0).cast(pl.Int64), pl.col("eval_count").fill_null(0).cast(pl.Int64))
        .with_columns((pl.col("asked") - pl.col("count")).alias("short"))
        .sort("label")
        .select(
            "label", "wnid", "name", "vocab_label", "head_rank", "pool",
            pl.col("asked").alias("target"), "count", "short", "eval_target", "eval_count",
        )
    )
    stats = distribution_stats(table["count"], profile_reference(setup), names=table["name"].to_list())
    tmax, tmin = int(table["target"].max()), int(table["target"].min())
    stats["targets"] = {"total": int(table["target"].sum()), "max": tmax, "min": tmin, "max_min_ratio": tmax / tmin if tmin else None}
    stats["eval_total"] = int(table["eval_count"].sum())
    stats["short_classes"] = int((table["short"] > 0).sum())
    if recipe.keep_unmatched:
        stats["unlabelled"] = train.height - labelled.height  # not a class: outside every statistic above
    info = dict(drawn.similarity)
    if recipe.embeddings is not None:
        div = manifest_diversity(labelled, recipe.embeddings).join(table.select("label", "name"), on="label", how="left")
        info["intra_class_cosine"] = {
            "mean": div["mean_cosine"].mean(),
            "per_class": dict(zip(div["name"].to_list(), div["mean_cosine"].to_list())),
        }
    if info:
        stats["similarity"] = info
    return BuildResult(setup.resolved, train, evals, table, stats, dict(drawn.reasons), drawn.short)


def _check_no_class_emptied(targets: pl.DataFrame, recipe: Recipe) -> None:
    """Refuse targets that give a class with rows in the pool no training rows (an extreme
    ``--imbalance`` rounds the tail to zero), unless ``allow_empty_classes`` or ``--trim-tail K:0``
    asked for exactly that."""
    if recipe.allow_empty_classes:
        return
    from curate.sample import parse_trim_tail

    n = targets.height
    trim = parse_trim_tail(recipe.trim_tail)
    trimmed = pl.col("head_rank") >= n - min(trim[0], n) if trim is not None and trim[1] == 0 else pl.lit(False)
    empty = targets.filter((pl.col("target") == 0) & (pl.col("pool") > recipe.eval_per_class) & ~trimmed)
    if empty.height:
        names = ", ".join(empty.sort("head_rank")["name"].head(3).to_list())
        raise CurateError(
            f"--profile {recipe.profile} (--imbalance {recipe.imbalance:g}): {empty.height} of {n} classes would get no "
            f"training rows though the pool has some (e.g. {names})",
            hint="lower --imbalance, set --max-per-class higher, or pass --allow-empty-classes to build it so",
        )


# ---------------------------------------------------------------------------------------------
# writing and reading


def _write_parquet(df: pl.DataFrame, dest: Path) -> None:
    # zstd, no statistics that depend on anything but the rows; same rows -> same bytes
    df.select(list(MANIFEST_SCHEMA)).cast(MANIFEST_SCHEMA).write_parquet(dest, compression="zstd", compression_level=9)


def manifest_dir(name: str, out_root: str | os.PathLike[str] = "manifests") -> Path:
    """``NAME`` as a folder: an existing path as given, else ``OUT_ROOT/NAME``."""
    p = Path(name)
    return p if p.is_dir() or p.parent != Path(".") else Path(out_root) / name


# what a build writes into a manifest folder, and what later commands add to it: images/ and
# shards/ (curate shards; a rebuild keeps them) and export/ (curate export, of the manifest a
# rebuild replaces)
MANIFEST_FILES = ("manifest.parquet", "eval.parquet", "classes.tsv", "classes.parquet", "stats.json", "freq.png", "recipe.yaml", "card.md")
MANIFEST_ADDED = (*DERIVED_FOLDERS, "export")
# what file browsers leave in any folder they show (no one's data)
BROWSER_FILES = (".DS_Store", "Thumbs.db", "desktop.ini")


def check_manifest_dest(dest: str | os.PathLike[str]) -> None:
    """Refuse, in one line, a manifest folder that a build would replace with something in it that
    curate did not write there (a build replaces the folder as a whole): a user's files, or a path
    that is not a folder at all."""
    check_replaceable(
        dest, MANIFEST_FILES + MANIFEST_ADDED + BROWSER_FILES, name=f"manifest folder {dest}",
        not_folder="; give another --name or --out-root",
        foreign="holds files a build did not write ({names}); a rebuild replaces it as a whole, so move them or give another --name or --out-root",
    )


def write_manifest(result: BuildResult, *, reference: pl.DataFrame | None = None) -> Path:
    """Write the whole manifest folder under a temporary name and rename it into place."""
    from curate.freq import classes_tsv, plot_freq

    recipe = result.recipe
    dest = Path(recipe.out_root) / str(recipe.name)
    recover(dest, carry=DERIVED_FOLDERS)  # a rebuild killed midway: its folder, before it is judged
    check_manifest_dest(dest)
    # images/ and shards/ of the folder replaced move into the new one (after the swap: a kill
    # anywhere leaves them where the next command finds them, see util.recover)
    with atomic_path(dest, carry=DERIVED_FOLDERS) as tmp:
        tmp.mkdir()
        _write_parquet(result.train, tmp / "manifest.parquet")
        if recipe.eval_per_class:
            _write_parquet(result.eval, tmp / "eval.parquet")
        (tmp / "classes.tsv").write_text(classes_tsv(result.classes), encoding="utf-8")
        result.classes.write_parquet(tmp / "classes.parquet", compression="zstd")
        (tmp / "stats.json").write_text(json.dumps({"stats": result.stats, "dropped": result.reasons}, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        plot_freq(result.classes, tmp / "freq.png", reference=reference, title=f"{recipe.name}: training counts, sorted")
        (tmp / "recipe.yaml").write_text(
            "# the resolved recipe of this manifest; rebuild with: curate build --recipe recipe.yaml\n" + recipe.dump(),
            encoding="utf-8",
        )
        files = {p.name: file_sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        (tmp / "card.md").write_text(render_card(result, files), encoding="utf-8")
    result.out = dest
    result.files = files
    return dest


@dataclass(frozen=True)
class Manifest:
    folder: Path
    train: pl.DataFrame
    eval: pl.DataFrame | None
    classes: pl.DataFrame
    recipe: Recipe


def read_manifest(folder: str | os.PathLike[str]) -> Manifest:
    """A built manifest folder: its tables and its recipe."""
    root = Path(folder)
    recover(root, carry=DERIVED_FOLDERS)  # a rebuild killed midway: finish or undo it first
    main = root / "manifest.parquet"
    if not main.is_file():
        raise CurateError(f"{root}: no manifest.parquet here; build one with curate build")
    try:
        train = pl.read_parquet(main)
        evals = pl.read_parquet(root / "eval.parquet") if (root / "eval.parquet").is_file() else None
        classes = pl.read_parquet(root / "classes.parquet")
    except (OSError, pl.exceptions.PolarsError) as e:
        raise CurateError(f"{root}: unreadable manifest file ({str(e).splitlines()[0]})") from e
    missing = [c for c in MANIFEST_SCHEMA if c not in train.columns]
    if missing:
        raise CurateError(f"{main}: missing column(s) {', '.join(missing)}")
    recipe = Recipe.load(root / "recipe.yaml")
    return Manifest(root, train, evals, classes, recipe)


# ---------------------------------------------------------------------------------------------
# the card


def _md_table(header: list[str], rows: list[list[object]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _f(x: object, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def render_card(result: BuildResult, files: dict[str, str]) -> str:
    """``card.md``: what was asked, what was achieved, the statistics, what was left out and why."""
    r, s, t = result.recipe, result.stats, result.classes
    asked = [[k, f"`{v}`"] for k, v in r.to_dict().items() if v is not None]
    by_rank = t.sort("head_rank")
    show = by_rank if by_rank.height <= 12 else pl.concat([by_rank.head(6), by_rank.tail(6)])
    class_rows = [
        [row["head_rank"], row["name"], row["pool"], row["target"], row["count"], row["eval_count"]]
        for row in show.iter_rows(named=True)
    ]
    nz = t.filter(pl.col("count") > 0)["count"]
    lines = [
        f"# {r.name}",
        "",
        f"A controlled subset of `{r.source}` built by `curate build` (vocabulary `{r.vocab}`, "
        f"{t.height} classes, captions `{r.captions}`). Rebuild it with `curate build --recipe recipe.yaml`.",
        "",
        "## Asked",
        "",
        _md_table(["option", "value"], asked),
        "",
        "## Achieved",
        "",
        _md_table(
            ["", "asked", "achieved"],
            [
                ["training rows", _f(s["targets"]["total"]), _f(s["total"])],
                ["largest class", _f(s["targets"]["max"]), _f(s["max"])],
                ["smallest class", _f(s["targets"]["min"]), _f(int(t["count"].min()))],
                ["max/min (classes with rows)", _f(s["targets"]["max_min_ratio"], 2), _f(s["max_min_ratio"], 2)],
                ["eval rows (balanced, disjoint)", _f(int(t["eval_target"].sum())), _f(s["eval_total"])],
                *([["unlabelled training rows (no class, label -1; --keep-unmatched)", _unlabelled_asked(r), _f(s["unlabelled"])]] if "unlabelled" in s else []),
            ],
        ),
        "",
        "Statistics of the achieved training counts (curate.freq): "
        f"Gini {_f(s['gini'])}, normalised entropy {_f(s['normalised_entropy'])}, Zipf exponent {_f(s['zipf_exponent'])}, "
        f"top-10% classes' share {_f(s['top10pct_share'])}, median {_f(s['median'], 1)}, "
        f"classes without rows {s['zero_count_classes']}"
        + (f", smallest non-zero {int(nz.min())}" if len(nz) else "")
        + "."
        + (
            f" The manifest also holds {_f(s['unlabelled'])} unlabelled rows, captions naming no class, kept with their own "
            "text for contrastive training (label -1, no wnid or class name); they are no class and in none of these figures."
            if "unlabelled" in s else ""
        ),
    ]
    if "reference" in s:
        ref = s["reference"]
        lines += ["", f"Against the reference: Spearman {_f(ref['spearman'])}, Pearson (log) {_f(ref['pearson_log'])}, KL {_f(ref['kl_divergence'])}."]
    if result.shortfall.height:
        sh = result.shortfall
        lines += [
            "",
            f"**Shortfall**: {sh.height} class(es) had fewer rows than asked; built with `--allow-shortfall`, "
            "each keeps what the pool has (eval rows first).",
            "",
            _md_table(["class", "pool", "needed (eval + train)", "short by"], [[n, p, d, x] for n, p, d, x in sh.select("name", "pool", "needed", "short").head(20).iter_rows()]),
        ]
    else:
        lines += ["", "Every class got exactly its target."]
    if "similarity" in s:
        lines += ["", "## Similarity", "", _similarity_lines(s["similarity"], result)]
    lines += [
        "",
        "## Classes (head first; the full table is classes.parquet)",
        "",
        _md_table(["rank", "class", "pool", "target", "train", "eval"], class_rows),
        "",
        "![sorted class counts](freq.png)",
        "",
        "## Rows left out, by reason",
        "",
        _md_table(["reason", "key", "rows"], [[describe_reason(k, r), f"`{k}`", _f(v)] for k, v in result.reasons.items() if k != "rows"]),
        "",
        f"Source rows read: {_f(result.reasons.get('rows', 0))}.",
        "",
        "## Files",
        "",
        _md_table(["file", "sha256"], [[k, f"`{v[:16]}…`"] for k, v in files.items()]),
        "",
    ]
    return "\n".join(lines)


def _unlabelled_asked(r: Recipe) -> str:
    return "all" if r.unmatched_fraction is None else f"{r.unmatched_fraction:g} of them"


def _similarity_lines(info: dict, result: BuildResult) -> str:
    rows = []
    if info.get("scores"):
        rows += [
            ["scores", f"`{info['scores']}` (curate score)"],
            ["encoder", f"`{info.get('encoder')}`"],
            ["definition text", f"`{info.get('definition_format')}`"],
            ["min similarity", _f(info.get("min_similarity"))],
            ["top-k per class", _f(info.get("top_k_per_class"))],
            ["(caption, class) pairs kept", _f(info.get("kept_pairs"))],
            ["lowest / mean similarity kept", f"{_f(info['similarity_of_kept']['min'])} / {_f(info['similarity_of_kept']['mean'])}"],
        ]
    if info.get("knn_queries"):
        kinds = ", ".join(f"{k} for {v} class(es)" for k, v in sorted(info["index_per_class"].items()))
        rows += [
            ["kNN queries", f"`{info['knn_queries']}`: {_f(info['queries'])} texts, {_f(info['queries_in_selected_classes'])} in the selected classes"],
            ["neighbours per query", _f(info["knn_k"])],
            ["encoder", f"`{info.get('encoder')}`"],
            ["rows chosen (distinct)", f"{_f(info['distinct_rows_kept'])} of {_f(info['neighbours_found'])} neighbours found"],
            ["faiss index", kinds or "n/a"],
        ]
    if info.get("intra_class_cosine"):
        rows.append(["intra-class similarity (mean pairwise cosine of caption embeddings, mean over classes)", _f(info["intra_class_cosine"]["mean"], 4)])
    # the rows this stage left out (also in the table of all reasons, under their keys)
    rows += [[f"left out: {describe_reason(k, result.recipe)}", _f(v)] for k, v in result.reasons.items() if k in SIMILARITY_REASONS]
    return _md_table(["", "value"], rows)


# ---------------------------------------------------------------------------------------------
# export


def _image_ref(df: pl.DataFrame, base: Path) -> pl.Series:
    urls = df["url"].to_list()
    paths = df["path"].to_list()
    out = []
    for u, p in zip(urls, paths):
        if u:
            out.append(u)
        elif p:
            q = Path(p) if Path(p).is_absolute() else (base / p)
            out.append(q.resolve().as_uri())
        else:
            out.append(None)
    return pl.Series(out, dtype=pl.Utf8)


def _export_openclip(df: pl.DataFrame, dest: Path, base: Path) -> None:
    # open_clip's CsvDataset defaults: tab separator, columns filepath and title
    paths = [p if p else u for p, u in zip(df["path"].to_list(), df["url"].to_list())]
    pl.DataFrame({"filepath": pl.Series(paths, dtype=pl.Utf8), "title": df["caption"]}).write_csv(dest, separator="\t")


def _export_img2dataset(df: pl.DataFrame, dest: Path, base: Path) -> None:
    df.select("uid", "label", "caption").with_columns(_image_ref(df, base).alias("url")).select(
        "url", "caption", "uid", "label"
    ).write_parquet(dest, compression="zstd")


def _export_jsonl(df: pl.DataFrame, dest: Path, base: Path) -> None:
    df.write_ndjson(dest)


EXPORTERS = {
    "openclip-csv": ("csv", _export_openclip, "tab-separated filepath/title, open_clip's --train-data CSV layout"),
    "img2dataset": ("parquet", _export_img2dataset, "url, caption, uid, label: img2dataset --input_format parquet"),
    "jsonl": ("jsonl", _export_jsonl, "every manifest column, one JSON object a line"),
}


def export(folder: str | os.PathLike[str], fmt: str, *, out: str | os.PathLike[str] | None = None) -> list[Path]:
    """Write each split of the manifest in ``fmt`` to ``out`` (default ``FOLDER/export/``)."""
    if fmt not in EXPORTERS:
        raise CurateError(f"--format {fmt!r} is not one of {', '.join(EXPORTERS)}")
    m = read_manifest(folder)
    ext, fn, _ = EXPORTERS[fmt]
    out_dir = Path(out) if out is not None else m.folder / "export"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for split, df in (("train", m.train), ("eval", m.eval)):
        if df is None:
            continue
        dest = out_dir / f"{split}.{fmt}.{ext}"
        with atomic_path(dest) as tmp:
            fn(df, tmp, m.folder)
        written.append(dest)
    return written
