"""The kNN graph every stage shares, and the small pieces of arithmetic it is made with.

One graph is built per run (:func:`job.knn.index.face_graph`): each face's ``k`` nearest *reference* faces
(the faces the UMAP map is fitted on), by cosine. A reference face finds itself first. umap-learn gets the
reference rows as its ``precomputed_knn``; placement of the other faces, the misfiled-face candidates, the
look-alike candidates and the held-out check read the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from job.arrays import FloatArray, IdArray
from job.xp import namespace


@dataclass(frozen=True)
class Neighbors:
    """A kNN graph of one set of points among themselves: ``indices`` (n, k) int32 with each point itself
    first, ``distances`` (n, k) float32 cosine distances (1 - cos), and ``method``, the index that found it."""

    indices: np.ndarray
    distances: FloatArray
    method: str = "exact"


@dataclass(frozen=True)
class FaceGraph:
    """Every face's nearest reference faces.

    Attributes
    ----------
    reference : ndarray of shape (n_reference,), int64 — face rows of the reference faces (the fit sample)
    indices : ndarray of shape (n_faces, k), int32 — positions in ``reference``, nearest first; row
        ``reference[i]`` starts with ``i`` itself; -1 marks a neighbour the index did not find
    distances : ndarray of shape (n_faces, k), float32 — cosine distance 1 - cos (inf where -1)
    method : the index that built it (a key of :data:`job.knn.index.INDEXES`)
    reason : why that index was chosen, as recorded in run.json
    """

    reference: IdArray
    indices: np.ndarray
    distances: FloatArray
    method: str
    reason: str

    @property
    def k(self) -> int:
        return int(self.indices.shape[1])

    def among_reference(self, k: int) -> Neighbors:
        """The reference faces' own graph, ``k`` columns, self first, missing entries replaced by the row
        itself at distance 0 (a self-loop every user ignores): what umap-learn takes as ``precomputed_knn``."""
        xp = namespace(self.indices)
        rows = self.indices[self.reference, :k]
        own = xp.arange(len(self.reference))
        missing = rows < 0
        indices = xp.where(missing, own[:, None], rows).astype(xp.int32)
        distances = xp.where(missing, 0.0, self.distances[self.reference, :k]).astype(xp.float32)
        return Neighbors(xp.ascontiguousarray(indices), xp.ascontiguousarray(distances), self.method)

    def neighbour_rows(self, columns: slice) -> IdArray:
        """Face rows of the neighbours in ``columns`` (n_faces, width), int64; -1 stays -1."""
        xp = namespace(self.indices)
        block = self.indices[:, columns]
        rows: IdArray = xp.where(block >= 0, self.reference[xp.maximum(block, 0)], -1)
        return rows


def top_k(sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices and values of the ``k`` largest entries of each row of ``sims`` (rows, n), largest first.

    Instead of arg-partitioning whole rows (most of the cost of an exact kNN), the k-th largest value of
    each row among its first ``m`` columns is a lower bound for the row's k-th largest, so only entries at
    or above it (about k * n / m per row) are sorted. Same result as a full sort, ties broken by column.
    """
    n_rows, n = sims.shape
    k = min(k, n)
    m = min(n, max(8 * k, 2048))
    if 2 * m > n:
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < n else np.tile(np.arange(n), (n_rows, 1))
        values = np.take_along_axis(sims, top, axis=1)
        order = np.lexsort((top, -values), axis=1)
        return np.take_along_axis(top, order, axis=1), np.take_along_axis(values, order, axis=1)
    floor = np.partition(sims[:, :m], m - k, axis=1)[:, m - k]
    row, col = np.nonzero(sims >= floor[:, None])
    values = sims[row, col]
    order = np.lexsort((col, -values, row))
    row, col, values = row[order], col[order], values[order]
    rank = np.arange(len(row)) - np.searchsorted(row, row)
    keep = rank < k
    indices = np.empty((n_rows, k), dtype=np.int64)
    top_values = np.empty((n_rows, k), dtype=sims.dtype)
    indices[row[keep], rank[keep]] = col[keep]
    top_values[row[keep], rank[keep]] = values[keep]
    return indices, top_values


def self_first(found: np.ndarray, similarity: np.ndarray, own: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Put each row's own position ``own`` (n,) first (similarity 1), then its other neighbours in order.

    An approximate index can miss a point's own entry, or rank an exact duplicate before it; the row
    keeps its width, so the last neighbour drops out when the point was missing. Rows with ``own`` -1 (not
    a reference face) are left as they are.
    """
    xp = namespace(found)
    is_self = found == own[:, None]
    order = xp.argsort((~is_self).astype(xp.int8), axis=1, kind="stable")  # its own entry first, the rest in order
    found = xp.take_along_axis(found, order, axis=1)
    similarity = xp.take_along_axis(similarity, order, axis=1)
    lacking = (own >= 0) & ~is_self.any(axis=1)
    if bool(lacking.any()):
        found[lacking] = xp.concatenate([own[lacking, None], found[lacking, :-1]], axis=1)
        similarity[lacking] = xp.concatenate([xp.ones((int(lacking.sum()), 1), similarity.dtype),
                                              similarity[lacking, :-1]], axis=1)
    reference = own >= 0
    similarity[reference, 0] = 1.0
    return found, similarity


def normalise(embeddings: np.ndarray) -> FloatArray:
    """Unit-length float32 copy of ``embeddings`` (n, dim); rows must be non-zero.

    Norms are taken in float64, so vectors of any finite float32 magnitude keep their direction.
    """
    vectors = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit: FloatArray = (vectors / norms).astype(np.float32)
    return unit
