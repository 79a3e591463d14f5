"""Caption sources: any supported input, read lazily into the canonical source table.

The canonical table has ``uid, caption, url, path, title, tags, description, wnid`` (all strings,
null where the source lacks them) followed by the input's other columns, untouched. Files are
scanned with polars (``scan_parquet`` / ``scan_csv`` / ``scan_ndjson``), so a source larger than
memory streams; JSON arrays and webdataset tars have no lazy polars reader: JSON is parsed when
opened, tars are read one tar at a time through a polars IO source when the plan runs.
``.gz``/``.bz2``/``.xz`` files and ``.zip`` archives are decompressed once into the cache, and an
http(s) URL is downloaded once into the cache (resumable, see ``curate.fetch``), then scanned.

Which input column becomes which canonical column is decided by a *preset* (a registry entry
listing candidate column names, first present wins), overridable per column from the CLI.

``uid`` is the source's own id where it has one (``SAMPLE_ID``, ``key``, ``photoid``,
``filename``...), else ``"<file>:<row>"`` -- the file's path relative to the source root (never
absolute) and the 0-based data row -- which is the same on every run and machine.

Rows without caption text (null or blank caption; web sources have them: YFCC titles,
openclipart) follow one policy in every command: by default they stay in the table, get no label
when matched, and are counted (``no_text``) and reported by the command; ``strict=True`` makes
the first such row, in source order, an error naming its file, row and uid; ``skip_bad_rows=True``
drops them from the table. A text file is parsed whole once per version (size, mtime) when opened,
so a ragged line or a malformed JSON line fails the same way in every command, naming its line.
Other cheap checks (file exists, not empty, parquet footer readable, columns present and of the
right type, the first 4 MiB of text files is UTF-8) run eagerly in ``open_source`` too.
"""

from __future__ import annotations

import bz2
import glob as globlib
import gzip
import json
import lzma
import re
import shutil
import urllib.parse
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import polars as pl

from curate.errors import CurateError
from curate.presets import PRESETS, Preset

CANONICAL = ("uid", "caption", "url", "path", "title", "tags", "description", "wnid")
_FILE_COL = "__curate_file"
_ROW_COL = "__curate_row"
_UTF8_PROBE = 4 << 20  # bytes of a text file checked for UTF-8 when it is opened

# single-file compressions, decompressed into the cache before reading
COMPRESSIONS: dict[str, Callable[..., IO[bytes]]] = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}

SUFFIX_FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".tar": "tar",
}


@dataclass(frozen=True, eq=False)  # LazyFrames have no meaningful equality
class Source:
    """An opened caption source: ``lazy`` is the canonical table as a polars plan."""

    name: str
    lazy: pl.LazyFrame
    vocab: str
    preset: str | None
    location: str
    files: tuple[str, ...] = ()
    skip_bad_rows: bool = False
    # the same plan before the bad-caption check, with per-file row bookkeeping (for validate_source)
    unchecked: pl.LazyFrame | None = field(default=None, repr=False)

    def collect(self, *, limit: int | None = None) -> pl.DataFrame:
        """The canonical table (or its first ``limit`` rows), read errors mapped to ``CurateError``."""
        lf = self.lazy if limit is None else self.lazy.head(limit)
        return collect_source(lf, self.location)


@dataclass(frozen=True)
class SourceReport:
    """What a full read of a source found."""

    location: str
    rows: int
    bad_captions: int
    first_bad: str | None
    files: int

    def summary(self) -> str:
        bad = f", {self.bad_captions} with a null or blank caption" if self.bad_captions else ""
        return f"{self.location}: {self.rows} rows in {self.files} file(s){bad}"


# ---------------------------------------------------------------------------------------------
# locating files


@dataclass(frozen=True)
class _File:
    path: Path
    label: str  # relative to the source root: the name used in uids and messages
    fmt: str
    origin: Path | None = None  # the user's file this one was unpacked from (into the cache)

    @property
    def shown(self) -> Path:
        """The path messages name: the user's file, not its unpacked copy in the cache."""
        return self.origin if self.origin is not None else self.path


