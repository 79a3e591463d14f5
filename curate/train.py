"""The bundled validation trainer: one loop for every objective, on a manifest's tensor shards.

Owns the training loop, the optimiser (AdamW as open_clip trains CLIP, or SGD with momentum as
the study trains its supervised baselines) and the learning-rate schedule, the training log and
summary, checkpoints at epoch ends and on Ctrl-C, and resume. What differs between objectives
(model, loss) is ``curate.objectives``'; the run folder and its configuration are
``curate.runs``'; weights from outside (``--pretrained``, ``--head``) are ``curate.pretrained``'s.

Everything that makes a step random is seeded from ``(seed, epoch)`` (the loader's order) or
``(seed, step)`` (augmentation, class subsets). A run resumed from a checkpoint therefore ends with
the same weights as one that never stopped (bit for bit on CPU).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from curate.errors import CurateError
from curate.models import clamp_logit_scale, model_image_size
from curate.objectives import OBJECTIVES, Setup
from curate.runs import (
    CHECKPOINT,
    LOG_FILE,
    RUN_FILE,
    SUMMARY_FILE,
    TrainConfig,
    autocast,
    default_run_dir,
    load_checkpoint,
    read_run,
    resolve_device,
    save_checkpoint,
    trim_log,
    write_run,
)
from curate.util import write_text_atomic


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    epochs_done: int
    images_seen: int
    train_time_s: float
    images_per_s: float
    final_loss: float
    log: list[dict] = field(default_factory=list)


# --------------------------------------------------------------------------- optimiser, schedule


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW as open_clip trains CLIP (no decay on gains, biases, norms and the temperature), or
    SGD with momentum as the study trains its supervised models (decay on every weight)."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD([p for _, p in params], lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    decay, no_decay = [], []
    for name, p in params:
        exclude = p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
        (no_decay if exclude else decay).append(p)
    groups = [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": cfg.weight_decay}]
    # the fused kernel updates the 6M-row token table in one pass (a third of a tiny CPU step)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6, fused=True)


def lr_at(step: int, *, base: float, total: int, warmup: int, schedule: str) -> float:
    """Linear warmup, then cosine decay to zero (or constant). ``step`` counts from 0."""
    if warmup > 0 and step < warmup:
        return base * (step + 1) / warmup
    if schedule == "constant":
        return base
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return 0.5 * base * (1 + math.cos(math.pi * progress))


def step_generator(seed: int, step: int, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed * 1_000_003 + step)
    return g


# --------------------------------------------------------------------------- log and clock


class Meter:
    """Loss and throughput between log lines.

    Losses stay on the device between log steps: reading one forces a sync, which would stall a
    GPU every step. Time is wall-clock between syncs and includes loading and augmentation (as
    open_clip_train's "Batch (t)"), not checkpoint writes; the first step (allocation,
    autotuning, compilation) is left out of the steady throughput.
    """

    def __init__(self, device: torch.device, train_time: float) -> None:
        self.loss = torch.zeros((), device=device)
        self.n = self.images = 0
        self.window_time = 0.0
        self.train_time = train_time
        self.steady_images, self.steady_time, self.pending, self.warm = 0, 0.0, 0, False
        self.last_loss = float("nan")
        self.mark = time.perf_counter()

    def add(self, loss: torch.Tensor, images: int) -> None:
        self.loss += loss.detach().float()
        self.n += 1
        self.images += images
        self.pending += images

    def sync(self) -> float | None:
        """Read the window's mean loss (a device sync) and book the time since the last sync."""
        if self.n == 0:
            return None
        mean = float(self.loss) / self.n
        now = time.perf_counter()
        dt, self.mark = now - self.mark, now
        self.train_time += dt
        self.window_time += dt
        if self.warm:
            self.steady_images += self.pending
            self.steady_time += dt
        self.warm, self.pending, self.last_loss = True, 0, mean
        return mean

    def row(self, *, step: int, epoch: int, lr: float, images_seen: int) -> dict:
        row = {
            "step": step,
            "epoch": epoch,
            "loss": self.last_loss,
            "lr": lr,
            "images_per_s": self.images / self.window_time if self.window_time else None,
            "images_seen": images_seen,
            "train_time_s": self.train_time,
        }
        self.loss.zero_()
        self.n = self.images = 0
        self.window_time = 0.0
        return row

    def images_per_s(self, images_seen: int) -> float:
        if self.steady_time:
            return self.steady_images / self.steady_time
        return images_seen / self.train_time if self.train_time else 0.0


