"""The embedded demo corpus: figures of the default build, caption ground truth, learnable images,
determinism, reuse, and interrupted builds (in-process failure and a real SIGKILL)."""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

import curate.demo as demo
from curate.demo import (
    DEMO_CLASSES,
    EXTRA_COLUMNS,
    SOURCE_COLUMNS,
    class_counts,
    default_root,
    demo_vocab,
    ensure_demo,
    filler_texts,
    gini,
    plural,
    top_share,
)
from curate.errors import CurateError
from curate.vocab import TRAP_CLASSES, load_vocab
from curate.wordnet import plural_exceptions

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SMALL = 0.05  # ~1.2k pairs: enough for every kind of row, fast to build


@pytest.fixture(scope="module")
def full_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default build (scale 1), in a private folder: never the user's cache."""
    return ensure_demo(tmp_path_factory.mktemp("full") / "demo")


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_demo(tmp_path_factory.mktemp("small") / "demo", scale=SMALL)


# ---------------------------------------------------------------------------------------------
# a small independent matcher: every ImageNet-1k surface form, found by word n-grams
# ---------------------------------------------------------------------------------------------


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^0-9a-z]+", " ", html.unescape(text).casefold()).split())


@pytest.fixture(scope="module")
def surfaces() -> dict[str, set[str]]:
    """normalised surface form (lemma or its plural) -> the ImageNet-1k wnids it can name."""
    exceptions = plural_exceptions()
    table: dict[str, set[str]] = {}
    vocab = load_vocab("imagenet1k")
    for wnid, lemmas, name in vocab.select("wnid", "lemmas", "name").iter_rows():
        for form in [*lemmas, name]:
            for variant in (form, plural(form, exceptions)):
                table.setdefault(_norm(variant), set()).add(wnid)
    return table


def _found(text: str, surfaces: dict[str, set[str]]) -> set[str]:
    words = _norm(text).split()
    return {
        " ".join(words[i : i + n])
        for n in range(1, 7)
        for i in range(len(words) - n + 1)
        if " ".join(words[i : i + n]) in surfaces
    }


def _without(text: str, forms: set[str]) -> str:
    """``text`` normalised, with every occurrence of ``forms`` cut out (longest first)."""
    out = f" {_norm(text)} "
    for form in sorted(forms, key=len, reverse=True):
        out = out.replace(f" {form} ", " | ")
    return out


# ---------------------------------------------------------------------------------------------
# classes and counts
# ---------------------------------------------------------------------------------------------


def test_classes_are_imagenet100_plus_the_known_traps():
    in100 = set(load_vocab("imagenet100")["wnid"])
    assert in100 <= set(DEMO_CLASSES)
    assert set(TRAP_CLASSES) <= set(DEMO_CLASSES)
    assert {"n02012849", "n03126707", "n02412080", "n02879718", "n02422699", "n04347754"} <= set(TRAP_CLASSES)
    assert len(DEMO_CLASSES) == len(set(DEMO_CLASSES)) >= 100
    assert list(DEMO_CLASSES) == sorted(DEMO_CLASSES)
    indices = SHARED / "reference" / "imagenet100_class_indices.txt"
    if indices.is_file():  # the study's own list, where the shared folder is beside the checkout
        full = load_vocab("imagenet1k")["wnid"].to_list()
        assert {full[int(i)] for i in indices.read_text().split()} == in100


def test_demo_vocab_is_imagenet_rows_relabelled():
    vocab = demo_vocab()
    full = load_vocab("imagenet1k")
    assert vocab.schema == full.schema
    assert vocab["wnid"].to_list() == list(DEMO_CLASSES)
    assert vocab["label"].to_list() == list(range(len(DEMO_CLASSES)))
    same = full.filter(pl.col("wnid").is_in(list(DEMO_CLASSES))).drop("label")
    assert vocab.drop("label").equals(same)
    assert load_vocab("demo").equals(vocab)


