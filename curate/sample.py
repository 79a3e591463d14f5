"""Controlled subsets: how many samples each class gets, and which rows they are.

Owns the target-count profiles (a registry: ``exp``, ``pareto``, ``step``, ``natural``,
``balanced``, ``match:FILE``, ``metaclip:T``), the head/tail order of classes, scaling
(``max_per_class`` / ``total`` / ``fraction``), tail trimming, the shortfall check, the stable
per-row random key and the draw itself.

How a draw works, and why it streams: the pool is reduced to one small row per matched caption —
``row`` (position in the source), ``label``, ``key`` — where ``key`` is a seeded hash of the
caption's ``uid`` (:func:`stable_keys`, defined on the uid's UTF-8 bytes so it never changes with a
library version). Each class then takes the rows with the smallest keys: the eval rows first, the
training rows next. That is a uniform random sample without replacement per class, independent of
the source's row order, reproducible from (uids, labels, seed) alone, and the same seed always
nests: a smaller target takes a prefix of a larger one's rows.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from curate.errors import CurateError

# ---------------------------------------------------------------------------------------------
# the stable random key

_FNV_PRIME = np.uint64(0x100000001B3)
_MASK = (1 << 64) - 1


def _salt(seed: int, salt: str) -> int:
    digest = hashlib.blake2b(f"{seed}\x1f{salt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _splitmix(h: np.ndarray) -> np.ndarray:
    # the splitmix64 finaliser: FNV alone mixes its last bytes poorly into the high bits
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def stable_keys(values: pl.Series, seed: int, salt: str = "") -> np.ndarray:
    """A uint64 per string: FNV-1a over its UTF-8 bytes from a seeded basis, then splitmix64.

    Defined on bytes alone (not polars' ``hash``, whose values may change between versions), and
    vectorised over byte positions, so a batch costs (longest string) numpy passes. Nulls hash like
    the empty string.
    """
    n = len(values)
    basis = np.uint64(_salt(seed, salt))
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    arr = values.cast(pl.Utf8).fill_null("").to_arrow()
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    arr = arr.cast(pa.large_string())
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int64)[arr.offset : arr.offset + n + 1]
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    starts = offsets[:-1]
    lengths = (offsets[1:] - starts).astype(np.int64)
    # longest first, so the strings still being hashed at byte j are always a prefix
    order = np.argsort(-lengths, kind="stable")
    s_starts, s_len = starts[order], lengths[order]
    h = np.full(n, basis, dtype=np.uint64)
    active = n
    for j in range(int(s_len[0]) if n else 0):
        while active and s_len[active - 1] <= j:
            active -= 1
        h[:active] ^= data[s_starts[:active] + j].astype(np.uint64)
        h[:active] *= _FNV_PRIME
    h ^= s_len.astype(np.uint64)
    out = np.empty(n, dtype=np.uint64)
    out[order] = _splitmix(h)
    return out


def stable_choice(values: pl.Series, seed: int, salt: str, n: int) -> np.ndarray:
    """A reproducible index in ``0..n-1`` per string (for per-row random templates, lemmas)."""
    return (stable_keys(values, seed, salt) % np.uint64(max(n, 1))).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# profiles: the shape of the target distribution, head first


@dataclass(frozen=True)
class ProfileInput:
    """What a profile sees: classes in head-first order."""

    imbalance: float  # R = max/min where the profile has one
    head_fraction: float  # for ``step``
    available: np.ndarray  # rows each class can give to training (pool minus eval), head first
    names: list[str]  # class names, head first
    wnids: list[str | None]
    arg: str | None  # the text after ``:`` (``match:FILE``, ``metaclip:T``)
    vocab_labels: list[int] | None = None  # each class's index in its vocabulary, head first


ProfileFn = Callable[[ProfileInput], np.ndarray]
PROFILES: dict[str, ProfileFn] = {}
PROFILE_HELP: dict[str, str] = {}


def profile(name: str, help: str) -> Callable[[ProfileFn], ProfileFn]:
    """Register a profile: a function returning each class's share of the head (head = 1.0)."""

    def register(fn: ProfileFn) -> ProfileFn:
        PROFILES[name] = fn
        PROFILE_HELP[name] = help
        return fn

    return register


def _positions(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64) / max(n - 1, 1)


@profile("exp", "n_i = n_max · R^(-i/(C-1)): the long-tail benchmark convention (max/min = R)")
def _exp(p: ProfileInput) -> np.ndarray:
    return np.power(float(p.imbalance), -_positions(len(p.available)))


@profile("pareto", "power law n_i = n_max · (i+1)^(-a), a = ln R / ln C (max/min = R)")
def _pareto(p: ProfileInput) -> np.ndarray:
    n = len(p.available)
    a = math.log(p.imbalance) / math.log(n) if n > 1 else 0.0
    return np.power(np.arange(1, n + 1, dtype=np.float64), -a)


@profile("step", "the head fraction of classes at n_max, the rest at n_max / R")
def _step(p: ProfileInput) -> np.ndarray:
    n = len(p.available)
    head = min(n, max(1, round(p.head_fraction * n)))
    shape = np.full(n, 1.0 / float(p.imbalance))
    shape[:head] = 1.0
    return shape


@profile("balanced", "every class the same count")
def _balanced(p: ProfileInput) -> np.ndarray:
    return np.ones(len(p.available))


@profile("natural", "the source's own counts (scaled by --fraction / --total / --max-per-class)")
def _natural(p: ProfileInput) -> np.ndarray:
    top = p.available.max() if len(p.available) else 0
    return p.available / top if top else np.zeros(len(p.available))


@profile("match", "match:FILE follows a `class<TAB>count` reference (by name, else wnid, else position), scaled; FILE may name a table the reference study published (laion400m, cc12m, ...)")
def _match(p: ProfileInput) -> np.ndarray:
    from curate.freq import read_reference

    if not p.arg:
        raise CurateError("--profile match needs a reference: match:FILE or match:NAME (laion400m, laion2b, cc12m, yfcc15m, metaclip400m, incaps, laionet-0.7, laionet-0.82)")
    ref = read_reference(p.arg)
    lookup = dict(zip(ref["name"].to_list(), ref["count"].to_list()))
    if all(n in lookup for n in p.names):
        counts = [lookup[n] for n in p.names]
    elif all(w in lookup for w in p.wnids):
        counts = [lookup[w] for w in p.wnids]
    elif _aligned_by_position(ref, p):
        # the reference study's tables are in ImageNet order; a few names differ in spelling
        counts = [ref["count"][i] for i in p.vocab_labels or []]
    else:
        missing = [n for n in p.names if n not in lookup]
        raise CurateError(
            f"--profile match:{p.arg}: {len(missing)} of {len(p.names)} classes are not in the reference "
            f"(e.g. {missing[0]!r}); the file's names (or wnids) must cover the classes"
        )
    counts = np.asarray(counts, dtype=np.float64)
    return counts / counts.max() if counts.max() > 0 else counts


def _aligned_by_position(ref: pl.DataFrame, p: ProfileInput) -> bool:
    if not p.vocab_labels or max(p.vocab_labels) >= ref.height:
        return False
    ref_names = ref["name"].to_list()
    same = sum(ref_names[i] == n for i, n in zip(p.vocab_labels, p.names))
    return same >= 0.9 * len(p.names)


@profile("metaclip", "metaclip:T keeps min(count, T) per class: MetaCLIP's expected count, made exact")
def _metaclip(p: ProfileInput) -> np.ndarray:
    try:
        t = int(p.arg or "")
    except ValueError:
        raise CurateError(f"--profile metaclip:{p.arg}: T must be a positive integer (e.g. metaclip:20000)") from None
    if t < 1:
        raise CurateError(f"--profile metaclip:{t}: T must be a positive integer")
    capped = np.minimum(p.available.astype(np.float64), t)
    return capped / capped.max() if capped.max() > 0 else capped


def _entry_t(arg: str | None) -> int:
    try:
        t = int(arg or "")
    except ValueError:
        t = 0
    if t < 1:
        raise CurateError(f"--profile metaclip-entry:{arg}: t must be a positive integer (e.g. metaclip-entry:20000)")
    return t


@profile(
    "metaclip-entry",
    "metaclip-entry:t is MetaCLIP's balancing: a caption stays with probability 1 - prod(1 - min(1, t/count(c))) "
    "over the classes c it names (classes as MetaCLIP's entries); what stays keeps its own distribution",
)
def _metaclip_entry(p: ProfileInput) -> np.ndarray:
    _entry_t(p.arg)
    return _natural(p)  # the rows were thinned before the targets (metaclip_entry_keep)


def metaclip_entry_keep(pool: pl.DataFrame, t_arg: str | None) -> pl.DataFrame:
    """The rows of a pool (``row, key`` + ``label``/``labels``, before one class is chosen per row)
    that MetaCLIP's entry-level balancing keeps: each class c a caption names selects it with
    probability min(1, t / count(c)) (count: the captions naming c in this pool), and the caption
    stays when any of its classes selects it. The coin is the row's seeded key (its top 53 bits as
    a uniform number in [0, 1)), so the choice is reproducible and does not depend on row order."""
    t = _entry_t(t_arg)
    lists = pool.select(
        "row",
        pl.when(pl.col("label").is_not_null()).then(pl.concat_list(pl.col("label"))).otherwise(pl.col("labels")).alias("_l")
        if "label" in pool.columns
        else pl.col("labels").alias("_l"),
    )
    pairs = lists.explode("_l").drop_nulls("_l")
    counts = pairs.group_by("_l").agg(pl.len().alias("_n"))
    miss = (
        pairs.join(counts, on="_l")
        .with_columns((1.0 - (float(t) / pl.col("_n")).clip(upper_bound=1.0)).alias("_miss"))
        .group_by("row")
        .agg(pl.col("_miss").product().alias("_miss"))
    )
    u = (pool["key"].to_numpy() >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    coin = pl.DataFrame({"row": pool["row"], "_u": u})
    keep = coin.join(miss, on="row", how="left").filter(pl.col("_u") < 1.0 - pl.col("_miss").fill_null(1.0))
    return pool.filter(pl.col("row").is_in(keep["row"].implode()))


def split_profile(spec: str) -> tuple[str, str | None]:
    name, sep, arg = spec.partition(":")
    if name not in PROFILES:
        raise CurateError(f"--profile {spec!r} is not one of {', '.join(PROFILES)} (match:FILE, metaclip:T)")
    return name, (arg if sep else None)


# ---------------------------------------------------------------------------------------------
# head order and target counts


def head_order(classes: pl.DataFrame, *, order: str, seed: int) -> np.ndarray:
    """Positions of ``classes`` rows, head first.

    ``natural``: by pool count, most first (ties: lower label); ``random``: a seeded shuffle; else a
    file listing class names or wnids one a line, head first (every class exactly once).
    """
    n = classes.height
    if order == "natural":
        return np.lexsort((classes["label"].to_numpy(), -classes["pool"].to_numpy()))
    if order == "random":
        keys = stable_keys(classes["wnid"].fill_null("").cast(pl.Utf8) + "\x1f" + classes["name"], seed, "order")
        return np.lexsort((classes["label"].to_numpy(), keys))
    path = Path(order)
    if not path.is_file():
        raise CurateError(f"--order {order!r} is neither natural, random nor an existing file")
    wanted = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    names = classes["name"].to_list()
    wnids = classes["wnid"].to_list()
    index = {w: i for i, w in enumerate(wnids) if w} | {nm: i for i, nm in enumerate(names)}
    positions: list[int] = []
    for lineno, item in enumerate(wanted, 1):
        if item not in index:
            raise CurateError(f"--order {path}, line {lineno}: {item!r} is not a class of this build")
        positions.append(index[item])
    if sorted(positions) != list(range(n)):
        missing = sorted(set(range(n)) - set(positions))
        detail = f"{names[missing[0]]!r} is missing" if missing else "a class is listed twice"
        raise CurateError(f"--order {path} must list every one of the {n} classes exactly once; {detail}")
    return np.asarray(positions, dtype=np.int64)


def parse_trim_tail(spec: str | None) -> tuple[int, int] | None:
    if spec in (None, ""):
        return None
    k, sep, c = str(spec).partition(":")
    try:
        kk, cc = int(k), int(c)
    except ValueError:
        kk = cc = -1
    if not sep or kk < 0 or cc < 0:
        raise CurateError(f"--trim-tail {spec!r}: expected K:C with whole numbers K, C >= 0 (e.g. 50:1)")
    return kk, cc


def _round(x: np.ndarray) -> np.ndarray:
    # half up, with a hair of slack so 1000 · 100^-1 = 9.999999999 still lands on 10
    return np.floor(x + 0.5 + 1e-9).astype(np.int64)


def check_target_options(
    *,
    profile: str,
    imbalance: float,
    head_fraction: float,
    max_per_class: int | None,
    total: int | None,
    fraction: float | None,
    trim_tail: str | None,
    eval_per_class: int,
) -> None:
    """Raise ``CurateError`` naming the option when the target options cannot make sense (checked
    before any data is read)."""
    if sum(x is not None for x in (max_per_class, total, fraction)) > 1:
        raise CurateError("give at most one of --max-per-class, --total and --fraction")
    if imbalance is None or not math.isfinite(imbalance) or imbalance < 1:
        raise CurateError(f"--imbalance {imbalance}: the max/min ratio must be a number >= 1")
    if not 0 < head_fraction <= 1:
        raise CurateError(f"--head-fraction {head_fraction}: must be in (0, 1]")
    if max_per_class is not None and max_per_class < 1:
        raise CurateError(f"--max-per-class {max_per_class}: must be at least 1")
    if total is not None and total < 1:
        raise CurateError(f"--total {total}: must be at least 1")
    if fraction is not None and not 0 < fraction <= 1:
        raise CurateError(f"--fraction {fraction}: must be in (0, 1]")
    if eval_per_class < 0:
        raise CurateError(f"--eval-per-class {eval_per_class}: must be >= 0")
    split_profile(profile)
    parse_trim_tail(trim_tail)


def target_counts(
    classes: pl.DataFrame,
    *,
    profile: str = "exp",
    imbalance: float = 1.0,
    head_fraction: float = 0.5,
    order: str = "natural",
    seed: int = 0,
    max_per_class: int | None = None,
    total: int | None = None,
    fraction: float | None = None,
    trim_tail: str | None = None,
    eval_per_class: int = 0,
) -> pl.DataFrame:
    """``classes`` (``label, name, wnid, pool``) plus ``head_rank`` (0 = head), ``eval_target`` and
    ``target`` (training rows).

    The profile gives each class a share of the head count ``n_max``. ``n_max`` is
    ``max_per_class`` when given; for ``total`` it is chosen so the targets sum to exactly ``total``
    (largest remainders); otherwise it is the largest the pool allows (every class's target within
    what it has after its eval rows), rounded down so the tail count is a whole number and the
    max/min ratio holds exactly; ``fraction`` then scales it. Trimming caps the ``K`` last classes
    of the order at ``C``. Targets may exceed the pool: :func:`shortfall` reports that.
    """
    check_target_options(
        profile=profile, imbalance=imbalance, head_fraction=head_fraction, max_per_class=max_per_class,
        total=total, fraction=fraction, trim_tail=trim_tail, eval_per_class=eval_per_class,
    )
    if classes.height == 0:
        raise CurateError("no classes to sample: the class selection is empty")
    name, arg = split_profile(profile)
    trim = parse_trim_tail(trim_tail)

    pos = head_order(classes, order=order, seed=seed)
    pool = classes["pool"].to_numpy().astype(np.int64)[pos]
    available = np.maximum(pool - eval_per_class, 0)
    names = classes["name"].to_list()
    wnids = classes["wnid"].to_list()
    shape = PROFILES[name](
        ProfileInput(
            imbalance=float(imbalance),
            head_fraction=float(head_fraction),
            available=available,
            names=[names[i] for i in pos],
            wnids=[wnids[i] for i in pos],
            arg=arg,
            vocab_labels=[int(x) for x in classes["vocab_label"].to_numpy()[pos]] if "vocab_label" in classes.columns else None,
        )
    ).astype(np.float64)

    if max_per_class is not None:
        target = _round(max_per_class * shape)
    elif total is not None:
        if shape.sum() <= 0:
            raise CurateError("--total: the profile gives every class a zero share")
        exact = total * shape / shape.sum()
        target = np.floor(exact + 1e-9).astype(np.int64)
        rest = total - int(target.sum())
        if rest > 0:  # largest remainders, head first on ties
            frac = exact - target
            target[np.lexsort((np.arange(len(frac)), -frac))[:rest]] += 1
    else:
        # classes the pool has nothing for do not drag every target to zero: they fall short
        # (and say so) unless --allow-shortfall leaves them empty
        positive = (shape > 0) & (available > 0)
        n_max = float(np.min(available[positive] / shape[positive])) if positive.any() else 0.0
        s_min = float(shape[positive].min()) if positive.any() else 1.0
        tail = math.floor(n_max * s_min + 1e-9)
        if tail >= 1 and name not in ("natural", "metaclip", "metaclip-entry"):
            n_max = tail / s_min  # the tail a whole number, the ratio exact
        if fraction is not None:
            n_max *= fraction
        target = _round(n_max * shape)
    if trim is not None:
        k, c = trim
        k = min(k, len(target))  # a sweep's K=500 on a 119-class vocabulary caps every class
        if k:
            target[len(target) - k :] = np.minimum(target[len(target) - k :], c)

    rank = np.empty(len(pos), dtype=np.int32)
    rank[pos] = np.arange(len(pos), dtype=np.int32)
    out_target = np.empty(len(pos), dtype=np.int64)
    out_target[pos] = target
    return classes.with_columns(
        pl.Series("head_rank", rank, dtype=pl.Int32),
        pl.lit(eval_per_class, dtype=pl.Int64).alias("eval_target"),
        pl.Series("target", out_target, dtype=pl.Int64),
    )


def shortfall(targets: pl.DataFrame) -> pl.DataFrame:
    """Classes whose pool cannot give ``eval_target + target`` rows: ``name, pool, needed, short``."""
    return (
        targets.with_columns((pl.col("eval_target") + pl.col("target")).alias("needed"))
        .with_columns((pl.col("needed") - pl.col("pool")).alias("short"))
        .filter(pl.col("short") > 0)
        .sort(["short", "label"], descending=[True, False])
        .select("label", "name", "pool", "eval_target", "target", "needed", "short")
    )


class ShortfallError(CurateError):
    """The pool cannot meet the targets; ``table`` says which classes, by how much."""

    def __init__(self, table: pl.DataFrame) -> None:
        worst = ", ".join(f"{n} {p}/{d}" for n, p, d in table.head(3).select("name", "pool", "needed").iter_rows())
        absent = int((table["pool"] == 0).sum())
        hint = "lower the targets (--max-per-class, --total, --fraction) or pass --allow-shortfall"
        if absent:  # no target is low enough for a class with no row in the pool
            hint = (
                f"{'all' if absent == table.height else absent} of them have no row in the pool (the source never names "
                "them, or the caption mode or a filter left none): keep to the classes it has (--classes FILE, a name "
                "or wnid a line) or pass --allow-shortfall"
                + ("; for the others, lower the targets (--max-per-class, --total, --fraction)" if absent < table.height else "")
            )
        super().__init__(
            f"{table.height} class(es) fall short of their targets (pool/needed: {worst}"
            f"{', ...' if table.height > 3 else ''}); nothing was written",
            hint=hint,
        )
        self.table = table


def clip_to_pool(targets: pl.DataFrame) -> pl.DataFrame:
    """``--allow-shortfall``: each class keeps what exists (eval rows first), ``asked`` remembers the target."""
    return targets.with_columns(
        pl.col("target").alias("asked"),
        pl.min_horizontal("eval_target", "pool").alias("eval_target"),
    ).with_columns(pl.min_horizontal("target", pl.col("pool") - pl.col("eval_target")).alias("target"))


# ---------------------------------------------------------------------------------------------
# the pool and the draw


def single_labels(pool: pl.DataFrame) -> pl.DataFrame:
    """``row, key`` + ``labels`` (a list per row) -> ``row, label, key``: one class per row.

    The pool may also come compact, as the build's first pass writes it: ``label`` for rows with
    exactly one class and ``labels`` only for rows with several (null elsewhere), so ten million
    rows do not carry ten million lists. A row naming several classes (label policy ``all``) goes
    to the rarest of them in this pool (ties: lower label), so tail classes keep every caption they
    have; rows without a class leave.
    """
    if "label" not in pool.columns:
        n = pl.col("labels").list.len()
        pool = pool.select(
            "row",
            "key",
            pl.when(n == 1).then(pl.col("labels").list.first()).alias("label"),
            pl.when(n > 1).then(pl.col("labels")).alias("labels"),
        )
    pool = pool.filter(pl.col("label").is_not_null() | pl.col("labels").is_not_null())
    label = pool["label"].cast(pl.Int32).fill_null(-1).to_numpy().copy()
    is_multi = pool["labels"].is_not_null().to_numpy()
    if is_multi.any():
        pos = np.flatnonzero(is_multi)
        pairs = (
            pl.DataFrame({"pos": pos, "labels": pool["labels"].filter(pl.Series(is_multi))})
            .explode("labels")
            .rename({"labels": "label"})
            .with_columns(pl.col("label").cast(pl.Int32))
        )
        counts = (
            pl.concat([pl.DataFrame({"label": label[label >= 0]}, schema={"label": pl.Int32}), pairs.select("label")])
            .group_by("label")
            .agg(pl.len().alias("n"))
        )
        chosen = (
            pairs.join(counts, on="label", how="left")
            .sort(["pos", "n", "label"])
            .group_by("pos", maintain_order=True)
            .first()
        )
        label[chosen["pos"].to_numpy()] = chosen["label"].to_numpy()
    # row and key are shared with the pool, not copied: only the label column is new
    return pl.DataFrame({"row": pool["row"], "label": pl.Series(label, dtype=pl.Int32), "key": pool["key"]})


def draw(pool: pl.DataFrame, targets: pl.DataFrame) -> pl.DataFrame:
    """``row, label, key`` + per-label ``eval_target, target`` -> the chosen ``row, label, key, split``.

    Per class, rows in key order (ties: row): the first ``eval_target`` are ``eval``, the next
    ``target`` are ``train``. One ``lexsort`` over three numpy columns: the pool can be tens of
    millions of rows, and this keeps the draw to a few bytes per row.
    """
    label = pool["label"].cast(pl.Int64).to_numpy()
    key = pool["key"].to_numpy()
    row = pool["row"].to_numpy()
    size = int(max(label.max(initial=-1), targets["label"].max() or 0)) + 1
    want_eval = np.zeros(size, dtype=np.int64)
    want_all = np.zeros(size, dtype=np.int64)
    t_label = targets["label"].cast(pl.Int64).to_numpy()
    want_eval[t_label] = targets["eval_target"].to_numpy()
    want_all[t_label] = want_eval[t_label] + targets["target"].to_numpy()
    order = np.lexsort((row, key, label))
    sorted_label = label[order]
    first = np.searchsorted(sorted_label, np.arange(size), side="left")
    rank = np.arange(len(order)) - first[sorted_label]
    keep = rank < want_all[sorted_label]
    chosen = order[keep]
    is_eval = rank[keep] < want_eval[sorted_label[keep]]
    return pl.DataFrame(
        {
            "row": pl.Series(row[chosen], dtype=pool.schema["row"]),
            "label": pl.Series(label[chosen], dtype=pl.Int32),
            "key": pl.Series(key[chosen], dtype=pl.UInt64),
            "split": pl.Series(np.where(is_eval, "eval", "train"), dtype=pl.Utf8),
        }
    )


def each_label(pool: pl.DataFrame) -> pl.DataFrame:
    """Label policy ``each``: ``row, key`` + ``label``/``labels`` -> ``row, label, key`` with one
    row per (caption, class): a caption naming two classes is a sample of each (the study's
    YFCC-15M-Cls and CC-12M-Cls). Both copies share the row's key, so each class's draw stays a
    uniform sample of its own captions."""
    if "label" not in pool.columns:
        return pool.select("row", "key", pl.col("labels").alias("label")).explode("label").drop_nulls("label").select(
            "row", pl.col("label").cast(pl.Int32), "key"
        )
    single = pool.filter(pl.col("label").is_not_null()).select("row", pl.col("label").cast(pl.Int32), "key")
    multi = (
        pool.filter(pl.col("labels").is_not_null())
        .select("row", "key", pl.col("labels").alias("label"))
        .explode("label")
        .select("row", pl.col("label").cast(pl.Int32), "key")
    )
    return pl.concat([single, multi]).sort("row", "label")


def sample_unlabelled(rows: pl.DataFrame, fraction: float | None) -> pl.DataFrame:
    """``--unmatched-fraction``: of the rows naming no class (``row, key``), the ``round(fraction · n)``
    with the smallest keys (all of them for None). Like every draw here it nests: a smaller
    fraction keeps a subset of a larger one's rows."""
    if fraction is None:
        return rows
    n = int(_round(np.array([fraction * rows.height]))[0])
    return rows.sort("key", "row").head(n).sort("row")


SAMPLINGS = ("classes", "rows")


def sample_rows(picked: pl.DataFrame, *, total: int | None, fraction: float | None, min_per_class: int = 1) -> pl.DataFrame:
    """``--sampling rows``: a seeded random sample of the training rows of ``picked`` (the rows
    the profile's full-scale targets drew), as the study scales LAIONet and ImageNet-Captions.

    The ``total`` (or ``round(fraction · rows)``) training rows with the smallest keys, whatever
    their class; then every class that had training rows gets at least ``min_per_class`` (its
    smallest keys: the study keeps one per class so no class vanishes); when that overshoots
    ``total``, the surplus leaves the largest classes (their largest keys). Eval rows are kept as
    they are. The sample nests: a smaller total takes a subset of a larger one's rows.
    """
    if min_per_class < 0:
        raise CurateError(f"--min-per-class {min_per_class}: must be >= 0")
    evals = picked.filter(pl.col("split") == "eval")
    train = picked.filter(pl.col("split") == "train").sort("key", "row")
    n_train = train.height
    if total is not None:
        n = min(int(total), n_train)
    elif fraction is not None:
        n = int(_round(np.array([fraction * n_train]))[0])
    else:
        return picked
    # rank of each row within its class, by key: the first min_per_class of every class are guaranteed
    train = train.with_columns(pl.int_range(pl.len()).alias("_pos"), pl.int_range(pl.len()).over("label").alias("_rank"))
    keep = (pl.col("_pos") < n) | (pl.col("_rank") < min_per_class)
    chosen = train.filter(keep)
    extra = chosen.height - n
    if total is not None and extra > 0:
        # drop the surplus from the largest classes, one row at a time off the current largest
        counts = chosen.group_by("label").agg(pl.len().alias("n")).sort(["n", "label"], descending=[True, False])
        labels, sizes = counts["label"].to_list(), counts["n"].to_numpy().copy()
        floor = np.full(len(sizes), max(min_per_class, 0))
        cut = np.zeros(len(sizes), dtype=np.int64)
        for _ in range(extra):
            room = np.where(sizes - cut > floor, sizes - cut, -1)
            i = int(np.argmax(room))
            if room[i] < 0:
                break
            cut[i] += 1
        limit = dict(zip(labels, (sizes - cut).tolist()))
        chosen = chosen.with_columns(pl.int_range(pl.len()).over("label").alias("_r2")).filter(
            pl.col("_r2") < pl.col("label").replace_strict(limit, return_dtype=pl.Int64)
        ).drop("_r2")
    chosen = chosen.drop("_pos", "_rank")
    return pl.concat([evals, chosen.select(evals.columns)]).sort("label", "split", "key", "row")
