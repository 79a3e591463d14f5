"""Class vocabularies: which concepts exist, how they are named, and which words mean them.

A vocabulary is a polars DataFrame with the columns of ``VOCAB_SCHEMA``:
``label`` (class index 0..K-1, in the vocabulary's own order), ``wnid``, ``name`` (display name),
``lemmas`` (WordNet synonyms used for matching), ``definition``, ``negatives`` (context words
that veto a match; the matcher adds its built-in rules for ImageNet's known traps).

Specs understood by :func:`load_vocab`:

- ``imagenet1k``: the 1,000 ILSVRC-2012 classes in the standard (sorted-wnid) order, display
  names from open_clip's ``IMAGENET_CLASSNAMES``, lemmas and definitions from WordNet 3.0 as
  shipped by timm;
- ``imagenet100``: the 100-class subset used by the reference study (CMC's ImageNet-100);
- ``imagenet21k``: every ImageNet-21k synset (timm's list; open-world concepts);
- ``imagenet1k-study``: ImageNet-1k with the reference study's own synonyms and class names
  (``curate/data/imagenet1k_study_synonyms.json``; the lemmas of ``--mode reference``'s counting);
- ``wordnet:SYNSET`` (e.g. ``wordnet:dog.n.01``): the synset and its hyponym tree, through nltk's
  WordNet (``depth`` limits how many levels below the root);
- ``demo``: the classes of the embedded demo corpus (ImageNet-100 plus ``TRAP_CLASSES``);
- a ``.csv``/``.tsv``/``.json``/``.jsonl``/``.parquet`` file with at least a ``name`` column.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path

import polars as pl

from curate.errors import CurateError

VOCAB_SCHEMA: dict[str, pl.DataType] = {
    "label": pl.Int32(),
    "wnid": pl.Utf8(),
    "name": pl.Utf8(),
    "lemmas": pl.List(pl.Utf8()),
    "definition": pl.Utf8(),
    "negatives": pl.List(pl.Utf8()),
}

# The reference study's ImageNet-100 (indices into the standard ImageNet-1k order), a published
# class list (CMC, Tian et al. 2019); the study's metadata/imagenet100_idxs.txt holds the same.
IMAGENET100_INDICES: tuple[int, ...] = (
    15, 45, 54, 57, 64, 74, 90, 99, 119, 120, 122, 131, 137, 151, 155, 157, 158, 166, 167, 169,
    176, 180, 209, 211, 222, 228, 234, 236, 242, 246, 267, 268, 272, 275, 277, 281, 299, 305, 313, 317,
    331, 342, 368, 374, 407, 421, 431, 449, 452, 455, 479, 494, 498, 503, 508, 544, 560, 570, 592, 593,
    599, 606, 608, 619, 620, 653, 659, 662, 665, 667, 674, 682, 703, 708, 717, 724, 748, 758, 765, 766,
    772, 775, 796, 798, 830, 854, 857, 858, 872, 876, 882, 904, 908, 936, 938, 953, 959, 960, 993, 994,
)


# ImageNet classes whose names are ambiguous on the web (or pair with an ambiguous class),
# added to ImageNet-100 in the demo vocabulary so matchers meet the known traps.
TRAP_CLASSES: dict[str, str] = {
    "n02012849": "crane (bird)",
    "n03126707": "crane (machine)",
    "n02412080": "ram (sheep)",
    "n02879718": "bow (weapon)",
    "n02883205": "bow tie",
    "n02422699": "impala (antelope)",
    "n04347754": "submarine (sub)",
    "n02389026": "sorrel (horse)",
    "n02123159": "tiger cat",
    "n02129604": "tiger",
    "n01491361": "tiger shark",
    "n03793489": "mouse (computer)",
    "n02113186": "Cardigan (corgi)",
    "n02963159": "cardigan (sweater)",
    "n01847000": "drake / duck",
    "n02128925": "jaguar (cat)",
    "n01608432": "kite (bird)",
    "n02229544": "cricket (insect)",
    "n03495258": "harp (vs. the harmonica's 'harp')",
}


def _frame(rows: dict[str, list]) -> pl.DataFrame:
    n = len(rows["wnid"])
    rows = {
        "label": rows.get("label", list(range(n))),
        "wnid": rows["wnid"],
        "name": rows["name"],
        "lemmas": rows["lemmas"],
        "definition": rows.get("definition", [None] * n),
        "negatives": rows.get("negatives", [[] for _ in range(n)]),
    }
    return pl.DataFrame(rows, schema=VOCAB_SCHEMA)


def _dedupe(items: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        item = item.strip()
        if item and item.casefold() not in {s.casefold() for s in seen}:
            seen[item] = None
    return list(seen)


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)  # locates without importing (no torch start-up)
    if spec is None or not spec.submodule_search_locations:
        raise CurateError(f"the package {package!r} is not installed; it ships the ImageNet metadata curate reads")
    return Path(next(iter(spec.submodule_search_locations)))


@functools.lru_cache(maxsize=1)
def open_clip_metadata() -> dict:
    """open_clip's ``zero_shot_metadata`` (ImageNet class names, the CLIP templates).

    The module is plain data; it is executed on its own because importing ``open_clip`` costs
    seconds of torch start-up that a vocabulary lookup does not need.
    """
    source = _package_dir("open_clip") / "zero_shot_metadata.py"
    namespace: dict = {}
    exec(compile(source.read_text(encoding="utf-8"), str(source), "exec"), namespace)
    return namespace


@functools.lru_cache(maxsize=1)
def _timm_tables() -> tuple[dict[str, str], dict[str, str]]:
    """timm's WordNet 3.0 tables for all ImageNet-21k synsets: wnid -> lemmas, wnid -> definition."""
    info = _package_dir("timm") / "data" / "_info"

    def read(name: str) -> dict[str, str]:
        table = {}
        for line in (info / name).read_text(encoding="utf-8").splitlines():
            wnid, _, text = line.partition("\t")
            if wnid:
                table[wnid] = text
        return table

    return read("imagenet_synset_to_lemma.txt"), read("imagenet_synset_to_definition.txt")


