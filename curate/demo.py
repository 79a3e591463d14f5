"""The embedded demo corpus: synthetic web-like image-text pairs, generated offline into the cache.

``ensure_demo()`` returns a folder (default ``$CURATE_DEMO_DIR``, else ``cache_dir()/demo-v2``)
holding:

- ``captions.parquet``: the canonical source table (``uid, caption, url, path, title, tags,
  description, wnid``) plus ``wnid2`` (the second class a caption names, if any) and ``trap``
  (the ambiguous word a caption uses in a sense that is *not* its class, if any). ``wnid`` is
  the ground truth: the class the image shows, null when the caption names no class;
- ``images/NNN/UID.jpg``: one small JPEG per pair, whose colours, stripes and shape depend on
  its class (learnable, never identical), or a class-free pattern for pairs without a class;
- ``vocab.parquet``: the demo's vocabulary (``load_vocab("demo")``), ``meta.json`` (the
  figures), and ``.complete``, written last.

Everything is synthetic. Class counts follow a long tail like web data (Gini about 0.8, from
log-normal quantiles, assigned to classes by a seeded permutation); captions are written from
the WordNet lemmas with plurals, case and punctuation noise, HTML entities, distractor words,
two-class captions, class-free captions and ambiguous words in both senses (crane the bird and
the machine, RAM the memory, a sub sandwich, a Chevrolet Impala, ...), so matchers can be scored.
The folder is built under a temporary name and renamed into place, so an interrupted build
never looks complete. Same seed and scale, same bytes.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np
import polars as pl
from PIL import Image

from curate.errors import CurateError
from curate.freq import gini, top_share  # noqa: F401  (also part of this module's API)
from curate.vocab import demo_wnids, load_vocab

GENERATOR_VERSION = 2
DEMO_SEED = 0
IMAGE_SIZE = 32
JPEG_QUALITY = 90
SHARD_SIZE = 1000  # images per sub-folder, so no folder grows huge
CHUNK = 1024  # images rendered per vectorised batch; each batch has its own seed, so output
# never depends on how the work is split

SOURCE_COLUMNS = ("uid", "caption", "url", "path", "title", "tags", "description", "wnid")
EXTRA_COLUMNS = ("wnid2", "trap")

#: The demo's classes (wnids), in the standard ImageNet order, which is also their label order:
#: ImageNet-100 plus the ambiguous "trap" classes (both owned by curate.vocab).
DEMO_CLASSES: tuple[str, ...] = demo_wnids()

# Class-count shape: log-normal quantiles (web class frequencies are close to log-normal);
# sigma 2.0 with a floor of 10 pairs gives Gini ~0.80 and a top-10% share ~0.72 over 119
# classes, like LAION-400M / CC-12M over ImageNet-1k (Gini 0.80, top-10% 0.68-0.70).
_SIGMA = 2.0
_CLASS_PAIRS = 22_000
_FLOOR = 10
_NO_CLASS_FRACTION = 0.06  # captions that name no class at all
_TRAP_FRACTION = 0.03  # captions using an ambiguous word in a sense that is no class
_TWO_CLASS_FRACTION = 0.06  # class captions that also name a second class
_PLURAL_FRACTION = 0.2


# ----------------------------------------------------------------------------------------------
# where it lives
# ----------------------------------------------------------------------------------------------


def default_root(*, seed: int = DEMO_SEED, scale: float = 1.0) -> Path:
    """``$CURATE_DEMO_DIR``, else ``cache_dir()/demo-v2``; other seeds/scales get their own folder
    so a small build never replaces the default one."""
    from curate.util import cache_dir

    env = os.environ.get("CURATE_DEMO_DIR")
    base = Path(env) if env else cache_dir() / f"demo-v{GENERATOR_VERSION}"
    if seed == DEMO_SEED and scale == 1.0:
        return base
    return base.with_name(f"{base.name}-seed{seed}-scale{scale:g}")


def demo_vocab(root: Path | None = None) -> pl.DataFrame:
    """The demo's vocabulary (``load_vocab("demo")``: the ImageNet-1k rows of ``DEMO_CLASSES``,
    relabelled 0..K-1). With ``root``, read from that demo folder's ``vocab.parquet``.
    """
    if root is not None:
        path = Path(root) / "vocab.parquet"
        if not path.is_file():
            raise CurateError(f"{path}: no demo vocabulary here; run ensure_demo({str(root)!r}) first")
        return pl.read_parquet(path)
    return load_vocab("demo")


# ----------------------------------------------------------------------------------------------
# class counts
# ----------------------------------------------------------------------------------------------


def class_counts(num_classes: int, *, seed: int = DEMO_SEED, scale: float = 1.0) -> np.ndarray:
    """Pairs per class (index = label): a log-normal long tail in a seeded class order."""
    from scipy.stats import norm

    if num_classes < 1:
        raise CurateError(f"the demo needs at least one class, got {num_classes}")
    if not scale > 0:
        raise CurateError(f"demo scale must be > 0, got {scale}")
    z = norm.ppf((np.arange(num_classes) + 0.5) / num_classes)[::-1]
    weights = np.exp(_SIGMA * z)
    ranked = np.maximum(np.rint(weights / weights.sum() * _CLASS_PAIRS), _FLOOR)
    ranked = np.maximum(np.rint(ranked * scale), 1).astype(np.int64)
    order = np.random.default_rng(np.random.SeedSequence([seed, 0])).permutation(num_classes)
    counts = np.empty(num_classes, dtype=np.int64)
    counts[order] = ranked  # class order[r] gets rank r
    return counts


# ----------------------------------------------------------------------------------------------
# images
# ----------------------------------------------------------------------------------------------

# Each class gets a distinct combination of five visual factors. Colour and shape position
# survive averaging; stripe angle/period do not (random phase), so a class mean alone cannot
# separate every class, while a small CNN can.
_HUES, _ANGLES, _PERIODS, _SHAPES, _SPOTS = 12, 4, 2, 3, 4


@dataclass(frozen=True)
class ClassStyles:
    """Per-class visual factors (arrays of length K)."""

    hue: np.ndarray  # 0.._HUES-1, 30 degrees apart
    angle: np.ndarray  # 0.._ANGLES-1, 45 degrees apart
    period: np.ndarray  # 0 = wide stripes, 1 = narrow
    shape: np.ndarray  # 0 disc, 1 square, 2 diamond
    spot: np.ndarray  # quadrant of the shape


def class_styles(num_classes: int, *, seed: int = DEMO_SEED) -> ClassStyles:
    total = _HUES * _ANGLES * _PERIODS * _SHAPES * _SPOTS
    if num_classes > total:
        raise CurateError(f"the image generator tells at most {total} classes apart, asked for {num_classes}")
    combos = np.random.default_rng(np.random.SeedSequence([seed, 2])).choice(total, size=num_classes, replace=False)
    hue, angle, period, shape, spot = np.unravel_index(combos, (_HUES, _ANGLES, _PERIODS, _SHAPES, _SPOTS))
    return ClassStyles(hue=hue, angle=angle, period=period, shape=shape, spot=spot)


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB; h in turns (0..1), s and v in 0..1; returns (..., 3) float32."""
    h = np.mod(h, 1.0) * 6.0
    i = np.floor(h).astype(np.int64) % 6
    f = h - np.floor(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = np.stack(
        [np.stack(c, axis=-1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))]
    )
    return np.take_along_axis(table, i[None, ..., None].repeat(3, axis=-1), axis=0)[0].astype(np.float32)