# --------------------------------------------------------------------------- the run


def _setup(cfg: TrainConfig, shards, *, for_training: bool) -> Setup:
    from curate.pretrained import load_head, read_state

    names = list(shards.class_names)
    wnids = [w or "" for w in shards.index.get("wnids") or []]
    labels = np.asarray(shards.labels, dtype=np.int64)
    counts = np.bincount(labels[labels >= 0], minlength=len(names))  # unlabelled rows are no class
    setup = Setup(class_names=names, wnids=wnids, train_counts=counts, for_training=for_training)
    if not for_training:
        return setup
    if cfg.pretrained is not None:
        setup.pretrained = read_state(cfg.pretrained, model=cfg.model)
        setup.pretrained_source = f"--pretrained {cfg.pretrained}"
    if cfg.head is not None:
        setup.head = load_head(cfg.head, model=cfg.model, class_names=names, wnids=wnids, prompts=cfg.prompts)
    return setup


def _resume_config(run_dir: Path, manifest: Path, cfg: TrainConfig) -> TrainConfig:
    meta = read_run(run_dir)
    if Path(meta["manifest"]).resolve() != manifest.resolve():
        raise CurateError(f"--resume: {run_dir} was trained on {meta['manifest']}, not {manifest}")
    # the saved configuration wins; only the length of training may change on resume
    saved = TrainConfig.from_dict(meta["config"])
    return dataclasses.replace(saved, epochs=cfg.epochs, steps=cfg.steps).validate()


