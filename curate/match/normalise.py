"""Normalisation, the same code for captions and lemmas: HTML decoded, Unicode NFKC, case folded,
every character that is not a letter, digit or combining mark a word separator (see the package
docstring of :mod:`curate.match`)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

from curate.match import kernels

_HTML_TAG = r"<[A-Za-z/!][^<>]*>"
_ENTITIES = {
    "&amp;": "&", "&quot;": '"', "&apos;": "'", "&#39;": "'", "&#039;": "'", "&lt;": "<", "&gt;": ">",
    "&nbsp;": " ", "&#8217;": "'", "&#8216;": "'", "&rsquo;": "'", "&lsquo;": "'", "&#x27;": "'",
    "&#8220;": '"', "&#8221;": '"', "&ldquo;": '"', "&rdquo;": '"', "&#8211;": "-", "&#8212;": "-",
    "&ndash;": "-", "&mdash;": "-", "&hellip;": " ", "&#8230;": " ", "&#x2F;": "/", "&#47;": "/",
}
_OTHER_ENTITY = r"&#?[A-Za-z0-9]{1,8};"
# case folds that plain lower-casing misses (str.casefold does them)
_CASEFOLD = {"ß": "ss", "ẞ": "ss", "ς": "σ", "ſ": "s", "ﬅ": "st", "ﬆ": "st"}


# ASCII bytes: upper case folds to lower, letters and digits stay, everything else is a separator
_BYTE_TABLE = np.arange(256, dtype=np.uint8)
_BYTE_TABLE[:128] = 32
_BYTE_TABLE[ord("0") : ord("9") + 1] = np.arange(ord("0"), ord("9") + 1)
_BYTE_TABLE[ord("a") : ord("z") + 1] = np.arange(ord("a"), ord("z") + 1)
_BYTE_TABLE[ord("A") : ord("Z") + 1] = np.arange(ord("a"), ord("z") + 1)
_SPACE = np.uint8(32)
_BYTE_TABLE_BYTES = _BYTE_TABLE.tobytes()
# bytes that only polars' kernels handle: non-ASCII (bit 1: Unicode path), '<' and '&' (bit 2: HTML)
_SPECIAL_BYTES = np.zeros(256, dtype=np.uint8)
_SPECIAL_BYTES[128:] = 1
_SPECIAL_BYTES[[ord("<"), ord("&")]] = 2


def _buffer(norm: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """The normalised strings end to end in one byte buffer, and their int64 offsets."""
    arr = norm.to_arrow()
    if isinstance(arr, pa.ChunkedArray):
        arr = pa.concat_arrays(arr.chunks) if arr.num_chunks != 1 else arr.chunk(0)
    if not pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.large_string())
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(1, dtype=np.uint8)
    return data, offsets


def raw_buffer(captions: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """The captions' own UTF-8 bytes end to end and their int64 offsets (no copy for large strings)."""
    return _buffer(captions)


class _ArrowCapsule:
    """An Arrow array seen only through the Arrow C data interface (``__arrow_c_array__``)."""

    def __init__(self, array: pa.Array) -> None:
        self.array = array

    def __arrow_c_array__(self, requested_schema=None):
        return self.array.__arrow_c_array__(requested_schema)


def arrow_series(name: str, array: pa.Array, dtype: pl.DataType) -> pl.Series:
    """``pl.Series(name, array, dtype=dtype)`` without its pyarrow detour: handed a pyarrow array,
    polars imports ``pyarrow.compute`` (0.2 s of start-up) to coerce it; through the C data
    interface the same buffers arrive with no import. (Likewise ``pa.array(ndarray)`` imports
    pandas; ``pa.Array.from_buffers`` does not.)"""
    return pl.Series(name, _ArrowCapsule(array), dtype=dtype).alias(name)  # the capsule path drops the name


def _html(s: pl.Expr) -> pl.Expr:
    s = s.str.replace_all(_HTML_TAG, " ")
    s = s.str.replace_many(list(_ENTITIES), list(_ENTITIES.values()))
    return s.str.replace_all(_OTHER_ENTITY, " ")


def _unicode_path(s: pl.Expr) -> pl.Expr:
    s = s.str.normalize("NFKC").str.to_lowercase()
    s = s.str.replace_many(list(_CASEFOLD), list(_CASEFOLD.values()))
    # only non-ASCII separators here: the byte table that always follows turns every ASCII
    # character that is not a letter or digit into a space (and is four times cheaper than this)
    return s.str.replace_all(r"[^\p{L}\p{N}\p{M}\x00-\x7F]+", " ")


def _prepared(captions: pl.Series) -> pl.Series:
    """Captions with HTML decoded and non-ASCII rows Unicode-normalised (polars kernels, applied
    only to the rows that need them)."""
    s = captions if captions.dtype == pl.Utf8 else captions.cast(pl.Utf8)
    if s.null_count():
        s = s.fill_null("")
    html = s.str.contains_any(["<", "&"]).arg_true()
    if len(html):
        s = s.clone()  # scatter writes in place: never into the caller's series
        s = s.scatter(html, s[html].to_frame("c").select(_html(pl.col("c"))).to_series())
    non_ascii = (s.str.len_bytes() != s.str.len_chars()).arg_true()
    if len(non_ascii):
        s = s.clone().scatter(non_ascii, s[non_ascii].to_frame("c").select(_unicode_path(pl.col("c"))).to_series())
    return s


