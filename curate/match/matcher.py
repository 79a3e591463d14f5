"""The compiled matcher: a vocabulary's surface forms found in one pass, longest match, negative
context, label policies and spans."""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import pyarrow as pa

from curate.errors import CurateError
from curate.match import cascade, kernels
from curate.match.disambiguate import DROP_REASONS, KEPT, VETO, SenseTable, decide, sense_table
from curate.match.forms import _QUALIFIER, _irregular_normalised, surface_forms
from curate.match.kernels import WordTable, _word_kernels
from curate.match.normalise import arrow_series, normalise_many, normalised_buffer, raw_buffer
from curate.match.rules import BLOCKED_LEMMAS, NEGATIVE_RULES, STOP_FORMS, NegativeRule

POLICIES = ("all", "drop", "first")
_CASCADE_LOCK = threading.Lock()

LABELS_DTYPE = pl.List(pl.Int32)
SPANS_DTYPE = pl.List(
    pl.Struct({"label": pl.Int32, "start": pl.Int32, "end": pl.Int32, "surface": pl.Utf8, "reason": pl.Utf8})
)

@dataclass
class Mentions:
    """Accepted mentions of one batch, one entry per (mention, class), ordered by row then position."""

    row: np.ndarray  # int64, index into the batch
    label: np.ndarray  # int32
    start: np.ndarray  # int64, byte offset of the word in the normalised, unpadded caption
    end: np.ndarray  # int64
    pattern: np.ndarray  # int64, index into Matcher.patterns
    sense: np.ndarray | None = None  # int64, index into Matcher.sense_label
    reason: np.ndarray | None = None  # int8, DROP_REASONS code (0: kept)

    def select(self, keep: np.ndarray) -> Mentions:
        return Mentions(
            row=self.row[keep], label=self.label[keep], start=self.start[keep], end=self.end[keep],
            pattern=self.pattern[keep],
            sense=None if self.sense is None else self.sense[keep],
            reason=None if self.reason is None else self.reason[keep],
        )


