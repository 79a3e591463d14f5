"""The disambiguation cascade, compiled: :func:`curate.match.disambiguate.decide`'s reason codes
for the captions a numba loop can read byte by byte, without the GIL.

``decide`` stays the reference and the path for everything this module leaves to it. The loop here
takes the candidate captions that are plain ASCII without ``&`` or ``<`` (no HTML to decode, no
Unicode to fold: the original's words are the normalised words with their case), tokenises the
original bytes, and decides each mention with the steps and order of ``decide``. What it knows
about words and senses lives in flat tables, filled in Python by the very functions ``decide``
calls, the first time a caption needs them:

- words: a hash table of lower-case words -> id, and per id the flags ``decide`` reads (function
  word, determiner, noun, head, proper, verb, participle, ...), its noun base and singular forms;
  "thing" and "collection" (WordNet lookups) are filled only for words that reach those questions;
- facts about a (sense, word) pair: in the sense's context profile, among its hypernyms' words,
  makes a WordNet compound on the left or right (and whether that compound is something else), a
  kindred living thing;
- per sense: whether its profile and hypernyms are in the facts yet.

A caption that needs something the tables lack is left undecided; the loop lists what it lacked,
Python fills it in, and the loop runs again on those captions (a few rounds at most; what is still
undecided then goes to ``decide``). Tables are only ever added to, in place, each entry written
before the key that publishes it, so batches on other threads may read them while they grow; a
table that must grow is copied and swapped whole. The word table is emptied past
:data:`MAX_WORDS` words, so memory stays flat on any stream.

:data:`COMPILED` (or ``CURATE_CASCADE=python`` in the environment) forces the Python path; the two
give the same reason codes (tests/test_cascade.py checks them side by side).
"""

from __future__ import annotations

import functools
import os
import threading

import numpy as np

from curate.match import kernels
from curate.match.disambiguate import _is_collection, _is_thing, _word_sets
from curate.match.lexicon import (
    can_head,
    is_noun,
    is_participle,
    is_proper,
    is_verb,
    noun_base,
    singular_forms,
    split_compound,
)

# False (or CURATE_CASCADE=python) sends every candidate caption through decide()
COMPILED = os.environ.get("CURATE_CASCADE", "").lower() != "python"
# the word table starts over past this many words (ids and their facts are dropped with it)
MAX_WORDS = 1 << 20
# rounds of "fill what the loop lacked, run it again" before decide() takes the rest
MAX_ROUNDS = 8

# word flags
W_KNOWN, W_DET, W_HON, W_FUNC, W_COORD, W_QUAL, W_DEPICT, W_DIGIT = (1 << k for k in range(8))
W_NOUN, W_HEAD, W_PROPER, W_VERB_ONLY, W_PART, W_SING_DEPICT = (1 << k for k in range(8, 14))
W_THING_KNOWN, W_THING, W_COLL_KNOWN, W_COLL, W_PYTHON = (1 << k for k in range(14, 19))
N_SING = 6  # singular forms kept per word (a word with more goes to decide)

# facts about (sense, word): key kind; value 0 unknown, 1 false, 2 true (CTX, HYP: only true ones)
F_CTX, F_HYP, F_LK, F_RK, F_LH, F_RH, F_KIN = range(1, 8)
# what the loop asks for: (kind, x, y)
Q_WORD, Q_PROFILE, Q_HYPER, Q_THING, Q_COLL = range(11, 16)  # word: x, y = its bytes in the raw buffer
# fact kinds F_LK..F_KIN are asked as (kind, sense, word id)

PENDING, PYTHON = -1, -2  # reasons the loop writes for captions it did not decide

_SEED = np.uint64(0xCBF29CE484222325)
_PRIME = np.uint64(0x100000001B3)
_KIND_SHIFT = np.uint64(58)
_SENSE_SHIFT = np.uint64(29)


def enabled() -> bool:
    """Whether the compiled cascade runs (numba installed, and neither switch off)."""
    return COMPILED and kernels.COMPILED and _load() is not None


@functools.lru_cache(maxsize=1)
def _load():
    if kernels._load_kernels() is None:
        return None
    from numba.extending import register_jitable

    for helper in (_word_hash, _probe_word, _fact, _ask, _joined, _is_upper, _decide_one, _head_after):
        register_jitable(helper)
    jit = kernels._jit
    return jit(_cascade_rows), jit(_insert_words), jit(_insert_facts)


