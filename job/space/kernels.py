"""The array passes over every face, written once for NumPy and CuPy arrays (:mod:`job.xp`).

These are what a :class:`job.space.faces.Faces` runs where it holds the faces: on the host, on the GPU, or
chunk by chunk on a Dask worker (:mod:`job.cluster.tasks`). Each works in blocks of ``ROW_BLOCK`` rows, so its
temporaries stay at ``ROW_BLOCK`` x dim whatever the database size.
"""

from __future__ import annotations

import numpy as np

from job.arrays import FloatArray, IdArray
from job.xp import group_sums, namespace, run_starts

ROW_BLOCK = 1 << 15


def sum_identities(unit: np.ndarray, codes: IdArray, n_identities: int) -> tuple[FloatArray, np.ndarray]:
    """Unit centroids (n_identities, dim) float32 and sum lengths (n_identities,) float64 of the faces of
    ``unit`` with ``codes`` >= 0 (-1: left out; zero rows for an identity with no face summed).

    Summed in row blocks of faces sorted by identity, each identity's float64 sum finished and stored as a
    float32 unit row as soon as its last face is seen: no n_identities x dim float64 array.
    """
    xp = namespace(codes)
    centroids = xp.zeros((n_identities, unit.shape[1]), dtype=xp.float32)
    norms = xp.zeros(n_identities, dtype=xp.float64)
    kept = xp.flatnonzero(codes >= 0)
    kept = kept[xp.argsort(codes[kept], kind="stable")]
    carry_code, carry = -1, xp.zeros((0, unit.shape[1]))
    for first in range(0, len(kept), ROW_BLOCK):
        rows = kept[first : first + ROW_BLOCK]
        block_codes = codes[rows]
        starts = run_starts(block_codes)
        group_codes = block_codes[starts]
        sums = group_sums(unit[rows].astype(xp.float64), starts)
        if len(carry) and int(group_codes[0]) == carry_code:  # a group spanning blocks: finish it here
            sums[0] += carry[0]
        elif len(carry):
            store_sums(centroids, norms, xp.asarray([carry_code]), carry)
        # the block's last group may go on in the next block: hold it back
        carry_code, carry = int(group_codes[-1]), sums[-1:].copy()
        store_sums(centroids, norms, group_codes[:-1], sums[:-1])
    if len(carry):
        store_sums(centroids, norms, xp.asarray([carry_code]), carry)
    return centroids, norms


def store_sums(centroids: FloatArray, norms: np.ndarray, codes: IdArray, sums: np.ndarray) -> None:
    """Write the unit rows and lengths of the float64 ``sums`` of the identities ``codes``."""
    xp = namespace(sums)
    lengths = xp.linalg.norm(sums, axis=1)
    norms[codes] = lengths
    centroids[codes] = sums / xp.where(lengths > 0, lengths, 1.0)[:, None]


def rowwise_dot(unit: np.ndarray, others: np.ndarray, index: IdArray, rows: IdArray | None = None) -> np.ndarray:
    """``unit[rows[i]] . others[index[i]]`` for every i, in row blocks (no n_faces x dim temporaries).

    ``rows`` None means all rows of ``unit`` in order. Returns float64 of shape (len(index),).
    """
    xp = namespace(index)
    out: np.ndarray = xp.empty(len(index), dtype=xp.float64)
    for first in range(0, len(index), ROW_BLOCK):
        chosen = slice(first, first + ROW_BLOCK)
        faces = unit[chosen] if rows is None else unit[rows[chosen]]
        out[chosen] = xp.einsum("ij,ij->i", faces.astype(xp.float32, copy=False), others[index[chosen]],
                                dtype=xp.float64)
    return out


def best_candidate(unit: np.ndarray, centroids: FloatArray, scale: np.ndarray, candidates: IdArray, codes: IdArray
                   ) -> tuple[np.ndarray, IdArray]:
    """Each face's highest ``unit . centroids[d] * scale[d]`` over its candidate identities other than its own
    (n_faces,) float64, and that identity d (-1: none).

    ``candidates`` (n_faces, m) identity codes, -1 = none. Faces are converted once per block of rows, then
    each candidate column is one gathered dot product.
    """
    xp = namespace(codes)
    n_faces = len(codes)
    best_value = xp.full(n_faces, -xp.inf)
    best = xp.full(n_faces, -1, dtype=xp.int64)
    for first in range(0, n_faces, ROW_BLOCK):
        rows = slice(first, first + ROW_BLOCK)
        faces = unit[rows].astype(xp.float32, copy=False)
        own, top, top_value = codes[rows], best[rows], best_value[rows]
        for candidate in candidates[rows].T:
            safe = xp.maximum(candidate, 0)
            value = xp.einsum("ij,ij->i", faces, centroids[safe]) * scale[safe]  # float32: only compared
            better = (candidate >= 0) & (candidate != own) & (value > top_value)
            top_value[better], top[better] = value[better], candidate[better]
    return best_value, best
