"""GPU nearest-neighbour indexes over faces held in GPU memory (CuPy arrays), with NVIDIA cuVS.

Three entries of the index registry (:data:`job.knn.index.GPU_INDEXES`), each answering ``query`` with CuPy
arrays so the graph never leaves the GPU:

* ``cuvs-brute-force``: exact. ``cuvs.neighbors.brute_force`` with the cosine metric (distance 1 - cos),
  one tiled matrix product per query chunk. Exact is affordable on a GPU because the graph's reference set
  is the fit sample (``umap.fit_sample``, 200k faces by default), not every face: 1M faces x 200k x 512 is
  2e14 multiply-adds, seconds on a current GPU; it is also the reproducible choice (``--seed``).
* ``cupy-exact``: the same search by CuPy matrix products, where cuVS is not installed;
* ``cuvs-nn-descent``: approximate, for reference sets above ``gpu.exact_max_faces``.
  ``cuvs.neighbors.all_neighbors.build`` with NN-descent builds the reference faces' own graph, in
  ``gpu.knn_n_clusters`` batches (data on the host, as cuVS requires for a batched build) when it would not
  fit; faces outside the reference set are then searched exactly against it (brute force). Not
  reproducible: NN-descent's GPU kernels race.

Signatures are those of cuVS 26.10 (``tests/fixtures/cuvs-26.10.json``, read from the wheel's sources).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from job.arrays import FloatArray

if TYPE_CHECKING:
    from job.knn.index import KnnIndex

SQEUCLIDEAN_TO_COS = 0.5  # on unit vectors |a - b|^2 = 2 - 2 cos


def _cupy() -> Any:
    import cupy

    return cupy


class CuvsBruteForceIndex:
    """Exact cosine search on the GPU (cuVS brute force)."""

    name: ClassVar[str] = "cuvs-brute-force"
    batched: ClassVar[bool] = False  # configured with the run's batching (configure_batches)
    graphs_reference: ClassVar[bool] = False  # builds the reference faces' own graph (reference_graph)
    device: ClassVar[bool] = True

    def __init__(self, seed: int | None = None, thorough: bool = False) -> None:
        self.index: Any = None
        self.dataset: Any = None
        self.n_reference = 0

    def build(self, reference: Any) -> None:
        """Index the unit reference faces (n_reference, dim), a CuPy array."""
        from cuvs.neighbors import brute_force

        cupy = _cupy()
        self.n_reference = len(reference)
        # held here: cuVS's index keeps a non-owning view of the dataset (brute_force.hpp), and the caller's
        # array is a temporary (a gather, a float32 copy) that CuPy would free and reuse at once
        self.dataset = cupy.ascontiguousarray(reference, dtype=cupy.float32)
        self.index = brute_force.build(self.dataset, metric="cosine")

    def query(self, queries: Any, k: int) -> tuple[Any, FloatArray]:
        """Positions (n, k) int64 and cosine similarities (n, k) float32, CuPy arrays, nearest first."""
        from cuvs.neighbors import brute_force

        cupy = _cupy()
        k = min(k, self.n_reference)
        distances, neighbours = brute_force.search(self.index, cupy.ascontiguousarray(queries, dtype=cupy.float32), k)
        return cupy.asarray(neighbours).astype(cupy.int64), (1.0 - cupy.asarray(distances)).astype(cupy.float32)


class CupyExactIndex:
    """Exact cosine search by CuPy matrix products (cuBLAS), in blocks of queries, for a GPU without cuVS
    (Colab's RAPIDS without the ``gpu`` extra, or CuPy alone): the same answers as ``cuvs-brute-force``, ties
    aside."""

    name: ClassVar[str] = "cupy-exact"
    batched: ClassVar[bool] = False  # configured with the run's batching (configure_batches)
    graphs_reference: ClassVar[bool] = False  # builds the reference faces' own graph (reference_graph)
    device: ClassVar[bool] = True
    block_bytes: ClassVar[int] = 256 << 20  # one block of similarities; its top-k temporaries are ~4x this

    def __init__(self, seed: int | None = None, thorough: bool = False) -> None:
        self.reference: Any = None

    def build(self, reference: Any) -> None:
        cupy = _cupy()
        self.reference = cupy.ascontiguousarray(reference, dtype=cupy.float32)

    def query(self, queries: Any, k: int) -> tuple[Any, FloatArray]:
        cupy = _cupy()
        n_reference = len(self.reference)
        k = min(k, n_reference)
        block = max(1, self.block_bytes // (4 * max(n_reference, 1)))
        found = cupy.empty((len(queries), k), dtype=cupy.int64)
        similarity = cupy.empty((len(queries), k), dtype=cupy.float32)
        for start in range(0, len(queries), block):
            sims = queries[start:start + block].astype(cupy.float32) @ self.reference.T
            top = (cupy.argpartition(-sims, k - 1, axis=1)[:, :k] if k < n_reference
                   else cupy.tile(cupy.arange(n_reference), (len(sims), 1)))
            values = cupy.take_along_axis(sims, top, axis=1)
            order = cupy.argsort(-values, axis=1)
            found[start:start + block] = cupy.take_along_axis(top, order, axis=1)
            similarity[start:start + block] = cupy.take_along_axis(values, order, axis=1)
        return found, similarity


class CuvsNnDescentIndex:
    """Approximate all-neighbours graph of the reference faces (cuVS NN-descent), exact search for the rest.

    ``n_clusters`` > 1 batches the build (each face in ``overlap_factor`` of the batches), with the data on the
    host as cuVS requires; 1 builds in one pass on the GPU.
    """

    name: ClassVar[str] = "cuvs-nn-descent"
    batched: ClassVar[bool] = True  # configured with the run's batching (configure_batches)
    graphs_reference: ClassVar[bool] = True  # builds the reference faces' own graph (reference_graph)
    device: ClassVar[bool] = True
    n_clusters: ClassVar[int] = 1  # set from the run's gpu section by configure()
    overlap_factor: ClassVar[int] = 2
    device_ids: ClassVar[tuple[int, ...]] = ()

    def __init__(self, seed: int | None = None, thorough: bool = False) -> None:
        self.exact = CuvsBruteForceIndex(seed, thorough)  # cuVS is there: NN-descent needs it

    @classmethod
    def configure(cls, n_clusters: int, overlap_factor: int, device_ids: tuple[int, ...] = ()
                  ) -> type[CuvsNnDescentIndex]:
        """A subclass with the run's batching (and the GPUs a batched build spreads over)."""
        return type(cls.__name__, (cls,), {"n_clusters": n_clusters, "overlap_factor": overlap_factor,
                                           "device_ids": tuple(device_ids)})

    def build(self, reference: Any) -> None:
        self.exact.build(reference)

    def reference_graph(self, k: int) -> tuple[Any, FloatArray]:
        """Each reference face's ``k`` approximate nearest reference faces (itself included, as found):
        positions (n_reference, k) int64 and cosine similarities (n_reference, k) float32, CuPy arrays."""
        from cuvs.common import MultiGpuResources, Resources
        from cuvs.neighbors import all_neighbors, nn_descent

        cupy = _cupy()
        batched = self.n_clusters > 1
        params = all_neighbors.AllNeighborsParams(
            algo="nn_descent", n_clusters=self.n_clusters, overlap_factor=self.overlap_factor, metric="sqeuclidean",
            nn_descent_params=nn_descent.IndexParams(metric="sqeuclidean", graph_degree=k,
                                                     intermediate_graph_degree=2 * k))
        reference = self.exact.dataset  # the float32 copy the exact index holds: made once
        n = len(reference)
        # cuVS: "Batched all-neighbors build is not supported with data on device"; outputs stay on the GPU
        dataset = cupy.asnumpy(reference) if batched else reference
        found, distances = cupy.empty((n, k), dtype=cupy.int64), cupy.empty((n, k), dtype=cupy.float32)
        resources = (MultiGpuResources(device_ids=list(self.device_ids)) if batched and self.device_ids
                     else Resources())
        all_neighbors.build(dataset, k, params, indices=found, distances=distances, resources=resources)
        resources.sync()  # all_neighbors.build returns before the GPU is done
        similarity = 1.0 - SQEUCLIDEAN_TO_COS * distances
        return found, cupy.clip(similarity, -1.0, 1.0).astype(cupy.float32)

    def query(self, queries: Any, k: int) -> tuple[Any, FloatArray]:
        """Faces outside the reference set: exact against it."""
        return self.exact.query(queries, k)


INDEX_CLASSES: dict[str, type[KnnIndex]] = {CuvsBruteForceIndex.name: CuvsBruteForceIndex,
                                            CupyExactIndex.name: CupyExactIndex,
                                            CuvsNnDescentIndex.name: CuvsNnDescentIndex}
