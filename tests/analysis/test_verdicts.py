"""Per-face verdicts on small planted databases: ok, misfiled, low_quality, lone, duplicate; 2-face identities
judged on their evidence; near-twin misfiles found and said. Real kNN graphs, real files, no mocks."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from job.analysis.candidates import find_candidates
from job.analysis.identities import identity_table
from job.analysis.lookalikes import find_lookalikes
from job.analysis.suspects import SuspectScores, judge_faces
from job.config import KnnConfig, load_config
from job.io.database import check_arrays, face_quality
from job.io.demo import WILD, make_demo, truth_from_json, truth_json
from job.knn.index import face_graph
from job.pipeline import run
from job.store.reports import write_suspects

DIM = 256
SMOKE = Path(__file__).parents[2] / "configs" / "smoke.toml"


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    vectors = rng.standard_normal((n, DIM))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _faces(rng: np.random.Generator, centre: np.ndarray, n: int, tightness: float) -> np.ndarray:
    """``n`` faces whose pairwise cosine is about ``tightness``, around ``centre``."""
    return np.sqrt(tightness) * centre + np.sqrt(1 - tightness) * _unit(rng, n)


class Planted:
    """A background of 200 identities x 6 faces (pairwise cosine 0.4-0.65 by identity, raw norms ~25), plus
    the faces each test plants."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.centres = _unit(self.rng, 200)
        self.faces = [_faces(self.rng, c, 6, t) for c, t in zip(self.centres, self.rng.uniform(0.4, 0.65, 200),
                                                                strict=True)]
        self.ids = [np.full(6, i) for i in range(200)]

    def add(self, faces: np.ndarray, identity: int) -> int:
        """Append faces filed under ``identity``; returns the row of the first."""
        row = sum(len(f) for f in self.faces)
        self.faces.append(np.atleast_2d(faces))
        self.ids.append(np.full(len(np.atleast_2d(faces)), identity))
        return row

    def arrays(self, unit_length: bool = False) -> tuple[np.ndarray, np.ndarray]:
        faces = np.vstack(self.faces)
        faces = faces / np.linalg.norm(faces, axis=1, keepdims=True)
        if not unit_length:
            norms = 25 * np.exp(self.rng.normal(0, 0.08, len(faces)))
            faces = faces * norms[:, None]
        return np.concatenate(self.ids), faces.astype(np.float32)


def _judge(ids: np.ndarray, embeddings: np.ndarray, quality_scale: np.ndarray | None = None
           ) -> tuple[SuspectScores, np.ndarray, object]:
    if quality_scale is not None:
        embeddings = embeddings * quality_scale[:, None]
    checked = check_arrays(ids, embeddings, "planted")
    unit = np.asarray(checked.unit, dtype=np.float32)
    table = identity_table(unit, checked.ids)
    knn = KnnConfig(method="exact")
    graph = face_graph(unit, np.arange(len(unit)), 11, knn, seed=0)
    candidates = find_candidates(graph, table.codes, table.centroids, width=10, similar=5, k=10, knn=knn, seed=0)
    scores, original = judge_faces(unit, table, graph, candidates.nearby, candidates.similar, rows=checked.rows,
                                   quality=face_quality(checked.log_norms, len(unit)))
    pairs = find_lookalikes(table.without(unit, np.flatnonzero(scores.suspect)), candidates.lookalike)
    return scores, original, pairs


def _each_verdict(unit_length: bool) -> tuple[SuspectScores, np.ndarray, dict[str, int]]:
    db = Planted(seed=1)
    rows = {"misfiled": db.add(_faces(db.rng, db.centres[7], 1, 0.5), 3),  # a face of 7 filed under 3
            "low_quality": db.add(_faces(db.rng, db.centres[5], 1, 0.08), 5),  # blurred: like nobody, itself included
            "lone": db.add(_faces(db.rng, _unit(db.rng, 1)[0], 1, 0.5), 900)}
    copy = db.faces[9][0] + 0.03 * _unit(db.rng, 1)[0]  # the same photo, re-encoded
    rows["duplicate"] = db.add(copy, 9)
    ids, faces = db.arrays(unit_length)
    scale = np.ones(len(ids))
    scale[rows["low_quality"]] = 0.45  # the recogniser's own doubt: a short embedding
    scores, original, _ = _judge(ids, faces, scale)
    return scores, original, rows


