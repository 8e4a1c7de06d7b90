"""Exact nearest neighbours by cosine, for reference sets small enough to afford them.

Cosine similarity of unit vectors is their dot product, so the exact neighbours of a block of queries are one
matrix product against the whole reference set; blocks keep memory at ``BLOCK_BYTES``. Cost grows as
n_queries x n_reference x dim, which is why :func:`job.knn.index.resolve` hands large reference sets to an
approximate index.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from job.arrays import FloatArray
from job.knn.graph import Neighbors, top_k

BLOCK_BYTES = 64 << 20


class ExactIndex:
    """Blocked matrix products against every reference face: exact, n_queries x n_reference x dim."""

    name: ClassVar[str] = "exact"
    batched: ClassVar[bool] = False  # configured with the run's batching (configure_batches)
    graphs_reference: ClassVar[bool] = False  # builds the reference faces' own graph (reference_graph)

    def __init__(self, seed: int | None = None, thorough: bool = False) -> None:
        self.reference: FloatArray = np.zeros((0, 0), dtype=np.float32)

    def build(self, reference: np.ndarray) -> None:
        """Keep the unit reference vectors (n_reference, dim) as float32."""
        self.reference = np.ascontiguousarray(reference, dtype=np.float32)

    def query(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, FloatArray]:
        """Positions (n, k) int64 and cosine similarities (n, k) float32 of each query's ``k`` nearest
        reference faces, nearest first (ties by position)."""
        n_reference = len(self.reference)
        k = min(k, n_reference)
        block = max(1, BLOCK_BYTES // (4 * max(n_reference, 1)))
        indices = np.empty((len(queries), k), dtype=np.int64)
        similarity = np.empty((len(queries), k), dtype=np.float32)
        for start in range(0, len(queries), block):
            sims = np.asarray(queries[start:start + block], dtype=np.float32) @ self.reference.T
            indices[start:start + block], similarity[start:start + block] = top_k(sims, k)
        return indices, similarity


def exact_knn(unit: FloatArray, k: int, metric: str = "cosine") -> Neighbors:
    """Exact k nearest neighbours of every row of ``unit`` among the rows, itself first (even beside an exact
    duplicate).

    Parameters
    ----------
    unit : ndarray of shape (n, dim), float32, unit rows
    k : neighbours per row, including the row itself
    metric : "cosine" (1 - dot) or "euclidean" (on the unit vectors, sqrt(2 - 2 dot))
    """
    n = len(unit)
    k = min(k, n)
    block = max(1, min(n, BLOCK_BYTES // (4 * max(n, 1))))
    indices = np.empty((n, k), dtype=np.int32)
    similarity = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, block):
        stop = min(start + block, n)
        sims = unit[start:stop] @ unit.T
        rows = np.arange(stop - start)
        sims[rows, rows + start] = np.inf  # the row itself first, even when an exact duplicate ties with it
        indices[start:stop], similarity[start:stop] = top_k(sims, k)
    similarity[:, 0] = 1.0
    np.clip(similarity, -1.0, 1.0, out=similarity)
    distances = 1.0 - similarity if metric == "cosine" else np.sqrt(np.maximum(2.0 - 2.0 * similarity, 0.0))
    distances[:, 0] = 0.0
    return Neighbors(indices, distances.astype(np.float32))
