"""The kNN index registry: one small interface, a name -> class dict, and one :func:`resolve` that says why.

Modelled on openTSNE's ``KNNIndex``/``get_knn_index``. Every index takes unit vectors (cosine similarity is
their dot product) and answers ``query(queries, k)`` with positions in its reference set and similarities,
nearest first. :func:`face_graph` builds the run's one shared graph with the resolved index, chunk by chunk.
A GPU index (cuVS) slots in as another entry of :data:`INDEXES`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, cast

import numpy as np

from job.arrays import FloatArray, IdArray, take_rows
from job.errors import UsageError
from job.knn.exact import ExactIndex
from job.knn.graph import FaceGraph, self_first
from job.progress import ProgressFactory, no_progress
from job.xp import namespace, on_device, to_namespace

NND_BYTES_PER_EDGE = 16  # NN-descent keeps an int64 index and a float distance per candidate, twice
if TYPE_CHECKING:
    from job.config import GpuConfig, KnnConfig

QUERY_CHUNK = 1 << 17  # queries per chunk: progress granularity, and the unit a cluster would map over
RESCORED_EXTRA = 4  # candidates beyond k scored again exactly (graph_rows): a neighbour's rank depends on no BLAS
RESCORE_ROWS = 1 << 15  # queries scored at a time (their float32 copy: 64 MiB at 512-D)


class KnnIndex(Protocol):
    """What the run needs from a nearest-neighbour library."""

    name: ClassVar[str]
    batched: ClassVar[bool]
    """Built in batches the run configures (:func:`configure_batches`, the ``configure`` class method)."""
    graphs_reference: ClassVar[bool]
    """Builds the reference faces' own graph while indexing (``reference_graph(k)``), so only the other faces
    are queried."""

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


class GraphingIndex(KnnIndex, Protocol):
    """An index whose ``graphs_reference`` is true: it builds the reference faces' own graph while indexing."""

    def reference_graph(self, k: int) -> tuple[np.ndarray, FloatArray]:
        """Each reference face's ``k`` nearest reference faces (itself included, as found): positions
        (n_reference, k) int64 and cosine similarities (n_reference, k) float32."""
        ...


def _faiss_ivf() -> type[KnnIndex]:
    from job.knn.faiss_index import FaissIvfIndex

    return FaissIvfIndex


INDEXES: dict[str, Callable[[], type[KnnIndex]]] = {
    ExactIndex.name: lambda: ExactIndex,
    "faiss-ivf": _faiss_ivf,
}
APPROXIMATE = "faiss-ivf"
"""The approximate index "auto" and "approximate" pick (chosen by measurement: docs/scale.md, bench_scale.py)."""


def _gpu_index(name: str) -> Callable[[], type[KnnIndex]]:
    def load() -> type[KnnIndex]:
        from job.knn import gpu_index

        return gpu_index.INDEX_CLASSES[name]

    return load


GPU_EXACT, GPU_EXACT_CUPY, GPU_APPROXIMATE = "cuvs-brute-force", "cupy-exact", "cuvs-nn-descent"
GPU_INDEXES: dict[str, Callable[[], type[KnnIndex]]] = {name: _gpu_index(name) for name in
                                                        (GPU_EXACT, GPU_EXACT_CUPY, GPU_APPROXIMATE)}
"""Indexes over faces on the GPU (cuVS; :mod:`job.knn.gpu_index`), answering with GPU arrays."""