@pytest.mark.parametrize("unit_length", [False, True], ids=["raw-norms", "unit-length"])
def test_each_verdict_on_a_planted_database(unit_length: bool) -> None:
    scores, original, rows = _each_verdict(unit_length)
    verdicts = scores.verdict_names()
    for verdict, row in rows.items():
        assert verdicts[row] == verdict, (verdict, verdicts[row], scores.score[row], scores.own[row])
    assert scores.suggested_id[rows["misfiled"]] == 7
    assert original[rows["duplicate"]] == 9 * 6  # the face it repeats: identity 9's first
    background = np.ones(len(verdicts), dtype=bool)
    background[list(rows.values())] = False
    assert (verdicts[background] == "ok").mean() >= 0.99
    assert not scores.suspect[background].any()


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_two_face_identities_with_a_genuine_pair_are_not_flagged(seed: int) -> None:
    """Ten 2-face identities, each with a loose genuine pair (cosine ~0.4) and a tight 30-face look-alike
    (centre cosine 0.85): a cosine to the look-alike's centroid beats the one other face (the old rule, and
    the leave-one-out centroid margin, flag most of them); the evidence-weighted verdict flags at most one of
    the 20 faces (seed 2: none)."""
    db = Planted(seed=seed)
    pairs = []
    for k in range(10):
        base = _unit(db.rng, 1)[0]
        twin = np.sqrt(0.72) * base + np.sqrt(0.28) * _unit(db.rng, 1)[0]  # centre cosine ~0.85
        db.add(_faces(db.rng, twin / np.linalg.norm(twin), 30, 0.6), 300 + k)
        pairs.append(db.add(_faces(db.rng, base, 2, 0.4), 400 + k))
    ids, faces = db.arrays()
    scores, _, _ = _judge(ids, faces)
    small = np.concatenate([[row, row + 1] for row in pairs])
    unit = faces / np.linalg.norm(faces, axis=1, keepdims=True)
    own = np.repeat([unit[row] @ unit[row + 1] for row in pairs], 2)  # the one other face
    other = np.array([unit[row + j] @ _centroid(unit, ids, 300 + k) for k, row in enumerate(pairs) for j in (0, 1)])
    assert (other > own).mean() >= 0.6  # the hard case: the naive margin flags most of these faces
    assert scores.suspect[small].sum() <= (0 if seed == 2 else 1)
    assert (scores.verdict_names()[small] == "ok").mean() >= 0.95


def _centroid(unit: np.ndarray, ids: np.ndarray, identity: int) -> np.ndarray:
    mean = unit[ids == identity].mean(axis=0)
    return mean / np.linalg.norm(mean)


@pytest.mark.parametrize("seed", [3, 6, 8])
def test_a_twin_misfile_is_found_and_said(seed: int, tmp_path: Path) -> None:
    """Near-twins (centre cosine ~0.91, 30 faces each), one face of twin B filed under twin A: found, B
    suggested, the pair flagged possible_same_person, and suspects.csv says the face was judged between them."""
    db = Planted(seed=seed)
    a_centre = _unit(db.rng, 1)[0]
    b_centre = np.sqrt(0.83) * a_centre + np.sqrt(0.17) * _unit(db.rng, 1)[0]
    b_centre /= np.linalg.norm(b_centre)
    db.add(_faces(db.rng, a_centre, 30, 0.55), 500)
    db.add(_faces(db.rng, b_centre, 30, 0.55), 501)
    row = db.add(_faces(db.rng, b_centre, 1, 0.55), 500)
    ids, faces = db.arrays()
    scores, _, lookalikes = _judge(ids, faces)
    assert scores.verdict_names()[row] == "misfiled" and scores.suggested_id[row] == 501
    assert scores.suspect.sum() <= 2  # nothing else, or one background face at most
    same = lookalikes.same_person_keys()
    assert (500, 501) in same
    path = write_suspects(tmp_path / "suspects.csv", np.arange(len(ids)), ids, scores, same_person=same)
    listed = {int(r["row"]): r for r in csv.DictReader(path.open())}
    assert listed[row]["same_person_pair"] == "true" and listed[row]["quality"] == ""
    assert listed[row]["clear_target"] == "true"


