"""The disambiguation cascade, compiled: :func:`curate.match.disambiguate.decide`'s reason code for
every mention, from a numba loop that runs without the GIL on the captions holding a candidate.

``decide`` stays the reference, and the path for what this loop leaves to it. The loop reads each
caption as ``decide`` does: the words of the normalised buffer, and their case and the separators
between them from the original text, tokenised as ``decide``'s ``[^\\W_]+`` (HTML entities and
tags decoded as ``html.unescape`` and its tag pattern would, UTF-8 read with a table of Python's
own character classes). What it knows about words and senses lives in flat tables, filled in
Python by the very functions ``decide`` calls, the first time a caption needs them:

- words: a hash table of normalised words -> id, and per id the flags ``decide`` reads (function
  word, determiner, noun, head, proper, verb, participle, ...), its noun base and singular forms;
  "thing", "collection" and "living" (WordNet lookups) are filled only for words that reach them;
- facts about a (sense, word) pair: in the sense's context profile, among its hypernyms' words,
  makes a WordNet compound on its left or right (and whether that compound names something
  else), a kindred living thing;
- per sense: whether its profile and hypernyms are in the facts yet.

A caption that needs what the tables lack is left pending; the loop lists what it lacked, Python
fills it in, and the loop runs again on those captions. What is still pending after
:data:`MAX_ROUNDS`, and the rare text the loop does not read (characters beyond U+FFFF, entities
other than ``&amp;``, ``&quot;``, ``&apos;`` and decimal ASCII ones, words that do not line up
with the normalised ones), goes to ``decide``: :func:`row_bits` or ``decide`` itself.

Batches on other threads read the tables while they fill: entries are written before the key or
flag that publishes them, and a table that must grow is copied whole with all the others (the
snapshot a running loop holds is never written again). Past :data:`MAX_WORDS` words or
:data:`MAX_FACTS` facts the tables start over, so memory stays flat on any stream.

:data:`COMPILED` (or ``CURATE_CASCADE=python`` in the environment) forces the Python path; both
give the same reason codes (tests/test_cascade.py checks them side by side).
"""

from __future__ import annotations

import functools
import os
import threading

import numpy as np

from curate.match import kernels
from curate.match.disambiguate import (
    _CAMEL,
    _KIN,
    KEPT,
    MODIFIER,
    NAME,
    SENSE,
    WORDNET_LOCK,
    _is_collection,
    _is_thing,
    _joined,
    _tokens,
    _word_sets,
)
from curate.match.kernels import _HASH_MUL, _HASH_SEED, _hash_word, _load_u64
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
# the tables start over past this many words, or facts (ids and their facts are dropped together)
MAX_WORDS = 1 << 20
MAX_FACTS = 1 << 23
# rounds of "fill what the loop lacked, run it again" before decide() takes the rest
MAX_ROUNDS = 12
# stored tables kept on disk (the least recently written go first), as the lexicon cache keeps
STORE_KEEP = 32

# word flags
W_KNOWN, W_DET, W_HON, W_FUNC, W_COORD, W_QUAL, W_DEPICT, W_DIGIT = (1 << k for k in range(8))
W_NOUN, W_HEAD, W_PROPER, W_VERB_ONLY, W_PART, W_SING_DEPICT = (1 << k for k in range(8, 14))
W_THING_KNOWN, W_THING, W_COLL_KNOWN, W_COLL, W_PYTHON, W_CTX_ANY, W_HYP_ANY = (1 << k for k in range(14, 21))
# the word may make a WordNet compound with some class lemma after / before it (else it never does)
W_LEFT_ANY, W_RIGHT_ANY = 1 << 21, 1 << 22
# some noun sense of the word is an animal or plant (only those can be kindred: _kindred)
W_LIVING_KNOWN, W_LIVING = 1 << 23, 1 << 24
W_CITY = 1 << 25  # WordNet knows the word only as places, a city among them (SenseTable.cities)
N_SING = 6  # singular forms kept per word (a word with more goes to decide)

# per character of the Basic Multilingual Plane (_char_classes): what decide's tokeniser and str
# methods say of it
C_WORD, C_UPPER, C_LOWTITLE, C_ALPHA, C_SPACE = 1, 2, 4, 8, 16
# per token of the original: its case (T_) and the separator before it (S_), as decide reads them
T_UPPER1, T_ALPHA1, T_CAPS, T_CAMEL, T_BY = 1, 2, 4, 8, 256
S_JOINED, S_HON, S_SENT, S_APOS = 16, 32, 64, 128

# facts about (sense, word), bits of one entry: known-bit and value-bit per question
B_CTX, B_HYP = 1, 2  # set only when true
B_LK, B_RK, B_LH, B_RH, B_KIN = 4, 16, 64, 256, 1024  # known; the value is the next bit
# what the loop asks for: (kind, x, y)
Q_WORD, Q_ROW, Q_PROFILE, Q_HYPER, Q_THING, Q_COLL, Q_LIVING = range(101, 108)  # word: x, y = its bytes in the buffer
# a fact is asked as (its known-bit, sense, word id)

PENDING, PYTHON = -1, -2  # reasons the loop writes for captions it did not decide

_MUL = np.uint64(0x9E3779B97F4A7C15)


def enabled() -> bool:
    """Whether the compiled cascade runs (numba installed, and neither switch off)."""
    return COMPILED and kernels.COMPILED and _load() is not None


@functools.lru_cache(maxsize=1)
def _load():
    """The loops: the ahead-of-time copies where built (:mod:`curate.match.aot`, no numba to
    import), else numba's just-in-time ones; None without numba."""
    if kernels._load_kernels() is None:
        return None
    from curate.match import aot

    built = aot.load()
    if built is not None:
        return built.cascade_rows, built.insert_words, built.insert_facts
    register_helpers()
    jit = kernels._jit
    return jit(_cascade_rows), jit(_insert_words), jit(_insert_facts)


@functools.lru_cache(maxsize=1)
def register_helpers() -> None:
    """Make the helper functions compilable inside the loops (numba's ``register_jitable``)."""
    from numba.extending import register_jitable

    kernels.register_helpers()
    helpers = (_word_hash, _next_word, _load8, _probe, _fact, _ask, _ask_word, _join_bits, _separator_bits, _ascii_bits)
    for helper in (*helpers, _utf8_at, _unhtml, _text_bits, _decide_one, _head_after):
        register_jitable(helper)