def _timm_synsets(filename: str) -> list[str]:
    path = _package_dir("timm") / "data" / "_info" / filename
    return [w for w in path.read_text(encoding="utf-8").split() if w]


def _vocab_from_wnids(wnids: list[str], names: list[str] | None = None) -> pl.DataFrame:
    lemma_table, definitions = _timm_tables()
    lemmas = [[p.strip() for p in lemma_table.get(w, "").split(",") if p.strip()] for w in wnids]
    if names is None:
        names = [ls[0] if ls else w for ls, w in zip(lemmas, wnids)]
    lemmas = [_dedupe(ls + [n]) for ls, n in zip(lemmas, names)]
    return _frame({"wnid": wnids, "name": names, "lemmas": lemmas, "definition": [definitions.get(w) for w in wnids]})


@functools.lru_cache(maxsize=1)
def _imagenet1k() -> pl.DataFrame:
    names = list(open_clip_metadata()["IMAGENET_CLASSNAMES"])
    wnids = _timm_synsets("imagenet_synsets.txt")
    if wnids != sorted(wnids) or len(wnids) != 1000 or len(names) != 1000:
        raise CurateError("timm/open_clip ImageNet-1k metadata is not in the standard order; check their versions")
    return _vocab_from_wnids(wnids, names)


def _imagenet100() -> pl.DataFrame:
    full = _imagenet1k()
    return full[list(IMAGENET100_INDICES)].with_columns(pl.int_range(pl.len(), dtype=pl.Int32).alias("label"))


@functools.lru_cache(maxsize=1)
def _imagenet21k() -> pl.DataFrame:
    return _vocab_from_wnids(_timm_synsets("imagenet21k_goog_synsets.txt"))


@functools.lru_cache(maxsize=1)
def _imagenet1k_study() -> pl.DataFrame:
    """The study's synonym lists exactly (not deduplicated, no name added: its counting reads them
    as they are), named as its published frequency tables name the classes."""
    data = Path(__file__).resolve().parent / "data"
    synonyms = json.loads((data / "imagenet1k_study_synonyms.json").read_text(encoding="utf-8"))
    names = [line.split("\t")[0] for line in (data / "freqs_laion400m.tsv").read_text(encoding="utf-8").splitlines()]
    _, definitions = _timm_tables()
    wnids = list(synonyms)
    return _frame({"wnid": wnids, "name": names, "lemmas": list(synonyms.values()), "definition": [definitions.get(w) for w in wnids]})


def _wordnet_tree(synset_name: str, depth: int | None) -> pl.DataFrame:
    from curate.wordnet import synset_wnid, wordnet

    wn = wordnet()  # imports nltk (without scipy.stats)
    from nltk.corpus.reader.wordnet import WordNetError
    try:
        root = wn.synset(synset_name)
    except (WordNetError, ValueError) as e:
        raise CurateError(f"vocab 'wordnet:{synset_name}': no such synset ({e}); use a name like dog.n.01") from e
    found = {root.name(): root}
    frontier = [root]
    level = 0
    while frontier and (depth is None or level < depth):
        nxt = []
        for s in frontier:
            for h in s.hyponyms() + s.instance_hyponyms():
                if h.name() not in found:
                    found[h.name()] = h
                    nxt.append(h)
        frontier, level = nxt, level + 1
    synsets = sorted(found.values(), key=synset_wnid)  # the ImageNet convention: sorted wnids
    lemmas = [_dedupe([lemma.replace("_", " ") for lemma in s.lemma_names()]) for s in synsets]
    return _frame(
        {
            "wnid": [synset_wnid(s) for s in synsets],
            "name": [ls[0] for ls in lemmas],
            "lemmas": lemmas,
            "definition": [s.definition() for s in synsets],
        }
    )


