"""UMAP on a CUDA GPU with RAPIDS cuML, fitted on the run's one kNN graph.

What is passed to cuML is checked against cuML's own source (``tests/fixtures/cuml-26.10.json``, recorded
from the ``.pyx`` files of the ``cuml-cu12`` 26.10.0 wheel, 26.06 compared), and the versions allowed are
the ones read:

* ``fit_transform(X, y=None, *, knn_graph=None)``: ``knn_graph`` a real tuple ``(indices, distances)``, each
  row's first column the point itself (checked from 26.08), at least ``n_neighbors`` columns (before 25.12
  a wider graph was read with the wrong stride; it is trimmed here, so no version reads more);
* ``build_algo`` is "brute_force_knn": with a graph given cuML builds no kNN, and "auto" would check the
  metric against NN-descent's list (and, with a seed, pick brute force on X at any size);
* ``init``: "spectral" or "random" only (no PCA start);
* with a graph given, ``metric`` only names what its distances are (cosine: 1 - cos).
"""

from __future__ import annotations

import importlib.util
from typing import Any, ClassVar

import numpy as np

from job.arrays import FloatArray, IdArray
from job.config import KnnConfig, UmapConfig
from job.errors import one_line
from job.gpu import GpuInfo, gpu_memory_errors, probe_gpu
from job.knn.graph import Neighbors
from job.reduce.interface import Probe, Reduction
from job.reduce.params import umap_params
from job.xp import to_host

MIN_CUML = (26, 2)
"""The oldest cuML whose sources were read for these calls and accept them with the same meaning (26.02,
what Colab ships: ``tests/fixtures/cuml-26.02-compat.json``; 26.10 recorded in full, 26.06 compared). Older
releases are refused by the probe: 25.12 lacks fixes the layout needs (int32 overflow in the optimiser,
outliers with a seed), before it a wide graph was read with the wrong stride."""
SAME_LAYOUT = (26, 6)
"""From 26.06 a spectral start runs the layout's epochs serially by default (fewer stray outlier points):
26.02 and 26.04 give slightly different maps, which the probe says."""
NEWEST_READ = (26, 10)
CUML_DISTRIBUTIONS = {"cuml-cu12": 12, "cuml-cu13": 13, "cuml": 0}  # pip wheels; conda's "cuml" (CUDA: CuPy's)
MIN_CAPABILITY = {12: (7, 0), 13: (7, 5)}  # RAPIDS' CUDA 12 and CUDA 13 builds
SPECTRAL_MIN_FACES = 100  # below this a "pca" start maps to "random": a spectral layout of a tiny graph fails


def installed_cuml() -> tuple[str, str] | None:
    """The installed cuML distribution and its version, from package metadata (imports nothing)."""
    from importlib.metadata import PackageNotFoundError, version

    for name in CUML_DISTRIBUTIONS:
        try:
            return name, version(name)
        except PackageNotFoundError:
            continue
    return None


def version_tuple(text: str) -> tuple[int, int]:
    """ "26.10.0" -> (26, 10); "26.06.01a" -> (26, 6); unreadable -> (0, 0)."""
    digits = ["".join(ch for ch in part if ch.isdigit()) for part in text.replace("-", ".").split(".")[:2]]
    return (int(digits[0]), int(digits[1])) if len(digits) == 2 and all(digits) else (0, 0)


def cuml_problem(gpu: GpuInfo, distribution: str, version: str) -> str | None:
    """Why this cuML on this GPU cannot run faceatlas's GPU path (None: it can)."""
    found = version_tuple(version)
    if found < MIN_CUML:
        return (f"cuML {version} is older than {MIN_CUML[0]}.{MIN_CUML[1]:02d}, the oldest whose behaviour faceatlas "
                "checked (older ones mis-read a precomputed kNN graph or lack layout fixes); "
                f"{upgrade_fix(distribution)}")
    cuda = CUML_DISTRIBUTIONS.get(distribution, 0) or int(gpu.runtime_cuda.partition(".")[0] or 12)
    need = MIN_CAPABILITY.get(cuda, MIN_CAPABILITY[12])
    if gpu.capability < need:
        return (f"{gpu.device} has compute capability {gpu.compute_capability}, below the {need[0]}.{need[1]} that "
                f"{distribution} needs")
    return None


def upgrade_fix(distribution: str) -> str:
    """How to get a newer cuML: the extra where cuML came from wheels alone; RAPIDS as a whole where it came
    with the rest of RAPIDS (conda's ``cuml``, or a cuDF beside it, as on Colab), since mixing releases breaks
    them."""
    if distribution == "cuml" or importlib.util.find_spec("cudf") is not None:
        return ("upgrade RAPIDS as a whole to one release >= 26.06 (cuML, cuDF, cuVS and the rest together; "
                "mixing releases breaks them)")
    return "pip install 'faceatlas[gpu]' (or 'faceatlas[gpu-cu13]') to upgrade it"


def start_method(init: str, n_fitted: int) -> str:
    """cuML's ``init`` for faceatlas's: "spectral" and "random" as they are; "pca" (cuML has none) is
    "spectral", or "random" for a graph too small for a spectral layout."""
    if init == "random" or (init == "pca" and n_fitted < SPECTRAL_MIN_FACES):
        return "random"
    return "spectral"


