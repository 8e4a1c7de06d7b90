from __future__ import annotations

import inspect

import numpy as np
import pytest

from job.backends import (
    BACKENDS,
    CumlBackend,
    UmapLearnBackend,
    cuml_params,
    knn_method,
    probe_gpu,
    resolve,
    umap_params,
)
from job.config import KnnConfig, UmapConfig
from job.errors import BackendUnavailable
from job.knn import normalise
from job.metrics import trustworthiness


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")


def test_hidden_gpu_makes_auto_choose_umap_learn(no_gpu: None) -> None:
    assert not probe_gpu().available
    backend, reason = resolve("auto")
    assert backend.name == "umap-learn"
    assert "cuml" in reason and "CUDA_VISIBLE_DEVICES" in reason


def test_asking_for_cuml_without_it_names_the_fix(no_gpu: None) -> None:
    with pytest.raises(BackendUnavailable, match=r"faceatlas\[gpu\].*--backend umap-learn"):
        resolve("cuml")


def test_both_backends_share_the_library_parameter_names() -> None:
    import umap

    params = umap_params(UmapConfig(n_neighbors=7, n_epochs=30, supervised=True), seed=3)
    accepted = set(inspect.signature(umap.UMAP).parameters)
    assert set(params) <= accepted
    assert params["n_neighbors"] == 7 and params["n_epochs"] == 30 and params["random_state"] == 3
    assert umap_params(UmapConfig(), None)["n_epochs"] is None


@pytest.mark.parametrize(("method", "algo"), [("auto", "auto"), ("exact", "brute_force_knn"),
                                               ("approximate", "nn_descent")])
def test_cuml_parameter_mapping(method: str, algo: str) -> None:
    params = cuml_params(UmapConfig(), 0, method)
    assert params["build_algo"] == algo
    assert {k: v for k, v in params.items() if k != "build_algo"} == umap_params(UmapConfig(), 0)


def test_knn_method_switches_to_approximate_above_the_limit() -> None:
    assert knn_method(1000, KnnConfig()) == "exact"
    assert knn_method(60_000, KnnConfig()) == "approximate"
    assert knn_method(10, KnnConfig(method="approximate")) == "approximate"


@pytest.fixture(params=[UmapLearnBackend.name, pytest.param(CumlBackend.name, marks=pytest.mark.gpu)])
def backend(request: pytest.FixtureRequest):
    return BACKENDS[request.param]()


def test_backend_keeps_identities_together(backend, small_arrays) -> None:
    ids, unit = small_arrays
    reduction = backend.fit_transform(unit, None, UmapConfig(n_epochs=100), KnnConfig(), 0)
    assert reduction.coords.shape == (len(ids), 2) and reduction.coords.dtype == np.float32
    assert trustworthiness(unit, reduction.coords, k=15) > 0.85


def test_approximate_knn_path_runs_too(small_arrays) -> None:
    ids, unit = small_arrays
    reduction = UmapLearnBackend().fit_transform(unit, ids, UmapConfig(n_epochs=50, n_components=3),
                                                 KnnConfig(method="approximate"), 0)
    assert reduction.knn_method == "approximate" and reduction.coords.shape == (len(ids), 3)


@pytest.fixture(scope="module")
def small_arrays():
    from job.demo import make_demo
    from tests.conftest import SMALL

    records, _ = make_demo(SMALL)
    return records["id"].astype(np.int64), normalise(records["embedding"].astype(np.float32))
