from __future__ import annotations

import inspect

import numpy as np
import pytest

from job.analysis.metrics import trustworthiness
from job.config import KnnConfig, UmapConfig
from job.errors import BackendUnavailable
from job.knn.graph import normalise
from job.reduce.backends import BACKENDS, CumlBackend, UmapLearnBackend, probe_gpu, resolve, umap_params
from job.reduce.gpu_umap import cuml_params, start_method
from job.reduce.params import fit_params


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

    params = umap_params(fit_params(UmapConfig(n_neighbors=7, n_epochs=30, supervised=True), False, 100), seed=3)
    accepted = set(inspect.signature(umap.UMAP).parameters)
    assert set(params) <= accepted
    assert params["n_neighbors"] == 7 and params["n_epochs"] == 30 and params["random_state"] == 3
    assert params["min_dist"] == 0.1 and params["repulsion_strength"] == 2.0 and params["init"] == "pca"


def test_auto_settings_follow_how_the_map_is_fitted() -> None:
    every = fit_params(UmapConfig(), sampled=False, n_fitted=5000)
    sample = fit_params(UmapConfig(), sampled=True, n_fitted=200_000)
    assert (every.min_dist, every.repulsion_strength, every.n_epochs) == (0.1, 2.0, 500)
    assert (sample.min_dist, sample.repulsion_strength, sample.n_epochs) == (0.0, 3.0, 300)
    chosen = fit_params(UmapConfig(min_dist=0.3, repulsion_strength=1.0, n_epochs=42), sampled=True, n_fitted=10)
    assert (chosen.min_dist, chosen.repulsion_strength, chosen.n_epochs) == (0.3, 1.0, 42)


def test_cuml_parameter_mapping() -> None:
    params = fit_params(UmapConfig(n_neighbors=9), False, 5000)
    kwargs = cuml_params(params, 0, 5000)
    shared = umap_params(params, 0)
    assert kwargs["init"] == "spectral" and shared["init"] == "pca"  # cuML has no PCA start
    assert {k: v for k, v in kwargs.items() if k in shared and k != "init"} == \
        {k: v for k, v in shared.items() if k != "init"}
    assert kwargs["build_algo"] == "brute_force_knn"  # a graph is given: cuML builds none, checks no NN-descent metric
    assert cuml_params(fit_params(UmapConfig(init="random"), False, 50), 0, 50)["init"] == "random"
    assert start_method("pca", 20) == "random" and start_method("spectral", 20) == "spectral"


@pytest.fixture(params=[UmapLearnBackend.name, pytest.param(CumlBackend.name, marks=pytest.mark.gpu)])
def backend(request: pytest.FixtureRequest):
    return BACKENDS[request.param]()


def test_backend_keeps_identities_together(backend, small_arrays) -> None:
    ids, unit = small_arrays
    reduction = backend.fit_transform(unit, None, fit_params(UmapConfig(n_epochs=100), False, len(ids)), KnnConfig(), 0)
    assert reduction.coords.shape == (len(ids), 2) and reduction.coords.dtype == np.float32
    assert trustworthiness(unit, reduction.coords, k=15) > 0.85


def test_approximate_knn_path_runs_too(small_arrays) -> None:
    ids, unit = small_arrays
    params = fit_params(UmapConfig(n_epochs=50, n_components=3), False, len(ids))
    reduction = UmapLearnBackend().fit_transform(unit, ids, params, KnnConfig(method="approximate"), 0)
    assert reduction.knn_method == "faiss-ivf" and reduction.coords.shape == (len(ids), 3)


@pytest.fixture(scope="module")
def small_arrays():
    from job.io.demo import make_demo
    from tests.conftest import SMALL

    records, _ = make_demo(SMALL)
    return records["id"].astype(np.int64), normalise(records["embedding"].astype(np.float32))
