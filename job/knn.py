"""Exact k-nearest neighbours in the embedding space, for databases small enough to afford them.

Cosine distance on unit vectors is ``1 - dot``, so the exact kNN of a block of faces is one matrix product
against all faces; blocks keep memory to ``block * n_faces`` floats. Cost grows as n_faces**2, which is why
``knn.exact_max_faces`` hands larger databases to approximate search (NN-descent).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from job.arrays import FloatArray

_BLOCK_BYTES = 64 << 20
EXACT_ALWAYS = 4096  # below this many rows exact search is cheap and NN-descent not worth it (as in umap-learn)


@dataclass(frozen=True)
class Neighbors:
    """kNN graph: ``indices`` (n_faces, k) int32 with each face itself first, ``distances`` (n_faces, k) float32,
    and how it was found: ``method`` "exact" or "approximate" (NN-descent)."""

    indices: np.ndarray
    distances: FloatArray
    method: str = "exact"


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
        indices[start:stop], similarity[start:stop] = top_k(sims, k)
    similarity[:, 0] = 1.0
    np.clip(similarity, -1.0, 1.0, out=similarity)
    if metric == "cosine":
        distances = 1.0 - similarity
    else:
        distances = np.sqrt(np.maximum(2.0 - 2.0 * similarity, 0.0))
    distances[:, 0] = 0.0
    return Neighbors(indices, distances.astype(np.float32))


def neighbours(unit: FloatArray, k: int, exact_max: int = 50_000, seed: int | None = None) -> Neighbors:
    """k nearest neighbours by cosine, the point itself first: exact up to ``exact_max`` rows, NN-descent above.

    NN-descent (pynndescent, which umap-learn already uses) keeps the cost near n log n for millions of rows.
    """
    if len(unit) <= max(exact_max, EXACT_ALWAYS):
        return exact_knn(unit, k)
    from pynndescent import NNDescent

    k = min(k, len(unit))
    index = NNDescent(unit, metric="cosine", n_neighbors=max(k, 2), random_state=seed, low_memory=True,
                      compressed=True)
    found, found_distances = index.neighbor_graph
    return _self_first(np.asarray(found), np.asarray(found_distances), k)


def _self_first(found: np.ndarray, distances: np.ndarray, k: int) -> Neighbors:
    """Each row's own index first, then its neighbours in order without itself or NN-descent's -1 (missing)
    entries; a row short of neighbours repeats itself at distance 0, which every user ignores as a self-loop."""
    n_rows = len(found)
    own = np.arange(n_rows)
    drop = (found == own[:, None]) | (found < 0)
    order = np.argsort(drop, axis=1, kind="stable")  # valid entries first, in their order
    found = np.take_along_axis(found, order, axis=1)[:, : k - 1]
    distances = np.take_along_axis(distances, order, axis=1)[:, : k - 1]
    missing = np.take_along_axis(drop, order, axis=1)[:, : k - 1]
    found = np.where(missing, own[:, None], found)
    distances = np.where(missing, 0.0, distances)
    indices = np.concatenate([own[:, None], found], axis=1).astype(np.int32)
    return Neighbors(indices, np.concatenate([np.zeros((n_rows, 1)), distances], axis=1).astype(np.float32),
                     "approximate")
