"""Build recipes: every option of ``curate build`` as one dataclass, saved as YAML.

Owns the ``Recipe`` dataclass (its defaults are the CLI's defaults), its YAML round-trip, the
readable default name of a build, and pipeline files: a YAML mapping that is either one recipe or
``base`` (shared options) plus ``variants`` (a list of option mappings, each one build). The
resolved recipe saved beside a manifest (``recipe.yaml``) loads back with ``Recipe.load`` and
rebuilds the same bytes.
"""

from __future__ import annotations

import contextvars
import dataclasses
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from curate.errors import CurateError

MAX_NAME = 200
# a scale option given on the command line replaces the recipe's, whichever kind it was
SCALE_OPTIONS = ("max_per_class", "total", "fraction")
# options that leave the dataset as it is: giving them keeps the recipe's name (and folder)
SAME_DATASET_OPTIONS = ("name", "out_root", "allow_shortfall", "allow_empty_classes")


class _Loader(yaml.SafeLoader):
    """YAML without YAML 1.1's base-60 integers, so ``trim_tail: 5:0`` stays the text "5:0"
    (PyYAML would read it as 300)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:int"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?(?:0|[1-9][0-9_]*)|0x[0-9a-fA-F_]+|0o?[0-7_]+)$"),
    list("-+0123456789"),
)


def _yaml_where(e: Exception) -> str:
    """``:LINE:COLUMN`` (1-based) of a YAML error that has a position, else nothing."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    return f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""


def _yaml_problem(e: Exception) -> str:
    """What the YAML parser says went wrong, in a few words."""
    parts = [getattr(e, "context", None), getattr(e, "problem", None)]
    said = "; ".join(str(p) for p in parts if p)
    return said or str(e).splitlines()[0]


def _yaml_load(text: str):
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass

LABEL_SOURCES = ("match", "wnid")
# what a recipe being made is called in its error messages ("options", "FILE, variant 2", ...)
_WHERE: contextvars.ContextVar[str] = contextvars.ContextVar("recipe_where", default="recipe")


