"""Downloading caption metadata (never images): presets of known parts, resume, retries, checksums.

A download streams into ``DEST.part`` and is renamed onto ``DEST`` only once it is complete and its
checksum (where known) matches, so a file under its final name is always whole. An interrupted
transfer keeps its ``.part`` file; the next attempt (a retry in the same run, or a later run) asks
the server for the rest with an HTTP ``Range`` request. The ``.part`` scheme is used instead of
``curate.util.atomic_path`` because resume needs a temporary name that is stable across runs.

Transient failures (connection drops, timeouts, HTTP 408/429/5xx) are retried with exponential
backoff; other HTTP errors (404, 403, ...) fail at once with the URL and the status.

Releases hosted on the Hugging Face Hub (Re-LAION, DataComp) are listed through ``huggingface_hub``
(``HF_ENDPOINT`` chooses the server, ``HF_TOKEN`` or a ``huggingface-cli login`` token opens gated
repos; their files' LFS sha256 become the checksums) and downloaded by the same resumable loop.
The original LAION-400M/5B releases were withdrawn in December 2023: their presets only describe
the layout of a copy you already have.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import os
import re
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import requests

from curate.errors import CurateError

CHUNK = 1 << 16  # a dropped connection loses at most the chunk being read
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
USER_AGENT = "curate-fetch/0.1 (+https://github.com/; caption metadata downloader)"


@dataclass(frozen=True)
class Part:
    """One file of a metadata release: where it lives, what to call it, its sha256 if published."""

    url: str
    filename: str
    sha256: str | None = None


@dataclass(frozen=True)
class HubRepo:
    """A dataset repository on the Hugging Face Hub whose files matching ``pattern`` are the parts."""

    repo_id: str
    pattern: str = "*.parquet"
    revision: str = "main"

    @property
    def page(self) -> str:
        return f"https://huggingface.co/datasets/{self.repo_id}"


@dataclass(frozen=True)
class FetchPreset:
    """A caption-metadata release: what it is and the parts that make it up (listed from the Hub
    at fetch time when ``hub`` is set; none when ``withdrawn`` says why)."""

    name: str
    description: str
    parts: tuple[Part, ...]
    source_preset: str  # the `curate.sources` preset that reads the downloaded files
    hub: HubRepo | None = None
    withdrawn: str | None = None


_WITHDRAWN = (
    "LAION withdrew its original releases in December 2023 (the-eye answers 404 for them); "
    "download the re-release instead (curate fetch {successor}) or, with a copy of your own, read it "
    "directly: curate build --source DIR --preset laion400m"
)

FETCH_PRESETS: dict[str, FetchPreset] = {
    p.name: p
    for p in (
        FetchPreset(
            "relaion400m",
            "Re-LAION-400M metadata (LAION's 2024 re-release of LAION-400M, with CSAM-linked samples removed): "
            "parquet parts from the Hugging Face Hub (gated: accept the terms on its page, set HF_TOKEN).",
            (),
            "laion400m",
            hub=HubRepo("laion/relaion400m"),
        ),
        FetchPreset(
            "relaion2b-en-research-safe",
            "Re-LAION-5B research-safe, English subset (Re-LAION-2B-en research-safe): parquet parts from the "
            "Hugging Face Hub (gated: accept the terms on its page, set HF_TOKEN).",
            (),
            "laion400m",
            hub=HubRepo("laion/relaion2B-en-research-safe"),
        ),
        FetchPreset(
            "datacomp-small",
            "DataComp CommonPool, small scale (12.8M pairs): metadata parquet parts (uid, url, text, ...) from "
            "the Hugging Face Hub.",
            (),
            "generic",
            hub=HubRepo("mlfoundations/datacomp_small"),
        ),
        FetchPreset(
            "laion400m",
            "LAION-400M (original, withdrawn): bring your own copy; 32 parquet parts (URL, TEXT, SAMPLE_ID, "
            "HEIGHT, WIDTH, LICENSE, NSFW, similarity).",
            (),
            "laion400m",
            withdrawn=_WITHDRAWN.format(successor="relaion400m"),
        ),
        FetchPreset(
            "laion2b-en",
            "LAION-2B-en (original, withdrawn): bring your own copy; parquet parts (URL, TEXT, ...).",
            (),
            "laion400m",
            withdrawn=_WITHDRAWN.format(successor="relaion2b-en-research-safe"),
        ),
        FetchPreset(
            "cc3m",
            "Conceptual Captions 3M: training and validation TSVs (caption<TAB>url, no header).",
            (
                Part("https://storage.googleapis.com/gcc-data/Train/GCC-training.tsv", "GCC-training.tsv"),
                Part(
                    "https://storage.googleapis.com/gcc-data/Validation/GCC-1.1.0-Validation.tsv",
                    "GCC-1.1.0-Validation.tsv",
                ),
            ),
            "cc3m",
        ),
        FetchPreset(
            "cc12m",
            "Conceptual 12M: one TSV (url<TAB>caption, no header), ~2.5 GB.",
            (Part("https://storage.googleapis.com/conceptual_12m/cc12m.tsv", "cc12m.tsv"),),
            "cc12m",
        ),
        FetchPreset(
            "yfcc15m",
            "OpenAI's YFCC15M subset list (line, photoid, photo hash); join it to the YFCC100M "
            "metadata for titles and descriptions.",
            (
                Part(
                    "https://openaipublic.azureedge.net/clip/data/yfcc100m_subset_data.tsv.bz2",
                    "yfcc100m_subset_data.tsv.bz2",
                ),
            ),
            "yfcc15m",
        ),
        FetchPreset(
            "imagenet-captions",
            "ImageNet-Captions (Fang et al. 2022): Flickr title/tags/description for ~450k ImageNet "
            "train images, as JSON records inside a zip.",
            (
                Part(
                    "https://github.com/mlfoundations/imagenet-captions/raw/main/imagenet_captions.zip",
                    "imagenet_captions.zip",
                ),
            ),
            "imagenet-captions",
        ),
    )
}


def _progress():
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from curate.ui import err_console, progress_enabled

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        disable=not progress_enabled(),
    )


class _Transient(Exception):
    """A failure worth retrying (the ``.part`` file keeps what arrived)."""


def _total_from_headers(resp: requests.Response, offset: int) -> int | None:
    content_range = resp.headers.get("Content-Range", "")
    m = re.match(r"bytes (\d+)-(\d+)/(\d+)", content_range)
    if m:
        return int(m.group(3))
    length = resp.headers.get("Content-Length")
    if length is not None and length.isdigit():
        return int(length) + (offset if resp.status_code == 206 else 0)
    return None


def _attempt(
    url: str, part: Path, *, session: requests.Session, timeout: float, progress, task
) -> None:
    """One GET that appends to ``part`` from where it stopped; raises ``_Transient`` to retry."""
    offset = part.stat().st_size if part.exists() else 0
    # identity: byte offsets of a Range must count the bytes stored, not gzip-decoded ones
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = session.get(url, headers=headers, stream=True, timeout=timeout)
    except (requests.ConnectionError, requests.Timeout) as e:
        raise _Transient(f"{type(e).__name__}: {e}") from e
    with resp:
        if resp.status_code == 416 and offset:
            # the .part may already hold the whole file (a run killed before its rename)
            m = re.match(r"bytes \*/(\d+)", resp.headers.get("Content-Range", ""))
            if m and int(m.group(1)) == offset:
                return
            part.unlink()
            raise _Transient("HTTP 416 Range Not Satisfiable: restarting from byte 0")
        if resp.status_code in RETRYABLE_STATUS:
            raise _Transient(f"HTTP {resp.status_code} {resp.reason}")
        if resp.status_code >= 400:
            raise CurateError(f"cannot download {url}: HTTP {resp.status_code} {resp.reason}")
        if resp.status_code == 200 and offset:
            offset = 0  # the server ignored Range: start over rather than append a second copy
        total = _total_from_headers(resp, offset)
        if progress is not None:
            progress.update(task, total=total, completed=offset)
        mode = "ab" if offset else "wb"
        received = offset
        try:
            with open(part, mode) as f:
                for block in resp.iter_content(CHUNK):
                    f.write(block)
                    received += len(block)
                    if progress is not None:
                        progress.update(task, completed=received)
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
            raise _Transient(f"connection lost after {received} bytes: {type(e).__name__}") from e
        if total is not None and received < total:
            raise _Transient(f"connection closed after {received} of {total} bytes")


def download(
    url: str,
    dest: str | os.PathLike[str],
    *,
    sha256: str | None = None,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 60.0,
    session: requests.Session | None = None,
    progress=None,
) -> Path:
    """Download ``url`` to ``dest``, resuming a ``dest.part`` left by an earlier attempt.

    ``retries`` extra attempts follow a transient failure, waiting ``backoff * 2**n`` seconds
    (capped at 60). With ``sha256`` the finished file is verified before it gets its final name;
    a mismatch deletes the partial file and raises. An existing ``dest`` is kept when it matches
    ``sha256`` (or when no checksum is known). Raises ``CurateError`` naming the URL and the
    HTTP status or network error.
    """
    dest = Path(dest)
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise CurateError(f"cannot download {url!r}: only http:// and https:// URLs are supported")
    expected = sha256.lower() if sha256 else None
    if dest.exists():
        if expected is None or _sha256(dest) == expected:
            return dest
        dest.unlink()  # a stale or corrupted copy: fetch it again
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(dest):
        part = dest.with_name(dest.name + ".part")
        own_session = session is None
        session = session or requests.Session()
        own_progress = progress is None
        progress = progress or _progress()
        try:
            with progress if own_progress else contextlib.nullcontext():
                task = progress.add_task(dest.name, total=None)
                last = ""
                for attempt in range(retries + 1):
                    try:
                        _attempt(url, part, session=session, timeout=timeout, progress=progress, task=task)
                        break
                    except _Transient as e:
                        last = str(e)
                        if attempt < retries:
                            time.sleep(min(backoff * 2**attempt, 60.0))
                else:
                    kept = part.stat().st_size if part.exists() else 0
                    raise CurateError(
                        f"cannot download {url}: {last} (gave up after {retries + 1} attempts; "
                        f"{kept} bytes kept in {part.name}, run again to resume)"
                    )
        finally:
            if own_session:
                session.close()
        if expected is not None:
            got = _sha256(part)
            if got != expected:
                part.unlink()
                raise CurateError(
                    f"checksum mismatch for {dest.name} from {url}: expected sha256 {expected}, got {got}; "
                    "the partial file was deleted"
                )
        os.replace(part, dest)
        return dest


@contextlib.contextmanager
def _exclusive(dest: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``dest`` while it is downloaded: two runs appending to one
    ``.part`` file would corrupt it."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): run unlocked
        yield
        return
    lock_path = dest.with_name(f".{dest.name}.lock")
    with open(lock_path, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CurateError(f"{dest}: another download of this file is running (lock {lock_path.name})") from None
        try:
            yield
        finally:
            lock_path.unlink(missing_ok=True)
            fcntl.flock(fh, fcntl.LOCK_UN)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def parse_parts(spec: str | None, parts: Sequence[Part]) -> list[Part]:
    """Select parts by index (``0,3,5-7``) or file name; ``None`` or ``all`` selects every part."""
    if spec is None or spec.strip().lower() in ("", "all"):
        return list(parts)
    by_name = {p.filename: i for i, p in enumerate(parts)}
    chosen: list[int] = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        if item in by_name:
            chosen.append(by_name[item])
            continue
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", item)
        if not m:
            raise CurateError(
                f"--parts: {item!r} is neither a part index (0-{len(parts) - 1}), a range like 2-5, "
                "nor a file name of this preset"
            )
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo or hi >= len(parts):
            raise CurateError(f"--parts: {item!r} is out of range; this preset has parts 0-{len(parts) - 1}")
        chosen.extend(range(lo, hi + 1))
    return [parts[i] for i in sorted(set(chosen))]


def default_out(name: str) -> Path:
    from curate.util import cache_dir

    return cache_dir() / "metadata" / name


def fetch_preset(name: str) -> FetchPreset:
    try:
        return FETCH_PRESETS[name]
    except KeyError:
        raise CurateError(
            f"unknown fetch preset {name!r}; known presets: {', '.join(sorted(FETCH_PRESETS))} "
            "(or pass http(s) URLs)"
        ) from None


def hub_endpoint() -> str:
    """The Hub server: ``$HF_ENDPOINT`` (read at call time), else huggingface.co."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def _hub_token() -> str | None:
    from huggingface_hub import get_token

    return get_token()  # HF_TOKEN, else the token saved by `huggingface-cli login`


