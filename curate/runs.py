"""A training run's folder and configuration: what ``curate train`` writes and everything else reads.

Owns ``TrainConfig`` (every option of a run, saved in ``run.json``) and its named presets, the
run folder's files (``run.json``, ``checkpoint.pt``, ``train_log.jsonl``, ``train_summary.json``),
atomic checkpoints, the device and precision a run uses, and the one loader of a trained model
(``load_trained``) that evaluation, ``--pretrained RUN`` and ``--head RUN`` share.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from curate.errors import CurateError
from curate.models import CLASSIFIERS, MODELS, PROMPT_ALIASES, PROMPT_SETS, prompt_set
from curate.objectives import OBJECTIVES, Setup
from curate.util import atomic_path, write_text_atomic

SCHEDULES = ("cosine", "constant")
OPTIMIZERS = ("adamw", "sgd")
PRECISIONS = ("fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")
IMAGE_TOWERS = ("scratch", "init")
TEXT_TOWERS = ("scratch", "init", "frozen")
SUBSAMPLE_WEIGHTS = ("uniform", "linear", "sqrt")

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
    optimizer: str = "adamw"
    lr: float = 1e-3
    momentum: float = 0.9  # sgd only
    schedule: str = "cosine"
    warmup: int | None = None  # steps; None = 5% of the total
    weight_decay: float = 0.1
    precision: str = "fp32"
    device: str = "auto"
    compile: bool = False
    seed: int = 0
    image_size: int | None = None  # None = the architecture's own
    classifier: str = "linear"  # sl, sl-subsample: linear | cosine
    subsample_classes: int | None = None  # subsample objectives: classes per softmax; None = the paper's 50
    subsample_weights: str = "uniform"  # how the other classes are drawn: uniform | linear | sqrt in frequency
    pretrained: str | None = None  # an open_clip checkpoint file or a curate run
    image_tower: str = "scratch"  # scratch | init (from --pretrained)
    text_tower: str = "scratch"  # clip: scratch | init | frozen (from --pretrained)
    head: str | None = None  # frozen-text objectives: a head file (`curate text-head`) or a clip run
    prompts: str = "simple"  # prompt set for zero-shot scoring and frozen heads
    preset: str | None = None  # the named preset applied (recorded, already resolved into the fields)
    log_every: int = 10
    save_every: int | None = None  # steps between mid-epoch checkpoints; None = epoch ends only
    checkpoint_epochs: int = 1  # checkpoint every N epoch ends (and always at the last step)

    def validate(self) -> TrainConfig:
        choices = {
            "objective": tuple(OBJECTIVES),
            "model": tuple(MODELS),
            "optimizer": OPTIMIZERS,
            "schedule": SCHEDULES,
            "precision": PRECISIONS,
            "device": DEVICES,
            "classifier": CLASSIFIERS,
            "subsample_weights": SUBSAMPLE_WEIGHTS,
            "image_tower": IMAGE_TOWERS,
            "text_tower": TEXT_TOWERS,
            "prompts": PROMPT_SETS + ("openai",),
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
        if not 0 <= self.momentum < 1:
            raise CurateError(f"--momentum must be in [0, 1) (got {self.momentum})")
        if self.warmup is not None and self.warmup < 0:
            raise CurateError(f"--warmup must not be negative (got {self.warmup})")
        if (self.image_tower != "scratch" or self.text_tower != "scratch") and self.pretrained is None:
            raise CurateError("--image-tower/--text-tower init or frozen need --pretrained PATH (a checkpoint or a run)")
        OBJECTIVES[self.objective].check(self)
        return dataclasses.replace(self, prompts=prompt_set(self.prompts))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        data = dict(data)
        # run.json of earlier versions: --templates, --text-from
        if "templates" in data:
            data.setdefault("prompts", PROMPT_ALIASES.get(data["templates"], data["templates"]))
        if data.get("text_from"):
            data.setdefault("head", data["text_from"])
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# Named settings of the reference study. A preset fills fields the user did not give; options
# given on the command line win. ``lr`` follows the study's linear scaling rule (0.1 per 256).
PRESETS: dict[str, dict] = {
    "paper-sl": {
        "objective": "sl",
        # exps_sup/train_sup.py + scripts: SGD momentum 0.9, lr 0.1 x batch/256, wd 1e-4 on every
        # weight, cosine annealing to 0 without warmup, 90 epochs of batch 256, cosine classifier
        "optimizer": "sgd",
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "schedule": "cosine",
        "warmup": 0,
        "epochs": 90,
        "batch_size": 256,
        "classifier": "cosine",
        "prompts": "a+cname",
    },
}


def apply_preset(name: str, given: dict) -> dict:
    """``given`` (options set explicitly, None = not given) filled from the preset ``name``."""
    if name not in PRESETS:
        raise CurateError(f"--preset {name!r} is not known; choose one of {', '.join(PRESETS)}")
    out = {**PRESETS[name], **{k: v for k, v in given.items() if v is not None}, "preset": name}
    chosen = OBJECTIVES.get(out["objective"])
    if chosen is not None and chosen.frozen and given.get("classifier") is None:
        out.pop("classifier")  # a frozen head is cosine already
    if given.get("lr") is None:
        out["lr"] = PRESETS[name]["lr"] * out["batch_size"] / 256
    return out


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


# --------------------------------------------------------------------------- the run folder


def default_run_dir(manifest: Path, cfg: TrainConfig) -> Path:
    return Path("runs") / f"{manifest.resolve().name}-{cfg.objective}-{cfg.model}"


def is_run(path: Path) -> bool:
    return (Path(path) / RUN_FILE).is_file()


def read_run(run_dir: Path) -> dict:
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        raise CurateError(f"{run_dir}: not a training run (no {RUN_FILE})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CurateError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def write_run(run_dir: Path, meta: dict) -> None:
    write_text_atomic(Path(run_dir) / RUN_FILE, json.dumps(meta, indent=2) + "\n")


def read_summary(run_dir: Path) -> dict:
    path = Path(run_dir) / SUMMARY_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


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


def trim_log(path: Path, step: int) -> None:
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


def load_trained(run_dir: Path, *, device: torch.device | str = "cpu") -> tuple[dict, TrainConfig, nn.Module]:
    """A run's metadata, configuration and trained model (in eval mode) from its checkpoint."""
    meta = read_run(run_dir)
    cfg = TrainConfig.from_dict(meta["config"])
    setup = Setup(class_names=list(meta["class_names"]), wnids=list(meta.get("wnids") or []))
    model = OBJECTIVES[cfg.objective].build(cfg, setup)
    state = load_checkpoint(Path(run_dir) / CHECKPOINT)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as e:
        raise CurateError(f"{run_dir}/{CHECKPOINT}: does not fit the run's model ({str(e).splitlines()[0]})") from None
    model.to(device).eval()
    return meta, cfg, model
