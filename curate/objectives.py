"""The training objectives of the validation trainer, one registry entry each.

An ``Objective`` owns everything that differs between them: which options apply (``check``),
the model it trains (``build``), the loss of one batch (``loss_fn``), and how the trained model
scores images (``features`` and ``head``: evaluation multiplies one by the other). ``curate.train``
runs the same loop for all of them; ``curate.evaluate`` scores them all the same way.

- ``clip``: contrastive image-text (open_clip's CLIP), text tower from scratch, initialised from
  a pretrained one, or frozen to it; scored zero-shot from class-name prompts.
- ``sl``: the image tower with a linear or cosine classifier, cross-entropy over all classes.
- ``sl-subsample``: each softmax covers the batch's classes plus others drawn at random (uniformly
  or in proportion to their training frequency or its square root) -- the study's fix for
  supervised learning on long-tailed data: a class competes, as in CLIP's batch, against a few
  others rather than against every head class at once.
- ``sl-frozen-text``: a cosine classifier frozen to text embeddings of the class names (a head
  file, a CLIP run, or a pretrained text tower).
- ``sl-frozen-text-subsample``: both, the study's closest supervised approach to CLIP.

Rows that name no class (label -1, ``curate build --keep-unmatched``) are image-text pairs:
``clip`` trains on them like any other; the supervised objectives (``labelled_only``) have no
target for them, so ``curate.train`` leaves them out of their epochs and counts them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from curate.errors import CurateError
from curate.models import (
    Classifier,
    context_length,
    create_clip,
    embed_dim,
    fit_tokens,
    load_towers,
    text_classifier,
    text_parameters,
)

if TYPE_CHECKING:  # the configuration lives with the run folder; objectives only read it
    from curate.runs import TrainConfig

# the study's default number of classes in each subsampled softmax (exps_sup: --num_to_sample)
PAPER_SUBSAMPLE_CLASSES = 50

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


@dataclass
class Setup:
    """What a run knows besides its configuration. Training fills every field; loading a
    checkpoint needs only the classes (the checkpoint carries the weights and frozen heads)."""

    class_names: list[str]
    wnids: list[str] = field(default_factory=list)
    train_counts: np.ndarray | None = None
    pretrained: dict[str, torch.Tensor] | None = None  # open_clip CLIP state (``curate.pretrained``)
    pretrained_source: str = ""
    head: torch.Tensor | None = None  # [K, D] frozen class embeddings from --head
    for_training: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass
class Head:
    """A classifier over image features: ``logits = f' @ weight.T + bias``, ``f'`` the features,
    L2-normalised when ``normalize`` (the temperature is left out: it changes no ranking)."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    normalize: bool

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        f = F.normalize(features.float(), dim=-1) if self.normalize else features.float()
        out = f @ self.weight.float().T
        return out if self.bias is None else out + self.bias.float()


