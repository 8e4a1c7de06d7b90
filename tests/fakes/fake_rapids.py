"""A FAKE RAPIDS (cuML and cuVS) for CPU tests. It is not RAPIDS and runs nothing on a GPU.

Its classes and functions take exactly the parameters recorded from cuML 26.10's and cuVS 26.10's own
sources (``tests/fixtures/cuml-26.10.json``, ``tests/fixtures/cuvs-26.10.json``), refuse values those
sources refuse, validate a precomputed kNN graph as ``cuml/manifold/utils.py`` does, and then compute with
real CPU libraries: ``UMAP`` with umap-learn (on the graph it was given), ``HDBSCAN`` with faceatlas's port
of scikit-learn's, brute force and all-neighbours with an exact NumPy search. Arrays come and go as the FAKE
CuPy's device arrays (:mod:`tests.fakes.fake_cupy`). Every call is appended to :data:`CALLS`.

:func:`install` puts ``cuml``, ``cuml.manifold``, ``cuml.cluster``, ``cuvs``, ``cuvs.common``,
``cuvs.neighbors`` and its submodules, and ``rmm`` (whose pool takes half the fake GPU's free memory, as
RMM's does) into ``sys.modules``.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np

from tests.fakes import fake_cupy

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CUML = json.loads((FIXTURES / "cuml-26.10.json").read_text())
CUVS = json.loads((FIXTURES / "cuvs-26.10.json").read_text())
CALLS: list[dict[str, Any]] = []
STATE: dict[str, Any] = {"version": "26.10.0", "fail_fit": None}
"""``version``: what ``cuml.__version__`` says; ``fail_fit``: an exception the UMAP fit raises."""


def _host(value: Any) -> Any:
    if value is None or isinstance(value, (int, float, str)):
        return value
    if not isinstance(value, fake_cupy.ndarray):
        raise TypeError(f"FAKE RAPIDS: expected a device array (__cuda_array_interface__), got {type(value)}")
    return fake_cupy.asnumpy(value)


def _kwargs(recorded: dict[str, str], given: dict[str, Any], what: str) -> dict[str, Any]:
    unknown = sorted(set(given) - set(recorded))
    if unknown:
        raise TypeError(f"{what}() got unexpected keyword arguments {unknown} (FAKE, recorded from the source)")
    return given


class UMAP:
    """cuml.manifold.UMAP with 26.10's keyword-only constructor; fits with umap-learn on the given graph."""

    def __init__(self, **kwargs: Any) -> None:
        self.params = _kwargs(CUML["UMAP"]["init"], kwargs, "UMAP")
        checks = {"build_algo": CUML["UMAP"]["build_algo"], "init": CUML["UMAP"]["init_values"],
                  "metric": CUML["UMAP"]["metrics"], "output_type": CUML["UMAP"]["output_type_values"],
                  "target_metric": CUML["UMAP"]["target_metric_values"]}
        for key, allowed in checks.items():
            if key in kwargs and kwargs[key] not in allowed:
                raise ValueError(f"UMAP {key}={kwargs[key]!r}: not one of {allowed} (FAKE, recorded)")
        if set(kwargs.get("build_kwds") or {}) - set(CUML["UMAP"]["build_kwds"]):
            raise ValueError("UMAP build_kwds: unknown keys (FAKE, recorded)")

    def fit_transform(self, X: Any, y: Any = None, *, knn_graph: Any = None) -> Any:  # noqa: N803 - cuML's name
        data = _host(X)
        n = len(data)
        n_neighbors = min(n, self.params.get("n_neighbors", 15))
        call: dict[str, Any] = {"call": "UMAP.fit_transform", "params": dict(self.params), "n": n,
                                "supervised": y is not None}
        if STATE["fail_fit"] is not None:
            raise STATE["fail_fit"]
        if knn_graph is not None:  # cuml/manifold/utils.py extract_knn_graph, tuple form
            if not isinstance(knn_graph, tuple):
                raise ValueError("FAKE: knn_graph other than a tuple is read as a pairwise matrix")
            indices, distances = (_host(part) for part in knn_graph)
            if indices.shape[0] != n or indices.shape != distances.shape:
                raise ValueError("Precomputed KNN data has the wrong shape (FAKE, as cuML)")
            if not (indices[:, 0] == np.arange(n)).all():
                raise ValueError("Expected indices and distances to include self references (FAKE, as cuML)")
            if indices.shape[1] < n_neighbors:
                raise ValueError(f"Precomputed KNN data has {indices.shape[1]} neighbors per sample, "
                                 f"{n_neighbors} needed (FAKE, as cuML)")
            call.update(graph_columns=int(indices.shape[1]), indices=indices.copy(), distances=distances.copy())
            indices, distances = indices[:, :n_neighbors], distances[:, :n_neighbors]
        CALLS.append(call)
        import umap

        init = self.params.get("init", "spectral")
        model = umap.UMAP(n_neighbors=n_neighbors, n_components=self.params.get("n_components", 2),
                          metric=self.params.get("metric", "euclidean"), min_dist=self.params.get("min_dist", 0.1),
                          spread=self.params.get("spread", 1.0), n_epochs=self.params.get("n_epochs"), init=init,
                          repulsion_strength=self.params.get("repulsion_strength", 1.0),
                          target_weight=self.params.get("target_weight", 0.5),
                          random_state=self.params.get("random_state"),
                          precomputed_knn=(None, None, None) if knn_graph is None else
                          (indices.astype(np.int64), distances.astype(np.float32), None))
        coords = model.fit_transform(data, y=None if y is None else _host(y).astype(np.float32))
        return fake_cupy.asarray(np.asarray(coords, dtype=np.float32))


