"""Which faces the UMAP map is fitted on, and which are held out to measure ``transform``.

Above ``umap.fit_sample`` faces, UMAP is fitted on a sample drawn by identity and every other face is placed
on the fitted map (:mod:`job.reduce.extend`). Each identity enters the fit with its most central face (the
one most like the mean of its other faces, so a misfiled face never stands for an identity); an identity
enters with more faces only when its proportional share of the sample is at least ``ISLAND`` faces, enough
to form an island of its own in the fit. Measured at 300k faces (docs/scale.md, ``bench/bench_scale.py``): a fit of
one face per identity plus placement keeps identities together far better than fitting every face, and
two or three faces of one identity in the fit split it into separate specks.
"""

from __future__ import annotations

import numpy as np

from job.arrays import BoolArray, FloatArray, IdArray
from job.config import UmapConfig

ISLAND = 5


def pick_holdout(ids: IdArray, share: float, cap: int, seed: int | None, min_fitted: int = 0) -> BoolArray:
    """Faces to leave out of the fit: ``share`` of all faces, ``cap`` at most, at most one per identity and
    only from identities with 3+ faces (so each keeps 2 on the map), leaving at least ``min_fitted`` faces."""
    n_faces = len(ids)
    wanted = min(round(share * n_faces), cap, n_faces - min_fitted)
    held = np.zeros(n_faces, dtype=bool)
    if wanted <= 0:
        return held
    rng = np.random.default_rng(0 if seed is None else seed)
    _, codes, counts = np.unique(ids, return_inverse=True, return_counts=True)
    order = rng.permutation(n_faces)
    _, first = np.unique(codes[order], return_index=True)  # one random face of every identity
    eligible = order[first][counts[codes[order[first]]] >= 3]
    chosen = rng.permutation(eligible)[:wanted]
    held[chosen] = True
    return held


def sample_size(settings: UmapConfig, n_faces: int, n_identities: int) -> int:
    """How many faces to fit: all of them up to ``umap.sample_above`` and ``umap.fit_sample``; above either,
    enough for one face per identity, and for ``ISLAND`` faces per identity for every ``ISLAND`` faces an
    identity has (at most ``fit_sample``). Measured at 100k faces: fitting all gave a same-id share of 0.76,
    one face per identity 0.92."""
    if n_faces <= min(settings.fit_sample, settings.sample_above):
        return n_faces
    return min(settings.fit_sample, max(n_identities, n_faces // ISLAND))


def fit_sample(codes: IdArray, centrality: FloatArray, eligible: BoolArray, size: int,
               seed: int | None) -> IdArray:
    """Sorted face rows to fit UMAP on: every eligible face when there are at most ``size``, else a sample.

    Parameters
    ----------
    codes : ndarray of shape (n_faces,), int64 — identity code of each face
    centrality : ndarray of shape (n_faces,), float32 — higher = more typical of its identity (cosine to the
        mean of the identity's other faces); the most central faces are fitted first
    eligible : ndarray of shape (n_faces,), bool — faces that may be fitted (not held out)
    size : the most faces to fit
    """
    rows = np.flatnonzero(eligible)
    if len(rows) <= size:
        return rows.astype(np.int64)
    n_ids = int(codes.max()) + 1
    counts = np.bincount(codes[rows], minlength=n_ids)
    share = size / len(rows)
    quota = np.where(counts * share >= ISLAND, np.floor(counts * share), np.minimum(counts, 1)).astype(np.int64)
    if quota.sum() > size:  # more identities than the sample holds: a random subset of them, one face each
        rng = np.random.default_rng(0 if seed is None else seed)
        present = np.flatnonzero(quota)
        keep = np.zeros(n_ids, dtype=bool)
        keep[rng.choice(present, size=size, replace=False)] = True
        quota = np.where(keep, 1, 0)
    order = rows[np.lexsort((-centrality[rows], codes[rows]))]  # by identity, most central first
    order_codes = codes[order]
    rank = np.arange(len(order)) - np.searchsorted(order_codes, order_codes)
    return np.sort(order[rank < quota[order_codes]]).astype(np.int64)