# ---------------------------------------------------------------------------------------------
# compiled loops (plain Python until _load registers and compiles them)


def _word_hash(buf, lo, hi):
    h = _SEED
    for j in range(lo, hi):
        c = buf[j]
        if 65 <= c <= 90:
            c += 32
        h = (h ^ np.uint64(c)) * _PRIME
    h ^= h >> np.uint64(32)
    if h == 0:
        h = np.uint64(1)
    return h


def _probe_word(wkeys, wvals, blob, blob_off, raw, lo, hi):
    """The id of the lower-cased word raw[lo:hi], or -1."""
    h = _word_hash(raw, lo, hi)
    mask = len(wkeys) - 1
    slot = np.int64(h & np.uint64(mask))
    while wkeys[slot] != 0:
        if wkeys[slot] == h:
            v = wvals[slot]
            if v > 0:
                i = v - 1
                a = blob_off[i]
                if blob_off[i + 1] - a == hi - lo:
                    same = True
                    for t in range(hi - lo):
                        c = raw[lo + t]
                        if 65 <= c <= 90:
                            c += 32
                        if blob[a + t] != c:
                            same = False
                            break
                    if same:
                        return i
        slot = (slot + 1) & mask
    return -1


def _fact(fkeys, fvals, kind, sense, wid):
    key = (np.uint64(kind) << _KIND_SHIFT) | (np.uint64(sense) << _SENSE_SHIFT) | np.uint64(wid)
    h = key * np.uint64(0x9E3779B97F4A7C15)
    h ^= h >> np.uint64(31)
    mask = len(fkeys) - 1
    slot = np.int64(h & np.uint64(mask))
    while fkeys[slot] != 0:
        if fkeys[slot] == key:
            return fvals[slot]
        slot = (slot + 1) & mask
    return 0


def _ask(req, nreq, kind, x, y):
    n = nreq[0]
    if n < len(req):
        req[n, 0] = kind
        req[n, 1] = x
        req[n, 2] = y
    nreq[0] = n + 1


def _joined(raw, lo, hi):
    """``disambiguate._joined`` of the separator raw[lo:hi]."""
    i = lo
    while i < hi and raw[i] == 32:
        i += 1
    j = hi
    while j > i and raw[j - 1] == 32:
        j -= 1
    if i == j:
        return True
    if j - i == 1:
        c = raw[i]
        if c == 95 or c == 39:
            return True
        if c == 45:
            return hi - lo == 1
    return False


def _is_upper(c):
    return 65 <= c <= 90


def _head_after(raw, sep_lo, ts, te, wid, wflags, nt, b, req, nreq):
    """``disambiguate._head_after``: the head's word id, -1 for none, -2 when a flag is missing."""
    while True:
        if b >= nt or not _joined(raw, sep_lo[b], ts[b]):
            return -1
        f = wflags[wid[b]]
        if f & W_COORD:
            if b + 1 < nt:
                fn = wflags[wid[b + 1]]
                if not (fn & W_FUNC) and _joined(raw, sep_lo[b + 1], ts[b + 1]) and (fn & W_NOUN):
                    b += 2
                    continue
            return -1
        if f & (W_FUNC | W_QUAL):
            return -1
        head = -1
        stop = min(nt, b + 4)
        k = b
        while k < stop:
            if k > b and (not _joined(raw, sep_lo[k], ts[k]) or (wflags[wid[k]] & (W_FUNC | W_COORD))):
                break
            w = wid[k]
            f = wflags[w]
            if f & (W_QUAL | W_PROPER | W_VERB_ONLY):
                break
            if te[k] - ts[k] == 1 and (raw[ts[k]] | 32) == 115 and ts[k] - sep_lo[k] == 1 and raw[sep_lo[k]] == 39:
                break  # a possessive "'s"
            if f & W_PART:
                if (f & W_NOUN) and k + 1 < nt and _joined(raw, sep_lo[k + 1], ts[k + 1]) and (wflags[wid[k + 1]] & W_NOUN):
                    k += 1
                    continue
                break
            if f & W_HEAD:
                if head >= 0 and not (wflags[head] & W_DEPICT):
                    fh = wflags[head]
                    if not (fh & W_THING_KNOWN):
                        _ask(req, nreq, Q_THING, head, 0)
                        return -2
                    if fh & W_THING:
                        return head
                head = w
            k += 1
        return head


