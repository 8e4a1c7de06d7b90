"""What the workers run: pure functions of their arguments, each over one chunk of faces.

Each takes the chunk's unit vectors (a task result the worker already holds, :func:`job.cluster.source.read_faces`)
and small per-chunk arrays, and calls the same code a single-process run calls on all faces at once, so a
chunk's answer is that code's answer for those faces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from job.arrays import FloatArray, IdArray


def worker_facts(source: Any) -> dict[str, Any]:
    """What the client checks on every worker: versions, and whether it reads the input (first and last row)."""
    import platform

    import dask
    import distributed

    from job import __version__
    from job.errors import FaceatlasError

    facts: dict[str, Any] = {"faceatlas": __version__, "python": platform.python_version(), "numpy": np.__version__,
                             "dask": dask.__version__, "distributed": distributed.__version__, "input": "ok"}
    if source is not None:
        from job.cluster.source import _stored, ids_digest, read_faces

        try:
            n_rows = len(_stored(source).ids)
            rows = np.array(sorted({0, n_rows - 1}), dtype=np.int64)
            read_faces(source, rows, ids_digest(_stored(source).ids[rows]))
            facts["rows"] = n_rows
        except FaceatlasError as exc:
            facts["input"] = str(exc)
    return facts


@dataclass(frozen=True)
class Partial:
    """Sums of unit faces per identity over some chunks: the identity ``codes`` (sorted) and their float64
    ``sums`` (len(codes), dim)."""

    codes: IdArray
    sums: np.ndarray


def chunk_sums(unit: np.ndarray, codes: IdArray) -> Partial:
    """The identity sums of one chunk's kept faces (``codes`` per face, -1: left out of the sums)."""
    from job.xp import group_sums, run_starts

    kept = np.flatnonzero(codes >= 0)
    kept = kept[np.argsort(codes[kept], kind="stable")]
    if not len(kept):
        return Partial(np.zeros(0, dtype=np.int64), np.zeros((0, unit.shape[1])))
    starts = run_starts(codes[kept])
    return Partial(codes[kept][starts], group_sums(unit[kept].astype(np.float64), starts))


def merge_sums(first: Partial, second: Partial) -> Partial:
    """Two partial sums as one (identities in both are added)."""
    codes = np.union1d(first.codes, second.codes)
    sums = np.zeros((len(codes), max(first.sums.shape[1], second.sums.shape[1])))
    for part in (first, second):
        if len(part.codes):
            sums[np.searchsorted(codes, part.codes)] += part.sums
    return Partial(codes, sums)


def finish_sums(total: Partial, n_identities: int, dim: int) -> tuple[FloatArray, np.ndarray]:
    """The unit centroids (n_identities, dim) float32 and sum lengths (n_identities,) float64 of the summed
    identities (zero rows for an identity with no face summed), as :func:`job.analysis.identities.identity_table`
    stores them."""
    from job.analysis.identities import store_sums

    centroids = np.zeros((n_identities, dim), dtype=np.float32)
    norms = np.zeros(n_identities, dtype=np.float64)
    if len(total.codes):
        store_sums(centroids, norms, total.codes, total.sums)
    return centroids, norms


def chunk_rowwise_dot(unit: np.ndarray, others: np.ndarray, index: IdArray, rows: IdArray) -> np.ndarray:
    """``unit[rows[i]] . others[index[i]]`` within one chunk (float64)."""
    from job.analysis.identities import rowwise_dot

    return rowwise_dot(unit, others, index, rows)


def chunk_best_candidate(unit: np.ndarray, centroids: FloatArray, scale: np.ndarray, candidates: IdArray,
                         codes: IdArray) -> tuple[np.ndarray, IdArray]:
    """:func:`job.analysis.suspects.best_candidate` for one chunk's faces."""
    from job.analysis.suspects import best_candidate

    return best_candidate(unit, centroids, scale, candidates, codes)


def chunk_graph(unit: np.ndarray, shared: tuple[Any, np.ndarray], k: int, own: IdArray
                ) -> tuple[np.ndarray, FloatArray]:
    """One chunk's rows of the run's kNN graph: positions among the reference faces (int32, reference faces
    first in their own rows) and cosine distances (float32); ``shared`` is the built index and the reference
    vectors."""
    from job.knn.index import graph_rows

    index, reference = shared
    return graph_rows(index, unit, k, own, reference)


def chunk_place(scaled: FloatArray, indices: np.ndarray, distances: FloatArray, kernel: Any) -> FloatArray:
    """One chunk of placed faces, in kernel units (:func:`job.reduce.extend.place_chunk`, one thread: the
    cluster's workers are the parallelism)."""
    from job.reduce.extend import place_chunk

    return place_chunk(scaled, indices, distances, kernel, parallel=False)

