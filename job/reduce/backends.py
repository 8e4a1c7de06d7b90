"""UMAP backends behind one small interface: RAPIDS cuML on a CUDA GPU, umap-learn on CPU.

``BACKENDS`` maps a name to a class; :func:`resolve` turns "auto" (or a name) into a ready backend and the
reason it was chosen, which the run records. Libraries are imported inside the methods that need them, so
``faceatlas --help`` stays instant; probes catch any Exception because CUDA libraries raise more than
ImportError on machines without a driver.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

from job.arrays import FloatArray, IdArray
from job.caches import default_numba_cache
from job.config import KnnConfig, UmapConfig
from job.errors import BackendUnavailable, UsageError
from job.knn.graph import Neighbors
from job.reduce.start import pca_start

GPU_FIX = "pip install 'faceatlas[gpu]' on a machine with an NVIDIA GPU (driver >= 535), or use --backend umap-learn"


@dataclass(frozen=True)
class Probe:
    """Whether a backend can run here, and why (not)."""

    name: str
    available: bool
    reason: str
    version: str | None = None


class Backend(Protocol):
    """What the pipeline needs from a UMAP implementation."""

    name: ClassVar[str]

    @classmethod
    def probe(cls) -> Probe: ...

    def fit_transform(
        self, unit: FloatArray, labels: IdArray | None, params: UmapConfig, knn: KnnConfig, seed: int | None,
        graph: Neighbors | None = None,
    ) -> Reduction:
        """Fit UMAP on unit vectors of shape (n_faces, dim) float32.

        ``labels``: for supervised UMAP, identity codes 0..n_identities-1 of shape (n_faces,), int32.
        ``graph``: a cosine kNN graph of ``unit`` with at least ``n_neighbors`` columns, for a backend that
        can reuse it (umap-learn); others build their own.
        """
        ...


@dataclass(frozen=True)
class Reduction:
    """A fitted map: ``coords`` of shape (n_faces, n_components) float32, and how its kNN graph was built."""

    coords: FloatArray
    knn_method: str
    engine: str = ""


def umap_params(params: UmapConfig, seed: int | None) -> dict[str, Any]:
    """Keyword arguments shared by ``umap.UMAP`` and ``cuml.manifold.UMAP`` (same names in both)."""
    return {
        "n_components": params.n_components,
        "n_neighbors": params.n_neighbors,
        "min_dist": params.min_dist,
        "spread": params.spread,
        "metric": params.metric,
        "n_epochs": None if params.n_epochs == "auto" else params.n_epochs,
        "init": params.init,
        "repulsion_strength": params.repulsion_strength,
        "target_weight": params.target_weight,
        "random_state": seed,
    }


class UmapLearnBackend:
    """UMAP on CPU, umap-learn's algorithm on the run's kNN graph: its fuzzy set and layout as ported in
    :mod:`job.reduce.layout` (tested equal to umap-learn's), so the run imports neither umap-learn nor
    pynndescent and compiles nothing once numba's cache holds the layout kernel. ``init="spectral"`` calls
    umap-learn's own spectral layout on the same graph."""

    name: ClassVar[str] = "umap-learn"
    engine: ClassVar[str] = "umap-learn 0.5 algorithm (job/reduce/layout.py: numpy fuzzy set, cached numba SGD)"

    @classmethod
    def probe(cls) -> Probe:
        if importlib.util.find_spec("umap") is None:
            return Probe(cls.name, False, "umap-learn is not installed: pip install umap-learn")
        return Probe(cls.name, True, "umap-learn is installed (CPU)", _dist_version("umap-learn"))

    def fit_transform(
        self, unit: FloatArray, labels: IdArray | None, params: UmapConfig, knn: KnnConfig, seed: int | None,
        graph: Neighbors | None = None,
    ) -> Reduction:
        from job.reduce import layout

        if graph is None or graph.indices.shape[1] < params.n_neighbors:
            from job.knn.index import face_graph

            shared = face_graph(unit, np.arange(len(unit)), params.n_neighbors, knn.method, knn.exact_max_faces, seed)
            graph = shared.among_reference(params.n_neighbors)
        distances = graph.distances[:, : params.n_neighbors]
        if params.metric == "euclidean":  # the graph is cosine; on unit vectors euclidean = sqrt(2 cosine)
            distances = np.sqrt(2.0 * np.maximum(distances, 0.0)).astype(np.float32)
        n_epochs = int(params.n_epochs)  # resolved by fit_params
        fuzzy = layout.fuzzy_graph(graph.indices[:, : params.n_neighbors], distances, labels, params.target_weight)
        fuzzy = layout.prune(fuzzy, n_epochs)
        rng = np.random.default_rng(seed)
        start = layout.scale_start(_start(unit, fuzzy, params, seed, rng))
        a, b = layout.ab_params(params.spread, float(params.min_dist))
        state = rng.integers(np.iinfo(np.int32).min, np.iinfo(np.int32).max, 3).astype(np.int64)
        coords = layout.optimize_layout(start, start, fuzzy, n_epochs, a, b, state, float(params.repulsion_strength),
                                        parallel=seed is None)
        return Reduction(coords, graph.method, self.engine)


def _start(unit: FloatArray, fuzzy: Any, params: UmapConfig, seed: int | None, rng: np.random.Generator
           ) -> FloatArray:
    """Where the layout starts (before umap-learn's rescaling to [0, 10]): PCA, uniform random, or umap-learn's
    spectral layout of the fuzzy graph."""
    if params.init == "pca":  # the same start as umap-learn's, without scikit-learn's centred copy
        return pca_start(np.asarray(unit, dtype=np.float32), params.n_components, seed)
    if params.init == "random":
        return rng.uniform(-10.0, 10.0, size=(len(unit), params.n_components)).astype(np.float32)
    import scipy.sparse

    umap = import_umap()
    matrix = scipy.sparse.coo_matrix((fuzzy.weight, (fuzzy.head, fuzzy.tail)), shape=(fuzzy.n_vertices,) * 2)
    state = np.random.RandomState(seed)  # umap-learn's spectral layout takes a RandomState
    spectral = umap.spectral.spectral_layout(unit, matrix.tocsr(), params.n_components, state)
    return umap.umap_.noisy_scale_coords(spectral, state, max_coord=10, noise=0.0001)


class CumlBackend:
    """RAPIDS cuML on a CUDA GPU; builds its own kNN graph on the GPU."""

    name: ClassVar[str] = "cuml"

    @classmethod
    def probe(cls) -> Probe:
        gpu = probe_gpu()
        if not gpu.available:
            return Probe(cls.name, False, gpu.reason)
        if importlib.util.find_spec("cuml") is None:
            return Probe(cls.name, False, f"{gpu.reason}, but RAPIDS cuML is not installed")
        try:
            import cuml
        except Exception as exc:  # noqa: BLE001 - CUDA libraries raise many kinds without a driver
            return Probe(cls.name, False, f"cuML failed to import ({type(exc).__name__}: {exc})")
        return Probe(cls.name, True, f"{gpu.reason} and cuML {cuml.__version__}", str(cuml.__version__))

    def fit_transform(
        self, unit: FloatArray, labels: IdArray | None, params: UmapConfig, knn: KnnConfig, seed: int | None,
        graph: Neighbors | None = None,
    ) -> Reduction:
        import cuml
        from cuml.manifold import UMAP

        model = UMAP(**cuml_params(params, seed, knn.method), output_type="numpy")
        coords = model.fit_transform(unit, y=labels)
        return Reduction(np.asarray(coords, dtype=np.float32), f"cuml:{knn.method}", f"cuML {cuml.__version__}")


def cuml_params(params: UmapConfig, seed: int | None, knn_method: str = "auto") -> dict[str, Any]:
    """cuML's keyword arguments: the shared ones plus the GPU kNN algorithm.

    ``knn.method`` "exact" maps to brute force, "approximate" to NN-descent, "auto" to cuML's own choice
    (brute force up to 50k rows). cuML forces brute force whenever ``random_state`` is set.
    """
    algo = {"exact": "brute_force_knn", "approximate": "nn_descent", "faiss-ivf": "nn_descent"}.get(knn_method, "auto")
    kwargs = {**umap_params(params, seed), "build_algo": algo}
    if kwargs["init"] == "pca":  # cuML starts from "spectral" or "random" only
        kwargs["init"] = "spectral"
    return kwargs


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


def probe_gpu() -> Probe:
    """Is a CUDA GPU usable? Asks CuPy, which guards driver errors; never raises."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return Probe("gpu", False, "CUDA_VISIBLE_DEVICES is empty, so no GPU is visible")
    if importlib.util.find_spec("cupy") is None:
        return Probe("gpu", False, "CuPy is not installed, so no CUDA GPU can be used")
    try:
        import cupy

        if not cupy.is_available():
            return Probe("gpu", False, "no CUDA GPU or driver found by CuPy")
        count = cupy.cuda.runtime.getDeviceCount()
        name = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    except Exception as exc:  # noqa: BLE001 - see module docstring
        return Probe("gpu", False, f"CUDA GPU probe failed ({type(exc).__name__}: {exc})")
    return Probe("gpu", True, f"{count} CUDA GPU(s), first: {name}", str(cupy.__version__))


def import_umap() -> Any:
    """Import umap-learn with numba's on-disk cache on for its kernels.

    umap-learn compiles its fuzzy-set and layout kernels on every new process (~20 s on 2 cores) because
    they are not declared ``cache=True``; turning the cache on for its module-level dispatchers makes later
    runs reuse the machine code. ``NUMBA_CACHE_DIR`` defaults to a user cache dir so this also works in
    containers whose site-packages are read-only (umap-learn issue #715).
    """
    default_numba_cache()
    import umap
    import umap.layouts
    import umap.spectral
    import umap.umap_
    import umap.utils
    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher

    for module in (umap.umap_, umap.layouts, umap.spectral, umap.utils):
        for value in vars(module).values():
            if isinstance(value, Dispatcher) and isinstance(value._cache, NullCache):
                value.enable_caching()
    return umap


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None