class Objective:
    name: str = ""
    summary: str = ""
    options: tuple[str, ...] = ()  # the CLI options that apply only to this objective
    frozen: bool = False  # a classifier frozen to text embeddings
    labelled_only: bool = False  # trains on rows with a class only (unlabelled rows are skipped)

    def check(self, cfg: TrainConfig) -> None:
        """Reject options that do not apply (one clear line each)."""

    def build(self, cfg: TrainConfig, setup: Setup) -> nn.Module:
        raise NotImplementedError

    def loss_fn(self, cfg: TrainConfig, setup: Setup, device: torch.device) -> LossFn:
        raise NotImplementedError

    def features(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def head(
        self, model: nn.Module, class_names: Sequence[str], *, prompts: str, device: torch.device, autocast_dtype: torch.dtype | None
    ) -> Head:
        raise NotImplementedError


OBJECTIVES: dict[str, Objective] = {}


def objective(cls: type[Objective]) -> type[Objective]:
    OBJECTIVES[cls.name] = cls()
    return cls


def _new_clip(cfg: TrainConfig, setup: Setup, *, image: bool, text: bool) -> nn.Module:
    clip = create_clip(cfg.model, image_size=cfg.image_size, seed=cfg.seed)
    if setup.pretrained is not None and (image or text):
        load_towers(clip, setup.pretrained, image=image, text=text, source=setup.pretrained_source)
    return clip


def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """The symmetric InfoNCE loss of CLIP (features already L2-normalised)."""
    logits = logit_scale * image_features.float() @ text_features.float().T
    target = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


@objective
class Contrastive(Objective):
    name = "clip"
    summary = "contrastive image-text (open_clip CLIP); scored zero-shot from class-name prompts"
    options = ("text_tower",)

    def check(self, cfg: TrainConfig) -> None:
        _reject(cfg, self.name, classifier="linear", subsample_classes=None, subsample_weights="uniform", head=None)
        if cfg.pretrained is not None and cfg.image_tower == "scratch" and cfg.text_tower == "scratch":
            raise CurateError("--pretrained loads nothing with --image-tower scratch --text-tower scratch; choose init or frozen")

    def build(self, cfg: TrainConfig, setup: Setup) -> nn.Module:
        clip = _new_clip(cfg, setup, image=cfg.image_tower == "init", text=cfg.text_tower != "scratch")
        if cfg.text_tower == "frozen":
            for _, p in text_parameters(clip):
                p.requires_grad_(False)
        return clip

    def loss_fn(self, cfg: TrainConfig, setup: Setup, device: torch.device) -> LossFn:
        def loss(model: nn.Module, images: torch.Tensor, tokens: torch.Tensor, labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
            ctx = context_length(model)
            img_f, txt_f, scale = model(images, fit_tokens(tokens, ctx).to(images.device, non_blocking=True))[:3]
            return clip_loss(img_f, txt_f, scale)

        return loss

    def features(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return model.encode_image(images)

    def head(self, model, class_names, *, prompts, device, autocast_dtype) -> Head:
        w = text_classifier(model, class_names, prompts=prompts, device=device, autocast_dtype=autocast_dtype)
        return Head(weight=w.to(device), bias=None, normalize=True)


class Supervised(Objective):
    """Cross-entropy on the image tower's classifier; frozen or trainable head, full or
    subsampled softmax."""

    frozen: bool = False
    subsample: bool = False
    labelled_only = True  # no class, no target

    def check(self, cfg: TrainConfig) -> None:
        if cfg.text_tower != "scratch":
            raise CurateError(f"--text-tower applies to --objective clip only (this run: {self.name}); a frozen text head is --head")
        if self.frozen and cfg.classifier != "linear":
            raise CurateError(f"--classifier does not apply to {self.name}: its head is cosine, frozen to text embeddings")
        if not self.frozen and cfg.head is not None:
            raise CurateError(f"--head applies to the frozen-text objectives only (this run: {self.name})")
        if not self.subsample:
            _reject(cfg, self.name, subsample_classes=None, subsample_weights="uniform")
        if cfg.pretrained is not None and cfg.image_tower == "scratch" and not self.frozen:
            raise CurateError(f"--pretrained loads nothing for {self.name} with --image-tower scratch; add --image-tower init")

    def build(self, cfg: TrainConfig, setup: Setup) -> nn.Module:
        if not self.frozen:
            clip = _new_clip(cfg, setup, image=cfg.image_tower == "init", text=False)
            return Classifier(clip.visual, dim=embed_dim(clip), num_classes=setup.num_classes, kind=cfg.classifier)
        # the head: --head, else the pretrained text tower, else this run's own freshly
        # initialised one (random but fixed and distinct per class name, like any frozen head)
        from_text = setup.for_training and setup.head is None and setup.pretrained is not None
        clip = _new_clip(cfg, setup, image=cfg.image_tower == "init", text=from_text)
        dim = embed_dim(clip)
        if setup.head is not None:
            emb = setup.head
        elif setup.for_training:
            emb = text_classifier(clip, setup.class_names, prompts=cfg.prompts)
        else:
            emb = torch.zeros(setup.num_classes, dim)  # the checkpoint carries it
        if tuple(emb.shape) != (setup.num_classes, dim):
            raise CurateError(
                f"--head {cfg.head}: its embeddings are {list(emb.shape)[1]}-dimensional, --model {cfg.model} has {dim}; "
                "dump the head with a text tower of the same width"
            )
        return Classifier(clip.visual, dim=dim, num_classes=setup.num_classes, kind="frozen", class_embeddings=emb)

    def loss_fn(self, cfg: TrainConfig, setup: Setup, device: torch.device) -> LossFn:
        draw = None
        if self.subsample:
            counts = setup.train_counts if setup.train_counts is not None else np.ones(setup.num_classes)
            weights = class_weights(counts, cfg.subsample_weights).to(device)
            size = subsample_size(cfg, setup.num_classes)

            def draw(labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
                return subsample_mask(labels, weights, size, gen)

        def loss(model: nn.Module, images: torch.Tensor, tokens: torch.Tensor, labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
            logits = model(images).float()
            if draw is not None:
                logits = logits.masked_fill(~draw(labels, gen), float("-inf"))
            return F.cross_entropy(logits, labels)

        return loss

    def features(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return model.visual(images)

    def head(self, model, class_names, *, prompts, device, autocast_dtype) -> Head:
        weight, bias, normalize = model.weights()
        return Head(weight=weight.detach(), bias=None if bias is None else bias.detach(), normalize=normalize)


@objective
class SL(Supervised):
    name = "sl"
    summary = "image tower + classifier (--classifier linear|cosine), softmax over all classes"
    options = ("classifier",)


@objective
class SLSubsample(Supervised):
    name = "sl-subsample"
    summary = "sl, each softmax over the batch's classes plus others drawn at random (--subsample-*)"
    options = ("classifier", "subsample_classes", "subsample_weights")
    subsample = True


@objective
class SLFrozenText(Supervised):
    name = "sl-frozen-text"
    summary = "image tower + cosine classifier frozen to text embeddings of the class names (--head)"
    options = ("head",)
    frozen = True


@objective
class SLFrozenTextSubsample(Supervised):
    name = "sl-frozen-text-subsample"
    summary = "frozen text head and subsampled softmax together (the study's transfer of CLIP's traits)"
    options = ("head", "subsample_classes", "subsample_weights")
    frozen = True
    subsample = True


def _reject(cfg: TrainConfig, objective_name: str, **defaults: object) -> None:
    for name, default in defaults.items():
        if getattr(cfg, name) != default:
            raise CurateError(f"--{name.replace('_', '-')} does not apply to --objective {objective_name}")


# --------------------------------------------------------------------------- subsampled softmax


def class_weights(train_counts: np.ndarray, how: str) -> torch.Tensor:
    """Relative odds of drawing each class into a subsampled softmax: ``uniform`` (1 each),
    ``linear`` (its training count) or ``sqrt`` (the square root of it). A class never seen in
    training has weight 0 under ``linear``/``sqrt``: it enters a softmax only with its own image."""
    counts = torch.as_tensor(np.asarray(train_counts, dtype=np.float64), dtype=torch.float32)
    if how == "uniform":
        return torch.ones_like(counts)
    if how == "linear":
        return counts
    if how == "sqrt":
        return counts.sqrt()
    raise CurateError(f"--subsample-weights {how!r} is not valid; choose uniform, linear or sqrt")


def subsample_mask(labels: torch.Tensor, weights: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """A ``[K]`` bool mask on ``labels``' device: every class in the batch, plus others drawn
    without replacement with odds ``weights`` (``[K]``), ``size`` classes in all (more when the
    batch alone holds more).

    The draw is an exponential race (Efraimidis-Spirakis): each class gets the key
    ``-log(U) / w`` and the smallest keys win, which is the same as drawing one class at a time in
    proportion to ``w`` among those left. The uniform numbers come from a CPU ``generator``; the
    selection runs on the device without a host sync.
    """
    k = weights.shape[0]
    u = torch.rand(k, generator=generator).to(weights.device)
    keys = -torch.log1p(-u) / weights  # w = 0 -> inf: never drawn
    keys[labels] = -1.0  # batch classes rank first
    idx = keys.topk(min(size, k), largest=False).indices
    mask = torch.zeros(k, dtype=torch.bool, device=weights.device)
    mask.scatter_(0, idx, torch.isfinite(keys[idx]))
    mask[labels] = True  # when the batch holds more than ``size`` classes
    return mask


def subsample_size(cfg: TrainConfig, num_classes: int) -> int:
    return min(num_classes, cfg.subsample_classes or PAPER_SUBSAMPLE_CLASSES)

