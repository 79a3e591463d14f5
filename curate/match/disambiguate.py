"""Which candidate mentions stand: the cascade that runs after the compiled matcher.

Finding a lemma is only a candidate. On real web alt-text most candidates are not the class, and
the cascade below decides, per mention, on evidence from WordNet and from the caption itself. It
runs only on the captions that hold a candidate; every decision has a reason (``DROP_REASONS``).

1. ``sense`` — the word is mostly used for something else. From SemCor's sense counts (WordNet's
   ``cntlist.rev``) across nouns, verbs and adjectives, the class sense must be the lemma's most
   tagged one; a near sense of the same kind (the handbag beside the money purse) counts as a
   look-alike unless it is another class of the vocabulary. A plural, or a word after a
   determiner or number, is read as a noun (verb and adjective senses do not compete). Untagged,
   only a first sense that is no physical thing (a person, an act) competes. A class that a
   negative rule guards keeps its vetoes unless SemCor is sure. Otherwise the mention stands only
   with positive context in the caption (:func:`curate.match.lexicon.sense_profile`). A surface
   form that is only this class's *plural* while another class has it as a lemma of its own
   ("sunglasses") goes to that class.
2. ``name`` — part of a name: after an honorific ("Dr.", "Miss") or, for a one-word class, a
   camel-case brand ("FreeAgent Desk"; "DaVinci Chocolate Sauce" is the sauce); written in
   capitals inside a caption that is not, or capitalised beside capitalised words inside a caption
   written in lower case; a capitalised plural animal after a city: a team ("Detroit Tigers",
   "Boston Bruins"; "Venice Gondolas" and "Alaska Brown Bears" stay). A word written once as a
   name is that name throughout its caption.
3. ``modifier`` — the class word names part of another thing: a compound WordNet knows that is not
   a kind of the class ("gasmask" for mask, "tank top", "ski slope"; a compound ending in the
   class word that WordNet files beside the class, under its hypernym, is: "throw pillow"), or a
   head-final compound: the class word followed (across spaces and hyphens only) by up to three
   words whose last noun is another thing ("phone case", "leopard print"). The mention stands when
   that head is a depiction ("tiger photo", "zebra art print", and the web's "goldfish vector",
   "owl png"), a collection ("pajama set"), one of the class's hypernyms ("sneakers shoes"; one
   that completes the class's name is read past: "cell phone case" is a case) or a kindred animal
   or plant ("sorrel mare"; foods are never kindred: "pineapple shoulder"); verbs, participles,
   possessives, proper names, audience and size words ("Socks Mens") end the compound; a physical
   thing before a depiction keeps the modification ("leopard gecko photo"); a class word joined by
   "and" to a word that itself modifies a noun shares that head ("wool and silk knit sweater").

Words are read from the original caption (HTML decoded), so case and punctuation count; where the
original's words do not line up with the normalised text's (rare Unicode cases), the normalised
words are used without case or punctuation evidence.
"""

from __future__ import annotations

import functools
import html
import re
import threading
from dataclasses import dataclass, field

import numpy as np

from curate.match.lexicon import (
    can_head,
    compound_partners,
    is_noun,
    is_participle,
    is_proper,
    is_verb,
    lemma_count,
    noun_base,
    sense_profile,
    singular_forms,
    split_compound,
)
from curate.match.rules import disambiguation_rules

DROP_REASONS = ("kept", "veto", "sense", "name", "modifier")
KEPT, VETO, SENSE, NAME, MODIFIER = range(len(DROP_REASONS))

_TOKEN = re.compile(r"[^\W_]+")
_CAMEL = re.compile(r"[a-z][A-Z]")
_HTML_TAG = re.compile(r"<[A-Za-z/!][^<>]*>")
# nltk's WordNet reader shares open files between threads, and polars runs batches on several:
# every WordNet lookup after compiling goes through this lock (re-entrant: lookups nest)
WORDNET_LOCK = threading.RLock()