def cuml_params(params: UmapConfig, seed: int | None, n_fitted: int) -> dict[str, Any]:
    """``cuml.manifold.UMAP`` keyword arguments (names as in umap-learn; see the module docstring)."""
    return {**umap_params(params, seed), "init": start_method(params.init, n_fitted), "target_metric": "categorical",
            "build_algo": "brute_force_knn", "output_type": "cupy"}


def knn_graph(graph: Neighbors, n_neighbors: int, metric: str) -> tuple[Any, Any]:
    """The graph as cuML takes it: a tuple (indices int64, distances float32), each (n, n_neighbors), CuPy,
    the point itself first. Distances are the graph's cosine ones, or on unit vectors the euclidean
    sqrt(2 (1 - cos)) when ``metric`` is "euclidean"."""
    import cupy

    indices = cupy.ascontiguousarray(cupy.asarray(graph.indices)[:, :n_neighbors], dtype=cupy.int64)
    distances = cupy.asarray(graph.distances)[:, :n_neighbors].astype(cupy.float32)
    if metric == "euclidean":
        distances = cupy.sqrt(2.0 * cupy.maximum(distances, 0.0)).astype(cupy.float32)
    if not bool((indices[:, 0] == cupy.arange(len(indices))).all()):
        raise ValueError("the kNN graph must list each face first in its own row")  # our bug: cuML would refuse it
    return indices, cupy.ascontiguousarray(distances)


class CumlBackend:
    """RAPIDS cuML UMAP on a CUDA GPU, on the run's kNN graph (built by cuVS on the GPU)."""

    name: ClassVar[str] = "cuml"
    uses_gpu: ClassVar[bool] = True

    @classmethod
    def probe(cls) -> Probe:
        gpu = probe_gpu()
        if not gpu.available:
            return Probe(cls.name, False, gpu.reason)
        if importlib.util.find_spec("cuml") is None:
            return Probe(cls.name, False, f"{gpu.reason}, but RAPIDS cuML is not installed")
        found = installed_cuml()
        try:
            import cuml
        except Exception as exc:  # noqa: BLE001 - CUDA libraries raise many kinds without a driver
            return Probe(cls.name, False, f"cuML failed to import ({type(exc).__name__}: {one_line(exc)})")
        distribution, version = found if found else ("cuml", str(cuml.__version__))
        problem = cuml_problem(gpu, distribution, version)
        if problem:
            return Probe(cls.name, False, problem, version)
        release = version_tuple(version)
        newer = "" if release <= NEWEST_READ else " (newer than the 26.10 faceatlas was checked against)"
        if release < SAME_LAYOUT:
            newer = (" (its layout runs epochs in parallel from a spectral start, as before 26.06: maps differ a "
                     f"little from 26.06+; to have those, {upgrade_fix(distribution)})")
        cuvs = ("" if importlib.util.find_spec("cuvs") is not None else "; cuVS is not installed (cuML does not "
                "bring it): exact kNN by CuPy, no NN-descent; pip install 'faceatlas[gpu]' adds it")
        return Probe(cls.name, True, f"{gpu.reason} and cuML {version}{newer}{cuvs}", version)

    @staticmethod
    def namespace() -> Any:
        import cupy

        return cupy

    def fit_transform(self, unit: Any, labels: np.ndarray | None, params: UmapConfig, knn: KnnConfig, seed: int | None,
                      *, graph: Neighbors | None = None) -> Reduction:
        """Fit cuML UMAP on ``unit`` (n, dim), CuPy or NumPy; ``graph`` as for the CPU backend (built on the GPU
        here when not given)."""
        import cuml
        import cupy
        from cuml.manifold import UMAP

        unit = cupy.asarray(unit, dtype=cupy.float32)
        method = graph.method if graph is not None else ""
        if graph is None or graph.indices.shape[1] < params.n_neighbors:
            from job.knn.index import face_graph

            shared = face_graph(unit, np.arange(len(unit)), params.n_neighbors, knn, seed=seed)
            graph, method = shared.among_reference(params.n_neighbors), shared.method
        y = None if labels is None else cupy.asarray(labels, dtype=cupy.int32)
        with gpu_memory_errors("the UMAP fit"):
            model = UMAP(**cuml_params(params, seed, len(unit)))
            coords = model.fit_transform(unit, y=y, knn_graph=knn_graph(graph, params.n_neighbors, params.metric))
        return Reduction(np.asarray(to_host(coords), dtype=np.float32), method, f"cuML {cuml.__version__}")


def hdbscan_labels(coords: FloatArray, min_size: int) -> IdArray:
    """cuML HDBSCAN of the map points (n, n_components): its kNN by NN-descent above a few thousand points (the
    default brute force is quadratic), brute force below (NN-descent needs more points than its graph degree)."""
    import cupy
    from cuml.cluster import HDBSCAN

    points = cupy.asarray(coords, dtype=cupy.float32)
    algo = "nn_descent" if len(points) > HDBSCAN_BRUTE_MAX else "brute_force"
    # min_samples defaults to min_cluster_size, and cuML takes at most 1023 (hdbscan.pyx)
    with gpu_memory_errors("HDBSCAN"):
        labels = HDBSCAN(min_cluster_size=min_size, min_samples=min(min_size, HDBSCAN_MAX_SAMPLES), build_algo=algo,
                         output_type="cupy").fit_predict(points)
    return np.asarray(to_host(labels), dtype=np.int64)


HDBSCAN_BRUTE_MAX = 20_000
HDBSCAN_MAX_SAMPLES = 1023

