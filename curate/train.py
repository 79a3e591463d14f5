"""The bundled validation trainer: CLIP and supervised baselines on a manifest's tensor shards.

Owns the training run: its resolved configuration (``TrainConfig``), the run folder
(``run.json``, ``checkpoint.pt``, ``train_log.jsonl``, ``train_summary.json``), the objectives
(contrastive CLIP, cross-entropy over all classes, over a per-batch class subset, or against a
classifier frozen to text embeddings), the optimiser and schedule, checkpoint and resume.

Everything that makes a step random is seeded from ``(seed, epoch)``: the loader's order, the
augmentation and the class subsets. A run resumed from a checkpoint therefore ends with the same
weights as one that never stopped (bit for bit on CPU).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from curate.errors import CurateError
from curate.models import (
    MODELS,
    OBJECTIVES,
    SupervisedModel,
    context_length,
    create_clip,
    embed_dim,
    fit_tokens,
    model_image_size,
    text_classifier,
)
from curate.util import atomic_path, write_text_atomic

SCHEDULES = ("cosine", "constant")
PRECISIONS = ("fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")
CHECKPOINT = "checkpoint.pt"
RUN_FILE = "run.json"
LOG_FILE = "train_log.jsonl"
SUMMARY_FILE = "train_summary.json"


@dataclass(frozen=True)
class TrainConfig:
    """Every option of a training run; saved in ``run.json`` and reloaded on resume."""

    objective: str = "clip"
    model: str = "tiny"
    epochs: int | None = 10  # ignored when ``steps`` is set
    steps: int | None = None
    batch_size: int = 128
    lr: float = 1e-3
    schedule: str = "cosine"
    warmup: int | None = None  # steps; None = 5% of the total
    weight_decay: float = 0.1
    precision: str = "fp32"
    device: str = "auto"
    compile: bool = False
    seed: int = 0
    image_size: int | None = None  # None = the architecture's own
    subsample_classes: int | None = None  # sl-subsample: classes per softmax; None = a quarter
    text_from: str | None = None  # sl-frozen-text: a CLIP run whose text tower names the classes
    templates: str = "simple"  # prompt templates for zero-shot and frozen-text classifiers
    log_every: int = 10
    save_every: int | None = None  # steps between mid-epoch checkpoints; None = epoch ends only
    checkpoint_epochs: int = 1  # checkpoint every N epoch ends (and always at the last step)

    def validate(self) -> TrainConfig:
        choices = {
            "objective": OBJECTIVES,
            "model": tuple(MODELS),
            "schedule": SCHEDULES,
            "precision": PRECISIONS,
            "device": DEVICES,
            "templates": ("simple", "openai"),
        }
        for name, allowed in choices.items():
            value = getattr(self, name)
            if value not in allowed:
                raise CurateError(f"--{name.replace('_', '-')} {value!r} is not valid; choose one of {', '.join(allowed)}")
        positive = {"batch_size": self.batch_size, "log_every": self.log_every, "checkpoint_epochs": self.checkpoint_epochs}
        for name, value in positive.items():
            if value < 1:
                raise CurateError(f"--{name.replace('_', '-')} must be at least 1 (got {value})")
        for name in ("epochs", "steps", "save_every", "subsample_classes", "image_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise CurateError(f"--{name.replace('_', '-')} must be at least 1 (got {value})")
        if self.epochs is None and self.steps is None:
            raise CurateError("give --epochs or --steps")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise CurateError(f"--lr must be a positive number (got {self.lr})")
        if self.weight_decay < 0:
            raise CurateError(f"--weight-decay must not be negative (got {self.weight_decay})")
        if self.warmup is not None and self.warmup < 0:
            raise CurateError(f"--warmup must not be negative (got {self.warmup})")
        if self.text_from is not None and self.objective != "sl-frozen-text":
            raise CurateError("--text-from only applies to --objective sl-frozen-text")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    epochs_done: int
    images_seen: int
    train_time_s: float
    images_per_s: float
    final_loss: float
    metrics: dict | None = None
    log: list[dict] = field(default_factory=list)


# --------------------------------------------------------------------------- devices, precision


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cuda" and not torch.cuda.is_available():
        raise CurateError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    if spec not in DEVICES:
        raise CurateError(f"--device {spec!r} is not valid; choose one of {', '.join(DEVICES)}")
    return torch.device(spec)


def autocast(device: torch.device, precision: str):
    """bf16 autocast where asked for (CUDA or CPU); a no-op context for fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


