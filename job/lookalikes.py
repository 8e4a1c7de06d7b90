"""Look-alike identities: pairs of different people whose faces are most alike.

The similarity of identities a and b is the mean cosine between a face of a and a face of b,
``sum_a . sum_b / (n_a n_b)`` from the identity sums, which does not favour identities with many or few
faces the way a centroid cosine does. Up to ``ALL_PAIRS_MAX`` identities every pair is scored; above,
candidate pairs come from each identity's ``k`` nearest centroids (exact up to ``exact_max`` identities,
NN-descent above), so the cost is n_identities x k, not all pairs — and a pair above the threshold whose
centroids are not among each other's ``k`` nearest is not listed.
Faces flagged as misfiled should be left out of the table first, or one misfiled face makes its two
identities look alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from job.arrays import FloatArray, IdArray
from job.identities import IdentityTable
from job.knn import neighbours

ALL_PAIRS_MAX = 2000


@dataclass(frozen=True)
class Lookalikes:
    """Identity pairs, most alike first: ``id_a < id_b`` int64 and ``similarity`` float32, each (n_pairs,)."""

    id_a: IdArray
    id_b: IdArray
    similarity: FloatArray


def find_lookalikes(table: IdentityTable, k: int = 10, top: int = 100, threshold: float = 0.3,
                    exact_max: int = 50_000) -> Lookalikes:
    """The ``top`` most alike pairs, plus every scored pair above ``threshold``.

    Only identities with at least one face in ``table`` take part.
    """
    present = np.flatnonzero(table.counts > 0)
    if len(present) < 2:
        empty = np.zeros(0, dtype=np.int64)
        return Lookalikes(empty, empty, np.zeros(0, dtype=np.float32))
    sums, counts = table.sums[present], table.counts[present].astype(np.float64)
    centroids = (sums / np.linalg.norm(sums, axis=1, keepdims=True)).astype(np.float32)
    within = _within(sums, counts)
    if len(present) <= ALL_PAIRS_MAX:  # few identities: every pair, so nothing above the threshold is missed
        scale = counts * np.sqrt(within)
        matrix = (sums @ sums.T) / np.outer(scale, scale)
        a, b = np.triu_indices(len(present), k=1)
        similarity = matrix[a, b].astype(np.float32)
    else:
        graph = neighbours(centroids, min(k + 1, len(present)), exact_max).indices[:, 1:]
        a = np.repeat(np.arange(len(present)), graph.shape[1])
        b = graph.ravel().astype(np.int64)
        valid = (b >= 0) & (a != b)
        a, b = np.minimum(a[valid], b[valid]), np.maximum(a[valid], b[valid])
        pairs = np.unique(np.stack([a, b], axis=1), axis=0)
        a, b = pairs[:, 0], pairs[:, 1]
        cross = np.empty(len(a))
        for first in range(0, len(a), 1 << 16):  # blocks: no n_pairs x dim temporaries
            block = slice(first, first + (1 << 16))
            cross[block] = np.einsum("ij,ij->i", sums[a[block]], sums[b[block]])
        similarity = (cross / (counts[a] * counts[b]) / np.sqrt(within[a] * within[b])).astype(np.float32)
    order = np.argsort(-similarity, kind="stable")
    keep = order[: max(top, int((similarity > threshold).sum()))]
    return Lookalikes(table.ids[present[a[keep]]], table.ids[present[b[keep]]], similarity[keep])


def _within(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mean cosine between two faces of each identity; identities with one face get the median of the rest."""
    pairs = counts * (counts - 1)
    within = np.where(pairs > 0, (np.einsum("ij,ij->i", sums, sums) - counts) / np.where(pairs > 0, pairs, 1), np.nan)
    typical = float(np.nanmedian(within)) if np.isfinite(within).any() else 1.0
    return np.clip(np.where(np.isfinite(within), within, typical), 0.05, None)