def _decide_one(
    raw, sep_lo, ts, te, wid, nt, a, b, s, wflags, wbase, wsing, fkeys, fvals,
    plural_only, needs_ctx, needs_ctx_noun, prof_state, hyp_state, empty_honorific, style, req, nreq,
):
    """One mention's reason (``disambiguate.decide``'s steps, in its order), or PENDING."""
    # 1. sense
    if plural_only[s]:
        return 2
    as_noun = a > 0 and (wflags[wid[a - 1]] & (W_DET | W_DIGIT)) != 0
    need = needs_ctx_noun[s] if as_noun else needs_ctx[s]
    if need:
        ps = prof_state[s]
        if ps == 0:
            _ask(req, nreq, Q_PROFILE, s, 0)
            return PENDING
        if ps == 2:
            return 2
        found = False
        for k in range(nt):
            x = wid[k]
            for e in (x, wbase[x]):
                own = False
                for t in range(a, b):
                    if wid[t] == e:
                        own = True
                        break
                if not own and _fact(fkeys, fvals, F_CTX, s, e) != 0:
                    found = True
                    break
            if found:
                break
        if not found:
            return 2
    # 2. name
    if _is_upper(raw[ts[a]]):
        honorific = (wflags[wid[a - 1]] & W_HON) != 0 if a > 0 else empty_honorific
        if honorific:
            i = sep_lo[a]
            j = ts[a]
            while i < j and raw[i] == 32:
                i += 1
            while j > i and raw[j - 1] == 32:
                j -= 1
            if i == j or (j - i == 1 and raw[i] == 46):
                return 3
        if a > 0 and _joined(raw, sep_lo[a], ts[a]):
            for j in range(ts[a - 1], te[a - 1] - 1):
                if 97 <= raw[j] <= 122 and _is_upper(raw[j + 1]):
                    return 3  # after a brand written in camel case
        if style[0] < 0:
            n_alpha = 0
            n_upper = 0
            n_cap = 0
            for k in range(nt):
                c = raw[ts[k]]
                if (65 <= c <= 90) or (97 <= c <= 122):
                    n_alpha += 1
                    if _is_upper(c):
                        n_cap += 1
                    if te[k] - ts[k] > 1:
                        up = False
                        low = False
                        for j in range(ts[k], te[k]):
                            if _is_upper(raw[j]):
                                up = True
                            elif 97 <= raw[j] <= 122:
                                low = True
                        if up and not low:
                            n_upper += 1
            n_alpha = max(1, n_alpha)
            style[0] = 1 if n_upper / n_alpha < 0.5 else 0
            style[1] = 1 if n_cap <= 0.34 * n_alpha else 0
        if style[0] == 1:
            all_caps = True
            for k in range(a, b):
                up = False
                low = False
                for j in range(ts[k], te[k]):
                    if _is_upper(raw[j]):
                        up = True
                    elif 97 <= raw[j] <= 122:
                        low = True
                if not (up and not low and te[k] - ts[k] > 1):
                    all_caps = False
                    break
            if all_caps:
                return 3
        if style[1] == 1 and a > 0 and _joined(raw, sep_lo[a], ts[a]):
            j = ts[a]
            while j > sep_lo[a] and (raw[j - 1] == 32 or 9 <= raw[j - 1] <= 13 or 28 <= raw[j - 1] <= 31):
                j -= 1
            sentence_start = j > sep_lo[a] and (raw[j - 1] == 46 or raw[j - 1] == 33 or raw[j - 1] == 63 or raw[j - 1] == 58)
            neighbour_caps = _is_upper(raw[ts[a - 1]]) or (
                b < nt and _is_upper(raw[ts[b]]) and _joined(raw, sep_lo[b], ts[b])
            )
            if not sentence_start and neighbour_caps:
                return 3
    # 3. compounds WordNet knows
    before = wid[a - 1] if a > 0 else -1
    after = wid[b] if b < nt else -1
    lk = 1
    rk = 1
    if before >= 0:
        lk = _fact(fkeys, fvals, F_LK, s, before)
        if lk == 0:
            _ask(req, nreq, F_LK, s, before)
    if after >= 0:
        rk = _fact(fkeys, fvals, F_RK, s, after)
        if rk == 0:
            _ask(req, nreq, F_RK, s, after)
    if lk == 0 or rk == 0:
        return PENDING
    if lk == 2 or rk == 2:
        other = 0
        if before >= 0:
            lh = _fact(fkeys, fvals, F_LH, s, before)
            if lh == 0:
                _ask(req, nreq, F_LH, s, before)
                return PENDING
            if lh == 2:
                other = 1
        if other == 0 and after >= 0:
            rh = _fact(fkeys, fvals, F_RH, s, after)
            if rh == 0:
                _ask(req, nreq, F_RH, s, after)
                return PENDING
            if rh == 2:
                other = 2
        if other == 1 and _joined(raw, sep_lo[a], ts[a]):
            return 4
        if other == 2 and _joined(raw, sep_lo[b], ts[b]):
            return 4
    # 4. modifier
    head = _head_after(raw, sep_lo, ts, te, wid, wflags, nt, b, req, nreq)
    if head == -2:
        return PENDING
    if head >= 0:
        fh = wflags[head]
        if not (fh & W_SING_DEPICT):
            if not (fh & W_COLL_KNOWN):
                _ask(req, nreq, Q_COLL, head, 0)
                return PENDING
            if not (fh & W_COLL):
                if hyp_state[s] == 0:
                    _ask(req, nreq, Q_HYPER, s, 0)
                    return PENDING
                hyper = False
                for t in range(wsing.shape[1]):
                    x = wsing[head, t]
                    if x >= 0 and _fact(fkeys, fvals, F_HYP, s, x) != 0:
                        hyper = True
                        break
                if not hyper:
                    kin = _fact(fkeys, fvals, F_KIN, s, head)
                    if kin == 0:
                        _ask(req, nreq, F_KIN, s, head)
                        return PENDING
                    if kin == 1:
                        return 4
    return 0


