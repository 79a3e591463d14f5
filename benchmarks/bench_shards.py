"""Shards: tensorize throughput, and the tensor loader against a webdataset + PIL loader.

Self-contained: generates N JPEG images (96x80, class-coloured), writes a manifest of ``file://``
URLs, downloads them with img2dataset into webdataset tars at 64 px (``download_images``), then,
in one process on the same data:

- tensorize (``curate.shards.tensorize``: read tar, decode, crop, tokenize, write ``.npy``),
  images/s, with one worker and with one per core, after a warm-up call (printed apart);
- the tensor loader (``open_shards(...).batches(256)``: memory-mapped gather, shuffled, torch
  uint8 images + int64 tokens + labels);
- a webdataset + PIL loader of the same tars (``wds.WebDataset(...).shuffle(1000).decode("pil")``
  -> uint8 CHW tensor, batched to 256), without and with on-the-fly tokenization (what the tensor
  shards save a CLIP trainer);

each loader for one warm-up epoch and three timed ones (the best counts; tensorize: best of two),
single process. Prints images/s and the ratios (target: the tensor loader at least 10x the decode loader at 64 px).

    python benchmarks/bench_shards.py [--n 4000] [--resolution 64] [--batch 256]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("CURATE_NO_PROGRESS", "1")

REPEATS = 3  # timed runs after a warm-up; the best is reported (the machine is shared)
CLASSES = ["red thing", "green thing", "blue thing", "grey thing"]


def make_manifest(root: Path, n: int) -> Path:
    """N class-coloured JPEGs plus a manifest of their file:// URLs."""
    src = root / "src"
    src.mkdir(parents=True)
    rng = np.random.default_rng(0)
    colours = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [128, 128, 128]], dtype=np.int16)
    rows = []
    for i in range(n):
        label = i % len(CLASSES)
        noise = rng.integers(-40, 40, size=(80, 96, 3))
        arr = np.clip(colours[label] + noise, 0, 255).astype(np.uint8)
        path = src / f"{i:06d}.jpg"
        Image.fromarray(arr).save(path, quality=90)
        rows.append(
            {"uid": f"img-{i:06d}", "label": label, "caption": f"a photo of a {CLASSES[label]}, number {i}",
             "url": path.as_uri(), "path": None, "split": "train"}
        )  # fmt: skip
    m = root / "manifests" / "bench"
    m.mkdir(parents=True)
    pl.DataFrame(rows).write_parquet(m / "manifest.parquet")
    pl.DataFrame({"label": list(range(len(CLASSES))), "wnid": [None] * 4, "name": CLASSES}).write_parquet(
        m / "classes.parquet"
    )
    return m


def time_tensor_loader(m: Path, batch: int) -> tuple[float, int]:
    from curate.loader import open_shards

    ds = open_shards(m)
    times, rows = [], 0
    for epoch in range(1 + REPEATS):
        t0 = time.perf_counter()
        rows = 0
        for b in ds.batches(batch, seed=0, epoch=epoch):
            rows += len(b)
        times.append(time.perf_counter() - t0)
    return min(times[1:]), rows


def _chunks(items, size: int):
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def time_wds_loader(m: Path, batch: int, resolution: int, *, tokenize: bool) -> tuple[float, int]:
    import torch
    import webdataset as wds

    from curate.shards import tokenizer

    tok = tokenizer()
    tars = sorted(str(p) for p in (m / "images" / "train").glob("*.tar"))

    def to_tensor(sample: tuple[Image.Image, dict, str]) -> tuple[torch.Tensor, int, str]:
        img, meta, caption = sample
        img = img.convert("RGB")
        if img.size != (resolution, resolution):
            img = img.resize((resolution, resolution), Image.Resampling.BICUBIC)
        return torch.from_numpy(np.asarray(img).transpose(2, 0, 1).copy()), int(meta["label"]), caption

    times, rows = [], 0
    for epoch in range(1 + REPEATS):
        pipeline = (
            wds.WebDataset(tars, shardshuffle=False, empty_check=False, seed=epoch)
            .shuffle(1000)
            .decode("pil")
            .to_tuple("jpg", "json", "txt")
            .map(to_tensor)
        )
        t0 = time.perf_counter()
        rows = 0
        for chunk in _chunks(pipeline, batch):
            images, labels, captions = zip(*chunk)
            torch.stack(images), torch.tensor(labels)
            if tokenize:
                tok(list(captions))
            rows += len(images)
        times.append(time.perf_counter() - t0)
    return min(times[1:]), rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4000, help="images to generate")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args()

    from curate.shards import download_images, tensorize, tokenizer

    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="bench-shards-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        m = make_manifest(root, args.n)
        gen_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        (rep,) = download_images(m, resolution=args.resolution, processes=cores, threads=16, shard_size=500)
        dl_s = time.perf_counter() - t0
        if rep.succeeded != args.n:
            sys.exit(f"download: {rep.succeeded}/{args.n} images ({rep.failed})")

        # warm-up: the tokenizer, the page cache and the worker pool's forkserver (it imports
        # open_clip once per process; later pools fork from it), timed apart
        t0 = time.perf_counter()
        tensorize(m, split="train", resolution=args.resolution, workers=cores)
        tokenizer()  # the one-worker path tokenizes in this process
        warm_s = time.perf_counter() - t0
        results = {}
        for workers in sorted({1, cores}):
            import shutil

            times = []
            for _ in range(2):
                shutil.rmtree(m / "shards")
                t0 = time.perf_counter()
                tz = tensorize(m, split="train", resolution=args.resolution, workers=workers)
                times.append(time.perf_counter() - t0)
                assert tz.num_samples == args.n, tz
            results[workers] = min(times)

        tl_s, tl_rows = time_tensor_loader(m, args.batch)
        wd_s, wd_rows = time_wds_loader(m, args.batch, args.resolution, tokenize=False)
        wt_s, wt_rows = time_wds_loader(m, args.batch, args.resolution, tokenize=True)
        assert tl_rows == wd_rows == wt_rows == args.n

    n, r = args.n, args.resolution
    print(f"bench_shards: {n} images, {r} px, batch {args.batch}, {cores} CPU core(s)")
    print(f"  generate sources                 {gen_s:8.2f} s")
    print(
        f"  download (img2dataset, file://)  {dl_s:8.2f} s  {n / dl_s:10.0f} images/s  (includes img2dataset start-up)"
    )
    print(
        f"  tensorize warm-up (first call)   {warm_s:8.2f} s  (imports open_clip/torch here and in the forkserver)"
    )
    for workers, s in results.items():
        print(f"  tensorize, {workers} worker(s) (best of 2) {s:6.2f} s  {n / s:10.0f} images/s")
    print("  loaders, one epoch (warm, best of 3), single process:")
    print(f"    tensor shards (mmap)           {tl_s:8.3f} s  {n / tl_s:10.0f} images/s")
    print(f"    webdataset + PIL decode        {wd_s:8.3f} s  {n / wd_s:10.0f} images/s")
    print(f"    webdataset + PIL + tokenize    {wt_s:8.3f} s  {n / wt_s:10.0f} images/s")
    print(f"  ratio tensor / webdataset+PIL:            {wd_s / tl_s:6.1f}x  (target >= 10x)")
    print(f"  ratio tensor / webdataset+PIL+tokenize:   {wt_s / tl_s:6.1f}x")


if __name__ == "__main__":
    main()