@dataclass
class SenseTable:
    """Per sense (one surface form of one class) of a compiled matcher: what the cascade needs."""

    needs_context: np.ndarray  # bool, the word read with all its parts of speech
    needs_context_noun: np.ndarray  # bool, the word read as a noun (plural, after a determiner)
    plural_only: np.ndarray  # bool: the form is this class's plural and another class's lemma
    team_like: np.ndarray  # bool: a plural of an animal class, as teams are named ("Tigers")
    synset_name: list  # the WordNet synset's name per sense ("tiger.n.02"), or None
    lemma_of: list[str]  # the WordNet spelling of the sense's lemma
    # per lemma (lower case): the words that make a WordNet noun with it, before and after it
    compounds_left: dict = field(default_factory=dict)
    compounds_right: dict = field(default_factory=dict)
    cities: frozenset = frozenset()  # city_words(): a plural animal after one is a team

    _profiles: dict = field(default_factory=dict, repr=False)
    _hypernyms: dict = field(default_factory=dict, repr=False)
    _compounds: dict = field(default_factory=dict, repr=False)
    _kindred: dict = field(default_factory=dict, repr=False)

    # Plain values only (names, strings, sets), so a compiled matcher pickles into the lexicon
    # cache; the synsets themselves are looked up under WORDNET_LOCK when a question first needs them.
    def synset_of(self, sense: int):
        name = self.synset_name[sense]
        if name is None:
            return None
        from curate.wordnet import wordnet

        return wordnet().synset(name)

    def profile(self, sense: int):
        """The :class:`~curate.match.lexicon.SenseProfile` of a sense (built on first use)."""
        got = self._profiles.get(sense)
        if got is None and self.synset_name[sense] is not None:
            from curate.wordnet import wordnet

            with WORDNET_LOCK:
                got = sense_profile(wordnet(), self.synset_of(sense), self.lemma_of[sense])
            self._profiles[sense] = got
        return got

    def compound_elsewhere(self, sense: int, before: str | None, after: str | None) -> str | None:
        """"left"/"right" when the word before/after the mention makes with it a WordNet noun lemma
        that is neither the class nor a kind of it ("gas mask" for the mask class), else None."""
        key = (sense, before, after)
        got = self._compounds.get(key, 0)
        if got != 0:
            return got
        got = None
        if self.compound_known(sense, before, "left") or self.compound_known(sense, after, "right"):
            if self.compound_other(sense, before, "left"):
                got = "left"
            elif self.compound_other(sense, after, "right"):
                got = "right"
        self._compounds[key] = got
        return got

    def compound_known(self, sense: int, word: str | None, side: str) -> bool:
        """Whether ``word`` on ``side`` ("left"/"right") of the mention spells with its lemma a
        WordNet noun lemma, with or without a space (the cheap test before
        :meth:`compound_other`)."""
        lemma = self.lemma_of[sense]
        if not word or not lemma or self.synset_name[sense] is None:
            return False
        partners = self.compounds_left if side == "left" else self.compounds_right
        return word in partners.get(lemma.lower(), ())

    def compound_other(self, sense: int, word: str | None, side: str) -> bool:
        """Whether ``word`` on ``side`` of the mention makes with it a WordNet noun that is neither
        the class nor a kind of it (function words make none)."""
        lemma = self.lemma_of[sense]
        if not word or not lemma or self.synset_name[sense] is None or word in _function_words():
            return False
        compounds = (f"{word}_{lemma}", f"{word}{lemma}") if side == "left" else (f"{lemma}_{word}", f"{lemma}{word}")
        from curate.wordnet import wordnet

        wn = wordnet()
        with WORDNET_LOCK:
            s = self.synset_of(sense)
            for compound in compounds:
                found = wn.synsets(compound, "n")
                if found and not any(
                    x == s or s in x.closure(lambda y: y.hypernyms()) or _kindred(x, s) or (side == "left" and _sister(x, s))
                    for x in found
                ):
                    return True
        return False

    def kindred(self, sense: int, head: str) -> bool:
        """Whether ``head`` names a living thing of the class's own kind ("sorrel mare", "german
        shepherd puppy", "drake mallard"; see :func:`_kindred`)."""
        key = (sense, head)
        got = self._kindred.get(key)
        if got is None:
            got = False
            if self.synset_name[sense] is not None:
                from curate.wordnet import wordnet

                with WORDNET_LOCK:
                    s = self.synset_of(sense)
                    got = any(_kindred(h, s) for h in wordnet().synsets(head, "n"))
            self._kindred[key] = got
        return got

    def hypernym_words(self, sense: int) -> frozenset[str]:
        """The words of every hypernym of a sense's synset ("sneaker" -> shoe, footwear, ...)."""
        got = self._hypernyms.get(sense)
        if got is None:
            out: set[str] = set()
            if self.synset_name[sense] is not None:
                with WORDNET_LOCK:
                    for h in self.synset_of(sense).closure(lambda x: x.hypernyms()):
                        for name in h.lemma_names():
                            out.update(name.lower().split("_"))
            got = self._hypernyms[sense] = frozenset(out)
        return got