def test_gini_and_top_share_on_known_counts():
    assert gini([5, 5, 5, 5]) == pytest.approx(0.0)
    assert gini([0, 0, 0, 12]) == pytest.approx(0.75)  # (n-1)/n: one class holds everything
    assert top_share([10] + [1] * 9) == pytest.approx(10 / 19)
    assert gini([]) == 0.0


def test_class_counts_long_tail_and_seeded_order():
    counts = class_counts(len(DEMO_CLASSES))
    assert counts.sum() >= 20_000 and counts.max() >= 2_000 and counts.min() >= 1
    assert 0.7 <= gini(counts) <= 0.9
    assert np.array_equal(counts, class_counts(len(DEMO_CLASSES)))
    other = class_counts(len(DEMO_CLASSES), seed=1)
    assert not np.array_equal(counts, other)  # another seed: another head class
    assert sorted(counts) == sorted(other)  # ... but the same shape
    small = class_counts(len(DEMO_CLASSES), scale=0.1)
    assert small.sum() < counts.sum() / 5 and small.min() >= 1
    with pytest.raises(CurateError, match="scale"):
        class_counts(10, scale=0)


def test_plurals_regular_and_irregular():
    exc = plural_exceptions()
    assert plural("goose", exc) == "geese"
    assert plural("computer mouse", exc) == "computer mice"
    assert plural("lorikeet", exc) == "lorikeets"
    assert plural("cocktail shaker", exc) == "cocktail shakers"
    assert plural("box", exc) == "boxes"
    assert plural("butterfly", exc) == "butterflies"
    assert plural("jeans", exc) == "jeans"
    assert plural("Chihuahua", exc) == "Chihuahuas"


def test_filler_words_name_no_imagenet_class(surfaces):
    hits = {text: _found(text, surfaces) for text in filler_texts()}
    assert {t: f for t, f in hits.items() if f} == {}


# ---------------------------------------------------------------------------------------------
# the folder
# ---------------------------------------------------------------------------------------------


def test_layout_columns_paths_and_images(small_demo: Path):
    df = pl.read_parquet(small_demo / "captions.parquet")
    assert df.columns == [*SOURCE_COLUMNS, *EXTRA_COLUMNS]
    assert df.columns[:8] == ["uid", "caption", "url", "path", "title", "tags", "description", "wnid"]
    assert all(dtype == pl.Utf8 for dtype in df.schema.values())
    assert df["uid"].n_unique() == df.height
    assert df["caption"].null_count() == 0
    assert set(df["wnid"].drop_nulls()) <= set(DEMO_CLASSES)
    assert set(df["wnid2"].drop_nulls()) <= set(DEMO_CLASSES)
    for url, path in df.select("url", "path").iter_rows():
        assert Path(path).is_absolute() and Path(path).is_relative_to(small_demo)
        assert url == Path(path).as_uri()
    files = sorted((small_demo / "images").rglob("*.jpg"))
    assert len(files) == df.height
    assert {str(f) for f in files} == set(df["path"])
    for path in df["path"].to_list()[:50]:
        with Image.open(path) as im:
            im.load()
            assert im.format == "JPEG" and im.mode == "RGB" and im.size == (demo.IMAGE_SIZE, demo.IMAGE_SIZE)
    assert pl.read_parquet(small_demo / "vocab.parquet").equals(demo_vocab())
    assert demo_vocab(small_demo).equals(demo_vocab())
    meta = json.loads((small_demo / "meta.json").read_text())
    assert meta["pairs"] == df.height
    assert meta["classes"] == len(DEMO_CLASSES)
    assert meta["no_class_pairs"] == df["wnid"].null_count()
    assert meta["scale"] == SMALL and meta["seed"] == demo.DEMO_SEED and meta["synthetic"] is True
    assert (small_demo / ".complete").is_file()


