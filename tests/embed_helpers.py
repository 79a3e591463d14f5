"""A tiny open_clip model saved by the test, and open_clip's own way of embedding texts with it."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def save_tiny_checkpoint(path: Path, seed: int = 3) -> Path:
    """curate's ``tiny`` CLIP, randomly initialised with ``seed``, as a state-dict checkpoint."""
    import torch

    from curate.models import create_clip

    torch.save(create_clip("tiny", seed=seed).state_dict(), path)
    return path


def reference_embeddings(ckpt: Path, texts: list[str]) -> np.ndarray:
    """open_clip's own path: create_model from the checkpoint, its tokenizer, encode_text."""
    import open_clip
    import torch
    import torch.nn.functional as F

    from curate.models import register_tiny

    register_tiny()
    model = open_clip.create_model("curate-tiny", pretrained=str(ckpt)).eval()
    tokenizer = open_clip.get_tokenizer("curate-tiny")
    with torch.no_grad():
        return F.normalize(model.encode_text(tokenizer(texts)), dim=-1).numpy()
