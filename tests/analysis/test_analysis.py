"""Misfiled faces, look-alikes, identity tables and clusters on planted demo databases (real kNN, no mocks)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from job.analysis.candidates import find_candidates
from job.analysis.clusters import agreement, cluster_map
from job.analysis.identities import identity_table, top_similar
from job.analysis.lookalikes import PRIOR_PAIRS, find_lookalikes
from job.analysis.suspects import judge_faces, score_faces
from job.config import KnnConfig
from job.io.database import check_arrays, face_quality
from job.io.demo import HARD, WILD, DemoSpec, make_demo
from job.knn.exact import exact_knn
from job.knn.graph import normalise, top_k
from job.knn.index import face_graph
from job.reduce.sample import pick_holdout

SETTINGS = {"standard": DemoSpec(), "hard": HARD, "standard-seed3": DemoSpec(seed=3),
            "hard-seed1": replace(HARD, seed=1, n_identities=500), "wild": WILD,
            "wild-seed1": replace(WILD, seed=1, n_identities=600)}


def _judge(spec: DemoSpec, method: str = "auto"):
    """The run's verdict path on a demo database: loader checks (unit vectors, norms), one graph over every
    face, candidates, verdicts."""
    records, truth = make_demo(spec)
    checked = check_arrays(records["id"], records["embedding"], "demo")
    ids, unit = checked.ids, np.asarray(checked.unit, dtype=np.float32)
    table = identity_table(unit, ids)
    knn = KnnConfig(method=method)
    graph = face_graph(unit, np.arange(len(ids)), 11, knn, seed=0)
    candidates = find_candidates(graph, table.codes, table.centroids, width=10, similar=5, k=10, knn=knn, seed=0)
    scores, _ = judge_faces(unit, table, graph, candidates.nearby, candidates.similar, rows=checked.rows,
                            quality=face_quality(checked.log_norms, len(ids)))
    return ids, unit, table, scores, truth, candidates


@pytest.mark.parametrize("name", SETTINGS)
def test_misfiled_faces_are_found_with_precision_and_recall_097(name: str) -> None:
    _, _, _, scores, truth, _ = _judge(SETTINGS[name])
    flagged = set(np.flatnonzero(scores.suspect).tolist())
    planted = set(truth.misfiled_rows)
    hits = len(flagged & planted)
    assert hits / len(flagged) >= 0.97 and hits / len(planted) >= 0.97, (hits, len(flagged), len(planted))
    # a low-quality face called misfiled counts against precision above, as any false alarm does
    # the suggestion names the identity the face was really drawn from
    right = [scores.suggested_id[row] == true_id for row, true_id in zip(truth.misfiled_rows,
                                                                          truth.misfiled_true_ids, strict=True)]
    assert np.mean(right) >= 0.95
    # most suspicious first in the score too: every planted face outranks the median clean face
    assert np.median(scores.score[list(planted)]) > np.quantile(scores.score[~scores.suspect], 0.99)


def test_suspects_with_approximate_neighbours_match_exact_ones() -> None:
    spec = DemoSpec(n_identities=1000, seed=5)
    exact = _judge(spec)[3]
    approximate = _judge(spec, method="approximate")[3]  # the faiss index for faces and centroids alike
    assert (exact.suspect == approximate.suspect).mean() >= 0.995


def test_lone_faces_are_never_suspects_but_say_whom_they_resemble() -> None:
    rng = np.random.default_rng(0)
    centre = rng.standard_normal((2, 64)).astype(np.float32)
    # identity 0: 4 faces near centre 0; identity 1: a single face that is a near copy of identity 0
    faces = np.vstack([centre[0] + 0.3 * rng.standard_normal((4, 64)), centre[0] + 0.3 * rng.standard_normal(64),
                       centre[1] + 0.3 * rng.standard_normal((4, 64))]).astype(np.float32)
    ids = np.array([0, 0, 0, 0, 1, 2, 2, 2, 2])
    unit = normalise(faces)
    table = identity_table(unit, ids)
    scores = score_faces(unit, table, table.codes[exact_knn(unit, 4).indices[:, 1:]])
    assert scores.lone[4] and not scores.lone[0]
    assert not scores.suspect[4] and scores.verdict_names()[4] == "lone"  # one face cannot be outvoted
    assert scores.suggested_id[4] == 0  # ... but it looks like identity 0: a double enrolment, perhaps
    assert scores.score[4] < scores.score[:4].min()
    assert not scores.suspect.any()


def test_an_identity_mostly_like_another_is_a_lookalike_not_misfiled() -> None:
    rng = np.random.default_rng(1)
    centre = rng.standard_normal(64).astype(np.float32)
    faces = (centre + 0.4 * rng.standard_normal((8, 64))).astype(np.float32)
    ids = np.array([0, 0, 0, 0, 0, 0, 1, 1])  # identity 1 is identity 0 filed twice
    unit = normalise(faces)
    table = identity_table(unit, ids)
    scores = score_faces(unit, table, table.codes[exact_knn(unit, 5).indices[:, 1:]])
    assert not scores.suspect.any()
    pairs = find_lookalikes(table, top=5)
    assert (pairs.id_a[0], pairs.id_b[0]) == (0, 1) and pairs.similarity[0] > 0.7


def _brute_force_similarity(clean) -> np.ndarray:
    """The documented look-alike similarity of every pair, from the identity sums (upper triangle)."""
    counts = clean.counts.astype(np.float64)
    sums = clean.sums()
    cross = sums @ sums.T / np.outer(counts, counts)
    pairs = counts * (counts - 1)
    raw = (np.einsum("ij,ij->i", sums, sums) - counts) / np.maximum(pairs, 1)
    typical = np.median(raw[pairs > 0])
    within = (np.where(pairs > 0, raw, 0) * pairs / 2 + typical * PRIOR_PAIRS) / (pairs / 2 + PRIOR_PAIRS)
    within = np.clip(within, 0.05, None)
    return np.triu(cross / np.sqrt(np.outer(within, within)), k=1)


@pytest.mark.parametrize("name", ["standard", "hard"])
def test_planted_lookalikes_lead_the_list(name: str) -> None:
    _, unit, table, scores, truth, candidates = _judge(SETTINGS[name])
    clean = table.without(unit, np.flatnonzero(scores.suspect))
    pairs = find_lookalikes(clean, candidates.lookalike, top=100, threshold=0.6)
    planted = {tuple(pair) for pair in truth.lookalike_pairs}
    top = set(zip(pairs.id_a[: 2 * len(planted)].tolist(), pairs.id_b[: 2 * len(planted)].tolist(), strict=True))
    assert len(top & planted) / len(planted) >= 0.95
    assert len(pairs.id_a) >= 100 and (pairs.id_a < pairs.id_b).all()
    assert (np.diff(pairs.similarity) <= 0).all()
    assert len(set(zip(pairs.id_a.tolist(), pairs.id_b.tolist(), strict=True))) == len(pairs.id_a)
    # up to 2,000 identities every pair is scored: brute force finds no pair above the threshold that is missing
    above = find_lookalikes(clean, candidates.lookalike, top=0, threshold=0.5)
    brute = _brute_force_similarity(clean)
    expected = {(clean.ids[a], clean.ids[b]) for a, b in zip(*np.nonzero(brute > 0.5), strict=True)}
    assert set(zip(above.id_a.tolist(), above.id_b.tolist(), strict=True)) == expected
    assert (above.similarity > 0.5).all()


def test_lookalike_candidates_beyond_all_pairs_find_the_planted_pairs() -> None:
    """Above ALL_PAIRS_MAX identities only candidate pairs are scored: centroid neighbours and graph links."""
    spec = DemoSpec(n_identities=2500, n_lookalike_pairs=60, seed=11)
    _, unit, table, scores, truth, candidates = _judge(spec, method="approximate")
    clean = table.without(unit, np.flatnonzero(scores.suspect))
    pairs = find_lookalikes(clean, candidates.lookalike, top=200, threshold=0.6)
    planted = {tuple(pair) for pair in truth.lookalike_pairs}
    found = set(zip(pairs.id_a.tolist(), pairs.id_b.tolist(), strict=True))
    assert len(found & planted) / len(planted) >= 0.95
    brute = _brute_force_similarity(clean)
    scored = {(a, b): s for a, b, s in zip(pairs.id_a.tolist(), pairs.id_b.tolist(), pairs.similarity.tolist(),
                                            strict=True)}
    a, b = np.searchsorted(clean.ids, pairs.id_a[:20]), np.searchsorted(clean.ids, pairs.id_b[:20])
    assert np.allclose([scored[pair] for pair in zip(pairs.id_a[:20].tolist(), pairs.id_b[:20].tolist(), strict=True)],
                       brute[a, b], atol=1e-4)


def test_identity_table_matches_a_plain_loop() -> None:
    rng = np.random.default_rng(2)
    unit = normalise(rng.standard_normal((300, 16)).astype(np.float32))
    ids = rng.choice([5, 9, 11, 400, 7], size=300)
    keep = rng.random(300) < 0.8
    table = identity_table(unit, ids, keep)
    for code, identity in enumerate(table.ids):
        rows = (ids == identity) & keep
        assert table.counts[code] == rows.sum()
        assert np.allclose(table.sums()[code], unit[rows].sum(axis=0), atol=1e-5)
    # leaving faces out afterwards equals leaving them out when summing
    drop = np.flatnonzero(keep)[:40]
    fewer = keep.copy()
    fewer[drop] = False
    assert np.allclose(table.without(unit, drop).sums(), identity_table(unit, ids, fewer).sums(), atol=1e-5)
    assert np.array_equal(table.without(unit, drop).counts, identity_table(unit, ids, fewer).counts)
    assert np.array_equal(table.ids[table.codes], ids)


def test_top_k_equals_a_full_sort() -> None:
    rng = np.random.default_rng(3)
    for n, k in [(10, 10), (100, 5), (5000, 16), (20_000, 30)]:
        sims = rng.standard_normal((40, n)).astype(np.float32)
        sims[:, ::7] = sims[:, :1]  # ties
        index, values = top_k(sims, k)
        assert np.array_equal(values, -np.sort(-sims, axis=1)[:, :k])
        assert np.array_equal(np.take_along_axis(sims, index, axis=1), values)
        assert all(len(set(row)) == k for row in index.tolist())
    centroids = normalise(rng.standard_normal((50, 8)).astype(np.float32))
    index, sims = top_similar(centroids[:5], centroids, 3)
    assert np.array_equal(index[:, 0], np.arange(5)) and np.allclose(sims[:, 0], 1.0, atol=1e-6)


def test_holdout_takes_one_face_of_identities_with_three_or_more() -> None:
    ids = np.repeat(np.arange(100), np.r_[np.full(50, 1), np.full(25, 2), np.full(25, 5)])
    held = pick_holdout(ids, share=0.5, cap=1000, seed=None)
    assert held.sum() == 25 and set(ids[held]) <= set(range(75, 100))
    assert np.array_equal(held, pick_holdout(ids, share=0.5, cap=1000, seed=None))  # deterministic
    assert pick_holdout(ids, share=0.5, cap=7, seed=1).sum() == 7
    assert not pick_holdout(ids, share=0.0, cap=7, seed=1).any()


def test_hdbscan_clusters_and_their_agreement_with_ids() -> None:
    rng = np.random.default_rng(4)
    centres = rng.uniform(-50, 50, size=(20, 2))
    ids = np.repeat(np.arange(20), 30)
    coords = (centres[ids] + rng.standard_normal((600, 2)) * 0.3).astype(np.float32)
    labels = cluster_map(coords, min_size=5)
    scores = agreement(labels, ids)
    assert scores["n"] == 20 and scores["ari"] > 0.95 and scores["nmi"] > 0.95
    noise = agreement(np.full(600, -1), ids)
    assert noise["n"] == 0 and noise["ari"] < 0.05 and noise["noise"] == 1.0


def test_hard_demo_is_harder() -> None:
    records, truth = make_demo(replace(HARD, n_identities=300))
    counts = np.bincount(records["id"])
    assert counts.min() >= 1 and counts.max() <= 30 and (counts == 1).any()
    unit = normalise(records["embedding"].astype(np.float32))
    table = identity_table(unit, records["id"].astype(np.int64))
    # a misfiled face comes from the identity most like the one it is filed under
    filed = records["id"][truth.misfiled_rows]
    sims = table.centroids[filed] @ table.centroids.T
    sims[np.arange(len(filed)), filed] = -1
    ranks = (sims > sims[np.arange(len(filed)), truth.misfiled_true_ids][:, None]).sum(axis=1)
    assert np.median(ranks) <= 1


@pytest.mark.gpu
def test_cuml_hdbscan_finds_the_same_clusters() -> None:
    rng = np.random.default_rng(4)
    centres = rng.uniform(-50, 50, size=(20, 2))
    ids = np.repeat(np.arange(20), 30)
    coords = (centres[ids] + rng.standard_normal((600, 2)) * 0.3).astype(np.float32)
    assert agreement(cluster_map(coords, min_size=5, use_gpu=True), ids)["ari"] > 0.95


def test_clusters_of_a_big_map_come_from_a_sample() -> None:
    rng = np.random.default_rng(5)
    centres = rng.uniform(-100, 100, size=(50, 2))
    ids = np.repeat(np.arange(50), 100)
    coords = (centres[ids] + rng.standard_normal((5000, 2)) * 0.3).astype(np.float32)
    labels = cluster_map(coords, min_size=5, sample=1000, seed=0)
    assert labels.shape == (5000,) and agreement(labels, ids)["ari"] > 0.95