def render_images(
    labels: np.ndarray, styles: ClassStyles, *, seed: int = DEMO_SEED, batch: int = 0, size: int = IMAGE_SIZE
) -> np.ndarray:
    """Render one batch of images as uint8 ``(n, size, size, 3)``; label -1 draws a class-free
    pattern. The batch number seeds the per-image jitter, so a batch renders the same anywhere."""
    labels = np.asarray(labels, dtype=np.int64)
    n = labels.size
    rng = np.random.default_rng(np.random.SeedSequence([seed, 3, batch]))
    known = labels >= 0
    lab = np.where(known, labels, 0)

    hue = np.where(known, styles.hue[lab] / _HUES + rng.normal(0, 0.012, n), rng.uniform(0, 1, n))
    angle = np.where(
        known, styles.angle[lab] * (np.pi / _ANGLES) + rng.normal(0, 0.1, n), rng.uniform(0, np.pi, n)
    )
    period = np.where(
        known, np.where(styles.period[lab] == 0, 11.0, 5.5) * rng.uniform(0.9, 1.1, n), rng.uniform(4.5, 13.0, n)
    ) * (size / 32)
    phase = rng.uniform(0, 2 * np.pi, n)
    shape = np.where(known, styles.shape[lab], rng.integers(0, _SHAPES, n))
    spot = styles.spot[lab]
    cx = np.where(known, np.where(spot % 2 == 0, 0.3, 0.7) + rng.normal(0, 0.05, n), rng.uniform(0.2, 0.8, n))
    cy = np.where(known, np.where(spot // 2 == 0, 0.3, 0.7) + rng.normal(0, 0.05, n), rng.uniform(0.2, 0.8, n))
    radius = rng.uniform(0.14, 0.2, n) * size
    light = rng.uniform(0.8, 1.0, n)
    dark = rng.uniform(0.2, 0.4, n)
    contrast = rng.uniform(0.85, 1.15, n)

    colour_a = _hsv_to_rgb(hue, np.full(n, 0.55), light)
    colour_b = _hsv_to_rgb(hue + 0.11, np.full(n, 0.7), dark)
    colour_s = _hsv_to_rgb(hue + 0.5, np.full(n, 0.85), np.full(n, 0.95))

    clutter_on = rng.random(n) < 0.3
    clutter_rgb = _hsv_to_rgb(rng.uniform(0, 1, n), rng.uniform(0.3, 1.0, n), rng.uniform(0.3, 1.0, n))
    clutter_x, clutter_y = rng.uniform(0.1, 0.9, n) * size, rng.uniform(0.1, 0.9, n) * size
    clutter_r = np.where(clutter_on, rng.uniform(0.06, 0.1, n) * size, -1.0)
    noise = rng.standard_normal((n, size, size, 3), dtype=np.float32)

    def per_image(values: np.ndarray) -> np.ndarray:  # (n,) -> (n, 1, 1), float32 for speed
        return np.asarray(values, dtype=np.float32)[:, None, None]

    coords = np.arange(size, dtype=np.float32) + 0.5
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    proj = xx[None] * per_image(np.cos(angle)) + yy[None] * per_image(np.sin(angle))
    stripes = (np.sin(proj * per_image(2 * np.pi / period) + per_image(phase)) * 0.5 + 0.5)[..., None]
    img = colour_a[:, None, None] + (colour_b - colour_a)[:, None, None] * stripes

    # clutter: a small square of any colour anywhere, under the class shape, in some images
    clutter = np.maximum(np.abs(xx[None] - per_image(clutter_x)), np.abs(yy[None] - per_image(clutter_y)))
    np.copyto(img, clutter_rgb[:, None, None], where=(clutter <= per_image(clutter_r))[..., None])

    dx = np.abs(xx[None] - per_image(cx * size))
    dy = np.abs(yy[None] - per_image(cy * size))
    r = per_image(radius)
    kind = shape[:, None, None]
    mask = np.where(kind == 0, dx * dx + dy * dy <= r * r, np.where(kind == 1, np.maximum(dx, dy) <= r * 0.85, dx + dy <= r * 1.25))
    np.copyto(img, colour_s[:, None, None], where=mask[..., None])

    img -= 0.5
    img *= per_image(contrast)[..., None]
    img += 0.5
    noise *= 0.05
    img += noise
    img *= 255.0
    img += 0.5
    return np.clip(img, 0.0, 255.0).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# captions
# ----------------------------------------------------------------------------------------------

ADJECTIVES = (
    "beautiful", "cute", "old", "vintage", "amazing", "little", "big", "rare", "wild", "happy",
    "lovely", "retro", "tiny", "huge", "funny", "adorable", "majestic", "red", "blue", "green",
    "brown", "black and white", "golden", "young", "classic", "handmade", "new", "used",
    "stunning", "gorgeous",
)
PLACES = (
    "in the garden", "at the park", "on the lake", "in the snow", "at the zoo", "in my backyard",
    "near the river", "in the city", "at sunset", "at dawn", "on the farm", "in the forest",
    "at home", "on the road", "in the rain", "on display", "in the museum", "on holiday",
    "in Scotland", "in Kenya", "in Texas", "in summer", "in winter", "downtown",
)
STOCK = (
    "stock photo", "stock image", "royalty free image", "HD wallpaper", "high resolution picture",
    "free download", "photo by John Smith", "photography", "image 2 of 5", "art print",
    "illustration", "clipart", "1080p wallpaper", "editorial use only",
)
TAILS = (
    "via Flickr", "photo credit: Jane Doe", "all rights reserved", "click to enlarge",
    "see more on our blog", "shot on Canon EOS 5D", "iPhone photo", "taken last weekend",
    "\u00a9 2014", "free shipping", "limited offer", "new arrival", "best seller", "don\u2019t miss it",
)
HASHTAGS = (
    "#nature", "#photography", "#instagood", "#wildlife", "#travel", "#love", "#photooftheday",
    "#picoftheday", "#home", "#diy", "#vintage", "#weekend",
)
GENERIC_TAGS = (
    "nature", "photography", "travel", "outdoor", "summer", "winter", "spring", "autumn", "canon",
    "nikon", "sony", "iphone", "art", "vintage", "bokeh", "macro", "hdr", "color", "love", "family",
    "friends", "home", "diy", "handmade", "sale", "new", "photo", "2012", "2015", "2019", "flickr",
    "explore",
)
PRICES = ("$19.99", "\u00a345", "\u20ac120", "only $5!", "$249", "best price")
ENDINGS = ("", "", "", "", "!", "!!!", "...", ".", " :)", " \u2665", " \U0001f4f7", " ~", " -", " |")
CAMERAS = ("Canon 5D", "Nikon D750", "my phone", "an old Pentax", "Fuji X100")

SINGLE_TEMPLATES = (
    "{a} {m}", "{m}", "photo of {a} {m}", "{adj} {m} {place}", "{m} {stock}", "{a} {m} {place}, {tail}",
    "my {m} {place}", "{m} for sale {price}", "{adj} {m}", "{imgid} {m}", "{m} | {stock}",
    "{hashtag} {hashtag2} #{mtag}", "close-up of {a} {m}", "{a} {adj} {m} {place}", "{m}, {year}",
    "{m} {stock} {imgid}", "I love my {m}{end}", "{adj} {m} - {tail}", "look at this {m}!",
    "{m} ({year})", "the {m} {place}", "{a} {m} {place}",
)
PLURAL_TEMPLATES = (
    "{two} {ms} {place}", "{ms} {place}", "{ms} for sale", "a group of {ms}", "{adj} {ms} {stock}",
    "{ms}", "{count} {adj} {ms}", "my {ms}{end}", "lots of {ms} {place}",
)
TWO_CLASS_TEMPLATES = (
    "{a} {m} and {a2} {m2}", "{m} with {a2} {m2} {place}", "{m} next to {a2} {m2}", "{ms} and {m2s}",
    "{m} vs {m2}", "{a} {adj} {m} beside {a2} {m2}", "{m} & {m2} {stock}",
)
NO_CLASS_TEMPLATES = (
    "{adj} view {place}", "{imgid}", "untitled", "happy birthday to my best friend!",
    "{year} summer highlights", "screenshot {year}-{mm}-{dd}", "product image {k} of {n}",
    "what a day {place}", "{stock}", "best {year} ever", "throwback to {year}", "weekend vibes {place}",
    "family reunion {year}", "our trip {place}", "{adj} sky {place}", "new blog post: ten tips for better sleep",
    "{hashtag} {hashtag2}", "gallery | {stock}", "DSC_{n}", "quote of the day: keep going",
    "{adj} colours {place}", "view from the top", "abstract background texture", "seamless pattern",
    "logo design {year}", "{adj} memories {place}", "good morning!", "sale ends sunday {price}",
)

# Class-sense context for the ambiguous classes ({m}: a name of the class itself).
CONTEXT: dict[str, tuple[str, ...]] = {
    "n02012849": ("{a} {m} wading in the marsh", "sandhill {ms} flying south", "red-crowned {ms} dancing {place}", "{a} {m} in the wetlands"),
    "n03126707": ("construction {m} lifting steel girders", "tower {m} over the new office block", "{a} {m} loading cargo at the harbour", "mobile {m} for hire {price}"),
    "n02412080": ("{a} {m} guarding the flock", "{a} {m} charging a rival", "{m} and ewes grazing", "{a} {m} at the county fair"),
    "n02879718": ("recurve {m} and arrows for archery", "compound {m} for deer hunting", "{a} {m} and quiver"),
    "n02422699": ("{a} {m} grazing on the savanna", "herd of {ms} at the waterhole", "{a} {m} leaping {place}"),
    "n04347754": ("nuclear {m} surfacing", "{a} {m} at periscope depth", "{a} {m} leaving the naval base"),
    "n02389026": ("{a} {m} mare in the paddock", "{m} gelding for sale {price}", "{a} {m} with a flaxen mane"),
    "n02123159": ("{a} {m} napping in the sun", "our {m} kitten", "{a} striped {m} purring"),
    "n02129604": ("Bengal {m} in the jungle", "{a} {m} stalking through tall grass", "{ms} at the wildlife reserve"),
    "n03793489": ("bluetooth {m} with USB receiver", "ergonomic gaming {m}", "{a} {m} and mousepad"),
    "n02113186": ("{a} {m} puppy playing fetch", "{a} {m} on a walk", "{m} dog show winner"),
    "n02963159": ("knitted {m} with wooden buttons", "chunky cable-knit {m}", "{a} cosy {m}"),
    "n01847000": ("{a} {m} paddling on the pond", "mallard {m} in breeding plumage"),
    "n02128925": ("{a} {m} resting in the rainforest", "{a} spotted {m} by the river"),
    "n01608432": ("red {m} soaring over the hills", "{a} {m} hunting over the meadow"),
    "n02229544": ("{a} {m} chirping at night", "house {m} on a leaf"),
    "n03495258": ("concert {m} with golden strings", "celtic {m} player"),
    "n03494278": ("blues {m} solo", "{a} {m} in the key of C"),
    "n02108089": ("{a} {m} dog on a walk", "{m} puppy with a brindle coat"),
    "n03584829": ("steam {m} for clothes", "{a} {m} pressing a shirt"),
    "n04592741": ("view of the {m} from seat 23A", "{m} above the clouds"),
    "n01558993": ("{a} {m} pulling a worm from the lawn", "{m} redbreast in spring"),
    "n04336792": ("{a} {m} with a canvas sheet for the wounded", "paramedics lifting {a} {m} onto a gurney", "folding {m} to transport the injured"),
}

# Ambiguous words in a sense that is no class at all (ground truth: no class). The first item is
# the trap word as a matcher sees it.
NON_CLASS_TRAPS: tuple[tuple[str, str], ...] = (
    ("crane", "Ichabod Crane and the headless horseman"),
    ("crane", "origami paper cranes for the wedding"),
    ("crane", "karate kid crane kick"),
    ("ram", "16GB DDR4 RAM memory stick"),
    ("ram", "Dodge Ram 2500 diesel for sale"),
    ("ram", "RAM upgrade for my gaming PC"),
    ("bow", "the bow of the ship cutting through the waves"),
    ("bow", "gift wrapped with a satin bow"),
    ("bow", "the cast take a bow after the show"),
    ("impala", "1964 Chevrolet Impala lowrider"),
    ("impala", "Chevy Impala SS for sale"),
    ("sub", "Italian sub sandwich with provolone"),
    ("sub", "turkey sub, chips and a drink"),
    ("sub", "sub-zero temperatures tonight"),
    ("submarine", "meatball submarine sandwich"),
    ("submarine", "Yellow Submarine by the Beatles"),
    ("sorrel", "wild sorrel leaves in a spring salad"),
    ("sorrel", "creamy sorrel soup"),
    ("tiger", "Tiger Woods lines up a putt"),
    ("tiger", "tiger lily in bloom"),
    ("tiger", "Tiger Balm ointment"),
    ("mouse", "field mouse nibbling a seed"),
    ("mouse", "Mickey Mouse birthday party"),
    ("cardigan", "sunset over Cardigan Bay, Wales"),
    ("duck", "duck tape repair job"),
    ("duck", "Donald Duck cartoon"),
    ("drake", "Drake performing live in Toronto"),
    ("jaguar", "Jaguar F-Type coupe review"),
    ("jaguar", "vintage Jaguar E-Type"),
    ("kite", "flying a kite at the seaside"),
    ("kite", "kite surfing lessons"),
    ("cricket", "cricket match at Lord's"),
    ("cricket", "cricket bat signed by the team"),
    ("boxer", "boxer shorts three-pack"),
    ("boxer", "heavyweight boxer throws a punch"),
    ("iron", "Iron Man cosplay"),
    ("iron", "wrought iron railing"),
    ("harp", "harp seal pup on the ice"),
    ("wing", "buffalo wings with ranch dressing"),
    ("wing", "the west wing of the museum"),
    ("robin", "Batman and Robin"),
    ("robin", "Robin Williams tribute"),
    ("chihuahua", "downtown Chihuahua, Mexico"),
    ("bell", "Taco Bell drive-thru at midnight"),
    ("reel", "highlight reel of the season"),
    ("jean", "Jean-Luc Godard retrospective"),
    ("vacuum", "vacuum sealed coffee beans"),
    ("pickup", "cheesy pickup lines"),
    ("rocker", "punk rocker with a mohawk"),
    ("throne", "Game of Thrones season finale"),
    ("goose", "goose bumps"),
    ("coyote", "Wile E. Coyote cartoon"),
)

_NUMBERS = ("two", "three", "four", "five", "some", "several")
_HTML = ((" and ", " &amp; "), ("'", "&#39;"), ("\u2019", "&#8217;"), (" ", "&nbsp;"))
_BINOMIAL = re.compile(r"[A-Z][a-z]+ [a-z]+(us|um|is|a|ae|ii|i|lar|es|x)$")


def plural(phrase: str, exceptions: dict[str, list[str]] | None = None) -> str:
    """English plural of a noun phrase (its last word): WordNet's irregular plurals first
    (``exceptions``: singular -> plurals), then the regular rules. Words already ending in -s
    (jeans, boxer shorts) are left as they are."""
    head, sep, last = phrase.rpartition(" ")
    low = last.lower()
    if exceptions and low in exceptions and exceptions[low]:
        new = exceptions[low][0]
        new = new[:1].upper() + new[1:] if last[:1].isupper() else new
    elif low.endswith("s") and not low.endswith("ss"):
        new = last
    elif re.search(r"(ss|x|z|ch|sh)$", low):
        new = last + "es"
    elif re.search(r"[^aeiou]y$", low):
        new = last[:-1] + "ies"
    else:
        new = last + "s"
    return f"{head}{sep}{new}"


def caption_forms(name: str, lemmas: list[str]) -> tuple[list[str], np.ndarray]:
    """The surface forms captions use for a class, with their weights: the first WordNet lemma and
    the display name most often, other synonyms sometimes, Latin binomials rarely. Display names with
    a disambiguating bracket, slash or 'or' are not web text and are left out."""
    forms: list[str] = []
    for form in [*lemmas, name]:
        if any(mark in form for mark in ("(", "/", " or ")):
            continue
        if form.casefold() not in {f.casefold() for f in forms}:
            forms.append(form)
    if not forms:
        forms = [lemmas[0] if lemmas else name]
    weights = np.array([3.0 if i == 0 else 2.0 if f == name else 1.0 for i, f in enumerate(forms)])
    weights *= np.array([0.2 if _BINOMIAL.fullmatch(f) else 1.0 for f in forms])
    return forms, weights / weights.sum()


class _Draws:
    """Uniform draws from a numpy Generator, taken from a pre-drawn buffer (one call per 64k)."""

    def __init__(self, seed: int, stream: int) -> None:
        self._rng = np.random.default_rng(np.random.SeedSequence([seed, stream]))
        self._buf: list[float] = []
        self._i = 0

    def u(self) -> float:
        if self._i >= len(self._buf):
            self._buf = self._rng.random(65536).tolist()
            self._i = 0
        self._i += 1
        return self._buf[self._i - 1]

    def chance(self, p: float) -> bool:
        return self.u() < p

    def below(self, n: int) -> int:
        return min(int(self.u() * n), n - 1)

    def pick(self, items: tuple[str, ...] | list[str]) -> str:
        return items[self.below(len(items))]

    def weighted(self, cdf: np.ndarray) -> int:
        return min(int(np.searchsorted(cdf, self.u(), side="right")), cdf.size - 1)


@dataclass(frozen=True)
class _ClassText:
    wnid: str
    forms: list[str]
    cdf: np.ndarray
    plurals: list[str]
    definition: str | None


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


_FILLERS: dict[str, Callable[[_Draws], str]] = {
    "adj": lambda d: d.pick(ADJECTIVES),
    "place": lambda d: d.pick(PLACES),
    "stock": lambda d: d.pick(STOCK),
    "tail": lambda d: d.pick(TAILS),
    "price": lambda d: d.pick(PRICES),
    "imgid": lambda d: f"{d.pick(('IMG_', 'DSC', 'P'))}{1000 + d.below(9000)}",
    "year": lambda d: str(1998 + d.below(27)),
    "mm": lambda d: f"{1 + d.below(12):02d}",
    "dd": lambda d: f"{1 + d.below(28):02d}",
    "k": lambda d: str(1 + d.below(4)),
    "n": lambda d: str(5 + d.below(5000)),
    "hashtag": lambda d: d.pick(HASHTAGS),
    "hashtag2": lambda d: d.pick(HASHTAGS),
    "two": lambda d: d.pick(_NUMBERS),
    "count": lambda d: str(2 + d.below(11)),
    "end": lambda d: d.pick(ENDINGS),
}


class _Slots(dict):
    """Template values: the given ones, and filler words drawn only when a template asks."""

    def __init__(self, d: _Draws, given: dict[str, str]) -> None:
        super().__init__(given)
        self._d = d

    def __missing__(self, key: str) -> str:
        value = self[key] = _FILLERS[key](self._d)
        return value


def _fill(template: str, d: _Draws, slots: dict[str, str]) -> str:
    return template.format_map(_Slots(d, slots))


def _noisy(text: str, d: _Draws) -> str:
    """Web noise: casing, trailing punctuation, doubled spaces, HTML entities, odd Unicode."""
    roll = d.u()
    if roll < 0.25:
        text = text.lower()
    elif roll < 0.35:
        text = text.title()
    elif roll < 0.39:
        text = text.upper()
    elif roll < 0.7:
        text = text[:1].upper() + text[1:]
    if d.chance(0.3):
        text += d.pick(ENDINGS)
    if d.chance(0.03):
        text = text.replace(" ", "  ", 1)
    if d.chance(0.04):
        old, new = _HTML[d.below(len(_HTML))]
        text = text.replace(old, new, 1)
    if d.chance(0.02):
        text = f"&quot;{text}&quot;"
    if d.chance(0.02):
        text = text.replace("'", "\u2019")
    return text


def _mention(ct: _ClassText, d: _Draws) -> tuple[str, str]:
    """A singular and a plural surface form of one class (same synonym)."""
    i = d.weighted(ct.cdf)
    form, many = ct.forms[i], ct.plurals[i]
    if d.chance(0.04) and " " in form:  # hyphen/space variants, as in 'bow-tie'
        form, many = form.replace(" ", "-"), many.replace(" ", "-")
    return form, many


def _tag(form: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", form.lower())


def _class_caption(ct: _ClassText, second: _ClassText | None, d: _Draws) -> tuple[str, str, str, str | None]:
    m, ms = _mention(ct, d)
    slots = {"m": m, "ms": ms, "a": _article(m), "mtag": _tag(m)}
    if second is not None:
        m2, m2s = _mention(second, d)
        slots |= {"m2": m2, "m2s": m2s, "a2": _article(m2)}
        caption = _fill(d.pick(TWO_CLASS_TEMPLATES), d, slots)
    elif ct.wnid in CONTEXT and d.chance(0.5):
        caption = _fill(d.pick(CONTEXT[ct.wnid]), d, slots)
    elif d.chance(_PLURAL_FRACTION):
        caption = _fill(d.pick(PLURAL_TEMPLATES), d, slots)
    else:
        caption = _fill(d.pick(SINGLE_TEMPLATES), d, slots)
    caption = _noisy(caption, d)

    roll = d.u()
    if roll < 0.5:
        title = _fill(d.pick(("{m}", "{adj} {m}", "{m} {year}", "{m}{end}", "my {m}")), d, slots)
        title = title[:1].upper() + title[1:]
    elif roll < 0.8:
        title = _fill("{imgid}", d, slots)
    else:
        title = _fill(d.pick(NO_CLASS_TEMPLATES), d, slots)
    tags = [d.pick(GENERIC_TAGS) for _ in range(2 + d.below(4))]
    if d.chance(0.7):
        tags.insert(d.below(len(tags) + 1), m.lower())
    roll = d.u()
    if roll < 0.35:
        description = None
    elif roll < 0.55 and ct.definition:
        description = f"{m[:1].upper()}{m[1:]}: {ct.definition}."
    elif roll < 0.8:
        description = _fill(d.pick(("Spotted this {m} {place}.", "Our {m}, {year}.", "{A} {m} I saw {place}. {tail}")), d, slots | {"A": _article(m).title()})
    else:
        description = f"Taken {d.pick(PLACES)} with {d.pick(CAMERAS)}."
    return caption, title, ", ".join(_dedupe_tags(tags)), description


def _dedupe_tags(tags: list[str]) -> list[str]:
    return list(dict.fromkeys(tags))


def _free_caption(text: str | None, d: _Draws) -> tuple[str, str, str, str | None]:
    caption = _noisy(text if text is not None else _fill(d.pick(NO_CLASS_TEMPLATES), d, {}), d)
    title = _fill(d.pick(("{imgid}", "untitled", "{year}", "{adj} day")), d, {})
    tags = ", ".join(_dedupe_tags([d.pick(GENERIC_TAGS) for _ in range(1 + d.below(4))]))
    description = None if d.chance(0.5) else f"Taken {d.pick(PLACES)} with {d.pick(CAMERAS)}."
    return caption, title, tags, description


def filler_texts() -> list[str]:
    """Every fixed text the captions draw from besides class names (for checks that none of it
    names an ImageNet class by accident); trap rows are returned with their trap word removed."""
    texts = [*ADJECTIVES, *PLACES, *STOCK, *TAILS, *HASHTAGS, *GENERIC_TAGS, *PRICES, *ENDINGS, *CAMERAS]
    for group in (SINGLE_TEMPLATES, PLURAL_TEMPLATES, TWO_CLASS_TEMPLATES, NO_CLASS_TEMPLATES, *CONTEXT.values()):
        texts += [re.sub(r"\{[a-z0-9]+\}", " ", t) for t in group]
    texts += [re.sub(rf"(?i)\b{re.escape(word)}\w*", " ", text) for word, text in NON_CLASS_TRAPS]
    return texts


# ----------------------------------------------------------------------------------------------
# the corpus
# ----------------------------------------------------------------------------------------------


def _captions_table(
    root: Path, vocab: pl.DataFrame, counts: np.ndarray, *, seed: int
) -> tuple[pl.DataFrame, np.ndarray]:
    """The caption rows (final paths under ``root``) and each row's image label (-1: none)."""
    from curate.wordnet import plural_exceptions

    exceptions = plural_exceptions()
    texts = []
    for row in vocab.iter_rows(named=True):
        forms, weights = caption_forms(row["name"], row["lemmas"])
        plurals = [f if _BINOMIAL.fullmatch(f) else plural(f, exceptions) for f in forms]
        texts.append(_ClassText(row["wnid"], forms, np.cumsum(weights), plurals, row["definition"]))

    class_total = int(counts.sum())
    n_free = round(class_total * _NO_CLASS_FRACTION)
    n_trap = round(class_total * _TRAP_FRACTION)
    kinds = np.concatenate([np.repeat(np.arange(counts.size), counts), np.full(n_free, -1), np.full(n_trap, -2)])
    kinds = kinds[np.random.default_rng(np.random.SeedSequence([seed, 1])).permutation(kinds.size)]
    popularity = np.cumsum(counts / counts.sum())

    d = _Draws(seed, 4)
    root_text = root.as_posix()  # string paths: pathlib costs seconds over 25k rows
    cols: dict[str, list[str | None]] = {c: [] for c in (*SOURCE_COLUMNS, *EXTRA_COLUMNS)}
    for i, kind in enumerate(kinds.tolist()):
        uid = f"demo-{i:06d}"
        path = f"{root_text}/images/{i // SHARD_SIZE:03d}/{uid}.jpg"
        wnid = wnid2 = trap = None
        if kind >= 0:
            second = None
            if d.chance(_TWO_CLASS_FRACTION):
                j = d.weighted(popularity)
                j = j if j != kind else (j + 1) % counts.size
                second, wnid2 = texts[j], texts[j].wnid
            caption, title, tags, description = _class_caption(texts[kind], second, d)
            wnid = texts[kind].wnid
        elif kind == -2:
            trap, text = NON_CLASS_TRAPS[d.below(len(NON_CLASS_TRAPS))]
            caption, title, tags, description = _free_caption(text, d)
        else:
            caption, title, tags, description = _free_caption(None, d)
        for key, value in (
            ("uid", uid), ("caption", caption), ("url", "file://" + quote(path)), ("path", path),
            ("title", title), ("tags", tags), ("description", description), ("wnid", wnid),
            ("wnid2", wnid2), ("trap", trap),
        ):
            cols[key].append(value)
    table = pl.DataFrame(cols, schema={c: pl.Utf8 for c in cols})
    return table, np.where(kinds >= 0, kinds, -1)


def _save_batch(dest: Path, start: int, pixels: np.ndarray) -> int:
    for offset, image in enumerate(pixels):
        i = start + offset
        folder = f"{dest}/images/{i // SHARD_SIZE:03d}"
        if i % SHARD_SIZE == 0 or offset == 0:
            os.makedirs(folder, exist_ok=True)
        Image.fromarray(image).save(f"{folder}/demo-{i:06d}.jpg", format="JPEG", quality=JPEG_QUALITY)
    return len(pixels)


def _write_images(dest: Path, labels: np.ndarray, styles: ClassStyles, *, seed: int) -> None:
    """Render batch after batch while threads encode and write the previous ones (JPEG encoding
    and file writes release the GIL; tens of thousands of small files are mostly I/O)."""
    from concurrent.futures import ThreadPoolExecutor

    from curate.ui import make_progress

    with make_progress(transient=True) as progress, ThreadPoolExecutor(max_workers=3) as pool:
        task = progress.add_task("demo images", total=labels.size)
        pending = []
        for batch, start in enumerate(range(0, labels.size, CHUNK)):
            pixels = render_images(labels[start : start + CHUNK], styles, seed=seed, batch=batch)
            pending.append(pool.submit(_save_batch, dest, start, pixels))
            while len(pending) > 4 or (pending and pending[0].done()):  # bounded memory; errors surface here
                progress.advance(task, pending.pop(0).result())
        for future in pending:
            progress.advance(task, future.result())


def generate_demo(dest: Path, final_root: Path, *, seed: int = DEMO_SEED, scale: float = 1.0) -> dict:
    """Write the whole corpus into ``dest`` (paths inside it name ``final_root``, where the folder
    will be renamed to); return the figures written to ``meta.json``."""
    started = time.perf_counter()
    vocab = demo_vocab()
    counts = class_counts(vocab.height, seed=seed, scale=scale)
    styles = class_styles(vocab.height, seed=seed)
    table, labels = _captions_table(final_root, vocab, counts, seed=seed)

    dest.mkdir(parents=True, exist_ok=True)
    _write_images(dest, labels, styles, seed=seed)
    # fixed codec and level, no timestamps: same seed, same bytes
    table.write_parquet(dest / "captions.parquet", compression="zstd", compression_level=3, statistics=True)
    vocab.write_parquet(dest / "vocab.parquet", compression="zstd", compression_level=3, statistics=True)

    meta = {
        "generator": "curate.demo",
        "version": GENERATOR_VERSION,
        "synthetic": True,
        "seed": seed,
        "scale": scale,
        "image_size": IMAGE_SIZE,
        "classes": int(vocab.height),
        "pairs": int(table.height),
        "class_pairs": int(counts.sum()),
        "no_class_pairs": int(table["wnid"].null_count()),
        "trap_pairs": int(table["trap"].is_not_null().sum()),
        "two_class_pairs": int(table["wnid2"].is_not_null().sum()),
        "head": int(counts.max()),
        "median": float(np.median(counts)),
        "tail": int(counts.min()),
        "gini": round(gini(counts), 4),
        "top10_share": round(top_share(counts), 4),
        "generation_seconds": round(time.perf_counter() - started, 2),
    }
    (dest / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta


def _is_complete(root: Path, *, seed: int, scale: float) -> bool:
    marker, meta_path = root / ".complete", root / "meta.json"
    if not marker.is_file() or not meta_path.is_file():
        return False
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        meta.get("version") == GENERATOR_VERSION
        and meta.get("seed") == seed
        and math.isclose(float(meta.get("scale", -1)), scale)
    )


@contextlib.contextmanager
def _build_lock(root: Path) -> Iterator[None]:
    """One builder per folder across processes; the others wait, then find it complete."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "a+b") as handle:
        try:
            import fcntl
        except ImportError:  # no flock (Windows): concurrent builds still end whole, just twice
            yield
            return
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _remove_stale_temporaries(root: Path, *, older_than_s: float = 3600.0) -> None:
    """Drop what a killed build left (``atomic_path``'s hidden ``.NAME.*.tmp`` folders); a build
    takes seconds, so one untouched for an hour is dead. Called under the build lock."""
    now = time.time()
    for stale in root.parent.glob(f".{root.name}.*.tmp"):
        touched = max((p.stat().st_mtime for p in (stale, stale / "images") if p.exists()), default=now)
        if stale.is_dir() and now - touched > older_than_s:
            shutil.rmtree(stale, ignore_errors=True)


def ensure_demo(
    root: Path | None = None, *, force: bool = False, seed: int = DEMO_SEED, scale: float = 1.0
) -> Path:
    """The demo corpus folder, generated first if it is missing, incomplete or from another
    generator version/seed/scale (or when ``force``). ``scale`` multiplies every class count
    (tests use small ones); the default build has 119 classes and ~24k pairs.
    """
    root = Path(root) if root is not None else default_root(seed=seed, scale=scale)
    root = root.expanduser().resolve()
    if not force and _is_complete(root, seed=seed, scale=scale):
        return root
    if root.exists() and not root.is_dir():
        raise CurateError(f"demo folder {root} exists and is not a folder")
    if not scale > 0:
        raise CurateError(f"demo scale must be > 0, got {scale}")
    from curate.util import atomic_path

    with _build_lock(root):
        if not force and _is_complete(root, seed=seed, scale=scale):
            return root  # another process built it while this one waited
        _remove_stale_temporaries(root)
        with atomic_path(root) as tmp:
            generate_demo(tmp, root, seed=seed, scale=scale)
            (tmp / ".complete").write_text(f"curate.demo v{GENERATOR_VERSION}\n", encoding="utf-8")
    return root