# ---------------------------------------------------------------------------------------------
# compiled loops (plain Python until _load registers and compiles them)


def _word_hash(buf, lo, hi):
    """The hash of buf[lo:hi] as :func:`_next_word` computes it while reading a normalised word:
    little-endian chunks of 8 bytes, the last holding the remaining 0-7 (kernels' word hash)."""
    h = _HASH_SEED
    c = lo
    while True:
        n = min(8, hi - c)
        w = np.uint64(0)
        for t in range(n):
            w |= np.uint64(buf[c + t]) << np.uint64(8 * t)
        h = (h ^ w) * _HASH_MUL
        if n < 8:
            break
        c += 8
    h ^= h >> np.uint64(32)
    return h | np.uint64(1)


def _next_word(norm, q):
    """(hash, end) of the normalised word starting at ``q`` (it ends at the next space), hashed as
    :func:`curate.match.kernels._word_find` hashes it (:func:`curate.match.kernels._hash_word`)."""
    h, q = _hash_word(norm, q, _HASH_SEED)
    h ^= h >> np.uint64(32)
    return h | np.uint64(1), q


def _probe(words, blob, blob_off, buf, lo, hi, h):
    """The id of the word buf[lo:hi] (whose hash is ``h``), or -1."""
    mask = len(words) - 1
    slot = np.int64((h ^ (h >> np.uint64(29))) & np.uint64(mask))
    while words[slot, 0] != 0:
        if words[slot, 0] == h:
            v = np.int64(words[slot, 1])
            if v > 0:
                i = v - 1
                a = blob_off[i]
                n = hi - lo
                if blob_off[i + 1] - a == n:
                    same = True
                    c = 0
                    while c < n:  # 8 bytes at a time
                        m = min(8, n - c)
                        keep = ~np.uint64(0) if m == 8 else (np.uint64(1) << np.uint64(8 * m)) - np.uint64(1)
                        if (_load8(blob, a + c) ^ _load8(buf, lo + c)) & keep != 0:
                            same = False
                            break
                        c += 8
                    if same:
                        return i
        slot = (slot + 1) & mask
    return -1


def _fact(facts, sense, wid):
    """The fact bits of (sense, word id); 0 when none are known."""
    key = ((np.uint64(sense) + np.uint64(1)) << np.uint64(32)) | np.uint64(wid)
    h = key * _MUL
    h ^= h >> np.uint64(31)
    mask = len(facts) - 1
    slot = np.int64(h & np.uint64(mask))
    while facts[slot, 0] != 0:
        if facts[slot, 0] == key:
            return np.int64(facts[slot, 1])
        slot = (slot + 1) & mask
    return 0


def _ask(req, nreq, kind, x, y):
    n = nreq[0]
    if n < len(req):
        req[n, 0] = kind
        req[n, 1] = x
        req[n, 2] = y
        req[n, 3] = 0
    nreq[0] = n + 1


def _ask_word(req, nreq, x, y, h):
    """Ask for the word buf[x:y] (hash ``h``: Python reads each distinct word once)."""
    n = nreq[0]
    _ask(req, nreq, Q_WORD, x, y)
    if n < len(req):
        req[n, 3] = np.int64(h >> np.uint64(1))


def _load8(buf, q):
    """buf[q:q+8] as a little-endian integer, zero past the buffer's end."""
    if q + 8 <= len(buf):
        return _load_u64(buf, q)
    w = np.uint64(0)
    for t in range(8):
        if q + t < len(buf):
            w |= np.uint64(buf[q + t]) << np.uint64(8 * t)
    return w


def _join_bits(buf, lo, hi):
    """The joined, honorific and apostrophe S_ bits of the separator buf[lo:hi], read as ``strip(" ")``."""
    f = 0
    i = lo
    e = hi
    while i < e and buf[i] == 32:
        i += 1
    while e > i and buf[e - 1] == 32:
        e -= 1
    if i == e:
        f |= S_JOINED | S_HON
    elif e - i == 1:
        d = buf[i]
        if d == 95 or d == 39 or (d == 45 and hi - lo == 1):
            f |= S_JOINED
        if d == 46:
            f |= S_HON
        if d == 39 and hi - lo == 1:
            f |= S_APOS
    return f


def _separator_bits(raw, lo, hi):
    """The S_ bits of the ASCII separator raw[lo:hi] (what :func:`_sep_bits` says of it)."""
    f = _join_bits(raw, lo, hi)
    e = hi
    while e > lo and (raw[e - 1] == 32 or 9 <= raw[e - 1] <= 13 or 28 <= raw[e - 1] <= 31):
        e -= 1
    if e > lo:
        d = raw[e - 1]
        if d == 46 or d == 33 or d == 63 or d == 58:
            f |= S_SENT
    return f


_ALNUM = np.zeros(256, dtype=np.uint8)
_ALNUM[[*range(48, 58), *range(65, 91), *range(97, 123)]] = 1
_SPECIAL = np.zeros(256, dtype=np.uint8)
_SPECIAL[[38, 60, *range(128, 256)]] = 1
_BIT20 = np.uint64(0x2020202020202020)
_BIT80 = np.uint64(0x8080808080808080)


def _ascii_bits(raw, p0, p1, norm, ws, we, bits, nt):
    """:func:`_text_bits` for a plain ASCII caption, 8 bytes of a token at a time: its k-th token
    is the k-th normalised word in its own case, so the case is where the two differ. Returns 1,
    2 at the first ``&``, ``<`` or non-ASCII byte, 0 where a token does not line up."""
    p = p0
    for k in range(nt):
        s0 = p
        while p < p1 and not _ALNUM[raw[p]]:
            if _SPECIAL[raw[p]]:
                return 2
            p += 1
        n = we[k] - ws[k]
        if p == p1 or p + n > p1 or (p + n < p1 and _ALNUM[raw[p + n]]) or (k > 0 and p == s0):
            return 0
        f = _separator_bits(raw, s0, p)
        up = False
        low = False
        camel = False
        carry = np.uint64(0)
        c = 0
        while c < n:
            m = min(8, n - c)
            mask = ~np.uint64(0) if m == 8 else (np.uint64(1) << np.uint64(8 * m)) - np.uint64(1)
            x = _load8(raw, p + c) & mask
            y = _load8(norm, ws[k] + c) & mask
            if (x & _BIT80) != 0 or (x | _BIT20) & mask != (y | _BIT20) & mask:
                return 0
            d = (x ^ y) & _BIT20  # upper-case letters
            lw = ~(x ^ y) & (y >> np.uint64(1)) & _BIT20 & mask  # lower-case letters
            if c == 0:
                if d & np.uint64(0x20):
                    f |= T_UPPER1
                if y & np.uint64(0x40):
                    f |= T_ALPHA1
            if d != 0:
                up = True
            if lw != 0:
                low = True
            if ((lw << np.uint64(8)) & d) != 0 or (carry != 0 and (d & np.uint64(0x20)) != 0):
                camel = True
            carry = (lw >> np.uint64(56)) & np.uint64(0x20)
            c += 8
        if up and not low and n > 1:
            f |= T_CAPS
        if camel:
            f |= T_CAMEL
        if n == 2 and norm[ws[k]] == 98 and norm[ws[k] + 1] == 121:
            f |= T_BY
        bits[k] = f
        p += n
    while p < p1:
        if _SPECIAL[raw[p]]:
            return 2
        if _ALNUM[raw[p]]:
            return 0
        p += 1
    return 1


