"""Images and tensor shards for a manifest folder.

Two stages, each resumable shard by shard:

1. ``download_images``: img2dataset fetches every manifest row (http(s), ``file://`` or a local
   ``path``) into webdataset tars under ``NAME/images/{train,eval}/``; each sample carries its
   ``uid``, ``label`` and ``caption``. img2dataset's per-row ``status``/``error_message`` (its
   per-shard parquet) is turned into counts of failure reasons. A re-run skips finished
   img2dataset shards (its incremental mode).
2. ``tensorize``: each downloaded image is decoded once, resized and centre-cropped to a fixed
   resolution and written with its token ids (open_clip's tokenizer), label and uid as ``.npy``
   files under ``NAME/shards/{train,eval}/`` (one tensor shard per tar), then ``index.json``.
   A shard is finished when its ``NNNNN.json`` exists (written after its arrays, all through
   temporary names), so an interrupted run redoes only unfinished shards.

The on-disk format is documented in ``manifests/README.md`` ("Tensor shards"); ``curate.loader``
reads it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from curate.errors import CurateError
from curate.util import atomic_path, file_lock, file_sha256, recover, write_text_atomic

FORMAT_NAME = "curate-tensor-shards"
FORMAT_VERSION = 1
CONTEXT_LENGTH = 77
TOKENIZER_MODEL = "ViT-B-32"  # open_clip's CLIP BPE tokenizer; its vocabulary ships in the package
SPLITS = ("train", "eval")
DISTRIBUTORS = ("multiprocessing", "pyspark", "ray")
# the files a tensor shard is made of, with the dtype each must have
ARRAYS = ("images", "tokens", "labels", "uids")
REQUIRED_COLUMNS = ("uid", "label")


# ---------------------------------------------------------------------------------------------
# manifest reading


@dataclass(frozen=True)
class SplitInput:
    """The rows of one split, ready for img2dataset, plus where they came from."""

    split: str
    source: Path  # the parquet file the rows were read from
    sha256: str
    rows: pl.DataFrame  # uid, label, caption, url (url null where the manifest gives neither)


def _to_url(url: str | None, path: str | None, base: Path) -> str | None:
    if url:
        if "://" in url:
            return url
        path = path or url  # a bare path in the url column
    if not path:
        return None
    p = Path(path).expanduser()
    if not p.is_absolute():
        p = base / p
    return p.resolve().as_uri()


def _read_table(file: Path) -> pl.DataFrame:
    try:
        df = pl.read_parquet(file)
    except Exception as e:  # polars raises several types for unreadable files
        raise CurateError(f"{file}: not a readable parquet file ({type(e).__name__}: {e})") from e
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise CurateError(
            f"{file}: missing column(s) {', '.join(missing)}; a manifest needs uid, label and url or path"
        )
    if "url" not in df.columns and "path" not in df.columns:
        raise CurateError(f"{file}: neither a url nor a path column; one of them says where each image is")
    if "caption" not in df.columns:
        raise CurateError(
            f"{file}: no caption column; the tensor shards hold each row's training text (curate build writes it)"
        )
    if not df.schema["label"].is_integer():
        raise CurateError(f"{file}: column label must be integers, found {df.schema['label']}")
    for col in ("uid", "label"):
        nulls = df[col].null_count()
        if nulls:
            row = int(df.with_row_index().filter(pl.col(col).is_null())["index"][0])
            raise CurateError(f"{file}: column {col} has {nulls} null value(s), first at row {row}")
    from curate.manifest import UNLABELLED

    # a row naming no class (curate build --keep-unmatched) is UNLABELLED, no other negative label
    if df["label"].min() is not None and df["label"].min() < 0:
        bad = df.with_row_index().filter((pl.col("label") < 0) & (pl.col("label") != UNLABELLED))
        if bad.height:
            raise CurateError(f"{file}: row {int(bad['index'][0])} has label {int(bad['label'][0])}; labels are 0..K-1, or {UNLABELLED} for no class")
    dup = df["uid"].is_duplicated()
    if dup.any():
        raise CurateError(
            f"{file}: uid {df['uid'].filter(dup)[0]!r} appears more than once; uids must be unique"
        )
    return df


def _prepare(df: pl.DataFrame, base: Path) -> pl.DataFrame:
    url = df["url"].cast(pl.Utf8) if "url" in df.columns else pl.Series([None] * len(df), dtype=pl.Utf8)
    path = df["path"].cast(pl.Utf8) if "path" in df.columns else pl.Series([None] * len(df), dtype=pl.Utf8)
    caption = df["caption"].cast(pl.Utf8).fill_null("")
    urls = [_to_url(u, p, base) for u, p in zip(url.to_list(), path.to_list())]
    return pl.DataFrame(
        {
            "uid": df["uid"].cast(pl.Utf8),
            "label": df["label"].cast(pl.Int64),
            "caption": caption,
            "url": pl.Series(urls, dtype=pl.Utf8),
        }
    )


def _recover(root: Path) -> None:
    """Finish or undo a rebuild of this manifest folder that was killed midway (util.recover)."""
    from curate.manifest import DERIVED_FOLDERS

    recover(root, carry=DERIVED_FOLDERS)


def manifest_splits(manifest_dir: str | os.PathLike[str]) -> list[SplitInput]:
    """The train rows (``manifest.parquet``) and eval rows (``eval.parquet``, when present).

    Rows of ``manifest.parquet`` whose ``split`` is ``eval`` count as eval rows when there is no
    ``eval.parquet``; with one, they are left out so no image lands in both splits.
    """
    root = Path(manifest_dir)
    _recover(root)
    main = root / "manifest.parquet"
    if not root.is_dir():
        raise CurateError(f"{root}: no such manifest folder")
    if not main.is_file():
        raise CurateError(f"{root}: no manifest.parquet here; build one first (curate build / make demo)")
    df = _read_table(main)
    eval_file = root / "eval.parquet"
    in_split_eval = (
        (df["split"].cast(pl.Utf8) == "eval").fill_null(False)
        if "split" in df.columns
        else pl.Series([False] * len(df), dtype=pl.Boolean)
    )
    out = [SplitInput("train", main, file_sha256(main), _prepare(df.filter(~in_split_eval), root))]
    if out[0].rows.is_empty():
        raise CurateError(f"{main}: no training rows; nothing to download")
    if eval_file.is_file():
        out.append(
            SplitInput("eval", eval_file, file_sha256(eval_file), _prepare(_read_table(eval_file), root))
        )
    elif in_split_eval.any():
        out.append(SplitInput("eval", main, out[0].sha256, _prepare(df.filter(in_split_eval), root)))
    return out


def read_classes(manifest_dir: str | os.PathLike[str]) -> pl.DataFrame:
    """``label, wnid, name`` for every class: ``classes.parquet``, else what the manifest names."""
    root = Path(manifest_dir)
    file = root / "classes.parquet"
    if file.is_file():
        df = pl.read_parquet(file)
        if "label" not in df.columns or "name" not in df.columns:
            raise CurateError(f"{file}: needs columns label and name")
        if "wnid" not in df.columns:
            df = df.with_columns(pl.lit(None, dtype=pl.Utf8).alias("wnid"))
        return df.select(
            pl.col("label").cast(pl.Int64), pl.col("wnid").cast(pl.Utf8), pl.col("name").cast(pl.Utf8)
        ).sort("label")
    frames = [pl.read_parquet(f) for f in (root / "manifest.parquet", root / "eval.parquet") if f.is_file()]
    df = pl.concat(
        [f.select([c for c in ("label", "wnid", "class_name") if c in f.columns]) for f in frames],
        how="diagonal",
    )
    n = int(df["label"].max()) + 1 if len(df) else 0
    named = df.unique("label", keep="first", maintain_order=True)
    wnid = dict(zip(named["label"].to_list(), named["wnid"].to_list())) if "wnid" in named.columns else {}
    name = (
        dict(zip(named["label"].to_list(), named["class_name"].to_list()))
        if "class_name" in named.columns
        else {}
    )
    return pl.DataFrame(
        {
            "label": list(range(n)),
            "wnid": [wnid.get(i) for i in range(n)],
            "name": [name.get(i) or str(i) for i in range(n)],
        },
        schema={"label": pl.Int64, "wnid": pl.Utf8, "name": pl.Utf8},
    )


# ---------------------------------------------------------------------------------------------
# download (img2dataset)


@dataclass
class DownloadReport:
    """What one split's download did: rows asked for, images got, failures by reason."""

    split: str
    rows: int
    succeeded: int
    failed: dict[str, int]
    output: str

    @property
    def success_rate(self) -> float:
        return self.succeeded / self.rows if self.rows else 0.0

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "success_rate": round(self.success_rate, 6)}


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_INCOMPLETE = re.compile(r"IncompleteRead\(\d+ bytes read(, \d+ more expected)?\)")
_ERRNO_PATH = re.compile(r"(\[Errno \d+\] [^:>]+):[^>]*")