def hub_parts(hub: HubRepo, *, token: str | None = None) -> list[Part]:
    """The files of a Hub dataset repository that match its pattern, as parts (sorted by path),
    with the sha256 the Hub publishes for LFS files."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError
    from huggingface_hub.hf_api import RepoFile

    endpoint = hub_endpoint()
    access = (
        f"accept its terms at {hub.page} while logged in, then set HF_TOKEN to a token of that account"
        " (or run huggingface-cli login)"
    )
    try:
        entries = list(HfApi(endpoint=endpoint).list_repo_tree(hub.repo_id, repo_type="dataset", revision=hub.revision, recursive=True, token=token or False))
    except GatedRepoError:
        raise CurateError(f"{hub.repo_id} is gated and this token has no access: {access}") from None
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if isinstance(e, RepositoryNotFoundError) or status in (401, 403):
            who = "with this token" if token else "without a token"
            raise CurateError(f"{hub.repo_id} is not visible at {endpoint} {who} (gated, private or missing): {access}") from None
        raise CurateError(f"listing {hub.repo_id} at {endpoint} failed: {str(e).splitlines()[0]}") from None
    except Exception as e:  # network failures surface as the HTTP client's own exception types
        raise CurateError(f"cannot reach {endpoint} to list {hub.repo_id}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    files = sorted((f for f in entries if isinstance(f, RepoFile) and fnmatch.fnmatch(f.path, hub.pattern)), key=lambda f: f.path)
    if not files:
        raise CurateError(f"{hub.repo_id} at {endpoint} has no file matching {hub.pattern!r}")
    names = [Path(f.path).name for f in files]
    clash = len(set(names)) < len(names)
    return [
        Part(
            f"{endpoint}/datasets/{hub.repo_id}/resolve/{urllib.parse.quote(hub.revision, safe='')}/{urllib.parse.quote(f.path)}",
            f.path.replace("/", "--") if clash else name,
            f.lfs.sha256 if f.lfs is not None else None,
        )
        for f, name in zip(files, names)
    ]


def fetch(
    preset: str,
    out: str | os.PathLike[str] | None = None,
    parts: str | None = None,
    *,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 60.0,
) -> list[Path]:
    """Download the selected parts of a metadata preset into ``out`` (default: the cache)."""
    spec = fetch_preset(preset)
    if spec.withdrawn:
        raise CurateError(f"fetch {preset}: {spec.withdrawn}")
    token = None
    available = list(spec.parts)
    if spec.hub is not None:
        token = _hub_token()
        available = hub_parts(spec.hub, token=token)
    selected = parse_parts(parts, available)
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return fetch_parts(selected, Path(out) if out else default_out(preset), retries=retries, backoff=backoff, timeout=timeout, headers=headers)


def parts_from_urls(urls: Sequence[str]) -> list[Part]:
    """Parts for arbitrary URLs, named by the last path segment (deduplicated by prefixing the index)."""
    parts: list[Part] = []
    seen: set[str] = set()
    for i, url in enumerate(urls):
        name = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name or f"download-{i}"
        if name in seen:
            name = f"{i}-{name}"
        seen.add(name)
        parts.append(Part(url, name))
    return parts


def fetch_parts(
    parts: Sequence[Part],
    out: Path,
    *,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 60.0,
    headers: dict[str, str] | None = None,
) -> list[Path]:
    """Download ``parts`` into ``out`` one after another with one progress display; ``headers``
    (a Hub token) go with every request of the session (requests drops Authorization when a
    redirect leaves the host)."""
    out.mkdir(parents=True, exist_ok=True)
    done: list[Path] = []
    with requests.Session() as session, _progress() as progress:
        session.headers.update(headers or {})
        for p in parts:
            done.append(
                download(
                    p.url,
                    out / p.filename,
                    sha256=p.sha256,
                    retries=retries,
                    backoff=backoff,
                    timeout=timeout,
                    session=session,
                    progress=progress,
                )
            )
    return done
