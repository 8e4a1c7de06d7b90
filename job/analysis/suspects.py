"""Misfiled faces: faces that look more like another identity than like the one they are filed under.

Decided in the embedding space, never on the map. For face i filed under identity c:

* ``own`` = cosine of i to the centroid of c's *other* faces (leave-one-out, so a face does not vouch for
  itself). An identity with a single face has no other faces: its ``own`` is the database's median
  ``own`` ("as alike as a typical face is to its own identity"), so a lone face gets an honest score — but
  it is never a suspect, by the majority rule below: one face cannot be outvoted by its own identity.
* ``other`` = best cosine of i to another identity's centroid, among candidate identities: those of i's
  ``k`` nearest faces in the run's kNN graph, and the ``m`` identities whose centroids are most like c's
  (:mod:`job.analysis.candidates`). So the cost is n_faces x (k + m) x dim on top of the one
  shared graph, never all pairs.
* ``score`` = ``other - own``; a face is a suspect when the score exceeds ``margin`` (>= 0; 0: more like
  another identity than like its own). ``suggested_id`` is the most similar identity of all, its own included.
* When more than half of an identity's faces pass the margin, none of them is a suspect: the identity as a
  whole resembles another (a look-alike, or one person filed under two ids), which ``lookalikes`` reports.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from job.arrays import BoolArray, FloatArray, IdArray
from job.analysis.identities import ROW_BLOCK, IdentityTable, rowwise_dot


@dataclass(frozen=True)
class SuspectScores:
    """Per-face verdicts, each of shape (n_faces,).

    ``score`` float32 (higher = more likely misfiled), ``suspect`` bool, ``suggested_id`` int64 (-1: no
    identity to compare with), ``own`` and ``other`` float32 cosines the score is made of, ``lone`` bool
    (the face is its identity's only face, scored against the median ``own``).
    """

    score: FloatArray
    suspect: BoolArray
    suggested_id: IdArray
    own: FloatArray
    other: FloatArray
    lone: BoolArray


def best_other(unit: np.ndarray, centroids: FloatArray, candidates: IdArray, codes: IdArray
               ) -> tuple[FloatArray, IdArray]:
    """Best cosine of each face to a candidate identity other than its own, and that identity (-1: none).

    ``candidates`` (n_faces, m) identity codes, -1 = none. Faces are converted once per block of rows, then
    each candidate column is one gathered dot product.
    """
    n_faces = len(codes)
    other = np.full(n_faces, -np.inf, dtype=np.float32)
    best = np.full(n_faces, -1, dtype=np.int64)
    for first in range(0, n_faces, ROW_BLOCK):
        rows = slice(first, first + ROW_BLOCK)
        faces = np.asarray(unit[rows], dtype=np.float32)
        own, top, top_sim = codes[rows], best[rows], other[rows]
        for candidate in candidates[rows].T:
            sims = np.einsum("ij,ij->i", faces, centroids[np.maximum(candidate, 0)])
            better = (candidate >= 0) & (candidate != own) & (sims > top_sim)
            top_sim[better], top[better] = sims[better], candidate[better]
    return other, best


def leave_one_out(unit: np.ndarray, table: IdentityTable) -> tuple[FloatArray, BoolArray]:
    """Each face's cosine to the mean of its identity's *other* faces (n_faces,) float32, and which faces are
    their identity's only face (whose value is then the database's median, see the module docstring)."""
    codes, counts = table.codes, table.counts
    # |s - u|^2 = |s|^2 - 2 u.s + 1 for a unit u, with s = norm * centroid
    dot = rowwise_dot(unit, table.centroids, codes) * table.norms[codes]
    squared = table.norms[codes] ** 2 - 2.0 * dot + 1.0
    lone = counts[codes] <= 1
    with np.errstate(invalid="ignore", divide="ignore"):
        own = np.where(lone | (squared <= 1e-12), np.nan, (dot - 1.0) / np.sqrt(np.maximum(squared, 1e-12)))
    typical = float(np.nanmedian(own)) if np.isfinite(own).any() else 1.0
    return np.where(np.isfinite(own), own, typical).astype(np.float32), lone


def score_faces(unit: np.ndarray, table: IdentityTable, nearby: IdArray, similar: IdArray | None = None,
                margin: float = 0.0, own: tuple[FloatArray, BoolArray] | None = None) -> SuspectScores:
    """Score every face of ``unit`` (n_faces, dim) filed as ``table.codes``.

    ``nearby`` (n_faces, k): identity codes of each face's nearest other faces (-1: none); ``similar``
    (n_identities, m): each identity's most similar identities (-1: none; see :mod:`job.analysis.candidates`);
    ``own``: what :func:`leave_one_out` returns, when the caller has it already.
    """
    codes = table.codes
    n_faces, n_ids = len(unit), len(table.ids)
    own_cos, lone = own if own is not None else leave_one_out(unit, table)
    counts = table.counts
    candidates = nearby if similar is None else np.concatenate([nearby, similar[codes]], axis=1)
    other, best = best_other(unit, table.centroids, candidates, codes)
    found = best >= 0
    score = np.where(found, other - own_cos, -np.inf).astype(np.float32)
    suspect = found & (score > margin)
    # most of an identity looking like someone else is a look-alike (or twice-filed) identity, not misfiled faces
    flagged = np.bincount(codes[suspect], minlength=n_ids)
    suspect &= flagged[codes] * 2 <= counts[codes]
    suggested = np.where(found & (other > own_cos), table.ids[np.maximum(best, 0)], table.ids[codes])
    suggested = np.where(found | ~lone, suggested, -1).astype(np.int64)
    return SuspectScores(np.where(found, score, np.float32(-2.0)).astype(np.float32), suspect, suggested, own_cos,
                         np.where(found, other, np.nan).astype(np.float32), lone)
