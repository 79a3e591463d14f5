"""The similarity stage: LAIONet's definition texts and scores, the build's filters, kNN matching,
near-duplicates and intra-class diversity, each checked against an independent computation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from cli_helpers import run_cli
from embed_helpers import reference_embeddings, save_tiny_checkpoint

from curate import similarity
from curate.errors import CurateError

# LAIONet's name_def query (core/queries.py: synset.name() up to '.n.', '_' -> ' ', + ' which is ' +
# synset.definition()), written out for 20 ImageNet synsets: capitalised names, both cranes,
# both maillots, apostrophes, a synset named after a lemma ImageNet spells otherwise (St. Bernard).
LAIONET_TEXTS = [
    ("n01440764", "tench which is freshwater dace-like game fish of Europe and western Asia noted for ability to survive outside water"),
    ("n02012849", "crane which is large long-necked wading bird of marshes and plains in many parts of the world"),
    ("n03126707", "crane which is lifts and moves heavy objects; lifting tackle is suspended from a pivoted boom that rotates around a vertical axis"),
    ("n02097474", "tibetan terrier which is breed of medium-sized terriers bred in Tibet resembling Old English sheepdogs with fluffy curled tails"),
    ("n02110185", "siberian husky which is breed of sled dog developed in northeastern Siberia; they resemble the larger Alaskan malamutes"),
    ("n02109525", "saint bernard which is a Swiss alpine breed of large powerful dog with a thick coat of hair used as a rescue dog"),
    ("n12057211", "yellow lady's slipper which is maroon to purple-brown orchid with yellow lip; Europe, North America and Japan"),
    ("n03710637", "maillot which is tights for dancers or gymnasts"),
    ("n03710721", "maillot which is a woman's one-piece bathing suit"),
    ("n04356056", "sunglasses which is spectacles that are darkened or polarized to protect the eyes from the glare of the sun"),
    ("n02085620", "chihuahua which is an old breed of tiny short-haired dog with protruding eyes from Mexico held to antedate Aztec civilization"),
    ("n07753592", "banana which is elongated crescent-shaped yellow fruit with soft sweet flesh"),
    ("n02123045", "tabby which is a cat with a grey or tawny coat mottled with black"),
    ("n04591713", "wine bottle which is a bottle for holding wine"),
    ("n03000134", "chainlink fence which is a fence of steel wires woven into a diamond pattern"),
    ("n01882714", "koala which is sluggish tailless Australian arboreal marsupial with grey furry ears and coat; feeds on eucalyptus leaves and bark"),
    ("n09246464", "cliff which is a steep high face of rock"),
    ("n04120489", "running shoe which is a light comfortable shoe designed for running"),
    ("n02108422", "bull mastiff which is large powerful breed developed by crossing the bulldog and the mastiff"),
    ("n07615774", "ice lolly which is ice cream or water ice on a small wooden stick"),
]
DEFS = dict(LAIONET_TEXTS)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.mark.parametrize("route", ["wordnet", "vocabulary"])
def test_definition_texts_match_laionet_byte_for_byte(route: str, monkeypatch) -> None:
    from curate.vocab import load_vocab

    if route == "vocabulary":  # no WordNet: the same rule on the vocabulary's first lemma and gloss
        monkeypatch.setattr(similarity, "_wordnet_or_none", lambda: None)
    vocab = load_vocab("imagenet1k")
    table = similarity.definition_table(vocab.filter(pl.col("wnid").is_in(list(DEFS))))
    got = dict(zip(table["wnid"], table["text"]))
    assert got == DEFS


def test_definition_format_variants_and_errors() -> None:
    lemmas = ["Tibetan terrier", "chrysanthemum dog"]
    assert similarity.definition_text("n02097474", lemmas, None, "a photo of {name}") == "a photo of tibetan terrier"
    assert similarity.definition_text("n02097474", lemmas, None, "{lemmas}") == "Tibetan terrier or chrysanthemum dog"
    with pytest.raises(CurateError, match="unknown field"):
        similarity.definition_text("n02097474", lemmas, None, "{gloss}")
    with pytest.raises(CurateError, match="no definition"):
        similarity.definition_table(pl.DataFrame({"label": [0], "wnid": [None], "name": ["thing"], "lemmas": [["thing"]], "definition": [None]}))


# --------------------------------------------------------------------------------------------- score

CAPTIONS = {
    "r0": "a tench caught in the river",
    "r1": "koala sleeping on a branch",
    "r2": "one yellow banana",
    "r3": "a koala eating a banana",
    "r4": "nothing of interest here",
    "r5": "baby koala with its mother",
    "r6": "koala bears of queensland",
    "r7": "ripe banana on a table",
    "r8": "the tench is a fish",
    "r9": "koala",
}
CLASSES = {"n01440764": "tench", "n01882714": "koala", "n07753592": "banana"}


def write_inputs(root: Path) -> tuple[Path, Path]:
    src = root / "src.parquet"
    pl.DataFrame({"uid": list(CAPTIONS), "caption": list(CAPTIONS.values())}).write_parquet(src)
    vocab = root / "vocab.csv"
    pl.DataFrame({"wnid": list(CLASSES), "name": list(CLASSES.values()), "lemmas": list(CLASSES.values())}).write_csv(vocab)
    return src, vocab


@pytest.fixture(scope="module")
def scored(tmp_path_factory, tiny_ckpt: Path) -> tuple[Path, Path, Path]:
    from curate.embed import load_encoder

    root = tmp_path_factory.mktemp("score")
    src, vocab = write_inputs(root)
    enc = load_encoder(f"openclip:curate-tiny:{tiny_ckpt}", device="cpu")
    result = similarity.score_source(str(src), str(vocab), enc)
    similarity.write_scores(result, root / "scores.parquet")
    return src, vocab, root / "scores.parquet"


def test_score_equals_a_direct_open_clip_computation(scored, tiny_ckpt: Path) -> None:
    scores, meta = similarity.read_scores(scored[2])
    pairs = {(u, w) for u, w in zip(scores["uid"], scores["wnid"])}
    koala, tench, banana = "n01882714", "n01440764", "n07753592"
    assert pairs == {
        ("r0", tench), ("r1", koala), ("r2", banana), ("r3", koala), ("r3", banana),
        ("r5", koala), ("r6", koala), ("r7", banana), ("r8", tench), ("r9", koala),
    }
    texts = [CAPTIONS[u] for u in scores["uid"]] + [DEFS[w] for w in scores["wnid"]]
    ref = reference_embeddings(tiny_ckpt, texts)
    n = scores.height
    expected = (ref[:n] * ref[n:]).sum(axis=1)
    np.testing.assert_allclose(scores["similarity"].to_numpy(), expected, atol=1e-5)
    assert meta["definition_format"] == "{name} which is {definition}" and meta["encoder"].startswith("openclip:curate-tiny:")


def test_label_scores_in_memory_equal_the_score_file(scored, tiny_ckpt: Path) -> None:
    # the benchmark's route (captions and labels in memory) measures what `curate score` writes
    from curate.embed import load_encoder
    from curate.match import match_captions
    from curate.match.quality import keep_scored
    from curate.vocab import load_vocab

    src, vocab_path, scores_path = scored
    vocab = load_vocab(str(vocab_path))
    frame = pl.read_parquet(src)
    labels = match_captions(frame.lazy(), vocab).collect()["labels"]
    enc = load_encoder(f"openclip:curate-tiny:{tiny_ckpt}", device="cpu")
    mine = similarity.label_scores(frame["caption"], labels, vocab, enc)
    uids = frame["uid"].to_list()
    got = {(uids[r], lab): sim for r, lab, sim in mine.iter_rows()}
    file, _ = similarity.read_scores(scores_path)
    want = {(u, lab): sim for u, lab, sim in zip(file["uid"], file["label"], file["similarity"])}
    assert got.keys() == want.keys()
    np.testing.assert_allclose([got[k] for k in want], [want[k] for k in want], atol=1e-5)
    # a threshold between two of the pairs' similarities keeps exactly the pairs at or above it
    sims = sorted(want.values())
    t = (sims[3] + sims[4]) / 2
    kept = keep_scored(labels, mine, t)
    assert len(kept) == len(labels) and kept.dtype == labels.dtype
    pairs = {(uids[r], lab) for r, ls in enumerate(kept.to_list()) for lab in ls}
    assert pairs == {k for k, v in want.items() if v >= t} and len(pairs) == len(want) - 4
    assert kept.to_list()[4] == []  # a caption with no label stays, empty
    assert keep_scored(labels, mine, -2.0).to_list() == labels.to_list()
    # a NaN similarity is no similarity; a pair scored twice counts once; a null row comes back empty
    odd = pl.Series([[3, 1], [2], None], dtype=pl.List(pl.Int32))
    scores = pl.DataFrame({"row": [0, 0, 1, 0], "label": [3, 1, 2, 3], "similarity": [0.9, 0.1, float("nan"), 0.9]})
    assert keep_scored(odd, scores, 0.5).to_list() == [[3], [], []]
    with pytest.raises(CurateError, match="label 7 is no class"):
        similarity.label_scores(frame["caption"], pl.Series([[7]] * frame.height, dtype=labels.dtype), vocab, enc)
    with pytest.raises(CurateError, match="captions but"):
        similarity.label_scores(frame["caption"].head(2), labels, vocab, enc)


def test_cli_score_writes_the_same_file(scored, tiny_ckpt: Path, tmp_path: Path, capsys) -> None:
    src, vocab, first = scored
    code, _, err = run_cli(
        ["score", str(src), "--vocab", str(vocab), "--encoder", f"openclip:curate-tiny:{tiny_ckpt}", "--out", str(tmp_path / "s.parquet"), "--device", "cpu"],
        capsys,
    )
    assert code == 0, err
    assert "10 (caption, class) pairs from 9 of 10 captions" in err
    assert (tmp_path / "s.parquet").read_bytes() == first.read_bytes()


def build(src: Path, vocab: Path, out_root: Path, *extra: str) -> pl.DataFrame:
    from curate.cli import main

    main(["build", "--source", str(src), "--vocab", str(vocab), "--profile", "natural", "--captions", "original", "--out-root", str(out_root), "--name", "m", *extra])
    return pl.read_parquet(out_root / "m" / "manifest.parquet")


def test_build_keeps_pairs_at_or_above_the_threshold(scored, tmp_path: Path) -> None:
    src, vocab, path = scored
    scores, _ = similarity.read_scores(path)
    threshold = float(np.median(scores["similarity"].to_numpy()))
    manifest = build(src, vocab, tmp_path, "--similarity-from", str(path), "--min-similarity", str(threshold))
    passing = scores.filter(pl.col("similarity") >= threshold)
    assert set(manifest["uid"]) == set(passing["uid"])
    for uid, wnid in zip(manifest["uid"], manifest["wnid"]):  # each row's class is one that passed
        assert (uid, wnid) in set(zip(passing["uid"], passing["wnid"]))
    card = (tmp_path / "m" / "card.md").read_text()
    assert f"min similarity | {threshold:.3f}" in card
    assert "`{name} which is {definition}`" in card and "openclip:curate-tiny:" in card
    assert f"text-to-definition similarity below {threshold:g} (--min-similarity) | {len(CAPTIONS) - 1 - passing['uid'].n_unique()}" in card
    # stats.json counts the rows under a stable key, the same in every build (the threshold is in the card)
    import json

    dropped = json.loads((tmp_path / "m" / "stats.json").read_text())["dropped"]
    assert dropped["below_min_similarity"] == len(CAPTIONS) - 1 - passing["uid"].n_unique()
    assert not any("similarity" in k and k not in similarity.SIMILARITY_REASONS for k in dropped)


def test_build_top_k_per_class(scored, tmp_path: Path) -> None:
    src, vocab, path = scored
    scores, _ = similarity.read_scores(path)
    manifest = build(src, vocab, tmp_path, "--similarity-from", str(path), "--top-k-per-class", "2", "--label-policy", "drop")
    single = scores.filter(pl.col("uid").is_in(scores.group_by("uid").len().filter(pl.col("len") == 1)["uid"].implode()))
    expected = single.sort("similarity", descending=True).group_by("wnid", maintain_order=True).head(2)
    assert sorted(zip(manifest["uid"], manifest["wnid"])) == sorted(zip(expected["uid"], expected["wnid"]))


def test_filter_options_need_a_score_file(scored, tmp_path: Path, capsys) -> None:
    src, vocab, path = scored
    code, _, err = run_cli(["build", "--source", str(src), "--vocab", str(vocab), "--min-similarity", "0.8", "--out-root", str(tmp_path)], capsys)
    assert code == 2 and "need similarity_from" in err
    code, _, err = run_cli(
        ["build", "--source", str(src), "--vocab", "demo", "--similarity-from", str(path), "--min-similarity", "0.1", "--out-root", str(tmp_path)], capsys
    )
    assert code == 2 and "scored against vocabulary" in err
    code, _, err = run_cli(
        ["build", "--source", str(src), "--vocab", str(vocab), "--similarity-from", str(src), "--min-similarity", "0.1", "--out-root", str(tmp_path)], capsys
    )
    assert code == 2 and "not written by curate score" in err


# --------------------------------------------------------------------------------------------- kNN


def test_knn_profile_keeps_the_rows_nearest_to_each_query(tmp_path: Path, tiny_ckpt: Path) -> None:
    from curate.embed import embed_source, load_encoder

    src, vocab = write_inputs(tmp_path)
    enc = load_encoder(f"openclip:curate-tiny:{tiny_ckpt}", device="cpu")
    # each query repeats one pool caption verbatim (cosine 1 with it), labelled with its class
    queries = pl.DataFrame(
        {"uid": ["q0", "q1", "q2", "q3"], "caption": [CAPTIONS["r5"], CAPTIONS["r9"], CAPTIONS["r8"], CAPTIONS["r7"]],
         "wnid": ["n01882714", "n01882714", "n01440764", "n07753592"]}
    )
    queries.write_parquet(tmp_path / "q.parquet")
    embed_source(str(src), enc, tmp_path / "pool-emb")
    embed_source(str(tmp_path / "q.parquet"), enc, tmp_path / "q-emb")
    manifest = build(src, vocab, tmp_path / "out", "--profile", f"knn:{tmp_path / 'q-emb'}", "--embeddings", str(tmp_path / "pool-emb"), "--label-policy", "drop")
    assert sorted(zip(manifest["uid"], manifest["wnid"])) == [("r5", "n01882714"), ("r7", "n07753592"), ("r8", "n01440764"), ("r9", "n01882714")]
    card = (tmp_path / "out" / "m" / "card.md").read_text()
    assert "flat for 3 class(es)" in card and "intra-class similarity" in card

    # curate diversity on that manifest: the koala class's two captions, cosine of their embeddings
    from curate.cli import main
    from curate.embed import open_embeddings

    main(["diversity", str(tmp_path / "out" / "m"), "--embeddings", str(tmp_path / "pool-emb"), "--out", str(tmp_path / "div.parquet")])
    div = pl.read_parquet(tmp_path / "div.parquet")
    koala = div.filter(pl.col("class_name") == "koala").row(0, named=True)
    emb = open_embeddings(tmp_path / "pool-emb")
    v = emb.take(np.array([5, 9]))  # r5 and r9
    assert koala["n"] == 2 and koala["mean_cosine"] == pytest.approx(float(v[0] @ v[1]), abs=1e-6)
    assert div.filter(pl.col("class_name") == "tench")["mean_cosine"].to_list() == [None]  # one row: no pairs


def test_knn_search_equals_brute_force() -> None:
    from curate.knn import build_index, search

    rng = np.random.default_rng(1)
    x = rng.normal(size=(3000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[:50] + 0.1 * rng.normal(size=(50, 32)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    exact = np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :5]
    flat = build_index(x)
    assert flat.kind == "flat"
    np.testing.assert_array_equal(search(flat, q, 5)[1], exact)
    ivf = build_index(x, kind="ivf", nlist=16, nprobe=16)  # every cluster searched: exact again
    assert ivf.kind == "ivf" and "16 k-means clusters" in ivf.describe()
    np.testing.assert_array_equal(search(ivf, q, 5)[1], exact)


# --------------------------------------------------------------------------------------------- dedup


def _rotated(v: np.ndarray, cos: float, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors at exactly cosine ``cos`` from the rows of ``v``, in random directions."""
    u = rng.normal(size=v.shape)
    u -= (u * v).sum(axis=1, keepdims=True) * v
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    return cos * v + np.sqrt(1 - cos**2) * u


