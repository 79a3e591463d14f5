"""`curate.loader`: seeded, epoch-aware batches from real tensor shards; `gpu_augment` on CPU.

The shards are written by `curate.shards.tensorize` from a hand-made img2dataset folder, so the
loader reads exactly what `curate shards` produces.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image

from curate.errors import CurateError
from curate.loader import CLIP_MEAN, CLIP_STD, Batch, TensorShards, gpu_augment, open_shards
from curate.shards import tensorize, tokenize

RES = 16
SHARD_SIZES = (7, 5, 9)  # uneven, as shards are after failed downloads
N = sum(SHARD_SIZES)


def _jpeg(i: int) -> bytes:
    rng = np.random.default_rng(i)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, size=(RES, RES, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def shards_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    m = tmp_path_factory.mktemp("loader") / "toy"
    folder = m / "images" / "train"
    folder.mkdir(parents=True)
    rows, i = [], 0
    for sid, size in enumerate(SHARD_SIZES):
        with tarfile.open(folder / f"{sid:05d}.tar", "w") as tar:
            for k in range(size):
                meta = json.dumps({"uid": f"row-{i:03d}", "label": i % 4}).encode()
                caption = f"caption {i} of class {i % 4}"
                for ext, data in (("png", _jpeg(i)), ("json", meta), ("txt", caption.encode())):
                    info = tarfile.TarInfo(f"{sid:05d}{k:04d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                rows.append(
                    {"uid": f"row-{i:03d}", "label": i % 4, "caption": caption, "url": f"http://x/{i}"}
                )
                i += 1
        (folder / f"{sid:05d}_stats.json").write_text("{}")
    pl.DataFrame(rows).write_parquet(m / "manifest.parquet")
    pl.DataFrame(
        {"label": [0, 1, 2, 3], "wnid": ["a", "b", "c", "d"], "name": ["w", "x", "y", "z"]}
    ).write_parquet(m / "classes.parquet")
    tensorize(m, split="train", resolution=RES, workers=1)
    return m


@pytest.fixture(scope="module")
def ds(shards_dir: Path) -> TensorShards:
    return open_shards(shards_dir)


def collect(ds: TensorShards, bs: int, **kw: object) -> list[Batch]:
    return list(ds.batches(bs, **kw))  # type: ignore[arg-type]


def test_attributes(ds: TensorShards, shards_dir: Path) -> None:
    assert len(ds) == ds.num_samples == N
    assert ds.num_classes == 4 and ds.class_names == ["w", "x", "y", "z"] and ds.resolution == RES
    assert ds.labels.dtype == np.int64 and ds.labels.tolist() == [i % 4 for i in range(N)]
    assert ds.uids.tolist() == [f"row-{i:03d}" for i in range(N)]
    assert ds.index["num_samples"] == N
    direct = open_shards(shards_dir / "shards" / "train")
    assert direct.uids.tolist() == ds.uids.tolist()


def test_batches_hold_the_rows_they_name(ds: TensorShards, shards_dir: Path) -> None:
    captions = dict(zip(*pl.read_parquet(shards_dir / "manifest.parquet").select("uid", "caption")))
    for b in ds.batches(6, seed=5, epoch=2):
        assert b.images.dtype == torch.uint8 and b.images.shape[1:] == (3, RES, RES)
        assert b.tokens.dtype == torch.long and b.tokens.shape[1] == 77
        assert b.labels.dtype == torch.long and b.index.dtype == torch.long
        idx = b.index.numpy()
        np.testing.assert_array_equal(b.labels.numpy(), ds.labels[idx])
        want = tokenize([captions[u] for u in ds.uids[idx]])
        np.testing.assert_array_equal(b.tokens.numpy(), want)
        for row, img in zip(idx, b.images.numpy()):
            original = np.asarray(Image.open(io.BytesIO(_jpeg(int(row))))).transpose(2, 0, 1)
            np.testing.assert_array_equal(img, original)


def test_every_row_once_per_epoch(ds: TensorShards) -> None:
    batches = collect(ds, 4, seed=1, epoch=0)
    assert [len(b) for b in batches] == [4] * (N // 4) + [N % 4]
    assert sorted(torch.cat([b.index for b in batches]).tolist()) == list(range(N))
    dropped = collect(ds, 4, seed=1, epoch=0, drop_last=True)
    seen = torch.cat([b.index for b in dropped]).tolist()
    assert len(seen) == N // 4 * 4 and len(set(seen)) == len(seen)
    assert ds.num_batches(4) == len(batches) and ds.num_batches(4, drop_last=True) == len(dropped)


def test_same_seed_and_epoch_same_batches_other_epochs_differ(ds: TensorShards) -> None:
    def order(**kw: object) -> list[int]:
        return torch.cat([b.index for b in ds.batches(5, **kw)]).tolist()  # type: ignore[arg-type]

    a, b = collect(ds, 5, seed=7, epoch=3), collect(ds, 5, seed=7, epoch=3)
    for x, y in zip(a, b):
        for f in ("images", "tokens", "labels", "index"):
            assert torch.equal(getattr(x, f), getattr(y, f))
    e0, e1, other_seed = order(seed=7, epoch=0), order(seed=7, epoch=1), order(seed=8, epoch=0)
    assert e0 != e1 and e0 != other_seed
    assert order(seed=7, epoch=0, shuffle=False) == list(range(N))
    # the order is a property of (seed, epoch) alone, not of the batch size
    assert torch.cat([b.index for b in ds.batches(3, seed=7, epoch=1)]).tolist() == e1


def test_pin_memory_and_device_arguments(ds: TensorShards) -> None:
    # without CUDA, pinning is skipped rather than failing
    b = next(iter(ds.batches(8, pin_memory=True, device="cpu")))
    assert b.images.device.type == "cpu" and len(b) == 8
    if torch.cuda.is_available():  # pragma: no cover - exercised on the GPU machine
        g = next(iter(ds.batches(8, pin_memory=True, device="cuda")))
        assert g.images.is_cuda and torch.equal(g.images.cpu(), b.images)
    with pytest.raises(CurateError, match="batch_size 0"):
        next(iter(ds.batches(0)))


def test_open_shards_errors(shards_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(CurateError, match="no tensor shards for split 'eval'"):
        open_shards(shards_dir, split="eval")
    with pytest.raises(CurateError, match="no tensor shards"):
        open_shards(tmp_path)
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(shards_dir / "shards" / "train", copy)
    np.save(copy / "00001.labels.npy", np.zeros(3, dtype=np.int64))
    with pytest.raises(
        CurateError, match=r"00001.labels.npy: labels is <i8 \[3\], index.json says <i8 \[5\]"
    ):
        open_shards(copy)
    (copy / "00001.labels.npy").unlink()
    with pytest.raises(CurateError, match="00001.labels.npy: listed in index.json .* but missing"):
        open_shards(copy)
    (copy / "index.json").write_text('{"format": "something else"}')
    with pytest.raises(CurateError, match="not a curate tensor-shard index"):
        open_shards(copy)


# ---------------------------------------------------------------------------------------------
# gpu_augment


def _images(b: int = 32, res: int = 12) -> torch.Tensor:
    return torch.randint(
        0, 256, (b, 3, res, res), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )


def _normalised(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x.float() / 255 - mean) / std


def test_eval_augment_is_normalisation_only() -> None:
    x = _images()
    y = gpu_augment(x, train=False)
    assert y.dtype == torch.float32 and y.shape == x.shape
    torch.testing.assert_close(y, _normalised(x))
    white = gpu_augment(torch.full((1, 3, 4, 4), 255, dtype=torch.uint8), train=False)
    torch.testing.assert_close(white[0, :, 0, 0], (1 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD))
    assert gpu_augment(x, train=False, out_size=8).shape == (32, 3, 8, 8)


def test_train_augment_shapes_and_seeding() -> None:
    x = _images()
    a = gpu_augment(x, train=True, out_size=10, generator=torch.Generator().manual_seed(1))
    b = gpu_augment(x, train=True, out_size=10, generator=torch.Generator().manual_seed(1))
    c = gpu_augment(x, train=True, out_size=10, generator=torch.Generator().manual_seed(2))
    assert a.shape == (32, 3, 10, 10) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    # bilinear crops of [0, 1] pixels stay in the normalised range of [0, 1]
    lo = (0 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    hi = (1 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    per_channel = a.transpose(0, 1).reshape(3, -1)
    assert (per_channel.min(1).values >= lo - 1e-5).all() and (per_channel.max(1).values <= hi + 1e-5).all()


def test_train_augment_full_crop_is_identity_or_flip() -> None:
    x = _images(64)
    y = gpu_augment(
        x, train=True, generator=torch.Generator().manual_seed(3), scale=(1.0, 1.0), ratio=(1.0, 1.0)
    )
    ref = _normalised(x)
    same = [torch.allclose(y[i], ref[i], atol=1e-4) for i in range(64)]
    flipped = [torch.allclose(y[i], ref[i].flip(-1), atol=1e-4) for i in range(64)]
    assert all(s or f for s, f in zip(same, flipped))
    assert 10 < sum(flipped) < 54  # about half, per image


def test_train_augment_crops_differ_per_image() -> None:
    one = _images(1).repeat(16, 1, 1, 1)
    y = gpu_augment(one, train=True, generator=torch.Generator().manual_seed(4))
    assert len({tuple(v.flatten()[:20].tolist()) for v in y}) == 16


def test_augment_rejects_bad_input() -> None:
    with pytest.raises(CurateError, match="uint8"):
        gpu_augment(torch.zeros(2, 3, 8, 8), train=True)
    with pytest.raises(CurateError, match=r"\[B,3,H,W\]"):
        gpu_augment(torch.zeros(3, 8, 8, dtype=torch.uint8), train=False)


def test_a_changed_shard_is_caught_when_opened(shards_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Labels rewritten in place (same size, same shape) no longer match index.json's sha256:
    opening fails before any work, and `curate train` leaves no run folder behind."""
    import shutil

    from cli_helpers import run_cli

    m = tmp_path / "m"
    shutil.copytree(shards_dir, m)
    open_shards(m)  # verified once, and recorded
    assert json.loads((m / "shards" / "train" / "verified.json").read_text())
    f = m / "shards" / "train" / "00001.labels.npy"
    labels = np.load(f)
    np.save(f, (labels + 1) % 4)
    with pytest.raises(CurateError, match=r"00001.labels.npy: sha256 differs from index.json"):
        open_shards(m)
    assert len(open_shards(m, verify="sizes")) == N  # the cheap mode checks sizes only
    run = tmp_path / "run"
    code, _, err = run_cli(["train", str(m), "--model", "tiny", "--steps", "1", "--out", str(run)], capsys)
    assert code == 2 and "sha256 differs" in err, err
    assert not run.exists()
    # grown by a byte: caught by size alone
    with open(f, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(CurateError, match="bytes where its header promises"):
        open_shards(m, verify="sizes")
