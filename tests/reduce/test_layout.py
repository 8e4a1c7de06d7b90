"""The CPU fit (job/reduce/layout.py) against umap-learn itself: same sigmas, rhos, graph, curve, layout and
map quality; and the warm run that compiles nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

from job.analysis.metrics import same_id_knn, trustworthiness
from job.config import KnnConfig
from job.curve import ab_params
from job.io.demo import DemoSpec, make_demo
from job.knn.index import face_graph
from job.reduce import layout

K = 15


@pytest.fixture(scope="module")
def demo_graph() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    records, _ = make_demo(DemoSpec(n_identities=300, faces_per_identity=5, seed=3))
    unit = records["embedding"].astype(np.float32)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    graph = face_graph(unit, np.arange(len(unit)), K, KnnConfig(method="exact")).among_reference(K)
    indices = np.ascontiguousarray(graph.indices[:, :K])
    distances = np.ascontiguousarray(graph.distances[:, :K], dtype=np.float32)
    return unit, records["id"].astype(np.int64), indices, distances


def test_sigmas_and_rhos_are_umap_learns(demo_graph) -> None:
    from umap.umap_ import smooth_knn_dist

    _, _, _, distances = demo_graph
    sigma, rho = layout.smooth_distances(distances, float(K))
    want_sigma, want_rho = smooth_knn_dist(distances, float(K))
    np.testing.assert_array_equal(rho, want_rho)
    np.testing.assert_allclose(sigma, want_sigma, rtol=1e-6)


@pytest.mark.parametrize("supervised", [False, True])
def test_fuzzy_graph_is_umap_learns(demo_graph, supervised: bool) -> None:
    from umap.umap_ import discrete_metric_simplicial_set_intersection, fuzzy_simplicial_set

    unit, ids, indices, distances = demo_graph
    want, _, _ = fuzzy_simplicial_set(unit, K, np.random.RandomState(0), "cosine", knn_indices=indices,
                                      knn_dists=distances)
    if supervised:  # what UMAP.fit does with categorical labels at target_weight 0.5
        want = discrete_metric_simplicial_set_intersection(want, ids, far_dist=2.5 / (1 - 0.5))
    want = want.tocoo()
    want.sum_duplicates()
    got = layout.fuzzy_graph(indices, distances, ids if supervised else None, 0.5)
    np.testing.assert_array_equal(got.head, want.row)
    np.testing.assert_array_equal(got.tail, want.col)
    np.testing.assert_allclose(got.weight, want.data, atol=1e-6)


@pytest.mark.parametrize(("spread", "min_dist"), [(1.0, 0.1), (1.0, 0.0), (1.5, 0.3), (0.5, 0.5)])
def test_curve_is_umap_learns(spread: float, min_dist: float) -> None:
    from umap.umap_ import find_ab_params

    assert ab_params(spread, min_dist) == pytest.approx(find_ab_params(spread, min_dist), rel=1e-5)


@pytest.mark.parametrize("move_other", [True, False])
def test_one_thread_layout_is_umap_learns_to_the_bit(demo_graph, move_other: bool) -> None:
    """``exact``: umap-learn's arithmetic; the runs use one float32 power per step (the quality test below)."""
    from umap.layouts import optimize_layout_euclidean

    _, _, indices, distances = demo_graph
    graph = layout.prune(layout.fuzzy_graph(indices, distances), 60)
    a, b = ab_params(1.0, 0.1)
    start = layout.scale_start(np.random.default_rng(0).normal(size=(len(indices), 2)).astype(np.float32))
    state = np.array([7, -3, 11], dtype=np.int64)
    tail = start.copy() if move_other else start + np.float32(0.5)  # placing: a fixed map to move against
    ours = start.copy()
    settings = layout.SgdSettings(60, a, b, state, gamma=2.0)
    layout.optimize_layout(ours, ours if move_other else tail.copy(), graph, settings, move_other=move_other,
                           exact=True)
    theirs = start.copy()
    optimize_layout_euclidean(theirs, theirs if move_other else tail.copy(), graph.head, graph.tail, 60,
                              len(theirs), layout.epochs_per_sample(graph.weight, 60), a, b, state.copy(), 2.0, 1.0,
                              5.0, parallel=False, move_other=move_other)
    np.testing.assert_array_equal(ours, theirs)
    assert not np.array_equal(ours, start)