def _unhtml(raw, p0, p1, dec):
    """``decide``'s text of a caption with ``&`` or ``<`` into ``dec``: ``html.unescape``, then HTML
    tags to spaces; its length, or -1 when Python must read it (an entity other than
    ``&amp;``, ``&quot;``, ``&apos;`` or a decimal one of printable ASCII other than ``<``, ``>``)."""
    n = 0
    i = p0
    while i < p1:
        c = raw[i]
        if c != 38:
            dec[n] = c
            n += 1
            i += 1
            continue
        d = raw[i + 1] if i + 1 < p1 else 32
        if d == 9 or d == 10 or d == 12 or d == 32 or d == 60 or d == 38 or d == 59:
            dec[n] = 38  # "&" before what no entity starts with stays "&"
            n += 1
            i += 1
        elif d == 35:  # "&#"
            j = i + 2
            v = 0
            while j < p1 and 48 <= raw[j] <= 57 and j - i < 9:
                v = v * 10 + raw[j] - 48
                j += 1
            if j == i + 2:
                if j < p1 and (raw[j] == 120 or raw[j] == 88):
                    return -1  # a hexadecimal reference
                dec[n] = 38
                n += 1
                i += 1
                continue
            if (j < p1 and 48 <= raw[j] <= 57) or v < 32 or v > 126 or v == 60 or v == 62:
                return -1
            if j < p1 and raw[j] == 59:
                j += 1
            dec[n] = v
            n += 1
            i = j
        else:  # a named reference: the run of characters html.unescape reads as its name
            j = i + 1
            while j < p1 and j - i <= 33:
                e = raw[j]
                if e == 9 or e == 10 or e == 12 or e == 32 or e == 60 or e == 38 or e == 35 or e == 59:
                    break
                j += 1
            if j >= p1 or raw[j] != 59:
                return -1
            k = j - i - 1
            if k == 3 and raw[i + 1] == 97 and raw[i + 2] == 109 and raw[i + 3] == 112:
                dec[n] = 38  # &amp;
            elif k == 4 and raw[i + 1] == 113 and raw[i + 2] == 117 and raw[i + 3] == 111 and raw[i + 4] == 116:
                dec[n] = 34  # &quot;
            elif k == 4 and raw[i + 1] == 97 and raw[i + 2] == 112 and raw[i + 3] == 111 and raw[i + 4] == 115:
                dec[n] = 39  # &apos;
            else:
                return -1
            n += 1
            i = j + 1
    # tags (``<[A-Za-z/!][^<>]*>``) to one space each
    m = 0
    i = 0
    while i < n:
        c = dec[i]
        if c == 60 and i + 1 < n:
            d = dec[i + 1]
            if (65 <= d <= 90) or (97 <= d <= 122) or d == 47 or d == 33:
                j = i + 2
                while j < n and dec[j] != 60 and dec[j] != 62:
                    j += 1
                if j < n and dec[j] == 62:
                    dec[m] = 32
                    m += 1
                    i = j + 1
                    continue
        dec[m] = c
        m += 1
        i += 1
    return m


def _utf8_at(buf, j, p1):
    """(code point, bytes) of the UTF-8 character at buf[j] (before p1); bytes 0 for what the loop
    leaves to Python: a character beyond the Basic Multilingual Plane, a stray or cut-short byte."""
    c = buf[j]
    if c < 128:
        return np.int64(c), 1
    if c >= 0xF0 or c < 0xC0:
        return np.int64(0), 0
    if c >= 0xE0:
        if j + 2 >= p1:
            return np.int64(0), 0
        return ((np.int64(c) & 0x0F) << 12) | ((np.int64(buf[j + 1]) & 0x3F) << 6) | (np.int64(buf[j + 2]) & 0x3F), 3
    if j + 1 >= p1:
        return np.int64(0), 0
    return ((np.int64(c) & 0x1F) << 6) | (np.int64(buf[j + 1]) & 0x3F), 2


def _text_bits(buf, p0, p1, bits, nt, chars, html):
    """The T_/S_ bits of the tokens of the UTF-8 text buf[p0:p1] (``decide``'s ``[^\\W_]+``: runs
    of alphanumeric characters, ``chars`` classifying each, and the separator before each), as
    :func:`row_bits` computes them. Returns 1, or 2 for text with ``&`` or ``<`` still to decode
    (unless ``html``: decoded already), or 0 where Python must read it (characters beyond the
    Basic Multilingual Plane, or not ``nt`` tokens)."""
    k = 0
    j = p0
    sep_start = p0
    last_other = -1  # the separator's last character that str.strip() keeps
    while j < p1:
        c = buf[j]
        cp, n = _utf8_at(buf, j, p1)
        if n == 0:
            return 0
        if not html and (c == 38 or c == 60):
            return 2
        f = chars[cp]
        if not (f & C_WORD):
            if not (f & C_SPACE):
                last_other = cp
            j += n
            continue
        # a token: its characters
        s0 = j
        first = f
        up = False
        low = False
        camel = False
        n_chars = 0
        prev = 0
        while True:
            if f & C_UPPER:
                up = True
                if 97 <= prev <= 122 and 65 <= cp <= 90:
                    camel = True
            if f & C_LOWTITLE:
                low = True
            n_chars += 1
            prev = cp
            j += n
            if j >= p1:
                break
            cp, n = _utf8_at(buf, j, p1)
            if n == 0:
                return 0
            f = chars[cp]
            if not (f & C_WORD):
                break
        if k >= nt:
            return 0
        t = 0
        if first & C_UPPER:
            t |= T_UPPER1
        if first & C_ALPHA:
            t |= T_ALPHA1
        if up and not low and n_chars > 1:
            t |= T_CAPS
        if camel:
            t |= T_CAMEL
        if j - s0 == 2 and (buf[s0] | 32) == 98 and (buf[s0 + 1] | 32) == 121:
            t |= T_BY  # the token lower-cases to "by"
        # the separator buf[sep_start:s0]: strip(" ") for joined and honorific, strip() for a sentence end
        t |= _join_bits(buf, sep_start, s0)
        if last_other == 46 or last_other == 33 or last_other == 63 or last_other == 58:
            t |= S_SENT
        bits[k] = t
        k += 1
        sep_start = j
        last_other = -1
        if j < p1 and not html and (c == 38 or c == 60):
            return 2
    return 1 if k == nt else 0