def failure_reason(status: str, error_message: str | None) -> str:
    """A short reason shared by rows that failed the same way (paths and quoted names removed)."""
    msg = (error_message or "unknown error").strip()
    msg = _ERRNO_PATH.sub(r"\1", msg)
    msg = _INCOMPLETE.sub("IncompleteRead (connection closed before the body ended)", msg)
    msg = _QUOTED.sub("…", msg)
    msg = " ".join(msg.split())[:120]
    return f"{status}: {msg}"


def _img2dataset_config(
    input_file: Path,
    output: Path,
    *,
    resolution: int,
    processes: int,
    threads: int,
    distributor: str,
    shard_size: int,
    timeout: int,
    retries: int,
) -> dict[str, object]:
    return {
        "url_list": str(input_file),
        "input_format": "parquet",
        "url_col": "url",
        "caption_col": "caption",
        "save_additional_columns": ["uid", "label"],
        "output_folder": str(output),
        "output_format": "webdataset",
        "image_size": resolution,
        "resize_mode": "center_crop",
        "encode_format": "jpg",
        "encode_quality": 95,
        "processes_count": processes,
        "thread_count": threads,
        "distributor": distributor,
        "number_sample_per_shard": shard_size,
        "timeout": timeout,
        "retries": retries,
        "incremental_mode": "incremental",
        "extract_exif": False,
        "compute_hash": None,
        "enable_wandb": False,
        "max_shard_retry": 1,
    }