class HDBSCAN:
    """cuml.cluster.HDBSCAN with 26.10's constructor; clusters with faceatlas's port of scikit-learn's."""

    def __init__(self, **kwargs: Any) -> None:
        self.params = _kwargs(CUML["HDBSCAN"]["init"], kwargs, "HDBSCAN")
        if kwargs.get("build_algo", "brute_force") not in CUML["HDBSCAN"]["build_algo"]:
            raise ValueError(f"HDBSCAN build_algo={kwargs['build_algo']!r} (FAKE, recorded)")

    def fit_predict(self, X: Any) -> Any:  # noqa: N803
        from job.analysis.hdbscan import hdbscan_labels

        CALLS.append({"call": "HDBSCAN.fit_predict", "params": dict(self.params), "n": len(X)})
        return fake_cupy.asarray(hdbscan_labels(_host(X), self.params.get("min_cluster_size", 5)).astype(np.int32))


def _cosine_knn(reference: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    from job.knn.exact import ExactIndex

    def unit(rows: np.ndarray) -> np.ndarray:
        return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-30)

    index = ExactIndex()
    index.build(unit(reference.astype(np.float32)))
    return index.query(unit(queries.astype(np.float32)), k)


class _Index:
    """As cuVS's: a non-owning view of the dataset (brute_force.hpp), so a freed dataset is caught."""

    trained = True

    def __init__(self, dataset: Any, metric: str) -> None:
        import weakref

        self._dataset, self.metric = weakref.ref(dataset), metric

    @property
    def dataset(self) -> np.ndarray:
        dataset = self._dataset()
        if dataset is None:
            raise RuntimeError("FAKE cuVS: the dataset this index views was freed (cuVS keeps no copy: hold it)")
        return fake_cupy.asnumpy(dataset)


def brute_force_build(dataset: Any, metric: str = "sqeuclidean", metric_arg: float = 2.0, resources: Any = None
                      ) -> _Index:
    if metric not in CUVS["brute_force"]["metrics"]:
        raise KeyError(metric)
    _host(dataset)  # on the device
    CALLS.append({"call": "brute_force.build", "metric": metric, "n": len(dataset)})
    return _Index(dataset, metric)


def brute_force_search(index: _Index, queries: Any, k: int, neighbors: Any = None, distances: Any = None,
                       resources: Any = None, prefilter: Any = None) -> tuple[Any, Any]:
    found, similarity = _cosine_knn(index.dataset, _host(queries), k)
    if index.metric != "cosine":
        raise NotImplementedError("FAKE cuVS: only the cosine metric is computed")
    return fake_cupy.asarray(1.0 - similarity), fake_cupy.asarray(found)  # (distances, neighbors), as cuVS


class AllNeighborsParams:
    def __init__(self, **kwargs: Any) -> None:
        _kwargs(CUVS["all_neighbors"]["AllNeighborsParams"], kwargs, "AllNeighborsParams")
        for key, value in {"algo": "nn_descent", "overlap_factor": 2, "n_clusters": 1, "metric": "sqeuclidean",
                           **kwargs}.items():
            setattr(self, key, value)


class IndexParams:
    def __init__(self, **kwargs: Any) -> None:
        _kwargs(CUVS["nn_descent"]["IndexParams"], kwargs, "nn_descent.IndexParams")
        self.params = kwargs


