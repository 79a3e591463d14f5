"""Training throughput per objective beside open_clip's own training loop, in one run, as ratios.

Same data, same model (``--model``, default ``tiny``), same batch size, device and precision for
every row. The data is a demo manifest the benchmark builds with ``curate build`` and
``curate shards`` in a temporary folder (about a minute), or ``--manifest``.

1. Training steps, images/s, input included: each step is timed from the end of the one before
   to the end of its own (optimiser step done); the first step (allocation, worker start-up) is
   left out. On the CPU a row's rate is the batch size over its median step time, which a
   shared machine's bursts of other work move least; on CUDA it is the images of all timed steps
   over their wall time, with one device sync at each end and none between. Every row runs once
   per round (``--rounds``), rows interleaved, and its best round counts.

   - ``open_clip_train``: the installed open_clip_torch's own trainer, its ``main`` run as a
     subprocess with CLI options on the manifest's ``curate export --format openclip-csv`` (JPEG
     decode + torchvision transforms in a DataLoader with ``--workers``), AdamW with curate's
     betas/eps/decay; again with ``--lock-text`` on a pretrained checkpoint (a frozen text tower).
     It is timed by a global ``torch.optim`` step hook in that process, not by its log.
   - ``open_clip loop``: a plain loop, ``model(images, texts)`` + ``open_clip.ClipLoss`` + AdamW
     on curate's tensor shards + ``gpu_augment``: the step without a trainer around it (again
     with the text tower loaded and locked).
   - ``curate``: ``curate.train.train`` per objective (clip, clip with a frozen pretrained text
     tower, sl, sl-subsample, sl-frozen-text, sl-frozen-text-subsample).

   Ratios are to open_clip_train's clip run and to the plain loop's (a frozen text tower: to their
   locked-text runs; the supervised objectives have no counterpart in open_clip and are set
   against clip). Without ``open_clip_train`` (older wheels call it ``training``) its rows are
   left out and the plain loop is the reference.
2. Input pipeline alone, same manifest, batch size and output size: curate's memory-mapped
   tensor shards + batched ``gpu_augment`` against open_clip_train's ``CsvDataset`` in a
   ``DataLoader``.

    python benchmarks/bench_train.py [--quick] [--manifest manifests/NAME] [--model tiny]
        [--batch-size 128] [--steps 20] [--rounds 2] [--threads N] [--device cpu|cuda]
        [--precision fp32|bf16] [--workers 2]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# open_clip_train's main, in a fresh process: the tiny config registered first, the end of every
# optimiser step stamped by a global step hook (on CUDA a device sync after the first and the
# last, none between); the stamps come back on stdout
_OPENCLIP_TRAIN = r"""
import json, sys, time
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook
from curate.models import register_tiny
from open_clip_train.main import main

register_tiny()
steps, cuda, threads, argv = int(sys.argv[1]), sys.argv[2].startswith("cuda"), int(sys.argv[3]), sys.argv[4:]
torch.set_num_threads(threads)
stamps = []

def hook(optimizer, args, kwargs):
    if cuda and len(stamps) in (0, steps - 1):
        torch.cuda.synchronize()
    stamps.append(time.perf_counter())

