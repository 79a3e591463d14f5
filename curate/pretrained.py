"""Weights from outside a run: pretrained towers and frozen text heads.

Owns reading an open_clip checkpoint file (a state dict, possibly wrapped in ``state_dict`` with
DDP's ``module.`` prefix, or an OpenAI TorchScript archive) or a curate run as a source of tower
weights (``--pretrained``), and the text-head file: class embeddings computed by a text tower from
a vocabulary and a prompt set (``curate text-head``), which ``--head`` freezes into a classifier.
The study's frozen head is OpenAI's RN50 text tower with the prompt "a {class name}"
(``--prompts a+cname``). Nothing here downloads: every source is a local path.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from curate.errors import CurateError
from curate.models import create_clip, is_text_key, load_towers, text_classifier
from curate.runs import CHECKPOINT, TrainConfig, is_run, load_checkpoint, read_run
from curate.util import atomic_path

HEAD_FORMAT = "curate-text-head"
# keys of OpenAI's TorchScript archives that are not weights
_NOT_WEIGHTS = ("input_resolution", "context_length", "vocab_size")


def read_state(spec: str | Path, *, model: str) -> dict[str, torch.Tensor]:
    """The open_clip CLIP state dict of ``spec``: a checkpoint file, or a curate run (a ``clip``
    run gives both towers, a supervised run its image tower only)."""
    path = Path(spec)
    if is_run(path):
        meta = read_run(path)
        cfg = TrainConfig.from_dict(meta["config"])
        if cfg.model != model:
            raise CurateError(f"--pretrained {path}: that run trained --model {cfg.model}, this one is --model {model}")
        state = load_checkpoint(path / CHECKPOINT)["model"]
        if cfg.objective != "clip":  # a classifier: its image tower is the CLIP's
            state = {k: v for k, v in state.items() if k.startswith("visual.")}
        return state
    if not path.is_file():
        raise CurateError(f"--pretrained {path}: no such file or run folder")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        try:  # OpenAI's released checkpoints are TorchScript archives
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, its archives are not
                raw = torch.jit.load(str(path), map_location="cpu").state_dict()
        except Exception as e:
            raise CurateError(f"--pretrained {path}: not a PyTorch checkpoint ({type(e).__name__})") from None
    if isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
        raw = raw["state_dict"]
    elif isinstance(raw, dict) and isinstance(raw.get("model"), dict):
        raw = raw["model"]  # a curate checkpoint.pt given as a file
    if not isinstance(raw, dict):
        raise CurateError(f"--pretrained {path}: holds no state dict")
    state = {}
    for k, v in raw.items():
        if not isinstance(v, torch.Tensor) or k in _NOT_WEIGHTS:
            continue
        state[k.removeprefix("module.")] = v
    if not state:
        raise CurateError(f"--pretrained {path}: holds no weights")
    return state


def has_text_tower(state: dict[str, torch.Tensor]) -> bool:
    return any(is_text_key(k) and k != "logit_scale" for k in state)


def compute_head(
    state: dict[str, torch.Tensor], *, model: str, class_names: Sequence[str], prompts: str, source: str
) -> torch.Tensor:
    """``[K, D]`` class embeddings from the text tower in ``state`` (see ``text_classifier``)."""
    clip = create_clip(model)
    load_towers(clip, state, image=False, text=True, source=source)
    return text_classifier(clip, class_names, prompts=prompts)


def text_head(
    spec: str | Path, *, model: str, class_names: Sequence[str], wnids: Sequence[str | None], prompts: str
) -> dict:
    """A head file's content: embeddings of ``class_names`` by the text tower of ``spec``."""
    state = read_state(spec, model=model)
    emb = compute_head(state, model=model, class_names=class_names, prompts=prompts, source=str(spec))
    return {
        "format": HEAD_FORMAT,
        "version": 1,
        "embeddings": emb,
        "class_names": list(class_names),
        "wnids": [w or "" for w in wnids],
        "prompts": prompts,
        "model": model,
        "source": str(spec),
    }


def save_head(path: Path, head: dict) -> Path:
    with atomic_path(path) as tmp:
        torch.save(head, tmp)
    return Path(path)


def read_head_file(path: Path) -> dict:
    try:
        head = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CurateError(f"--head {path}: cannot read it ({type(e).__name__}: {e})") from None
    if not isinstance(head, dict) or head.get("format") != HEAD_FORMAT:
        raise CurateError(f"--head {path}: not a text-head file (write one with `curate text-head`)")
    return head


def load_head(
    spec: str | Path, *, model: str, class_names: Sequence[str], wnids: Sequence[str], prompts: str
) -> torch.Tensor:
    """``[K, D]`` frozen class embeddings for a run's classes from ``--head``: a head file (rows
    matched by wnid where both sides have them, else by class name) or a CLIP run (its text tower
    embeds the class names with ``prompts``)."""
    path = Path(spec)
    if is_run(path):
        state = read_state(path, model=model)
        if not has_text_tower(state):
            raise CurateError(f"--head {path}: that run has no text tower (its objective is not clip)")
        return compute_head(state, model=model, class_names=class_names, prompts=prompts, source=str(path))
    if not path.is_file():
        raise CurateError(f"--head {path}: no such file or run folder")
    head = read_head_file(path)
    emb = head["embeddings"]
    by_wnid = all(wnids) and len(wnids) == len(class_names) and all(head.get("wnids") or [""])
    keys = list(wnids) if by_wnid else list(class_names)
    table = {k: i for i, k in enumerate(head["wnids"] if by_wnid else head["class_names"])}
    missing = [k for k in keys if k not in table]
    if missing:
        kind = "wnid" if by_wnid else "class name"
        raise CurateError(f"--head {path}: has no row for {len(missing)} of the run's classes, e.g. {kind} {missing[0]!r}")
    return emb[[table[k] for k in keys]].float()