def sense_table(
    sense_label: np.ndarray, sense_lemma: list[str], sense_form: list[str], wnids: list, lemma_spelling: dict,
    ruled: set[tuple[int, str]] = frozenset(),
) -> SenseTable:
    """Build the :class:`SenseTable` for the senses of a matcher (``sense_lemma`` normalised,
    ``lemma_spelling`` maps (label, normalised lemma) to the vocabulary's spelling)."""
    from curate.wordnet import wnid_synset, wordnet

    wn = wordnet()
    n = len(sense_label)
    needs = np.zeros(n, dtype=bool)
    needs_noun = np.zeros(n, dtype=bool)
    plural_only = np.zeros(n, dtype=bool)
    team_like = np.zeros(n, dtype=bool)
    synsets: list = [None] * n
    lemmas: list[str] = [""] * n
    lemma_forms: dict[str, set[int]] = {}
    for s in range(n):
        lemma_forms.setdefault(sense_lemma[s], set()).add(int(sense_label[s]))
    rivals = frozenset(x for x in (wnid_synset(wn, w) for w in set(wnids) if str(w or "")[:1] == "n") if x is not None)
    cache: dict[tuple, tuple] = {}
    for s in range(n):
        label = int(sense_label[s])
        form = sense_form[s]
        if form != sense_lemma[s] and any(other != label for other in lemma_forms.get(form, ())):
            plural_only[s] = True
        wnid = wnids[label]
        if not wnid or not str(wnid).startswith("n") or not str(wnid)[1:].isdigit():
            continue
        spelled = lemma_spelling.get((label, sense_lemma[s]), sense_lemma[s]).replace(" ", "_")
        is_ruled = (label, sense_lemma[s]) in ruled
        key = (wnid, spelled, is_ruled)
        if key not in cache:
            synset = wnid_synset(wn, wnid)
            if synset is None:  # an id that is not a WordNet 3.0 noun offset: no sense evidence
                cache[key] = (None, False, False)
            else:
                cache[key] = (
                    synset,
                    _needs_context(wn, synset, spelled, ruled=is_ruled, rivals=rivals),
                    _needs_context(wn, synset, spelled, nouns_only=True, ruled=is_ruled, rivals=rivals),
                )
        synsets[s], needs[s], needs_noun[s] = cache[key]
        if form != sense_lemma[s]:  # a plural is a noun
            needs[s] = needs_noun[s]
            team_like[s] = synsets[s] is not None and synsets[s].lexname() == "noun.animal"
        lemmas[s] = spelled
    left, right = compound_partners({lem.lower() for lem, syn in zip(lemmas, synsets) if lem and syn is not None})
    return SenseTable(
        needs_context=needs, needs_context_noun=needs_noun, plural_only=plural_only, team_like=team_like,
        synset_name=[x.name() if x is not None else None for x in synsets], lemma_of=lemmas,
        compounds_left=left, compounds_right=right, cities=city_words(wn),
    )


