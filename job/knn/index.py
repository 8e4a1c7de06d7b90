"""The kNN index registry: one small interface, a name -> class dict, and one :func:`resolve` that says why.

Modelled on openTSNE's ``KNNIndex``/``get_knn_index``. Every index takes unit vectors (cosine similarity is
their dot product) and answers ``query(queries, k)`` with positions in its reference set and similarities,
nearest first. :func:`face_graph` builds the run's one shared graph with the resolved index, chunk by chunk.
A GPU index (cuVS) slots in as another entry of :data:`INDEXES`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Protocol

import numpy as np

from job.arrays import FloatArray, IdArray
from job.errors import UsageError
from job.knn.exact import ExactIndex
from job.knn.graph import FaceGraph, self_first
from job.progress import ProgressFactory, no_progress

QUERY_CHUNK = 1 << 17  # queries per chunk: progress granularity, and the unit a cluster would map over


class KnnIndex(Protocol):
    """What the run needs from a nearest-neighbour library."""

    name: ClassVar[str]

    def __init__(self, seed: int | None = None, thorough: bool = False) -> None:
        """``thorough``: trade speed for recall (used for the few identity-level queries)."""
        ...

    def build(self, reference: np.ndarray) -> None:
        """Index the unit reference vectors (n_reference, dim), float16 or float32."""
        ...

    def query(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, FloatArray]:
        """Positions in the reference set (n, k) int64 (-1: not found) and cosine similarities (n, k) float32
        of each query's ``k`` nearest reference vectors, nearest first."""
        ...


def _faiss_ivf() -> type[KnnIndex]:
    from job.knn.faiss_index import FaissIvfIndex

    return FaissIvfIndex


INDEXES: dict[str, Callable[[], type[KnnIndex]]] = {
    ExactIndex.name: lambda: ExactIndex,
    "faiss-ivf": _faiss_ivf,
}
APPROXIMATE = "faiss-ivf"
"""The approximate index "auto" and "approximate" pick (chosen by measurement: README, bench_scale.py)."""


def resolve(method: str, n_reference: int, exact_max: int) -> tuple[type[KnnIndex], str]:
    """The index class for ``knn.method`` and a reference set of ``n_reference`` faces, and why.

    ``method``: "auto" (exact up to ``exact_max`` reference faces, approximate above), "exact",
    "approximate", or a name in :data:`INDEXES`.
    """
    if method == "auto":
        if n_reference <= exact_max:
            return ExactIndex, f"auto: {n_reference:,} reference faces <= knn.exact_max_faces ({exact_max:,}): exact"
        return INDEXES[APPROXIMATE](), (f"auto: {n_reference:,} reference faces > knn.exact_max_faces "
                                        f"({exact_max:,}): {APPROXIMATE}")
    name = APPROXIMATE if method == "approximate" else method
    if name not in INDEXES:
        raise UsageError(f"knn.method {method!r}: expected auto, exact, approximate or one of {', '.join(INDEXES)}")
    return INDEXES[name](), f"asked for with knn.method={method}"


def face_graph(unit: np.ndarray, reference: IdArray, k: int, method: str, exact_max: int, seed: int | None = None,
               progress: ProgressFactory = no_progress) -> FaceGraph:
    """Each face's ``k`` nearest reference faces by cosine: the run's one kNN graph.

    Parameters
    ----------
    unit : ndarray of shape (n_faces, dim), float16 or float32 unit rows
    reference : ndarray of shape (n_reference,), int64 — sorted face rows the map is fitted on
    k : neighbours per face; a reference face counts itself as its first
    """
    cls, reason = resolve(method, len(reference), exact_max)
    index = cls(seed)
    index.build(unit[reference])
    k = min(k, len(reference))
    n_faces = len(unit)
    indices = np.empty((n_faces, k), dtype=np.int32)
    distances = np.empty((n_faces, k), dtype=np.float32)
    position = np.full(n_faces, -1, dtype=np.int64)
    position[reference] = np.arange(len(reference))
    with progress("kNN graph", n_faces, "faces") as bar:
        for start in range(0, n_faces, QUERY_CHUNK):
            stop = min(start + QUERY_CHUNK, n_faces)
            found, similarity = query_chunk(index, unit[start:stop], k, position[start:stop])
            indices[start:stop] = found
            distances[start:stop] = np.where(found >= 0, 1.0 - np.clip(similarity, -1.0, 1.0), np.inf)
            bar.advance(stop - start)
    return FaceGraph(reference, indices, distances, cls.name, reason)


def query_chunk(index: KnnIndex, queries: np.ndarray, k: int, own: IdArray) -> tuple[np.ndarray, FloatArray]:
    """One chunk of the graph: ``k`` neighbours of ``queries``, with each reference face (``own`` >= 0, its
    position) first. A pure function of its inputs, so a cluster can map it over chunks."""
    found, similarity = index.query(np.asarray(queries, dtype=np.float32), k)
    return self_first(found, similarity, own)


def identity_neighbours(centroids: np.ndarray, k: int, method: str, exact_max: int, seed: int | None = None
                        ) -> tuple[np.ndarray, str]:
    """Each identity's ``k`` most similar other identities by centroid cosine: (n_identities, k) int64 (-1:
    none), and the index that found them. Searched with the same registry as the face graph, thoroughly."""
    cls, _ = resolve(method, len(centroids), exact_max)
    index = cls(seed, thorough=True)
    index.build(centroids)
    found, _ = index.query(centroids, min(k + 1, len(centroids)))
    own = np.arange(len(centroids))
    others = np.where(found == own[:, None], -1, found)
    order = np.argsort(others < 0, axis=1, kind="stable")  # the identity itself out, the rest in order
    others = np.take_along_axis(others, order, axis=1)[:, :k]
    if others.shape[1] < k:
        others = np.pad(others, ((0, 0), (0, k - others.shape[1])), constant_values=-1)
    return others.astype(np.int64), cls.name