@dataclass
class Position:
    """Where a run stands; saved in every checkpoint beside the weights."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    images_seen: int = 0
    train_time_s: float = 0.0


@dataclass
class Plan:
    """A run resolved against its data: everything the loop needs besides the model."""

    cfg: TrainConfig
    run_dir: Path
    shards: object  # curate.loader.TensorShards
    setup: Setup
    device: torch.device
    batch_size: int
    steps_per_epoch: int
    total_steps: int
    warmup: int
    rows: object = None  # np.ndarray: the global row ids an epoch covers; None: every row
    unlabelled: int = 0  # rows naming no class (label -1) in the train split
    unlabelled_skipped: int = 0  # of those, the ones this objective leaves out


def plan_run(manifest: Path, cfg: TrainConfig, *, out: Path | None, resume: bool) -> Plan:
    from curate.loader import open_shards

    cfg = cfg.validate()
    run_dir = Path(out) if out is not None else default_run_dir(manifest, cfg)
    if resume:
        cfg = _resume_config(run_dir, manifest, cfg)
    elif (run_dir / RUN_FILE).exists() or (run_dir / CHECKPOINT).exists():
        raise CurateError(f"--out {run_dir} already holds a run; pass --resume to continue it, or choose another --out")
    device = resolve_device(cfg.device)
    shards = open_shards(manifest, split="train")
    n = int(shards.num_samples)
    # rows naming no class (--keep-unmatched): clip trains on them, a supervised objective has no target
    unlabelled = int((shards.labels < 0).sum())
    rows = shards.labelled_rows if unlabelled and OBJECTIVES[cfg.objective].labelled_only else None
    if rows is not None:
        n = len(rows)
    if n < 2:
        kind = f" labelled ({unlabelled} unlabelled rows, which --objective {cfg.objective} skips)" if rows is not None else ""
        raise CurateError(f"{manifest}: the train split has {n}{kind} samples; training needs at least 2")
    batch_size = min(cfg.batch_size, n)
    # contrastive batches must be full (the loss changes with batch size); at least one per epoch
    steps_per_epoch = n // batch_size
    total_steps = cfg.steps if cfg.steps is not None else cfg.epochs * steps_per_epoch
    warmup = cfg.warmup if cfg.warmup is not None else round(0.05 * total_steps)
    setup = _setup(cfg, shards, for_training=not resume)  # a resumed run's checkpoint holds every weight
    return Plan(cfg, run_dir, shards, setup, device, batch_size, steps_per_epoch, total_steps, warmup,
                rows=rows, unlabelled=unlabelled, unlabelled_skipped=unlabelled if rows is not None else 0)


def _run_meta(plan: Plan, manifest: Path, model: nn.Module) -> dict:
    return {
        "config": plan.cfg.to_dict(),
        "manifest": str(manifest.resolve()),
        "num_classes": plan.setup.num_classes,
        "class_names": plan.setup.class_names,
        "wnids": plan.setup.wnids,
        "train_counts": plan.setup.train_counts.astype(int).tolist(),
        "train_samples": int(plan.shards.num_samples) - plan.unlabelled_skipped,  # the rows an epoch covers
        "unlabelled_samples": plan.unlabelled,  # rows naming no class (label -1)
        "unlabelled_skipped": plan.unlabelled_skipped,  # of those, left out: a supervised objective has no target
        "shard_resolution": int(plan.shards.resolution),
        "image_size": model_image_size(model),
        "batch_size": plan.batch_size,
        "steps_per_epoch": plan.steps_per_epoch,
        "total_steps": plan.total_steps,
        "warmup_steps": plan.warmup,
        "device": str(plan.device),
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "torch": torch.__version__,
    }


def _save(plan: Plan, model: nn.Module, optimizer: torch.optim.Optimizer, pos: Position, meter: Meter) -> None:
    """Checkpoint; the time spent writing it is not training time."""
    meter.sync()
    pos.train_time_s = meter.train_time
    save_checkpoint(plan.run_dir / CHECKPOINT, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                                 **dataclasses.asdict(pos)})
    meter.mark = time.perf_counter()


def train(manifest: Path, cfg: TrainConfig, *, out: Path | None = None, resume: bool = False) -> TrainResult:
    """Train ``cfg`` on ``manifest``'s train shards into the run folder ``out``.

    Checkpoints atomically at every ``checkpoint_epochs`` epoch ends, every ``save_every`` steps,
    after the last step and on Ctrl-C; ``resume=True`` continues from the folder's checkpoint with
    the configuration saved there (``cfg`` may raise ``epochs``/``steps`` to train longer).
    Evaluation is ``curate.evaluate.evaluate_run`` (the CLI runs it next).
    """
    from curate.loader import gpu_augment
    from curate.ui import info, make_progress

    manifest = Path(manifest)
    plan = plan_run(manifest, cfg, out=out, resume=resume)
    cfg, device, run_dir = plan.cfg, plan.device, plan.run_dir
    objective = OBJECTIVES[cfg.objective]
    torch.manual_seed(cfg.seed)
    model = objective.build(cfg, plan.setup).to(device)
    image_size = model_image_size(model)
    optimizer = make_optimizer(model, cfg)
    loss_fn = objective.loss_fn(cfg, plan.setup, device)
    forward_model = torch.compile(model) if cfg.compile else model
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    pos = Position()
    if resume:
        state = load_checkpoint(run_dir / CHECKPOINT)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        pos = Position(**{f.name: state[f.name] for f in dataclasses.fields(Position)})
        trim_log(run_dir / LOG_FILE, pos.step)
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / LOG_FILE).unlink(missing_ok=True)
    write_run(run_dir, _run_meta(plan, manifest, model))
    if plan.unlabelled_skipped:
        info(f"{cfg.objective}: skipping the {plan.unlabelled_skipped:,} unlabelled rows (no class; --keep-unmatched) of "
             f"{manifest}; training on its {len(plan.rows):,} labelled rows")

    meter = Meter(device, pos.train_time_s)
    log_rows: list[dict] = []
    lr = cfg.lr
    label = f"train {cfg.objective}/{cfg.model}"
    progress = make_progress()
    task = progress.add_task(label, total=plan.total_steps, completed=pos.step)
    model.train()
    try:
        with progress, open(run_dir / LOG_FILE, "a", encoding="utf-8") as log_file:
            while pos.step < plan.total_steps:
                batches = plan.shards.batches(plan.batch_size, seed=cfg.seed, epoch=pos.epoch, shuffle=True, drop_last=True,
                                              device=str(device), pin_memory=device.type == "cuda", rows=plan.rows)
                for i, batch in enumerate(batches):
                    if i < pos.batch_in_epoch:
                        continue  # resumed mid-epoch: these batches were trained before
                    if pos.step >= plan.total_steps:
                        break
                    lr = lr_at(pos.step, base=cfg.lr, total=plan.total_steps, warmup=plan.warmup, schedule=cfg.schedule)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    images = gpu_augment(batch.images, train=True, out_size=image_size,
                                         generator=step_generator(cfg.seed, pos.step, device))
                    labels = batch.labels.to(device, non_blocking=True)
                    with autocast(device, cfg.precision):
                        loss = loss_fn(forward_model, images, batch.tokens, labels,
                                       step_generator(cfg.seed, pos.step, torch.device("cpu")))
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    clamp_logit_scale(model)
                    pos.step, pos.batch_in_epoch, pos.images_seen = pos.step + 1, pos.batch_in_epoch + 1, pos.images_seen + len(batch)
                    meter.add(loss, len(batch))
                    progress.advance(task)
                    logged = pos.step % cfg.log_every == 0 or pos.step == plan.total_steps
                    if logged or not meter.warm:
                        mean = meter.sync()
                        if not math.isfinite(mean):
                            raise CurateError(f"training diverged by step {pos.step} (loss {mean}); lower --lr (now {cfg.lr})")
                    if logged:
                        log_rows.append(meter.row(step=pos.step, epoch=pos.epoch, lr=lr, images_seen=pos.images_seen))
                        log_file.write(json.dumps(log_rows[-1]) + "\n")
                        log_file.flush()
                        progress.update(task, description=f"{label} loss {meter.last_loss:.3f}")
                    if cfg.save_every and pos.step % cfg.save_every == 0 and pos.step < plan.total_steps:
                        _save(plan, model, optimizer, pos, meter)
                else:  # the epoch ran out (rather than the step budget)
                    pos.epoch, pos.batch_in_epoch = pos.epoch + 1, 0
                if pos.step >= plan.total_steps or pos.epoch % cfg.checkpoint_epochs == 0:
                    _save(plan, model, optimizer, pos, meter)
    except KeyboardInterrupt:
        _save(plan, model, optimizer, pos, meter)
        info(f"interrupted at step {pos.step}: checkpoint saved; continue with --resume --out {run_dir}")
        raise

    images_per_s = meter.images_per_s(pos.images_seen)
    summary = {
        "steps": pos.step,
        "epochs_done": pos.epoch,
        "images_seen": pos.images_seen,
        "train_time_s": meter.train_time,
        "images_per_s": images_per_s,
        "final_loss": meter.last_loss,
        "device": str(device),
        "precision": cfg.precision,
        "compile": cfg.compile,
        "batch_size": plan.batch_size,
        "unlabelled_skipped": plan.unlabelled_skipped,
    }
    write_text_atomic(run_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    info(
        f"trained {pos.step} steps ({pos.images_seen} images) in {meter.train_time:.1f}s, {images_per_s:.0f} images/s "
        f"on {device}; final loss {meter.last_loss:.4f}"
    )
    return TrainResult(
        run_dir=run_dir, steps=pos.step, epochs_done=pos.epoch, images_seen=pos.images_seen,
        train_time_s=meter.train_time, images_per_s=images_per_s, final_loss=meter.last_loss, log=log_rows,
    )
