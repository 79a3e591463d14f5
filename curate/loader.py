"""Reading tensor shards for training: seeded, epoch-aware batches and GPU-side augmentation.

``open_shards`` memory-maps every ``.npy`` file listed in a split's ``index.json`` (written by
``curate.shards.tensorize``); ``TensorShards.batches`` yields ``Batch``es of uint8 images, token
ids, labels and global row ids as torch tensors. Nothing is decoded here: a batch is a gather
from page-cached memory, so the loader keeps up with a GPU without worker processes. Images stay
uint8 until they reach the device, where ``gpu_augment`` crops, flips and normalises a whole
batch at once.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from curate.errors import CurateError
from curate.util import file_sha256, write_text_atomic

# CLIP's normalisation (open_clip.constants.OPENAI_DATASET_MEAN/STD)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_FORMAT = "curate-tensor-shards"
VERIFY_MODES = ("once", "always", "sizes")
# files whose sha256 matched index.json, by their [size, mtime_ns] then: each file is hashed once
# (and again whenever it changes), not at every open
VERIFIED_FILE = "verified.json"


@dataclass
class Batch:
    """One batch: ``images`` uint8 [B,3,R,R], ``tokens`` long [B,77], ``labels`` long [B],
    ``index`` long [B] (global row ids into the split, as in ``TensorShards.uids``)."""

    images: torch.Tensor
    tokens: torch.Tensor
    labels: torch.Tensor
    index: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _find_index(path: Path, split: str) -> Path:
    for folder in (path, path / "shards" / split):
        if (folder / "index.json").is_file():
            return folder / "index.json"
    raise CurateError(
        f"{path}: no tensor shards for split {split!r} (looked for index.json here and in shards/{split}/)",
        hint=f"run `curate shards {path}` first",
    )


class TensorShards:
    """The tensor shards of one split, memory-mapped.

    ``labels`` (int64) and ``uids`` cover every row, in shard order; a row's position there is its
    global id (``Batch.index``). A label is a class index ``0..num_classes-1``, or -1 for a row
    that names no class (``curate build --keep-unmatched``).
    """

    def __init__(self, index_file: Path, *, verify: str = "once") -> None:
        if verify not in VERIFY_MODES:
            raise CurateError(f"verify {verify!r}: choose one of {', '.join(VERIFY_MODES)}")
        self.folder = index_file.parent
        self._verify = verify
        self._verified = self._read_verified() if verify == "once" else {}
        self._newly_verified = False
        try:
            self.index: dict = json.loads(index_file.read_text(encoding="utf-8"))
        except ValueError as e:
            raise CurateError(f"{index_file}: not valid JSON ({e})") from e
        if self.index.get("format") != _FORMAT:
            raise CurateError(
                f"{index_file}: not a curate tensor-shard index (format {self.index.get('format')!r})"
            )
        self.resolution = int(self.index["resolution"])
        self.num_classes = int(self.index["num_classes"])
        self.class_names: list[str] = list(self.index["class_names"])
        self.split = str(self.index.get("split", ""))
        self._images: list[np.ndarray] = []
        self._tokens: list[np.ndarray] = []
        labels, uids, sizes = [], [], []
        for shard in self.index["shards"]:
            arrays = {k: self._open(f, shard["name"], k) for k, f in shard["files"].items()}
            n = int(shard["num_samples"])
            if any(a.shape[0] != n for a in arrays.values()):
                raise CurateError(
                    f"{self.folder}: shard {shard['name']} arrays disagree with num_samples={n}"
                )
            self._images.append(arrays["images"])
            self._tokens.append(arrays["tokens"])
            labels.append(np.asarray(arrays["labels"], dtype=np.int64))
            uids.append(np.asarray(arrays["uids"]))
            sizes.append(n)
        self._offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        self.num_samples = int(self._offsets[-1])
        if self.num_samples != int(self.index["num_samples"]):
            raise CurateError(
                f"{index_file}: shards hold {self.num_samples} rows, index says {self.index['num_samples']}"
            )
        if self._newly_verified:
            self._write_verified()
        self.labels: np.ndarray = np.concatenate(labels) if labels else np.zeros(0, np.int64)
        # -1: a row naming no class (curate build --keep-unmatched), an image-text pair without a label
        if len(self.labels) and (int(self.labels.min()) < -1 or int(self.labels.max()) >= self.num_classes):
            raise CurateError(
                f"{index_file}: labels span {int(self.labels.min())}..{int(self.labels.max())}, "
                f"outside the {self.num_classes} classes it names (and -1, no class)"
            )
        self.uids: np.ndarray = np.concatenate(uids) if uids else np.zeros(0, "<U1")
        self.context_length = int(self._tokens[0].shape[1]) if self._tokens else 77

    def _open(self, f: dict, shard: str, kind: str) -> np.ndarray:
        path = self.folder / f["file"]
        if not path.is_file():
            raise CurateError(f"{path}: listed in index.json (shard {shard}) but missing")
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as e:
            raise CurateError(f"{path}: not a readable .npy file ({e})") from e
        if arr.dtype.str != f["dtype"] or list(arr.shape) != list(f["shape"]):
            raise CurateError(
                f"{path}: {kind} is {arr.dtype.str} {list(arr.shape)}, index.json says {f['dtype']} {f['shape']}"
            )
        st = path.stat()
        offset = arr.offset if isinstance(arr, np.memmap) else st.st_size - arr.nbytes
        if st.st_size != offset + arr.nbytes:
            raise CurateError(f"{path}: {st.st_size} bytes where its header promises {offset + arr.nbytes}; the file was changed")
        if self._verify != "sizes" and f.get("sha256"):  # an index written by hand may record none
            seen = [st.st_size, st.st_mtime_ns]
            if self._verified.get(f["file"]) != seen:
                if file_sha256(path) != f.get("sha256"):
                    raise CurateError(
                        f"{path}: sha256 differs from index.json (shard {shard}); the file was changed or damaged",
                        hint="run `curate shards` again to rewrite it",
                    )
                self._verified[f["file"]] = seen
                self._newly_verified = True
        return arr

    def _read_verified(self) -> dict[str, list[int]]:
        try:
            data = json.loads((self.folder / VERIFIED_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write_verified(self) -> None:
        try:
            write_text_atomic(self.folder / VERIFIED_FILE, json.dumps(self._verified, indent=0, sort_keys=True) + "\n")
        except (OSError, CurateError):  # a read-only copy of the shards: verify again next time
            pass

    def __len__(self) -> int:
        return self.num_samples

    def __repr__(self) -> str:
        return (
            f"TensorShards({str(self.folder)!r}, split={self.split!r}, num_samples={self.num_samples}, "
            f"num_classes={self.num_classes}, resolution={self.resolution})"
        )

    @property
    def labelled_rows(self) -> np.ndarray:
        """The global ids of the rows that have a class (label >= 0)."""
        return np.flatnonzero(self.labels >= 0).astype(np.int64)

    def order(self, *, seed: int = 0, epoch: int = 0, shuffle: bool = True, rows: np.ndarray | None = None) -> np.ndarray:
        """The row order of one epoch: a permutation drawn from (seed, epoch) alone, of every row
        or of the global ids ``rows``."""
        n = self.num_samples if rows is None else len(rows)
        order = np.random.default_rng([seed, epoch]).permutation(n).astype(np.int64) if shuffle else np.arange(n, dtype=np.int64)
        return order if rows is None else np.asarray(rows, dtype=np.int64)[order]

    def gather(
        self, rows: np.ndarray, *, out: tuple[np.ndarray, np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Images (uint8) and tokens of the given global rows, in that order, copied out of the
        maps (into ``out``, when given: e.g. views of pinned tensors)."""
        rows = np.asarray(rows, dtype=np.int64)
        b, r = len(rows), self.resolution
        if out is None:
            out = (np.empty((b, 3, r, r), dtype=np.uint8), np.empty((b, self.context_length), dtype=np.int32))
        images, tokens = out
        if b == 0:
            return images, tokens
        # reading each shard's rows in ascending order keeps page-cache access sequential
        sorter = np.argsort(rows, kind="stable")
        srows = rows[sorter]
        shard_of = np.searchsorted(self._offsets, srows, side="right") - 1
        bounds = np.searchsorted(shard_of, np.arange(len(self._images) + 1), side="left")
        for s in np.unique(shard_of):
            lo, hi = bounds[s], bounds[s + 1]
            local = srows[lo:hi] - self._offsets[s]
            dest = sorter[lo:hi]
            images[dest] = self._images[s][local]
            tokens[dest] = self._tokens[s][local]
        return images, tokens

    def num_batches(self, batch_size: int, *, drop_last: bool = False) -> int:
        return self.num_samples // batch_size if drop_last else math.ceil(self.num_samples / batch_size)

    def batches(
        self,
        batch_size: int,
        *,
        seed: int = 0,
        epoch: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        device: str | torch.device = "cpu",
        pin_memory: bool = False,
        rows: np.ndarray | None = None,
    ) -> Iterator[Batch]:
        """One epoch of batches. Same (seed, epoch) -> same batches; each row exactly once (each
        of ``rows``, global ids, when given: e.g. ``labelled_rows``).

        ``pin_memory`` copies each batch into page-locked memory (when CUDA is present) so the
        transfer to ``device`` runs asynchronously.
        """
        if batch_size < 1:
            raise CurateError(f"batch_size {batch_size}: must be at least 1")
        device = torch.device(device)
        pin = pin_memory and torch.cuda.is_available()
        order = self.order(seed=seed, epoch=epoch, shuffle=shuffle, rows=rows)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            if drop_last and len(rows) < batch_size:
                break
            b, r = len(rows), self.resolution
            if pin:
                # gather straight into page-locked memory: no extra copy before the async transfer
                images = torch.empty((b, 3, r, r), dtype=torch.uint8, pin_memory=True)
                tokens = torch.empty((b, self.context_length), dtype=torch.long, pin_memory=True)
                tokens_np = np.empty((b, self.context_length), dtype=np.int32)
                self.gather(rows, out=(images.numpy(), tokens_np))
                tokens.copy_(torch.from_numpy(tokens_np))
                labels = torch.from_numpy(self.labels[rows]).pin_memory()
                index = torch.from_numpy(rows.copy()).pin_memory()
            else:
                images_np, tokens_np = self.gather(rows)
                images, tokens = torch.from_numpy(images_np), torch.from_numpy(tokens_np).long()
                labels, index = torch.from_numpy(self.labels[rows]), torch.from_numpy(rows.copy())
            tensors = [images, tokens, labels, index]
            if device.type != "cpu":
                tensors = [t.to(device, non_blocking=pin) for t in tensors]
            yield Batch(*tensors)


