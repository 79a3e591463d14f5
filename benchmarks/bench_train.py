"""Trainer input and step throughput, side by side in one run, printed as ratios.

1. Input pipeline, same manifest, same batch size and output size: curate's memory-mapped tensor
   shards + batched ``gpu_augment`` (here on the CPU) against open_clip_train's ``CsvDataset``
   (JPEG decode + per-image torchvision transforms) in a ``DataLoader``, fed the manifest's
   ``curate export --format openclip-csv``.
2. Training steps of the tiny model per registered objective (``curate.objectives.OBJECTIVES``:
   CLIP, SL, the subsampled and frozen-head variants), images/s, as ratios to CLIP's.

    python benchmarks/bench_train.py [--manifest manifests/NAME] [--batches 30] [--workers 2]

Without ``--manifest`` it builds a small demo manifest (imbalance 10, 20 classes) and its shards
in a temporary folder first (about a minute).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _curate(*args: str, cwd: Path) -> None:
    env = {**os.environ, "CURATE_NO_PROGRESS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    subprocess.run([sys.executable, "-m", "curate", *args], cwd=cwd, env=env, check=True)


def make_manifest(root: Path) -> Path:
    _curate("build", "--imbalance", "10", "--captions", "template", "--classes", "20", "--max-per-class", "400",
            "--eval-per-class", "8", "--allow-shortfall", "--name", "bench", "--out-root", "manifests", cwd=root)
    _curate("shards", "manifests/bench", "--resolution", "32", cwd=root)
    return root / "manifests" / "bench"


def bench_curate_input(manifest: Path, *, batch: int, batches: int, size: int) -> float:
    from curate.loader import gpu_augment, open_shards

    shards = open_shards(manifest, "train")
    seen, epoch = 0, 0
    t0 = time.perf_counter()
    while seen < batch * batches:
        for b in shards.batches(batch, seed=0, epoch=epoch, drop_last=True):
            gpu_augment(b.images, train=True, out_size=size)
            seen += len(b)
            if seen >= batch * batches:
                break
        epoch += 1
    return seen / (time.perf_counter() - t0)


def bench_openclip_input(manifest: Path, *, batch: int, batches: int, size: int, workers: int) -> float:
    import open_clip
    import torch
    from open_clip_train.data import CsvDataset

    from curate.manifest import export

    csv = next(p for p in export(manifest, "openclip-csv", out=manifest / "export") if p.name.startswith("train."))
    preprocess = open_clip.image_transform(size, is_train=True)
    ds = CsvDataset(str(csv), preprocess, img_key="filepath", caption_key="title", sep="\t",
                    tokenizer=open_clip.get_tokenizer("ViT-B-32"))
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                                         persistent_workers=workers > 0)
    seen = 0
    it = iter(loader)
    next(it)  # worker start-up is not throughput
    t0 = time.perf_counter()
    while seen < batch * batches:
        try:
            images, _ = next(it)
        except StopIteration:
            it = iter(loader)
            continue
        seen += images.shape[0]
    return seen / (time.perf_counter() - t0)


def bench_steps(manifest: Path, objective: str, *, batch: int, steps: int, out: Path) -> float:
    from curate.runs import TrainConfig
    from curate.train import train

    cfg = TrainConfig(objective=objective, model="tiny", steps=steps, batch_size=batch, log_every=max(1, steps // 4))
    return train(manifest, cfg, out=out / objective).images_per_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", type=Path, help="a manifest folder with tensor shards and local image paths")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    os.environ.setdefault("CURATE_NO_PROGRESS", "1")
    import torch

    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        root = Path(tmp)
        manifest = args.manifest or make_manifest(root)
        size = 32
        ours = bench_curate_input(manifest, batch=args.batch_size, batches=args.batches, size=size)
        theirs = bench_openclip_input(manifest, batch=args.batch_size, batches=args.batches, size=size, workers=args.workers)
        print(f"input pipeline, batch {args.batch_size}, {size} px, {torch.get_num_threads()} torch threads:")
        print(f"  curate tensor shards + gpu_augment (CPU): {ours:10.0f} images/s")
        print(f"  open_clip_train CsvDataset, {args.workers} workers:   {theirs:10.0f} images/s")
        print(f"  ratio curate / open_clip_train:           {ours / theirs:10.2f}x")
        print(f"training steps, tiny model, batch {args.batch_size}, {args.steps} steps, fp32 CPU:")
        from curate.objectives import OBJECTIVES

        rates = {obj: bench_steps(manifest, obj, batch=args.batch_size, steps=args.steps, out=root / "runs")
                 for obj in OBJECTIVES}
        for obj, r in rates.items():
            print(f"  {obj:<24} {r:8.0f} images/s   ({r / rates['clip']:.2f}x clip)")


if __name__ == "__main__":
    main()
