"""Identities in the embedding space: dense codes, per-identity sums and unit centroids.

Every analysis verdict (suspect, look-alike, nearest identity) compares a face with identity centroids, so
this module is the one place that builds them. Cost is one pass over the faces (n_faces x dim) and memory
is n_identities x dim float32, whatever the database size: nothing here is all-pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from job.arrays import BoolArray, FloatArray, IdArray
from job.knn.graph import top_k
from job.space.faces import Faces, as_faces
from job.xp import namespace


@dataclass(frozen=True)
class IdentityTable:
    """The identities of a set of unit-length faces.

    Attributes
    ----------
    ids : ndarray of shape (n_identities,), int64 — sorted identity ids
    codes : ndarray of shape (n_faces,), int64 — index into ``ids`` of each face
    counts : ndarray of shape (n_identities,), int64 — faces summed per identity
    centroids : ndarray of shape (n_identities, dim), float32 — unit mean face of each identity (zero rows for
        an identity with no face summed)
    norms : ndarray of shape (n_identities,), float64 — length of each identity's sum of unit faces, so that
        ``sum = norms[:, None] * centroids``
    """

    ids: IdArray
    codes: IdArray
    counts: IdArray
    centroids: FloatArray
    norms: np.ndarray

    def sums(self, index: IdArray | slice = slice(None)) -> np.ndarray:
        """Sums of unit faces of the identities ``index``: (len, dim) float64."""
        sums: np.ndarray = self.norms[index, None] * self.centroids[index].astype(self.norms.dtype)
        return sums

    def without(self, unit: Faces | np.ndarray, rows: IdArray) -> IdentityTable:
        """The same identities with the faces ``rows`` left out of the sums (cost: those rows, not all)."""
        xp = namespace(self.codes)
        rows = xp.asarray(rows, dtype=xp.int64)
        if not len(rows):
            return self
        touched, slot = xp.unique(self.codes[rows], return_inverse=True)
        slot = slot.reshape(-1)  # NumPy 2.0 shaped the inverse like its input
        faces = as_faces(unit)
        removed = xp.zeros((len(touched), faces.dim), dtype=xp.float64)
        xp.add.at(removed, slot, faces.rows(rows).astype(xp.float64))
        sums = self.sums(touched) - removed
        counts = self.counts.copy()
        counts[touched] -= xp.bincount(slot, minlength=len(touched))
        centroids, norms = self.centroids.copy(), self.norms.copy()
        norms[touched] = xp.linalg.norm(sums, axis=1)
        centroids[touched] = unit_rows(sums)
        return IdentityTable(self.ids, self.codes, counts, centroids, norms)

    def cohesion(self, unit: Faces | np.ndarray, keep: BoolArray | None = None) -> FloatArray:
        """Mean cosine of each identity's faces (those in ``keep``) to its centroid: (n_identities,) float32."""
        xp = namespace(self.codes)
        rows = xp.flatnonzero(keep) if keep is not None else xp.arange(len(self.codes))
        sims = as_faces(unit).rowwise_dot(self.centroids, self.codes[rows], rows)
        mean: FloatArray = (xp.bincount(self.codes[rows], weights=sims, minlength=len(self.ids)) /
                            xp.maximum(self.counts, 1)).astype(xp.float32)
        return mean


def identity_table(unit: Faces | np.ndarray, ids: IdArray, keep: BoolArray | None = None) -> IdentityTable:
    """Group the unit faces ``unit`` (n_faces, dim) by ``ids`` (n_faces,); ``keep`` leaves faces out of the sums.

    Faces left out still get a code (their identity's), but count towards neither ``counts`` nor the sums.
    The sums are one pass over the faces where they are held (:meth:`job.space.faces.Faces.identity_sums`);
    memory is the float32 centroids alone (no n_identities x dim float64 array).
    """
    faces = as_faces(unit)
    xp = faces.xp
    ids = xp.asarray(ids)
    unique, codes = xp.unique(ids, return_inverse=True)
    codes = codes.reshape(-1)
    weight = xp.ones(len(ids), dtype=bool) if keep is None else xp.asarray(keep)
    counts = xp.bincount(codes[weight], minlength=len(unique)).astype(xp.int64)
    centroids, norms = faces.identity_sums(xp.where(weight, codes, -1), len(unique))
    return IdentityTable(unique.astype(xp.int64), codes.astype(xp.int64), counts, centroids, norms)


def unit_rows(vectors: np.ndarray) -> FloatArray:
    """Rows scaled to unit length (zero rows stay zero), float32."""
    xp = namespace(vectors)
    norms = xp.linalg.norm(vectors, axis=1, keepdims=True)
    unit: FloatArray = (vectors / xp.where(norms > 0, norms, 1.0)).astype(xp.float32)
    return unit


def top_similar(queries: np.ndarray, centroids: FloatArray, k: int, block_bytes: int = 64 << 20
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
        sims = np.asarray(queries[start : start + block], dtype=np.float32) @ centroids.T
        indices[start : start + block], similarity[start : start + block] = top_k(sims, k)
    return indices, similarity