def _needs_context(
    wn, synset, lemma_name: str, *, nouns_only: bool = False, ruled: bool = False, rivals: frozenset = frozenset()
) -> bool:
    """Whether a mention through ``lemma_name`` needs positive context to stand for ``synset``:
    when the class is not the lemma's most frequent sense in SemCor (ties stand), or, untagged,
    when the lemma is also a verb or adjective, or its first noun sense is neither the class nor a
    part, whole, kind or genus of it. ``nouns_only``: the caption uses the word as a noun (a plural,
    or after a determiner or number), so verb and adjective senses do not compete. ``ruled``: a
    negative-context rule of the class already separates its senses; only SemCor's own tags
    (``min_tagged`` or more) overrule it. ``rivals``: the synsets of the vocabulary's other classes."""
    lemmas = wn.lemmas(lemma_name)
    if not any(lem.synset() == synset for lem in lemmas):
        # a display name or spelling of the vocabulary's own ("mountain" for alp): its choice
        return False
    # a lemma that is also another noun's plural ("shades") carries that noun's senses too
    for base in singular_forms(lemma_name.lower()) - {lemma_name.lower()}:
        lemmas = lemmas + [lem for lem in wn.lemmas(base) if lem.synset().pos() == "n"]
    if nouns_only:
        lemmas = [lem for lem in lemmas if lem.synset().pos() == "n"]
    # senses that are names ("Crane" the poet, "Drake" the rapper) are the name step's business
    lemmas = [lem for lem in lemmas if not lem.name()[:1].isupper() or lem.synset() == synset]
    if len({lem.synset() for lem in lemmas}) == 1:
        return False
    counts: dict = {}
    for lem in lemmas:
        counts[lem.synset()] = counts.get(lem.synset(), 0) + lemma_count(lem)
    if sum(counts.values()) >= disambiguation_rules()["min_tagged"]:
        top = max(counts, key=lambda x: (counts[x], x == synset))
        if counts.get(synset, 0) >= counts[top]:
            return False
        # a near sense ("purse" the handbag beside the money bag: both bags) names a look-alike,
        # unless it is another class of the vocabulary, which the word then belongs to
        return top in rivals or not (top in _related(synset) or set(_up(top, 2)) & set(_up(synset, 2)))
    if ruled:
        return False
    if sum(counts.values()) and counts.get(synset, 0) >= max(counts.values()):
        return False  # the few tags there are agree with the class
    nouns = [lem.synset() for lem in lemmas if lem.synset().pos() == "n"]
    if not nouns:
        return True
    first = nouns[0]
    if first == synset or first in _related(synset) or _kindred(first, synset):
        return False
    if first in rivals:
        return True  # the word's first sense is another class of the vocabulary
    # Untagged, WordNet's order of senses is its editors' guess at use. A first sense that is no
    # thing at all (a person, an act, an idea) makes the class sense need evidence; so does, for a
    # single word, a physical thing of another kind (a freight car before the Venetian boat, a
    # water scooter before the motor scooter). Look-alikes stand: things that share a genus within
    # three levels (the two pajamas), and a plant or animal beside the food it is (the mushroom
    # that grows, the mushroom that is cooked). A multi-word lemma is a name chosen for the thing
    # already; the order of its rare senses ("red fox" the weed) says nothing about use.
    if synset.lexname() not in _THINGS:
        return False
    if first.lexname() not in _THINGS:
        return True
    if "_" in lemma_name or "-" in lemma_name:
        return False
    if {first.lexname(), synset.lexname()} in _SAME_THING:
        return False
    return not set(_up(first, 3)) & set(_up(synset, 3))


def _up(synset, levels: int) -> list:
    out, frontier = [], [synset]
    for _ in range(levels):
        frontier = [h for x in frontier for h in x.hypernyms()]
        out.extend(frontier)
    return out


_KIN = frozenset({"noun.animal", "noun.plant"})  # what can be kindred (_kindred): not foods
# a living thing and the food made of it: WordNet keeps them apart, a photo shows the one thing
_SAME_THING = ({"noun.plant", "noun.food"}, {"noun.animal", "noun.food"})


def _kindred(a, b) -> bool:
    """Two living things of one kind, three levels up at most: a mare and a sorrel horse, a puppy
    and a shepherd dog, a drake and a mallard. Artifacts share hypernyms as broad as "garment" or
    "covering" within three levels, so they are never kindred; nor are foods, which make dishes
    of each other ("butternut squash risotto", "lemon tart" are the dish)."""
    if a.lexname() not in _KIN or b.lexname() != a.lexname():
        return False
    return bool(set(_up(a, 3)) & set(_up(b, 3)))


def _sister(compound, synset) -> bool:
    """Whether a compound ending in the class's word ("throw pillow" for pillow) is a sister of the
    class in WordNet (a kind of its direct hypernym: a throw pillow and a pillow are both cushions):
    English compounds are head-final, so it is still that thing."""
    parents = set(synset.hypernyms())
    return bool(parents) and any(h in parents for h in compound.hypernyms())