def _head_after(norm, ws, we, bits, wid, wflags, nt, b, req, nreq):
    """``disambiguate._head_after``: the head's word id, -1 for none, -2 when a flag is missing."""
    while True:
        if b >= nt or not (bits[b] & S_JOINED):
            return -1
        f = wflags[wid[b]]
        if f & W_COORD:
            if b + 1 < nt:
                fn = wflags[wid[b + 1]]
                if not (fn & W_FUNC) and (bits[b + 1] & S_JOINED) and (fn & W_NOUN):
                    b += 2
                    continue
            return -1
        if f & (W_FUNC | W_QUAL):
            return -1
        head = -1
        stop = min(nt, b + 4)
        k = b
        while k < stop:
            if k > b and (not (bits[k] & S_JOINED) or (wflags[wid[k]] & (W_FUNC | W_COORD))):
                break
            w = wid[k]
            f = wflags[w]
            if f & (W_QUAL | W_PROPER | W_VERB_ONLY):
                break
            if we[k] - ws[k] == 1 and norm[ws[k]] == 115 and (bits[k] & S_APOS):
                break  # a possessive: "the tiger's cub" is the tiger's
            if f & W_PART:
                if (f & W_NOUN) and k + 1 < nt and (bits[k + 1] & S_JOINED) and (wflags[wid[k + 1]] & W_NOUN):
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
    norm, ws, we, bits, wid, nt, a, b, s, wflags, wbase, wsing, facts,
    plural_only, needs_ctx, needs_ctx_noun, team_like, prof_state, hyp_state, empty_honorific, style, req, nreq,
):
    """One mention's reason (``disambiguate.decide``'s steps, in its order), or PENDING."""
    # 1. sense
    if plural_only[s]:
        return SENSE
    as_noun = a > 0 and (wflags[wid[a - 1]] & (W_DET | W_DIGIT)) != 0
    need = needs_ctx_noun[s] if as_noun else needs_ctx[s]
    if need:
        ps = prof_state[s]
        if ps == 0:
            _ask(req, nreq, Q_PROFILE, s, 0)
            return PENDING
        if ps == 2:
            return SENSE
        found = False
        for k in range(nt):
            x = wid[k]
            for e in (x, wbase[x]):
                if not (wflags[e] & W_CTX_ANY):
                    continue
                own = False
                for t in range(a, b):
                    if wid[t] == e:
                        own = True
                        break
                if not own and (_fact(facts, s, e) & B_CTX):
                    found = True
                    break
            if found:
                break
        if not found:
            return SENSE
    # 2. name
    if bits[a] & T_UPPER1:
        honorific = (wflags[wid[a - 1]] & W_HON) != 0 if a > 0 else empty_honorific
        if honorific and (bits[a] & S_HON):
            return NAME
        # _after_by: a run of at most three capitalised words joined to a preceding "by"
        k = a - 1
        while k >= 0 and a - k <= 3 and (bits[k + 1] & S_JOINED):
            if bits[k] & T_BY:
                return NAME
            if not (bits[k] & T_UPPER1):
                break
            k -= 1
        if team_like[s] and a > 0 and (bits[a] & S_JOINED) and (bits[a - 1] & T_UPPER1) and (wflags[wid[a - 1]] & W_CITY):
            return NAME  # a plural animal after a city: a team
        if a > 0 and (bits[a - 1] & T_CAMEL) and (bits[a] & S_JOINED) and b - a == 1:
            return NAME  # after a brand written in camel case (a one-word class)
        if style[0] < 0:
            n_alpha = 0
            n_caps = 0
            n_upper1 = 0
            for k in range(nt):
                if bits[k] & T_ALPHA1:
                    n_alpha += 1
                    if bits[k] & T_CAPS:
                        n_caps += 1
                    if bits[k] & T_UPPER1:
                        n_upper1 += 1
            n_alpha = max(1, n_alpha)
            style[0] = 1 if n_caps / n_alpha < 0.5 else 0
            style[1] = 1 if n_upper1 <= 0.34 * n_alpha else 0
        if style[0] == 1:
            all_caps = True
            for k in range(a, b):
                if not (bits[k] & T_CAPS):
                    all_caps = False
                    break
            if all_caps:
                return NAME
        if style[1] == 1 and a > 0 and (bits[a] & S_JOINED):
            neighbour_caps = (bits[a - 1] & T_UPPER1) != 0 or (
                b < nt and (bits[b] & T_UPPER1) != 0 and (bits[b] & S_JOINED) != 0
            )
            if not (bits[a] & S_SENT) and neighbour_caps:
                return NAME
    # 3. compounds WordNet knows (most words make none with any class lemma: no lookup)
    before = wid[a - 1] if a > 0 else -1
    after = wid[b] if b < nt else -1
    fb = _fact(facts, s, before) if before >= 0 and (wflags[before] & W_LEFT_ANY) else B_LK
    fa = _fact(facts, s, after) if after >= 0 and (wflags[after] & W_RIGHT_ANY) else B_RK
    missing = False
    if not (fb & B_LK):
        _ask(req, nreq, B_LK, s, before)
        missing = True
    if not (fa & B_RK):
        _ask(req, nreq, B_RK, s, after)
        missing = True
    if missing:
        return PENDING
    if (fb & (B_LK << 1)) or (fa & (B_RK << 1)):
        if before >= 0 and not (wflags[before] & W_LEFT_ANY):
            fb = _fact(facts, s, before)
        if after >= 0 and not (wflags[after] & W_RIGHT_ANY):
            fa = _fact(facts, s, after)
        other = 0
        if before >= 0:
            if not (fb & B_LH):
                _ask(req, nreq, B_LH, s, before)
                return PENDING
            if fb & (B_LH << 1):
                other = 1
        if other == 0 and after >= 0:
            if not (fa & B_RH):
                _ask(req, nreq, B_RH, s, after)
                return PENDING
            if fa & (B_RH << 1):
                other = 2
        if other == 1 and (bits[a] & S_JOINED):
            return MODIFIER
        if other == 2 and (bits[b] & S_JOINED):
            return MODIFIER
    # 4. modifier
    pos = b
    for rnd in range(2):
        head = _head_after(norm, ws, we, bits, wid, wflags, nt, pos, req, nreq)
        if head == -2:
            return PENDING
        if head < 0:
            return KEPT
        fh = wflags[head]
        if fh & W_SING_DEPICT:
            return KEPT
        if not (fh & W_COLL_KNOWN):
            _ask(req, nreq, Q_COLL, head, 0)
            return PENDING
        if fh & W_COLL:
            return KEPT
        if hyp_state[s] == 0:
            _ask(req, nreq, Q_HYPER, s, 0)
            return PENDING
        hyper = False
        for t in range(wsing.shape[1]):
            x = wsing[head, t]
            if x >= 0 and (wflags[x] & W_HYP_ANY) and (_fact(facts, s, x) & B_HYP):
                hyper = True
                break
        if hyper:
            if rnd == 0 and head == wid[pos]:
                pos += 1  # the hypernym completes the class's name ("cell phone"): what follows it
                continue
            return KEPT
        if not (fh & W_LIVING_KNOWN):
            _ask(req, nreq, Q_LIVING, head, 0)
            return PENDING
        if not (fh & W_LIVING):
            return MODIFIER  # no living thing is kindred to the class
        fk = _fact(facts, s, head)
        if not (fk & B_KIN):
            _ask(req, nreq, B_KIN, s, head)
            return PENDING
        if not (fk & (B_KIN << 1)):
            return MODIFIER
        return KEPT
    return KEPT