def _check_distributor(distributor: str) -> None:
    if distributor not in DISTRIBUTORS:
        raise CurateError(f"--distributor {distributor!r}: choose one of {', '.join(DISTRIBUTORS)}")
    module = {"pyspark": "pyspark", "ray": "ray"}.get(distributor)
    if module:
        import importlib.util

        if importlib.util.find_spec(module) is None:
            raise CurateError(
                f"--distributor {distributor}: {module} is not installed", hint=f"pip install {module}"
            )


def _done_shards(folder: Path) -> list[Path]:
    """img2dataset shards that finished: their ``NNNNN_stats.json`` is written last."""
    return sorted(folder.glob("*_stats.json"))


_RUN_FILE = "img2dataset.run"  # names the running img2dataset child's process tree (see _RUN_ENV)
_RUN_ENV = "CURATE_IMG2DATASET_RUN"  # a token every process of one img2dataset run inherits


def _kill_orphans(images: Path) -> None:
    """Kill what a killed run's img2dataset left writing, and wait until it is gone.

    Called under the download lock, so a run still recorded there has lost its parent. Only
    processes carrying that run's token in their environment are touched.
    """
    import psutil

    record = images / _RUN_FILE
    try:
        token = record.read_text(encoding="utf-8").split()[0]
    except (OSError, IndexError):
        return

    def of_that_run(p: psutil.Process) -> bool:
        try:
            return p.environ().get(_RUN_ENV) == token
        except (psutil.Error, OSError):
            return False

    victims = [p for p in psutil.process_iter() if p.pid != os.getpid() and of_that_run(p)]
    for p in victims:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(victims, timeout=30)
    record.unlink(missing_ok=True)


def _run_img2dataset(jobs: list[tuple[dict[str, object], int, str]], *, log: Path) -> None:
    """Run img2dataset on each ``(config, shard count, label)`` in one child process.

    One child for all splits: img2dataset's import (torch, albumentations) costs seconds. The
    child leads its own process group and takes the whole group down when this process dies
    (see ``_die_with_parent``), so a killed ``curate shards`` leaves nothing writing.
    """
    from curate import ui

    token = f"{os.getpid()}-{time.time_ns()}"
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", _RUN_ENV: token}
    cmd = [sys.executable, "-m", "curate.shards", "img2dataset", json.dumps([c for c, _, _ in jobs]), str(os.getpid())]
    log.parent.mkdir(parents=True, exist_ok=True)
    outs = [Path(str(c["output_folder"])) for c, _, _ in jobs]
    record = log.parent / _RUN_FILE
    with open(log, "w", encoding="utf-8") as logf, ui.make_progress() as progress:
        tasks = [progress.add_task(label, total=total) for _, total, label in jobs]

        def update() -> None:
            for task, out in zip(tasks, outs):
                progress.update(task, completed=len(_done_shards(out)) if out.is_dir() else 0)

        write_text_atomic(record, f"{token}\n")  # first: a kill right after the start still finds it
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            while proc.poll() is None:
                update()
                time.sleep(0.3)
        except KeyboardInterrupt:
            proc.terminate()  # the child's handler ends its whole group
            proc.wait(timeout=30)
            raise
        finally:
            if proc.poll() is not None:
                record.unlink(missing_ok=True)
        update()
    if proc.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        raise CurateError(f"img2dataset failed (exit {proc.returncode}): {tail[0]}; log: {log}")