def _cascade_rows(
    raw, raw_off, norm_off, grp_ptr, grp_row, m_start, m_end, m_sense,
    wkeys, wvals, blob, blob_off, wflags, wbase, wsing, fkeys, fvals,
    plural_only, needs_ctx, needs_ctx_noun, prof_state, hyp_state, empty_honorific,
    reasons, req, nreq,
):
    """Decide the mentions of each group (one caption's, ``grp_ptr``): a reason code each, or
    PENDING for every mention of a caption that needs more from the tables (asked for in ``req``),
    or PYTHON for one this loop does not read (non-ASCII, HTML, words that do not line up)."""
    max_len = 1
    max_grp = 1
    for g in range(len(grp_row)):
        r = grp_row[g]
        max_len = max(max_len, raw_off[r + 1] - raw_off[r])
        max_grp = max(max_grp, grp_ptr[g + 1] - grp_ptr[g])
    cap = max_len // 2 + 2
    ts = np.empty(cap, np.int64)
    te = np.empty(cap, np.int64)
    sep_lo = np.empty(cap, np.int64)
    nstart = np.empty(cap, np.int64)
    wid = np.empty(cap, np.int64)
    ma = np.empty(max_grp, np.int64)
    mb = np.empty(max_grp, np.int64)
    style = np.empty(2, np.int64)
    for g in range(len(grp_row)):
        lo = grp_ptr[g]
        hi = grp_ptr[g + 1]
        r = grp_row[g]
        p0 = raw_off[r]
        p1 = raw_off[r + 1]
        plain = True
        for j in range(p0, p1):
            c = raw[j]
            if c >= 128 or c == 38 or c == 60:
                plain = False
                break
        if not plain:
            reasons[lo:hi] = PYTHON
            continue
        # tokens: runs of ASCII letters and digits (``[^\W_]+`` on ASCII text)
        nt = 0
        missing = False
        python = False
        total = 0
        prev = p0
        j = p0
        while j < p1:
            c = raw[j]
            if (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122):
                s0 = j
                while j < p1 and ((48 <= raw[j] <= 57) or (65 <= raw[j] <= 90) or (97 <= raw[j] <= 122)):
                    j += 1
                w = _probe_word(wkeys, wvals, blob, blob_off, raw, s0, j)
                if w < 0 or not (wflags[w] & W_KNOWN):
                    _ask(req, nreq, Q_WORD, s0, j)
                    missing = True
                elif wflags[w] & W_PYTHON:
                    python = True
                ts[nt] = s0
                te[nt] = j
                sep_lo[nt] = prev
                nstart[nt] = total
                wid[nt] = w
                total += j - s0 + 1
                prev = j
                nt += 1
            else:
                j += 1
        if python or norm_off[r + 1] - norm_off[r] != (total + 1 if nt else 1):
            reasons[lo:hi] = PYTHON
            continue
        if missing:
            reasons[lo:hi] = PENDING
            continue
        # each mention's words [a, b)
        for i in range(lo, hi):
            a = -1
            b = -1
            for k in range(nt):
                if nstart[k] == m_start[i]:
                    a = k
                if nstart[k] + te[k] - ts[k] == m_end[i]:
                    b = k + 1
                    break
            if a < 0 or b <= a:
                python = True
                break
            ma[i - lo] = a
            mb[i - lo] = b
        if python:
            reasons[lo:hi] = PYTHON
            continue
        style[0] = -1
        pending = False
        for i in range(lo, hi):
            got = _decide_one(
                raw, sep_lo, ts, te, wid, nt, ma[i - lo], mb[i - lo], m_sense[i], wflags, wbase, wsing,
                fkeys, fvals, plural_only, needs_ctx, needs_ctx_noun, prof_state, hyp_state, empty_honorific,
                style, req, nreq,
            )
            if got == PENDING:
                pending = True
            reasons[i] = got
        if pending:
            reasons[lo:hi] = PENDING
            continue
        # a word written once as a name is that name throughout its caption
        for i in range(lo, hi):
            if reasons[i] != 3:
                continue
            for i2 in range(lo, hi):
                if reasons[i2] != 0 or mb[i2 - lo] - ma[i2 - lo] != mb[i - lo] - ma[i - lo]:
                    continue
                same = True
                for t in range(mb[i - lo] - ma[i - lo]):
                    if wid[ma[i - lo] + t] != wid[ma[i2 - lo] + t]:
                        same = False
                        break
                if same:
                    reasons[i2] = 3