def test_wild_demo_shape_has_what_it_promises() -> None:
    spec = replace(WILD, n_identities=300)
    records, truth = make_demo(spec)
    lengths = np.linalg.norm(records["embedding"].astype(np.float32), axis=1)
    assert lengths.min() > 5 and np.median(lengths) > 15  # raw, not unit length
    counts = np.bincount(records["id"])
    assert counts.min() >= 1 and counts.max() <= 30 and (counts <= 2).sum() > 0
    low = np.zeros(len(records), dtype=bool)
    low[truth.low_quality_rows] = True
    assert np.median(lengths[low]) < 0.75 * np.median(lengths[~low])  # low quality, short embeddings
    assert truth.twin_pairs and truth.duplicate_rows and not set(truth.low_quality_rows) & set(truth.misfiled_rows)
    twins = {frozenset(pair) for pair in truth.twin_pairs}
    from_twins = [frozenset((int(records["id"][row]), true)) in twins
                  for row, true in zip(truth.misfiled_rows, truth.misfiled_true_ids, strict=True)]
    assert any(from_twins)
    again = truth_from_json(json.loads(truth_json(truth)))
    assert again == truth


def test_a_wild_run_writes_the_verdicts(tmp_path: Path) -> None:
    """The whole job on the wild shape: verdict, quality and fit columns, low_quality.csv, run.json notes."""
    records, truth = make_demo(replace(WILD, n_identities=300, seed=3))
    db = tmp_path / "wild.npy"
    np.save(db, records, allow_pickle=False)
    db.with_name("wild.truth.json").write_text(truth_json(truth), encoding="utf-8")
    config = load_config(SMOKE, {"input.path": str(db), "input.truth": str(db.with_name("wild.truth.json")),
                                 "out": str(tmp_path / "out")})
    result = run(config)
    import pyarrow.parquet as pq

    table = pq.read_table(result.files["projection"]).to_pandas()
    assert set(table["verdict"].unique()) <= {"ok", "misfiled", "low_quality", "lone", "duplicate"}
    assert (table["suspect"] == (table["verdict"] == "misfiled")).all()
    assert table["quality"].dtype == np.float32 and table["quality"].notna().all()
    low = list(csv.DictReader(result.files["low_quality"].open()))
    assert [int(r["row"]) for r in low] and {int(r["row"]) for r in low} == \
        set(table["row"][table["verdict"] == "low_quality"].tolist())
    record = json.loads(result.files["run"].read_text())
    assert record["input"]["unit_length"] is False and record["input"]["quality_known"] is True
    metrics = record["metrics"]
    assert metrics["verdicts"]["low_quality"] == len(low)
    # a small wild database (300 ids, 15 near-twin pairs): the 0.97 goal is held by test_analysis on full shapes
    assert metrics["suspect_precision"] >= 0.95 and metrics["suspect_recall"] >= 0.9
    assert metrics["low_quality_precision"] >= 0.9 and metrics["low_quality_recall"] >= 0.8
    for name in ("suspects", "low_quality", "lookalikes"):  # numbers only: no inf or nan in any cell
        text = result.files[name].read_text()
        assert "inf" not in text and "nan" not in text.lower()
    dupes = table[table["verdict"] == "duplicate"]
    assert len(dupes) and (dupes["duplicate_of"] >= 0).all() and (table["duplicate_of"][table["verdict"] !=
                                                                                       "duplicate"] == -1).all()