def _cascade_rows(
    raw, raw_off, norm, norm_off, grp_ptr, grp_row, m_start, m_end, m_sense, sp_ptr, sp_bits,
    words, blob, blob_off, wflags, wbase, wsing, facts, prof_state, hyp_state,
    plural_only, needs_ctx, needs_ctx_noun, team_like, empty_honorific, chars, reasons, req, nreq,
):
    """Decide the mentions of each group (one caption's, ``grp_ptr``): a reason code each, or
    PENDING for every mention of a caption that needs more from the tables (asked for in ``req``),
    or PYTHON for one whose mentions do not fall on its words.

    Words are read from the normalised buffer (as ``decide`` reads them); their case and the
    separators between them from the original, through the T_/S_ bits: computed here for plain
    ASCII captions, by Python (:func:`row_bits`, ``sp_bits[sp_ptr[g]:]``) for the others."""
    max_len = 1
    max_raw = 1
    max_grp = 1
    for g in range(len(grp_row)):
        r = grp_row[g]
        max_len = max(max_len, norm_off[r + 1] - norm_off[r])
        max_raw = max(max_raw, raw_off[r + 1] - raw_off[r])
        max_grp = max(max_grp, grp_ptr[g + 1] - grp_ptr[g])
    cap = max_len // 2 + 2
    ws = np.empty(cap, np.int64)
    we = np.empty(cap, np.int64)
    wid = np.empty(cap, np.int64)
    bits = np.empty(cap, np.int64)
    ma = np.empty(max_grp, np.int64)
    mb = np.empty(max_grp, np.int64)
    style = np.empty(2, np.int64)
    dec = np.empty(max_raw, np.uint8)
    for g in range(len(grp_row)):
        lo = grp_ptr[g]
        hi = grp_ptr[g + 1]
        r = grp_row[g]
        # the normalised caption's words (one space between, one pad each side)
        q0 = norm_off[r] + 1
        q1 = norm_off[r + 1] - 1
        nt = 0
        missing = False
        python = False
        j = q0
        while j < q1:
            h, e = _next_word(norm, j)
            w = _probe(words, blob, blob_off, norm, j, e, h)
            if w < 0 or not (wflags[w] & W_KNOWN):
                _ask_word(req, nreq, j, e, h)
                missing = True
            elif wflags[w] & W_PYTHON:
                python = True
            ws[nt] = j
            we[nt] = e
            wid[nt] = w
            nt += 1
            j = e + 1
        if sp_ptr[g] >= 0:
            for k in range(nt):
                bits[k] = sp_bits[sp_ptr[g] + k]
        else:
            p0 = raw_off[r]
            p1 = raw_off[r + 1]
            got = _ascii_bits(raw, p0, p1, norm, ws, we, bits, nt)
            if got == 0:
                got = _text_bits(raw, p0, p1, bits, nt, chars, False)
            if got == 2:
                n_dec = _unhtml(raw, p0, p1, dec)
                got = _text_bits(dec, 0, n_dec, bits, nt, chars, True) if n_dec >= 0 else 0
            if got != 1:
                _ask(req, nreq, Q_ROW, g, r)
                missing = True
        if python:
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
                if ws[k] - q0 == m_start[i]:
                    a = k
                if we[k] - q0 == m_end[i]:
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
                norm, ws, we, bits, wid, nt, ma[i - lo], mb[i - lo], m_sense[i], wflags, wbase, wsing, facts,
                plural_only, needs_ctx, needs_ctx_noun, team_like, prof_state, hyp_state, empty_honorific, style, req, nreq,
            )
            if got == PENDING:
                pending = True
            reasons[i] = got
        if pending:
            reasons[lo:hi] = PENDING
            continue
        # a word written once as a name is that name throughout its caption
        for i in range(lo, hi):
            if reasons[i] != NAME:
                continue
            for i2 in range(lo, hi):
                if reasons[i2] != KEPT or mb[i2 - lo] - ma[i2 - lo] != mb[i - lo] - ma[i - lo]:
                    continue
                same = True
                for t in range(mb[i - lo] - ma[i - lo]):
                    if wid[ma[i - lo] + t] != wid[ma[i2 - lo] + t]:
                        same = False
                        break
                if same:
                    reasons[i2] = NAME