@dataclass(frozen=True)
class Recipe:
    """Every option of one build. ``None`` means "not set": the build resolves it."""

    name: str | None = None  # manifests/NAME; None: a slug of the options
    source: str = "demo"  # curate.sources spec: demo, a file, folder, glob or URL
    preset: str | None = None  # source column layout: a name of curate.presets.PRESETS
    image_root: str | None = None  # ImageNet-Captions: the ImageNet folder its file names live in (train/WNID/FILE)
    vocab: str | None = None  # None: the source's natural vocabulary
    classes: str | None = None  # K (a seeded random K of the vocab), a vocab spec (imagenet100) or a file
    labels_from: str = "match"  # match: caption matching; wnid: the source's ground-truth wnid column; or a curate match --out file
    label_policy: str = "all"  # all / drop / first / each (a row per class), for captions naming several classes
    match_mode: str = "curate"  # curate.match mode: curate or reference
    profile: str = "exp"  # see curate.sample.PROFILES
    imbalance: float = 1.0  # R = max/min count (exp, pareto, step)
    head_fraction: float = 0.5  # step: share of classes in the head
    order: str = "natural"  # which classes are head: natural, random or a file
    max_per_class: int | None = None
    total: int | None = None
    fraction: float | None = None
    sampling: str = "classes"  # how --total/--fraction scale: classes (per-class allocation) or rows (random rows)
    min_per_class: int = 1  # sampling rows: classes that had rows keep at least this many
    trim_tail: str | None = None  # K:C
    captions: str = "template"  # see curate.captions.CAPTION_MODES
    eval_per_class: int = 0
    min_similarity: float | None = None  # keep (caption, class) pairs scored at least this (curate score)
    similarity_from: str | None = None  # the curate score file those scores come from
    top_k_per_class: int | None = None  # keep each class's K most similar pairs
    embeddings: str | None = None  # the source's caption embeddings (curate embed): knn profile, diversity
    allow_shortfall: bool = False
    allow_empty_classes: bool = False  # let the profile give a class that has rows zero of them
    keep_unmatched: bool = False  # open world: rows naming no class stay, unlabelled (label -1)
    unmatched_fraction: float | None = None  # keep_unmatched: this share of them (smallest draw keys); None: all
    seed: int = 0
    out_root: str = "manifests"

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def option_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "recipe") -> Recipe:
        if not isinstance(data, dict):
            raise CurateError(f"{where}: expected a mapping of options, got {type(data).__name__}")
        known = set(cls.option_names())
        clean: dict[str, Any] = {}
        for key, value in data.items():
            k = str(key).replace("-", "_")
            if k not in known:
                raise CurateError(f"{where}: unknown option {key!r} (options: {', '.join(sorted(known))})")
            clean[k] = value
        token = _WHERE.set(where)
        try:
            return cls(**clean)
        finally:
            _WHERE.reset(token)

    def replace(self, **changes: Any) -> Recipe:
        """A copy with ``changes`` applied where they are not None."""
        given = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **given)

    def with_overrides(self, *, where: str = "options", **options: Any) -> Recipe:
        """This recipe with command-line ``options`` (None: not given) applied, as ``curate build``
        does: a scale option replaces the recipe's scale of any kind, and an option that changes
        the dataset drops the recipe's name, so a rebuild never overwrites the recipe's folder."""
        given = {k: v for k, v in options.items() if v is not None}
        merged = self.to_dict()
        if given.keys() & set(SCALE_OPTIONS):
            merged.update(dict.fromkeys(SCALE_OPTIONS))
        if given.keys() - set(SAME_DATASET_OPTIONS) and "name" not in given:
            merged["name"] = None
        merged.update(given)
        return Recipe.from_dict(merged, where=where)

    def __post_init__(self) -> None:
        self._check(_WHERE.get())

    def validate(self, *, where: str = "recipe") -> Recipe:
        """Raise ``CurateError`` (prefixed by ``where``) for an option that cannot work; every
        Recipe is checked when made, so this only re-checks."""
        self._check(where)
        return self

    def _check(self, where: str) -> None:
        def need(cond: bool, message: str) -> None:
            if not cond:
                raise CurateError(f"{where}: {message}")

        ints = ("max_per_class", "total", "eval_per_class", "seed", "min_per_class", "top_k_per_class")
        for name in ints:
            v = getattr(self, name)
            need(v is None or (isinstance(v, int) and not isinstance(v, bool)), f"{name} must be a whole number, got {v!r}")
        for name in ("imbalance", "head_fraction", "fraction", "min_similarity", "unmatched_fraction"):
            v = getattr(self, name)
            need(v is None or (isinstance(v, int | float) and not isinstance(v, bool)), f"{name} must be a number, got {v!r}")
        for name in ("name", "source", "preset", "image_root", "vocab", "classes", "profile", "order", "trim_tail", "captions", "similarity_from", "embeddings"):
            v = getattr(self, name)
            need(v is None or isinstance(v, str | int), f"{name} must be text, got {v!r}")
        for name in ("allow_shortfall", "allow_empty_classes", "keep_unmatched"):
            need(isinstance(getattr(self, name), bool), f"{name} must be true or false, got {getattr(self, name)!r}")
        need(isinstance(self.min_per_class, int) and self.min_per_class >= 0, f"min_per_class must be >= 0, got {self.min_per_class!r}")
        need(
            isinstance(self.labels_from, str) and (self.labels_from in LABEL_SOURCES or self.labels_file is not None),
            f"labels_from {self.labels_from!r} is not one of {', '.join(LABEL_SOURCES)} or a .parquet file (or folder of them) written by curate match --out",
        )
        if self.min_similarity is not None or self.top_k_per_class is not None:
            need(self.similarity_from is not None, "min_similarity and top_k_per_class need similarity_from (a file written by curate score)")
        need(self.top_k_per_class is None or self.top_k_per_class >= 1, f"top_k_per_class must be at least 1, got {self.top_k_per_class!r}")
        if self.unmatched_fraction is not None:
            need(self.keep_unmatched, "unmatched_fraction needs keep_unmatched (the rows naming no class are left out without it)")
            need(0 < self.unmatched_fraction <= 1, f"unmatched_fraction must be in (0, 1], got {self.unmatched_fraction!r}")
        self._check_registries(where)
        if self.name is not None:
            need(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", str(self.name)) is not None, f"name {self.name!r}: use letters, digits, '.', '_' and '-'")
            # a folder name, plus the suffix of its temporary, must fit the file system's 255 bytes
            need(len(str(self.name)) <= MAX_NAME, f"name {str(self.name)[:20]}...: {len(str(self.name))} characters, at most {MAX_NAME}")
        # normalise numbers that YAML may hand over as ints (frozen: set through object)
        for name in ("imbalance", "head_fraction", "fraction", "min_similarity", "unmatched_fraction"):
            if isinstance(getattr(self, name), int):
                object.__setattr__(self, name, float(getattr(self, name)))
        for name in ("classes", "trim_tail"):
            if isinstance(getattr(self, name), int):
                object.__setattr__(self, name, str(getattr(self, name)))

    def _check_registries(self, where: str) -> None:
        """Every option that names a registry entry (caption mode, profile, preset, label policy,
        match mode) names one that exists: a recipe fails when made, not halfway through a build."""
        from curate.captions import caption_mode
        from curate.match import MODES, POLICIES
        from curate.presets import PRESETS, preset_names
        from curate.sample import SAMPLINGS, check_target_options
        from curate.similarity import split_knn

        def need(cond: bool, message: str) -> None:
            if not cond:
                raise CurateError(f"{where}: {message}")

        policies = (*POLICIES, "each")  # each: a row per class, the build's own (curate.sample.each_label)
        need(self.label_policy in policies, f"label_policy {self.label_policy!r} is not one of {', '.join(policies)}")
        need(self.sampling in SAMPLINGS, f"sampling {self.sampling!r} is not one of {', '.join(SAMPLINGS)}")
        need(self.match_mode in MODES, f"match_mode {self.match_mode!r} is not one of {', '.join(MODES)}")
        need(self.preset is None or self.preset in PRESETS, f"preset {self.preset!r} is not one of {preset_names()}")
        try:
            caption_mode(str(self.captions))
            check_target_options(
                # knn:QUERIES chooses rows, then keeps them as they are (the build's profile natural)
                profile="natural" if split_knn(str(self.profile)) is not None else str(self.profile), imbalance=self.imbalance, head_fraction=self.head_fraction,
                max_per_class=self.max_per_class, total=self.total, fraction=self.fraction,
                trim_tail=None if self.trim_tail is None else str(self.trim_tail), eval_per_class=self.eval_per_class,
            )  # fmt: skip
        except CurateError as e:
            raise CurateError(f"{where}: {e}") from e

    @property
    def labels_file(self) -> str | None:
        """``labels_from`` when it names a file (or folder) of labels written by ``curate match
        --out``, else None: a ``.parquet`` path or an existing folder."""
        v = self.labels_from
        if not isinstance(v, str) or v in LABEL_SOURCES:
            return None
        return v if v.lower().endswith(".parquet") or Path(v).is_dir() else None

    # -- YAML --------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.option_names()}

    def dump(self) -> str:
        """YAML text, every option in declaration order (``Recipe.loads`` reads it back)."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    @classmethod
    def loads(cls, text: str, *, where: str = "recipe") -> Recipe:
        try:
            data = _yaml_load(text)
        except yaml.YAMLError as e:
            raise CurateError(f"{where}{_yaml_where(e)}: not valid YAML ({_yaml_problem(e)})") from e
        return cls.from_dict(data or {}, where=where)

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        """A recipe file: one flat mapping of options (a manifest's ``recipe.yaml`` is one)."""
        recipes = load_pipeline(path)
        if len(recipes) != 1:
            raise CurateError(f"--recipe {path}: holds {len(recipes)} variants; use `curate run {path}`")
        return recipes[0]

    # -- naming ------------------------------------------------------------------------------

    def slug(self) -> str:
        """A readable name from the options that differ from the defaults."""
        d = Recipe()
        parts = [_slug_text(Path(self.source.rstrip("/")).stem.replace("*", "")) or "source"]
        if self.vocab:
            parts.append(_slug_text(_stem(self.vocab)))
        if self.classes:
            parts.append("k" + _slug_text(_stem(str(self.classes))))
        if self.labels_file is not None:
            parts.append("labels-" + _slug_text(_stem(self.labels_file)))
        elif self.labels_from != d.labels_from:
            parts.append("gt")
        if self.label_policy != d.label_policy:
            parts.append(self.label_policy)
        if self.keep_unmatched:
            parts.append("open" + ("" if self.unmatched_fraction is None else f"{_num(self.unmatched_fraction)}"))
        if self.match_mode != d.match_mode:
            parts.append(self.match_mode)
        prof = self.profile.split(":", 1)
        parts.append(prof[0] if len(prof) == 1 else prof[0] + "-" + _slug_text(Path(prof[1]).stem))
        if prof[0] in ("exp", "pareto", "step"):
            parts.append(f"r{_num(self.imbalance)}")
        if prof[0] == "step" and self.head_fraction != d.head_fraction:
            parts.append(f"head{_num(self.head_fraction)}")
        if self.order != d.order:
            parts.append("order-" + _slug_text(Path(self.order).stem))
        if self.max_per_class is not None:
            parts.append(f"max{self.max_per_class}")
        if self.total is not None:
            parts.append(f"n{self.total}")
        if self.fraction is not None:
            parts.append(f"f{_num(self.fraction)}")
        if self.sampling != d.sampling:
            parts.append(self.sampling)
        if self.min_per_class != d.min_per_class:
            parts.append(f"min{self.min_per_class}")
        if self.trim_tail:
            parts.append("trim" + str(self.trim_tail).replace(":", "x"))
        if self.min_similarity is not None:
            parts.append(f"sim{_num(self.min_similarity)}")
        if self.top_k_per_class is not None:
            parts.append(f"top{self.top_k_per_class}")
        parts.append(_slug_text(self.captions))
        if self.eval_per_class:
            parts.append(f"eval{self.eval_per_class}")
        if self.seed != d.seed:
            parts.append(f"s{self.seed}")
        return "-".join(p for p in parts if p)


def _stem(spec: str) -> str:
    """A file spec's stem (``/data/fruits.tsv`` -> ``fruits``); other specs as they are."""
    p = Path(spec)
    return p.stem if p.suffix.lower() in (".csv", ".tsv", ".txt", ".json", ".jsonl", ".parquet", ".list") else spec


def _num(x: float) -> str:
    return f"{x:g}".replace(".", "p").replace("+", "")  # 1e+09 -> 1e09: a name holds no "+"


def _slug_text(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", str(text).replace("+", "-plus-")).strip("-").lower()[:40]


def load_pipeline(path: str | Path) -> list[Recipe]:
    """The recipes of a pipeline file: a flat mapping is one recipe; ``base`` + ``variants`` is one
    recipe per variant (the variant's options over the base's)."""
    path = Path(path)
    if not path.is_file():
        raise CurateError(f"recipe file {path} does not exist")
    try:
        data = _yaml_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise CurateError(f"{path}{_yaml_where(e)}: not valid YAML ({_yaml_problem(e)})") from e
    except UnicodeDecodeError as e:
        raise CurateError(f"{path}: not UTF-8 text") from e
    if data is None:
        raise CurateError(f"{path}: the file is empty")
    if not isinstance(data, dict):
        raise CurateError(f"{path}: expected a mapping of options (or base + variants), got {type(data).__name__}")
    if "variants" not in data:
        unknown = {"base", "description"} & set(data)
        if unknown:
            raise CurateError(f"{path}: has {sorted(unknown)[0]!r} but no 'variants' list")
        return [Recipe.from_dict(data, where=str(path))]
    extra = set(data) - {"base", "variants", "description"}
    if extra:
        raise CurateError(f"{path}: unknown top-level key {sorted(extra)[0]!r} (a pipeline has description, base, variants)")
    base = data.get("base") or {}
    variants = data["variants"]
    if not isinstance(base, dict):
        raise CurateError(f"{path}: 'base' must be a mapping of options")
    if not isinstance(variants, list) or not variants:
        raise CurateError(f"{path}: 'variants' must be a non-empty list of option mappings")
    out = []
    for i, v in enumerate(variants):
        if not isinstance(v, dict):
            raise CurateError(f"{path}: variant {i + 1} must be a mapping of options")
        out.append(Recipe.from_dict({**base, **v}, where=f"{path}, variant {i + 1}"))
    return out
