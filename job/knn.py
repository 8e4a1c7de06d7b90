"""Exact k-nearest neighbours in the embedding space, for databases small enough to afford them.

Cosine distance on unit vectors is ``1 - dot``, so the exact kNN of a block of faces is one matrix product
against all faces; blocks keep memory to ``block * n_faces`` floats. Cost grows as n_faces**2, which is why
``knn.exact_max_faces`` hands larger databases to approximate search (NN-descent).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from job.arrays import FloatArray

_BLOCK_BYTES = 256 << 20


@dataclass(frozen=True)
class Neighbors:
    """kNN graph: ``indices`` (n_faces, k) int32 with each face itself first, ``distances`` (n_faces, k) float32."""

    indices: np.ndarray
    distances: FloatArray


def normalise(embeddings: FloatArray) -> FloatArray:
    """Unit-length copy of ``embeddings`` (n_faces, dim) float32; rows must be non-zero."""
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return (embeddings / norms).astype(np.float32, copy=False)


def exact_knn(unit: FloatArray, k: int, metric: str = "cosine") -> Neighbors:
    """Exact k nearest neighbours of every face, itself included as the first neighbour.

    Parameters
    ----------
    unit : ndarray of shape (n_faces, dim), float32, unit rows
    k : neighbours per face, including the face itself
    metric : "cosine" (1 - dot) or "euclidean" (on the unit vectors, sqrt(2 - 2 dot))
    """
    n_faces = len(unit)
    k = min(k, n_faces)
    block = max(1, min(n_faces, _BLOCK_BYTES // (4 * max(n_faces, 1))))
    indices = np.empty((n_faces, k), dtype=np.int32)
    similarity = np.empty((n_faces, k), dtype=np.float32)
    for start in range(0, n_faces, block):
        stop = min(start + block, n_faces)
        sims = unit[start:stop] @ unit.T
        rows = np.arange(stop - start)
        # the face itself must come first even when an exact duplicate ties with it
        sims[rows, rows + start] = np.inf
        top = np.argpartition(sims, n_faces - k, axis=1)[:, n_faces - k :] if k < n_faces else \
            np.tile(np.arange(n_faces), (stop - start, 1))
        top_sims = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-top_sims, axis=1, kind="stable")
        indices[start:stop] = np.take_along_axis(top, order, axis=1)
        similarity[start:stop] = np.take_along_axis(top_sims, order, axis=1)
    similarity[:, 0] = 1.0
    np.clip(similarity, -1.0, 1.0, out=similarity)
    if metric == "cosine":
        distances = 1.0 - similarity
    else:
        distances = np.sqrt(np.maximum(2.0 - 2.0 * similarity, 0.0))
    distances[:, 0] = 0.0
    return Neighbors(indices, distances.astype(np.float32))