def _insert_words(words, blob, blob_off, first, last):
    """Publish words first..last-1 (their bytes already in ``blob``): value, then key."""
    mask = len(words) - 1
    for i in range(first, last):
        h = _word_hash(blob, blob_off[i], blob_off[i + 1])
        slot = np.int64((h ^ (h >> np.uint64(29))) & np.uint64(mask))
        while words[slot, 0] != 0:
            slot = (slot + 1) & mask
        words[slot, 1] = np.uint64(i + 1)
        words[slot, 0] = h


def _insert_facts(facts, sense, wid, bits):
    """OR ``bits`` into the entries of (sense, word id), adding the missing ones (value, then
    key); returns how many were added."""
    mask = len(facts) - 1
    added = 0
    for n in range(len(sense)):
        key = ((np.uint64(sense[n]) + np.uint64(1)) << np.uint64(32)) | np.uint64(wid[n])
        h = key * _MUL
        h ^= h >> np.uint64(31)
        slot = np.int64(h & np.uint64(mask))
        while facts[slot, 0] != 0 and facts[slot, 0] != key:
            slot = (slot + 1) & mask
        if facts[slot, 0] == 0:
            facts[slot, 1] = np.uint64(bits[n])
            facts[slot, 0] = key
            added += 1
        else:
            facts[slot, 1] |= np.uint64(bits[n])
    return added


# ---------------------------------------------------------------------------------------------
# the tables, filled from Python


@functools.lru_cache(maxsize=1)
def _char_classes() -> np.ndarray:
    r"""C_ flags of every character below U+10000, from Python's own str methods: alphanumeric (a
    token character of ``[^\W_]+``), upper case, lower or title case (which make ``isupper``
    false), alphabetic, whitespace (what ``strip()`` removes)."""
    chars = np.arange(1 << 16, dtype=np.uint32).view("U1")  # every character, one array (numpy's
    # string functions call the same str methods, a few milliseconds for all; a loop takes 40)
    upper = np.char.isupper(chars)
    out = np.where(np.char.isalnum(chars), C_WORD, 0)
    out |= np.where(upper, C_UPPER, 0)
    out |= np.where(np.char.islower(chars) | (np.char.istitle(chars) & ~upper), C_LOWTITLE, 0)
    out |= np.where(np.char.isalpha(chars), C_ALPHA, 0)
    out |= np.where(np.char.isspace(chars), C_SPACE, 0)
    return out.astype(np.uint8)


def row_bits(caption: str, n_words: int) -> list[int]:
    """The T_/S_ bits of a caption's tokens as ``decide`` reads them (``_tokens``); where the
    original's words do not line up, ``decide`` reads no case and joins every word: so do these."""
    cased, seps = _tokens(caption, n_words)
    if cased is None:
        return [S_JOINED] * n_words
    if len(_TOKEN_BITS) > 1 << 16:
        _TOKEN_BITS.clear()
    if len(_SEP_BITS) > 1 << 12:
        _SEP_BITS.clear()
    out = []
    for w, sep in zip(cased, seps):
        t = _TOKEN_BITS.get(w)
        u = _SEP_BITS.get(sep)
        out.append((_token_bits(w) if t is None else t) | (_sep_bits(sep) if u is None else u))
    return out


_TOKEN_BITS: dict[str, int] = {}
_SEP_BITS: dict[str, int] = {}


def _token_bits(w: str) -> int:
    f = T_UPPER1 if w[:1].isupper() else 0
    f |= T_ALPHA1 if w[:1].isalpha() else 0
    f |= T_CAPS if w.isupper() and len(w) > 1 else 0
    f |= T_CAMEL if _CAMEL.search(w) else 0
    f |= T_BY if w.lower() == "by" else 0
    _TOKEN_BITS[w] = f
    return f


def _sep_bits(sep: str) -> int:
    f = S_JOINED if _joined(sep) else 0
    f |= S_HON if sep.strip(" ") in ("", ".") else 0
    f |= S_SENT if sep.strip().endswith((".", "!", "?", ":")) else 0
    f |= S_APOS if sep == "'" else 0
    _SEP_BITS[sep] = f
    return f


class _Tables:
    """One generation of the tables (a word table that starts over is a new generation)."""

    def __init__(self, n_senses: int) -> None:
        self.ids: dict[str, int] = {}
        self.words: list[str] = []
        self.blob_used = 0
        self.n_facts = 0
        self.table = np.zeros((1 << 12, 2), dtype=np.uint64)  # word hash, id + 1
        self.blob = np.zeros(1 << 15, dtype=np.uint8)
        self.blob_off = np.zeros((1 << 11) + 1, dtype=np.int64)
        self.wflags = np.zeros(1 << 11, dtype=np.int64)
        self.wbase = np.zeros(1 << 11, dtype=np.int64)
        self.wsing = np.full((1 << 11, N_SING), -1, dtype=np.int64)
        self.facts = np.zeros((1 << 14, 2), dtype=np.uint64)  # (sense + 1) << 32 | word id, bits
        self.prof_state = np.zeros(n_senses, dtype=np.uint8)
        self.hyp_state = np.zeros(n_senses, dtype=np.uint8)
        # what the loop reads, swapped whole (readers never see a grown array beside an old one)
        self.snapshot = self.arrays()

    def arrays(self) -> tuple:
        return (
            self.table, self.blob, self.blob_off, self.wflags, self.wbase, self.wsing, self.facts,
            self.prof_state, self.hyp_state,
        )