register_optimizer_step_post_hook(hook)
main(argv)
print("BENCH " + json.dumps(stamps))
"""


def _env() -> dict[str, str]:
    return {**os.environ, "CURATE_NO_PROGRESS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}


def _curate(*args: str, cwd: Path) -> None:
    subprocess.run([sys.executable, "-m", "curate", *args], cwd=cwd, env=_env(), check=True)


def make_manifest(root: Path, *, classes: int, per_class: int, resolution: int) -> Path:
    _curate("build", "--imbalance", "10", "--captions", "template", "--classes", str(classes),
            "--max-per-class", str(per_class), "--eval-per-class", "8", "--allow-shortfall", "--name", "bench",
            "--out-root", "manifests", cwd=root)
    _curate("shards", "manifests/bench", "--resolution", str(resolution), cwd=root)
    return root / "manifests" / "bench"


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def rate(stamps: list[float], batch: int, device: str) -> float:
    """Images/s from the end times of steps 1..n (step 1 is the warm-up): the batch over the
    median step time on the CPU, every timed image over the wall time on CUDA."""
    import statistics

    times = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    if device == "cuda":
        return batch * len(times) / sum(times)
    return batch / statistics.median(times)


# --------------------------------------------------------------------------- training steps


def openclip_train_csv(manifest: Path, out: Path, rows: int) -> Path:
    """The manifest's train split as open_clip_train's CSV, its rows repeated to ``rows``."""
    from curate.manifest import export

    csv = next(p for p in export(manifest, "openclip-csv", out=out / "export") if p.name.startswith("train."))
    header, *lines = csv.read_text(encoding="utf-8").splitlines()
    dest = out / f"openclip-train-{rows}.csv"
    dest.write_text("\n".join([header, *(lines[i % len(lines)] for i in range(rows))]) + "\n", encoding="utf-8")
    return dest


def bench_openclip_train(csv: Path, *, model: str, batch: int, steps: int, workers: int, device: str,
                         precision: str, out: Path, name: str, locked_text: Path | None = None) -> float:
    """open_clip_train's main for one epoch of ``steps + 1`` batches, with this process's number of
    torch threads; images/s after the first."""
    import torch

    from curate.models import open_clip_name

    argv = [
        "--train-data", str(csv), "--dataset-type", "csv", "--csv-separator", "\t",
        "--csv-img-key", "filepath", "--csv-caption-key", "title",
        "--model", open_clip_name(model), "--batch-size", str(batch), "--epochs", "1", "--workers", str(workers),
        "--device", device, "--precision", {"fp32": "fp32", "bf16": "amp_bf16"}[precision],
        # curate's AdamW settings (TrainConfig defaults), so the optimiser does the same work
        "--lr", "1e-3", "--wd", "0.1", "--beta1", "0.9", "--beta2", "0.98", "--eps", "1e-6", "--warmup", "1",
        "--seed", "0", "--logs", str(out / "openclip-logs"), "--name", name,
        "--log-every-n-steps", str(steps + 10), "--save-frequency", "0", "--report-to", "",
    ]
    if locked_text is not None:
        # plain CLIPs lock their LayerNorms with the rest (open_clip asserts the flag)
        argv += ["--pretrained", str(locked_text), "--lock-text", "--lock-text-freeze-layer-norm"]
    proc = subprocess.run([sys.executable, "-c", _OPENCLIP_TRAIN, str(steps + 1), device, str(torch.get_num_threads()), *argv],
                          env=_env(), capture_output=True, text=True)
    result = next((line for line in proc.stdout.splitlines() if line.startswith("BENCH ")), None)
    if proc.returncode != 0 or result is None:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"open_clip_train ({name}) failed with exit code {proc.returncode}")
    stamps = json.loads(result[len("BENCH "):])
    if len(stamps) != steps + 1:
        raise SystemExit(f"open_clip_train ({name}) ran {len(stamps)} steps, expected {steps + 1}")
    return rate(stamps, batch, device)


def bench_plain_loop(manifest: Path, *, model: str, batch: int, steps: int, device: str, precision: str,
                     locked_text: Path | None = None) -> float:
    """model(images, texts) + open_clip.ClipLoss + AdamW on curate's tensor batches; images/s
    after the first step. AdamW is grouped and implemented as open_clip_train's (torch's default,
    where curate's trainer asks for the fused kernel). ``locked_text``: a checkpoint loaded and its
    text tower locked (``lock_text_tower``), as open_clip_train's ``--lock-text``."""
    import math

    import open_clip
    import torch

    from curate.loader import gpu_augment, open_shards
    from curate.models import context_length, create_clip, fit_tokens, model_image_size

    dev = torch.device(device)
    clip = create_clip(model)
    if locked_text is not None:
        clip.load_state_dict(torch.load(locked_text, weights_only=True)["state_dict"])
        clip.lock_text_tower()
    clip = clip.to(dev)
    size, ctx = model_image_size(clip), context_length(clip)
    params = [(n, p) for n, p in clip.named_parameters() if p.requires_grad]
    exclude = [p for n, p in params if p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n]
    include = [p for n, p in params if not any(p is q for q in exclude)]
    optimizer = torch.optim.AdamW([{"params": exclude, "weight_decay": 0.0}, {"params": include, "weight_decay": 0.1}],
                                  lr=1e-3, betas=(0.9, 0.98), eps=1e-6)
    loss_fn = open_clip.ClipLoss()
    shards = open_shards(manifest, "train")
    gen = torch.Generator(device=dev)
    gen.manual_seed(0)
    clip.train()
    stamps: list[float] = []
    epoch = 0
    while len(stamps) <= steps:
        for b in shards.batches(batch, seed=0, epoch=epoch, drop_last=True, device=dev, pin_memory=dev.type == "cuda"):
            images = gpu_augment(b.images, train=True, out_size=size, generator=gen)
            texts = fit_tokens(b.tokens, ctx).to(dev, non_blocking=True)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                img_f, txt_f, scale = clip(images, texts)[:3]
                loss = loss_fn(img_f, txt_f, scale)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                clip.logit_scale.clamp_(0, math.log(100))
            if len(stamps) in (0, steps):
                _sync(dev)
            stamps.append(time.perf_counter())
            if len(stamps) > steps:
                break
        epoch += 1
    return rate(stamps, batch, device)