def _insert_words(wkeys, wvals, blob, blob_off, first, last):
    """Publish words first..last-1 (their bytes already in ``blob``): value, then key."""
    mask = len(wkeys) - 1
    for i in range(first, last):
        h = _word_hash(blob, blob_off[i], blob_off[i + 1])
        slot = np.int64(h & np.uint64(mask))
        while wkeys[slot] != 0:
            slot = (slot + 1) & mask
        wvals[slot] = i + 1
        wkeys[slot] = h


def _insert_facts(fkeys, fvals, keys, vals):
    """Add (key, value) pairs not yet in the table (value, then key); returns how many were new."""
    mask = len(fkeys) - 1
    added = 0
    for n in range(len(keys)):
        key = keys[n]
        h = key * np.uint64(0x9E3779B97F4A7C15)
        h ^= h >> np.uint64(31)
        slot = np.int64(h & np.uint64(mask))
        while fkeys[slot] != 0 and fkeys[slot] != key:
            slot = (slot + 1) & mask
        if fkeys[slot] == 0:
            fvals[slot] = vals[n]
            fkeys[slot] = key
            added += 1
    return added


# ---------------------------------------------------------------------------------------------
# the tables, filled from Python


def _fact_keys(kind, sense, wid) -> np.ndarray:
    """The facts table's keys of (kind, sense, word id), arrays or scalars alike."""
    return (
        (np.asarray(kind).astype(np.uint64) << _KIND_SHIFT)
        | (np.asarray(sense).astype(np.uint64) << _SENSE_SHIFT)
        | np.asarray(wid).astype(np.uint64)
    )


