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

ROW_BLOCK = 1 << 15


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
        return self.norms[index, None] * self.centroids[index].astype(np.float64)

    def without(self, unit: np.ndarray, rows: IdArray) -> IdentityTable:
        """The same identities with the faces ``rows`` left out of the sums (cost: those rows, not all)."""
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return self
        touched, slot = np.unique(self.codes[rows], return_inverse=True)
        removed = np.zeros((len(touched), unit.shape[1]), dtype=np.float64)
        np.add.at(removed, slot, np.asarray(unit[rows], dtype=np.float64))
        sums = self.sums(touched) - removed
        counts = self.counts.copy()
        counts[touched] -= np.bincount(slot, minlength=len(touched))
        centroids, norms = self.centroids.copy(), self.norms.copy()
        norms[touched] = np.linalg.norm(sums, axis=1)
        centroids[touched] = unit_rows(sums)
        return IdentityTable(self.ids, self.codes, counts, centroids, norms)

    def cohesion(self, unit: np.ndarray, keep: BoolArray | None = None) -> FloatArray:
        """Mean cosine of each identity's faces (those in ``keep``) to its centroid: (n_identities,) float32."""
        rows = np.flatnonzero(keep) if keep is not None else np.arange(len(self.codes))
        sims = rowwise_dot(unit, self.centroids, self.codes[rows], rows)
        return (np.bincount(self.codes[rows], weights=sims, minlength=len(self.ids)) /
                np.maximum(self.counts, 1)).astype(np.float32)


def identity_table(unit: np.ndarray, ids: IdArray, keep: BoolArray | None = None) -> IdentityTable:
    """Group the unit faces ``unit`` (n_faces, dim) by ``ids`` (n_faces,); ``keep`` leaves faces out of the sums.

    Faces left out still get a code (their identity's), but count towards neither ``counts`` nor the sums.
    Summed in row blocks of faces sorted by identity, each identity's float64 sum finished and stored as a
    float32 unit row as soon as its last face is seen: the temporaries stay at ``ROW_BLOCK`` x dim at any
    database size, and memory is the float32 centroids alone (no n_identities x dim float64 array).
    """
    unique, codes = np.unique(ids, return_inverse=True)
    weight = np.ones(len(ids), dtype=bool) if keep is None else keep
    counts = np.bincount(codes[weight], minlength=len(unique)).astype(np.int64)
    centroids = np.zeros((len(unique), unit.shape[1]), dtype=np.float32)
    norms = np.zeros(len(unique), dtype=np.float64)
    kept = np.flatnonzero(weight)
    kept = kept[np.argsort(codes[kept], kind="stable")]
    carry_code, carry = -1, np.zeros((0, unit.shape[1]))
    for first in range(0, len(kept), ROW_BLOCK):
        rows = kept[first : first + ROW_BLOCK]
        block_codes = codes[rows]
        starts = np.flatnonzero(np.r_[True, np.diff(block_codes) != 0])
        group_codes = block_codes[starts]
        sums = np.add.reduceat(np.asarray(unit[rows], dtype=np.float64), starts, axis=0)
        if len(carry) and group_codes[0] == carry_code:  # a group spanning blocks: finish it here
            sums[0] += carry[0]
        elif len(carry):
            _store(centroids, norms, np.array([carry_code]), carry)
        # the block's last group may go on in the next block: hold it back
        carry_code, carry = int(group_codes[-1]), sums[-1:].copy()
        _store(centroids, norms, group_codes[:-1], sums[:-1])
    if len(carry):
        _store(centroids, norms, np.array([carry_code]), carry)
    return IdentityTable(unique.astype(np.int64), codes.astype(np.int64), counts, centroids, norms)


def _store(centroids: FloatArray, norms: np.ndarray, codes: IdArray, sums: np.ndarray) -> None:
    """Write the unit rows and lengths of the float64 ``sums`` of the identities ``codes``."""
    lengths = np.linalg.norm(sums, axis=1)
    norms[codes] = lengths
    centroids[codes] = sums / np.where(lengths > 0, lengths, 1.0)[:, None]


def rowwise_dot(unit: np.ndarray, others: np.ndarray, index: IdArray, rows: IdArray | None = None) -> np.ndarray:
    """``unit[rows[i]] . others[index[i]]`` for every i, in row blocks (no n_faces x dim temporaries).

    ``rows`` None means all rows of ``unit`` in order. Returns float64 of shape (len(index),).
    """
    out = np.empty(len(index), dtype=np.float64)
    for first in range(0, len(index), ROW_BLOCK):
        chosen = slice(first, first + ROW_BLOCK)
        faces = unit[chosen] if rows is None else unit[rows[chosen]]
        out[chosen] = np.einsum("ij,ij->i", np.asarray(faces, dtype=np.float32), others[index[chosen]],
                                dtype=np.float64)
    return out


def unit_rows(vectors: np.ndarray) -> FloatArray:
    """Rows scaled to unit length (zero rows stay zero), float32."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)


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