def _summarise(split: str, rows_total: int, no_url: int, folder: Path) -> DownloadReport:
    reasons: Counter[str] = Counter()
    succeeded = 0
    for stats in _done_shards(folder):
        meta = folder / stats.name.replace("_stats.json", ".parquet")
        if not meta.is_file():
            continue
        t = pq.read_table(meta, columns=["status", "error_message"]).to_pydict()
        for status, err in zip(t["status"], t["error_message"]):
            if status == "success":
                succeeded += 1
            else:
                reasons[failure_reason(status or "failed", err)] += 1
    if no_url:
        reasons["skipped: no url or path in the manifest"] += no_url
    return DownloadReport(
        split,
        rows_total,
        succeeded,
        dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
        str(folder),
    )


def download_images(
    manifest_dir: str | os.PathLike[str],
    *,
    resolution: int = 64,
    processes: int | None = None,
    threads: int = 32,
    distributor: str = "multiprocessing",
    shard_size: int = 1000,
    timeout: int = 10,
    retries: int = 0,
) -> list[DownloadReport]:
    """Download every split of a manifest into ``images/{split}/`` (webdataset tars).

    Resumes: finished img2dataset shards are kept. When the manifest changed since the last run
    (another sha256), that split's images are discarded and fetched again, since img2dataset's
    shard numbering follows row order.
    """
    if resolution < 8:
        raise CurateError(f"--resolution {resolution}: must be at least 8 pixels")
    if shard_size < 1:
        raise CurateError(f"shard size {shard_size}: must be at least 1")
    if threads < 1:
        raise CurateError(f"--threads {threads}: must be at least 1")
    _check_distributor(distributor)
    processes = processes or max(1, os.cpu_count() or 1)
    root = Path(manifest_dir)
    images = root / "images"
    parts = manifest_splits(root)
    busy = f"{images}: another curate shards is downloading here; wait for it or stop it"
    with file_lock(images / ".lock", wait=False, busy=busy):
        _kill_orphans(images)
        return _download_locked(parts, images, resolution=resolution, processes=processes, threads=threads,
                                distributor=distributor, shard_size=shard_size, timeout=timeout, retries=retries)


def _download_locked(
    parts: list[SplitInput],
    images: Path,
    *,
    resolution: int,
    processes: int,
    threads: int,
    distributor: str,
    shard_size: int,
    timeout: int,
    retries: int,
) -> list[DownloadReport]:
    jobs = []
    for part in parts:
        out = images / part.split
        stamp_file = images / f"{part.split}.source.json"
        stamp = {
            "manifest": part.source.name,
            "sha256": part.sha256,
            "resolution": resolution,
            "shard_size": shard_size,
        }
        if out.exists():
            old = json.loads(stamp_file.read_text(encoding="utf-8")) if stamp_file.is_file() else None
            if old != stamp:
                shutil.rmtree(out)
        # what a killed run left: img2dataset's staging folder (its row batches are rewritten)
        shutil.rmtree(out / "_tmp", ignore_errors=True)
        rows = part.rows.filter(pl.col("url").is_not_null())
        total = -(-len(rows) // shard_size)
        # all shards finished: nothing to start img2dataset for
        if len(rows) and (not out.is_dir() or len(_done_shards(out)) < total):
            input_file = images / f"{part.split}.input.parquet"
            images.mkdir(parents=True, exist_ok=True)
            with atomic_path(input_file) as tmp:
                rows.write_parquet(tmp)
            write_text_atomic(stamp_file, json.dumps(stamp, indent=1) + "\n")
            config = _img2dataset_config(
                input_file, out, resolution=resolution, processes=processes, threads=threads,
                distributor=distributor, shard_size=shard_size, timeout=timeout, retries=retries,
            )  # fmt: skip
            jobs.append((config, total, f"download {part.split}"))
    if jobs:
        _run_img2dataset(jobs, log=images / "img2dataset.log")
    reports = []
    for part in parts:
        out = images / part.split
        shutil.rmtree(out / "_tmp", ignore_errors=True)
        no_url = int(part.rows["url"].null_count())
        report = _summarise(part.split, len(part.rows), no_url, out)
        write_text_atomic(images / f"{part.split}.report.json", json.dumps(report.to_dict(), indent=1) + "\n")
        reports.append(report)
    return reports


# ---------------------------------------------------------------------------------------------
# tensorize


@dataclass
class TensorizeReport:
    """What one split's tensorize did: samples written, images skipped by reason."""

    split: str
    num_samples: int
    shards: int
    shards_done_before: int
    skipped: dict[str, int]
    output: str
    index: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class _ShardJob:
    tar: str
    out_dir: str
    name: str
    resolution: int
    num_classes: int


@dataclass
class _ShardResult:
    name: str
    num_samples: int
    skipped: dict[str, int] = field(default_factory=dict)


def _decode(data: bytes, resolution: int) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        im = im.convert("RGB")
    w, h = im.size
    if (w, h) != (resolution, resolution):
        # shortest side to the resolution, then the centre square: no stretching
        scale = resolution / min(w, h)
        nw, nh = max(resolution, round(w * scale)), max(resolution, round(h * scale))
        im = im.resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=3.0)
        left, top = (nw - resolution) // 2, (nh - resolution) // 2
        im = im.crop((left, top, left + resolution, top + resolution))
    return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)


