"""What WordNet 3.0 says about words, for telling a class mention from a look-alike.

- **Part of speech by use** (:func:`pos_table`): for every single word in WordNet, how often
  SemCor tagged it as a noun and as a verb, adjective or adverb (``cntlist.rev``), and which parts
  of speech it has at all (``index.*``). A word counts as a noun when most of its tagged uses are
  nouns, or, untagged, when it is only a noun. Read straight from the dict files (no nltk).
- **SemCor sense counts** by sense key (:func:`sense_counts`, :func:`lemma_count`), which
  :mod:`curate.match.disambiguate` compares to decide whether a class sense is a lemma's common use.
- **Sense context** (:func:`sense_profile`): the words that speak for one class sense in a caption:
  the synset's single-word lemmas, the nouns of its gloss, its hypernyms (three levels), hyponyms
  (two levels), sister terms, parts and wholes. Computed with nltk's reader, when first needed.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

from curate.match.rules import STOP_FORMS, disambiguation_rules
from curate.wordnet import find_wordnet_dir

_POS_OF_SS_TYPE = {"1": "n", "2": "v", "3": "a", "4": "r", "5": "a"}


@dataclass(frozen=True)
class WordPos:
    noun_tags: int
    other_tags: int  # verbs, adjectives and adverbs
    noun: int  # number of noun senses
    other: int  # number of verb, adjective and adverb senses
    proper: bool = False  # every noun sense is a proper name (Istanbul, Turkey the country aside)
    verb_tags: int = 0
    verb: int = 0  # number of verb senses

    @property
    def is_verb(self) -> bool:
        """Used mostly as a verb ("buy", "review"): a word that ends a noun compound."""
        if self.noun_tags + self.other_tags:
            return self.verb_tags > max(self.noun_tags, self.other_tags - self.verb_tags)
        return self.verb > self.noun and self.verb >= self.other - self.verb

    @property
    def is_noun(self) -> bool:
        """Used mostly as a noun: by SemCor's tags, or, untagged, by having only noun senses."""
        if self.noun_tags != self.other_tags:
            return self.noun_tags > self.other_tags
        return self.noun > 0 and self.noun >= self.other


class _PosTable(dict):
    """Single words -> :class:`WordPos`, held as plain tuples (they load from disk ten times faster
    than the objects) and wrapped when looked up."""

    def __getitem__(self, word: str) -> WordPos:
        return WordPos(*dict.__getitem__(self, word))

    def get(self, word: str, default=None):
        got = dict.get(self, word)
        return default if got is None else WordPos(*got)


@functools.lru_cache(maxsize=1)
def pos_table() -> dict[str, WordPos]:
    """Single words (lower case) -> :class:`WordPos`, from WordNet's index files and SemCor counts.

    Parsed once (a second) and kept in the cache folder, keyed by the WordNet files and this
    module's code; every later process loads it in a few hundredths of a second."""
    import hashlib
    import pickle

    from curate.util import cache_dir, write_cache_entry

    root = find_wordnet_dir()
    files = [root / f for f in ("index.noun", "index.verb", "index.adj", "index.adv", "data.noun", "cntlist.rev")]
    key = hashlib.sha256(Path(__file__).read_bytes())
    for f in files:
        st = f.stat() if f.is_file() else None
        key.update(f"{f.name}:{st.st_size if st else -1}:{st.st_mtime_ns if st else -1};".encode())
    path = cache_dir() / "wordnet-pos" / f"{key.hexdigest()[:24]}.pickle"
    try:
        with open(path, "rb") as fh:
            got = pickle.load(fh)
        if isinstance(got, dict):
            return _PosTable(got)
    except Exception:  # noqa: BLE001 - missing or unreadable (cut short, older code): parse afresh
        pass
    table = _parse_pos_table(root)
    write_cache_entry(path, pickle.dumps(table, protocol=pickle.HIGHEST_PROTOCOL), keep=2)  # read-only: parsed each time
    return _PosTable(table)


