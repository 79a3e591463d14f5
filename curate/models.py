"""Model construction for the bundled trainer: open_clip CLIPs and classifiers on their image tower.

Owns the ``tiny`` architecture (a small ViT at 32 px with a two-layer text tower, registered in
open_clip's config table so ``open_clip.create_model("curate-tiny")`` works like a built-in), the
classifier wrapped around a CLIP image tower (linear; cosine with a learnt temperature; or cosine
against class embeddings frozen from a text tower), copying pretrained tower weights into a CLIP,
the prompt sets and the class embeddings built from them (zero-shot classifiers, frozen heads).
Nothing here downloads weights: a model starts from random initialisation, or from a state dict
the caller read (``curate.pretrained``).
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

# as open_clip (and the study's supervised runs): a temperature above 100 destabilises training
MAX_LOGIT_SCALE = 100.0
CLASSIFIERS = ("linear", "cosine")


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


class Classifier(nn.Module):
    """A CLIP image tower with a classifier on top.

    - ``kind="linear"``: a trainable linear layer (with bias) on the image embedding.
    - ``kind="cosine"``: cosine similarity to trainable class prototypes, scaled by a learnt
      temperature initialised as CLIP's (1/0.07) and capped at 100 -- the study's supervised
      classifier.
    - ``kind="frozen"``: the same cosine classifier with prototypes fixed to ``class_embeddings``
      (text embeddings of the class names); only the image tower and the temperature learn.
    """

    def __init__(
        self,
        visual: nn.Module,
        *,
        dim: int,
        num_classes: int,
        kind: str = "linear",
        class_embeddings: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.visual = visual
        self.kind = kind
        if kind == "linear":
            self.head = nn.Linear(dim, num_classes)
        elif kind == "cosine":
            self.prototypes = nn.Parameter(torch.randn(num_classes, dim) * dim**-0.5)
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        elif kind == "frozen":
            if class_embeddings is None or tuple(class_embeddings.shape) != (num_classes, dim):
                raise ValueError("a frozen head needs class_embeddings of shape [num_classes, dim]")
            self.register_buffer("class_embeddings", F.normalize(class_embeddings.float(), dim=-1))
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        else:
            raise ValueError(f"unknown classifier {kind!r}")

    @property
    def image_size(self) -> int:
        size = self.visual.image_size
        return int(size[0] if isinstance(size, tuple | list) else size)

    def weights(self) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
        """``(W [K,D], bias [K] or None, normalised)``: logits are ``scale * f' @ W.T + bias``
        where ``f'`` is the image embedding, L2-normalised when ``normalised``."""
        if self.kind == "linear":
            return self.head.weight, self.head.bias, False
        if self.kind == "cosine":
            return F.normalize(self.prototypes, dim=-1), None, True
        return self.class_embeddings, None, True

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.visual(images)
        if self.kind == "linear":
            return self.head(features)
        weight, _, _ = self.weights()
        scale = self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
        return scale * F.normalize(features, dim=-1) @ weight.to(features.dtype).T


def clamp_logit_scale(model: nn.Module) -> None:
    """Keep a learnt temperature in [1, 100] (``exp`` of [0, ln 100]), after each optimiser step."""
    scale = getattr(model, "logit_scale", None)
    if isinstance(scale, nn.Parameter):
        with torch.no_grad():
            scale.clamp_(0, math.log(MAX_LOGIT_SCALE))


# --------------------------------------------------------------------------- pretrained towers


def is_image_key(key: str) -> bool:
    return key.startswith("visual.")


def is_text_key(key: str) -> bool:
    """open_clip's CLIP keeps the text tower at the top level (OpenAI's names); ``logit_scale``
    travels with it (it belongs to neither tower; a pretrained text tower brings its temperature)."""
    return not key.startswith("visual.") and key != "logit_bias"


def load_towers(clip: nn.Module, state: dict[str, torch.Tensor], *, image: bool, text: bool, source: str) -> list[str]:
    """Copy the image and/or text tower of ``state`` (open_clip CLIP names) into ``clip``.

    Every parameter of a requested tower must be in ``state`` with the same shape; a mismatch
    names ``source`` and the first key at fault. Returns the keys copied.
    """
    own = clip.state_dict()
    wanted = [k for k in own if (image and is_image_key(k)) or (text and is_text_key(k))]
    missing = [k for k in wanted if k not in state]
    if missing:
        towers = " and ".join(t for t, on in (("image", image), ("text", text)) if on)
        raise CurateError(
            f"{source}: has no {towers} tower for this model ({len(missing)} weights missing, e.g. {missing[0]!r})"
        )
    for k in wanted:
        if tuple(state[k].shape) != tuple(own[k].shape):
            raise CurateError(
                f"{source}: weight {k!r} is {list(state[k].shape)}, the model's is {list(own[k].shape)}; "
                "choose the --model the checkpoint was trained with"
            )
    with torch.no_grad():
        for k in wanted:
            own[k].copy_(state[k].to(own[k].dtype))
    return wanted


def text_parameters(clip: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in clip.named_parameters() if is_text_key(n) and n != "logit_scale"]


# --------------------------------------------------------------------------- prompts


def _prompt_sets() -> dict[str, list]:
    from open_clip import zero_shot_metadata as meta

    return {
        # the study's prompt sets (its heads and zero-shot tables); open_clip ships the 80 templates
        "cname": [lambda c: c],
        "a+cname": [lambda c: f"a {c}"],
        "photo": [lambda c: f"a photo of a {c}."],
        "openai80": list(meta.OPENAI_IMAGENET_TEMPLATES),
        # open_clip's two-template set (fast; the trainer's default)
        "simple": list(meta.SIMPLE_IMAGENET_TEMPLATES),
    }


PROMPT_SETS = ("simple", "cname", "a+cname", "photo", "openai80")
PROMPT_ALIASES = {"openai": "openai80"}


def prompt_set(name: str) -> str:
    """The canonical name of a prompt set (``openai`` is ``openai80``)."""
    name = PROMPT_ALIASES.get(name, name)
    if name not in PROMPT_SETS:
        raise CurateError(f"--prompts {name!r} is not known; choose one of {', '.join(PROMPT_SETS)}")
    return name


def class_prompts(class_names: Sequence[str], prompts: str = "simple") -> list[list[str]]:
    """Prompts per class for a prompt set (see ``PROMPT_SETS``)."""
    templates = _prompt_sets()[prompt_set(prompts)]
    return [[t(name) for t in templates] for name in class_names]


@torch.no_grad()
def text_classifier(
    clip: nn.Module,
    class_names: Sequence[str],
    *,
    prompts: str = "simple",
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``[K, D]`` class embeddings: the mean of each class's normalised prompt embeddings, renormalised."""
    import open_clip

    per_class_prompts = class_prompts(class_names, prompts)
    per_class = len(per_class_prompts[0])
    flat = [p for ps in per_class_prompts for p in ps]
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