def open_shards(path: str | os.PathLike[str], split: str = "train", *, verify: str = "once") -> TensorShards:
    """The tensor shards of ``split`` in a manifest folder (or a ``shards/{split}`` folder itself).

    Every file's size is checked against its header and ``index.json``; ``verify`` says when its
    sha256 (where ``index.json`` records one) is too: ``once`` (the first open, and again after the file changes; default),
    ``always``, or ``sizes`` (never). A damaged shard raises ``CurateError`` before any work.
    """
    return TensorShards(_find_index(Path(path), split), verify=verify)


def gpu_augment(
    images: torch.Tensor,
    *,
    train: bool,
    out_size: int | None = None,
    generator: torch.Generator | None = None,
    scale: tuple[float, float] = (0.5, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """uint8 [B,3,H,W] -> float32 [B,3,S,S], CLIP-normalised, on the images' device.

    With ``train``: a random resized crop (area fraction in ``scale``, aspect ratio in ``ratio``)
    and a horizontal flip with probability 1/2, drawn per image from ``generator``, applied to
    the whole batch in one ``grid_sample``. Without: a plain resize to ``out_size`` (if it
    differs). ``S`` is ``out_size``, else ``H``.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise CurateError(f"gpu_augment: images must be [B,3,H,W], got {list(images.shape)}")
    if images.dtype != torch.uint8:
        raise CurateError(f"gpu_augment: images must be uint8, got {images.dtype}")
    b, _, h, w = images.shape
    size = int(out_size or h)
    dev = images.device
    x = images.float().div_(255.0)
    if train and b > 0:
        gdev = generator.device if generator is not None else dev

        def rand(n: int) -> torch.Tensor:
            return torch.rand(n, generator=generator, device=gdev).to(dev)

        area = scale[0] + (scale[1] - scale[0]) * rand(b)
        log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * rand(b)
        aspect = torch.exp(log_r)
        # crop width/height as fractions of the image; clamped so the crop stays inside
        cw = torch.sqrt(area * aspect).clamp(max=1.0)
        ch = torch.sqrt(area / aspect).clamp(max=1.0)
        cx = (rand(b) * 2 - 1) * (1 - cw)  # centre, in [-1, 1] grid units
        cy = (rand(b) * 2 - 1) * (1 - ch)
        flip = torch.where(rand(b) < 0.5, -1.0, 1.0)
        theta = torch.zeros(b, 2, 3, device=dev)
        theta[:, 0, 0] = cw * flip
        theta[:, 0, 2] = cx
        theta[:, 1, 1] = ch
        theta[:, 1, 2] = cy
        grid = F.affine_grid(theta, [b, 3, size, size], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    elif (h, w) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    mean = torch.tensor(CLIP_MEAN, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=dev).view(1, 3, 1, 1)
    return (x - mean) / std