def _csr(lists: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    ptr = np.zeros(len(lists) + 1, dtype=np.int64)
    ptr[1:] = np.cumsum([len(x) for x in lists])
    vals = np.fromiter((v for x in lists for v in x), dtype=np.int64, count=int(ptr[-1]))
    return ptr, vals


def _expand(ptr: np.ndarray, vals: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each key k, the entries vals[ptr[k]:ptr[k+1]]: (position of k in keys, value)."""
    counts = ptr[keys + 1] - ptr[keys]
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    which = np.repeat(np.arange(len(keys), dtype=np.int64), counts)
    first = np.repeat(ptr[keys] - np.concatenate(([0], np.cumsum(counts)[:-1])), counts)
    return which, vals[first + np.arange(total, dtype=np.int64)]



def _find(automaton, data: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All (overlapping) matches of ``automaton`` in the buffer: pattern, start, end, row."""
    lo, hi = int(offsets[0]), int(offsets[-1])
    found = automaton.find_matches_as_indexes(data[lo:hi], overlapping=True) if hi > lo else []
    if not found:
        z = np.zeros(0, dtype=np.int64)
        return z, z, z, z
    # fromiter over the flattened tuples: about twice as fast as np.array on a list of tuples
    hits = np.fromiter(itertools.chain.from_iterable(found), dtype=np.int64, count=3 * len(found)).reshape(-1, 3)
    pid, start, end = hits[:, 0], hits[:, 1] + lo, hits[:, 2] + lo
    row = np.searchsorted(offsets, start, side="right") - 1
    inside = end <= offsets[row + 1]  # never false for space-padded rows; a guard
    if not inside.all():
        pid, start, end, row = pid[inside], start[inside], end[inside], row[inside]
    return pid, start, end, row


def _sorted_unique(keys: np.ndarray) -> np.ndarray:
    keys = np.sort(keys)  # unique keys: no order among equals to keep
    if len(keys) < 2:
        return keys
    return keys[np.concatenate(([True], keys[1:] != keys[:-1]))]


def _automaton(patterns: list[str]):
    import ahocorasick_rs

    # a full DFA searches fastest while it stays small; past ~20k patterns (imagenet21k) it costs
    # seconds to build and searches no faster than the contiguous NFA
    impl = ahocorasick_rs.Implementation.DFA if len(patterns) < 20_000 else ahocorasick_rs.Implementation.ContiguousNFA
    return ahocorasick_rs.BytesAhoCorasick(
        [p.encode("utf-8") for p in patterns], matchkind=ahocorasick_rs.MatchKind.Standard, implementation=impl
    )


@dataclass
class Matcher:
    """A vocabulary compiled for matching: patterns, the automata and the tables behind them.

    Surface forms and context words live in two automata: context words are looked for only in
    the few captions whose mentions some rule could veto, so common context words ("hair", "car")
    cost nothing on the rest.
    """

    n_classes: int
    patterns: list[str]  # " form " (padded), one per distinct surface form
    sense_label: np.ndarray  # int32: a sense is one (surface form, class) pair
    pat_sense_ptr: np.ndarray
    pat_sense: np.ndarray
    context: list[str]  # " word " (padded) context words
    ctx_veto_ptr: np.ndarray
    ctx_veto: np.ndarray  # senses vetoed when this context word occurs in the caption
    surfaces: pl.DataFrame = field(repr=False)  # label, lemma, surface: what can match, for inspection
    sense_table: SenseTable | None = field(default=None, repr=False)
    disambiguate: bool = True
    _automata: list = field(default_factory=list, repr=False)
    _cascade: list = field(default_factory=list, repr=False)

    @property
    def automaton(self):
        """The surface-form matcher: a :class:`WordTable` with numba, else the Aho–Corasick
        automaton of the padded patterns (the context automaton is built alongside)."""
        if not self._automata:
            table = WordTable(self.patterns) if _word_kernels() is not None else None
            forms = table if table is not None and table.ok else _automaton(self.patterns)
            self._automata.extend([forms, _automaton(self.context) if self.context else None])
        return self._automata[0]

    def warm_up(self) -> None:
        """Build the automata and run every compiled loop once on a tiny batch (numba compiles,
        or loads its cache, on the first call)."""
        _ = self.automaton
        self.mentions(pl.Series(["Warm-up: a café &amp; <b>crane</b>", "", None], dtype=pl.Utf8))

    def _find_forms(self, data: np.ndarray, offsets: np.ndarray):
        forms = self.automaton
        if not isinstance(forms, WordTable):
            return _find(forms, data, offsets)
        if kernels.COMPILED:
            return forms.find(data, offsets)
        if len(self._automata) < 3:
            self._automata.append(_automaton(self.patterns))
        return _find(self._automata[2], data, offsets)

    def __post_init__(self) -> None:
        self._vetoable = np.zeros(len(self.sense_label), dtype=bool)
        self._vetoable[self.ctx_veto] = True

    def mentions(self, captions: pl.Series) -> Mentions:
        """Every accepted mention in a batch of raw captions (after longest-match, vetoes and the
        disambiguation cascade)."""
        m = self.candidates(captions)
        return m.select(m.reason == KEPT)

    def candidates(self, captions: pl.Series) -> Mentions:
        """Every candidate mention that survives longest-match, with its decision in ``reason``
        (``curate.match.disambiguate.DROP_REASONS``)."""
        data, offsets = normalised_buffer(captions)
        m = self._mentions(data, offsets)
        if self.disambiguate and len(m.row):
            todo = np.flatnonzero(m.reason == KEPT)
            if len(todo):
                if not (m.row[todo][1:] >= m.row[todo][:-1]).all():  # the cascade reads a caption's mentions together
                    todo = todo[np.argsort(m.row[todo], kind="stable")]
                m.reason[todo] = self._decide(captions, data, offsets, m.row[todo], m.start[todo], m.end[todo], m.sense[todo])
        return m

    def _decide(self, captions: pl.Series, data: np.ndarray, offsets: np.ndarray, row, start, end, sense) -> np.ndarray:
        """The cascade's reason per mention (ordered by row): the compiled loop where it reads the
        caption, :func:`~curate.match.disambiguate.decide` for the rest."""
        if cascade.enabled():
            if not self._cascade:
                with _CASCADE_LOCK:
                    if not self._cascade:
                        store = getattr(self, "cascade_store", None)  # set by the lexicon cache
                        self._cascade.append(cascade.CompiledCascade(self.sense_table, store=store))
            s = captions if captions.dtype == pl.Utf8 else captions.cast(pl.Utf8)
            raw, raw_off = raw_buffer(s)
            reasons = self._cascade[0].decide(s, raw, raw_off, data, offsets, row, start, end, sense)
            left = np.flatnonzero(reasons == cascade.PYTHON)
        else:
            reasons = np.zeros(len(row), dtype=np.int8)
            left = np.arange(len(row))
        if len(left):
            ordered = row[left]  # by row: its distinct values in order (np.unique imports numpy.ma, 12 ms)
            rows = ordered[np.flatnonzero(np.diff(ordered, prepend=-1))]
            norm_rows = {int(r): data[offsets[r] + 1 : offsets[r + 1] - 1].tobytes() for r in rows}
            keys = rows.tolist()  # a list: polars makes a Series of a numpy array through numpy.ma
            raw_of = dict(zip(keys, captions.gather(keys).to_list()))
            reasons[left] = decide(raw_of, row[left], start[left], end[left], sense[left], self.sense_table, norm_rows)
        return reasons

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_automata"] = []  # built per process (numba's tables, automata), never pickled
        state["_cascade"] = []  # likewise the compiled cascade's tables
        return state

    def _mentions(self, data: np.ndarray, offsets: np.ndarray) -> Mentions:
        pid, start, end, row = self._find_forms(data, offsets)
        keep = _longest(start, end)
        pid, start, end, row = pid[keep], start[keep], end[keep], row[keep]
        w, sense = _expand(self.pat_sense_ptr, self.pat_sense, pid)
        row_w = row[w]

        reason = np.zeros(len(sense), dtype=np.int8)
        vetoable = self._vetoable[sense] if len(sense) else np.zeros(0, dtype=bool)
        if vetoable.any():
            rows_v = _sorted_unique(row_w[vetoable])
            # the context automaton runs over just those captions, laid end to end
            lengths = offsets[rows_v + 1] - offsets[rows_v]
            sub_offsets = np.concatenate(([0], np.cumsum(lengths)))
            gather = np.repeat(offsets[rows_v] - sub_offsets[:-1], lengths) + np.arange(sub_offsets[-1])
            cp, _, _, crow = _find(self._automata[1], data[gather], sub_offsets)
            cw, csense = _expand(self.ctx_veto_ptr, self.ctx_veto, cp)
            if len(cw):
                n_senses = np.int64(len(self.sense_label))
                veto_keys = _sorted_unique(rows_v[crow[cw]] * n_senses + csense)
                # only vetoable senses can be vetoed: look up just those mentions
                at = np.flatnonzero(vetoable)
                keys = row_w[at] * n_senses + sense[at]
                pos = np.minimum(np.searchsorted(veto_keys, keys), len(veto_keys) - 1)
                ok = np.ones(len(sense), dtype=bool)
                ok[at] = veto_keys[pos] != keys
                reason[~ok] = VETO
        base = offsets[row_w] + 1  # the padding space
        return Mentions(
            row=row_w,
            label=self.sense_label[sense],
            start=start[w] + 1 - base,
            end=end[w] - 1 - base,
            pattern=pid[w],
            sense=sense,
            reason=reason,
        )

    def labels(self, captions: pl.Series, *, policy: str = "all") -> pl.Series:
        return labels_from_mentions(self.mentions(captions), len(captions), self.n_classes, policy=policy)


def _longest(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Indices of the mentions that survive longest-match-wins (see :func:`_longest_all`).

    Most mentions overlap nothing; only the clusters that do are sorted and resolved.
    """
    m = len(start)
    if m < 2:
        return np.arange(m, dtype=np.int64)
    order = None
    if not (end[1:] >= end[:-1]).all():  # the automaton reports by end position; make sure
        order = np.argsort(end, kind="stable")
        start, end = start[order], end[order]
    # in end order, a mention overlaps some earlier one iff it overlaps its predecessor (whose end
    # is the largest so far); word cores are [start+1, end-1)
    hit = np.flatnonzero(start[1:] + 1 < end[:-1] - 1) + 1
    if len(hit) == 0:
        keep = np.arange(m, dtype=np.int64)
    else:
        # the earlier mentions i overlaps form the block [first, i]
        first = np.searchsorted(end, start[hit] + 2, side="right")
        mark = np.zeros(m + 1, dtype=np.int64)
        np.add.at(mark, first, 1)
        np.add.at(mark, hit + 1, -1)
        involved = np.cumsum(mark[:-1]) > 0
        inv = np.flatnonzero(involved)
        kept = inv[_longest_all(start[inv], end[inv])]
        keep = np.sort(np.concatenate((np.flatnonzero(~involved), kept)))
    return keep if order is None else order[keep]


def _longest_all(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Indices of the mentions that survive longest-match-wins, in (start, -end) order.

    Spans include the padding spaces, so neighbouring words share one byte; word cores are
    [start+1, end-1). A mention inside an earlier-starting or longer one is dropped; of two that
    cross, the longer stays (the earlier on a tie).
    """
    if len(start) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((-end, start))
    s, e = start[order], end[order]
    prev_end = np.concatenate(([np.iinfo(np.int64).min], np.maximum.accumulate(e)[:-1]))
    contained = e <= prev_end
    order, s, e = order[~contained], s[~contained], e[~contained]
    prev_end = np.concatenate(([np.iinfo(np.int64).min], e[:-1]))
    crossing = np.flatnonzero(s + 1 < prev_end - 1)
    if len(crossing) == 0:
        return order
    alive = np.ones(len(order), dtype=bool)
    for i in crossing:  # rare: two multi-word mentions sharing a word
        j = i - 1
        while j >= 0 and not alive[j]:
            j -= 1
        if j < 0 or not (s[i] + 1 < e[j] - 1):
            continue
        if (e[i] - s[i]) > (e[j] - s[j]):
            alive[j] = False
        else:
            alive[i] = False
    return order[alive]


_NUMPY_TYPES = {pa.int32(): np.int32, pa.int64(): np.int64}


def _arrow(values: np.ndarray, kind: pa.DataType) -> pa.Array:
    """A numpy array as an Arrow array over the same memory (``pa.array`` would import pandas,
    see :func:`~curate.match.normalise.arrow_series`)."""
    values = np.ascontiguousarray(values, dtype=_NUMPY_TYPES[kind])
    return pa.Array.from_buffers(kind, len(values), [None, pa.py_buffer(values)])


def _list_series(offsets: np.ndarray, values: np.ndarray, name: str = "labels") -> pl.Series:
    arr = pa.LargeListArray.from_arrays(_arrow(offsets, pa.int64()), _arrow(values, pa.int32()))
    return arrow_series(name, arr, LABELS_DTYPE)


def labels_from_mentions(m: Mentions, n_rows: int, n_classes: int, *, policy: str) -> pl.Series:
    """The ``labels`` column for ``n_rows`` captions from their mentions, under ``policy``."""
    check_policy(policy)
    if policy == "first":
        order = np.lexsort((m.label, m.start, m.row))
        rows_sorted = m.row[order]
        first = np.flatnonzero(np.concatenate(([True], rows_sorted[1:] != rows_sorted[:-1]))) if len(order) else order
        rows, labels = rows_sorted[first], m.label[order][first]
    else:
        keys = _sorted_unique(m.row * np.int64(n_classes) + m.label.astype(np.int64))
        rows, labels = keys // n_classes, keys % n_classes
        if policy == "drop":
            counts = np.bincount(rows, minlength=n_rows)
            single = counts[rows] == 1
            rows, labels = rows[single], labels[single]
    counts = np.bincount(rows, minlength=n_rows)
    offsets = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return _list_series(offsets, labels.astype(np.int32))


def spans_from_mentions(m: Mentions, n_rows: int, patterns: list[str]) -> pl.Series:
    """One list per caption of {label, start, end, surface, reason}: byte offsets into the
    normalised, unpadded caption (``normalise(caption).strip()``), in order of position; ``reason``
    is ``kept`` or why the candidate was dropped (``DROP_REASONS``)."""
    order = np.lexsort((m.label, m.start, m.row))
    rows = m.row[order]
    counts = np.bincount(rows, minlength=n_rows)
    offsets = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    surf = np.array([p.strip() for p in patterns], dtype=object)
    struct = pa.StructArray.from_arrays(
        [
            _arrow(m.label[order], pa.int32()),
            _arrow(m.start[order], pa.int32()),
            _arrow(m.end[order], pa.int32()),
            # strings through polars: pa.array on Python strings imports pandas
            pl.Series(surf[m.pattern[order]].tolist() if len(order) else [], dtype=pl.Utf8).to_arrow(),
            pl.Series(
                _REASON_NAMES[m.reason[order]].tolist() if m.reason is not None and len(order) else ["kept"] * len(order),
                dtype=pl.Utf8,
            ).to_arrow(),
        ],
        names=["label", "start", "end", "surface", "reason"],
    )
    arr = pa.LargeListArray.from_arrays(_arrow(offsets, pa.int64()), struct)
    return arrow_series("spans", arr, SPANS_DTYPE)


_REASON_NAMES = np.array(DROP_REASONS, dtype=object)


def check_policy(policy: str) -> None:
    if policy not in POLICIES:
        raise CurateError(f"--policy {policy!r} is not one of {', '.join(POLICIES)}")


def check_vocab(vocab: pl.DataFrame) -> None:
    missing = [c for c in ("label", "lemmas") if c not in vocab.columns]
    if missing:
        raise CurateError(f"vocabulary table lacks column(s) {', '.join(missing)} (has {', '.join(vocab.columns)})")
    if vocab.height == 0:
        raise CurateError("vocabulary is empty")
    labels = vocab["label"].to_list()
    if sorted(labels) != list(range(len(labels))):
        raise CurateError(f"vocabulary 'label' must be 0..{len(labels) - 1}, each once")


def _vocab_key(vocab: pl.DataFrame) -> tuple:
    cols = [c for c in ("label", "wnid", "lemmas", "negatives") if c in vocab.columns]
    return tuple(tuple(map(lambda v: tuple(v) if isinstance(v, list) else v, vocab[c].to_list())) for c in cols)


_CACHE: dict[tuple, Matcher] = {}


def compile_matcher(
    vocab: pl.DataFrame, *, rules: dict[str, NegativeRule] | None = None, disambiguate: bool = True
) -> Matcher:
    """Compile ``vocab`` into a :class:`Matcher` (cached per vocabulary contents)."""
    check_vocab(vocab)
    rules = NEGATIVE_RULES if rules is None else rules
    key = (_vocab_key(vocab), id(rules) if rules is not NEGATIVE_RULES else 0, disambiguate)
    if key in _CACHE:
        return _CACHE[key]

    labels = vocab["label"].to_list()
    wnids = vocab["wnid"].to_list() if "wnid" in vocab.columns else [None] * len(labels)
    lemma_lists = [[_QUALIFIER.sub("", lem).strip() for lem in (ls or [])] for ls in vocab["lemmas"].to_list()]
    negs = vocab["negatives"].to_list() if "negatives" in vocab.columns else [[] for _ in labels]

    wnid_set = set(wnids)
    rule_words = [w for k, r in rules.items() if k in wnid_set for w in (*r.context, *r.lemmas)]
    rule_words += [w for k, b in BLOCKED_LEMMAS.items() if k in wnid_set for w in b]
    rule_words += [w for ns in negs for w in (ns or ())]
    norm_of = normalise_many([lem for ls in lemma_lists for lem in ls if lem] + rule_words)
    irregular = _irregular_normalised()
    forms_of: dict[str, list[str]] = {}

    pattern_id: dict[str, int] = {}
    sense_label: list[int] = []
    sense_lemma: list[str] = []
    pat_senses: list[list[int]] = []
    surf_rows: dict[str, list] = {"label": [], "lemma": [], "surface": []}

    def pid_of(form: str) -> int:
        if form not in pattern_id:
            pattern_id[form] = len(pattern_id)
            pat_senses.append([])
        return pattern_id[form]

    senses_of_class_lemma: dict[tuple[int, str], list[int]] = {}
    spelling = {(label, norm_of[lem]): lem for label, ls in zip(labels, lemma_lists) for lem in ls if norm_of.get(lem)}
    for label, wnid, lemmas in zip(labels, wnids, lemma_lists):
        blocked = {norm_of[b] for b in BLOCKED_LEMMAS.get(wnid or "", ())}
        for lemma in lemmas:
            norm = norm_of.get(lemma, "")
            if not norm or norm in blocked:
                continue
            if norm not in forms_of:
                forms_of[norm] = surface_forms(norm, irregular)
            for form in forms_of[norm]:
                if len(form) < 2 or form in STOP_FORMS:
                    continue
                p = pid_of(form)
                if any(sense_label[s] == label for s in pat_senses[p]):
                    continue  # two lemmas of one class sharing a form: one sense
                sid = len(sense_label)
                sense_label.append(label)
                sense_lemma.append(norm)
                pat_senses[p].append(sid)
                senses_of_class_lemma.setdefault((label, norm), []).append(sid)
                surf_rows["label"].append(label)
                surf_rows["lemma"].append(norm)
                surf_rows["surface"].append(form)

    # vetoes: context pattern -> senses it cancels; the (class, lemma) pairs a rule speaks for
    ruled: set[tuple[int, str]] = set()
    ctx_id: dict[str, int] = {}
    ctx_vetoes: list[set[int]] = []
    for label, wnid, lemmas, extra in zip(labels, wnids, lemma_lists, negs):
        class_lemmas = {norm_of.get(lem, "") for lem in lemmas} - {""}
        rule_list: list[tuple[tuple[str, ...], set[str]]] = []
        rule = rules.get(wnid or "")
        if rule is not None:
            targets = {norm_of[x] for x in rule.lemmas} & class_lemmas if rule.lemmas else class_lemmas
            rule_list.append((rule.context, targets))
        if extra:
            rule_list.append((tuple(extra), class_lemmas))
        for context, targets in rule_list:
            vetoed = [s for t in targets for s in senses_of_class_lemma.get((label, t), [])]
            if not vetoed:
                continue
            ruled.update((label, t) for t in targets)
            own_forms = {f for t in targets for f in forms_of.get(t, ())}
            for word in context:
                w = norm_of[word]
                if not w or w in own_forms:  # a class's own surface forms never veto it
                    continue
                if w not in ctx_id:
                    ctx_id[w] = len(ctx_id)
                    ctx_vetoes.append(set())
                ctx_vetoes[ctx_id[w]].update(vetoed)

    patterns = [f" {form} " for form in pattern_id]
    if not patterns:
        raise CurateError("no lemma of the vocabulary has a matchable form (all are empty after normalisation)")
    sense_ptr, sense_vals = _csr(pat_senses)
    veto_ptr, veto_vals = _csr([sorted(v) for v in ctx_vetoes])
    matcher = Matcher(
        n_classes=len(labels),
        patterns=patterns,
        sense_label=np.asarray(sense_label, dtype=np.int32),
        pat_sense_ptr=sense_ptr,
        pat_sense=sense_vals,
        context=[f" {w} " for w in ctx_id],
        ctx_veto_ptr=veto_ptr,
        ctx_veto=veto_vals,
        surfaces=pl.DataFrame(surf_rows, schema={"label": pl.Int32, "lemma": pl.Utf8, "surface": pl.Utf8}),
        sense_table=sense_table(
            np.asarray(sense_label, dtype=np.int32), sense_lemma, surf_rows["surface"], wnids, spelling, ruled
        )
        if disambiguate
        else None,
        disambiguate=disambiguate,
    )
    if len(_CACHE) > 8:
        _CACHE.clear()
    _CACHE[key] = matcher
    return matcher