# --------------------------------------------------------------------------- model per objective


def build_model(
    cfg: TrainConfig,
    *,
    num_classes: int,
    class_names: list[str],
    device: torch.device,
    for_loading: bool = False,
) -> nn.Module:
    """The model a run trains: a CLIP, or a CLIP image tower with a classifier.

    ``for_loading`` skips computing the frozen text classifier (the checkpoint carries it).
    """
    clip = create_clip(cfg.model, image_size=cfg.image_size, seed=cfg.seed)
    if cfg.objective == "clip":
        return clip.to(device)
    dim = embed_dim(clip)
    if cfg.objective in ("sl", "sl-subsample"):
        return SupervisedModel(clip.visual, dim=dim, num_classes=num_classes).to(device)
    # sl-frozen-text. Nothing is pretrained, so the class embeddings come either from a CLIP run
    # trained on this toolkit (--text-from RUN) or, by default, from this run's own freshly
    # initialised text tower: random but fixed, distinct per class name, and shared by every
    # run with the same seed -- the classifier is frozen either way.
    if for_loading:
        emb = torch.zeros(num_classes, dim)
    else:
        text_clip = clip
        if cfg.text_from is not None:
            text_clip = load_clip_from_run(Path(cfg.text_from), device=torch.device("cpu"))
            if embed_dim(text_clip) != dim:
                raise CurateError(
                    f"--text-from {cfg.text_from}: its embeddings have {embed_dim(text_clip)} dimensions, "
                    f"--model {cfg.model} has {dim}; train both with the same --model"
                )
        emb = text_classifier(text_clip, class_names, templates=cfg.templates)
    return SupervisedModel(clip.visual, dim=dim, num_classes=num_classes, head="frozen-text", class_embeddings=emb).to(
        device
    )


def load_clip_from_run(run_dir: Path, *, device: torch.device) -> nn.Module:
    """The trained CLIP of a ``clip`` run (for ``--text-from``)."""
    meta = read_run(run_dir)
    cfg = TrainConfig.from_dict(meta["config"])
    if cfg.objective != "clip":
        raise CurateError(f"--text-from {run_dir}: that run's objective is {cfg.objective}, not clip")
    model = build_model(cfg, num_classes=meta["num_classes"], class_names=meta["class_names"], device=device, for_loading=True)
    state = load_checkpoint(run_dir / CHECKPOINT)
    model.load_state_dict(state["model"])
    return model


# --------------------------------------------------------------------------- objectives