TRAIN, TRAIN_LOCKED = "open_clip_train clip", "open_clip_train clip --lock-text"
LOOP, LOOP_LOCKED = "open_clip loop, clip", "open_clip loop, clip, locked text"
REF_NAMES = {TRAIN: "clip", TRAIN_LOCKED: "--lock-text", LOOP: "clip", LOOP_LOCKED: "locked text"}

# the rows of curate's trainer: (label, objective, frozen pretrained text tower)
CURATE_ROWS = (
    ("clip", "clip", False),
    ("clip --text-tower frozen", "clip", True),
    ("sl", "sl", False),
    ("sl-subsample", "sl-subsample", False),
    ("sl-frozen-text", "sl-frozen-text", False),
    ("sl-frozen-text-subsample", "sl-frozen-text-subsample", False),
)


def bench_curate(manifest: Path, objective: str, round_: int, *, model: str, batch: int, steps: int, device: str,
                 precision: str, out: Path, pretrained: Path | None = None) -> float:
    from curate.runs import TrainConfig
    from curate.train import train

    frozen = {"pretrained": str(pretrained), "text_tower": "frozen"} if pretrained is not None else {}
    # CPU: a log row after every step, whose cumulative train_time_s is the step's end time (the
    # trainer books time when it reads the loss). CUDA: its steady rate, which leaves step 1 out
    # and syncs only after it and after the last (log_every past the end: no rows between).
    cuda = device == "cuda"
    cfg = TrainConfig(objective=objective, model=model, steps=steps + 1, batch_size=batch, device=device,
                      precision=precision, log_every=steps + 1 if cuda else 1, **frozen)
    result = train(manifest, cfg, out=out / str(round_))
    if cuda:
        return result.images_per_s
    stamps = [row["train_time_s"] for row in result.log]
    return rate(stamps, batch, device)


def save_pretrained(model: str, path: Path) -> Path:
    """A CLIP checkpoint file (random weights, seed 1) for the frozen-text rows of both trainers."""
    import torch

    from curate.models import create_clip

    torch.save({"state_dict": create_clip(model, seed=1).state_dict()}, path)
    return path


# --------------------------------------------------------------------------- input pipeline


def bench_curate_input(manifest: Path, *, batch: int, batches: int, size: int, device: str) -> float:
    import torch

    from curate.loader import gpu_augment, open_shards

    dev = torch.device(device)
    shards = open_shards(manifest, "train")
    seen, epoch = 0, 0
    t0 = time.perf_counter()
    while seen < batch * batches:
        for b in shards.batches(batch, seed=0, epoch=epoch, drop_last=True, device=dev, pin_memory=dev.type == "cuda"):
            gpu_augment(b.images, train=True, out_size=size)
            seen += len(b)
            if seen >= batch * batches:
                break
        epoch += 1
    _sync(dev)
    return seen / (time.perf_counter() - t0)


def bench_openclip_input(csv: Path, *, model: str, batch: int, batches: int, size: int, workers: int) -> float:
    import open_clip
    import torch
    from open_clip_train.data import CsvDataset

    from curate.models import open_clip_name, register_tiny

    register_tiny()
    preprocess = open_clip.image_transform(size, is_train=True)
    ds = CsvDataset(str(csv), preprocess, img_key="filepath", caption_key="title", sep="\t",
                    tokenizer=open_clip.get_tokenizer(open_clip_name(model)))
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


# --------------------------------------------------------------------------- main


