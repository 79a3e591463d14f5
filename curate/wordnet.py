"""WordNet 3.0 through nltk, offline.

Looked for, in order: ``$CURATE_WORDNET`` (a WordNet dict folder), nltk's own data path
(``nltk.download("wordnet")``), then a system WordNet 3.0 folder such as Debian's
``wordnet-base`` (/usr/share/wordnet). The Debian package lacks the ``lexnames`` file that nltk's
reader opens; it is a fixed table of WordNet 3.0, so we write it into a small shim folder in the
cache whose other entries link to the system files.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
import threading
import warnings
from pathlib import Path

from curate.errors import CurateError
from curate.util import atomic_path, cache_dir

SYSTEM_DIRS = ("/usr/share/wordnet", "/usr/local/share/wordnet", "/usr/share/WordNet-3.0/dict", "/opt/homebrew/share/wordnet")
_NEEDED = ("index.noun", "data.noun", "noun.exc")

# WordNet 3.0's lexicographer files (number, name, syntactic category); dict/lexnames verbatim.
_LEXNAMES = [
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event",
    "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object",
    "noun.person", "noun.phenomenon", "noun.plant", "noun.possession", "noun.process",
    "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
    "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition",
    "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather", "adj.ppl",
]
_LEX_CATEGORY = {"adj": 3, "adv": 4, "noun": 1, "verb": 2}

HOW_TO_GET = (
    "install WordNet 3.0: 'apt-get install wordnet-base' (Debian/Ubuntu), or "
    "'python -m nltk.downloader wordnet' where nltk's server is reachable, or set CURATE_WORDNET "
    "to a WordNet 3.0 dict folder"
)


def lexnames_text() -> str:
    return "".join(f"{i:02d}\t{name}\t{_LEX_CATEGORY[name.split('.')[0]]}\n" for i, name in enumerate(_LEXNAMES))


def _is_wordnet_dir(path: Path) -> bool:
    return all((path / f).is_file() for f in _NEEDED)


def _shim(system_dir: Path) -> Path:
    """A folder nltk can read: the system files plus the missing ``lexnames``.

    Files are copied (~30 MB, once): nltk refuses symbolic and hard links that could lead
    outside the folder it reads.
    """
    shim = cache_dir() / "wordnet-shim" / system_dir.as_posix().strip("/").replace("/", "_")
    if (shim / "lexnames").is_file() and _is_wordnet_dir(shim):
        return shim
    with atomic_path(shim) as tmp:
        tmp.mkdir()
        for entry in system_dir.iterdir():
            if entry.is_file():
                shutil.copyfile(entry, tmp / entry.name)
        if not (system_dir / "lexnames").is_file():
            (tmp / "lexnames").write_text(lexnames_text(), encoding="ascii")
    return shim


def _nltk_data_dirs() -> list[str]:
    """nltk's data path, without importing nltk (which pulls in scipy.stats: over a second): its
    live ``nltk.data.path`` when nltk is already loaded, else the same list nltk builds on import
    (``$NLTK_DATA``, ``~/nltk_data``, the interpreter's prefix, the usual system folders)."""
    if "nltk.data" in sys.modules:
        return list(sys.modules["nltk.data"].path)
    dirs = [os.path.expanduser(d) for d in os.environ.get("NLTK_DATA", "").split(os.pathsep) if d]
    home = os.path.expanduser("~/nltk_data")
    if home not in dirs:
        dirs.append(home)
    dirs += [os.path.join(sys.prefix, "nltk_data"), os.path.join(sys.prefix, "share", "nltk_data"), os.path.join(sys.prefix, "lib", "nltk_data")]
    return dirs + ["/usr/share/nltk_data", "/usr/local/share/nltk_data", "/usr/lib/nltk_data", "/usr/local/lib/nltk_data"]


def _wordnet_source_dir() -> tuple[Path, bool]:
    """The WordNet dict folder as found (CURATE_WORDNET, nltk's data path, a system copy), and
    whether it needs the ``lexnames`` shim before nltk can read it."""
    env = os.environ.get("CURATE_WORDNET")
    if env:
        path = Path(env)
        if not _is_wordnet_dir(path):
            raise CurateError(f"CURATE_WORDNET={env} is not a WordNet dict folder (no {', '.join(_NEEDED)})")
        return path, not (path / "lexnames").is_file()
    for root in _nltk_data_dirs():
        path = Path(root) / "corpora" / "wordnet"
        if path.is_dir() and _is_wordnet_dir(path):
            return path, False
    for candidate in SYSTEM_DIRS:
        path = Path(candidate)
        if _is_wordnet_dir(path):
            return path, not (path / "lexnames").is_file()
    raise CurateError("WordNet 3.0 was not found (looked in CURATE_WORDNET, nltk's data path, " + ", ".join(SYSTEM_DIRS) + ")", hint=HOW_TO_GET)


def find_wordnet_dir() -> Path:
    """The folder holding WordNet's dict files, ready for nltk's reader."""
    path, needs_shim = _wordnet_source_dir()
    return _shim(path) if needs_shim else path


_NLTK_LOCK = threading.Lock()


def import_nltk():
    """``import nltk`` without scipy.stats (1.4 s of nltk's 2 s import, for one association measure
    of nltk's collocations that curate never calls): nltk imports it inside ``try ... except
    ImportError``, so a missing scipy.stats leaves only that measure unavailable. A process that has
    imported scipy.stats already gives nltk the real one; ``import scipy.stats`` later works as ever
    (threads of this process that import it while nltk loads would not find it: curate has none)."""
    with _NLTK_LOCK:
        if "nltk" in sys.modules or "scipy.stats" in sys.modules:
            import nltk  # waits for a thread that is importing it still

            return nltk
        sys.modules["scipy.stats"] = None  # the import system's "not installed" (ModuleNotFoundError)
        try:
            import nltk
        finally:
            if sys.modules.get("scipy.stats", 0) is None:
                del sys.modules["scipy.stats"]
        return nltk


class _LazyIndex(dict):
    """nltk's lemma -> {part of speech: synset offsets} map, read the fast way: the index files'
    lines are filed under their lemma when the reader opens (a fifth of a second), and a lemma's
    lines are parsed, as nltk's ``_load_lemma_pos_offset_map`` parses them, when it is first looked
    up (nltk parses all 147,000 of them, two seconds, before the first question)."""

    def __init__(self, root: Path, filemap: dict[str, str], adj: str, adj_sat: str) -> None:
        super().__init__()
        self._root, self._adj, self._adj_sat = root, adj, adj_sat
        self._satellites: set[int] | None = None
        for suffix in filemap.values():
            with open(root / f"index.{suffix}", encoding="utf-8") as f:
                for line in f:
                    if line.startswith(" "):
                        continue
                    lemma = line[: line.find(" ")]
                    got = dict.get(self, lemma)
                    if got is None:
                        dict.__setitem__(self, lemma, [line])
                    else:
                        got.append(line)

    def __getitem__(self, lemma: str) -> dict:
        got = dict.get(self, lemma)
        if got is None:  # a defaultdict(dict), as nltk's
            got = {}
            dict.__setitem__(self, lemma, got)
        elif isinstance(got, list):
            got = self._parse(got)
            dict.__setitem__(self, lemma, got)
        return got

    def get(self, lemma: str, default=None):
        return self[lemma] if dict.__contains__(self, lemma) else default

    def _parse(self, lines: list[str]) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for line in lines:
            tokens = line.split()
            pos, n_synsets, n_pointers = tokens[1], int(tokens[2]), int(tokens[3])
            first = 4 + n_pointers + 2  # past the pointer symbols, the sense and tagged-sense counts
            offsets = [int(x) for x in tokens[first : first + n_synsets]]
            out[pos] = offsets
            if pos == self._adj:  # index.adj files satellites under "a": nltk lists them again under "s"
                out[self._adj_sat] = [x for x in offsets if x in self.satellites()]
        return out

    def satellites(self) -> set[int]:
        if self._satellites is None:
            found = set()
            with open(self._root / "data.adj", encoding="utf-8") as f:
                for line in f:
                    if line.startswith(" "):
                        continue
                    fields = line.split(" ", 3)
                    if len(fields) > 2 and fields[2] == "s":
                        found.add(int(fields[0]))
            self._satellites = found
        return self._satellites


def lazy_index_fits(nltk) -> bool:
    """Whether this nltk's WordNet reader is the one :class:`_LazyIndex` was written against (3.9
    and 3.10, whose loader it stands in for); any other reads its index as it always did."""
    from nltk.corpus.reader import wordnet as nltk_wordnet

    try:
        version = tuple(int(x) for x in nltk.__version__.split(".")[:2])
    except ValueError:
        return False
    reader = nltk_wordnet.WordNetCorpusReader
    return (3, 9) <= version < (3, 11) and all(hasattr(reader, m) for m in ("_scan_satellites", "_load_lemma_pos_offset_map", "_FILEMAP"))


@functools.lru_cache(maxsize=1)
def wordnet():
    """nltk's ``WordNetCorpusReader`` over the WordNet found by :func:`find_wordnet_dir`, its lemma
    index read lazily (:class:`_LazyIndex`): open in a fraction of a second instead of two."""
    nltk = import_nltk()
    from nltk.corpus.reader import wordnet as nltk_wordnet

    root = find_wordnet_dir()
    # nltk only opens corpora that lie under its data path
    if str(root) not in nltk.data.path:
        nltk.data.path.append(str(root))
    lazy = lazy_index_fits(nltk)

    class _Reader(nltk_wordnet.WordNetCorpusReader):
        # nltk maps other WordNet versions onto 3.0 through its own downloaded copy; this one is
        # 3.0 already (and OMW, the only user of that map, is not loaded)
        def map_wn(self, version: str = "wordnet"):
            return None

        if lazy:  # the nltk this was written against; another one reads as it always did

            def _scan_satellites(self) -> None:
                pass  # read by the lazy index when an adjective is first looked up

            def _load_lemma_pos_offset_map(self) -> None:
                self._lemma_pos_offset_map = _LazyIndex(root, self._FILEMAP, nltk_wordnet.ADJ, nltk_wordnet.ADJ_SAT)
                self.satellite_offsets = _Satellites(self._lemma_pos_offset_map)

    with warnings.catch_warnings():  # "multilingual functions are not available": we need none
        warnings.simplefilter("ignore", UserWarning)
        return _Reader(str(root), None)


class _Satellites:
    """nltk's ``satellite_offsets`` set, read when first asked (``in``, iteration, length)."""

    def __init__(self, index: _LazyIndex) -> None:
        self._index = index

    def __contains__(self, offset: object) -> bool:
        return offset in self._index.satellites()

    def __iter__(self):
        return iter(self._index.satellites())

    def __len__(self) -> int:
        return len(self._index.satellites())


@functools.lru_cache(maxsize=1)
def plural_exceptions() -> dict[str, list[str]]:
    """Irregular noun plurals from WordNet's ``noun.exc``: singular -> plurals (geese, mice, oxen).

    ``noun.exc`` maps inflected form -> base form(s); reversed here. Lines whose inflected form
    ends in 's' and equals the regular plural are kept too: they are harmless duplicates.
    """
    table: dict[str, list[str]] = {}
    # read where it lies: neither nltk nor the lexnames shim is needed for one plain text file
    with open(_wordnet_source_dir()[0] / "noun.exc", encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 2:
                continue
            inflected, bases = parts[0].replace("_", " "), parts[1:]
            for base in bases:
                table.setdefault(base.replace("_", " "), []).append(inflected)
    return {k: sorted(set(v)) for k, v in table.items()}


def synset_wnid(synset) -> str:
    """The ImageNet-style id of a synset: its POS letter and 8-digit offset (n02084071)."""
    return f"{synset.pos()}{synset.offset():08d}"


def wnid_synset(wn, wnid: str | None):
    """The synset of an ImageNet-style id in the reader ``wn``, or None for anything that is not
    one (no id, a made-up offset) without nltk's warning."""
    wnid = str(wnid or "")
    if len(wnid) < 2 or not wnid[1:].isdigit():
        return None
    with warnings.catch_warnings():  # nltk warns, then returns None, for an offset it lacks
        warnings.simplefilter("ignore")
        try:
            return wn.synset_from_pos_and_offset(wnid[0], int(wnid[1:]))
        except Exception:  # noqa: BLE001 - a POS letter nltk does not know
            return None