def test_default_build_figures(full_demo: Path):
    df = pl.read_parquet(full_demo / "captions.parquet")
    meta = json.loads((full_demo / "meta.json").read_text())
    counts = df["wnid"].drop_nulls().value_counts()["count"].to_numpy()
    assert df["wnid"].drop_nulls().n_unique() == len(DEMO_CLASSES) >= 100
    assert counts.max() >= 2_000
    assert counts.sum() >= 20_000 and df.height >= 20_000
    assert 0.7 <= gini(counts) <= 0.9
    assert meta["gini"] == pytest.approx(gini(counts), abs=1e-4)
    assert meta["head"] == counts.max() and meta["class_pairs"] == counts.sum()
    assert meta["pairs"] == df.height


def test_captions_carry_the_web_features(full_demo: Path):
    df = pl.read_parquet(full_demo / "captions.parquet")
    captions = df["caption"]
    assert 0.03 < df["wnid"].null_count() / df.height < 0.2  # captions naming no class
    assert df["wnid2"].is_not_null().sum() > 500  # captions naming two classes
    assert captions.str.contains("&amp;|&#39;|&nbsp;|&quot;").sum() > 50  # HTML entities
    assert (captions == captions.str.to_uppercase()).sum() > 100  # shouting
    assert (captions == captions.str.to_lowercase()).sum() > 1000
    assert captions.str.contains(r"[!.~|]$").sum() > 1000  # trailing punctuation
    goose = df.filter(pl.col("wnid") == "n01855672")["caption"].str.to_lowercase()
    assert goose.str.contains(r"\bgeese\b").any()  # irregular plural
    # both senses of crane are classes; the caption alone must be read in context
    crane = df.filter(pl.col("caption").str.to_lowercase().str.contains(r"\bcranes?\b"))
    assert {"n02012849", "n03126707"} <= set(crane["wnid"].drop_nulls())
    assert crane["wnid"].null_count() > 0  # and a crane that is neither (origami, Ichabod)
    # ambiguous words in a sense that is no class: ground truth null, the word recorded
    traps = df.filter(pl.col("trap").is_not_null())
    assert traps["wnid"].null_count() == traps.height
    assert {"ram", "sub", "impala", "bow", "sorrel", "tiger", "mouse", "crane"} <= set(traps["trap"])
    ram = df.filter(pl.col("caption").str.contains(r"(?i)\bram\b"))
    assert ram["wnid"].null_count() > 0 and (ram["wnid"] == "n02412080").any()
    # web fields beside the caption, for the title/tags/description caption modes
    assert df["title"].null_count() == 0 and df["tags"].null_count() == 0
    assert 0.2 < df["description"].null_count() / df.height < 0.6
    labelled = df.filter(pl.col("wnid").is_not_null())
    assert labelled["tags"].str.contains(",").mean() > 0.9


def test_ground_truth_agrees_with_the_words(full_demo: Path, surfaces):
    """An independent n-gram matcher over all ImageNet-1k lemmas: a labelled caption names its
    class (and its second class), and nothing else once those names are cut out; a caption without
    a class names none, except its recorded trap word."""
    df = pl.read_parquet(full_demo / "captions.parquet")
    forms: dict[str, set[str]] = {}
    for surface, wnids in surfaces.items():
        for wnid in wnids:
            forms.setdefault(wnid, set()).add(surface)
    problems = []
    for caption, wnid, wnid2, trap in df.select("caption", "wnid", "wnid2", "trap").iter_rows():
        if wnid is not None:
            named = forms[wnid] | (forms[wnid2] if wnid2 else set())
            found = _found(caption, surfaces)
            ok = bool(found & forms[wnid]) and (wnid2 is None or bool(found & forms[wnid2]))
            ok = ok and not _found(_without(caption, named), surfaces)
        elif trap is not None:
            ok = trap in _norm(caption).split() or trap in _norm(caption)
            ok = ok and not _found(re.sub(rf"\b{trap}\w*", " ", _norm(caption)), surfaces)
        else:
            ok = not _found(caption, surfaces)
        if not ok:
            problems.append((caption, wnid, wnid2, trap))
    assert problems == []


