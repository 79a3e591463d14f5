"""Matching rules as data: negative-context rules, blocked lemmas and stop forms.

The rules themselves live in ``curate/data/match_rules.json`` (with their provenance); this module
loads them once and gives them their types.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True)
class NegativeRule:
    """Context words that veto a class; ``lemmas`` limits the veto to matches through those lemmas
    (empty: every lemma of the class)."""

    context: tuple[str, ...]
    lemmas: tuple[str, ...] = ()


@functools.lru_cache(maxsize=1)
def _rules_file() -> dict:
    return json.loads(resources.files("curate.data").joinpath("match_rules.json").read_text(encoding="utf-8"))


def _load() -> tuple[dict[str, NegativeRule], dict[str, tuple[str, ...]], frozenset[str]]:
    data = _rules_file()
    negative = {
        wnid: NegativeRule(tuple(r["context"]), tuple(r["lemmas"])) for wnid, r in data["negative_rules"].items()
    }
    blocked = {k: tuple(v) for k, v in data["blocked_lemmas"].items() if not k.startswith("_")}
    return negative, blocked, frozenset(data["stop_forms"]["words"])


def disambiguation_rules() -> dict:
    """The disambiguation cascade's settings and word lists (``disambiguation`` in the rules file)."""
    return _rules_file()["disambiguation"]


# ImageNet-1k's known traps, keyed by wnid so the rules follow the class into any vocabulary
# (imagenet100, imagenet21k, wordnet trees); lemmas too generic to be evidence on their own;
# surface forms never matched (single characters and English function words)
NEGATIVE_RULES, BLOCKED_LEMMAS, STOP_FORMS = _load()
