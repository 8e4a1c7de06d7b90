"""Misfiled faces: faces that look more like another identity than like the one they are filed under.

Decided in the embedding space, never on the map. For face i filed under identity c:

* ``own`` = cosine of i to the centroid of c's *other* faces (leave-one-out, so a face does not vouch for
  itself). An identity with a single face has no other faces: its ``own`` is the database's median
  ``own`` ("as alike as a typical face is to its own identity"), so a lone face gets an honest score — but
  it is never a suspect, by the majority rule below: one face cannot be outvoted by its own identity.
* ``other`` = best cosine of i to another identity's centroid, among candidate identities: those of i's
  ``k`` nearest faces, and the ``m`` identities whose centroids are nearest to c's. So the cost is
  n_faces x (k + m) x dim plus one kNN graph, never all pairs.
* ``score`` = ``other - own``; a face is a suspect when the score exceeds ``margin`` (>= 0; 0: more like
  another identity than like its own). ``suggested_id`` is the most similar identity of all, its own included.
* When more than half of an identity's faces pass the margin, none of them is a suspect: the identity as a
  whole resembles another (a look-alike, or one person filed under two ids), which ``lookalikes`` reports.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from job.arrays import BoolArray, FloatArray, IdArray
from job.identities import IdentityTable, rowwise_dot
from job.knn import neighbours


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


def score_faces(unit: FloatArray, table: IdentityTable, nearby: IdArray, margin: float = 0.0,
                centroid_candidates: int = 5, exact_max: int = 50_000) -> SuspectScores:
    """Score every face of ``unit`` (n_faces, dim) filed as ``table.codes``.

    ``nearby`` (n_faces, k): identity codes of each face's nearest other faces in the embedding space.
    """
    codes, counts, sums = table.codes, table.counts, table.sums
    n_faces, n_ids = len(unit), len(table.ids)
    centroids = table.centroids
    # the face's identity without the face itself: |s - u|^2 = |s|^2 - 2 u.s + 1 for a unit u
    dot = rowwise_dot(unit, sums, codes)
    squared = np.einsum("ij,ij->i", sums, sums)[codes] - 2.0 * dot + 1.0
    lone = counts[codes] <= 1
    with np.errstate(invalid="ignore", divide="ignore"):
        own = np.where(lone | (squared <= 1e-12), np.nan, (dot - 1.0) / np.sqrt(np.maximum(squared, 1e-12)))
    typical = float(np.nanmedian(own)) if np.isfinite(own).any() else 1.0
    own = np.where(np.isfinite(own), own, typical).astype(np.float32)

    near_ids = neighbours(centroids, centroid_candidates + 1, exact_max).indices.astype(np.int64)
    candidates = np.concatenate([nearby, near_ids[codes]], axis=1)
    other = np.full(n_faces, -np.inf, dtype=np.float32)
    best = np.full(n_faces, -1, dtype=np.int64)
    for column in range(candidates.shape[1]):
        candidate = candidates[:, column]
        sims = rowwise_dot(unit, centroids, candidate).astype(np.float32)
        better = (candidate >= 0) & (candidate != codes) & (sims > other)
        other[better], best[better] = sims[better], candidate[better]
    found = best >= 0
    score = np.where(found, other - own, -np.inf).astype(np.float32)
    suspect = found & (score > margin)
    # most of an identity looking like someone else is a look-alike (or twice-filed) identity, not misfiled faces
    flagged = np.bincount(codes[suspect], minlength=n_ids)
    suspect &= flagged[codes] * 2 <= counts[codes]
    suggested = np.where(found & (other > own), table.ids[np.maximum(best, 0)], table.ids[codes])
    suggested = np.where(found | ~lone, suggested, -1).astype(np.int64)
    return SuspectScores(np.where(found, score, np.float32(-2.0)).astype(np.float32), suspect, suggested, own,
                         np.where(found, other, np.nan).astype(np.float32), lone)
