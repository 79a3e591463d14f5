"""Nearest neighbours over normalised embeddings, through faiss (imported only when asked for).

Owns the choice of index by size — exact inner product (``flat``) below ``FLAT_LIMIT`` vectors,
an inverted file over k-means clusters (``ivf``: faiss's IndexIVFFlat, ``nlist`` clusters, the
``nprobe`` nearest searched) above it — and the three searches the similarity stage needs:
k nearest (:func:`search`), every pair above a cosine threshold (:func:`range_pairs`), and
k-means (:func:`kmeans`). Vectors are float32 and L2-normalised, so inner product = cosine.

faiss-cpu is a dependency; the GPU build (extra ``gpu``) replaces it on a CUDA machine with the
same module name. Nothing here imports faiss until an index is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from curate.errors import CurateError

FLAT_LIMIT = 100_000  # below this many vectors an exact search is cheap enough
INDEX_KINDS = ("auto", "flat", "ivf")
_QUERY_CHUNK = 4096


def faiss_module():
    """The faiss module, or a clear error naming the package to install."""
    try:
        import faiss
    except ImportError:
        raise CurateError(
            "this step needs faiss: pip install faiss-cpu (or curate's gpu extra on a CUDA machine)"
        ) from None
    return faiss


@dataclass
class VectorIndex:
    """A built faiss index and how it was chosen (for the output to say)."""

    index: object
    kind: str  # flat or ivf
    size: int
    dim: int
    nlist: int = 0
    nprobe: int = 0

    def describe(self) -> str:
        if self.kind == "flat":
            return f"exact inner-product index (faiss IndexFlatIP) over {self.size:,} vectors"
        return f"IVF index (faiss IndexIVFFlat, {self.nlist} k-means clusters, {self.nprobe} searched per query) over {self.size:,} vectors"


def _as_float32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def default_nlist(n: int) -> int:
    # faiss's rule of thumb: about 4·sqrt(n) lists, at least ~40 training points per list
    return max(1, min(int(4 * math.sqrt(n)), n // 40 or 1))


def build_index(
    x: np.ndarray, *, kind: str = "auto", nlist: int | None = None, nprobe: int | None = None, seed: int = 0
) -> VectorIndex:
    """An inner-product index over the rows of ``x`` (normalised float32), chosen by size."""
    if kind not in INDEX_KINDS:
        raise CurateError(f"--index {kind!r} is not one of {', '.join(INDEX_KINDS)}")
    faiss = faiss_module()
    x = _as_float32(x)
    n, d = x.shape
    if kind == "auto":
        kind = "flat" if n < FLAT_LIMIT else "ivf"
    if kind == "flat" or n == 0:
        index = faiss.IndexFlatIP(d)
        index.add(x)
        return VectorIndex(index, "flat", n, d)
    nlist = min(nlist or default_nlist(n), n)
    nprobe = min(nprobe or max(16, nlist // 16), nlist)  # ~6% of the data searched per query
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.cp.spherical = True  # centroids renormalised: clusters of directions
    index.cp.niter = 10  # faiss defaults to 25; assignments barely move after ~10 on embeddings
    index.train(x)
    index.add(x)
    index.nprobe = nprobe
    return VectorIndex(index, "ivf", n, d, nlist, nprobe)


def search(vindex: VectorIndex, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(similarities, ids)``, each ``[len(queries), k]``, nearest first (id -1 where fewer)."""
    q = _as_float32(queries)
    k = max(1, int(k))
    sims = np.empty((len(q), k), dtype=np.float32)
    ids = np.empty((len(q), k), dtype=np.int64)
    for s in range(0, len(q), _QUERY_CHUNK):
        d, i = vindex.index.search(q[s : s + _QUERY_CHUNK], k)
        sims[s : s + _QUERY_CHUNK], ids[s : s + _QUERY_CHUNK] = d, i
    return sims, ids


def range_pairs(vindex: VectorIndex, x: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair ``i < j`` of the indexed rows ``x`` with cosine > ``threshold`` (within the
    searched clusters for an IVF index): ``(i, j, similarity)``, sorted by (j, i)."""
    x = _as_float32(x)
    out_i, out_j, out_s = [], [], []
    for s in range(0, len(x), _QUERY_CHUNK):
        lims, d, ids = vindex.index.range_search(x[s : s + _QUERY_CHUNK], float(threshold))
        lims = lims.astype(np.int64)
        q = np.repeat(np.arange(s, s + len(lims) - 1, dtype=np.int64), np.diff(lims))
        ids = ids.astype(np.int64)
        keep = (ids != q) & (ids >= 0) & (d > threshold)  # a vector's match with itself dropped
        # a pair is kept from whichever side found it: with an IVF index, i may search j's
        # cluster while j does not search i's
        out_i.append(np.minimum(q[keep], ids[keep]))
        out_j.append(np.maximum(q[keep], ids[keep]))
        out_s.append(d[keep].astype(np.float32))
    if not out_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    i, j, sim = np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_s)
    order = np.lexsort((i, j))
    i, j, sim = i[order], j[order], sim[order]
    first = np.ones(len(i), dtype=bool)
    first[1:] = (i[1:] != i[:-1]) | (j[1:] != j[:-1])
    return i[first], j[first], sim[first]


def kmeans(x: np.ndarray, k: int, *, seed: int = 0, niter: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means: ``(centroids [k, d], assignment [n])``."""
    faiss = faiss_module()
    x = _as_float32(x)
    k = max(1, min(int(k), len(x)))
    km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed, spherical=True, verbose=False)
    km.train(x)
    _, assign = km.index.search(x, 1)
    return km.centroids.copy(), assign[:, 0].astype(np.int64)