def _format_of(path: Path) -> str:
    """The table format a file name promises (``x.tsv.gz`` -> tsv; ``x.zip`` -> zip)."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".zip":
        return "zip"
    if suffixes and suffixes[-1] in COMPRESSIONS:
        suffixes = suffixes[:-1]
    if suffixes and suffixes[-1] in SUFFIX_FORMATS:
        return SUFFIX_FORMATS[suffixes[-1]]
    known = ", ".join(sorted(SUFFIX_FORMATS)) + f" (optionally {', '.join(COMPRESSIONS)}), .zip"
    raise CurateError(f"{path}: unknown file type {path.suffix or '(no suffix)'}; supported: {known}")


def _is_table_file(p: Path) -> bool:
    try:
        _format_of(p)
    except CurateError:
        return False
    return not p.name.startswith(".")


def _files_in_folder(folder: Path, prefix: str = "", origin: Path | None = None) -> list[_File]:
    if next(folder.glob("shard-*-of-*.done"), None) is not None:
        # the outputs of a sharded curate match / freq: labels (match) and counts, not captions
        labels = next(folder.glob("shard-*-of-*.parquet"), None) is not None
        raise CurateError(
            f"{folder}: holds a sharded run's outputs (shard-*.done), not captions; add its counts with "
            f"curate freq {folder} --reduce --out DIR" + (f", or build from its labels with --labels-from {folder}" if labels else "")
        )
    found = sorted(p for p in folder.rglob("*") if p.is_file() and _is_table_file(p))
    # img2dataset writes NNNNN.parquet beside each NNNNN.tar (and NNNNN_stats.json): the parquet
    # holds every row's metadata, so it is the source, not the tars or the stats
    found = [p for p in found if not p.name.endswith("_stats.json")]
    parquet_stems = {p.with_suffix("") for p in found if p.suffix.lower() == ".parquet"}
    tars = [p for p in found if p.suffix.lower() == ".tar"]
    if tars and all(t.with_suffix("") in parquet_stems for t in tars):
        found = [p for p in found if p.suffix.lower() == ".parquet"]
    if not found:
        raise CurateError(f"{folder}: no caption files found (looked for {', '.join(sorted(SUFFIX_FORMATS))})")
    formats = {_format_of(p) for p in found}
    if len(formats) > 1:
        raise CurateError(
            f"{folder}: holds files of several formats ({', '.join(sorted(formats))}); "
            "point at one file or use a glob such as 'DIR/*.parquet'"
        )
    return [
        _File(p, prefix + p.relative_to(folder).as_posix(), _format_of(p), origin / p.relative_to(folder) if origin else None)
        for p in found
    ]


def _unpacked(f: _File) -> list[_File]:
    """A compressed file or zip, decompressed once into the cache (keyed by path, size and mtime);
    labels keep the original name so uids do not depend on the cache."""
    from curate.util import atomic_path, cache_dir, stable_hash

    suffix = f.path.suffix.lower()
    if f.fmt != "zip" and suffix not in COMPRESSIONS:
        return [f]
    _check_nonempty(f)
    st = f.path.stat()
    where = cache_dir() / "sources" / stable_hash(f.path.resolve(), st.st_size, st.st_mtime_ns)
    if f.fmt == "zip":
        target = where / f.path.stem
        if not target.is_dir():
            try:
                with atomic_path(target) as tmp, zipfile.ZipFile(f.path) as zf:
                    zf.extractall(tmp)
            except (zipfile.BadZipFile, OSError, EOFError) as e:
                raise CurateError(f"{f.shown}: not a readable zip file: {_first_line(e)}") from e
        return _files_in_folder(target, prefix=f.label + "/", origin=f.shown)
    target = where / f.path.stem  # x.tsv.gz -> x.tsv
    if not target.is_file():
        try:
            with atomic_path(target) as tmp, COMPRESSIONS[suffix](f.path, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except (OSError, EOFError, lzma.LZMAError) as e:
            raise CurateError(f"{f.shown}: cannot decompress ({suffix}): {_first_line(e)}") from e
    return [_File(target, f.label, f.fmt, f.shown)]


def _glob_root(pattern: str) -> Path:
    parts = Path(pattern).parts
    root: list[str] = []
    for part in parts:
        if globlib.has_magic(part):
            break
        root.append(part)
    return Path(*root) if root else Path(".")


def _resolve(spec: str) -> tuple[list[_File], str]:
    """The files a spec names, with labels relative to its root, and a display name."""
    if re.match(r"^https?://", spec, re.I):
        from curate.fetch import download
        from curate.util import cache_dir, stable_hash

        name = Path(urllib.parse.unquote(urllib.parse.urlsplit(spec).path)).name
        if not name:
            raise CurateError(f"{spec}: the URL must name a file (e.g. .../captions.parquet)")
        fmt = _format_of(Path(name))
        local = download(spec, cache_dir() / "sources" / stable_hash(spec) / name, retries=2, backoff=0.5)
        return [_File(local, name, fmt)], name.split(".")[0]
    if globlib.has_magic(spec):
        matches = sorted(Path(p) for p in globlib.glob(spec, recursive=True) if Path(p).is_file())
        if not matches:
            raise CurateError(f"{spec}: the pattern matches no files")
        root = _glob_root(spec)
        return [_File(p, p.relative_to(root).as_posix(), _format_of(p)) for p in matches], root.name or spec
    path = Path(spec).expanduser()
    if path.is_dir():
        return _files_in_folder(path), path.name
    if not path.exists():
        raise CurateError(
            f"{spec}: no such file or folder (a source is 'demo', a file, a folder, a glob or an http(s) URL)"
        )
    return [_File(path, path.name, _format_of(path))], path.stem.split(".")[0]


# ---------------------------------------------------------------------------------------------
# readers: one per format, each returning the file's raw columns as a LazyFrame


def _check_nonempty(f: _File) -> None:
    if f.path.stat().st_size == 0:
        raise CurateError(f"{f.shown}: the file is empty")


def _leading_lines(path: Path, n: int) -> list[bytes]:
    """Up to ``n`` non-blank lines from the start of a text file (each capped at 1 MiB)."""
    out: list[bytes] = []
    with open(path, "rb") as fh:
        while len(out) < n:
            line = fh.readline(1 << 20)
            if not line:
                break
            if line.strip():
                out.append(line)
    return out


def _check_utf8(f: _File, limit: int | None = _UTF8_PROBE) -> None:
    """Raise naming the line of the first non-UTF-8 byte (in the first ``limit`` bytes)."""
    with open(f.path, "rb") as fh:
        data = fh.read() if limit is None else fh.read(limit)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        if limit is not None and len(data) == limit and e.start >= len(data) - 4:
            return  # a multi-byte character cut by the probe's end, not a bad byte
        line = data.count(b"\n", 0, e.start) + 1
        raise CurateError(
            f"{f.shown}: line {line}: bytes are not valid UTF-8 (byte 0x{data[e.start]:02x} at offset "
            f"{e.start}); re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from e


def _read_parquet(f: _File) -> pl.LazyFrame:
    _check_nonempty(f)
    try:
        # the footer (missing when a download was cut short), read by polars alone: its row count
        # comes from the footer, and pyarrow's parquet module is not imported (24 ms of start-up)
        rows = int(pl.scan_parquet(f.path).select(pl.len()).collect().item())
    except Exception as e:
        raise CurateError(f"{f.shown}: not a readable parquet file (truncated or corrupt): {_first_line(e)}") from e
    if rows == 0:
        raise CurateError(f"{f.shown}: the parquet file has no rows")
    return pl.scan_parquet(f.path)


def _read_delimited(f: _File, sep: str) -> pl.LazyFrame:
    _check_nonempty(f)
    _check_utf8(f)
    lines = _leading_lines(f.path, 2)
    if not lines:
        raise CurateError(f"{f.shown}: the file is empty (only blank lines)")
    first = lines[0].rstrip(b"\r\n").decode("utf-8", "replace").split(sep)
    # CC3M/CC12M ship without a header: a first row holding a URL is data, not column names
    headerless = any(re.match(r"^https?://", v.strip(), re.I) for v in first)
    if not headerless and len(lines) < 2:
        raise CurateError(f"{f.shown}: has a header ({', '.join(first)}) but no rows")
    new_columns = None
    if headerless:
        url_at = next(i for i, v in enumerate(first) if re.match(r"^https?://", v.strip(), re.I))
        text_at = [i for i in range(len(first)) if i != url_at]
        new_columns = [f"column_{i + 1}" for i in range(len(first))]
        new_columns[url_at] = "url"
        if len(text_at) >= 1:
            new_columns[text_at[0]] = "caption"
    try:
        lf = pl.scan_csv(
            f.path,
            separator=sep,
            has_header=not headerless,
            new_columns=new_columns,
            quote_char=None if sep == "\t" else '"',  # TSV captions hold bare quotes
            infer_schema=False,  # every column as text: ids like 00012 keep their zeros
            truncate_ragged_lines=False,
        )
        lf.collect_schema()
    except pl.exceptions.PolarsError as e:
        raise CurateError(f"{f.shown}: cannot parse as {'TSV' if sep == chr(9) else 'CSV'}: {_first_line(e)}") from e
    _check_once(f, lf, lambda: _first_long_line(f.path, sep, expected=len(lf.collect_schema()), has_header=not headerless))
    return lf


def _check_once(f: _File, lf: pl.LazyFrame, locate: Callable[[], str | None]) -> None:
    """Parse every field of a text file once (per size and mtime), so a bad line fails the same
    way in every command, whichever columns it reads; ``locate`` names the line."""
    from curate.util import cache_dir, stable_hash

    st = f.path.stat()
    marker = cache_dir() / "sources" / "checked" / stable_hash(f.path.resolve(), st.st_size, st.st_mtime_ns)
    if marker.exists():
        return
    try:
        lf.select(pl.all().null_count()).collect()
    except pl.exceptions.PolarsError as e:
        _check_utf8(f, limit=None)  # bad bytes past the probe: raises naming their line
        where = locate()
        raise CurateError(f"{f.shown}: {where}" if where else f"{f.shown}: cannot parse: {_first_line(e)}") from e
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()


def _first_long_line(path: Path, sep: str, *, expected: int, has_header: bool) -> str | None:
    """'line N has K fields, the header M' for the first line with more fields than the header."""
    import csv

    with open(path, encoding="utf-8", newline="") as fh:
        if sep == "\t":  # TSV: no quoting, a field per tab
            rows = ((i, line.rstrip("\r\n").count("\t") + 1) for i, line in enumerate(fh, 1) if line.strip())
        else:
            reader = csv.reader(fh, delimiter=sep)
            rows = ((reader.line_num, len(r)) for r in reader if r)
        for line, n in rows:
            if n > expected:
                what = "the header" if has_header else "the first line"
                return f"line {line} has {n} fields, {what} {expected}; fix the line (a stray separator?)"
    return None


def _read_csv(f: _File) -> pl.LazyFrame:
    return _read_delimited(f, ",")


def _read_tsv(f: _File) -> pl.LazyFrame:
    return _read_delimited(f, "\t")


def _read_jsonl(f: _File) -> pl.LazyFrame:
    _check_nonempty(f)
    _check_utf8(f)
    if not _leading_lines(f.path, 1):
        raise CurateError(f"{f.shown}: the file is empty (only blank lines)")
    try:
        lf = pl.scan_ndjson(f.path, infer_schema_length=1000)
        lf.collect_schema()
    except pl.exceptions.PolarsError as e:
        where = _first_bad_json_line(f.path)
        raise CurateError(f"{f.shown}: {where or 'cannot parse as JSON lines: ' + _first_line(e)}") from e
    _check_once(f, lf, lambda: _first_bad_json_line(f.path))
    return lf


def _first_bad_json_line(path: Path) -> str | None:
    """'line N: invalid JSON (...)' for the first line that is not a JSON object."""
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                return f"line {i}: invalid JSON ({e.msg} at column {e.colno})"
            if not isinstance(value, dict):
                return f"line {i}: a JSON {type(value).__name__}, not an object (one record per line)"
    return None


def _read_json(f: _File) -> pl.LazyFrame:
    """A JSON array of records, or an object holding one such array (parsed eagerly: JSON has no
    streaming reader)."""
    _check_nonempty(f)
    _check_utf8(f, limit=None)
    try:
        data = json.loads(f.path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CurateError(f"{f.shown}: line {e.lineno}: invalid JSON ({e.msg})") from e
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) == 1:
            data = lists[0]
        elif all(isinstance(v, dict) for v in data.values()):
            # {id: record} -> records carrying their id
            data = [{"key": k, **v} for k, v in data.items()]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise CurateError(f"{f.shown}: expected a JSON array of records (objects)")
    if not data:
        raise CurateError(f"{f.shown}: the JSON array is empty")
    try:
        return pl.from_dicts(data, infer_schema_length=None).lazy()
    except (pl.exceptions.PolarsError, TypeError, ValueError) as e:
        raise CurateError(f"{f.shown}: records have inconsistent types: {_first_line(e)}") from e


_TAR_SCHEMA = {"key": pl.Utf8, "caption": pl.Utf8, "url": pl.Utf8, "path": pl.Utf8}


def _tar_rows(f: _File) -> Iterator[dict[str, str | None]]:
    """One row per webdataset sample: caption from KEY.txt (or KEY.json's caption), url from KEY.json."""
    import tarfile  # here: the module costs 20 ms of every start-up

    try:
        tar = tarfile.open(f.path, mode="r|*")
    except (tarfile.TarError, OSError) as e:
        raise CurateError(f"{f.shown}: not a readable tar file: {_first_line(e)}") from e
    current: str | None = None
    row: dict[str, str | None] = {}
    try:
        for member in tar:
            if not member.isfile():
                continue
            dirname, _, base = member.name.rpartition("/")
            stem, dot, ext = base.partition(".")
            if not dot:
                continue
            key = f"{dirname}/{stem}" if dirname else stem
            if key != current:
                if current is not None:
                    yield row
                current, row = key, {"key": key, "caption": None, "url": None, "path": None}
            ext = ext.lower()
            if ext in ("txt", "json"):
                raw = tar.extractfile(member).read()  # type: ignore[union-attr]
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise CurateError(
                        f"{f.shown}: member {member.name}: bytes are not valid UTF-8"
                    ) from e
                if ext == "txt":
                    row["caption"] = text.strip()
                else:
                    try:
                        meta = json.loads(text)
                    except json.JSONDecodeError as e:
                        raise CurateError(f"{f.shown}: member {member.name}: invalid JSON ({e.msg})") from e
                    if isinstance(meta, dict):
                        if row["caption"] is None and isinstance(meta.get("caption"), str):
                            row["caption"] = meta["caption"]
                        if isinstance(meta.get("url"), str):
                            row["url"] = meta["url"]
                        if meta.get("key") is not None:
                            row["key"] = str(meta["key"])
            elif ext in ("jpg", "jpeg", "png", "webp", "gif", "bmp"):
                row["path"] = f"{f.path.as_posix()}#{member.name}"
        if current is not None:
            yield row
    except tarfile.TarError as e:
        raise CurateError(f"{f.shown}: truncated or corrupt tar: {_first_line(e)}") from e
    finally:
        tar.close()


def _read_tar(f: _File) -> pl.LazyFrame:
    import tarfile

    from polars.io.plugins import register_io_source

    _check_nonempty(f)
    try:
        with tarfile.open(f.path, mode="r:*") as tar:
            if tar.next() is None:
                raise CurateError(f"{f.shown}: the tar holds no files")
    except (tarfile.TarError, OSError) as e:
        raise CurateError(f"{f.shown}: not a readable tar file: {_first_line(e)}") from e

    def batches(
        with_columns: list[str] | None, predicate: pl.Expr | None, n_rows: int | None, batch_size: int | None
    ) -> Iterator[pl.DataFrame]:
        size = batch_size or 10_000
        buf: list[dict[str, str | None]] = []
        left = n_rows

        def emit(rows: list[dict[str, str | None]]) -> pl.DataFrame:
            df = pl.DataFrame(rows, schema=_TAR_SCHEMA)
            if predicate is not None:
                df = df.filter(predicate)
            return df.select(with_columns) if with_columns is not None else df

        for r in _tar_rows(f):
            buf.append(r)
            if left is not None and len(buf) >= left:
                break
            if len(buf) >= size:
                df = emit(buf)
                buf = []
                if left is not None:
                    left -= df.height
                yield df
        if buf:
            yield emit(buf[: left] if left is not None else buf)

    return register_io_source(batches, schema=_TAR_SCHEMA, is_pure=True, explain_name=f"webdataset {f.label}")


READERS: dict[str, Callable[[_File], pl.LazyFrame]] = {
    "parquet": _read_parquet,
    "csv": _read_csv,
    "tsv": _read_tsv,
    "jsonl": _read_jsonl,
    "json": _read_json,
    "tar": _read_tar,
}


# ---------------------------------------------------------------------------------------------
# mapping raw columns onto the canonical table


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _pick(candidates: Sequence[str], columns: Sequence[str]) -> str | None:
    present = set(columns)
    for c in candidates:
        if c in present:
            return c
    return None


def _as_text(name: str, dtype: pl.DataType, *, unquote: bool) -> pl.Expr:
    col = pl.col(name)
    if isinstance(dtype, (pl.List, pl.Array)):
        expr = col.cast(pl.List(pl.Utf8)).list.join(", ")
    elif dtype == pl.Utf8:
        expr = col
    elif dtype == pl.Null:
        expr = col.cast(pl.Utf8)
    elif isinstance(dtype, pl.Struct):
        expr = col.struct.json_encode()
    else:
        expr = col.cast(pl.Utf8)
    if unquote:
        expr = expr.map_batches(_unquote_series, return_dtype=pl.Utf8, is_elementwise=True)
    return expr


def _unquote_series(s: pl.Series) -> pl.Series:
    return pl.Series(s.name, [None if v is None else urllib.parse.unquote_plus(v) for v in s], dtype=pl.Utf8)


def _missing_caption(f: _File, columns: Sequence[str], preset: Preset) -> CurateError:
    wanted = ", ".join(preset.caption + tuple(preset.compose)) or "caption"
    return CurateError(
        f"{f.shown}: no caption column (preset {preset.name!r} looks for {wanted}); "
        f"the file has columns: {', '.join(columns)}",
        hint="name one with --caption-col",
    )


def _canonical(
    lf: pl.LazyFrame,
    f: _File,
    preset: Preset,
    *,
    caption_col: str | None,
    url_col: str | None,
    uid_col: str | None,
) -> pl.LazyFrame:
    schema = lf.collect_schema()
    columns = list(schema.names())
    for option, col in (("--caption-col", caption_col), ("--url-col", url_col), ("--uid-col", uid_col)):
        if col is not None and col not in schema:
            raise CurateError(f"{f.shown}: {option} {col!r} is not a column; the file has: {', '.join(columns)}")

    chosen: dict[str, str | None] = {
        "url": url_col or _pick(preset.url, columns),
        "path": _pick(preset.path, columns),
        "title": _pick(preset.title, columns),
        "tags": _pick(preset.tags, columns),
        "description": _pick(preset.description_col, columns),
        "wnid": _pick(preset.wnid, columns),
        "caption": caption_col or _pick(preset.caption, columns),
    }
    if chosen["caption"] is not None:
        dtype = schema[chosen["caption"]]
        if not (dtype == pl.Utf8 or dtype == pl.Null or isinstance(dtype, (pl.Categorical, pl.Enum))):
            raise CurateError(
                f"{f.shown}: caption column {chosen['caption']!r} holds {dtype}, not text",
                hint="name the text column with --caption-col",
            )
    texts = {
        k: (_as_text(c, schema[c], unquote=preset.unquote_plus and k in ("title", "tags", "description")) if c else None)
        for k, c in chosen.items()
    }
    if texts["caption"] is None:
        parts = [texts[k] for k in preset.compose if texts.get(k) is not None]
        if not parts:
            raise _missing_caption(f, columns, preset)
        # a field that is blank contributes nothing rather than a double space
        cleaned = [pl.when(p.str.strip_chars() == "").then(None).otherwise(p.str.strip_chars()) for p in parts]
        texts["caption"] = pl.concat_str(cleaned, separator=" ", ignore_nulls=True)
        texts["caption"] = pl.when(texts["caption"] == "").then(None).otherwise(texts["caption"])

    own_uid = uid_col or _pick(preset.uid, columns)
    lf = lf.with_row_index(_ROW_COL)
    positional = pl.format("{}:{}", pl.lit(f.label), pl.col(_ROW_COL))
    # a row missing its own id still gets a stable one rather than a null uid
    if own_uid is None:
        uid = positional
    else:
        own = _as_text(own_uid, schema[own_uid], unquote=False)
        uid = pl.coalesce(pl.when(own.str.strip_chars() == "").then(None).otherwise(own), positional)
    exprs = [uid.alias("uid")] + [
        (texts[k] if texts[k] is not None else pl.lit(None, dtype=pl.Utf8)).alias(k) for k in CANONICAL[1:]
    ]
    # columns copied into canonical ones are not repeated; an own-id column (SAMPLE_ID, photoid...)
    # stays, keeping its original type, as does everything else
    consumed = {c for c in chosen.values() if c is not None}
    extras = [c for c in columns if c not in consumed and c not in CANONICAL]
    return lf.select(
        *exprs,
        *[pl.col(c) for c in extras],
        pl.lit(f.label).alias(_FILE_COL),
        pl.col(_ROW_COL),
    )


def _detect_preset(columns: Sequence[str]) -> Preset:
    present = set(columns)
    for p in PRESETS.values():
        if p.detect and set(p.detect) <= present:
            return p
    return PRESETS["generic"]


def no_text(column: str = "caption") -> pl.Expr:
    """True where ``column`` holds no text (null, empty or only white space)."""
    return pl.col(column).str.strip_chars().fill_null("") == ""


def first_without_text(lf: pl.LazyFrame, location: str, *, files: Sequence[str] = ()) -> str | None:
    """'file F row R (uid U)' of the first row (in source order) whose caption has no text."""
    cols = [c for c in (_FILE_COL, _ROW_COL) if c in lf.collect_schema().names()]
    found = collect_source(lf.filter(no_text()).select("uid", *cols).head(1), location, files=files)
    if found.height == 0:
        return None
    row = found.row(0, named=True)
    where = f"file {row[_FILE_COL]} row {row[_ROW_COL]} " if _FILE_COL in row else ""
    return f"{where}(uid {row['uid']})"


def open_source(
    spec: str = "demo",
    *,
    preset: str | None = None,
    caption_col: str | None = None,
    url_col: str | None = None,
    uid_col: str | None = None,
    skip_bad_rows: bool = False,
    strict: bool = False,
    image_root: str | Path | None = None,
) -> Source:
    """Open ``spec`` ("demo", a file, a folder, a glob or an http(s) URL) as the canonical table.

    ``preset`` names the column layout (see ``PRESETS``); without one the LAION, YFCC and
    ImageNet-Captions layouts are recognised from their columns, else ``generic`` applies.
    ``caption_col`` / ``url_col`` / ``uid_col`` override the preset. Rows with a null or blank
    caption stay (``no_text`` counts them) unless ``skip_bad_rows`` drops them; with ``strict``
    the first one is an error naming its file, row and uid (one pass over the captions here).
    ``image_root`` (ImageNet-Captions only) is an ImageNet folder: each row's ``path`` becomes
    ``IMAGE_ROOT/train/WNID/FILENAME``, the ImageFolder layout ``curate shards`` reads.
    """
    if preset is not None and preset not in PRESETS:
        raise CurateError(f"unknown preset {preset!r}; known presets: {', '.join(PRESETS)}")
    if spec == "demo":
        from curate.demo import ensure_demo

        folder = ensure_demo()
        files = [_File(folder / "captions.parquet", "captions.parquet", "parquet")]
        name, vocab = "demo", "demo"
    else:
        resolved, name = _resolve(spec)
        files = [u for f in resolved for u in _unpacked(f)]
        vocab = None

    frames: list[pl.LazyFrame] = []
    used: Preset | None = PRESETS[preset] if preset else None
    for f in files:
        raw = READERS[f.fmt](f)
        if used is None:  # one layout per source: the first file decides
            used = _detect_preset(raw.collect_schema().names())
        frames.append(_canonical(raw, f, used, caption_col=caption_col, url_col=url_col, uid_col=uid_col))
    assert used is not None  # _resolve never returns an empty file list
    unchecked = frames[0] if len(frames) == 1 else pl.concat(frames, how="diagonal_relaxed")
    if strict:
        first = first_without_text(unchecked, spec, files=[str(f.path) for f in files])
        if first is not None:
            raise CurateError(
                f"{spec}: {first}: the caption is null or blank (--strict)",
                hint="fix the row, or leave out --strict to count such rows and go on",
            )
    checked = unchecked.filter(~no_text()) if skip_bad_rows else unchecked
    lazy = checked.drop(_FILE_COL, _ROW_COL)
    if image_root is not None:
        if used.name != "imagenet-captions":
            raise CurateError(f"--image-root applies to ImageNet-Captions sources; {spec} reads as preset {used.name!r}")
        root = Path(image_root)
        if not (root / "train").is_dir():
            raise CurateError(f"--image-root {root}: no train/ folder there (expected ImageNet's train/WNID/FILENAME layout)")
        lazy = lazy.with_columns(pl.format("{}/train/{}/{}", pl.lit(str(root.resolve())), pl.col("wnid"), pl.col("uid")).alias("path"))
    return Source(
        name=name,
        lazy=lazy,
        vocab=vocab or used.vocab,
        preset=None if spec == "demo" else used.name,
        location=spec,
        files=tuple(str(f.path) for f in files),
        skip_bad_rows=skip_bad_rows,
        unchecked=unchecked,
    )


# ---------------------------------------------------------------------------------------------
# running the plan with errors mapped to CurateError


def collect_source(lf: pl.LazyFrame, location: str, *, files: Sequence[str] = ()) -> pl.DataFrame:
    """``lf.collect()`` with read failures (bad UTF-8, corrupt pages, ...) raised as ``CurateError``."""
    try:
        return lf.collect()
    except CurateError:
        raise
    except (pl.exceptions.PolarsError, OSError) as e:
        msg = _first_line(e)
        if "utf-8" in msg.lower() or "utf8" in msg.lower():
            for path in files:
                p = Path(path)
                if p.suffix.lower() in (".csv", ".tsv", ".jsonl", ".ndjson", ".json"):
                    _check_utf8(_File(p, p.name, "text"), limit=None)
        raise CurateError(f"{location}: cannot read the source: {msg}") from e


def validate_source(source: Source, *, limit: int | None = None) -> SourceReport:
    """Read the whole source (or its first ``limit`` rows): row count and null/blank captions."""
    lf = source.unchecked if source.unchecked is not None else source.lazy
    if limit is not None:
        lf = lf.head(limit)
    cap = pl.col("caption")
    bad = cap.is_null() | (cap.str.strip_chars() == "")
    cols = [c for c in (_FILE_COL, _ROW_COL) if c in lf.collect_schema().names()]
    stats = collect_source(
        lf.select(
            pl.len().alias("rows"),
            bad.sum().alias("bad"),
            pl.struct("uid", *cols).filter(bad).first().alias("first_bad"),
        ),
        source.location,
        files=source.files,
    ).row(0, named=True)
    first = stats["first_bad"]
    first_text = None
    if first and first.get("uid") is not None:
        where = f"file {first[_FILE_COL]} row {first[_ROW_COL]} " if _FILE_COL in first else ""
        first_text = f"{where}(uid {first['uid']})".strip()
    return SourceReport(
        location=source.location,
        rows=int(stats["rows"]),
        bad_captions=int(stats["bad"] or 0),
        first_bad=first_text,
        files=len(source.files),
    )


__all__ = [
    "CANONICAL",
    "PRESETS",
    "Preset",
    "Source",
    "SourceReport",
    "collect_source",
    "open_source",
    "validate_source",
]