def main() -> None:
    from curate.models import MODELS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", type=Path, help="a manifest folder with tensor shards and local image paths")
    ap.add_argument("--quick", action="store_true",
                    help="8 timed steps, 1 round, 10 input batches, a smaller manifest (2 shared CPU cores: ~4 min)")
    ap.add_argument("--model", default="tiny", choices=tuple(MODELS), help="the architecture of every row")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, help="timed training steps per row, after one warm-up step (default 20; --quick 8)")
    ap.add_argument("--rounds", type=int, help="measure every row this many times, interleaved; the best counts "
                    "(default 2; --quick 1)")
    ap.add_argument("--batches", type=int, help="batches for the input-pipeline comparison (default 30; --quick 10)")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="open_clip_train's DataLoader workers")
    ap.add_argument("--threads", type=int,
                    help="torch threads in every process (default on the CPU 1, on CUDA torch's own; 0 = torch's own): "
                         "on a shared machine a thread that waits for a busy core stalls the others, and rates "
                         "with 2 threads swung 25x between rounds here")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument("--resolution", type=int, default=32, help="shard resolution of the manifest the benchmark builds")
    args = ap.parse_args()
    steps = args.steps or (8 if args.quick else 20)
    batches = args.batches or (10 if args.quick else 30)
    rounds = args.rounds or (1 if args.quick else 2)
    os.environ.update(CURATE_NO_PROGRESS="1", NO_ALBUMENTATIONS_UPDATE="1")
    import torch

    from curate.models import create_clip, model_image_size

    threads = args.threads if args.threads is not None else (1 if args.device == "cpu" else 0)
    if threads:
        torch.set_num_threads(threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    # the trainer ships in the open_clip_torch wheel (older wheels named it ``training``)
    has_train = importlib.util.find_spec("open_clip_train") is not None

    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        root = Path(tmp)
        t_start = time.perf_counter()
        manifest = args.manifest or make_manifest(root, classes=20, per_class=200 if args.quick else 400,
                                                  resolution=args.resolution)
        size = model_image_size(create_clip(args.model))
        csv = openclip_train_csv(manifest, root, rows=(steps + 1) * args.batch_size)
        ckpt = save_pretrained(args.model, root / "pretrained.pt")
        common = {"model": args.model, "batch": args.batch_size, "steps": steps, "device": args.device,
                  "precision": args.precision}
        load_before = os.getloadavg()[0]

        # every row once per round, rounds interleaved; a row's best round counts
        runs: dict[str, Callable[[int], float]] = {}
        if has_train:
            runs[TRAIN] = lambda i: bench_openclip_train(csv, workers=args.workers, out=root, name=f"clip-{i}", **common)
            runs[TRAIN_LOCKED] = lambda i: bench_openclip_train(csv, workers=args.workers, out=root, name=f"locked-{i}",
                                                                locked_text=ckpt, **common)
        runs[LOOP] = lambda i: bench_plain_loop(manifest, **common)
        runs[LOOP_LOCKED] = lambda i: bench_plain_loop(manifest, locked_text=ckpt, **common)
        for label, objective, frozen in CURATE_ROWS:
            runs[f"curate {label}"] = functools.partial(bench_curate, manifest, objective, out=root / "runs" / label.replace(" ", "_"),
                                                        pretrained=ckpt if frozen else None, **common)
        measured: dict[str, list[float]] = {label: [] for label in runs}
        for i in range(rounds):
            for label, run in runs.items():
                with contextlib.redirect_stderr(io.StringIO()):  # the trainer's summary line: its rate is not this one
                    measured[label].append(run(i))
        rates = {label: max(r) for label, r in measured.items()}
        ours_in = bench_curate_input(manifest, batch=args.batch_size, batches=batches, size=size, device=args.device)
        theirs_in = None
        if has_train:
            theirs_in = bench_openclip_input(csv, model=args.model, batch=args.batch_size, batches=batches, size=size,
                                             workers=args.workers)
        elapsed = time.perf_counter() - t_start

    estimator = "median step" if args.device == "cpu" else "all timed steps"
    print(f"training steps: model {args.model} ({size} px), batch {args.batch_size}, {steps} timed steps after 1 warm-up "
          f"({estimator}), best of {rounds} round(s), {args.device} {args.precision}, {torch.get_num_threads()} torch "
          "thread(s)" + (f", open_clip_train with {args.workers} DataLoader workers" if has_train else ""))
    if not has_train:
        print("  open_clip_train is not installed with open_clip_torch here: ratios are to the plain open_clip loop only")
    spread = rounds > 1
    print(f"  {'loop':<40} {'images/s':>9}" + ("   rounds (min-max)" if spread else "")
          + f"   {'vs open_clip_train':<26} vs open_clip loop")
    for label, r in rates.items():
        locked = label in (TRAIN_LOCKED, LOOP_LOCKED, "curate clip --text-tower frozen")
        cells = []
        for ref in ((TRAIN_LOCKED if locked else TRAIN) if has_train else None, LOOP_LOCKED if locked else LOOP):
            cells.append(f"{r / rates[ref]:6.2f}x {REF_NAMES[ref]}" if ref else "")
        lo_hi = f"   {min(measured[label]):7.0f}-{max(measured[label]):<8.0f}" if spread else ""
        print(f"  {label:<40} {r:9.0f}{lo_hi}   {cells[0]:<26} {cells[1]}".rstrip())
    print("  (sl objectives train no text tower and have no counterpart in open_clip: they are set against clip;")
    print("   curate's AdamW is the fused kernel, open_clip_train's and the plain loop's torch's default)")
    print(f"input pipeline alone, batch {args.batch_size}, {size} px:")
    print(f"  curate tensor shards + gpu_augment ({args.device}): {ours_in:9.0f} images/s")
    if theirs_in is not None:
        print(f"  open_clip_train CsvDataset, {args.workers} workers:       {theirs_in:9.0f} images/s")
        print(f"  ratio curate / open_clip_train:           {ours_in / theirs_in:9.2f}x")
    print(f"({elapsed:.0f} s in all; load average {load_before:.1f} at the first row, {os.getloadavg()[0]:.1f} at the end, "
          f"on {os.cpu_count()} cores)")

if __name__ == "__main__":
    main()