def resolve(method: str, n_reference: int, exact_max: int, device: bool = False, gpu_exact_max: int = 0
            ) -> tuple[type[KnnIndex], str]:
    """The index class for ``knn.method`` and a reference set of ``n_reference`` faces, and why.

    ``method``: "auto" (exact up to ``exact_max`` reference faces, approximate above), "exact",
    "approximate", or a name in :data:`INDEXES`. With ``device`` (the faces are on the GPU), "exact" and
    "approximate" are the GPU indexes of :data:`GPU_INDEXES`, and "auto" is exact up to ``gpu_exact_max``.
    """
    if device:
        return _resolve_gpu(method, n_reference, gpu_exact_max)
    if method == "auto":
        if n_reference <= exact_max:
            return ExactIndex, f"auto: {n_reference:,} reference faces <= knn.exact_max_faces ({exact_max:,}): exact"
        return INDEXES[APPROXIMATE](), (f"auto: {n_reference:,} reference faces > knn.exact_max_faces "
                                        f"({exact_max:,}): {APPROXIMATE}")
    name = APPROXIMATE if method == "approximate" else method
    if name not in INDEXES:
        known = ", ".join([*INDEXES, *GPU_INDEXES])
        if name in GPU_INDEXES:
            raise UsageError(f"knn.method {method!r} is a GPU index and this run computes on CPU; use auto, exact, "
                             "approximate or faiss-ivf, or --backend cuml on a GPU")
        raise UsageError(f"knn.method {method!r}: expected auto, exact, approximate or one of {known}")
    return INDEXES[name](), f"asked for with knn.method={method}"


def _resolve_gpu(method: str, n_reference: int, gpu_exact_max: int) -> tuple[type[KnnIndex], str]:
    """The GPU index for ``knn.method``: the CPU names map to their GPU counterparts (``faiss-ivf``, an
    approximate CPU index, to NN-descent), and without cuVS to CuPy's exact search unless cuVS is named."""
    import importlib.util

    has_cuvs = importlib.util.find_spec("cuvs") is not None
    exact = GPU_EXACT if has_cuvs else GPU_EXACT_CUPY
    if method == "auto":
        if n_reference <= gpu_exact_max or not has_cuvs:
            why = "<=" if n_reference <= gpu_exact_max else "> (but cuVS, NN-descent's library, is not installed)"
            return GPU_INDEXES[exact](), (f"auto on the GPU: {n_reference:,} reference faces {why} "
                                          f"gpu.exact_max_faces ({gpu_exact_max:,}): {exact}")
        return GPU_INDEXES[GPU_APPROXIMATE](), (f"auto on the GPU: {n_reference:,} reference faces > "
                                                f"gpu.exact_max_faces ({gpu_exact_max:,}): {GPU_APPROXIMATE}")
    if method in ("approximate", APPROXIMATE):
        if not has_cuvs:
            return GPU_INDEXES[exact](), (f"knn.method={method} on the GPU: cuVS (NN-descent) is not installed, "
                                          f"so {exact}")
        return GPU_INDEXES[GPU_APPROXIMATE](), f"knn.method={method} on the GPU: {GPU_APPROXIMATE}"
    name = exact if method == "exact" else method
    if name not in GPU_INDEXES:
        raise UsageError(f"knn.method {method!r}: expected auto, exact, approximate or one of "
                         f"{', '.join([*INDEXES, *GPU_INDEXES])}")
    if name.startswith("cuvs") and not has_cuvs:
        raise UsageError(f"knn.method {method!r} needs cuVS, which is not installed: pip install 'faceatlas[gpu]', "
                         "or use knn.method=exact (CuPy)")
    return GPU_INDEXES[name](), f"asked for with knn.method={method} (GPU)"


