"""Model construction for the bundled trainer: open_clip CLIPs from scratch and supervised heads.

Owns the ``tiny`` architecture (a small ViT at 32 px with a two-layer text tower, registered in
open_clip's config table so ``open_clip.create_model("curate-tiny")`` works like a built-in), the
supervised wrappers around a CLIP image tower (linear classifier, or a classifier frozen to text
embeddings of the class names), and the zero-shot classifier built from class-name prompts.
Nothing here downloads weights: every model starts from random initialisation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from curate.errors import CurateError

# open_clip's tokenizer: the highest id is the end-of-text token, and text pooling takes the
# argmax position, so a truncated sequence must still end in it.
EOT_TOKEN = 49407

# Small enough to train on two CPU cores in about a minute (~0.3 s per 128-image step), big
# enough to learn the demo's class-dependent images (colour, stripes, shape): 32 px in 8 px
# patches is 16 image tokens, and 32 text positions hold the demo's captions.
TINY_CONFIG: dict = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 32, "layers": 3, "width": 128, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 2},
}

TINY_NAME = "curate-tiny"

# the CLI's names -> open_clip config names
MODELS: dict[str, str] = {
    "tiny": TINY_NAME,
    "ViT-S-32": "ViT-S-32",
    "ViT-B-32": "ViT-B-32",
    "RN50": "RN50",
}

OBJECTIVES = ("clip", "sl", "sl-subsample", "sl-frozen-text")


def register_tiny() -> None:
    """Add the tiny config to open_clip's table (idempotent)."""
    from open_clip import factory

    factory._MODEL_CONFIGS.setdefault(TINY_NAME, TINY_CONFIG)


def open_clip_name(model: str) -> str:
    if model not in MODELS:
        raise CurateError(f"--model {model!r} is not known; choose one of {', '.join(MODELS)}")
    return MODELS[model]


def create_clip(model: str, *, image_size: int | None = None, seed: int = 0) -> nn.Module:
    """A randomly initialised open_clip CLIP for ``model`` (a key of ``MODELS``).

    ``image_size`` overrides the architecture's input size (ViTs resize their position
    embeddings); the same seed gives the same initial weights.
    """
    import logging

    import open_clip

    register_tiny()
    name = open_clip_name(model)
    torch.manual_seed(seed)
    # open_clip warns that no pretrained weights were loaded; from scratch is the point here
    log = logging.getLogger()
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        return open_clip.create_model(name, pretrained=None, force_image_size=image_size)
    finally:
        log.setLevel(level)


def model_image_size(clip: nn.Module) -> int:
    size = clip.visual.image_size
    return int(size[0] if isinstance(size, tuple | list) else size)


def context_length(clip: nn.Module) -> int:
    return int(clip.context_length)


def fit_tokens(tokens: torch.Tensor, length: int) -> torch.Tensor:
    """Cut ``[B, T]`` token ids to ``length``, keeping an end-of-text token in every row.

    The shards store 77 ids (open_clip's default); smaller text towers read fewer. A row whose
    text ran past ``length`` ends in EOT, exactly as open_clip's tokenizer truncates.
    """
    if tokens.shape[1] <= length:
        return tokens
    cut = tokens[:, :length].clone()
    overflow = tokens[:, length:].ne(0).any(dim=1)
    if bool(overflow.any()):
        cut[overflow, -1] = EOT_TOKEN
    return cut


def embed_dim(clip: nn.Module) -> int:
    return int(clip.visual.output_dim)


class SupervisedModel(nn.Module):
    """A CLIP image tower with a classifier on top.

    - ``head="linear"``: a trainable linear layer (with bias) on the image embedding.
    - ``head="frozen-text"``: cosine similarity to fixed class embeddings (rows of
      ``class_embeddings``, L2-normalised), scaled by a learnt temperature initialised as CLIP's
      (1/0.07). Only the image tower and the temperature learn.
    """

    def __init__(
        self,
        visual: nn.Module,
        *,
        dim: int,
        num_classes: int,
        head: str = "linear",
        class_embeddings: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.visual = visual
        self.head_kind = head
        if head == "linear":
            self.head = nn.Linear(dim, num_classes)
        elif head == "frozen-text":
            if class_embeddings is None or tuple(class_embeddings.shape) != (num_classes, dim):
                raise ValueError("frozen-text head needs class_embeddings of shape [num_classes, dim]")
            self.register_buffer("class_embeddings", F.normalize(class_embeddings.float(), dim=-1))
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        else:
            raise ValueError(f"unknown head {head!r}")

    @property
    def image_size(self) -> int:
        size = self.visual.image_size
        return int(size[0] if isinstance(size, tuple | list) else size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.visual(images)
        if self.head_kind == "linear":
            return self.head(features)
        scale = self.logit_scale.exp().clamp(max=100.0)
        return scale * F.normalize(features, dim=-1) @ self.class_embeddings.to(features.dtype).T


def class_prompts(class_names: Sequence[str], templates: str = "simple") -> list[list[str]]:
    """Prompts per class from open_clip's ImageNet templates (``simple``: 2, ``openai``: 80)."""
    from open_clip import zero_shot_metadata as meta

    table = {"simple": meta.SIMPLE_IMAGENET_TEMPLATES, "openai": meta.OPENAI_IMAGENET_TEMPLATES}
    if templates not in table:
        raise CurateError(f"--templates {templates!r} is not known; choose simple or openai")
    return [[t(name) for t in table[templates]] for name in class_names]


@torch.no_grad()
def text_classifier(
    clip: nn.Module,
    class_names: Sequence[str],
    *,
    templates: str = "simple",
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``[K, D]`` class embeddings: the mean of each class's normalised prompt embeddings, renormalised."""
    import open_clip

    prompts = class_prompts(class_names, templates)
    per_class = len(prompts[0])
    flat = [p for ps in prompts for p in ps]
    ctx = context_length(clip)
    was_training = clip.training
    clip.eval()
    device = torch.device(device)
    out = []
    chunk = 1024
    for i in range(0, len(flat), chunk):
        tokens = fit_tokens(open_clip.tokenize(flat[i : i + chunk]), ctx).to(device)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
            emb = clip.encode_text(tokens)
        out.append(F.normalize(emb.float(), dim=-1))
    clip.train(was_training)
    emb = torch.cat(out).view(len(class_names), per_class, -1).mean(dim=1)
    return F.normalize(emb, dim=-1)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