_IMAGE_EXT = ("jpg", "jpeg", "png", "webp")

#: Why a downloaded sample is not in the tensor shards: stable keys (index.json's ``skipped``,
#: so the counts of two runs add up) and what each means.
SKIP_REASONS = {
    "no_image": "no image file in the sample",
    "bad_metadata": "the sample's JSON metadata is unreadable",
    "no_uid_or_label": "no uid or label in the sample's metadata",
    "label_out_of_range": "label outside the class table",
    "undecodable": "the image bytes do not decode",
    "tar_truncated": "the tar is cut short (downloaded, then lost with the rest of the tar)",
    "missing_from_tar": "img2dataset logged a success, but the sample is not in the tar",
}


class _TruncatedTar(ValueError):
    """The tar ends inside a member or without its end-of-archive blocks (a cut download or copy)."""


def _tar_members(data: bytes) -> Iterable[tuple[str, bytes]]:
    """(name, bytes) of each regular file in an uncompressed tar held in memory.

    A direct walk over the 512-byte headers (ustar, pax and GNU long names): several times
    faster than ``tarfile`` on shards of many small files. Raises ``_TruncatedTar`` where the data
    stops early (after yielding every whole member before the cut), ValueError on anything odd.
    """
    off, end = 0, len(data)
    long_name: str | None = None
    while off + 512 <= end:
        header = data[off : off + 512]
        if header.count(0) == 512:
            return
        if sum(header[:148]) + sum(header[156:]) + 8 * 32 != int(header[148:156].strip(b"\0 ") or b"-1", 8):
            raise ValueError(f"bad tar header checksum at byte {off}")
        raw_size = header[124:136]
        size = (
            int.from_bytes(raw_size[1:], "big")
            if raw_size[0] & 0x80
            else int(raw_size.strip(b"\0 ") or b"0", 8)
        )
        if off + 512 + size > end:
            raise _TruncatedTar(f"the data ends inside a member, at byte {end}")
        kind = header[156:157]
        body = data[off + 512 : off + 512 + size]
        off += 512 + -(-size // 512) * 512
        if kind == b"x":  # pax: "LEN key=value\n" records; only the path matters here
            for rec in body.decode("utf-8", "surrogateescape").split("\n"):
                key, _, value = rec.partition(" ")[2].partition("=")
                if key == "path":
                    long_name = value
            continue
        if kind == b"L":  # GNU long name
            long_name = body.rstrip(b"\0").decode("utf-8", "surrogateescape")
            continue
        name = long_name
        long_name = None
        if name is None:
            name = header[0:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            prefix = header[345:500].split(b"\0", 1)[0] if header[257:262] == b"ustar" else b""
            if prefix:
                name = prefix.decode("utf-8", "surrogateescape") + "/" + name
        if kind in (b"0", b"\0", b"7"):
            yield name, body
    # a whole tar ends with zero blocks; running out of data first means it was cut
    raise _TruncatedTar(f"no end-of-archive marker (the data stops at byte {end})")


def _tarfile_members(data: bytes) -> Iterable[tuple[str, bytes]]:
    """The same through ``tarfile`` (for tars the fast walk finds odd), truncation raised alike."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
            for m in tar:
                if m.isfile():
                    f = tar.extractfile(m)
                    body = f.read() if f is not None else b""
                    if len(body) != m.size:
                        raise _TruncatedTar(f"member {m.name} is cut short")
                    yield m.name, body
    except tarfile.ReadError as e:
        raise _TruncatedTar(str(e)) from e


def _read_tar(path: Path) -> tuple[list[tuple[str, dict[str, bytes]]], bool]:
    """(key, {extension: bytes}) per sample of a webdataset tar, in key order, and whether the tar
    was cut short. A cut tar gives the samples before the cut; the sample the cut went through is
    left out whole (some of its files may be missing)."""
    data = path.read_bytes()
    members: list[tuple[str, bytes]] = []
    truncated = False
    try:
        members.extend(_tar_members(data))
    except _TruncatedTar:
        truncated = True
    except ValueError:
        members, truncated = [], False
        try:
            members.extend(_tarfile_members(data))  # let tarfile judge odd tars
        except _TruncatedTar:
            truncated = True
    samples: dict[str, dict[str, bytes]] = {}
    last = None
    for name, body in members:
        key, _, ext = name.rsplit("/", 1)[-1].partition(".")
        samples.setdefault(key, {})[ext.lower()] = body
        last = key
    if truncated and last is not None:
        del samples[last]
    # img2dataset writes a shard's samples in download-completion order; keys follow row order
    return sorted(samples.items()), truncated


def _downloaded(tar: Path) -> int | None:
    """How many rows img2dataset's row log (``NNNNN.parquet`` beside the tar) calls a success."""
    log = tar.with_suffix(".parquet")
    try:
        status = pq.read_table(log, columns=["status"]).column("status").to_pylist()
    except Exception:  # no log, or not one img2dataset wrote: nothing to reconcile with
        return None
    return sum(1 for s in status if s == "success")


_TOKENIZER: Callable[[list[str]], object] | None = None


def tokenizer() -> Callable[[list[str]], object]:
    """open_clip's CLIP tokenizer (offline: the BPE vocabulary ships inside open_clip).

    Read from open_clip's own ``tokenizer.py``, which stands alone, without importing the package
    (whose models pull in 4-5 s of imports a tokenizer does not need); where that file no longer
    loads alone, through the package. ``tests/test_shards.py`` checks the two tokenize alike."""
    global _TOKENIZER
    if _TOKENIZER is None:
        _TOKENIZER = _standalone_tokenizer() or _package_tokenizer()
    return _TOKENIZER


def _package_tokenizer() -> Callable[[list[str]], object]:
    import open_clip

    return open_clip.get_tokenizer(TOKENIZER_MODEL)


def _standalone_tokenizer() -> Callable[[list[str]], object] | None:
    import importlib.util

    try:
        spec = importlib.util.find_spec("open_clip")
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(list(spec.submodule_search_locations)[0]) / "tokenizer.py"
        file_spec = importlib.util.spec_from_file_location("_curate_open_clip_tokenizer", path)
        if file_spec is None or file_spec.loader is None:
            return None
        module = importlib.util.module_from_spec(file_spec)
        file_spec.loader.exec_module(module)
        return module.SimpleTokenizer(context_length=CONTEXT_LENGTH)
    except Exception:  # noqa: BLE001 - a later open_clip whose file needs its package: use the package
        return None


def tokenize(captions: list[str]) -> np.ndarray:
    """int32 ``[N, 77]`` token ids: start, BPE ids, end, zero padding (long captions truncated)."""
    if not captions:
        return np.zeros((0, CONTEXT_LENGTH), dtype=np.int32)
    # template captions ("a photo of a {class}") repeat a lot: tokenize each distinct one once
    unique, inverse = np.unique(np.asarray(captions, dtype=object), return_inverse=True)
    return tokenizer()(unique.tolist()).numpy().astype(np.int32)[inverse.reshape(-1)]


def _save_npy(dest: Path, array: np.ndarray) -> dict[str, object]:
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as f:  # an open file: np.save would append .npy to a bare temp name
            np.save(f, array, allow_pickle=False)
    return {
        "file": dest.name,
        "dtype": array.dtype.str,
        "shape": list(array.shape),
        "sha256": file_sha256(dest),
    }


def _decode_shard(job: _ShardJob) -> tuple[dict[str, object], list[str]]:
    """Decode one tar into a shard's image, label and uid arrays; returns its record and captions."""
    from curate.manifest import UNLABELLED  # a row naming no class (--keep-unmatched)

    out = Path(job.out_dir)
    skipped: Counter[str] = Counter()
    images, captions, labels, uids = [], [], [], []
    samples, truncated = _read_tar(Path(job.tar))
    for key, parts in samples:
        ext = next((e for e in _IMAGE_EXT if e in parts), None)
        if ext is None:
            skipped["no_image"] += 1
            continue
        try:
            meta = json.loads(parts.get("json", b"{}"))
        except ValueError:
            skipped["bad_metadata"] += 1
            continue
        uid, label = meta.get("uid"), meta.get("label")
        if uid is None or label is None:
            skipped["no_uid_or_label"] += 1
            continue
        if not (0 <= int(label) < job.num_classes or int(label) == UNLABELLED):
            skipped["label_out_of_range"] += 1
            continue
        try:
            images.append(_decode(parts[ext], job.resolution))
        except Exception:  # PIL raises many types for bad bytes
            skipped["undecodable"] += 1
            continue
        caption = parts["txt"].decode("utf-8", "replace") if "txt" in parts else (meta.get("caption") or "")
        captions.append(caption)
        labels.append(int(label))
        uids.append(str(uid))
        del key
    # every row img2dataset calls a success ends in the shard or under a reason
    expected = _downloaded(Path(job.tar))
    seen = len(labels) + sum(skipped.values())
    if expected is not None and expected > seen:
        skipped["tar_truncated" if truncated else "missing_from_tar"] += expected - seen
    elif truncated:
        skipped["tar_truncated"] += 1  # at least the sample the cut went through
    r = job.resolution
    arrays = {
        "images": np.stack(images) if images else np.zeros((0, 3, r, r), np.uint8),
        "labels": np.asarray(labels, dtype=np.int64),
        "uids": np.asarray(uids, dtype=f"<U{max([len(u) for u in uids], default=1)}"),
    }
    record: dict[str, object] = {
        "name": job.name,
        "num_samples": len(labels),
        "source": Path(job.tar).name,
        "source_stat": _stat(Path(job.tar)),
        "resolution": job.resolution,
        "num_classes": job.num_classes,
        "skipped": dict(sorted(skipped.items())),
        "files": {k: _save_npy(out / f"{job.name}.{k}.npy", a) for k, a in arrays.items()} if labels else {},
    }
    return record, captions


def _finish_shard(out: Path, record: dict[str, object], captions: list[str]) -> dict[str, object]:
    """Tokens, then the shard record, written last as the completion marker."""
    files = dict(record["files"])  # type: ignore[call-overload]
    if captions:
        files["tokens"] = _save_npy(out / f"{record['name']}.tokens.npy", tokenize(captions))
    record = {**record, "files": {k: files[k] for k in ARRAYS if k in files}}
    write_text_atomic(out / f"{record['name']}.json", json.dumps(record, indent=1) + "\n")
    return record


def _tensorize_shard(job: _ShardJob) -> dict[str, object]:
    """One tar to one finished tensor shard (arrays, tokens, then its record); returns the record."""
    return _finish_shard(Path(job.out_dir), *_decode_shard(job))


def _stat(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _finished(
    out: Path, name: str, tar: Path, *, resolution: int, num_classes: int
) -> dict[str, object] | None:
    """The record of a shard finished from this very tar with these settings, else None."""
    marker = out / f"{name}.json"
    if not marker.is_file():
        return None
    try:
        record = json.loads(marker.read_text(encoding="utf-8"))
    except ValueError:
        return None
    if record.get("source_stat") != _stat(tar):  # the tar was fetched again since
        return None
    if record.get("resolution") != resolution or record.get("num_classes") != num_classes:
        return None
    files = record.get("files") or {}
    if any(not (out / f["file"]).is_file() for f in files.values()):
        return None
    return record


def tensorize(
    manifest_dir: str | os.PathLike[str],
    *,
    split: str = "train",
    resolution: int = 64,
    workers: int | None = None,
) -> TensorizeReport:
    """Turn ``images/{split}/*.tar`` into tensor shards under ``shards/{split}/`` and write its index.

    Shards whose record (``NNNNN.json``) is present, with all its files, are kept (resume).
    """
    from curate import ui

    root = Path(manifest_dir)
    _recover(root)
    src = root / "images" / split
    if resolution < 8:
        raise CurateError(f"--resolution {resolution}: must be at least 8 pixels")
    if not src.is_dir():
        raise CurateError(f"{src}: no downloaded images for split {split!r}; run the download first")
    tars = [src / s.name.replace("_stats.json", ".tar") for s in _done_shards(src)]
    tars = [t for t in tars if t.is_file()]
    if not tars:
        raise CurateError(f"{src}: no finished img2dataset shards (NNNNN.tar with NNNNN_stats.json)")
    classes = read_classes(root)
    out = root / "shards" / split
    index_file = out / "index.json"
    out.mkdir(parents=True, exist_ok=True)
    index_file.unlink(missing_ok=True)  # the index describes a finished set only
    records: dict[str, dict[str, object]] = {}
    jobs = []
    for tar in tars:
        name = tar.stem
        done = _finished(out, name, tar, resolution=resolution, num_classes=len(classes))
        if done is not None:
            records[name] = done
        else:
            jobs.append(_ShardJob(str(tar), str(out), name, resolution, len(classes)))
    done_before = len(records)
    names = {t.stem for t in tars}
    for f in out.iterdir():  # shards of an earlier download that no longer has their tar
        if f.name.split(".", 1)[0] not in names and f.name != "index.json":
            f.unlink()
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs) or 1))
    with ui.make_progress() as progress:
        task = progress.add_task(f"tensorize {split}", total=len(tars), completed=done_before)
        if workers == 1:
            for job in jobs:
                records[job.name] = _tensorize_shard(job)
                progress.advance(task)
        else:
            # forkserver: workers start clean (no inherited threads) yet share one import of
            # open_clip (torch), which would cost seconds per spawned worker
            ctx = get_context("forkserver")
            ctx.set_forkserver_preload(["curate.shards", "open_clip"])
            with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                futures = [pool.submit(_tensorize_shard, job) for job in jobs]
                for fut in as_completed(futures):
                    rec = fut.result()
                    records[str(rec["name"])] = rec
                    progress.advance(task)
    ordered = [records[n] for n in sorted(records)]
    skipped: Counter[str] = Counter()
    for rec in ordered:
        skipped.update(rec["skipped"])  # type: ignore[arg-type]
    manifest = next((p for p in manifest_splits(root) if p.split == split), None)
    index = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "split": split,
        "resolution": resolution,
        "layout": "NCHW",
        "num_samples": int(sum(int(r["num_samples"]) for r in ordered)),  # type: ignore[call-overload]
        "num_classes": len(classes),
        "class_names": classes["name"].to_list(),
        "wnids": classes["wnid"].to_list(),
        "tokenizer": {"library": "open_clip", "model": TOKENIZER_MODEL, "context_length": CONTEXT_LENGTH},
        "manifest": {"file": manifest.source.name, "sha256": manifest.sha256} if manifest else None,
        "skipped": dict(sorted(skipped.items())),
        "shards": [
            {"name": r["name"], "num_samples": r["num_samples"], "source": r["source"], "files": r["files"]}
            for r in ordered
            if int(r["num_samples"]) > 0  # type: ignore[call-overload]
        ],
    }
    write_text_atomic(index_file, json.dumps(index, indent=1, ensure_ascii=False) + "\n")
    return TensorizeReport(
        split,
        int(index["num_samples"]),
        len(ordered),
        done_before,
        index["skipped"],
        str(out),
        str(index_file),  # type: ignore[arg-type]
    )