def face_graph(unit: np.ndarray, reference: IdArray, k: int, knn: KnnConfig, *, seed: int | None = None,
               progress: ProgressFactory = no_progress, gpu: GpuConfig | None = None, gpu_free: int | None = None
               ) -> FaceGraph:
    """Each face's ``k`` nearest reference faces by cosine: the run's one kNN graph.

    Parameters
    ----------
    unit : ndarray of shape (n_faces, dim), float16 or float32 unit rows; a CuPy array on a GPU run (the
        graph is then built by a GPU index and stays on the GPU)
    reference : ndarray of shape (n_reference,), int64 — sorted face rows the map is fitted on
    k : neighbours per face; a reference face counts itself as its first
    knn : the run's index settings (``method``, ``exact_max_faces``: :func:`resolve`)
    gpu : the run's GPU settings (exact search limit, NN-descent batching), for a GPU run
    gpu_free : the GPU's free memory in bytes before the run's pool took any (None: asked now)
    """
    xp = namespace(unit)
    if gpu is None:
        from job.config import GpuConfig

        gpu = GpuConfig()
    cls, reason = resolve(knn.method, len(reference), knn.exact_max_faces, on_device(xp), gpu.exact_max_faces)
    if cls.batched:
        cls, batching = configure_batches(cls, gpu, len(reference), unit.shape[1], k, free=gpu_free)
        reason += batching
        if seed is not None:  # docs/gpu.md, seeds on the GPU
            reason += ("; not reproducible even with --seed (NN-descent's GPU kernels race): raise "
                       "gpu.exact_max_faces for an exact, reproducible graph")
    reference = to_namespace(xp, reference)
    index = cls(seed)
    # host: the reference faces once as float32, indexed and what graph_rows scores candidates against
    vectors = None if on_device(xp) else take_rows(unit, reference, np.float32)
    index.build(unit[reference] if vectors is None else vectors)
    k = min(k, len(reference))
    n_faces = len(unit)
    position = xp.full(n_faces, -1, dtype=xp.int64)
    position[reference] = xp.arange(len(reference))
    indices = xp.empty((n_faces, k), dtype=xp.int32)
    distances = xp.empty((n_faces, k), dtype=xp.float32)
    queried: Any = None  # every face is a query, unless the index has the reference faces' own graph
    if index.graphs_reference:
        found, similarity = cast("GraphingIndex", index).reference_graph(k)  # what graphs_reference promises
        found, similarity = self_first(found, similarity, xp.arange(len(reference)))
        indices[reference] = found
        distances[reference] = _distance(found, similarity)
        outside = xp.ones(n_faces, dtype=bool)
        outside[reference] = False
        queried = xp.flatnonzero(outside)
    n_queries = n_faces if queried is None else len(queried)
    with progress("kNN graph", n_faces, "faces") as bar:
        bar.advance(n_faces - n_queries)
        for start in range(0, n_queries, QUERY_CHUNK):
            rows = slice(start, min(start + QUERY_CHUNK, n_queries))
            if queried is not None:
                rows = queried[rows]
            found, distance = graph_rows(index, unit[rows], k, position[rows], vectors)
            indices[rows], distances[rows] = found, distance
            bar.advance(len(found))
    return FaceGraph(reference, indices, distances, cls.name, reason)


