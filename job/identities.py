"""Identities in the embedding space: dense codes, per-identity sums and unit centroids.

Every analysis verdict (suspect, look-alike, nearest identity) compares a face with identity centroids, so
this module is the one place that builds them. Cost is one pass over the faces (n_faces x dim) and memory
is n_identities x dim, whatever the database size: nothing here is all-pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from job.arrays import BoolArray, FloatArray, IdArray
from job.knn import top_k


@dataclass(frozen=True)
class IdentityTable:
    """The identities of a set of unit-length faces.

    Attributes
    ----------
    ids : ndarray of shape (n_identities,), int64 — sorted identity ids
    codes : ndarray of shape (n_faces,), int64 — index into ``ids`` of each face
    counts : ndarray of shape (n_identities,), int64 — faces per identity
    sums : ndarray of shape (n_identities, dim), float64 — sum of each identity's unit faces
    """

    ids: IdArray
    codes: IdArray
    counts: IdArray
    sums: np.ndarray

    @property
    def centroids(self) -> FloatArray:
        """Unit-length mean face of each identity: (n_identities, dim) float32."""
        return unit_rows(self.sums)

    def cohesion(self, unit: FloatArray) -> FloatArray:
        """Mean cosine of each identity's faces to its centroid (1.0 for one face): (n_identities,) float32."""
        centroids = self.centroids
        sims = np.einsum("ij,ij->i", unit, centroids[self.codes])
        return (np.bincount(self.codes, weights=sims, minlength=len(self.ids)) /
                np.maximum(self.counts, 1)).astype(np.float32)


def identity_table(unit: FloatArray, ids: IdArray, keep: BoolArray | None = None) -> IdentityTable:
    """Group the unit faces ``unit`` (n_faces, dim) by ``ids`` (n_faces,); ``keep`` leaves faces out of the sums.

    Faces left out still get a code (their identity's), but count towards neither ``counts`` nor ``sums``.
    """
    unique, codes = np.unique(ids, return_inverse=True)
    weight = np.ones(len(ids), dtype=bool) if keep is None else keep
    counts = np.bincount(codes[weight], minlength=len(unique)).astype(np.int64)
    sums = np.zeros((len(unique), unit.shape[1]), dtype=np.float64)
    order = np.argsort(codes[weight], kind="stable")
    kept = np.flatnonzero(weight)[order]
    if len(kept):
        starts = np.flatnonzero(np.r_[True, np.diff(codes[kept]) != 0])
        block = 1 << 18  # rows per reduceat call: bounded float64 temporaries at millions of faces
        for first in range(0, len(starts), block):
            group_starts = starts[first : first + block]
            stop = starts[first + block] if first + block < len(starts) else len(kept)
            rows = kept[group_starts[0] : stop]
            sums[codes[rows[group_starts - group_starts[0]]]] = np.add.reduceat(
                unit[rows].astype(np.float64), group_starts - group_starts[0], axis=0)
    return IdentityTable(unique.astype(np.int64), codes.astype(np.int64), counts, sums)


def unit_rows(vectors: np.ndarray) -> FloatArray:
    """Rows scaled to unit length (zero rows stay zero), float32."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def top_similar(queries: FloatArray, centroids: FloatArray, k: int, block_bytes: int = 256 << 20
                ) -> tuple[np.ndarray, FloatArray]:
    """The ``k`` centroids most cosine-similar to each unit query, best first.

    Exact, in blocks of queries so memory stays at ``block_bytes``; cost n_queries x n_centroids x dim.

    Returns
    -------
    indices : ndarray of shape (n_queries, k), int64
    similarity : ndarray of shape (n_queries, k), float32
    """
    n, m = len(queries), len(centroids)
    k = min(k, m)
    indices = np.empty((n, k), dtype=np.int64)
    similarity = np.empty((n, k), dtype=np.float32)
    block = max(1, block_bytes // (4 * max(m, 1)))
    for start in range(0, n, block):
        sims = queries[start : start + block] @ centroids.T
        indices[start : start + block], similarity[start : start + block] = top_k(sims, k)
    return indices, similarity
