"""Surface forms of a lemma: plurals (regular, and WordNet's irregular ones), possessive and
joined spellings."""

from __future__ import annotations

import functools
import re

import polars as pl

from curate.match.normalise import normalise

_SIBILANT = ("s", "x", "z", "ch", "sh")
_VOWELS = set("aeiou")
_QUALIFIER = re.compile(r"\s*\([^)]*\)")


def regular_plural(word: str) -> str:
    if word.endswith(_SIBILANT):
        return word + "es"
    if len(word) > 1 and word.endswith("y") and word[-2] not in _VOWELS:
        return word[:-1] + "ies"
    return word + "s"


def _plurals(phrase: str, irregular: dict[str, list[str]]) -> set[str]:
    words = phrase.split()
    head, last = words[:-1], words[-1]
    out = set(irregular.get(phrase, ()))
    if last.isalpha() and len(last) > 1:
        plurals = {regular_plural(last)}
        plurals.update(p for p in irregular.get(last, ()) if " " not in p)
        out.update(" ".join([*head, p]) for p in plurals)
    return out


def surface_forms(lemma_norm: str, irregular: dict[str, list[str]]) -> list[str]:
    """Every surface form of one *normalised* lemma (words separated by single spaces), sorted:
    the lemma, its plurals (regular, and irregular from ``irregular``, on the last word), a
    possessive's run-together spelling ("potter s wheel" -> "potters wheel") and the joined spelling
    of multi-word forms ("bow tie" -> "bowtie")."""
    if not lemma_norm.split():
        return []
    bases = {lemma_norm}
    if " s " in f"{lemma_norm} "[1:]:
        bases.add(re.sub(r"(?<=\w) s(?= |$)", "s", lemma_norm))
    forms = set(bases)
    for base in bases:
        forms.update(_plurals(base, irregular))
    for f in list(forms):
        words = f.split()
        if len(words) > 1 and all(w.isalnum() for w in words):
            joined = "".join(words)
            if len(joined) >= 5:
                forms.add(joined)
    return sorted(forms)


@functools.lru_cache(maxsize=1)
def _irregular_normalised() -> dict[str, list[str]]:
    from curate.wordnet import plural_exceptions

    table = plural_exceptions()
    keys = list(table)
    norm_keys = [k.strip() for k in normalise(pl.Series(keys, dtype=pl.Utf8)).to_list()]
    flat = sorted({p for v in table.values() for p in v})
    norm_flat = dict(zip(flat, (p.strip() for p in normalise(pl.Series(flat, dtype=pl.Utf8)).to_list())))
    out: dict[str, list[str]] = {}
    for k, nk in zip(keys, norm_keys):
        # noun.exc also lists regular forms and the base itself; keep what differs
        plurals = [norm_flat[p] for p in table[k] if norm_flat[p] and norm_flat[p] != nk]
        if plurals:
            out.setdefault(nk, [])
            out[nk] = sorted(set(out[nk]) | set(plurals))
    return out

