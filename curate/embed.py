"""Text embeddings: encoders named by a spec, and the embeddings folder ``curate embed`` writes.

Owns the encoder registry (``openclip:MODEL:PATH`` — an open_clip architecture with a local
checkpoint — and a ``curate train`` run folder of objective ``clip``), batched text encoding, and
the embeddings folder:

- ``embed.json``: what was embedded and how (source, encoder, text column, shard size, dim);
- ``shards/NNNNN.npy`` (float16, L2-normalised rows) and ``shards/NNNNN.parquet`` (their uids,
  and wnids where the source has them), one pair per ``shard_size`` source rows. A shard's
  Parquet file is written after its ``.npy``, both through a temporary name, so a shard whose
  Parquet file exists is complete: a killed run resumes at the first shard without one;
- ``index.parquet``: ``uid``, ``row`` (position in the concatenated shards), ``wnid``, written
  when every shard is done;
- with a vocabulary, ``classes.npy`` / ``classes.parquet``: the class-definition texts
  (:mod:`curate.similarity`) and their embeddings.

No weights are ever downloaded: a checkpoint is a local file (e.g. OpenAI's ViT-B/32 saved once
with ``torch.save(model.state_dict(), path)``) or a run trained here.

Encoding is exact, not approximate, but cheaper than open_clip's ``encode_text``: open_clip pads
every caption to the context length (77) and runs the whole sequence, while CLIP's text tower is
causal and pools at the end-of-text token, so positions after it never reach the output. Texts
are sorted by token length within a shard and each batch runs only up to its longest text
(equal to ``encode_text`` to float rounding; tests/test_embed.py checks 1e-5).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from curate.errors import CurateError
from curate.util import atomic_path, write_text_atomic

EMBED_FILE = "embed.json"
INDEX_FILE = "index.parquet"
FORMAT = "curate-text-embeddings"
DEFAULT_SHARD_SIZE = 65536
DEFAULT_BATCH_SIZE = 256


# ---------------------------------------------------------------------------------------------
# encoders


@dataclass
class TextEncoder:
    """A loaded text tower: ``encode(texts)`` gives L2-normalised float32 rows."""

    spec: str  # as the user gave it (recorded in outputs)
    model_name: str  # the open_clip architecture
    model: object  # the open_clip model (torch.nn.Module)
    tokenizer: Callable[[Sequence[str]], object]
    device: object  # torch.device
    dim: int

    def tokenize(self, texts: Sequence[str]):
        return self.tokenizer(list(texts))

    def encode_tokens(self, tokens) -> np.ndarray:
        """``[B, T]`` token ids -> ``[B, D]`` normalised float32 (numpy)."""
        import torch
        import torch.nn.functional as F

        with torch.inference_mode():
            emb = _encode_trimmed(self.model, tokens.to(self.device))
            return F.normalize(emb.float(), dim=-1).cpu().numpy()

    def encode(self, texts: Sequence[str], *, batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """Normalised float32 embeddings of ``texts``, in order (batched by token length)."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for idx, emb in self.encode_batches(texts, batch_size=batch_size):
            out[idx] = emb
        return out

    def encode_batches(self, texts: Sequence[str], *, batch_size: int = DEFAULT_BATCH_SIZE) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(positions, embeddings)`` per batch; batches group texts of similar token length."""
        if not len(texts):
            return
        tokens = self.tokenize(texts)
        lengths = (tokens != 0).sum(dim=1).numpy()
        order = np.argsort(lengths, kind="stable")
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            yield idx, self.encode_tokens(tokens[idx])


def _encode_trimmed(model, tokens):
    """``encode_text`` run only up to the batch's longest text, where that is exact: an open_clip
    ``CLIP`` with a causal mask that pools at the end-of-text token (argmax/eos). Anything else
    (custom text towers, first/last pooling) goes through ``encode_text`` unchanged."""
    import open_clip
    from torch import nn

    if not (
        isinstance(model, open_clip.CLIP)
        and getattr(model, "text_pool_type", None) in ("argmax", "eos")
        and getattr(model, "attn_mask", None) is not None
    ):
        return model.encode_text(tokens)
    n = int((tokens != 0).sum(dim=1).max()) if tokens.numel() else 0
    n = max(1, min(n, tokens.shape[1]))
    text = tokens[:, :n]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(text).to(cast_dtype) + model.positional_embedding[:n].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:n, :n])
    x = model.ln_final(x)
    x = open_clip.transformer.text_global_pool(x, text, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    if model.text_projection is not None:
        x = model.text_projection(x) if isinstance(model.text_projection, nn.Linear) else x @ model.text_projection
    return x


def resolve_device(spec: str):
    import torch

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cuda" and not torch.cuda.is_available():
        raise CurateError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    if spec not in ("cpu", "cuda"):
        raise CurateError(f"--device {spec!r} is not valid; choose auto, cpu or cuda")
    return torch.device(spec)


EncoderLoader = Callable[[str, object], TextEncoder]
ENCODERS: dict[str, tuple[EncoderLoader, str]] = {}


def encoder_kind(name: str, help: str) -> Callable[[EncoderLoader], EncoderLoader]:
    """Register an encoder kind: a function (spec, device) -> TextEncoder."""

    def register(fn: EncoderLoader) -> EncoderLoader:
        ENCODERS[name] = (fn, help)
        return fn

    return register


def _quiet_create(name: str, pretrained: str | None):
    import open_clip

    log = logging.getLogger()
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        return open_clip.create_model(name, pretrained=pretrained)
    finally:
        log.setLevel(level)


def encoder_from_model(spec: str, name: str, model, device) -> TextEncoder:
    """Wrap a loaded open_clip model (architecture ``name``) as a :class:`TextEncoder`."""
    import open_clip

    model = model.to(device).eval()
    tokenizer = open_clip.get_tokenizer(name, context_length=int(model.context_length))
    with_dim = getattr(model, "text_projection", None)
    if with_dim is not None:
        dim = int(with_dim.out_features if hasattr(with_dim, "out_features") else with_dim.shape[1])
    else:
        import torch

        with torch.inference_mode():
            dim = int(model.encode_text(tokenizer(["a"]).to(device)).shape[-1])
    return TextEncoder(spec=spec, model_name=name, model=model, tokenizer=tokenizer, device=device, dim=dim)


@encoder_kind("openclip", "openclip:MODEL:PATH, an open_clip architecture (ViT-B-32, ...) with a local checkpoint file")
def _openclip(spec: str, device) -> TextEncoder:
    from curate.models import register_tiny

    parts = spec.split(":", 2)
    if len(parts) != 3 or not parts[1] or not parts[2]:
        raise CurateError(f"--encoder {spec!r}: write openclip:MODEL:PATH (e.g. openclip:ViT-B-32:/models/vit-b-32.pt)")
    _, name, path = parts
    if not Path(path).is_file():
        raise CurateError(f"--encoder {spec}: no checkpoint file {path} (weights are never downloaded; save them here first)")
    register_tiny()
    try:
        model = _quiet_create(name, path)
    except RuntimeError as e:
        raise CurateError(f"--encoder {spec}: open_clip cannot load it ({str(e).splitlines()[0][:200]})") from None
    except Exception as e:  # a foreign or truncated file
        raise CurateError(f"--encoder {spec}: cannot read the checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    return encoder_from_model(spec, name, model, device)


@encoder_kind("run", "a runs/NAME folder written by `curate train --objective clip`")
def _run(spec: str, device) -> TextEncoder:
    import torch

    from curate.models import open_clip_name
    from curate.runs import load_trained

    _, cfg, model = load_trained(Path(spec), device=torch.device("cpu"))
    if cfg.objective != "clip":
        raise CurateError(f"--encoder {spec}: a run of objective {cfg.objective!r} has no text tower to embed with; use a clip run")
    return encoder_from_model(spec, open_clip_name(cfg.model), model, device)


def load_encoder(spec: str, *, device: str = "auto") -> TextEncoder:
    """The text encoder a spec names (see ``ENCODERS``)."""
    dev = resolve_device(device)
    kind = spec.split(":", 1)[0]
    if kind in ENCODERS and ":" in spec:
        return ENCODERS[kind][0](spec, dev)
    if Path(spec).is_dir():
        return ENCODERS["run"][0](spec, dev)
    kinds = "; ".join(h for _, h in ENCODERS.values())
    raise CurateError(f"--encoder {spec!r} is not an encoder: give {kinds}")


# ---------------------------------------------------------------------------------------------
# the embeddings folder


def _shard_name(i: int) -> str:
    return f"{i:05d}"


def _iter_shards(lf: pl.LazyFrame, shard_size: int) -> Iterator[pl.DataFrame]:
    """The plan's rows in consecutive frames of exactly ``shard_size`` rows (the last may be
    shorter), streamed: never more than a shard and a batch in memory."""
    buf: list[pl.DataFrame] = []
    held = 0
    for batch in lf.collect_batches(chunk_size=min(shard_size, 65536), maintain_order=True, engine="streaming"):
        buf.append(batch)
        held += batch.height
        while held >= shard_size:
            whole = pl.concat(buf, rechunk=True)
            yield whole.head(shard_size)
            rest = whole.slice(shard_size)
            buf, held = ([rest] if rest.height else []), rest.height
    if held:
        yield pl.concat(buf, rechunk=True)


@dataclass(frozen=True)
class EmbedResult:
    out: Path
    rows: int
    shards: int
    reused: int  # shards found complete from an earlier run
    dim: int
    classes: int


def embed_source(
    source_spec: str,
    encoder: TextEncoder,
    out: str | Path,
    *,
    vocab: str | None = None,
    definition_format: str | None = None,
    preset: str | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> EmbedResult:
    """Embed every caption of a source into ``out`` (see the module docstring), resuming at the
    first incomplete shard; with ``vocab``, also the class-definition texts."""
    from curate import ui
    from curate.sources import open_source

    if shard_size < 1 or batch_size < 1:
        raise CurateError("--shard-size and --batch-size must be at least 1")
    out = Path(out)
    source = open_source(source_spec, preset=preset, skip_bad_rows=True)
    names = source.lazy.collect_schema().names()
    identity = {
        "format": FORMAT,
        "version": 1,
        "source": source_spec,
        "preset": preset,
        "text": "caption",
        "encoder": encoder.spec,
        "model": encoder.model_name,
        "dim": encoder.dim,
        "dtype": "float16",
        "normalised": True,
        "shard_size": shard_size,
        "vocab": vocab,
    }
    if vocab is not None:
        from curate.similarity import DEFAULT_DEFINITION_FORMAT

        identity["definition_format"] = definition_format or DEFAULT_DEFINITION_FORMAT
    meta_path = out / EMBED_FILE
    if meta_path.is_file():
        try:
            old = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            old = {}
        differ = [k for k in identity if old.get(k) != identity[k]]
        if differ:
            raise CurateError(
                f"--out {out} holds embeddings made with another {differ[0]} ({old.get(differ[0])!r}); choose another --out or delete it"
            )
    elif out.exists() and any(out.iterdir()):
        raise CurateError(f"--out {out} exists and is not an embeddings folder; choose another --out")
    (out / "shards").mkdir(parents=True, exist_ok=True)
    write_text_atomic(meta_path, json.dumps(identity, indent=2) + "\n")

    n_rows = int(source.lazy.select(pl.len()).collect(engine="streaming").item())
    n_shards = -(-n_rows // shard_size)
    cols = ["uid", "caption"] + (["wnid"] if "wnid" in names else [])
    reused = 0
    with ui.make_progress() as progress:
        task = progress.add_task("embedding captions", total=n_rows)
        for i, frame in enumerate(_iter_shards(source.lazy.select(cols), shard_size)):
            npy = out / "shards" / f"{_shard_name(i)}.npy"
            ids = out / "shards" / f"{_shard_name(i)}.parquet"
            if ids.is_file() and npy.is_file():
                if not pl.read_parquet(ids, columns=["uid"])["uid"].equals(frame["uid"]):
                    raise CurateError(f"{ids}: holds other rows than the source's shard {i} now; the source changed, so choose another --out")
                reused += 1
                progress.advance(task, frame.height)
                continue
            texts = frame["caption"].fill_null("").to_list()
            emb = np.empty((len(texts), encoder.dim), dtype=np.float16)
            for idx, part in encoder.encode_batches(texts, batch_size=batch_size):
                emb[idx] = part.astype(np.float16)
                progress.advance(task, len(idx))
            with atomic_path(npy) as tmp, open(tmp, "wb") as f:
                np.save(f, emb, allow_pickle=False)
            with atomic_path(ids) as tmp:
                frame.select(cols[:1] + cols[2:]).write_parquet(tmp, compression="zstd")
    if vocab is not None:
        from curate.similarity import definition_table
        from curate.vocab import load_vocab

        table = definition_table(load_vocab(vocab), identity["definition_format"])
        emb = encoder.encode(table["text"].to_list(), batch_size=batch_size).astype(np.float16)
        with atomic_path(out / "classes.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, emb, allow_pickle=False)
        with atomic_path(out / "classes.parquet") as tmp:
            table.write_parquet(tmp, compression="zstd")
    frames = [pl.read_parquet(out / "shards" / f"{_shard_name(i)}.parquet") for i in range(n_shards)]
    index = pl.concat(frames, how="vertical") if frames else pl.DataFrame(schema={"uid": pl.Utf8})
    index = index.with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("row"))
    with atomic_path(out / INDEX_FILE) as tmp:
        index.select("uid", "row", *[c for c in index.columns if c not in ("uid", "row")]).write_parquet(tmp, compression="zstd")
    write_text_atomic(meta_path, json.dumps({**identity, "rows": n_rows, "shards": n_shards, "complete": True}, indent=2) + "\n")
    return EmbedResult(out, n_rows, n_shards, reused, encoder.dim, 0 if vocab is None else table.height)


@dataclass
class Embeddings:
    """An embeddings folder, opened: ``index`` (uid, row[, wnid]), shards memory-mapped."""

    folder: Path
    meta: dict
    index: pl.DataFrame
    shards: list[np.ndarray]

    @property
    def rows(self) -> int:
        return self.index.height

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    def take(self, rows: np.ndarray) -> np.ndarray:
        """float32 rows at these positions (renormalised: float16 storage rounds the norm)."""
        rows = np.asarray(rows, dtype=np.int64)
        size = int(self.meta["shard_size"])
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        shard = rows // size
        for s in np.unique(shard):
            sel = np.flatnonzero(shard == s)
            out[sel] = self.shards[int(s)][rows[sel] - s * size]
        return _renormalise(out)

    def matrix(self) -> np.ndarray:
        """Every row as one float32 matrix (``rows x dim``)."""
        if not self.shards:
            return np.zeros((0, self.dim), dtype=np.float32)
        return _renormalise(np.concatenate([np.asarray(s, dtype=np.float32) for s in self.shards]))

    def classes(self) -> tuple[pl.DataFrame, np.ndarray]:
        """The class-definition table and its embeddings (when embedded with a vocabulary)."""
        t, e = self.folder / "classes.parquet", self.folder / "classes.npy"
        if not t.is_file() or not e.is_file():
            raise CurateError(f"{self.folder}: no class-definition embeddings; run curate embed with --vocab")
        return pl.read_parquet(t), _renormalise(np.load(e).astype(np.float32))


def _renormalise(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norm, out=x, where=norm > 0)
    return x


def open_embeddings(folder: str | Path) -> Embeddings:
    """A complete embeddings folder written by :func:`embed_source`."""
    folder = Path(folder)
    meta_path = folder / EMBED_FILE
    if not meta_path.is_file():
        raise CurateError(f"{folder}: not an embeddings folder (no {EMBED_FILE}); write one with curate embed")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        raise CurateError(f"{meta_path}: not a curate embeddings file")
    if not meta.get("complete"):
        raise CurateError(f"{folder}: the embedding run did not finish; run the same curate embed again to resume it")
    index = pl.read_parquet(folder / INDEX_FILE)
    shards = [np.load(folder / "shards" / f"{_shard_name(i)}.npy", mmap_mode="r") for i in range(int(meta["shards"]))]
    if sum(len(s) for s in shards) != index.height:
        raise CurateError(f"{folder}: shards hold {sum(len(s) for s in shards)} rows, the index {index.height}")
    return Embeddings(folder, meta, index, shards)