def configure_batches(cls: Any, gpu: GpuConfig, n_reference: int, dim: int, k: int, *, free: int | None = None
                      ) -> tuple[Any, str]:
    """The NN-descent index class with the run's batching: ``gpu.knn_n_clusters``, or for 0 the fewest
    batches whose working set (the batch's faces as float32 plus NN-descent's graphs, ~``NND_BYTES_PER_EDGE``
    per candidate edge) fits in half the GPU's free memory."""
    n_clusters = gpu.knn_n_clusters
    if n_clusters == 0:
        if free is None:
            from job.gpu import probe_gpu

            free = probe_gpu().free_bytes
        need = nn_descent_bytes(n_reference, dim, k)
        budget = max(free // 2, 1)  # the other half holds the faces, the graph and the verdicts
        n_clusters = 1 if need <= budget else max(gpu.knn_overlap_factor + 1,
                                                  -(-need * gpu.knn_overlap_factor // budget))
    text = "" if n_clusters == 1 else f"; {n_clusters} batches, each face in {gpu.knn_overlap_factor}"
    return cls.configure(n_clusters, gpu.knn_overlap_factor, tuple(gpu.device_ids)), text


def nn_descent_bytes(n_reference: int, dim: int, k: int) -> int:
    """NN-descent's working set on the GPU: the faces as float32 and its candidate graphs."""
    return n_reference * (4 * dim + NND_BYTES_PER_EDGE * 3 * k)


def _distance(found: Any, similarity: Any) -> Any:
    xp = namespace(found)
    return xp.where(found >= 0, 1.0 - xp.clip(similarity, -1.0, 1.0), xp.inf)


def graph_rows(index: KnnIndex, queries: np.ndarray, k: int, own: IdArray, reference: np.ndarray | None = None
               ) -> tuple[np.ndarray, FloatArray]:
    """Rows of the run's graph for ``queries``: positions (int32) and cosine distances (float32, inf where not
    found), each reference face (``own`` >= 0) first. A pure function, mapped over chunks by a cluster.

    With the ``reference`` vectors (host arrays), the index's ``k + RESCORED_EXTRA`` best are scored again,
    one dot product per pair (:func:`rescore`), and the ``k`` best kept: a matrix product's last bits depend
    on how many BLAS threads ran it, and a seeded UMAP fit turns one changed bit into another map, so the
    graph must not depend on where it was computed (a worker's one thread, or the client's cores).
    """
    xp = namespace(queries)
    if reference is None or on_device(xp):
        found, similarity = query_chunk(index, queries, k, own)
    else:
        found, _ = index.query(queries.astype(np.float32, copy=False), min(k + RESCORED_EXTRA, len(reference)))
        found, similarity = rescore(found, queries, reference, k)
        found, similarity = self_first(found, similarity, own)
    return found.astype(xp.int32), _distance(found, similarity).astype(xp.float32)


def rescore(found: np.ndarray, queries: np.ndarray, reference: np.ndarray, k: int) -> tuple[np.ndarray, FloatArray]:
    """The ``k`` most similar of each query's candidates ``found`` (n, m) (-1: none), by one dot product per pair
    (:mod:`job.knn.pairs`: the same bits on any machine and thread count), nearest first, ties by position.
    ``reference`` float32 (NumPy converts float16 slowly)."""
    from job.knn.pairs import pair_similarities

    sims = np.empty(found.shape, dtype=np.float32)
    for start in range(0, len(found), RESCORE_ROWS):  # float16 queries converted a block at a time
        sims[start:start + RESCORE_ROWS] = pair_similarities(queries[start:start + RESCORE_ROWS], reference,
                                                             found[start:start + RESCORE_ROWS])
    order = np.lexsort((found, -sims), axis=1)[:, :k]
    return np.take_along_axis(found, order, axis=1), np.take_along_axis(sims, order, axis=1)


def query_chunk(index: KnnIndex, queries: np.ndarray, k: int, own: IdArray) -> tuple[np.ndarray, FloatArray]:
    """One chunk of the graph as the index answers it: ``k`` neighbours of ``queries``, with each reference face
    (``own`` >= 0, its position) first (:func:`graph_rows` rescores host chunks)."""
    found, similarity = index.query(queries.astype(namespace(queries).float32, copy=False), k)
    return self_first(found, similarity, own)


def identity_neighbours(centroids: np.ndarray, k: int, method: str, exact_max: int, seed: int | None = None
                        ) -> tuple[np.ndarray, str]:
    """Each identity's ``k`` most similar other identities by centroid cosine: (n_identities, k) int64 (-1:
    none), and the index that found them. Searched with the same registry as the face graph, thoroughly (on
    the GPU when the centroids are there)."""
    xp = namespace(centroids)
    # on the GPU always exact: n_identities^2 x dim is affordable there, and NN-descent answers no queries
    cls, _ = resolve("exact" if on_device(xp) else method, len(centroids), exact_max, on_device(xp))
    index = cls(seed, thorough=True)
    index.build(centroids)
    found, _ = index.query(centroids, min(k + 1, len(centroids)))
    own = xp.arange(len(centroids))
    others = xp.where(found == own[:, None], -1, found)
    order = xp.argsort((others < 0).astype(xp.int8), axis=1, kind="stable")  # itself out, the rest in order
    others = xp.take_along_axis(others, order, axis=1)[:, :k]
    if others.shape[1] < k:
        others = xp.pad(others, ((0, 0), (0, k - others.shape[1])), constant_values=-1)
    return others.astype(xp.int64), cls.name