def verify_shards(shards_dir: str | os.PathLike[str]) -> None:
    """Check every file listed in ``index.json`` against its size, dtype, shape and sha256."""
    folder = Path(shards_dir)
    index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
    for shard in index["shards"]:
        for kind, f in shard["files"].items():
            path = folder / f["file"]
            if not path.is_file():
                raise CurateError(f"{path}: listed in index.json but missing")
            if file_sha256(path) != f["sha256"]:
                raise CurateError(f"{path}: sha256 differs from index.json; the shard was changed or damaged")
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            if arr.dtype.str != f["dtype"] or list(arr.shape) != f["shape"]:
                raise CurateError(
                    f"{path}: {kind} is {arr.dtype.str} {list(arr.shape)}, index says {f['dtype']} {f['shape']}"
                )


def _die_with_parent(parent: int) -> None:
    """In the img2dataset child: when ``parent`` dies (even by SIGKILL), kill this process group.

    Linux tells the child at once (``PR_SET_PDEATHSIG``); elsewhere a thread polls the parent id.
    Either way SIGTERM ends the whole group: img2dataset's own workers included.
    """
    import signal
    import threading

    def end_group(*_: object) -> None:
        os.killpg(os.getpgrp(), signal.SIGKILL)

    signal.signal(signal.SIGTERM, end_group)
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        end_group()

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()
    if os.getppid() != parent:  # died before the watch began
        end_group()


def _img2dataset_main(configs_json: str, parent: int | None = None) -> None:
    os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"
    if parent is not None:
        _die_with_parent(parent)
    from img2dataset import download

    for config in json.loads(configs_json):
        download(**config)


if __name__ == "__main__":
    # the img2dataset child: spawn re-imports this module as __mp_main__, which runs nothing
    if len(sys.argv) in (3, 4) and sys.argv[1] == "img2dataset":
        _img2dataset_main(sys.argv[2], int(sys.argv[3]) if len(sys.argv) == 4 else None)
    else:
        sys.exit("usage: python -m curate.shards img2dataset '[CONFIG, ...]' (JSON) [PARENT_PID]")