def _related(synset) -> set:
    out = set()
    for rel in (
        synset.hypernyms(), synset.hyponyms(), synset.part_holonyms(), synset.part_meronyms(),
        synset.substance_holonyms(), synset.substance_meronyms(), synset.member_holonyms(),
    ):
        out.update(rel)
    for h in synset.hypernyms():  # sister senses: kinds of one thing ("bobsled" the sled, and the sled pair)
        out.update(h.hyponyms())
    return out


def city_words(wn) -> frozenset[str]:
    """The single words WordNet knows only as names of places, one of them a city (``team_places``
    of the rules file): "detroit", "boston"; not "buffalo", also an animal, nor "bengal", a region.
    WordNet's reader reads a plural as its noun ("bostons"), so the names' plurals, by the reader's
    own rules, are tested too. Read once when a matcher is compiled (the names of the cities'
    instances and their plurals, each checked), so a run asks no WordNet reader about the words
    it meets."""
    from curate.wordnet import plural_exceptions

    with WORDNET_LOCK:
        roots = {wn.synset(k) for k in disambiguation_rules()["team_places"]}
        kinds, frontier = set(roots), list(roots)
        while frontier:
            for h in frontier.pop().hyponyms():
                if h not in kinds:
                    kinds.add(h)
                    frontier.append(h)
        names = {n.lower() for k in kinds for x in k.instance_hyponyms() for n in x.lemma_names()}
        irregular = plural_exceptions()
        words = set()
        for name in names:
            words.add(name)
            words.update(_noun_inflections(wn, name))
            words.update(irregular.get(name, ()))
        out = set()
        for word in words:
            if len(word) < 3 or not word.isalnum():
                continue
            found = wn.synsets(word, "n")
            if found and all(x.instance_hypernyms() for x in found) and any(
                h in roots or roots & set(h.closure(lambda y: y.hypernyms())) for x in found for h in x.instance_hypernyms()
            ):
                out.add(word)
    return frozenset(out)


def _noun_inflections(wn, base: str) -> set[str]:
    """The words WordNet's reader (nltk's ``morphy``) may read as the noun ``base``: its own noun
    suffix rules (``-s``, ``-ses``, ``-ies``, ``-men``...) run backwards."""
    return {base[: len(base) - len(new)] + old for old, new in wn.MORPHOLOGICAL_SUBSTITUTIONS["n"] if base.endswith(new)}


@functools.lru_cache(maxsize=4096)
def _is_collection(word: str) -> bool:
    """A head that groups things of the class ("pajama set", "jewelry sets", "sock pairs"): its first
    noun senses are kinds of a ``collection`` synset of the rules file."""
    from curate.wordnet import wordnet

    wn = wordnet()
    with WORDNET_LOCK:
        roots = {wn.synset(k) for k in disambiguation_rules()["collections"]}
        for form in sorted(singular_forms(word)):
            for syn in wn.synsets(form, "n")[:2]:
                if syn in roots or roots & set(syn.closure(lambda x: x.hypernyms())):
                    return True
    return False


_THINGS = frozenset({"noun.animal", "noun.artifact", "noun.plant", "noun.food", "noun.object", "noun.body"})


@functools.lru_cache(maxsize=65536)
def _is_thing(word: str) -> bool:
    """Whether a noun's most frequent sense is a physical thing (an animal, artifact, plant, food,
    natural object or body part), not a place, quality or abstraction ("gecko", not "jungle")."""
    from curate.wordnet import wordnet

    base = noun_base(word) or word
    with WORDNET_LOCK:
        found = wordnet().synsets(base, "n")
        return bool(found) and found[0].lexname() in _THINGS


def _function_words() -> frozenset[str]:
    return _word_sets()[2]


@functools.lru_cache(maxsize=1)
def _word_sets() -> tuple[frozenset[str], ...]:
    rules = disambiguation_rules()
    # the words of the depiction lemmas (listed as WordNet lemma keys beside them, for provenance)
    depiction = set(rules["depiction"]) | set(rules["depiction_web"])
    return (
        frozenset(depiction),
        frozenset(rules["honorifics"]),
        frozenset(rules["function_words"]),
        frozenset(rules["coordinators"]),
        frozenset(rules["qualifiers"]),
        frozenset(rules["determiners"]),
    )