def _split_list(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value if v is not None and str(v).strip()]
    text = str(value)
    sep = "|" if "|" in text else ";" if ";" in text else ","
    return [p.strip() for p in text.split(sep) if p.strip()]


def _from_file(path: Path) -> pl.DataFrame:
    if not path.is_file():
        raise CurateError(f"vocab file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            raw = pl.read_parquet(path)
        elif suffix in (".csv", ".tsv", ".txt"):
            raw = pl.read_csv(path, separator="\t" if suffix != ".csv" else ",", infer_schema=False)
        elif suffix == ".jsonl":
            raw = pl.read_ndjson(path)
        elif suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict):  # {wnid: [lemmas]} as in imagenet1k_wnid_synonyms.json
                data = [{"wnid": k, "name": (v[0] if isinstance(v, list) and v else str(v)), "lemmas": v} for k, v in data.items()]
            raw = pl.DataFrame(data, infer_schema_length=None)
        else:
            raise CurateError(f"vocab file {path}: unknown format {suffix!r} (use .csv, .tsv, .json, .jsonl or .parquet)")
    except CurateError:
        raise
    except Exception as e:  # polars/json parse errors carry the detail
        raise CurateError(f"vocab file {path} could not be read: {e}") from e
    if raw.height == 0:
        raise CurateError(f"vocab file {path} has no rows")
    if "name" not in raw.columns:
        raise CurateError(f"vocab file {path} has no 'name' column (columns: {', '.join(raw.columns)})")
    rows = raw.to_dicts()
    names = []
    for i, row in enumerate(rows):
        name = row.get("name")
        if name is None or not str(name).strip():
            raise CurateError(f"vocab file {path}, row {i + 1}: empty name")
        names.append(str(name).strip())
    wnids = [str(r["wnid"]) if r.get("wnid") is not None else None for r in rows]
    seen: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        # one name twice is one class listed twice (every caption saying it gets both labels),
        # unless wnids tell two concepts apart (ImageNet-1k's two 'missile' classes)
        same = seen.setdefault(name.casefold(), [])
        earlier = next((j for j in same if wnids[j] is None or wnids[i] is None or wnids[j] == wnids[i]), None)
        if earlier is not None:
            raise CurateError(
                f"vocab file {path}: rows {earlier + 1} and {i + 1} both name the class {names[earlier]!r}"
                + ("" if names[earlier] == name else f" / {name!r}")
                + "; class names must differ (case aside) unless their wnids do"
            )
        same.append(i)
    lemmas = [_dedupe(_split_list(r.get("lemmas")) + [n]) for r, n in zip(rows, names)]
    out = {
        "wnid": wnids,
        "name": names,
        "lemmas": lemmas,
        "definition": [r.get("definition") for r in rows],
        "negatives": [_split_list(r.get("negatives")) for r in rows],
    }
    if "label" in raw.columns:
        labels = [int(r["label"]) for r in rows]
        if sorted(labels) != list(range(len(labels))):
            raise CurateError(f"vocab file {path}: 'label' must be 0..{len(labels) - 1}, each once")
        out["label"] = labels
    return _frame(out).sort("label")


def imagenet100_wnids() -> tuple[str, ...]:
    """The wnids of ImageNet-100 (``IMAGENET100_INDICES``), in the standard order."""
    wnids = _timm_synsets("imagenet_synsets.txt")
    return tuple(wnids[i] for i in IMAGENET100_INDICES)


def demo_wnids() -> tuple[str, ...]:
    """The classes of the embedded demo corpus: ImageNet-100 plus ``TRAP_CLASSES``, sorted (the
    standard ImageNet order, which is also the demo's label order)."""
    return tuple(sorted(set(imagenet100_wnids()) | set(TRAP_CLASSES)))


@functools.lru_cache(maxsize=1)
def _demo() -> pl.DataFrame:
    wnids = demo_wnids()
    vocab = _imagenet1k().filter(pl.col("wnid").is_in(list(wnids))).sort("label")
    if vocab.height != len(wnids):
        missing = sorted(set(wnids) - set(vocab["wnid"].to_list()))
        raise CurateError(f"the ImageNet-1k vocabulary lacks demo classes {missing}")
    return vocab.with_columns(pl.int_range(pl.len(), dtype=pl.Int32).alias("label"))