def test_duplicates_are_same_identity_copies_found_in_and_outside_the_fit_sample() -> None:
    """Chains of copies point at their first face; a copy outside the reference (fit sample) is found
    through the reference face it finds; the same photo under another id is judged, not a duplicate."""
    from job.analysis.suspects import near_duplicates

    db = Planted(seed=6)
    first = 10 * 6  # identity 10's first face
    photo = db.faces[10][0]
    copy = db.add(photo + 0.02 * _unit(db.rng, 1)[0], 10)
    copy_of_copy = db.add(photo + 0.03 * _unit(db.rng, 1)[0], 10)
    elsewhere = db.add(photo + 0.02 * _unit(db.rng, 1)[0], 11)  # the same photo filed under identity 11
    ids, faces = db.arrays()
    unit = np.asarray(check_arrays(ids, faces, "planted").unit, dtype=np.float32)
    rows = np.arange(len(ids))
    for reference in (rows, np.setdiff1d(rows, [first])):  # every face fitted; identity 10's original placed
        graph = face_graph(unit, reference, 5, KnnConfig(method="exact"), seed=0)
        duplicate, original = near_duplicates(graph.neighbour_rows(slice(0, 5)), graph.distances, rows,
                                              graph.reference, ids)
        assert not duplicate[elsewhere] and original[elsewhere] == -1
        if len(reference) == len(rows):
            assert set(np.flatnonzero(duplicate)) == {copy, copy_of_copy}
            assert original[copy] == first and original[copy_of_copy] == first  # the chain's first face
        else:  # the placed original finds a reference copy: one of the pair is the duplicate, never both
            assert duplicate[first] and duplicate[[copy, copy_of_copy]].sum() == 1
    scores, _, _ = _judge(ids, faces)
    assert scores.verdict_names()[elsewhere] == "misfiled" and scores.suggested_id[elsewhere] == 10


def test_lengths_that_do_not_vary_say_nothing_about_quality() -> None:
    """Unit-length input and input of one length for all (normalised, then scaled) give NaN quality; lengths
    that vary give quality relative to the median, whatever the scale."""
    db = Planted(seed=7)
    ids, faces = db.arrays()
    unit = faces / np.linalg.norm(faces, axis=1, keepdims=True)
    for constant in (unit, unit * 10.0):
        checked = check_arrays(ids, constant, "planted")
        assert np.isnan(face_quality(checked.log_norms, len(ids))).all()
    small, large = (face_quality(check_arrays(ids, faces * scale, "planted").log_norms, len(ids))
                    for scale in (1e-20, 1e20))
    assert np.allclose(small, large, rtol=1e-4) and abs(float(np.median(small)) - 1.0) < 1e-3


def test_precedence_and_the_second_pass() -> None:
    """A blurred lone face is lone (no fit of its own to call weak); a misfiled face in a 3-face identity is
    found once it leaves its identity (inside, it made the other two look unlike their own)."""
    db = Planted(seed=8)
    lone = db.add(_faces(db.rng, _unit(db.rng, 1)[0], 1, 0.05), 950)
    centre = _unit(db.rng, 1)[0]
    db.add(_faces(db.rng, centre, 2, 0.5), 951)
    misfiled = db.add(_faces(db.rng, db.centres[20], 1, 0.5), 951)
    ids, faces = db.arrays()
    scale = np.ones(len(ids))
    scale[lone] = 0.4
    scores, _, _ = _judge(ids, faces, scale)
    names = scores.verdict_names()
    assert names[lone] == "lone"
    assert names[misfiled] == "misfiled" and scores.suggested_id[misfiled] == 20
    assert (names[misfiled - 2 : misfiled] == "ok").all()


def test_one_person_under_two_ids_gives_no_misfiled_faces() -> None:
    """A double enrolment (8 and 3 faces of one person under two ids): no face is called misfiled between
    them, and the pair is flagged possible_same_person."""
    db = Planted(seed=9)
    person = _unit(db.rng, 1)[0]
    db.add(_faces(db.rng, person, 8, 0.55), 960)
    db.add(_faces(db.rng, person, 3, 0.55), 961)
    ids, faces = db.arrays()
    scores, _, pairs = _judge(ids, faces)
    both = np.isin(ids, [960, 961])
    assert not scores.suspect[both].any()
    assert (960, 961) in pairs.same_person_keys()