def _tokens(raw: str, n_words: int) -> tuple[list[str] | None, list[str] | None]:
    """(original-case words, separator before each word), or (None, None) where the original's
    words do not line up with the normalised caption's ``n_words`` words."""
    text = html.unescape(raw) if ("&" in raw or "<" in raw) else raw
    if "<" in text:
        text = _HTML_TAG.sub(" ", text)
    cased = _TOKEN.findall(text)
    if len(cased) != n_words:
        return None, None
    return cased, _TOKEN.split(text)[:-1]


def _joined(sep: str | None) -> bool:
    """Whether two words separated by ``sep`` can belong to one compound (spaces, hyphens,
    underscores and slashes of file names; not commas, colons, dashes between spaces, brackets)."""
    if sep is None:
        return True
    s = sep.strip(" ")
    return s in ("", "-", "_", "'") and not (s == "-" and sep != "-")


def _is_capitalised(w: str) -> bool:
    return w[:1].isupper()


def decide(
    captions: dict[int, str | None],
    row: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    sense: np.ndarray,
    table: SenseTable,
    norm_rows: dict[int, bytes],
) -> np.ndarray:
    """A reason code (``DROP_REASONS``) per mention: ``KEPT`` or why it was dropped.

    ``start``/``end`` are byte offsets into the normalised, unpadded caption whose bytes
    ``norm_rows[row]`` holds."""
    words_of = _word_sets()
    depiction, honorifics, function_words, coordinators, qualifiers, determiners = words_of
    reasons = np.zeros(len(row), dtype=np.int8)
    by_row: dict[int, list[int]] = {}
    for i, r in enumerate(row.tolist()):
        by_row.setdefault(r, []).append(i)
    for r, idx in by_row.items():
        norm = norm_rows[r]
        words = norm.decode("utf-8").split()
        cased, seps = _tokens(captions[r] or "", len(words))
        caption_nouns = None
        case_style = None
        for i in idx:
            s = int(sense[i])
            a = norm.count(b" ", 0, int(start[i]))
            b = a + norm.count(b" ", int(start[i]), int(end[i])) + 1  # words [a, b)
            # 1. sense
            if table.plural_only[s]:
                reasons[i] = SENSE
                continue
            as_noun = a > 0 and (words[a - 1] in determiners or words[a - 1].isdigit())
            if table.needs_context_noun[s] if as_noun else table.needs_context[s]:
                prof = table.profile(s)
                if caption_nouns is None:
                    caption_nouns = {noun_base(w) or w for w in words} | set(words)
                own = set(words[a:b])
                if prof is None or not ((prof.context - own) & caption_nouns):
                    reasons[i] = SENSE
                    continue
            # 2. name
            if cased is not None and cased[a][:1].isupper():
                prev = cased[a - 1].lower() if a > 0 else ""
                if prev in honorifics and seps[a].strip(" ") in ("", "."):
                    reasons[i] = NAME
                    continue
                if _after_by(cased, seps, a):
                    # a maker's or author's name: "painting by Jane Swan", "Designed By Tiger Woods"
                    reasons[i] = NAME
                    continue
                if table.team_like[s] and a > 0 and _joined(seps[a]) and cased[a - 1][:1].isupper() and words[a - 1] in table.cities:
                    # a plural animal after a city: a team ("Detroit Tigers", "Boston Bruins")
                    reasons[i] = NAME
                    continue
                if a > 0 and _CAMEL.search(cased[a - 1]) and _joined(seps[a]) and b - a == 1:
                    # after a brand written in camel case ("FreeAgent Desk", "PlayStation Move"); a
                    # class named in several words is what the brand sells ("DaVinci Chocolate Sauce")
                    reasons[i] = NAME
                    continue
                if case_style is None:
                    alpha = [w for w in cased if w[:1].isalpha()]
                    n_alpha = max(1, len(alpha))
                    case_style = (
                        sum(w.isupper() and len(w) > 1 for w in alpha) / n_alpha,  # share in capitals
                        sum(w[:1].isupper() for w in alpha) <= 0.34 * n_alpha,  # written in lower case
                    )
                upper_share, lower_caption = case_style
                span = cased[a:b]
                if upper_share < 0.5 and all(w.isupper() and len(w) > 1 for w in span):
                    # capitals inside a caption that is not in capitals: a brand or a title
                    reasons[i] = NAME
                    continue
                if lower_caption and a > 0 and _joined(seps[a]):
                    before = seps[a].strip()
                    sentence_start = a == 0 or before.endswith((".", "!", "?", ":"))
                    neighbour_caps = (a > 0 and _is_capitalised(cased[a - 1])) or (b < len(cased) and _is_capitalised(cased[b]) and _joined(seps[b]))
                    if not sentence_start and neighbour_caps:
                        reasons[i] = NAME
                        continue
            # 3. compounds WordNet knows: "gas mask", "tank top", "ski slope" name another thing
            other = table.compound_elsewhere(s, words[a - 1] if a > 0 else None, words[b] if b < len(words) else None)
            if other and (cased is None or (_joined(seps[a]) if other == "left" else _joined(seps[b]))):
                reasons[i] = MODIFIER
                continue
            # 4. modifier
            pos = b
            for rnd in range(2):
                head = _head_after(words, seps, pos, words_of)
                heads = singular_forms(head) if head is not None else None
                if heads is None or heads & depiction or _is_collection(head):
                    break
                if heads & table.hypernym_words(s):
                    if rnd == 0 and words[pos] == head:
                        pos += 1  # the hypernym completes the class's name ("cell phone"): what follows it
                        continue
                    break
                if not table.kindred(s, head):
                    reasons[i] = MODIFIER
                break
            if reasons[i] == MODIFIER:
                continue
        # a word written once as a name is that name throughout its caption ("PUMA ... Puma Silver")
        named = {norm[int(start[i]) : int(end[i])] for i in idx if reasons[i] == NAME}
        if named:
            for i in idx:
                if reasons[i] == KEPT and norm[int(start[i]) : int(end[i])] in named:
                    reasons[i] = NAME
    return reasons


