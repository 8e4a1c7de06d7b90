"""UMAP backends behind one small interface: RAPIDS cuML on a CUDA GPU, umap-learn on CPU.

``BACKENDS`` maps a name to a class; :func:`resolve` turns "auto" (or a name) into a ready backend and the
reason it was chosen, which the run records. Libraries are imported inside the methods that need them, so
``faceatlas --help`` stays instant; probes catch any Exception because CUDA libraries raise more than
ImportError on machines without a driver.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from job.arrays import FloatArray, IdArray
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
    """umap-learn on CPU, given the run's kNN graph as ``precomputed_knn`` (so it builds none of its own)."""

    name: ClassVar[str] = "umap-learn"

    @classmethod
    def probe(cls) -> Probe:
        if importlib.util.find_spec("umap") is None:
            return Probe(cls.name, False, "umap-learn is not installed: pip install umap-learn")
        return Probe(cls.name, True, "umap-learn is installed (CPU)", _dist_version("umap-learn"))

    def fit_transform(
        self, unit: FloatArray, labels: IdArray | None, params: UmapConfig, knn: KnnConfig, seed: int | None,
        graph: Neighbors | None = None,
    ) -> Reduction:
        umap = import_umap()
        kwargs = umap_params(params, seed)
        if graph is None or graph.indices.shape[1] < params.n_neighbors:
            from job.knn.index import face_graph

            shared = face_graph(unit, np.arange(len(unit)), params.n_neighbors, knn.method, knn.exact_max_faces, seed)
            graph = shared.among_reference(params.n_neighbors)
        distances = graph.distances[:, : params.n_neighbors]
        if params.metric == "euclidean":  # the graph is cosine; on unit vectors euclidean = sqrt(2 cosine)
            distances = np.sqrt(2.0 * np.maximum(distances, 0.0)).astype(np.float32)
        kwargs["precomputed_knn"] = (np.ascontiguousarray(graph.indices[:, : params.n_neighbors]),
                                     np.ascontiguousarray(distances))
        with warnings.catch_warnings():
            # both are expected here: we pass no search index, and a seed means one thread
            warnings.filterwarnings("ignore", message=".*knn_search_index.*")
            warnings.filterwarnings("ignore", message=".*overridden to 1 by setting random_state.*")
            data = np.asarray(unit, dtype=np.float32)  # the caller's float32 rows: no copy
            if kwargs["init"] == "pca":  # the same start as umap-learn's, without scikit-learn's centred copy
                kwargs["init"] = pca_start(data, params.n_components, seed)
            coords = umap.UMAP(**kwargs).fit_transform(data, y=labels)
        return Reduction(np.asarray(coords, dtype=np.float32), graph.method)


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
        from cuml.manifold import UMAP

        model = UMAP(**cuml_params(params, seed, knn.method), output_type="numpy")
        coords = model.fit_transform(unit, y=labels)
        return Reduction(np.asarray(coords, dtype=np.float32), f"cuml:{knn.method}")


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


def default_numba_cache() -> None:
    """Point numba's on-disk cache at the user cache dir unless ``NUMBA_CACHE_DIR`` is set.

    Numba reads the variable when it is first imported, so the CLI calls this before anything else.
    """
    os.environ.setdefault("NUMBA_CACHE_DIR", str(user_cache_dir() / "numba"))


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/faceatlas`` (default ``~/.cache/faceatlas``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "faceatlas"


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None