def normalised_buffer(captions: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """Every caption normalised, laid end to end in one byte buffer: row i is
    ``data[offsets[i]:offsets[i+1]]``, `` word word `` with exactly one space between words and one
    pad each side (an empty caption is a single space), so neighbouring rows meet in two spaces
    and no pattern can span two rows.

    With numba installed, two compiled loops do the work without the GIL: one flags the rows that
    need polars' HTML and Unicode kernels, one applies the byte table and squeezes spaces in a
    single pass. Without numba, the same result comes from :func:`_normalised_buffer_numpy`.
    """
    compiled = kernels._kernels() if kernels.COMPILED else None
    if compiled is None:
        return _normalised_buffer_numpy(captions)
    squeeze_rows, splice_rows = compiled
    s = captions if captions.dtype == pl.Utf8 else captions.cast(pl.Utf8)
    if s.null_count():
        s = s.fill_null("")
    out, out_offsets, flags = _squeeze(squeeze_rows, s)
    special = np.flatnonzero(flags)
    if len(special) == 0:
        return out, out_offsets
    # the few rows with HTML or non-ASCII text: polars' kernels, the same loop, then spliced in
    kinds = flags[special]
    sub = s.gather(special)
    html = np.flatnonzero(kinds & 2)
    if len(html):
        sub = sub.scatter(html, sub.gather(html).to_frame("c").select(_html(pl.col("c"))).to_series())
    non_ascii = np.flatnonzero(kinds & 1)
    if len(non_ascii):
        sub = sub.scatter(non_ascii, sub[non_ascii].to_frame("c").select(_unicode_path(pl.col("c"))).to_series())
    sub_out, sub_offsets, _ = _squeeze(squeeze_rows, sub)
    final = np.empty(len(out) + len(sub_out), dtype=np.uint8)
    final_offsets = np.empty_like(out_offsets)
    splice_rows(out, out_offsets, special, sub_out, sub_offsets, final, final_offsets)
    return final[: final_offsets[-1]], final_offsets


def _squeeze(squeeze_rows, s: pl.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    data, offsets = _buffer(s)
    n = len(offsets) - 1
    out = np.empty(int(offsets[-1] - offsets[0]) + 2 * n + 1, dtype=np.uint8)
    out_offsets = np.empty(n + 1, dtype=np.int64)
    flags = np.empty(n, dtype=np.uint8)
    squeeze_rows(data, offsets, _BYTE_TABLE, _SPECIAL_BYTES, out, out_offsets, flags)
    return out[: out_offsets[-1]], out_offsets, flags




def _normalised_buffer_numpy(captions: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """:func:`normalised_buffer` in numpy: a byte table (lower case, separators) and one vectorised
    squeeze of repeated spaces over the whole batch at once."""
    data, offsets = _buffer(_prepared(captions))
    n = len(offsets) - 1
    # bytes.translate: a byte table at memory speed, several times faster than numpy's fancy index
    body = np.frombuffer(data[offsets[0] : offsets[-1]].tobytes().translate(_BYTE_TABLE_BYTES), dtype=np.uint8)
    # a 0 byte (which no text byte maps to) opens every row, a space closes it: after the squeeze
    # below each row is "\0word word " and the 0 turns into the row's leading pad
    where = np.concatenate(([0], np.repeat(offsets[1:] - offsets[0], 2)))
    marks = np.concatenate(([0], np.tile(np.array([32, 0], dtype=np.uint8), n))).astype(np.uint8)
    data = np.insert(body, where, marks)
    space = data == _SPACE
    # keep the first space of a run, none right after a row's 0: leading runs vanish, inner runs
    # become one space, and the closing space we added stays as the trailing pad
    drop = space.copy()
    drop[1:] &= space[:-1] | (data[:-1] == 0)
    drop[0] = False
    data = data[~drop]
    z = np.flatnonzero(data == 0)  # n + 1: each row's start, then the end of the buffer
    data[z] = _SPACE
    return data, z.astype(np.int64)


def normalise(captions: pl.Series) -> pl.Series:
    """Normalised, space-padded text (`` word word ``) for each string; null or empty becomes ``" "``.

    The one normalisation for captions and lemmas alike (:func:`normalised_buffer` as strings).

    >>> normalise(pl.Series(["The Tiger&#39;s <b>Bow-Tie</b>!", "ＣＡＴ"])).to_list()
    [' the tiger s bow tie ', ' cat ']
    """
    data, offsets = normalised_buffer(captions)
    arr = pa.LargeStringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets), pa.py_buffer(data.tobytes()))
    return arrow_series(captions.name, arr, pl.Utf8)


def normalise_text(text: str) -> str:
    """:func:`normalise` for one string, without the padding."""
    return normalise(pl.Series([text], dtype=pl.Utf8)).item().strip()


def normalise_many(texts: list[str]) -> dict[str, str]:
    """:func:`normalise` for many strings at once, unpadded: text -> normalised."""
    uniq = sorted(set(texts))
    return dict(zip(uniq, (x.strip() for x in normalise(pl.Series(uniq, dtype=pl.Utf8)).to_list())))