class _Tables:
    """One generation of the tables (a word table that starts over is a new generation)."""

    def __init__(self, n_senses: int) -> None:
        self.ids: dict[str, int] = {}
        self.words: list[str] = []
        self.blob_used = 0
        self.n_facts = 0
        self.wkeys = np.zeros(1 << 12, dtype=np.uint64)
        self.wvals = np.zeros(1 << 12, dtype=np.int64)
        self.blob = np.zeros(1 << 15, dtype=np.uint8)
        self.blob_off = np.zeros((1 << 11) + 1, dtype=np.int64)
        self.wflags = np.zeros(1 << 11, dtype=np.int64)
        self.wbase = np.zeros(1 << 11, dtype=np.int64)
        self.wsing = np.full((1 << 11, N_SING), -1, dtype=np.int64)
        self.fkeys = np.zeros(1 << 14, dtype=np.uint64)
        self.fvals = np.zeros(1 << 14, dtype=np.int64)
        self.prof_state = np.zeros(n_senses, dtype=np.uint8)
        self.hyp_state = np.zeros(n_senses, dtype=np.uint8)
        # what the loop reads, swapped whole (readers never see a grown array beside an old one)
        self.snapshot = self.arrays()

    def arrays(self) -> tuple:
        return (
            self.wkeys, self.wvals, self.blob, self.blob_off, self.wflags, self.wbase, self.wsing,
            self.fkeys, self.fvals, self.prof_state, self.hyp_state,
        )