def planted(seed: int = 0) -> tuple[np.ndarray, list[tuple[int, int]], float]:
    """20 clusters x 100 vectors (within-cluster cosine ~0.8), 60 planted near-duplicates
    (cosine 0.995 with an original) and 60 near misses (cosine 0.97, below the 0.98 threshold)."""
    rng = np.random.default_rng(seed)
    d = 64
    centres = rng.normal(size=(20, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    base = np.repeat(centres, 100, axis=0) + rng.normal(scale=0.06, size=(2000, d))
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    originals = rng.choice(2000, size=120, replace=False)
    dups = _rotated(base[originals[:60]], 0.995, rng)
    misses = _rotated(base[originals[60:]], 0.97, rng)
    x = np.concatenate([base, dups, misses]).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    pairs = [(int(o), 2000 + k) for k, o in enumerate(originals[:60])]
    return x, pairs, 0.02


@pytest.mark.parametrize("index", ["flat", "ivf"])
def test_dedup_finds_every_planted_duplicate_and_removes_nothing_else(index: str) -> None:
    from curate.dedup import near_duplicates

    x, pairs, eps = planted()
    gram = x @ x.T
    np.fill_diagonal(gram, -1)
    assert all(gram[a, b] > 1 - eps for a, b in pairs)
    assert (gram > 1 - eps).sum() == 2 * len(pairs)  # the planted pairs are the only ones above it
    # ivf: 20 k-means clusters, each row compared within its own cluster only (SemDeDup proper)
    res = near_duplicates(x, eps=eps, index=index, nlist=20 if index == "ivf" else None, nprobe=1 if index == "ivf" else None)
    assert ("IVF" in res.index) == (index == "ivf")
    removed = set(res.removed.tolist())
    assert all((a in removed) != (b in removed) for a, b in pairs)  # recall: one of each pair goes
    # precision: every removal has a kept partner above the threshold, and no row without a
    # near-duplicate anywhere is removed
    assert all(res.keep[res.kept_partner]) and (res.similarity > 1 - eps).all()
    np.testing.assert_allclose(res.similarity, gram[res.removed, res.kept_partner], atol=1e-5)
    has_dup = (gram > 1 - eps).any(axis=1)
    assert not (~res.keep & ~has_dup).any()
    assert len(removed) == 60


def test_dedup_keeps_both_ends_of_a_chain() -> None:
    from curate.dedup import near_duplicates

    angle = np.deg2rad(10)  # a~b and b~c at cos 10°, a and c at cos 20°: threshold between
    x = np.array([[1, 0], [np.cos(angle), np.sin(angle)], [np.cos(2 * angle), np.sin(2 * angle)]], dtype=np.float32)
    res = near_duplicates(x, eps=1 - np.cos(np.deg2rad(15)))
    assert res.keep.tolist() == [True, False, True]


def test_cli_dedup(tmp_path: Path, tiny_ckpt: Path, capsys) -> None:
    from curate.embed import embed_source, load_encoder

    captions = ["a red bus", "a red bus", "koala on a tree", "a red bus", "sunset over the sea"]
    pl.DataFrame({"uid": [f"u{i}" for i in range(5)], "caption": captions}).write_parquet(tmp_path / "s.parquet")
    embed_source(str(tmp_path / "s.parquet"), load_encoder(f"openclip:curate-tiny:{tiny_ckpt}", device="cpu"), tmp_path / "e")
    code, _, err = run_cli(["dedup", str(tmp_path / "e"), "--eps", "0.0001", "--out", str(tmp_path / "d.parquet")], capsys)
    assert code == 0, err
    assert "2 of 5 rows are near-duplicates" in err and "exact inner-product index" in err
    d = pl.read_parquet(tmp_path / "d.parquet")
    assert d["removed_uid"].to_list() == ["u1", "u3"] and d["kept_uid"].to_list() == ["u0", "u0"]


# --------------------------------------------------------------------------------------------- diversity


def test_intra_class_similarity_equals_brute_force() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 16))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = rng.integers(0, 5, size=300)
    labels[-1] = 9  # a class of one: no pairs
    got = similarity.intra_class_similarity(x, labels)
    for label, n, mean in got.iter_rows():
        members = x[labels == label]
        assert n == len(members)
        if n < 2:
            assert mean is None
        else:
            g = members @ members.T
            assert mean == pytest.approx((g.sum() - np.trace(g)) / (n * (n - 1)), abs=1e-12)


# --------------------------------------------------------------------------------------------- recipes


def test_laionet_pipelines() -> None:
    from curate.recipe import load_pipeline

    root = Path(__file__).resolve().parent.parent / "pipelines" / "paper"
    thresholds = load_pipeline(root / "laionet-thresholds.yaml")
    assert [r.min_similarity for r in thresholds] == [0.7, 0.75, 0.8, 0.82]
    assert {r.total for r in thresholds} == {448896} and {r.label_policy for r in thresholds} == {"drop"}
    assert {(r.sampling, r.min_per_class) for r in thresholds} == {("rows", 1)} and len({r.name for r in thresholds}) == 4
    fractions = load_pipeline(root / "laionet-fractions.yaml")
    assert [r.fraction for r in fractions] == [None, 0.5, 0.25, 0.125, 0.0625, 0.03125]
    assert {r.min_similarity for r in fractions} == {0.7}
    freq, knn = load_pipeline(root / "laionet-match-incaps.yaml")
    assert freq.profile == "match:incaps" and freq.min_similarity == 0.7 and freq.max_per_class == 961
    assert similarity.parse_knn(knn.profile.split(":", 1)[1]) == ("embeddings/incaps-vit-b-32", 1)
    assert knn.embeddings is not None