def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """The symmetric InfoNCE loss of CLIP (features already L2-normalised)."""
    logits = logit_scale * image_features.float() @ text_features.float().T
    target = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def subsample_mask(labels: torch.Tensor, num_classes: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """A ``[num_classes]`` bool mask on ``labels``' device: every class in the batch plus random
    others, ``size`` in all (more when the batch alone holds more classes).

    The study's fix for supervised learning on long-tailed data: each softmax competes against
    a random subset of classes (as CLIP's does against the captions in its batch), so head
    classes stop dominating every tail class's logit. Drawn from a CPU ``generator`` and
    selected on the device, with no host sync.
    """
    scores = torch.rand(num_classes, generator=generator).to(labels.device)
    scores[labels] = -1.0  # batch classes rank first
    mask = torch.zeros(num_classes, dtype=torch.bool, device=labels.device)
    mask[scores.topk(min(size, num_classes), largest=False).indices] = True
    mask[labels] = True
    return mask


def default_subsample(num_classes: int) -> int:
    return max(2, math.ceil(num_classes / 4))


# --------------------------------------------------------------------------- optimiser, schedule


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW as open_clip trains CLIP: no decay on gains, biases, norms and the temperature."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
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


# --------------------------------------------------------------------------- run folder


def default_run_dir(manifest: Path, cfg: TrainConfig) -> Path:
    return Path("runs") / f"{manifest.resolve().name}-{cfg.objective}-{cfg.model}"


def read_run(run_dir: Path) -> dict:
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        raise CurateError(f"{run_dir}: not a training run (no {RUN_FILE})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CurateError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def load_checkpoint(path: Path) -> dict:
    if not path.is_file():
        raise CurateError(f"{path}: no checkpoint; the run has not finished an epoch yet")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file
        raise CurateError(f"{path}: cannot read the checkpoint ({type(e).__name__}: {e})") from None


def save_checkpoint(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _trim_log(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint being resumed from."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash
    write_text_atomic(path, "".join(k + "\n" for k in kept))


# --------------------------------------------------------------------------- the loop


def _epoch_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed * 1_000_003 + epoch)
    return g


def _skip(batches: Iterator, n: int) -> Iterator:
    for _ in range(n):
        next(batches, None)
    return batches


def train(
    manifest: Path,
    cfg: TrainConfig,
    *,
    out: Path | None = None,
    resume: bool = False,
    evaluate: bool = True,
) -> TrainResult:
    """Train ``cfg`` on ``manifest``'s train shards into ``out``; then evaluate (``curate eval``).

    Checkpoints atomically at every epoch end (and every ``save_every`` steps, and on Ctrl-C);
    ``resume=True`` continues from the run folder's checkpoint, with the configuration saved there
    (``cfg`` may raise ``epochs``/``steps`` to train longer).
    """
    from curate.loader import gpu_augment, open_shards

    manifest = Path(manifest)
    cfg.validate()
    run_dir = Path(out) if out is not None else default_run_dir(manifest, cfg)
    ckpt_path = run_dir / CHECKPOINT
    if resume:
        meta = read_run(run_dir)
        saved = TrainConfig.from_dict(meta["config"])
        if Path(meta["manifest"]).resolve() != manifest.resolve():
            raise CurateError(f"--resume: {run_dir} was trained on {meta['manifest']}, not {manifest}")
        # the saved configuration wins; only the length of training may change on resume
        cfg = dataclasses.replace(saved, epochs=cfg.epochs, steps=cfg.steps).validate()
    elif (run_dir / RUN_FILE).exists() or ckpt_path.exists():
        raise CurateError(f"--out {run_dir} already holds a run; pass --resume to continue it, or choose another --out")

    device = resolve_device(cfg.device)
    shards = open_shards(manifest, split="train")
    n = int(shards.num_samples)
    if n < 2:
        raise CurateError(f"{manifest}: the train split has {n} samples; training needs at least 2")
    class_names = list(shards.class_names)
    num_classes = int(shards.num_classes)
    batch_size = min(cfg.batch_size, n)
    # contrastive batches must be full (the loss changes with batch size); at least one per epoch
    steps_per_epoch = n // batch_size
    total_steps = cfg.steps if cfg.steps is not None else cfg.epochs * steps_per_epoch
    warmup = cfg.warmup if cfg.warmup is not None else round(0.05 * total_steps)

    torch.manual_seed(cfg.seed)
    model = build_model(cfg, num_classes=num_classes, class_names=class_names, device=device)
    image_size = model_image_size(model) if cfg.objective == "clip" else model.image_size
    ctx = context_length(model) if cfg.objective == "clip" else None
    optimizer = make_optimizer(model, cfg)
    forward_model = torch.compile(model) if cfg.compile else model
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    step, epoch, batch_in_epoch, images_seen, train_time = 0, 0, 0, 0, 0.0
    if resume:
        state = load_checkpoint(ckpt_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        images_seen, train_time = state["images_seen"], state["train_time_s"]
        _trim_log(run_dir / LOG_FILE, step)
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / LOG_FILE).unlink(missing_ok=True)

    meta = {
        "config": cfg.to_dict(),
        "manifest": str(manifest.resolve()),
        "num_classes": num_classes,
        "class_names": class_names,
        "train_samples": n,
        "shard_resolution": int(shards.resolution),
        "image_size": image_size,
        "batch_size": batch_size,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total_steps,
        "warmup_steps": warmup,
        "device": str(device),
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "torch": torch.__version__,
    }
    write_text_atomic(run_dir / RUN_FILE, json.dumps(meta, indent=2) + "\n")

    def snapshot() -> dict:
        return {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "epoch": epoch,
            "batch_in_epoch": batch_in_epoch,
            "images_seen": images_seen,
            "train_time_s": train_time,
        }

    subsample_size = min(num_classes, cfg.subsample_classes or default_subsample(num_classes))
    log_rows: list[dict] = []
    from curate.ui import info, make_progress

    # Losses stay on the device between log steps: reading one forces a sync, which would stall
    # a GPU every step. Time is wall-clock between syncs and includes loading and augmentation
    # (as open_clip_train's "Batch (t)"), but not checkpoint writes.
    clock = {"mark": 0.0, "steady_from": None, "steady_images": 0, "steady_time": 0.0, "pending": 0, "last_loss": float("nan")}
    window = {"loss": torch.zeros((), device=device), "n": 0, "images": 0, "time": 0.0}

    def sync_window(*, lr: float, write: bool) -> None:
        nonlocal train_time
        if window["n"] == 0:
            return
        mean_loss = float(window["loss"]) / window["n"]  # the sync
        now = time.perf_counter()
        dt = now - clock["mark"]
        clock["mark"] = now
        train_time += dt
        window["time"] += dt
        if not math.isfinite(mean_loss):
            raise CurateError(f"training diverged by step {step} (loss {mean_loss}); lower --lr (now {cfg.lr})")
        if clock["steady_from"] is None:
            # the first step pays for allocation, autotuning and compilation: not throughput
            clock["steady_from"] = step
        else:
            clock["steady_images"] += clock["pending"]
            clock["steady_time"] += dt
        clock["pending"] = 0
        clock["last_loss"] = mean_loss
        if write:
            row = {
                "step": step,
                "epoch": epoch,
                "loss": mean_loss,
                "lr": lr,
                "images_per_s": window["images"] / window["time"] if window["time"] else None,
                "images_seen": images_seen,
                "train_time_s": train_time,
            }
            log_rows.append(row)
            log_file.write(json.dumps(row) + "\n")
            log_file.flush()
            progress.update(task, description=f"train {cfg.objective}/{cfg.model} loss {mean_loss:.3f}")
            window["loss"].zero_()
            window.update(n=0, images=0, time=0.0)

    def checkpoint(lr: float) -> None:
        sync_window(lr=lr, write=False)
        save_checkpoint(ckpt_path, snapshot())
        clock["mark"] = time.perf_counter()

    log_file = open(run_dir / LOG_FILE, "a", encoding="utf-8")  # noqa: SIM115 -- closed in finally
    progress = make_progress()
    task = progress.add_task(f"train {cfg.objective}/{cfg.model}", total=total_steps, completed=step)
    model.train()
    lr = cfg.lr
    try:
        with progress:
            clock["mark"] = time.perf_counter()
            while step < total_steps:
                gen = _epoch_generator(cfg.seed, epoch, device)
                cpu_gen = _epoch_generator(cfg.seed, epoch, torch.device("cpu"))
                batches = iter(
                    shards.batches(
                        batch_size,
                        seed=cfg.seed,
                        epoch=epoch,
                        shuffle=True,
                        drop_last=True,
                        device=str(device),
                        pin_memory=device.type == "cuda",
                    )
                )
                if batch_in_epoch:
                    # replay the generators too, so a mid-epoch resume sees the same randomness
                    for _ in range(batch_in_epoch):
                        b = next(batches)
                        gpu_augment(b.images, train=True, out_size=image_size, generator=gen)
                        if cfg.objective == "sl-subsample":
                            subsample_mask(b.labels, num_classes, subsample_size, cpu_gen)
                    clock["mark"] = time.perf_counter()
                for batch in batches:
                    if step >= total_steps:
                        break
                    lr = lr_at(step, base=cfg.lr, total=total_steps, warmup=warmup, schedule=cfg.schedule)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    images = gpu_augment(batch.images, train=True, out_size=image_size, generator=gen)
                    labels = batch.labels.to(device, non_blocking=True)
                    with autocast(device, cfg.precision):
                        if cfg.objective == "clip":
                            tokens = fit_tokens(batch.tokens, ctx).to(device, non_blocking=True)
                            img_f, txt_f, scale = forward_model(images, tokens)[:3]
                            loss = clip_loss(img_f, txt_f, scale)
                        else:
                            logits = forward_model(images).float()
                            if cfg.objective == "sl-subsample":
                                mask = subsample_mask(labels, num_classes, subsample_size, cpu_gen)
                                logits = logits.masked_fill(~mask, float("-inf"))
                            loss = F.cross_entropy(logits, labels)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    if hasattr(model, "logit_scale"):
                        with torch.no_grad():  # as open_clip: a temperature above 100 destabilises
                            model.logit_scale.clamp_(0, math.log(100))
                    bs = int(batch.labels.shape[0])
                    step += 1
                    batch_in_epoch += 1
                    images_seen += bs
                    window["loss"] += loss.detach().float()
                    window["n"] += 1
                    window["images"] += bs
                    clock["pending"] += bs
                    progress.advance(task)
                    logged = step % cfg.log_every == 0 or step == total_steps
                    if logged or clock["steady_from"] is None:
                        sync_window(lr=lr, write=logged)
                    if cfg.save_every and step % cfg.save_every == 0 and step < total_steps:
                        checkpoint(lr)
                else:  # the epoch ran out (rather than the step budget)
                    epoch += 1
                    batch_in_epoch = 0
                if step >= total_steps or epoch % cfg.checkpoint_epochs == 0:
                    checkpoint(lr)
    except KeyboardInterrupt:
        save_checkpoint(ckpt_path, snapshot())
        info(f"interrupted at step {step}: checkpoint saved; continue with --resume --out {run_dir}")
        raise
    finally:
        log_file.close()

    last_loss = clock["last_loss"]
    if clock["steady_time"]:
        images_per_s = clock["steady_images"] / clock["steady_time"]
    else:
        images_per_s = images_seen / train_time if train_time else 0.0
    summary = {
        "steps": step,
        "epochs_done": epoch,
        "images_seen": images_seen,
        "train_time_s": train_time,
        "images_per_s": images_per_s,
        "final_loss": last_loss,
        "device": str(device),
        "precision": cfg.precision,
        "compile": cfg.compile,
        "batch_size": batch_size,
    }
    write_text_atomic(run_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    info(
        f"trained {step} steps ({images_seen} images) in {train_time:.1f}s, {images_per_s:.0f} images/s "
        f"on {device}; final loss {last_loss:.4f}"
    )
    metrics = None
    if evaluate:
        from curate.evaluate import evaluate_run

        metrics = evaluate_run(run_dir)
    return TrainResult(
        run_dir=run_dir,
        steps=step,
        epochs_done=epoch,
        images_seen=images_seen,
        train_time_s=train_time,
        images_per_s=images_per_s,
        final_loss=last_loss,
        metrics=metrics,
        log=log_rows,
    )


def load_trained(run_dir: Path, *, device: torch.device) -> tuple[dict, TrainConfig, nn.Module]:
    """A run's metadata, configuration and trained model (in eval mode) from its checkpoint."""
    meta = read_run(run_dir)
    cfg = TrainConfig.from_dict(meta["config"])
    model = build_model(cfg, num_classes=meta["num_classes"], class_names=meta["class_names"], device=torch.device("cpu"), for_loading=True)
    state = load_checkpoint(Path(run_dir) / CHECKPOINT)
    model.load_state_dict(state["model"])
    model.to(device).eval()
    return meta, cfg, model