class CompiledCascade:
    """The compiled cascade of one matcher's :class:`~curate.match.disambiguate.SenseTable`:
    tables built per process as captions need them (never pickled with the matcher)."""

    def __init__(self, table) -> None:
        self.table = table
        self.lock = threading.Lock()
        self.plural_only = np.ascontiguousarray(table.plural_only, dtype=np.bool_)
        self.needs_ctx = np.ascontiguousarray(table.needs_context, dtype=np.bool_)
        self.needs_ctx_noun = np.ascontiguousarray(table.needs_context_noun, dtype=np.bool_)
        self.tables = _Tables(len(self.plural_only))
        self.empty_honorific = "" in _word_sets()[1]

    # -- the loop ------------------------------------------------------------------------------

    def decide(
        self, raw: np.ndarray, raw_off: np.ndarray, norm_off: np.ndarray,
        row: np.ndarray, start: np.ndarray, end: np.ndarray, sense: np.ndarray,
    ) -> np.ndarray:
        """Reason codes per mention (ordered by row), PYTHON where ``decide`` must answer."""
        cascade_rows, _, _ = _load()
        n = len(row)
        reasons = np.full(n, PENDING, dtype=np.int8)
        cut = np.flatnonzero(row[1:] != row[:-1]) + 1
        grp_ptr = np.concatenate(([0], cut, [n])).astype(np.int64)
        grp_row = row[grp_ptr[:-1]].astype(np.int64)
        todo = np.arange(len(grp_row), dtype=np.int64)  # groups still pending
        for _ in range(MAX_ROUNDS):
            t = self.tables
            arrays = t.snapshot
            sub_ptr, sub_idx = _sub_groups(grp_ptr, todo)
            sub_reasons = np.empty(len(sub_idx), dtype=np.int8)
            req = np.empty((len(sub_idx) * 4 + 64, 3), dtype=np.int64)
            nreq = np.zeros(1, dtype=np.int64)
            cascade_rows(
                raw, raw_off, norm_off, sub_ptr, grp_row[todo], start[sub_idx], end[sub_idx], sense[sub_idx],
                *arrays[:9], self.plural_only, self.needs_ctx, self.needs_ctx_noun, *arrays[9:], self.empty_honorific, sub_reasons, req, nreq,
            )
            reasons[sub_idx] = sub_reasons
            still = sub_reasons[sub_ptr[:-1]] == PENDING if len(todo) else np.zeros(0, dtype=bool)
            todo = todo[still]
            if not len(todo):
                break
            self._fill(t, raw, req[: min(int(nreq[0]), len(req))])
        reasons[reasons == PENDING] = PYTHON
        return reasons

    # -- filling the tables --------------------------------------------------------------------

    def _fill(self, t: _Tables, raw: np.ndarray, req: np.ndarray) -> None:
        if not len(req):
            return
        req = np.unique(req, axis=0)
        with self.lock:
            if t is not self.tables:
                return  # the table started over meanwhile: the next round asks again
            if len(t.words) > MAX_WORDS:
                self.tables = _Tables(len(self.plural_only))
                return
            self._fill_locked(t, raw, req)

    def _fill_locked(self, t: _Tables, raw: np.ndarray, req: np.ndarray) -> None:
        try:
            kind = req[:, 0]
            words = sorted({raw[a:b].tobytes().decode("ascii").lower() for a, b in req[kind == Q_WORD, 1:]})
            if words:
                self._add_words(t, words)
            for s in req[kind == Q_PROFILE, 1].tolist():
                self._add_profile(t, s)
            for s in req[kind == Q_HYPER, 1].tolist():
                self._add_hypernyms(t, s)
            for w in req[kind == Q_THING, 1].tolist():
                if not t.wflags[w] & W_THING_KNOWN:
                    t.wflags[w] |= W_THING_KNOWN | (W_THING if _is_thing(t.words[w]) else 0)
            for w in req[kind == Q_COLL, 1].tolist():
                if not t.wflags[w] & W_COLL_KNOWN:
                    t.wflags[w] |= W_COLL_KNOWN | (W_COLL if _is_collection(t.words[w]) else 0)
            facts = req[(kind >= F_LK) & (kind <= F_KIN)]
            if len(facts):
                ask = {F_LK: self._left_known, F_RK: self._right_known, F_LH: self._left_other,
                       F_RH: self._right_other, F_KIN: self.table.kindred}
                vals = np.array([1 + bool(ask[k](s, t.words[w])) for k, s, w in facts.tolist()], dtype=np.int64)
                self._add_facts(t, _fact_keys(facts[:, 0], facts[:, 1], facts[:, 2]), vals)
        finally:
            t.snapshot = t.arrays()

    def _left_known(self, sense: int, word: str) -> bool:
        return self.table.compound_known(sense, word, "left")

    def _right_known(self, sense: int, word: str) -> bool:
        return self.table.compound_known(sense, word, "right")

    def _left_other(self, sense: int, word: str) -> bool:
        return self.table.compound_other(sense, word, "left")

    def _right_other(self, sense: int, word: str) -> bool:
        return self.table.compound_other(sense, word, "right")

    def _ids(self, t: _Tables, words) -> list[int]:
        """Ids of ``words``, adding the new ones (without their flags) to the table."""
        new = [w for w in dict.fromkeys(words) if w not in t.ids]
        if new:
            _, insert_words, _ = _load()
            encoded = [w.encode("utf-8") for w in new]
            first = len(t.words)
            last = first + len(new)
            need_bytes = t.blob_used + sum(len(e) for e in encoded)
            if last >= len(t.wflags) or need_bytes > len(t.blob):
                self._grow_words(t, last, need_bytes)
            for k, (w, e) in enumerate(zip(new, encoded)):
                i = first + k
                t.blob[t.blob_used : t.blob_used + len(e)] = np.frombuffer(e, dtype=np.uint8)
                t.blob_used += len(e)
                t.blob_off[i + 1] = t.blob_used
                t.wbase[i] = i
                t.ids[w] = i
                t.words.append(w)
            if 2 * last > len(t.wkeys):
                self._rehash_words(t, last)
            else:
                insert_words(t.wkeys, t.wvals, t.blob, t.blob_off, first, last)
        return [t.ids[w] for w in words]

    def _grow_words(self, t: _Tables, n: int, n_bytes: int) -> None:
        size = len(t.wflags)
        while size <= n:
            size *= 2
        blob_size = len(t.blob)
        while blob_size < n_bytes:
            blob_size *= 2
        if blob_size != len(t.blob):
            blob = np.zeros(blob_size, dtype=np.uint8)
            blob[: t.blob_used] = t.blob[: t.blob_used]
            t.blob = blob
        if size != len(t.wflags):
            old = len(t.wflags)
            for name, fill in (("wflags", 0), ("wbase", 0), ("wsing", -1)):
                a = getattr(t, name)
                b = np.full((size, *a.shape[1:]), fill, dtype=a.dtype)
                b[:old] = a
                setattr(t, name, b)
            off = np.zeros(size + 1, dtype=np.int64)
            off[: old + 1] = t.blob_off
            t.blob_off = off
            # the hash table's values index these arrays: a fresh table goes with them
            self._rehash_words(t, len(t.words))

    def _rehash_words(self, t: _Tables, n: int) -> None:
        _, insert_words, _ = _load()
        size = len(t.wkeys)
        while size < 2 * n + 2:
            size *= 2
        wkeys = np.zeros(size, dtype=np.uint64)
        wvals = np.zeros(size, dtype=np.int64)
        insert_words(wkeys, wvals, t.blob, t.blob_off, 0, n)
        t.wkeys, t.wvals = wkeys, wvals

    def _add_words(self, t: _Tables, words: list[str]) -> None:
        depiction, honorifics, function_words, coordinators, qualifiers, determiners = _word_sets()
        rows = []
        for w in words:
            forms = sorted(singular_forms(w))
            base = noun_base(w) or w
            flags = W_KNOWN
            flags |= W_DET if w in determiners else 0
            flags |= W_HON if w in honorifics else 0
            flags |= W_FUNC if w in function_words else 0
            flags |= W_COORD if w in coordinators else 0
            flags |= W_QUAL if w in qualifiers else 0
            flags |= W_DEPICT if w in depiction else 0
            flags |= W_DIGIT if w.isdigit() else 0
            flags |= W_NOUN if is_noun(w) else 0
            flags |= W_HEAD if (can_head(w) or split_compound(w)) else 0
            flags |= W_PROPER if is_proper(w) else 0
            flags |= W_VERB_ONLY if is_verb(w, only=True) else 0
            flags |= W_PART if is_participle(w) else 0
            flags |= W_SING_DEPICT if set(forms) & depiction else 0
            flags |= W_PYTHON if len(forms) > N_SING else 0
            rows.append((w, base, forms, flags))
        ids = self._ids(t, [x for w, base, forms, _ in rows for x in (w, base, *forms)])
        pos = 0
        for _w, _base, forms, flags in rows:
            i, b = ids[pos], ids[pos + 1]
            sing = ids[pos + 2 : pos + 2 + len(forms)]
            pos += 2 + len(forms)
            if t.wflags[i] & W_KNOWN:
                continue
            t.wbase[i] = b
            t.wsing[i, : min(len(sing), N_SING)] = sing[:N_SING]
            t.wflags[i] |= flags  # last: the flags publish the word's features

    def _add_facts(self, t: _Tables, keys: np.ndarray, vals: np.ndarray) -> None:
        _, _, insert_facts = _load()
        if 2 * (t.n_facts + len(keys)) > len(t.fkeys):
            size = len(t.fkeys)
            while size < 2 * (t.n_facts + len(keys)) + 2:
                size *= 2
            fkeys = np.zeros(size, dtype=np.uint64)
            fvals = np.zeros(size, dtype=np.int64)
            live = t.fkeys != 0
            insert_facts(fkeys, fvals, t.fkeys[live], t.fvals[live])
            insert_facts(fkeys, fvals, keys.astype(np.uint64), vals.astype(np.int64))
            t.fkeys, t.fvals = fkeys, fvals
            t.n_facts = int((fkeys != 0).sum())
            return
        t.n_facts += int(insert_facts(t.fkeys, t.fvals, keys.astype(np.uint64), vals.astype(np.int64)))

    def _add_set(self, t: _Tables, kind: int, sense: int, words) -> None:
        ids = np.asarray(self._ids(t, sorted(words)), dtype=np.int64)
        if len(ids):
            self._add_facts(t, _fact_keys(kind, np.full(len(ids), sense), ids), np.full(len(ids), 2, dtype=np.int64))

    def _add_profile(self, t: _Tables, sense: int) -> None:
        if t.prof_state[sense]:
            return
        prof = self.table.profile(sense)
        if prof is not None:
            self._add_set(t, F_CTX, sense, prof.context)
        t.prof_state[sense] = 1 if prof is not None else 2

    def _add_hypernyms(self, t: _Tables, sense: int) -> None:
        if t.hyp_state[sense]:
            return
        self._add_set(t, F_HYP, sense, self.table.hypernym_words(sense))
        t.hyp_state[sense] = 1


def _sub_groups(grp_ptr: np.ndarray, todo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mentions of groups ``todo`` laid end to end: their group offsets and mention indices."""
    counts = grp_ptr[todo + 1] - grp_ptr[todo]
    ptr = np.zeros(len(todo) + 1, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    idx = np.repeat(grp_ptr[todo] - ptr[:-1], counts) + np.arange(ptr[-1], dtype=np.int64)
    return ptr, idx