def _after_by(cased: list[str], seps: list[str], a: int) -> bool:
    """Whether the capitalised word ``a`` ends a run of at most three capitalised words joined
    to a preceding "by"."""
    k = a - 1
    while k >= 0 and a - k <= 3 and _joined(seps[k + 1]):
        if cased[k].lower() == "by":
            return True
        if not _is_capitalised(cased[k]):
            return False
        k -= 1
    return False


def _head_after(words: list[str], seps, b: int, words_of: tuple) -> str | None:
    """The noun the word ending before ``b`` modifies, or None when it heads its own phrase: the
    last noun of the words joined to it (three at most), or the first physical thing among them
    when a picture of that thing follows."""
    depiction, _, function_words, coordinators, qualifiers, _ = words_of
    n = len(words)
    if b >= n or (seps is not None and not _joined(seps[b])):
        return None
    w = words[b]
    if w in coordinators:
        # "wool and silk knit sweater": the coordinated word is itself a modifier of a later head
        nxt = words[b + 1] if b + 1 < n else ""
        if nxt and nxt not in function_words and (seps is None or _joined(seps[b + 1])) and is_noun(nxt):
            return _head_after(words, seps, b + 2, words_of)
        return None
    if w in function_words or w in qualifiers:
        return None
    head = None
    for k in range(b, min(n, b + 4)):
        if k > b and ((seps is not None and not _joined(seps[k])) or words[k] in function_words or words[k] in coordinators):
            break
        w = words[k]
        if w in qualifiers or is_proper(w) or is_verb(w, only=True):
            break
        if w == "s" and seps is not None and seps[k] == "'":
            break  # a possessive: "the tiger's cub" is the tiger's
        if is_participle(w):
            # "crane lifting steel", "shepherds playing": a verb; "dining chairs": a compound
            nxt = words[k + 1] if k + 1 < n else ""
            if is_noun(w) and nxt and (seps is None or _joined(seps[k + 1])) and is_noun(nxt):
                continue
            break
        if can_head(w) or split_compound(w):
            if head is not None and head not in depiction and _is_thing(head):
                # "leopard gecko photo": the photo is of a gecko, which the class word modifies
                return head
            head = w
    return head