BUILTIN: dict[str, Callable[[], pl.DataFrame]] = {
    "imagenet1k": _imagenet1k,
    "imagenet100": _imagenet100,
    "imagenet21k": _imagenet21k,
    "imagenet1k-study": _imagenet1k_study,
    "demo": _demo,
}
ALIASES = {"imagenet": "imagenet1k", "in1k": "imagenet1k", "in100": "imagenet100", "in21k": "imagenet21k", "imagenet-1k": "imagenet1k", "imagenet-21k": "imagenet21k", "imagenet-100": "imagenet100"}


def _inputs_version() -> str:
    """What the built-in vocabularies are made from: this module's code, the package data it
    reads, and timm's and open_clip's metadata files (path, size, time)."""
    from curate.util import stable_hash

    here = Path(__file__).resolve()
    files = [here.parent / "data" / n for n in ("imagenet1k_study_synonyms.json", "freqs_laion400m.tsv")]
    for package, names in (("timm", ("data/_info/imagenet_synsets.txt", "data/_info/imagenet21k_goog_synsets.txt",
                                     "data/_info/imagenet_synset_to_lemma.txt", "data/_info/imagenet_synset_to_definition.txt")),
                           ("open_clip", ("zero_shot_metadata.py",))):
        try:
            root = _package_dir(package)
        except CurateError:
            return ""  # building will say what is missing
        files += [root / n for n in names]
    stats = []
    for f in files:
        try:
            st = f.stat()
            stats.append((str(f), st.st_size, st.st_mtime_ns))
        except OSError:
            stats.append((str(f), None, None))
    return stable_hash(here.read_bytes(), *stats)


@functools.lru_cache(maxsize=8)
def _builtin(key: str) -> pl.DataFrame:
    """A built-in vocabulary, through the cache (``$CURATE_CACHE/vocab``): built once from its
    metadata (a tenth of a second for ImageNet-1k, more for ImageNet-21k), then read back as
    Parquet in milliseconds; any change to what it is built from builds it again."""
    from curate.util import atomic_path, cache_dir

    version = _inputs_version()
    path = cache_dir() / "vocab" / f"{key}-{version}.parquet"
    if version and path.is_file():
        try:
            return pl.read_parquet(path)
        except (OSError, pl.exceptions.PolarsError):
            pass  # unreadable (a full disk cut it short): build it again
    vocab = BUILTIN[key]()
    if version:
        try:
            with atomic_path(path) as tmp:
                vocab.write_parquet(tmp)
        except (OSError, CurateError):  # a read-only cache (atomic_path says so): still correct, only slower
            pass
    return vocab


def load_vocab(spec: str, *, depth: int | None = None) -> pl.DataFrame:
    """The vocabulary named by ``spec`` as a DataFrame with the columns of ``VOCAB_SCHEMA``.

    >>> load_vocab("imagenet1k").row(0, named=True)["name"]
    'tench'
    """
    spec = spec.strip()
    if depth is not None and not spec.lower().startswith("wordnet:"):
        raise CurateError(f"--depth {depth}: a depth goes with a wordnet:SYNSET vocabulary (the tree below it), not {spec}")
    key = ALIASES.get(spec.lower(), spec.lower())
    if key in BUILTIN:
        return _builtin(key).clone()
    if spec.lower().startswith("wordnet:"):
        if depth is not None and depth < 0:
            raise CurateError(f"--depth must be >= 0, got {depth}")
        return _wordnet_tree(spec.split(":", 1)[1], depth)
    path = Path(spec)
    if path.suffix or path.exists():
        return _from_file(path)
    raise CurateError(
        f"unknown vocabulary {spec!r}",
        hint="use one of " + ", ".join(BUILTIN) + ", wordnet:SYNSET (e.g. wordnet:dog.n.01), or a csv/tsv/json file with a 'name' column",
    )


def write_vocab(vocab: pl.DataFrame, dest: str | Path) -> Path:
    """Write a vocabulary by extension (.parquet, .json, .jsonl, .csv, .tsv); lists are joined by '|'
    in the text formats."""
    from curate.util import atomic_path

    dest = Path(dest)
    suffix = dest.suffix.lower()
    with atomic_path(dest) as tmp:
        if suffix == ".parquet":
            vocab.write_parquet(tmp)
        elif suffix == ".jsonl":
            vocab.write_ndjson(tmp)
        elif suffix == ".json":
            vocab.write_json(tmp)
        elif suffix in (".csv", ".tsv"):
            flat = vocab.with_columns(pl.col("lemmas").list.join("|"), pl.col("negatives").list.join("|"))
            flat.write_csv(tmp, separator="," if suffix == ".csv" else "\t")
        else:
            raise CurateError(f"--out {dest}: unknown format {suffix!r} (use .parquet, .json, .jsonl, .csv or .tsv)")
    return dest
