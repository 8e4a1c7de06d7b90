"""UMAP backends behind one small interface: RAPIDS cuML on a CUDA GPU, umap-learn on CPU.

``BACKENDS`` maps a name to a class; :func:`resolve` turns "auto" (or a name) into a ready backend and the
reason it was chosen, which the run records. Libraries are imported inside the methods that need them, so
``faceatlas --help`` stays instant; probes catch any Exception because CUDA libraries raise more than
ImportError on machines without a driver.
"""

from __future__ import annotations

import importlib.util
from typing import Any, ClassVar

import numpy as np

from job.arrays import FloatArray
from job.caches import cached_numba
from job.config import KnnConfig, UmapConfig
from job.errors import BackendUnavailable, UsageError
from job.gpu import probe_gpu
from job.knn.graph import Neighbors
from job.reduce.gpu_umap import CumlBackend
from job.reduce.interface import Backend, Probe, Reduction
from job.reduce.params import umap_params
from job.reduce.start import pca_start

__all__ = ["BACKENDS", "Backend", "CumlBackend", "Probe", "Reduction", "UmapLearnBackend", "probe_all", "probe_gpu",
           "resolve", "umap_params"]

GPU_FIX = ("on a machine with an NVIDIA GPU, pip install 'faceatlas[gpu]' (CUDA 12, driver >= 535) or "
           "'faceatlas[gpu-cu13]' (CUDA 13, driver >= 580); or use --backend umap-learn")


class UmapLearnBackend:
    """UMAP on CPU, umap-learn's algorithm on the run's kNN graph: its fuzzy set and layout as ported in
    :mod:`job.reduce.layout` (tested equal to umap-learn's), so the run imports neither umap-learn nor
    pynndescent and compiles nothing once numba's cache holds the layout kernel. ``init="spectral"`` calls
    umap-learn's own spectral layout on the same graph."""

    name: ClassVar[str] = "umap-learn"
    uses_gpu: ClassVar[bool] = False
    engine: ClassVar[str] = "umap-learn 0.5 algorithm (job/reduce/layout.py: numpy fuzzy set, cached numba SGD)"

    @classmethod
    def probe(cls) -> Probe:
        if importlib.util.find_spec("umap") is None:
            return Probe(cls.name, False, "umap-learn is not installed: pip install umap-learn")
        return Probe(cls.name, True, "umap-learn is installed (CPU)", _dist_version("umap-learn"))

    @staticmethod
    def namespace() -> Any:
        return np

    def fit_transform(
        self, unit: FloatArray, labels: np.ndarray | None, params: UmapConfig, knn: KnnConfig, seed: int | None, *,
        graph: Neighbors | None = None,
    ) -> Reduction:
        from job.curve import ab_params
        from job.reduce import layout

        if graph is None or graph.indices.shape[1] < params.n_neighbors:
            from job.knn.index import face_graph

            shared = face_graph(unit, np.arange(len(unit)), params.n_neighbors, knn, seed=seed)
            graph = shared.among_reference(params.n_neighbors)
        distances = graph.distances[:, : params.n_neighbors]
        if params.metric == "euclidean":  # the graph is cosine; on unit vectors euclidean = sqrt(2 cosine)
            distances = np.sqrt(2.0 * np.maximum(distances, 0.0)).astype(np.float32)
        n_epochs = int(params.n_epochs)  # resolved by fit_params
        fuzzy = layout.fuzzy_graph(graph.indices[:, : params.n_neighbors], distances, labels, params.target_weight)
        fuzzy = layout.prune(fuzzy, n_epochs)
        rng = np.random.default_rng(seed)
        start = layout.scale_start(_start(unit, fuzzy, params, seed, rng))
        a, b = ab_params(params.spread, float(params.min_dist))
        state = rng.integers(np.iinfo(np.int32).min, np.iinfo(np.int32).max, 3).astype(np.int64)
        sgd = layout.SgdSettings(n_epochs, a, b, state, float(params.repulsion_strength))
        coords = layout.optimize_layout(start, start, fuzzy, sgd, parallel=seed is None)
        return Reduction(coords, graph.method, self.engine)


