"""Near-duplicate removal over embeddings, SemDeDup-style (Abbas et al. 2023).

Two rows are near-duplicates when the cosine similarity of their embeddings is above
``1 - eps``. The candidate pairs come from a faiss index chosen by size (:mod:`curate.knn`):
below ``FLAT_LIMIT`` vectors an exact search over every pair; above it, SemDeDup's k-means
clusters as an inverted file, each row compared with the rows of its ``nprobe`` nearest clusters
(a pair is found when either row searches the other's cluster, which also catches pairs that
straddle a cluster boundary).

Which row of a group stays: the earliest (lowest position), and a row is removed only when a row
that *stays* is its near-duplicate — so every removal names a kept partner above the threshold,
and a chain a~b~c where a and c are not near-duplicates keeps both a and c.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curate.errors import CurateError
from curate.knn import build_index, range_pairs


@dataclass
class DedupResult:
    keep: np.ndarray  # bool per row
    removed: np.ndarray  # positions removed, ascending
    kept_partner: np.ndarray  # for each removed row, the kept row it duplicates (most similar)
    similarity: np.ndarray  # cosine of each (removed, kept_partner)
    candidate_pairs: int  # pairs above the threshold the index found
    index: str  # how the pairs were searched (VectorIndex.describe())


def near_duplicates(
    x: np.ndarray, *, eps: float, index: str = "auto", nlist: int | None = None, nprobe: int | None = None, seed: int = 0
) -> DedupResult:
    """Mark near-duplicate rows of ``x`` (normalised float32) for removal (see the module docstring)."""
    if not 0 < eps < 2:
        raise CurateError(f"--eps {eps}: must be in (0, 2) (pairs with cosine > 1 - eps are duplicates)")
    n = len(x)
    threshold = 1.0 - eps
    vindex = build_index(x, kind=index, nlist=nlist, nprobe=nprobe, seed=seed)
    i, j, sim = range_pairs(vindex, x, threshold)
    keep = np.ones(n, dtype=bool)
    partner = np.full(n, -1, dtype=np.int64)
    best = np.full(n, -np.inf, dtype=np.float32)
    # pairs come sorted by (j, i): when j is reached, every i < j has its final status
    bounds = np.flatnonzero(np.r_[True, j[1:] != j[:-1], True]) if len(j) else np.zeros(1, np.int64)
    for a, b in zip(bounds[:-1], bounds[1:]):
        jj = int(j[a])
        ii, ss = i[a:b], sim[a:b]
        alive = keep[ii]
        if alive.any():
            k = int(np.argmax(np.where(alive, ss, -np.inf)))
            keep[jj] = False
            partner[jj], best[jj] = ii[k], ss[k]
    removed = np.flatnonzero(~keep)
    return DedupResult(keep, removed, partner[removed], best[removed], len(i), vindex.describe())