class CompiledCascade:
    """The compiled cascade of one matcher's :class:`~curate.match.disambiguate.SenseTable`:
    tables built as captions need them (never pickled with the matcher).

    ``store``: a file that keeps the tables between processes (the lexicon cache gives one per
    compiled matcher, keyed like it). Filling them from WordNet costs a fresh process seconds that
    matching a whole part file does not; what one run filled, the next loads (:meth:`save`, also
    run at exit). Every entry is a fact about a word or a sense, the same whichever run found it,
    so any saved generation is as good as a fresh one; writes are atomic, the last one wins."""

    def __init__(self, table, store=None) -> None:
        self.table = table
        self.lock = threading.Lock()
        self.plural_only = np.ascontiguousarray(table.plural_only, dtype=np.bool_)
        self.needs_ctx = np.ascontiguousarray(table.needs_context, dtype=np.bool_)
        self.needs_ctx_noun = np.ascontiguousarray(table.needs_context_noun, dtype=np.bool_)
        self.team_like = np.ascontiguousarray(table.team_like, dtype=np.bool_)
        self.store = store
        self.tables = self._load_store() or _Tables(len(self.plural_only))
        self._saved = self._size(self.tables)
        if store is not None:
            import atexit

            atexit.register(self.save)
        self.empty_honorific = "" in _word_sets()[1]
        # the words that make a WordNet noun with some class lemma: only those have a (sense, word)
        # compound fact worth looking up (SenseTable.compound_known is false for every other word)
        self._left_any = frozenset().union(*table.compounds_left.values())
        self._right_any = frozenset().union(*table.compounds_right.values())
        self.decided = 0  # mentions decided here, and left to decide(), so far
        self.left = 0

    # -- the store between processes -----------------------------------------------------------

    @staticmethod
    def _size(t: _Tables) -> tuple[int, int, int]:
        return (len(t.words), t.n_facts, int(t.wflags[: len(t.words)].sum()) + int(t.prof_state.sum()) + int(t.hyp_state.sum()))

    def _load_store(self) -> _Tables | None:
        if self.store is None or not self.store.is_file():
            return None
        import pickle

        try:
            with open(self.store, "rb") as f:
                t = pickle.load(f)
        except Exception:  # noqa: BLE001 - unreadable (cut short, older code): fill afresh
            return None
        if not isinstance(t, _Tables) or len(t.prof_state) != len(self.plural_only):
            return None
        return t

    def save(self) -> bool:
        """Write the tables to ``store`` when this process added to them; True when written."""
        if self.store is None:
            return False
        import pickle

        from curate.util import write_cache_entry

        with self.lock:
            t = self.tables
            if self._size(t) == self._saved:
                return False
            data = pickle.dumps(t, protocol=pickle.HIGHEST_PROTOCOL)
            self._saved = self._size(t)
        # beside it, the stores of other vocabularies and older code; a read-only cache: still
        # correct, only slower next time
        return write_cache_entry(self.store, data, keep=STORE_KEEP)

    # -- the loop ------------------------------------------------------------------------------

    def decide(
        self, captions, raw: np.ndarray, raw_off: np.ndarray, norm: np.ndarray, norm_off: np.ndarray,
        row: np.ndarray, start: np.ndarray, end: np.ndarray, sense: np.ndarray,
    ) -> np.ndarray:
        """Reason codes per mention (ordered by row), PYTHON where ``decide`` must answer.
        ``captions``: the batch (a polars Series), read only for captions with HTML or non-ASCII
        text; ``raw``/``raw_off`` its bytes, ``norm``/``norm_off`` the normalised buffer."""
        cascade_rows, _, _ = _load()
        n = len(row)
        reasons = np.full(n, PENDING, dtype=np.int8)
        cut = np.flatnonzero(row[1:] != row[:-1]) + 1
        grp_ptr = np.concatenate(([0], cut, [n])).astype(np.int64)
        grp_row = row[grp_ptr[:-1]].astype(np.int64)
        sp_ptr = np.full(len(grp_row), -1, dtype=np.int64)  # per group: its T_/S_ bits in sp_bits
        sp_bits = np.zeros(0, dtype=np.int64)
        todo = np.arange(len(grp_row), dtype=np.int64)  # groups still pending
        for _ in range(MAX_ROUNDS):
            t = self.tables
            snapshot = t.snapshot
            sub_ptr, sub_idx = _sub_groups(grp_ptr, todo)
            sub_reasons = np.empty(len(sub_idx), dtype=np.int8)
            rows = grp_row[todo]
            n_words = int((norm_off[rows + 1] - norm_off[rows]).sum()) // 2
            req = np.empty((n_words + len(sub_idx) * 4 + 64, 4), dtype=np.int64)
            nreq = np.zeros(1, dtype=np.int64)
            cascade_rows(
                raw, raw_off, norm, norm_off, sub_ptr, rows, start[sub_idx], end[sub_idx], sense[sub_idx],
                sp_ptr[todo], sp_bits, *snapshot, self.plural_only, self.needs_ctx, self.needs_ctx_noun, self.team_like,
                self.empty_honorific, _char_classes(), sub_reasons, req, nreq,
            )
            reasons[sub_idx] = sub_reasons
            still = sub_reasons[sub_ptr[:-1]] == PENDING
            req = req[: min(int(nreq[0]), len(req))]
            rows_asked = req[req[:, 0] == Q_ROW]
            if len(rows_asked):
                # captions with HTML or non-ASCII text: their bits as decide's tokeniser reads them
                groups = todo[rows_asked[:, 1]]
                texts = captions.gather(rows_asked[:, 2]).to_list()
                new: list[int] = []
                for g, r, text in zip(groups.tolist(), rows_asked[:, 2].tolist(), texts):
                    body = norm[norm_off[r] + 1 : norm_off[r + 1] - 1]
                    sp_ptr[g] = len(sp_bits) + len(new)
                    new += row_bits(text or "", int(np.count_nonzero(body == 32)) + 1 if len(body) else 0)
                sp_bits = np.concatenate([sp_bits, np.asarray(new, dtype=np.int64)])
            todo = todo[still]
            if not len(todo):
                break
            self._fill(t, norm, req)
        reasons[reasons == PENDING] = PYTHON
        left = int(np.count_nonzero(reasons == PYTHON))
        self.decided += n - left
        self.left += left
        return reasons

    # -- filling the tables --------------------------------------------------------------------

    def _fill(self, t: _Tables, norm: np.ndarray, req: np.ndarray) -> None:
        words = req[req[:, 0] == Q_WORD]
        if len(words):
            words = words[np.unique(words[:, 3], return_index=True)[1]]  # each distinct word once
        req = req[(req[:, 0] != Q_ROW) & (req[:, 0] != Q_WORD)]
        req = np.concatenate([words, np.unique(req, axis=0)]) if len(req) else words
        if not len(req):
            return
        with self.lock:
            if t is not self.tables:
                return  # the table started over meanwhile: the next round asks again
            if len(t.words) > MAX_WORDS or t.n_facts > MAX_FACTS:
                self.tables = _Tables(len(self.plural_only))
                return
            try:
                self._fill_locked(t, norm, req)
            finally:
                t.snapshot = t.arrays()

    def _fill_locked(self, t: _Tables, norm: np.ndarray, req: np.ndarray) -> None:
        kind = req[:, 0]
        words = sorted({norm[a:b].tobytes().decode("utf-8") for a, b in req[kind == Q_WORD, 1:3]})
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
        for w in req[kind == Q_LIVING, 1].tolist():
            if not t.wflags[w] & W_LIVING_KNOWN:
                t.wflags[w] |= W_LIVING_KNOWN | (W_LIVING if _is_living(t.words[w]) else 0)
        facts = req[np.isin(kind, (B_LK, B_RK, B_LH, B_RH, B_KIN))]
        if len(facts):
            ask = {B_LK: self._left_known, B_RK: self._right_known, B_LH: self._left_other,
                   B_RH: self._right_other, B_KIN: self.table.kindred}
            bits = np.array(
                [k | (k << 1 if ask[k](s, t.words[w]) else 0) for k, s, w in facts[:, :3].tolist()], dtype=np.int64
            )
            self._add_facts(t, facts[:, 1], facts[:, 2], bits)

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
            grown = last >= len(t.wflags) or need_bytes > len(t.blob) or 2 * last > len(t.table)
            if grown:
                self._copy(t, n_words=last, n_bytes=need_bytes)
            for k, (w, e) in enumerate(zip(new, encoded)):
                i = first + k
                t.blob[t.blob_used : t.blob_used + len(e)] = np.frombuffer(e, dtype=np.uint8)
                t.blob_used += len(e)
                t.blob_off[i + 1] = t.blob_used
                t.wbase[i] = i
                t.ids[w] = i
                t.words.append(w)
            insert_words(t.table, t.blob, t.blob_off, first, last)  # last: the keys publish the words
        return [t.ids[w] for w in words]

    def _copy(self, t: _Tables, *, n_words: int = 0, n_bytes: int = 0, n_facts: int = 0) -> None:
        """Every array copied, large enough for ``n_words`` words of ``n_bytes`` bytes and
        ``n_facts`` facts: the snapshot that readers hold is never written again, so what they
        read stays consistent (a fact moved to a new table never shows through a shared flag)."""
        _, insert_words, insert_facts = _load()

        def size(have: int, need: int) -> int:
            while have < need:
                have *= 2
            return have

        n = len(t.words)
        words = size(len(t.wflags), n_words + 1)
        for name, fill in (("wflags", 0), ("wbase", 0), ("wsing", -1)):
            a = getattr(t, name)
            b = np.full((words, *a.shape[1:]), fill, dtype=a.dtype)
            b[:n] = a[:n]
            setattr(t, name, b)
        blob = np.zeros(size(len(t.blob), n_bytes), dtype=np.uint8)
        blob[: t.blob_used] = t.blob[: t.blob_used]
        off = np.zeros(words + 1, dtype=np.int64)
        off[: n + 1] = t.blob_off[: n + 1]
        t.blob, t.blob_off = blob, off
        t.table = np.zeros((size(len(t.table), 2 * max(n, n_words) + 2), 2), dtype=np.uint64)
        insert_words(t.table, t.blob, t.blob_off, 0, n)
        live = t.facts[t.facts[:, 0] != 0]
        t.facts = np.zeros((size(len(t.facts), 2 * max(len(live), n_facts) + 2), 2), dtype=np.uint64)
        insert_facts(
            t.facts, (live[:, 0] >> np.uint64(32)).astype(np.int64) - 1,
            (live[:, 0] & np.uint64(0xFFFFFFFF)).astype(np.int64), live[:, 1].astype(np.int64),
        )
        t.prof_state = t.prof_state.copy()
        t.hyp_state = t.hyp_state.copy()

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
            flags |= W_LEFT_ANY if w in self._left_any else 0
            flags |= W_RIGHT_ANY if w in self._right_any else 0
            flags |= W_CITY if w in self.table.cities else 0
            rows.append((base, forms, flags))
        ids = self._ids(t, [x for w, (base, forms, _) in zip(words, rows) for x in (w, base, *forms)])
        pos = 0
        for _base, forms, flags in rows:
            i, b = ids[pos], ids[pos + 1]
            sing = ids[pos + 2 : pos + 2 + len(forms)]
            pos += 2 + len(forms)
            if t.wflags[i] & W_KNOWN:
                continue
            t.wbase[i] = b
            t.wsing[i, : min(len(sing), N_SING)] = sing[:N_SING]
            t.wflags[i] |= flags  # last: the flags publish the word's features

    def _add_facts(self, t: _Tables, sense: np.ndarray, wid: np.ndarray, bits: np.ndarray) -> None:
        _, _, insert_facts = _load()
        sense, wid, bits = (np.ascontiguousarray(x, dtype=np.int64) for x in (sense, wid, bits))
        if 2 * (t.n_facts + len(sense)) > len(t.facts):
            self._copy(t, n_facts=t.n_facts + len(sense))
        t.n_facts += int(insert_facts(t.facts, sense, wid, bits))

    def _add_set(self, t: _Tables, bit: int, flag: int, sense: int, words) -> None:
        ids = np.asarray(self._ids(t, sorted(words)), dtype=np.int64)
        if len(ids):
            self._add_facts(t, np.full(len(ids), sense), ids, np.full(len(ids), bit))
            t.wflags[ids] |= flag  # after the facts: a flagged word's facts are there

    def _add_profile(self, t: _Tables, sense: int) -> None:
        if t.prof_state[sense]:
            return
        prof = self.table.profile(sense)
        if prof is not None:
            self._add_set(t, B_CTX, W_CTX_ANY, sense, prof.context)
        t.prof_state[sense] = 1 if prof is not None else 2

    def _add_hypernyms(self, t: _Tables, sense: int) -> None:
        if t.hyp_state[sense]:
            return
        self._add_set(t, B_HYP, W_HYP_ANY, sense, self.table.hypernym_words(sense))
        t.hyp_state[sense] = 1


def _is_living(word: str) -> bool:
    """Whether some noun sense of ``word`` is an animal or a plant: only those can be kindred to a
    class (:meth:`SenseTable.kindred` is false for every other word)."""
    from curate.wordnet import wordnet

    with WORDNET_LOCK:
        return any(x.lexname() in _KIN for x in wordnet().synsets(word, "n"))


def _sub_groups(grp_ptr: np.ndarray, todo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mentions of groups ``todo`` laid end to end: their group offsets and mention indices."""
    counts = grp_ptr[todo + 1] - grp_ptr[todo]
    ptr = np.zeros(len(todo) + 1, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    idx = np.repeat(grp_ptr[todo] - ptr[:-1], counts) + np.arange(ptr[-1], dtype=np.int64)
    return ptr, idx