def test_images_are_learnable(full_demo: Path):
    """Nearest class mean on 8x8 pixels, balanced: far above chance (a CNN does better still)."""
    df = pl.read_parquet(full_demo / "captions.parquet").filter(pl.col("wnid").is_not_null())
    df = df.with_columns(pl.int_range(pl.len()).over("wnid").alias("k")).filter(pl.col("k") < 16)
    x = np.stack(
        [np.asarray(Image.open(p).convert("RGB").resize((8, 8), Image.BILINEAR), np.float32).ravel() for p in df["path"]]
    )
    classes, y = np.unique(df["wnid"].to_numpy(), return_inverse=True)
    train = df["k"].to_numpy() % 2 == 0
    means = np.stack([x[train & (y == c)].mean(0) for c in range(classes.size)])
    dist = ((x[~train, None, :] - means[None]) ** 2).sum(-1)
    accuracy = (dist.argmin(1) == y[~train]).mean()
    assert accuracy > 10 / classes.size  # chance is 1/119
    # ... and not a lookup table: images of one class all differ
    one = df.filter(pl.col("wnid") == df["wnid"][0])["path"].to_list()
    assert len({hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in one}) == len(one)


def test_images_without_class_carry_no_class_signal():
    styles = demo.class_styles(len(DEMO_CLASSES))
    labels = np.repeat(np.arange(len(DEMO_CLASSES)), 8)
    known = demo.render_images(labels, styles, batch=0).reshape(labels.size, -1).astype(np.float32)
    free = demo.render_images(np.full(400, -1), styles, batch=1).reshape(400, -1).astype(np.float32)
    means = np.stack([known[labels == c].mean(0) for c in range(len(DEMO_CLASSES))])
    nearest = ((free[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    # class-free images spread over many classes instead of looking like one of them
    assert np.bincount(nearest).max() < 0.2 * free.shape[0]
    again = demo.render_images(labels, styles, batch=0).reshape(labels.size, -1)
    assert np.array_equal(again, known.astype(np.uint8))


# ---------------------------------------------------------------------------------------------
# determinism, reuse, interruption
# ---------------------------------------------------------------------------------------------


def _digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "meta.json"
    }


def test_same_seed_same_bytes(tmp_path: Path, small_demo: Path):
    first = _digest(small_demo)
    again = ensure_demo(tmp_path / "a", scale=SMALL)
    table = pl.read_parquet(again / "captions.parquet")
    reference = pl.read_parquet(small_demo / "captions.parquet")
    # another folder changes only the paths
    assert table.drop("url", "path").equals(reference.drop("url", "path"))
    assert {k: v for k, v in _digest(again).items() if k != "captions.parquet"} == {
        k: v for k, v in first.items() if k != "captions.parquet"
    }
    # the same folder, rebuilt: every byte the same
    before = _digest(again)
    ensure_demo(again, scale=SMALL, force=True)
    assert _digest(again) == before
    other = ensure_demo(tmp_path / "b", scale=SMALL, seed=7)
    assert not pl.read_parquet(other / "captions.parquet").drop("url", "path").equals(reference.drop("url", "path"))


def test_reused_when_present_rebuilt_when_incomplete(tmp_path: Path):
    root = ensure_demo(tmp_path / "demo", scale=0.02)
    stamp = (root / "captions.parquet").stat().st_ino, (root / ".complete").stat().st_mtime_ns
    assert ensure_demo(root, scale=0.02) == root
    assert ((root / "captions.parquet").stat().st_ino, (root / ".complete").stat().st_mtime_ns) == stamp
    # a folder without its marker is not trusted
    (root / ".complete").unlink()
    (root / "images" / "000" / "demo-000000.jpg").unlink()
    ensure_demo(root, scale=0.02)
    assert (root / ".complete").is_file() and (root / "images" / "000" / "demo-000000.jpg").is_file()
    # nor one written by another seed/scale/version
    meta = json.loads((root / "meta.json").read_text())
    (root / "meta.json").write_text(json.dumps(meta | {"version": 0}))
    ensure_demo(root, scale=0.02)
    assert json.loads((root / "meta.json").read_text())["version"] == demo.GENERATOR_VERSION
    ensure_demo(root, scale=0.03)
    assert json.loads((root / "meta.json").read_text())["scale"] == 0.03


def test_failed_generation_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    real = demo.render_images

    def fail_on_second_batch(labels, styles, *, seed, batch, size=demo.IMAGE_SIZE):
        if batch == 1:
            raise OSError("disk full")
        return real(labels, styles, seed=seed, batch=batch, size=size)

    monkeypatch.setattr(demo, "render_images", fail_on_second_batch)
    with pytest.raises(OSError, match="disk full"):
        ensure_demo(tmp_path / "demo", scale=0.1)
    assert [p.name for p in tmp_path.iterdir()] == [".demo.lock"]  # no folder, no temporary


def test_killed_generation_never_looks_complete(tmp_path: Path):
    root = tmp_path / "demo"
    code = f"from curate.demo import ensure_demo; ensure_demo({str(root)!r}, scale=0.5)"
    # a real kill -9 midway: no cleanup code runs, unlike an exception
    proc = subprocess.Popen([sys.executable, "-c", code], env=os.environ | {"CURATE_NO_PROGRESS": "1"})
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(".demo.*/images/000/*.jpg")):
            assert proc.poll() is None, "the build ended before it could be interrupted"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not root.exists()  # only the hidden temporary folder is left
    (left,) = tmp_path.glob(".demo.*.tmp")
    fresh = tmp_path / ".demo.another-build.tmp"  # a build still running elsewhere: kept
    fresh.mkdir()
    hours_ago = time.time() - 2 * 3600
    for path in (left, left / "images"):
        os.utime(path, (hours_ago, hours_ago))
    assert ensure_demo(root, scale=0.02) == root
    assert (root / ".complete").is_file()
    assert not left.exists() and fresh.exists()  # the dead build's leftovers are swept


def test_concurrent_builds_end_with_one_whole_folder(tmp_path: Path):
    root = tmp_path / "demo"
    code = f"from curate.demo import ensure_demo; print(ensure_demo({str(root)!r}, scale=0.05))"
    env = os.environ | {"CURATE_NO_PROGRESS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0] and outs == [str(root), str(root)]
    assert (root / ".complete").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".demo.lock", "demo"]
    # whole and the same as a lone build (bar the paths inside captions.parquet)
    alone = _digest(ensure_demo(tmp_path / "alone", scale=0.05))
    assert _digest(root).keys() == alone.keys()
    assert {k: v for k, v in _digest(root).items() if k != "captions.parquet"} == {
        k: v for k, v in alone.items() if k != "captions.parquet"
    }


def test_default_folder_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CURATE_DEMO_DIR", str(tmp_path / "mine"))
    assert default_root() == tmp_path / "mine"
    assert default_root(scale=0.5) != default_root()  # a small build never replaces the default
    monkeypatch.delenv("CURATE_DEMO_DIR")
    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "cache"))
    assert default_root() == tmp_path / "cache" / f"demo-v{demo.GENERATOR_VERSION}"


def test_bad_requests(tmp_path: Path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(CurateError, match="not a folder"):
        ensure_demo(tmp_path / "file", scale=0.02)
    with pytest.raises(CurateError, match="scale"):
        ensure_demo(tmp_path / "demo", scale=-1)
    with pytest.raises(CurateError, match="vocab"):
        demo_vocab(tmp_path)
