from __future__ import annotations

import numpy as np

from job.io.demo import DemoSpec, make_demo
from job.knn.graph import normalise


def test_demo_has_the_seed_format_and_is_deterministic() -> None:
    records, truth = make_demo()
    again, truth_again = make_demo()
    assert records.dtype == np.dtype([("id", "<u2"), ("embedding", "<f2", (512,))])
    assert 4500 <= len(records) <= 5500
    assert len(np.unique(records["id"])) == 1000
    assert np.array_equal(records, again)
    assert truth.to_json() == truth_again.to_json()
    assert not np.array_equal(records, make_demo(DemoSpec(seed=1))[0])


def test_demo_statistics_look_like_arcface() -> None:
    records, truth = make_demo()
    ids = records["id"].astype(np.int64)
    unit = normalise(records["embedding"].astype(np.float32))
    assert np.allclose(np.linalg.norm(records["embedding"].astype(np.float32), axis=1), 1, atol=2e-3)
    clean = np.ones(len(ids), bool)
    clean[truth.misfiled_rows] = False
    sims = unit[:1500] @ unit.T
    same = (ids[:1500, None] == ids[None, :]) & clean[:1500, None] & clean[None, :]
    np.fill_diagonal(same, False)
    other = ids[:1500, None] != ids[None, :]
    assert 0.5 <= sims[same].mean() <= 0.7
    assert abs(sims[other].mean()) < 0.02
    counts = np.bincount(ids)
    assert counts.min() < 5 < counts.max()


def test_planted_answers_are_real() -> None:
    records, truth = make_demo()
    ids = records["id"].astype(np.int64)
    unit = normalise(records["embedding"].astype(np.float32))
    assert 0.01 * len(ids) <= len(truth.misfiled_rows) <= 0.05 * len(ids)
    for row, true_id in zip(truth.misfiled_rows, truth.misfiled_true_ids, strict=True):
        assert true_id != ids[row]
        own = unit[(ids == ids[row]) & (np.arange(len(ids)) != row)].mean(0)
        true = unit[ids == true_id].mean(0)
        assert unit[row] @ true > unit[row] @ own  # the face really belongs to someone else
    assert len(truth.lookalike_pairs) == 10
    for a, b in truth.lookalike_pairs:
        cross = (unit[ids == a] @ unit[ids == b].T).mean()
        assert cross > 0.3  # look-alikes: nearly as alike as two photos of one person


def test_other_sizes() -> None:
    records, truth = make_demo(DemoSpec(n_identities=70_000, faces_per_identity=1, dim=16, n_lookalike_pairs=2))
    assert records.dtype["id"] == np.dtype("<u4")
    assert records["id"].max() == 69_999
    assert len(truth.lookalike_pairs) == 2
