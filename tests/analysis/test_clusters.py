"""Map clusters (job/analysis/hdbscan.py) against scikit-learn's HDBSCAN and its cluster scores."""

from __future__ import annotations

import numpy as np
import pytest

from job.analysis.hdbscan import adjusted_rand, agreement, hdbscan_labels, normalised_mutual_information


def _point_sets() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 10, (200, 3))
    return {
        "tight groups": (centres[rng.integers(0, 200, 3000), :2] + rng.normal(0, 0.3, (3000, 2))),
        "uniform": rng.uniform(0, 1, (1500, 2)),
        "loose groups": centres[rng.integers(0, 50, 2000), :2] + rng.normal(0, 1, (2000, 2)),
        "3-D": centres[rng.integers(0, 100, 2000)] + rng.normal(0, 0.5, (2000, 3)),
        "repeated points": np.repeat(rng.normal(0, 5, (300, 2)), 4, axis=0),
    }


@pytest.mark.parametrize("name", list(_point_sets()))
@pytest.mark.parametrize("min_size", [5, 12])
def test_labels_are_scikit_learns(name: str, min_size: int) -> None:
    from sklearn.cluster import HDBSCAN

    points = _point_sets()[name].astype(np.float32)
    want = HDBSCAN(min_cluster_size=min_size, algorithm="kd_tree", copy=True).fit_predict(points)
    np.testing.assert_array_equal(hdbscan_labels(points, min_size), want)


def test_scores_are_scikit_learns() -> None:
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    rng = np.random.default_rng(1)
    ids = np.repeat(np.arange(400), 5)
    cases = [rng.integers(-1, 300, len(ids)), ids.copy(), np.full(len(ids), -1), ids // 2, rng.permutation(ids)]
    for found in cases:
        assert adjusted_rand(ids, found) == pytest.approx(adjusted_rand_score(ids, found), abs=1e-12)
        assert normalised_mutual_information(ids, found) == pytest.approx(normalized_mutual_info_score(ids, found),
                                                                          abs=1e-12)
    assert agreement(np.full(10, -1), np.arange(10)) == {"n": 0, "ari": 0.0, "nmi": 0.0, "noise": 1.0}