def _parse_pos_table(root: Path) -> dict[str, tuple]:
    """:func:`pos_table`'s entries as tuples of :class:`WordPos`'s fields, read from the dict files."""
    senses: dict[str, list[int]] = {}
    for pos, name in (("n", "noun"), ("v", "verb"), ("a", "adj"), ("r", "adv")):
        with open(root / f"index.{name}", encoding="utf-8") as f:
            for line in f:
                if line.startswith(" "):
                    continue
                parts = line.split(" ", 3)
                word = parts[0]
                if "_" not in word:
                    slot = senses.setdefault(word, [0, 0, 0])
                    slot[0 if pos == "n" else 1] += int(parts[2])
                    if pos == "v":
                        slot[2] += int(parts[2])
    # nouns spelled with a capital in every synset they are in: proper names
    capital: dict[str, bool] = {}
    with open(root / "data.noun", encoding="utf-8") as f:
        for line in f:
            if line.startswith(" "):
                continue
            parts = line.split(" ")
            for k in range(int(parts[3], 16)):
                lemma = parts[4 + 2 * k]
                if "_" in lemma:
                    continue
                low = lemma.lower()
                capital[low] = capital.get(low, True) and lemma[:1].isupper()
    tags: dict[str, list[int]] = {}
    path = root / "cntlist.rev"
    if path.is_file():
        with open(path, encoding="utf-8") as f:
            for line in f:
                key, _, count = line.split()
                lemma, _, rest = key.partition("%")
                if "_" in lemma:
                    continue
                slot = tags.setdefault(lemma, [0, 0, 0])
                pos = _POS_OF_SS_TYPE.get(rest[:1])
                slot[0 if pos == "n" else 1] += int(count)
                if pos == "v":
                    slot[2] += int(count)
    out = {}
    for word, (n_senses, o_senses, v_senses) in senses.items():
        n, o, v = tags.get(word, (0, 0, 0))
        out[word] = (n, o, n_senses, o_senses, capital.get(word, False), v, v_senses)
    return out


@functools.lru_cache(maxsize=1)
def noun_lemmas() -> frozenset[str]:
    """Every noun lemma of WordNet, lower case, words joined by underscores ("gas_mask")."""
    with open(find_wordnet_dir() / "index.noun", encoding="utf-8") as f:
        return frozenset(line.split(" ", 1)[0] for line in f if not line.startswith(" "))


def compound_partners(lemmas) -> tuple[dict[str, frozenset[str]], dict[str, frozenset[str]]]:
    """For each of ``lemmas`` (lower case, words joined by underscores), the words that make a
    WordNet noun lemma with it, spaced or joined: before it ("gas" + mask: ``gas_mask``; "sea" +
    lion: ``sealion``) and after it (mask + "gas"). Read once when a matcher is compiled, so a run
    answers "is this a WordNet compound?" without reading WordNet's 117,000 noun lemmas."""
    want = set(lemmas)
    left: dict[str, set[str]] = {}
    right: dict[str, set[str]] = {}
    for noun in noun_lemmas():
        for j in range(1, len(noun)):
            tail, head = noun[j:], noun[:j]
            if tail in want:
                word = head[:-1] if head.endswith("_") else head
                if word and "_" not in word:
                    left.setdefault(tail, set()).add(word)
            if head in want:
                word = tail[1:] if tail.startswith("_") else tail
                if word and "_" not in word:
                    right.setdefault(head, set()).add(word)
    return ({k: frozenset(v) for k, v in left.items()}, {k: frozenset(v) for k, v in right.items()})


@functools.lru_cache(maxsize=1)
def sense_counts() -> dict[str, int]:
    """SemCor tag counts by WordNet sense key (``cntlist.rev``); empty where the file is missing."""
    path = find_wordnet_dir() / "cntlist.rev"
    out: dict[str, int] = {}
    if path.is_file():
        with open(path, encoding="utf-8") as f:
            for line in f:
                key, _, count = line.split()
                out[key] = out.get(key, 0) + int(count)
    return out


def lemma_count(lemma) -> int:
    """SemCor's count for an nltk ``Lemma`` (nltk's own ``Lemma.count`` is not thread-safe)."""
    return sense_counts().get(lemma.key(), 0)


