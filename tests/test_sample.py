"""Target-count profiles, head order, scaling, trimming, shortfall, the stable key and the draw."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from curate.errors import CurateError
from curate.sample import (
    PROFILES,
    clip_to_pool,
    draw,
    shortfall,
    single_labels,
    stable_keys,
    target_counts,
)

MASK = (1 << 64) - 1


def reference_key(text: str | None, seed: int, salt: str = "") -> int:
    """FNV-1a 64 over UTF-8 bytes from the seeded basis, then splitmix64: the documented definition,
    one string at a time in plain Python."""
    import hashlib

    h = int.from_bytes(hashlib.blake2b(f"{seed}\x1f{salt}".encode(), digest_size=8).digest(), "little")
    data = (text or "").encode("utf-8")
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & MASK
    h ^= len(data)
    h ^= h >> 30
    h = (h * 0xBF58476D1CE4E5B9) & MASK
    h ^= h >> 27
    h = (h * 0x94D049BB133111EB) & MASK
    return h ^ (h >> 31)


def classes_frame(pools: list[int], names: list[str] | None = None) -> pl.DataFrame:
    n = len(pools)
    names = names or [f"class{i}" for i in range(n)]
    return pl.DataFrame(
        {
            "label": pl.Series(range(n), dtype=pl.Int32),
            "name": names,
            "wnid": [f"n{i:08d}" for i in range(n)],
            "pool": pl.Series(pools, dtype=pl.Int64),
            "vocab_label": pl.Series(range(n), dtype=pl.Int32),
        }
    )


def by_rank(t: pl.DataFrame) -> list[int]:
    return t.sort("head_rank")["target"].to_list()


# -- the key ------------------------------------------------------------------------------------


def test_stable_keys_match_the_byte_definition():
    values = ["", "a", "demo-000001", "ünïcödé ✓", "x" * 300, None, "tab\there", "a"]
    got = stable_keys(pl.Series(values, dtype=pl.Utf8), 7, "draw")
    want = [reference_key(v, 7, "draw") for v in values]
    assert got.tolist() == want
    assert got[1] == got[-1]  # equal strings, equal keys


def test_stable_keys_of_a_slice_equal_the_whole():
    s = pl.Series([f"uid-{i}" for i in range(1000)])
    assert stable_keys(s.slice(300, 200), 0).tolist() == stable_keys(s, 0)[300:500].tolist()


def test_stable_keys_change_with_seed_and_salt_and_spread():
    s = pl.Series([f"row-{i}" for i in range(20000)])
    a, b, c = stable_keys(s, 0), stable_keys(s, 1), stable_keys(s, 0, "other")
    assert (a != b).mean() > 0.999 and (a != c).mean() > 0.999
    assert len(np.unique(a)) == len(a)
    assert abs((a >> np.uint64(63)).mean() - 0.5) < 0.02  # the top bit is a fair coin
    assert abs((a & np.uint64(1)).mean() - 0.5) < 0.02


# -- profiles: counts against their formulas ------------------------------------------------------


BIG = [10_000] * 5


def test_exp_profile_follows_the_formula():
    t = target_counts(classes_frame(BIG), profile="exp", imbalance=100, max_per_class=1000)
    want = [math.floor(1000 * 100 ** (-i / 4) + 0.5) for i in range(5)]
    assert by_rank(t) == want == [1000, 316, 100, 32, 10]


def test_pareto_profile_follows_the_formula():
    t = target_counts(classes_frame(BIG), profile="pareto", imbalance=50, max_per_class=1000)
    a = math.log(50) / math.log(5)
    assert by_rank(t) == [math.floor(1000 * (i + 1) ** -a + 0.5) for i in range(5)]
    assert by_rank(t)[0] / by_rank(t)[-1] == 50


def test_step_profile_has_two_levels():
    t = target_counts(classes_frame(BIG), profile="step", imbalance=10, head_fraction=0.4, max_per_class=500)
    assert by_rank(t) == [500, 500, 50, 50, 50]


def test_balanced_profile():
    t = target_counts(classes_frame([90, 80, 70]), profile="balanced")
    assert by_rank(t) == [70, 70, 70]  # the largest the smallest class allows


def test_natural_profile_keeps_the_source_shape():
    pools = [1000, 400, 90, 33]
    assert by_rank(target_counts(classes_frame(pools), profile="natural")) == pools
    half = by_rank(target_counts(classes_frame(pools), profile="natural", fraction=0.5))
    assert half == [500, 200, 45, 17]


def test_match_profile_follows_a_reference_by_name(tmp_path):
    ref = tmp_path / "ref.tsv"
    ref.write_text("class2\t40\nclass0\t400\nclass1\t100\nunused\t9\n", encoding="utf-8")
    t = target_counts(classes_frame([5000, 5000, 5000]), profile=f"match:{ref}", max_per_class=800)
    got = dict(zip(t["name"].to_list(), t["target"].to_list()))
    assert got == {"class0": 800, "class1": 200, "class2": 80}


def test_match_profile_reads_a_published_table_by_name():
    from curate.freq import read_reference

    ref = read_reference("laion400m")
    names = ref["name"].to_list()[:3]  # tench 917, goldfish 30282, great white shark 19521
    t = target_counts(classes_frame([40_000, 40_000, 40_000], names=names), profile="match:laion400m", max_per_class=30_282)
    got = dict(zip(t["name"].to_list(), t["target"].to_list()))
    assert got == dict(zip(names, ref["count"].to_list()[:3]))


def test_match_profile_missing_classes_is_an_error(tmp_path):
    ref = tmp_path / "ref.tsv"
    ref.write_text("zebra\t40\n", encoding="utf-8")
    with pytest.raises(CurateError, match="not in the reference"):
        target_counts(classes_frame([10, 10]), profile=f"match:{ref}")


def test_metaclip_profile_caps_at_t():
    pools = [5000, 300, 120, 7]
    t = target_counts(classes_frame(pools), profile="metaclip:200")
    assert by_rank(t) == [200, 200, 120, 7]


def test_every_registered_profile_is_tested():
    assert set(PROFILES) == {"exp", "pareto", "step", "balanced", "natural", "match", "metaclip", "metaclip-entry"}


def test_unknown_profile_and_bad_parameters():
    with pytest.raises(CurateError, match="--profile 'zipf'"):
        target_counts(classes_frame(BIG), profile="zipf")
    with pytest.raises(CurateError, match="metaclip"):
        target_counts(classes_frame(BIG), profile="metaclip:lots")
    with pytest.raises(CurateError, match="--imbalance"):
        target_counts(classes_frame(BIG), imbalance=0.5)
    with pytest.raises(CurateError, match="at most one"):
        target_counts(classes_frame(BIG), total=10, fraction=0.5)


# -- default scale, total, fraction --------------------------------------------------------------


def test_default_head_count_is_the_largest_the_pool_allows_with_an_exact_ratio():
    pools = [5000, 900, 400, 100, 60, 30, 12]
    t = target_counts(classes_frame(pools), profile="exp", imbalance=100)
    targets = by_rank(t)
    assert targets[0] / targets[-1] == 100
    assert all(tg <= p for tg, p in zip(targets, pools))
    # one more sample in the tail would need a head the pool cannot give
    bigger = [math.floor((targets[-1] + 1) * 100 * 100 ** (-i / 6) + 0.5) for i in range(7)]
    assert any(b > p for b, p in zip(bigger, pools))


def test_total_is_hit_exactly():
    for total in (1000, 1001, 12345):
        t = target_counts(classes_frame(BIG), profile="exp", imbalance=10, total=total)
        assert t["target"].sum() == total


def test_fraction_scales_the_feasible_build():
    pools = [800, 400, 200, 100]
    full = by_rank(target_counts(classes_frame(pools), profile="exp", imbalance=8))
    quarter = by_rank(target_counts(classes_frame(pools), profile="exp", imbalance=8, fraction=0.25))
    assert full == [800, 400, 200, 100]
    assert quarter == [200, 100, 50, 25]


# -- order ---------------------------------------------------------------------------------------


def test_natural_order_ranks_by_pool():
    t = target_counts(classes_frame([10, 500, 50]), profile="exp", imbalance=10, max_per_class=100)
    assert dict(zip(t["name"], t["head_rank"])) == {"class1": 0, "class2": 1, "class0": 2}


def test_random_order_is_seeded():
    c = classes_frame([1000] * 30)
    r0 = target_counts(c, order="random", seed=0, imbalance=10, max_per_class=100)["head_rank"].to_list()
    r0b = target_counts(c, order="random", seed=0, imbalance=10, max_per_class=100)["head_rank"].to_list()
    r1 = target_counts(c, order="random", seed=1, imbalance=10, max_per_class=100)["head_rank"].to_list()
    assert r0 == r0b and r0 != r1 and sorted(r0) == list(range(30))


def test_order_file(tmp_path):
    f = tmp_path / "order.txt"
    f.write_text("class2\nn00000000\nclass1\n", encoding="utf-8")
    t = target_counts(classes_frame([10, 20, 30]), order=str(f), imbalance=10, max_per_class=10)
    assert t.sort("head_rank")["name"].to_list() == ["class2", "class0", "class1"]
    f.write_text("class2\nclass1\n", encoding="utf-8")
    with pytest.raises(CurateError, match="every one of the 3 classes"):
        target_counts(classes_frame([10, 20, 30]), order=str(f))
    f.write_text("class2\nclass9\nclass1\n", encoding="utf-8")
    with pytest.raises(CurateError, match="line 2: 'class9'"):
        target_counts(classes_frame([10, 20, 30]), order=str(f))


# -- trimming and shortfall ----------------------------------------------------------------------


def test_trim_tail_caps_the_last_k_classes():
    t = target_counts(classes_frame(BIG), profile="balanced", max_per_class=100, trim_tail="2:1")
    assert by_rank(t) == [100, 100, 100, 1, 1]
    t = target_counts(classes_frame(BIG), profile="balanced", max_per_class=100, trim_tail="3:0")
    assert by_rank(t) == [100, 100, 0, 0, 0]
    t = target_counts(classes_frame(BIG), profile="balanced", max_per_class=100, trim_tail="50:2")
    assert by_rank(t) == [2] * 5  # K beyond the class count caps every class
    with pytest.raises(CurateError, match="--trim-tail"):
        target_counts(classes_frame(BIG), trim_tail="5")


def test_shortfall_names_classes_and_amounts():
    t = target_counts(classes_frame([100, 50, 8]), profile="balanced", max_per_class=20, eval_per_class=5)
    short = shortfall(t)
    assert short.select("name", "pool", "needed", "short").rows() == [("class2", 8, 25, 17)]
    kept = clip_to_pool(t)
    row = kept.filter(pl.col("name") == "class2").row(0, named=True)
    assert (row["eval_target"], row["target"], row["asked"]) == (5, 3, 20)


# -- labels and the draw -------------------------------------------------------------------------


def test_single_labels_send_multi_class_rows_to_the_rarest():
    pool = pl.DataFrame(
        {
            "row": pl.Series([0, 1, 2, 3, 4, 5], dtype=pl.UInt32),
            "labels": [[0], [0], [0], [1], [0, 1], []],
            "key": pl.Series([5, 4, 3, 2, 1, 0], dtype=pl.UInt64),
        },
        schema_overrides={"labels": pl.List(pl.Int32)},
    )
    out = single_labels(pool).sort("row")
    assert out.select("row", "label").rows() == [(0, 0), (1, 0), (2, 0), (3, 1), (4, 1)]
    assert out["key"].to_list() == [5, 4, 3, 2, 1]
    compact = pool.select(
        "row", "key",
        pl.when(pl.col("labels").list.len() == 1).then(pl.col("labels").list.first()).alias("label"),
        pl.when(pl.col("labels").list.len() > 1).then(pl.col("labels")).alias("labels"),
    )
    assert single_labels(compact).sort("row").equals(out)


def test_draw_takes_smallest_keys_eval_first_and_nests():
    rng = np.random.default_rng(0)
    n = 3000
    pool = pl.DataFrame(
        {
            "row": pl.Series(np.arange(n), dtype=pl.UInt32),
            "label": pl.Series(rng.integers(0, 3, n), dtype=pl.Int32),
            "key": pl.Series(rng.integers(0, 2**63, n), dtype=pl.UInt64),
        }
    )
    targets = pl.DataFrame({"label": [0, 1, 2], "eval_target": [10, 10, 10], "target": [300, 100, 7]})
    got = draw(pool, targets)
    counts = got.group_by("label", "split").len().sort("label", "split").rows()
    assert counts == [(0, "eval", 10), (0, "train", 300), (1, "eval", 10), (1, "train", 100), (2, "eval", 10), (2, "train", 7)]
    assert got["row"].n_unique() == got.height
    for label, sub in got.group_by("label"):
        keys = pool.filter(pl.col("label") == label[0]).sort("key")["key"]
        assert sorted(sub["key"].to_list()) == keys.head(sub.height).to_list()
        assert sub.filter(pl.col("split") == "eval")["key"].max() < sub.filter(pl.col("split") == "train")["key"].min()
    smaller = draw(pool, targets.with_columns(pl.col("target") // 2))
    assert set(smaller["row"].to_list()) <= set(got["row"].to_list())


def _picked(sizes: list[int], seed: int = 0) -> pl.DataFrame:
    labels = np.repeat(np.arange(len(sizes)), sizes)
    uids = pl.Series([f"r{i}" for i in range(len(labels))])
    return pl.DataFrame(
        {
            "row": pl.Series(np.arange(len(labels)), dtype=pl.UInt32),
            "label": pl.Series(labels, dtype=pl.Int32),
            "key": pl.Series(stable_keys(uids, seed, "draw"), dtype=pl.UInt64),
            "split": ["train"] * len(labels),
        }
    )


def test_row_sampling_is_random_rows_with_a_floor_per_class():
    from curate.sample import sample_rows

    picked = _picked([5000, 800, 60, 3, 1])
    out = sample_rows(picked, total=500, fraction=None, min_per_class=1)
    assert out.height == 500  # the floor's extra rows left the largest class
    counts = dict(out.group_by("label").len().iter_rows())
    assert set(counts) == {0, 1, 2, 3, 4}  # no class vanishes
    # the rest is a uniform draw of rows, not a per-class allocation: shares follow the pool
    assert 380 < counts[0] < 460 and 40 < counts[1] < 95
    # the smallest keys overall, plus each class's smallest key
    by_key = picked.sort("key", "row")
    assert set(out["row"].to_list()) >= set(by_key.head(450)["row"].to_list()) - set(picked.filter(pl.col("label") == 0)["row"].to_list())
    # nests: a smaller sample is a subset of a larger one (min_per_class 0: pure prefix of keys)
    small = set(sample_rows(picked, total=100, fraction=None, min_per_class=0)["row"].to_list())
    large = set(sample_rows(picked, total=300, fraction=None, min_per_class=0)["row"].to_list())
    assert small < large
    frac = sample_rows(picked, total=None, fraction=1 / 32, min_per_class=1)
    assert frac.group_by("label").len().height == 5 and frac.height >= round(picked.height / 32)
    with pytest.raises(CurateError, match="--min-per-class"):
        sample_rows(picked, total=10, fraction=None, min_per_class=-1)


def test_label_policy_each_gives_a_row_per_class():
    from curate.sample import each_label

    pool = pl.DataFrame(
        {
            "row": pl.Series([0, 1, 2], dtype=pl.UInt32),
            "key": pl.Series([9, 8, 7], dtype=pl.UInt64),
            "label": pl.Series([3, None, None], dtype=pl.Int32),
            "labels": pl.Series([None, [1, 2], None], dtype=pl.List(pl.Int32)),
        }
    )
    out = each_label(pool)
    assert out.rows() == [(0, 3, 9), (1, 1, 8), (1, 2, 8)]
    lists = each_label(pool.drop("label").with_columns(pl.Series("labels", [[3], [1, 2], []], dtype=pl.List(pl.Int32))))
    assert lists.sort("row", "label").rows() == [(0, 3, 9), (1, 1, 8), (1, 2, 8)]


def test_builds_with_row_sampling_and_label_policy_each(tmp_path, capsys):
    from cli_helpers import run_cli
    from test_build import POOLS, make_source

    src, vocab = make_source(tmp_path)
    base = ["build", "--source", str(src), "--vocab", str(vocab), "--out-root", str(tmp_path / "m"), "--profile", "natural", "--captions", "cname"]
    code, _, err = run_cli([*base, "--total", "12", "--sampling", "rows", "--name", "rows"], capsys)
    assert code == 0, err
    m = pl.read_parquet(tmp_path / "m" / "rows" / "manifest.parquet")
    assert m.height == 12 and m["label"].n_unique() == len(POOLS)
    code, _, err = run_cli([*base, "--total", "12", "--name", "classes"], capsys)
    assert code == 0, err
    assert pl.read_parquet(tmp_path / "m" / "classes" / "manifest.parquet")["label"].n_unique() < len(POOLS)
    code, _, err = run_cli([*base, "--label-policy", "each", "--name", "each"], capsys)
    assert code == 0, err
    each = pl.read_parquet(tmp_path / "m" / "each" / "manifest.parquet")
    two = each.filter(pl.col("uid").str.starts_with("two-"))
    assert two.height == 20 and each["uid"].is_unique().all()  # curate shards needs unique uids
    assert sorted(two["uid"].str.split("#").list.last().unique().to_list()) == ["n00000000", "n00000005"]
    assert two["uid"].str.split("#").list.first().n_unique() == 10
    from curate.shards import manifest_splits

    assert {p.split: p.rows.height for p in manifest_splits(tmp_path / "m" / "each")}["train"] == each.height


def test_imagenet_captions_rows_reach_their_images_through_image_root(tmp_path, capsys):
    import json

    from cli_helpers import run_cli

    from curate.shards import manifest_splits

    root = tmp_path / "imagenet"
    records = []
    for i in range(12):
        wnid = "n01440764" if i % 3 else "n01443537"
        name = f"{wnid}_{i}.JPEG"
        (root / "train" / wnid).mkdir(parents=True, exist_ok=True)
        (root / "train" / wnid / name).write_bytes(b"\xff\xd8 image bytes")
        records.append({"filename": name, "wnid": wnid, "title": f"Title {i}", "tags": ["fish"], "description": ""})
    src = tmp_path / "imagenet_captions.json"
    src.write_text(json.dumps(records))
    vocab = tmp_path / "v.tsv"
    vocab.write_text("wnid\tname\tlemmas\nn01440764\ttench\ttench\nn01443537\tgoldfish\tgoldfish\n")
    args = ["build", "--source", str(src), "--vocab", str(vocab), "--labels-from", "wnid", "--profile", "natural",
            "--captions", "full+cname", "--out-root", str(tmp_path / "m"), "--name", "incaps"]
    code, _, err = run_cli([*args, "--image-root", str(root)], capsys)
    assert code == 0, err
    m = pl.read_parquet(tmp_path / "m" / "incaps" / "manifest.parquet")
    assert m.height == 12
    for path, wnid, uid in m.select("path", "wnid", "uid").iter_rows():
        assert Path(path) == (root / "train" / wnid / uid).resolve() and Path(path).is_file()
    urls = {p.split: p for p in manifest_splits(tmp_path / "m" / "incaps")}["train"].rows["url"].to_list()
    assert all(u.startswith("file://") and Path(u[len("file://"):]).is_file() for u in urls)  # what curate shards downloads
    code, _, err = run_cli([*args, "--image-root", str(tmp_path / "nowhere")], capsys)
    assert code == 2 and "--image-root" in err and "train/" in err


def test_metaclip_entry_balancing_keeps_about_t_per_class():
    from curate.sample import metaclip_entry_keep

    picked = _picked([20_000, 2_000, 60])
    pool = picked.select("row", "key", "label").with_columns(pl.lit(None, dtype=pl.List(pl.Int32)).alias("labels"))
    # 300 captions naming classes 0 and 2 together: kept if either class selects them
    extra = pl.DataFrame(
        {
            "row": pl.Series(range(10**6, 10**6 + 300), dtype=pl.UInt32),
            "key": pl.Series(stable_keys(pl.Series([f"m{i}" for i in range(300)]), 0, "draw"), dtype=pl.UInt64),
            "label": pl.Series([None] * 300, dtype=pl.Int32),
            "labels": pl.Series([[0, 2]] * 300, dtype=pl.List(pl.Int32)),
        }
    )
    pool = pl.concat([pool, extra])
    kept = metaclip_entry_keep(pool, "200")
    single = kept.filter(pl.col("label").is_not_null()).group_by("label").len().sort("label")["len"].to_list()
    # class 0: 20,300 captions, p = 200/20,300; class 1: 2,000, p = 0.1; class 2 (360 captions): p = 200/360
    assert 150 < single[0] < 260 and 160 < single[1] < 240 and 20 < single[2] < 50
    both = kept.filter(pl.col("labels").is_not_null()).height
    assert 130 < both < 210  # 1 - (1 - 0.0099)(1 - 0.556) ≈ 0.56 of 300
    assert kept.equals(metaclip_entry_keep(pool, "200"))  # seeded, reproducible
    with pytest.raises(CurateError, match="metaclip-entry"):
        metaclip_entry_keep(pool, "x")
