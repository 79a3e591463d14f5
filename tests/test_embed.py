"""Text encoders and the embeddings folder, with a tiny open_clip model the tests make and save.

No weights come from outside: the model is curate's ``tiny`` CLIP, randomly initialised with a
fixed seed and written to a temporary checkpoint (and, for the run spec, into a run folder laid
out as ``curate train`` writes one).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from cli_helpers import run_cli
from embed_helpers import reference_embeddings, save_tiny_checkpoint

from curate.embed import embed_source, load_encoder, open_embeddings
from curate.errors import CurateError
from curate.models import create_clip

TEXTS = [
    "a photo of a tench",
    "koala sleeping in a eucalyptus tree, australia 2019",
    "",
    "word " * 60,  # longer than the tiny model's 32-token context: truncated, EOT kept
    "Tibetan terrier, chrysanthemum dog",
    "banana which is elongated crescent-shaped yellow fruit with soft sweet flesh",
]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def write_source(path: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    words = ["dog", "cat", "tench", "koala", "red", "small", "photo", "of", "a", "the", "in", "garden"]
    captions = [" ".join(rng.choice(words, size=int(rng.integers(1, 12)))) for _ in range(n)]
    pl.DataFrame({"uid": [f"r{i:04d}" for i in range(n)], "caption": captions, "wnid": ["n01440764"] * n}).write_parquet(path)
    return path


def folder_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_encoder_equals_open_clip_encode_text(tiny_ckpt: Path) -> None:
    enc = load_encoder(f"openclip:curate-tiny:{tiny_ckpt}", device="cpu")
    got = enc.encode(TEXTS, batch_size=2)
    assert got.shape == (len(TEXTS), 128)
    np.testing.assert_allclose(got, reference_embeddings(tiny_ckpt, TEXTS), atol=1e-5)
    # the batch a text falls into does not change its embedding beyond rounding
    np.testing.assert_allclose(enc.encode(TEXTS[::-1], batch_size=4)[::-1], got, atol=1e-5)


def test_run_folder_is_an_encoder(tmp_path: Path, tiny_ckpt: Path) -> None:
    from curate.train import CHECKPOINT, RUN_FILE, TrainConfig

    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    cfg = TrainConfig(objective="clip", model="tiny")
    (run / RUN_FILE).write_text(json.dumps({"config": cfg.to_dict(), "num_classes": 2, "class_names": ["a", "b"], "manifest": "m"}))
    torch.save({"model": torch.load(tiny_ckpt, weights_only=True)}, run / CHECKPOINT)
    enc = load_encoder(str(run), device="cpu")
    np.testing.assert_allclose(enc.encode(TEXTS), reference_embeddings(tiny_ckpt, TEXTS), atol=1e-5)


@pytest.mark.parametrize(
    "spec, words",
    [
        ("openclip:curate-tiny", "openclip:MODEL:PATH"),
        ("openclip:curate-tiny:/no/such/file.pt", "no checkpoint file"),
        ("ViT-B-32", "is not an encoder"),
    ],
)
def test_bad_encoder_specs_are_one_clear_error(spec: str, words: str) -> None:
    with pytest.raises(CurateError, match=words):
        load_encoder(spec, device="cpu")


def test_unknown_architecture_and_foreign_checkpoint(tmp_path: Path, tiny_ckpt: Path) -> None:
    with pytest.raises(CurateError, match="open_clip cannot load"):
        load_encoder(f"openclip:no-such-model:{tiny_ckpt}", device="cpu")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CurateError, match="checkpoint"):
        load_encoder(f"openclip:curate-tiny:{junk}", device="cpu")


def test_embed_source_writes_shards_index_and_same_bytes(tmp_path: Path, tiny_ckpt: Path) -> None:
    src = write_source(tmp_path / "src.parquet", 50)
    enc = load_encoder(f"openclip:curate-tiny:{tiny_ckpt}", device="cpu")
    res = embed_source(str(src), enc, tmp_path / "a", shard_size=16, batch_size=8)
    assert (res.rows, res.shards, res.reused, res.dim) == (50, 4, 0, 128)
    emb = open_embeddings(tmp_path / "a")
    assert emb.index["uid"].to_list() == [f"r{i:04d}" for i in range(50)]
    assert emb.index["row"].to_list() == list(range(50))
    assert emb.index["wnid"].unique().to_list() == ["n01440764"]
    assert all(s.dtype == np.float16 for s in emb.shards) and [len(s) for s in emb.shards] == [16, 16, 16, 2]
    captions = pl.read_parquet(src)["caption"].to_list()
    np.testing.assert_allclose(emb.matrix(), reference_embeddings(tiny_ckpt, captions), atol=2e-3)  # float16 storage
    np.testing.assert_allclose(emb.take(np.array([49, 3, 17])), emb.matrix()[[49, 3, 17]])
    embed_source(str(src), enc, tmp_path / "b", shard_size=16, batch_size=8)
    assert folder_digest(tmp_path / "a") == folder_digest(tmp_path / "b")


def test_a_killed_embedding_run_resumes_to_the_same_bytes(tmp_path: Path, tiny_ckpt: Path) -> None:
    src = write_source(tmp_path / "src.parquet", 40)
    enc = load_encoder(f"openclip:curate-tiny:{tiny_ckpt}", device="cpu")
    embed_source(str(src), enc, tmp_path / "whole", shard_size=10, batch_size=4)

    real = enc.encode_batches
    calls = {"n": 0}

    def dies_in_third_shard(texts, *, batch_size):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(texts, batch_size=batch_size)

    enc.encode_batches = dies_in_third_shard
    with pytest.raises(KeyboardInterrupt):
        embed_source(str(src), enc, tmp_path / "killed", shard_size=10, batch_size=4)
    done = sorted(p.name for p in (tmp_path / "killed" / "shards").iterdir())
    assert done == ["00000.npy", "00000.parquet", "00001.npy", "00001.parquet"]  # no half-written shard
    with pytest.raises(CurateError, match="did not finish"):
        open_embeddings(tmp_path / "killed")
    enc.encode_batches = real
    res = embed_source(str(src), enc, tmp_path / "killed", shard_size=10, batch_size=4)
    assert res.reused == 2
    assert folder_digest(tmp_path / "killed") == folder_digest(tmp_path / "whole")


def test_resuming_with_another_encoder_is_refused(tmp_path: Path, tiny_ckpt: Path) -> None:
    src = write_source(tmp_path / "src.parquet", 5)
    embed_source(str(src), load_encoder(f"openclip:curate-tiny:{tiny_ckpt}", device="cpu"), tmp_path / "e")
    other = tmp_path / "other.pt"
    torch.save(create_clip("tiny", seed=4).state_dict(), other)
    with pytest.raises(CurateError, match="another encoder"):
        embed_source(str(src), load_encoder(f"openclip:curate-tiny:{other}", device="cpu"), tmp_path / "e")


def test_cli_embed_with_class_definitions(tmp_path: Path, tiny_ckpt: Path, capsys) -> None:
    src = write_source(tmp_path / "src.parquet", 12)
    vocab = tmp_path / "vocab.csv"
    pl.DataFrame({"wnid": ["n01440764", "n01882714"], "name": ["tench", "koala"]}).write_csv(vocab)
    code, _, err = run_cli(
        ["embed", str(src), "--encoder", f"openclip:curate-tiny:{tiny_ckpt}", "--out", str(tmp_path / "e"), "--vocab", str(vocab), "--device", "cpu"],
        capsys,
    )
    assert code == 0, err
    assert "12 captions x 128 dims in 1 shard(s), 2 class definitions" in err
    table, vectors = open_embeddings(tmp_path / "e").classes()
    assert table["text"][1].startswith("koala which is ")
    np.testing.assert_allclose(vectors, reference_embeddings(tiny_ckpt, table["text"].to_list()), atol=2e-3)
    code, _, err = run_cli(["embed", str(src), "--encoder", "openclip:curate-tiny:/nope.pt", "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and err.startswith("error: --encoder") and len(err.strip().splitlines()) == 1


def test_resuming_over_a_changed_source_is_refused(tmp_path: Path, tiny_ckpt: Path) -> None:
    src = write_source(tmp_path / "src.parquet", 8)
    enc = load_encoder(f"openclip:curate-tiny:{tiny_ckpt}", device="cpu")
    embed_source(str(src), enc, tmp_path / "e", shard_size=4)
    pl.read_parquet(src).with_columns(pl.col("uid").str.replace("r0001", "other")).write_parquet(src)
    with pytest.raises(CurateError, match="the source changed"):
        embed_source(str(src), enc, tmp_path / "e", shard_size=4)