@functools.lru_cache(maxsize=1)
def _plural_bases() -> dict[str, str]:
    """Irregular plural -> singular (``noun.exc``), single words only."""
    out = {}
    with open(find_wordnet_dir() / "noun.exc", encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and "_" not in parts[0]:
                out.setdefault(parts[0], parts[1])
    return out


@functools.lru_cache(maxsize=1 << 18)
def noun_base(word: str) -> str | None:
    """The WordNet noun a word is, or is the plural of (``chairs`` -> ``chair``), else None."""
    table = pos_table()
    entry = table.get(word)
    if entry is not None and entry.noun:
        return word
    base = _plural_bases().get(word)
    if base is not None and base in table:
        return base
    return next(_regular_singulars(word), None)


def _regular_singulars(word: str):
    """The WordNet nouns ``word`` is a regular plural of ("ies" -> "y", "es", "s"), in that order."""
    table = pos_table()
    for suffix, repl in (("ies", "y"), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            cand = word[: -len(suffix)] + repl
            e = table.get(cand)
            if e is not None and e.noun:
                yield cand


@functools.lru_cache(maxsize=1 << 18)
def singular_forms(word: str) -> frozenset[str]:
    """``word`` and the nouns it may be the plural of ("shades" -> shades, shade)."""
    base = noun_base(word)
    return frozenset({word, *([base] if base else []), *_regular_singulars(word)})


@functools.lru_cache(maxsize=1 << 18)
def is_verb(word: str, *, only: bool = False) -> bool:
    """Whether ``word`` is used mostly as a verb; ``only``: and never tagged as a noun."""
    entry = pos_table().get(word)
    return entry is not None and entry.is_verb and not (only and entry.noun_tags)


@functools.lru_cache(maxsize=1 << 18)
def is_participle(word: str) -> bool:
    """An "-ing" form read as a verb: its verb is tagged more often in SemCor than the "-ing" noun
    ("playing", "grazing", "lifting"; not "wedding", "training", "clothing")."""
    if not word.endswith("ing") or len(word) < 6:
        return False
    table = pos_table()
    stem = word[:-3]
    stems = [stem, stem + "e"] + ([stem[:-1]] if len(stem) > 2 and stem[-1] == stem[-2] else [])
    verb_tags = max((table[x].verb_tags + (table[x].verb > 0) for x in stems if x in table), default=0)
    own = table.get(word)
    return verb_tags > (own.noun_tags if own else 0)


@functools.lru_cache(maxsize=1 << 18)
def is_proper(word: str) -> bool:
    entry = pos_table().get(word)
    return entry is not None and entry.proper


@functools.lru_cache(maxsize=1 << 18)
def split_compound(word: str) -> tuple[str, str] | None:
    """A closed compound of two WordNet nouns that WordNet itself lacks ("keychain" -> key, chain;
    "keychains" too); both parts must be WordNet words used mostly as nouns."""
    table = pos_table()
    if len(word) < 6 or not word.isalpha() or word in table:
        return None
    for k in range(3, len(word) - 2):
        a, b = word[:k], word[k:]
        if b not in table and b.endswith("s") and b[:-1] in table:
            b = b[:-1]
        ea, eb = table.get(a), table.get(b)
        if ea and eb and len(b) >= 3 and ea.is_noun and eb.is_noun and not ea.proper and not eb.proper:
            return a, b
    return None


@functools.lru_cache(maxsize=1 << 18)
def can_head(word: str) -> bool:
    """Whether ``word`` can head a compound after a class word: a noun (plurals included), or a
    word SemCor has seen as a noun at least as often as as an adjective ("review", "project";
    not "white", "mute")."""
    if is_noun(word):
        return True
    e = pos_table().get(word)
    if e is None or not e.noun or e.proper:
        return False
    adj_tags = e.other_tags - e.verb_tags
    return e.noun_tags > 0 and e.noun_tags >= adj_tags


@functools.lru_cache(maxsize=1 << 18)
def is_noun(word: str) -> bool:
    """Whether ``word`` (lower case) is used mostly as a noun, plurals included."""
    entry = pos_table().get(word)
    if entry is not None:
        return entry.is_noun and not entry.proper
    base = noun_base(word)
    if base is None:
        return False
    e = pos_table().get(base)
    if e is None:
        return False
    # a regular plural of a noun ("chairs"); a verb's third person ("walks") is as likely as the
    # plural only when the base is mostly a verb
    return not e.proper and (e.noun_tags >= e.other_tags or not e.other)


@dataclass(frozen=True)
class SenseProfile:
    context: frozenset[str]  # words that speak for this sense


_WORD = re.compile(r"[a-z0-9]+")
# WordNet's most general nouns: in every hypernym chain, evidence of nothing
_GENERIC = frozenset(
    """entity physical object whole unit thing artifact artefact part piece item matter being organism
    living abstraction instrumentality device structure construction group kind sort type form way
    something someone person people use used usually especially often various several any one two
    made make having large small long short like also commonly consisting containing the and for with
    from that this which who what other their its his her our your into onto upon within without""".split()
)


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("_", " "))


def sense_profile(wn, synset, lemma_name: str) -> SenseProfile:
    """The :class:`SenseProfile` of ``lemma_name`` (WordNet spelling, underscores) in ``synset``."""
    context: set[str] = set()

    def add_synset(s, *, gloss: bool = False) -> None:
        for name in s.lemma_names():
            if "_" not in name:  # a multi-word lemma's words ("card index") say little alone
                context.update(_words(name))
        if gloss:
            context.update(w for w in _words(s.definition()) if is_noun(w))

    add_synset(synset, gloss=True)
    frontier = [synset]
    for _ in range(3):
        frontier = [h for s in frontier for h in s.hypernyms() + s.instance_hypernyms()]
        for h in frontier:
            add_synset(h)
    for h in synset.hypernyms():
        for sister in h.hyponyms():
            add_synset(sister)
    frontier = [synset]
    for _ in range(2):
        frontier = [h for s in frontier for h in s.hyponyms() + s.instance_hyponyms()]
        for h in frontier:
            add_synset(h)
    for rel in (synset.part_meronyms(), synset.member_meronyms(), synset.part_holonyms(), synset.member_holonyms(), synset.substance_holonyms()):
        for s in rel:
            add_synset(s)
    own_words = set(_words(lemma_name))
    context = {noun_base(w) or w for w in context if len(w) > 2 and w not in _GENERIC and w not in own_words}
    context -= _GENERIC
    context -= STOP_FORMS
    context -= frozenset(disambiguation_rules()["function_words"])
    return SenseProfile(context=frozenset(context))