def _start(unit: FloatArray, fuzzy: Any, params: UmapConfig, seed: int | None, rng: np.random.Generator
           ) -> np.ndarray:
    """Where the layout starts (before umap-learn's rescaling to [0, 10]): PCA, uniform random (float32), or
    umap-learn's spectral layout of the fuzzy graph (float64)."""
    if params.init == "pca":  # the same start as umap-learn's, without scikit-learn's centred copy
        return pca_start(np.asarray(unit, dtype=np.float32), params.n_components, seed)
    if params.init == "random":
        return rng.uniform(-10.0, 10.0, size=(len(unit), params.n_components)).astype(np.float32)
    import scipy.sparse

    umap = import_umap()
    matrix = scipy.sparse.coo_matrix((fuzzy.weight, (fuzzy.head, fuzzy.tail)), shape=(fuzzy.n_vertices,) * 2)
    state = np.random.RandomState(seed)  # umap-learn's spectral layout takes a RandomState
    spectral = umap.spectral.spectral_layout(unit, matrix.tocsr(), params.n_components, state)
    scaled: np.ndarray = umap.umap_.noisy_scale_coords(spectral, state, max_coord=10, noise=0.0001)
    return scaled


BACKENDS: dict[str, type[UmapLearnBackend] | type[CumlBackend]] = {
    CumlBackend.name: CumlBackend,
    UmapLearnBackend.name: UmapLearnBackend,
}


def probe_all() -> list[Probe]:
    """Probe every backend, GPU first."""
    return [cls.probe() for cls in BACKENDS.values()]


def resolve(choice: str) -> tuple[Backend, str]:
    """Return the backend to use and why: the named one if it can run, else (for "auto") the first that can.

    Raises
    ------
    BackendUnavailable
        A named backend cannot run here (the message names the fix).
    """
    if choice != "auto":
        if choice not in BACKENDS:
            raise UsageError(f"--backend {choice!r}: expected auto, {', '.join(BACKENDS)}")
        probe = BACKENDS[choice].probe()
        if not probe.available:
            fix = GPU_FIX if choice == CumlBackend.name else "pip install umap-learn"
            raise BackendUnavailable(f"backend '{choice}' cannot run here ({probe.reason}); {fix}")
        return BACKENDS[choice](), f"asked for with --backend {choice}"
    skipped: list[str] = []
    for probe in probe_all():
        if probe.available:
            why = f"auto: {probe.reason}" + (f" (not {'; '.join(skipped)})" if skipped else "")
            return BACKENDS[probe.name](), why
        skipped.append(f"{probe.name}: {probe.reason}")
    raise BackendUnavailable(f"no UMAP backend can run here ({'; '.join(skipped)}): pip install umap-learn")


def import_umap() -> Any:
    """Import umap-learn with numba's on-disk cache on for its kernels.

    umap-learn compiles its fuzzy-set and layout kernels on every new process (~20 s on 2 cores) because
    they are not declared ``cache=True``; turning the cache on for its module-level dispatchers makes later
    runs reuse the machine code. ``NUMBA_CACHE_DIR`` defaults to a user cache dir so this also works in
    containers whose site-packages are read-only (umap-learn issue #715).
    """
    cached_numba()
    import umap
    import umap.layouts
    import umap.spectral
    import umap.umap_
    import umap.utils
    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher

    for module in (umap.umap_, umap.layouts, umap.spectral, umap.utils):
        for value in vars(module).values():
            # every Dispatcher has a _cache (a NullCache until caching is on), which numba's stub leaves out
            if isinstance(value, Dispatcher) and isinstance(getattr(value, "_cache", None), NullCache):
                value.enable_caching()
    return umap


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None