def all_neighbors_build(dataset: Any, k: int, params: AllNeighborsParams, *, indices: Any = None,
                        distances: Any = None, core_distances: Any = None, alpha: float = 1.0,
                        resources: Any = None) -> Any:
    on_device = isinstance(dataset, fake_cupy.ndarray)
    if on_device and params.n_clusters > 1:
        raise ValueError("Batched all-neighbors build is not supported with data on device. Put data on host for "
                         "batch build. (FAKE, as cuVS)")
    data = _host(dataset) if on_device else np.asarray(dataset)
    if data.dtype != np.float32:
        raise TypeError("FAKE cuVS: dataset must be float32")
    if params.n_clusters > 1 and params.overlap_factor >= params.n_clusters:
        raise ValueError("FAKE cuVS: overlap_factor must be below n_clusters")
    nnd = getattr(params, "nn_descent_params", None)
    if nnd is not None and nnd.params.get("metric", params.metric) != params.metric:
        raise ValueError("Metric conflict: AllNeighborsParams metric does not match NN-Descent metric (FAKE)")
    CALLS.append({"call": "all_neighbors.build", "n": len(data), "k": k, "n_clusters": params.n_clusters,
                  "metric": params.metric, "on_device": on_device})
    found, similarity = _cosine_knn(data, data, k)  # exact: the fake stands in for NN-descent's answer
    # like NN-descent, miss some points' own entries (every 7th row here): the caller must put each point first
    missed = np.arange(0, len(found), 7)
    found[missed], similarity[missed] = np.roll(found[missed], -1, axis=1), np.roll(similarity[missed], -1, axis=1)
    found[missed, -1], similarity[missed, -1] = found[missed, -2], similarity[missed, -2]
    indices._array[...] = found  # the caller's device buffers, filled in place
    distances._array[...] = 2.0 - 2.0 * similarity  # sqeuclidean on unit vectors
    return indices, distances


class Resources:
    def sync(self) -> None:
        return None


class MultiGpuResources(Resources):
    def __init__(self, device_ids: Any = None) -> None:
        self.device_ids = device_ids


def rmm_reinitialize(pool_allocator: bool = False, managed_memory: bool = False, initial_pool_size: Any = None,
                     maximum_pool_size: Any = None, devices: Any = 0, logging: bool = False,
                     log_file_name: Any = None) -> None:
    """rmm.reinitialize: a pool reserves half the free memory at once (PoolMemoryResource's default)."""
    CALLS.append({"call": "rmm.reinitialize", "pool_allocator": pool_allocator, "managed_memory": managed_memory})
    if pool_allocator and not managed_memory:
        fake_cupy.GPU["free"] //= 2


def _module(name: str, **attributes: Any) -> types.ModuleType:
    module = types.ModuleType(name, f"FAKE {name} (tests/fakes/fake_rapids.py)")
    module.__dict__.update(attributes)
    module.__spec__ = types.SimpleNamespace(name=name, origin=__file__, submodule_search_locations=[])
    return module


def modules() -> dict[str, types.ModuleType]:
    """The fake modules by import name."""
    manifold, cluster = _module("cuml.manifold", UMAP=UMAP), _module("cuml.cluster", HDBSCAN=HDBSCAN)
    cuml = _module("cuml", __version__=STATE["version"], manifold=manifold, cluster=cluster, IS_FAKE=True)
    brute_force = _module("cuvs.neighbors.brute_force", build=brute_force_build, search=brute_force_search)
    all_neighbors = _module("cuvs.neighbors.all_neighbors", build=all_neighbors_build,
                            AllNeighborsParams=AllNeighborsParams)
    nn_descent = _module("cuvs.neighbors.nn_descent", IndexParams=IndexParams)
    neighbors = _module("cuvs.neighbors", brute_force=brute_force, all_neighbors=all_neighbors,
                        nn_descent=nn_descent)
    common = _module("cuvs.common", Resources=Resources, MultiGpuResources=MultiGpuResources)
    cuvs = _module("cuvs", neighbors=neighbors, common=common, IS_FAKE=True)
    cupy_allocators = _module("rmm.allocators.cupy", rmm_cupy_allocator=lambda size: None)
    allocators = _module("rmm.allocators", cupy=cupy_allocators)
    rmm = _module("rmm", reinitialize=rmm_reinitialize, allocators=allocators, IS_FAKE=True)
    return {module.__name__: module for module in (cuml, manifold, cluster, cuvs, common, neighbors, brute_force,
                                                   all_neighbors, nn_descent, rmm, allocators, cupy_allocators)}


def install(monkeypatch: Any, version: str = "26.10.0") -> None:
    """Put the FAKE CuPy, cuML and cuVS into ``sys.modules`` for one test."""
    STATE["version"] = version
    CALLS.clear()
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    for name, module in modules().items():
        monkeypatch.setitem(sys.modules, name, module)
