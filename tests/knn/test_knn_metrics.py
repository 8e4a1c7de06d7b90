from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from job.analysis.metrics import same_id_knn, trustworthiness
from job.knn.exact import exact_knn
from job.knn.graph import normalise


def _unit(n: int, dim: int, seed: int = 0) -> np.ndarray:
    return normalise(np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32))


def test_exact_knn_matches_scikit_learn_brute_force() -> None:
    unit = _unit(700, 32)
    graph = exact_knn(unit, 10)
    distances, indices = NearestNeighbors(n_neighbors=10, metric="cosine", algorithm="brute").fit(unit).kneighbors()
    assert np.array_equal(graph.indices[:, 0], np.arange(700))
    assert np.array_equal(graph.indices[:, 1:], indices[:, :9])
    np.testing.assert_allclose(graph.distances[:, 1:], distances[:, :9], atol=1e-5)
    euclid = exact_knn(unit, 10, "euclidean")
    np.testing.assert_allclose(euclid.distances, np.sqrt(2 * graph.distances), atol=1e-3)


def test_exact_knn_puts_each_face_first_even_with_duplicates() -> None:
    unit = _unit(50, 8)
    unit[1] = unit[0]
    graph = exact_knn(unit, 5)
    assert np.array_equal(graph.indices[:, 0], np.arange(50))
    assert graph.indices[0, 1] == 1 and graph.indices[1, 1] == 0
    assert graph.distances[0, 1] < 1e-6


def test_same_id_knn_scores_planted_layouts() -> None:
    ids = np.repeat(np.arange(20), 5)
    centres = np.random.default_rng(0).uniform(0, 100, (20, 2))
    tight = (centres[ids] + np.random.default_rng(1).normal(0, 0.01, (100, 2))).astype(np.float32)
    assert same_id_knn(tight, ids, 4) == 1.0
    shuffled = np.random.default_rng(2).permutation(ids)
    assert same_id_knn(tight, shuffled, 4) < 0.3


def test_trustworthiness_is_high_for_faithful_and_low_for_random_maps() -> None:
    rng = np.random.default_rng(0)
    plane = rng.standard_normal((600, 2)).astype(np.float32)
    unit = normalise(np.hstack([plane, np.full((600, 1), 10, np.float32)]))
    assert trustworthiness(unit, plane, k=10) > 0.95
    assert trustworthiness(unit, rng.standard_normal((600, 2)).astype(np.float32), k=10) < 0.7


def test_trustworthiness_equals_scikit_learn() -> None:
    from sklearn.manifold import trustworthiness as sk_trustworthiness

    rng = np.random.default_rng(3)
    latent = rng.standard_normal((800, 3)).astype(np.float32)
    unit = normalise(np.hstack([latent, rng.standard_normal((800, 20)).astype(np.float32) * 0.3]))
    for coords in (latent[:, :2], rng.standard_normal((800, 2)).astype(np.float32)):
        ours = trustworthiness(unit, coords, k=12)
        assert ours == pytest.approx(sk_trustworthiness(unit, coords, n_neighbors=12, metric="cosine"), abs=1e-4)
