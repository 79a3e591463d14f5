"""The compiled loops of matching (numba, optional): the byte-table squeeze of
:func:`curate.match.normalise.normalised_buffer` and the whole-word hash table :class:`WordTable`,
loaded from their ahead-of-time copies (:mod:`curate.match.aot`) where those are built, else
compiled just in time (numba's cache).

Without numba every caller falls back to numpy and an Aho–Corasick automaton with the same results.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.abc
import sys
import threading
from collections.abc import Iterator

import numpy as np

# False forces the numpy and Aho–Corasick paths even where numba is installed (the benchmark's
# side-by-side row; the results are the same), and keeps numba from being imported at all
COMPILED = True

# Below this many captions the numpy and Aho–Corasick paths finish before numba is loaded (about
# 0.5 CPU-seconds per process: its import, its typing registries, the cached machine code), so a
# short run never pays for it (see :func:`compiled_for`); a longer one loads the ahead-of-time
# copies of the loops (:mod:`curate.match.aot`, a millisecond) where they are built.
COMPILE_MIN_ROWS = 300_000


@contextlib.contextmanager
def compiled_for(expected_rows: int | None) -> Iterator[bool]:
    """Within the block, the compiled loops run only when a pass over about ``expected_rows``
    captions repays loading them: fewer than :data:`COMPILE_MIN_ROWS` take the numpy path (same
    results), unless numba is loaded already or the ahead-of-time loops are built. A larger pass
    (or an unknown size, None) builds the ahead-of-time loops the first time
    (:func:`curate.match.aot.ensure`). Yields whether they run; :data:`COMPILED` is restored on exit."""
    global COMPILED
    before = COMPILED
    from curate.match import aot

    if expected_rows is not None and expected_rows < COMPILE_MIN_ROWS:
        # a short run is over before numba has loaded: the compiled loops only where they are
        # loaded already, or built ahead of time (imported in a millisecond)
        if "numba" not in sys.modules and not aot.available():
            COMPILED = False
    elif COMPILED and _load_kernels.cache_info().currsize == 0:
        aot.ensure()  # built once, in a child process; every later run imports it in a millisecond
    try:
        yield COMPILED
    finally:
        COMPILED = before


def _kernels():
    """The compiled loops of :func:`normalised_buffer`, or None without numba (an optional
    speed-up: the numpy path gives the same bytes) or when :data:`COMPILED` is off."""
    return _load_kernels() if COMPILED else None


class _NoScipyInThisThread(importlib.abc.MetaPathFinder):
    """Refuses ``scipy`` to the thread loading numba: numba's array maths asks for scipy's BLAS
    once, when its registries load (``numba.np.arraymath``), only for ``np.dot`` and friends,
    which these loops never call; importing ``scipy.linalg`` for that costs 0.3 CPU-seconds of
    every run that loads the loops. Other threads, and a scipy already imported, are untouched.
    The price: numba code compiled later in the same process finds no BLAS, so its ``np.dot`` and
    ``np.linalg`` calls fail to compile (curate's loops have none; import scipy first to have them)."""

    def __init__(self) -> None:
        self.thread = threading.get_ident()

    def find_spec(self, name, path=None, target=None):
        if (name == "scipy" or name.startswith("scipy.")) and threading.get_ident() == self.thread:
            raise ModuleNotFoundError(f"{name} is not loaded for curate's compiled loops", name=name)
        return None


_LOAD_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def _load_kernels():
    from curate.match import aot

    built = aot.load()  # the ahead-of-time copies, where built: no numba to load
    if built is not None:
        return built.squeeze_rows, built.splice_rows
    if not _import_numba():
        return None
    return _jit(_squeeze_rows), _jit(_splice_rows)


@functools.lru_cache(maxsize=1)
def _import_numba() -> bool:
    """Import numba (False where it is not installed) with its array maths loaded while scipy is
    out of reach (:class:`_NoScipyInThisThread`); every numba user of the package comes here
    first, so scipy's 0.3 s stays out of each of them."""
    with _LOAD_LOCK:
        finder = _NoScipyInThisThread()
        sys.meta_path.insert(0, finder)
        try:
            import numba  # noqa: F401
            import numba.np.arraymath  # noqa: F401 - its BLAS check, here, without scipy
        except ImportError:
            return False
        finally:
            sys.meta_path.remove(finder)
    return True


def _jit(func):
    """``func`` compiled without the GIL (polars runs batches on several threads), cached on disk
    where the package directory or numba's user cache can be written, else compiled per process."""
    import numba

    try:
        return numba.njit(nogil=True, cache=True, boundscheck=False)(func)
    except RuntimeError:  # no writable cache location
        return numba.njit(nogil=True, boundscheck=False)(func)


def _word_kernels():
    """The compiled word-table build and search of :class:`WordTable`, or None without numba or
    when :data:`COMPILED` is off."""
    return _load_word_kernels() if COMPILED else None


@functools.lru_cache(maxsize=1)
def _load_word_kernels():
    from curate.match import aot

    built = aot.load()
    if built is not None:
        return built.build_table, built.word_find
    if _load_kernels() is None:
        return None
    register_helpers()
    return _jit(_build_table), _jit(_word_find)


def _load_u64(data, q):
    """The 8 bytes ``data[q:q+8]`` as one little-endian integer (compiled: one unaligned load)."""
    return np.uint64(int.from_bytes(data[q : q + 8].tobytes(), "little"))


@functools.lru_cache(maxsize=1)
def register_helpers() -> None:
    """Make the loops' shared helpers compilable inside them: :func:`_load_u64` as one load, and
    :func:`_hash_word` (numba's ``register_jitable``)."""
    from numba.extending import register_jitable

    _compile_load_u64()
    register_jitable(inline="always")(_hash_word)  # in the hot loop: no call, as when it was written inline


@functools.lru_cache(maxsize=1)
def _compile_load_u64() -> None:
    """Teach numba :func:`_load_u64` as a single unaligned load: assembled from 8 byte loads it
    sits on the word-to-word dependency chain of :func:`_word_find` and costs a third of it."""
    _import_numba()
    from llvmlite import ir
    from numba.core import types
    from numba.extending import intrinsic, overload

    @intrinsic
    def load(typingctx, arr, idx):
        def codegen(context, builder, sig, args):
            data = context.make_array(sig.args[0])(context, builder, args[0]).data
            ptr = builder.bitcast(builder.gep(data, [args[1]]), ir.IntType(64).as_pointer())
            return builder.load(ptr, align=1)

        return types.uint64(arr, idx), codegen

    @overload(_load_u64)
    def _impl(data, q):
        return lambda data, q: load(data, q)


_HASH_SEED = np.uint64(0xCBF29CE484222325)
# hashed 8 bytes at a time (one multiply per word of up to 7 bytes): an odd multiplier with every
# byte of the product depending on every byte of the chunk
_HASH_MUL = np.uint64(0x9E3779B97F4A7C15)
_SPACES8 = np.uint64(0x2020202020202020)
_ONES8 = np.uint64(0x0101010101010101)
_HIGHS8 = np.uint64(0x8080808080808080)
# (1 << 8k) * _BYTE_INDEX >> 56 == k for k in 0..7: the index of the lowest marked byte
_BYTE_INDEX = np.uint64(0x0001020304050607)
# a slot is (hash, value): value 0 is an empty slot, else bits 0-39 hold the form's index + 2 (1: no
# form has this hash, only a prefix does) and bit 40 marks the hash of some form's leading words;
# key and value side by side, so a lookup touches one cache line
_PID_MASK = np.uint64((1 << 40) - 1)
_PREFIX_BIT = np.uint64(1 << 40)


def _hash_word(buf, q, h):
    """(hash, end): ``h`` folded with the word of ``buf`` starting at ``q`` (it ends at the next
    space), 8 bytes at a time, and where it ends. The matcher's word search and the cascade's word
    reader (:mod:`curate.match.cascade`) hash words with this one loop."""
    size = len(buf)
    while True:
        if q + 8 <= size:
            w = _load_u64(buf, q)
        else:  # the buffer's last bytes: pad with spaces, never read past it
            w = np.uint64(0)
            for t in range(8):
                c = buf[q + t] if q + t < size else 32
                w |= np.uint64(c) << np.uint64(8 * t)
        x = w ^ _SPACES8
        marks = (x - _ONES8) & ~x & _HIGHS8  # exact for the lowest space byte
        if marks == 0:
            h = (h ^ w) * _HASH_MUL
            q += 8
            continue
        below = ((marks & (~marks + np.uint64(1))) >> np.uint64(7)) - np.uint64(1)
        h = (h ^ (w & below)) * _HASH_MUL
        q += np.int64(((below + np.uint64(1)) * _BYTE_INDEX) >> np.uint64(56))
        return h, q


def _build_table(forms, form_offsets, table, bloom):
    """Open addressing on a 64-bit hash: every form's hash -> its index, and the hash of each of its
    leading word runs ("german" of "german shepherd") marked as a prefix. False when two different
    forms share a hash (the caller then falls back to the automaton).

    A word hashes as :func:`_word_find` reads it: little-endian chunks of 8 bytes, the last one
    holding the remaining 0-7 bytes (an empty chunk when the length is a multiple of 8)."""
    mask = len(table) - 1
    for i in range(len(form_offsets) - 1):
        h = _HASH_SEED
        end = form_offsets[i + 1]
        j = form_offsets[i]
        while True:
            we = j
            while we < end and forms[we] != 32:
                we += 1
            c = j
            while True:
                n = min(8, we - c)
                w = np.uint64(0)
                for t in range(n):
                    w |= np.uint64(forms[c + t]) << np.uint64(8 * t)
                h = (h ^ w) * _HASH_MUL
                if n < 8:
                    break
                c += 8
            h ^= h >> np.uint64(32)
            is_prefix = we < end
            slot = np.int64((h ^ (h >> np.uint64(29))) & np.uint64(mask))
            while table[slot, 1] != 0 and table[slot, 0] != h:
                slot = (slot + 1) & mask
            if table[slot, 1] == 0:
                table[slot, 0] = h
                table[slot, 1] = 1
                bit = (h >> np.uint64(37)) & np.uint64(len(bloom) * 64 - 1)
                bloom[bit >> np.uint64(6)] |= np.uint64(1) << (bit & np.uint64(63))
            if is_prefix:
                table[slot, 1] |= _PREFIX_BIT
            else:
                have = table[slot, 1] & _PID_MASK
                if have >= 2 and have != i + 2:
                    return False
                table[slot, 1] = (table[slot, 1] & _PREFIX_BIT) | np.uint64(i + 2)
                break
            h = (h ^ np.uint64(32)) * _HASH_MUL
            j = we + 1
    return True


def _word_find(data, offsets, table, bloom, forms, form_offsets, out_pid, out_start, out_end, out_row):
    """Every occurrence of every form as whole words in the normalised buffer (laid out as
    :func:`normalised_buffer` does): what the padded-pattern automaton reports with overlapping
    matches, as (form, start, end, row) with start/end on the padding spaces, ordered by end. Hashes each word
    once (8 bytes at a time), and the words after it only while they extend some form's leading words; every hit is
    checked byte for byte. Returns the number of hits (written up to the arrays' length)."""
    mask = len(table) - 1
    bloom_mask = np.uint64(len(bloom) * 64 - 1)
    cap = len(out_pid)
    m = 0
    for r in range(len(offsets) - 1):
        b = offsets[r + 1]
        p = offsets[r] + 1
        row_first = m
        while p < b:
            h = _HASH_SEED
            q = p
            first_end = -1
            while True:
                h, q = _hash_word(data, q, h)  # the word at q (see _build_table)
                h ^= h >> np.uint64(32)
                if first_end < 0:
                    first_end = q
                bit = (h >> np.uint64(37)) & bloom_mask
                if (bloom[bit >> np.uint64(6)] >> (bit & np.uint64(63))) & np.uint64(1) == 0:
                    break  # most words: no form or prefix has this hash, known from a small bitmap
                slot = np.int64((h ^ (h >> np.uint64(29))) & np.uint64(mask))
                while table[slot, 1] != 0 and table[slot, 0] != h:
                    slot = (slot + 1) & mask
                value = table[slot, 1]
                if value == 0:
                    break
                pid = np.int64(value & _PID_MASK) - 2
                if pid >= 0:
                    fa = form_offsets[pid]
                    same = form_offsets[pid + 1] - fa == q - p
                    if same:
                        for t in range(q - p):
                            if forms[fa + t] != data[p + t]:
                                same = False
                                break
                    if same:
                        if m < cap:
                            # insert in end order (the automaton's order): a row's few hits only
                            # ever move past the ones before them in the same row
                            i = m
                            while i > row_first and out_end[i - 1] > q + 1:
                                out_pid[i] = out_pid[i - 1]
                                out_start[i] = out_start[i - 1]
                                out_end[i] = out_end[i - 1]
                                out_row[i] = r
                                i -= 1
                            out_pid[i] = pid
                            out_start[i] = p - 1
                            out_end[i] = q + 1
                            out_row[i] = r
                        m += 1
                if (value & _PREFIX_BIT) == 0 or q + 1 >= b:
                    break
                h = (h ^ np.uint64(32)) * _HASH_MUL
                q += 1
            p = first_end + 1
    return m


class WordTable:
    """The surface forms as a hash table of whole-word sequences (numba): the fast equivalent of
    the padded-pattern automaton on buffers laid out by :func:`normalised_buffer`."""

    def __init__(self, patterns: list[str]) -> None:
        build, self._find = _load_word_kernels()
        cores = [p.strip().encode("utf-8") for p in patterns]
        self.forms = np.frombuffer(b"".join(cores), dtype=np.uint8) if cores else np.zeros(0, dtype=np.uint8)
        self.form_offsets = np.zeros(len(cores) + 1, dtype=np.int64)
        np.cumsum([len(c) for c in cores], out=self.form_offsets[1:])
        entries = len(cores) + int((self.forms == 32).sum())
        self.table = np.zeros((1 << max(4, int(2 * entries).bit_length()), 2), dtype=np.uint64)
        # one bit per hash, 8+ bits per entry: small enough to stay in cache, where the table is not
        self.bloom = np.zeros(1 << max(0, int(8 * entries).bit_length() - 6), dtype=np.uint64)
        self.ok = bool(build(self.forms, self.form_offsets, self.table, self.bloom))
        self._cap = 1024  # hits per row seen so far, to size the output once

    def find(self, data: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        cap = int(len(offsets) * max(1.0, self._cap / 1024)) + 1024
        while True:
            out = [np.empty(cap, dtype=np.int64) for _ in range(4)]
            m = self._find(data, offsets, self.table, self.bloom, self.forms, self.form_offsets, *out)
            if m <= cap:
                self._cap = max(self._cap, int(1024 * 1.25 * m / len(offsets)))
                return tuple(a[:m] for a in out)  # pid, start, end, row
            cap = int(m * 1.25) + 1024




def _squeeze_rows(data, offsets, table, special, out, out_offsets, flags):
    """Byte table and space squeeze in one pass, row by row (`` word word ``, see
    :func:`normalised_buffer`); ``flags[i]`` ORs the ``special`` marks of row i's bytes.

    Branch-free: every byte is written, and the write position advances unless the byte is a
    space after a space."""
    k = 0
    for i in range(len(offsets) - 1):
        out_offsets[i] = k
        out[k] = 32
        k += 1
        last = 32
        f = 0
        for j in range(offsets[i], offsets[i + 1]):
            b = data[j]
            c = table[b]
            f |= special[b]
            out[k] = c
            k += (c != 32) | (last != 32)
            last = c
        if last != 32:
            out[k] = 32
            k += 1
        flags[i] = f
    out_offsets[len(offsets) - 1] = k


def _splice_rows(out, out_offsets, rows, sub, sub_offsets, final, final_offsets):
    """``final``: the rows of ``out``, except rows[t] (ascending), which come from ``sub``'s row t.

    The untouched rows between two replaced ones are one contiguous block of ``out``: copied as a
    slice (memcpy speed) and their offsets shifted by one constant, not byte by byte."""
    n = len(out_offsets) - 1
    k = 0
    i = 0
    for t in range(len(rows) + 1):
        stop = rows[t] if t < len(rows) else n
        a = out_offsets[i]
        b = out_offsets[stop]
        shift = k - a
        for r in range(i, stop):
            final_offsets[r] = out_offsets[r] + shift
        final[k : k + (b - a)] = out[a:b]
        k += b - a
        if t < len(rows):
            final_offsets[stop] = k
            c = sub_offsets[t]
            d = sub_offsets[t + 1]
            final[k : k + (d - c)] = sub[c:d]
            k += d - c
            i = stop + 1
    final_offsets[n] = k