def test_map_is_as_good_as_umap_learns(demo_graph) -> None:
    """The whole CPU fit (both threads) against ``umap.UMAP`` on the same graph and start: map quality within
    noise of umap-learn's (the layouts differ only in their random draws)."""
    import umap

    from job.config import UmapConfig
    from job.knn.graph import Neighbors
    from job.reduce.backends import UmapLearnBackend
    from job.reduce.params import fit_params
    from job.reduce.start import pca_start

    unit, ids, indices, distances = demo_graph
    params = fit_params(UmapConfig(), sampled=False, n_fitted=len(unit))
    ours = UmapLearnBackend().fit_transform(unit, None, params, KnnConfig(), None,
                                            graph=Neighbors(indices, distances)).coords
    with warnings.catch_warnings():  # no search index passed, as expected
        warnings.filterwarnings("ignore", message=".*knn_search_index.*")
        theirs = umap.UMAP(n_neighbors=K, min_dist=params.min_dist, repulsion_strength=params.repulsion_strength,
                           n_epochs=params.n_epochs, init=pca_start(unit, 2, 0),
                           precomputed_knn=(indices, distances), metric="cosine").fit_transform(unit)
    for metric in (lambda c: trustworthiness(unit, c, 15, 5000, 0), lambda c: same_id_knn(c, ids, 4)):
        assert metric(ours) >= metric(theirs) - 0.02


def _compiles(cache: Path, db: Path, out: Path, *extra: str) -> dict[str, int]:
    """Run ``faceatlas run`` in a fresh process with numba's cache in ``cache``; count what numba compiled."""
    driver = textwrap.dedent(f"""
        import json, sys
        from numba.core import event
        compiled = []
        class Count(event.Listener):
            def on_start(self, e): pass
            def on_end(self, e): compiled.append(e.data["dispatcher"].py_func.__qualname__)
        event.register("numba:compile", Count())
        from job.cli import main
        sys.argv = ["faceatlas", "run", "--input", {str(db)!r}, "--out", {str(out)!r}, *{list(extra)!r}]
        try:
            main()
        except SystemExit as stop:
            assert not stop.code, stop.code
        print(json.dumps({{"n": len(compiled), "names": sorted(set(compiled))}}))
    """)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "XDG_CACHE_HOME": str(cache.parent / "xdg")}
    done = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True, env=env, check=True,
                          cwd=Path(__file__).parents[2])
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_warm_second_process_compiles_nothing(small_db: Path, tmp_path: Path) -> None:
    cache = tmp_path / "numba"
    first = _compiles(cache, small_db, tmp_path / "out1")
    second = _compiles(cache, small_db, tmp_path / "out2")
    assert first["n"] > 0  # a fresh cache: the layout kernels compile (and are stored)
    assert second["n"] == 0, f"compiled again in a warm process: {second['names']}"


def test_warm_up_installs_every_kernel_a_run_needs(small_db: Path, tmp_path: Path) -> None:
    """``faceatlas warm-up`` (the container images run it at build time): after it, neither an unseeded run
    (parallel layout) nor a seeded one (one thread) compiles anything."""
    cache = tmp_path / "numba"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    done = subprocess.run([sys.executable, "-m", "job", "warm-up"], capture_output=True, text=True, env=env,
                          cwd=Path(__file__).parents[2], check=False)
    assert done.returncode == 0 and "layout kernels ready" in done.stdout, done.stderr
    assert _compiles(cache, small_db, tmp_path / "unseeded")["n"] == 0
    assert _compiles(cache, small_db, tmp_path / "seeded", "--seed", "1")["n"] == 0
