"""The image sets a run is scored on: its manifest's held-out split, or an ImageFolder.

Owns naming a set (``heldout``, ``imagefolder:DIR``), reading its images as uint8 batches at the
model's input size with labels in the run's class order, and the class subset a score can be
restricted to (``--classes imagenet100``: the study's ImageNet-100 is the 100-class subset of a
1000-class model's predictions).

An ImageFolder is the ImageNet val / ImageNet-V2 layout: one sub-folder per class, named by the
class's WordNet id (``n01440764/``) or, failing that, by its name. Folders of classes the run
never trained on are skipped and counted. Images are resized (shorter side) and centre-cropped to
the model's input size, as open_clip's eval transform does.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from curate.errors import CurateError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


@dataclass
class EvalSet:
    """One evaluation set: ``batches(batch_size, device)`` yields ``(uint8 images [B,3,S,S],
    labels [B])`` with labels in the run's class order."""

    key: str
    description: str
    num_images: int
    source: object
    skipped: dict[str, int] = field(default_factory=dict)

    def batches(self, batch_size: int, device: torch.device, *, workers: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if isinstance(self.source, ImageFolder):
            loader = torch.utils.data.DataLoader(self.source, batch_size=batch_size, shuffle=False, num_workers=workers)
            for images, labels in loader:
                yield images.to(device), labels.to(device)
            return
        for b in self.source.batches(batch_size, shuffle=False, drop_last=False, device=str(device)):
            yield b.images, b.labels.to(device)


class ImageFolder(torch.utils.data.Dataset):
    """Image files and their run labels, decoded and resized on demand (a DataLoader's workers)."""

    def __init__(self, files: Sequence[Path], labels: Sequence[int], size: int) -> None:
        self.files = list(files)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.size = size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return load_image(self.files[i], self.size), int(self.labels[i])


def load_image(path: Path, size: int) -> torch.Tensor:
    """uint8 ``[3, size, size]``: shorter side resized to ``size`` (bicubic), centre crop."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            scale = size / min(w, h)
            nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
            if (nw, nh) != (w, h):
                im = im.resize((nw, nh), Image.Resampling.BICUBIC)
            left, top = (nw - size) // 2, (nh - size) // 2
            im = im.crop((left, top, left + size, top + size))
            arr = np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError) as e:
        raise CurateError(f"{path}: cannot read the image ({e})") from None
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())


def scan_image_folder(root: Path, *, class_names: Sequence[str], wnids: Sequence[str]) -> tuple[list[Path], list[int], dict[str, int]]:
    """Files and run labels of an ImageFolder, and what was skipped (by reason)."""
    if not root.is_dir():
        raise CurateError(f"--dataset imagefolder:{root}: no such folder")
    by_wnid = {w: i for i, w in enumerate(wnids) if w}
    by_name = {n: i for i, n in enumerate(class_names)}
    files, labels = [], []
    skipped = {"folders of classes the run does not have": 0, "files that are not images": 0}
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        label = by_wnid.get(sub.name, by_name.get(sub.name))
        if label is None:
            skipped["folders of classes the run does not have"] += 1
            continue
        for f in sorted(sub.rglob("*")):
            if not f.is_file():
                continue
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                skipped["files that are not images"] += 1
                continue
            files.append(f)
            labels.append(label)
    if not files:
        raise CurateError(
            f"--dataset imagefolder:{root}: no images in sub-folders named by the run's classes "
            f"(wnids such as {next(iter(by_wnid), 'n01440764')!r}, or class names)"
        )
    return files, labels, {k: v for k, v in skipped.items() if v}


def open_eval_set(spec: str, *, meta: dict, image_size: int) -> EvalSet:
    """``heldout`` (the manifest's balanced eval split) or ``imagefolder:DIR``."""
    if spec == "heldout":
        from curate.loader import open_shards

        manifest = Path(meta["manifest"])
        if not manifest.exists():
            raise CurateError(f"its manifest {manifest} no longer exists; score it on --dataset imagefolder:DIR")
        shards = open_shards(manifest, split="eval")
        if int(shards.num_classes) != int(meta["num_classes"]):
            raise CurateError(f"{manifest}: the eval split has {shards.num_classes} classes, the run trained on {meta['num_classes']}")
        if shards.num_samples == 0:
            raise CurateError(f"{manifest}: the eval split is empty; nothing to evaluate")
        return EvalSet("heldout", "held-out split of the manifest (balanced)", int(shards.num_samples), shards)
    kind, _, arg = spec.partition(":")
    if kind == "imagefolder" and arg:
        root = Path(arg)
        files, labels, skipped = scan_image_folder(root, class_names=meta["class_names"], wnids=meta.get("wnids") or [])
        key = f"imagefolder:{root.resolve().name}"
        return EvalSet(key, f"ImageFolder {root}", len(files), ImageFolder(files, labels, image_size), skipped)
    raise CurateError(f"--dataset {spec!r} is not known; use heldout or imagefolder:DIR")


def class_subset(spec: str, *, class_names: Sequence[str], wnids: Sequence[str]) -> np.ndarray:
    """Run labels of the classes of vocabulary ``spec`` (matched by wnid, else by name), sorted."""
    from curate.vocab import load_vocab

    vocab = load_vocab(spec)
    want_wnids = {w for w in vocab["wnid"].to_list() if w}
    want_names = set(vocab["name"].to_list())
    if len(wnids) == len(class_names) and all(wnids):  # names are ambiguous (two cranes): wnids decide
        keep = [i for i, w in enumerate(wnids) if w in want_wnids]
    else:
        keep = [i for i, n in enumerate(class_names) if n in want_names]
    if len(keep) < 2:
        raise CurateError(f"--classes {spec}: only {len(keep)} of its {len(vocab)} classes are among the run's; nothing to compare")
    return np.asarray(keep, dtype=np.int64)
