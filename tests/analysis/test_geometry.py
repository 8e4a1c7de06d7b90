"""The database's own geometry, measured before any verdict: when to centre, where quality comes from, and the
verdicts, look-alikes and placement that follow on databases shaped like real recognizers' output — ArcFace
(centred, norms that carry quality), dlib (every vector sharing one mean direction, lengths that say nothing)
— with planted truth. Real kNN graphs, real files, real runs; no mocks."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import job.analysis.suspects as suspects_module
from job.analysis.candidates import find_candidates
from job.analysis.geometry import (
    CENTRE_SHARE,
    centre_in_place,
    centre_rows,
    measure_geometry,
    neighbour_quality,
    to_input_space,
)
from job.analysis.identities import identity_table
from job.analysis.lookalikes import find_lookalikes
from job.analysis.suspects import LOW_QUALITY, MISFILED, judge_faces
from job.cli import app
from job.config import KnnConfig, load_config
from job.errors import InputError
from job.io.database import check_arrays, face_quality
from job.io.demo import UNCENTRED, WILD, DemoSpec, make_demo, truth_json
from job.knn.index import face_graph
from job.maps.mapmodel import MODEL_FILE, load_model
from job.pipeline import run
from job.reduce.extend import DEFAULT_TEMPERATURE
from tests.conftest import truth_of

SMOKE = Path(__file__).parents[2] / "configs" / "smoke.toml"
NORM_NOISE = 0.1  # a rank correlation this small: lengths unrelated to how alike a face is to its identity
SHAPES = {"arcface-like unit (standard)": DemoSpec(n_identities=400, seed=4),
          "arcface-like raw norms (wild)": replace(WILD, n_identities=400, seed=4),
          "dlib-like uncentred": replace(UNCENTRED, n_identities=400, seed=4)}


def _checked(spec: DemoSpec):
    records, truth = make_demo(spec)
    return check_arrays(records["id"], records["embedding"], "demo"), truth


def _verdicts(unit: np.ndarray, ids: np.ndarray, log_norms: np.ndarray, rows: np.ndarray, centre: str = "auto"):
    """The run's verdict path: the geometry (centring in place), one graph, candidates, quality, verdicts."""
    geometry = measure_geometry(unit, ids, log_norms, centring=centre)  # type: ignore[arg-type]
    centre_in_place(unit, geometry)
    table = identity_table(unit, ids)
    knn = KnnConfig(method="exact")
    graph = face_graph(unit, np.arange(len(ids)), 11, knn, seed=0)
    found = find_candidates(graph, table.codes, table.centroids, width=10, similar=5, k=10, knn=knn, seed=0)
    quality = geometry.face_quality(face_quality(log_norms, len(ids)), graph)
    scores, _ = judge_faces(unit, table, graph, found.nearby, found.similar, rows=rows, quality=quality,
                            calibration=geometry.calibration())
    pairs = find_lookalikes(table.without(unit, np.flatnonzero(scores.left_out)), found.lookalike,
                            baseline=geometry.working.impostor_median)
    return geometry, scores, pairs, quality


# what is measured and decided

def test_a_centred_model_is_left_as_it_is_and_unit_input_takes_quality_from_neighbours() -> None:
    checked, _ = _checked(DemoSpec(n_identities=300, seed=1))
    before = np.array(checked.unit, copy=True)
    geometry = measure_geometry(checked.unit, checked.ids, checked.log_norms)
    assert not geometry.centred and geometry.centre is None and "already centred" in geometry.reason
    assert abs(geometry.raw.impostor_median) < 0.02 and geometry.raw.genuine_median > 0.5
    assert geometry.working == geometry.raw
    assert geometry.quality_from == "neighbours" and geometry.norm_quality is None  # unit input: no lengths
    centre_in_place(checked.unit, geometry)
    assert np.array_equal(checked.unit, before)  # nothing moved


def test_an_uncentred_model_is_centred_and_its_lengths_say_nothing() -> None:
    checked, _ = _checked(replace(UNCENTRED, n_identities=300, seed=1))
    geometry = measure_geometry(checked.unit, checked.ids, checked.log_norms)
    # as dlib gives it: strangers ~0.84, one person ~0.93
    assert geometry.raw.impostor_median > 0.8 and geometry.raw.genuine_median > 0.9
    assert geometry.centred and "not centred" in geometry.reason
    assert abs(geometry.working.impostor_median) < 0.03  # strangers about 0 once the shared direction is gone
    assert geometry.working.genuine_median > 0.4
    assert geometry.quality_from == "neighbours" and abs(geometry.norm_quality) < NORM_NOISE
    centre_in_place(checked.unit, geometry)
    lengths = np.linalg.norm(checked.unit.astype(np.float64), axis=1)
    assert np.allclose(lengths, 1.0, atol=2e-3)  # float16 storage, renormalised


def test_norms_that_track_quality_are_the_quality() -> None:
    checked, _ = _checked(replace(WILD, n_identities=300, seed=1))
    geometry = measure_geometry(checked.unit, checked.ids, checked.log_norms)
    assert not geometry.centred and geometry.quality_from == "norms" and geometry.norm_quality > 0.2
    assert geometry.calibration().stranger_cos == geometry.working.impostor[-1]


def test_centring_can_be_forced_either_way() -> None:
    checked, _ = _checked(replace(UNCENTRED, n_identities=200, seed=1))
    off = measure_geometry(checked.unit, checked.ids, checked.log_norms, centring="off")
    assert not off.centred and "analysis.centre = off" in off.reason
    plain, _ = _checked(DemoSpec(n_identities=200, seed=1))
    on = measure_geometry(plain.unit, plain.ids, plain.log_norms, centring="on")
    assert on.centred and "analysis.centre = on" in on.reason
    assert on.raw.impostor_median <= CENTRE_SHARE * on.raw.genuine_median  # auto would not have centred it


def test_faces_that_all_point_one_way_are_not_centred(tmp_path: Path) -> None:
    """The centre of identical directions is the direction itself: subtracting it would leave nothing. The run
    keeps the input's space, and its own map model loads."""
    vector = np.random.default_rng(0).standard_normal(64).astype(np.float32)
    embeddings = np.repeat(vector[None], 30, axis=0) * np.linspace(1, 2, 30, dtype=np.float32)[:, None]
    np.savez(tmp_path / "same.npz", ids=np.repeat(np.arange(3), 10), embeddings=embeddings)
    checked = check_arrays(np.repeat(np.arange(3), 10), embeddings, "same")
    geometry = measure_geometry(checked.unit, checked.ids, checked.log_norms)
    assert not geometry.centred and "all point one way" in geometry.reason and geometry.quality_from == "neighbours"
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", "-c", str(SMOKE), "-i", str(tmp_path / "same.npz"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert load_model(out / MODEL_FILE).centre is None


def test_impostor_pairs_are_sampled_when_one_identity_holds_nearly_every_face() -> None:
    rng = np.random.default_rng(2)
    faces = rng.standard_normal((5003, 32)).astype(np.float32)
    ids = np.concatenate([np.zeros(5000, dtype=np.int64), [1, 2, 3]])
    checked = check_arrays(ids, faces, "dominant")
    geometry = measure_geometry(checked.unit, checked.ids, checked.log_norms)
    assert geometry.pairs["impostor"] >= 10_000  # drawn outside each face's identity, not by rejection
    assert geometry.pairs["genuine"] >= 10_000 and abs(geometry.raw.impostor_median) < 0.02


def test_thresholds_are_read_relative_to_the_genuine_distribution() -> None:
    for spec in (DemoSpec(n_identities=200), replace(UNCENTRED, n_identities=200)):
        checked, _ = _checked(spec)
        geometry = measure_geometry(checked.unit, checked.ids, checked.log_norms)
        working = geometry.working
        # a re-enrolled photo is far closer than two photos of one person usually are
        assert working.genuine[-1] < geometry.duplicate_cos < 1.0
        gap = working.genuine_median - working.impostor_median
        assert geometry.temperature == pytest.approx(gap / 30, rel=1e-6)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_centring_is_row_by_row(dtype: type) -> None:
    """A worker converting its chunk gets the client's bits: each row's result depends on that row alone."""
    rng = np.random.default_rng(0)
    unit = rng.standard_normal((300, 64))
    unit = (unit / np.linalg.norm(unit, axis=1, keepdims=True) + 2.0).astype(dtype)
    centre = (unit.astype(np.float64).mean(axis=0)).astype(np.float32)
    whole = centre_rows(unit, centre)
    parts = np.concatenate([centre_rows(unit[i:i + 7], centre) for i in range(0, len(unit), 7)])
    assert whole.dtype == dtype and np.array_equal(whole, parts)
    back = to_input_space(whole[0].astype(np.float32), centre, float(np.linalg.norm(unit[0] - centre)))
    original = unit[0].astype(np.float64) / np.linalg.norm(unit[0].astype(np.float64))
    assert float(back @ original) > 0.999  # the input-space vector points where the face did


def test_neighbour_quality_is_low_for_a_face_far_from_every_face() -> None:
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((50, 32))
    faces = np.repeat(centres, 4, axis=0) + 0.5 * rng.standard_normal((200, 32))
    faces = np.vstack([faces, rng.standard_normal((1, 32))])  # a stray face near nobody
    unit = (faces / np.linalg.norm(faces, axis=1, keepdims=True)).astype(np.float32)
    graph = face_graph(unit, np.arange(len(unit)), 6, KnnConfig(method="exact", exact_max_faces=10_000), seed=0)
    quality = neighbour_quality(graph)
    assert np.median(quality[:-1]) == pytest.approx(1.0, abs=0.02)
    assert quality[-1] < 0.5 < np.quantile(quality[:-1], 0.02)


# verdicts on each geometry's shape

@pytest.mark.parametrize("name", SHAPES)
def test_each_geometry_shape_finds_its_planted_answers(name: str) -> None:
    checked, truth = _checked(SHAPES[name])
    _, scores, pairs, _ = _verdicts(checked.unit, checked.ids, checked.log_norms, checked.rows)
    flagged, planted = set(np.flatnonzero(scores.suspect).tolist()), set(truth.misfiled_rows)
    hits = len(flagged & planted)
    assert hits / len(flagged) >= 0.97 and hits / len(planted) >= 0.9, (hits, len(flagged), len(planted))
    # misfiles between near-twins (centre cosine 0.89-0.95) are the ones faces cannot always tell; the rest
    twins = {frozenset(pair) for pair in truth.twin_pairs}
    plain = {row for row, true in zip(truth.misfiled_rows, truth.misfiled_true_ids, strict=True)
             if frozenset((int(checked.ids[row]), true)) not in twins}
    assert len(flagged & plain) / len(plain) >= 0.97
    assert not flagged & set(truth.low_quality_rows)  # a low-quality face is never called misfiled
    if truth.low_quality_rows:
        low = set(np.flatnonzero(scores.verdict == LOW_QUALITY).tolist())
        hits = len(low & set(truth.low_quality_rows))
        assert hits / len(low) >= 0.85 and hits / len(truth.low_quality_rows) >= 0.75
    planted_pairs = {tuple(p) for p in truth.twin_pairs} | {tuple(p) for p in truth.lookalike_pairs}
    assert pairs.same_person_keys() <= planted_pairs  # no stranger pair is called one person
    assert len(pairs.id_a) <= 2 * 100  # bounded: the top 100 and the few pairs above the threshold


def test_a_database_of_impostor_cosine_085_gets_a_bounded_lookalike_list(tmp_path: Path) -> None:
    spec = replace(UNCENTRED, n_identities=300, seed=6)
    records, truth = make_demo(spec)
    checked = check_arrays(records["id"], records["embedding"], "demo")
    raw = measure_geometry(checked.unit, checked.ids, checked.log_norms)
    assert raw.raw.impostor_median > 0.8
    db = tmp_path / "dlib_like.npy"
    np.save(db, records, allow_pickle=False)
    truth_of(db).write_text(truth_json(truth), encoding="utf-8")
    out = tmp_path / "out"
    result = run(load_config(SMOKE, {"input.path": str(db), "input.truth": str(truth_of(db)), "out": str(out)}))
    with (out / "lookalikes.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert 100 <= len(rows) <= 300  # not every pair (44,850 here) above a fixed 0.6
    same = {(int(r["id_a"]), int(r["id_b"])) for r in rows if r["possible_same_person"] == "true"}
    assert same and same <= {tuple(p) for p in truth.twin_pairs} | {tuple(p) for p in truth.lookalike_pairs}
    assert result.metrics.suspect_precision >= 0.95 and result.metrics.suspect_recall >= 0.9
    record = json.loads((out / "run.json").read_text())
    geometry = record["geometry"]
    assert geometry["centred"] is True and geometry["quality_from"] == "neighbours"
    assert geometry["raw"]["impostor"]["q50"] > 0.8 and abs(geometry["working"]["impostor"]["q50"]) < 0.05
    assert record["input"]["quality_known"] is False  # the lengths vary but say nothing
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "after centring" in page and "Face quality from the faces&#x27; nearest neighbours" in page


def _hard_face_database(seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """A crowded, uncentred database (dlib-like: one direction in every vector, constant lengths): 300
    identities x 6 faces in 48-D, plus one face of identity 0 taken in bad conditions: barely like its own
    identity, and — the best of 299 strangers — a little like one of them by chance."""
    rng = np.random.default_rng(seed)
    dim, shared = 48, rng.standard_normal(48)
    shared /= np.linalg.norm(shared)
    centres = rng.standard_normal((300, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    noise = rng.standard_normal((1800, dim))
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    faces = np.sqrt(0.65) * np.repeat(centres, 6, axis=0) + np.sqrt(0.35) * noise
    stray = rng.standard_normal(dim)
    hard = 0.2 * centres[0] + stray / np.linalg.norm(stray)
    faces = np.vstack([faces, hard])
    faces /= np.linalg.norm(faces, axis=1, keepdims=True)
    raw = np.sqrt(0.84) * shared + np.sqrt(0.16) * faces  # strangers' faces have cosine ~0.84
    ids = np.concatenate([np.repeat(np.arange(300), 6), [0]])
    return ids, (1.42 * raw).astype(np.float32), len(ids) - 1


@pytest.mark.parametrize("seed", [0, 3])
def test_a_hard_face_with_no_norm_signal_is_not_misfiled(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    ids, embeddings, hard = _hard_face_database(seed)

    def verdicts():
        checked = check_arrays(ids, embeddings, "hard")
        return _verdicts(checked.unit, checked.ids, checked.log_norms, checked.rows)

    geometry, scores, _, quality = verdicts()
    assert geometry.centred and geometry.quality_from == "neighbours"
    assert scores.own[hard] < 0.5 and not scores.claimed[hard]  # unlike its own, claimed by nobody beyond chance
    assert scores.verdict[hard] == LOW_QUALITY and quality[hard] < 0.8 and not scores.suspect.any()
    # the same face is called misfiled when the best of many strangers is taken as evidence (no chance bar)
    monkeypatch.setattr(suspects_module, "chance_fit", lambda *args: -float("inf"))
    assert verdicts()[1].verdict[hard] == MISFILED


# the map model carries the geometry

def test_transform_and_invert_work_in_the_runs_geometry(tmp_path: Path) -> None:
    spec = replace(UNCENTRED, n_identities=150, seed=2, misfiled_fraction=0.0, low_quality_fraction=0.0)
    records, _ = make_demo(spec)
    db = tmp_path / "db.npy"
    np.save(db, records, allow_pickle=False)
    out = tmp_path / "out"
    run(load_config(SMOKE, {"input.path": str(db), "out": str(out)}))
    model = load_model(out / MODEL_FILE)
    assert model.centre is not None and 0 < model.centre_scale < 1 and model.temperature < DEFAULT_TEMPERATURE * 2
    runner = CliRunner()
    placed = tmp_path / "placed.parquet"
    result = runner.invoke(app, ["transform", str(out), str(db), "--out", str(placed)])
    assert result.exit_code == 0, result.output
    share = float(result.output.split("own id for ")[1].split("%")[0]) / 100
    assert share >= 0.95  # the raw faces, centred as the run centred them, find their own identity
    import pandas as pd

    projection = pd.read_parquet(out / "projection.parquet")
    face = projection.iloc[int(np.flatnonzero(projection["fitted"].to_numpy())[0])]
    vector = tmp_path / "point.npy"
    result = runner.invoke(app, ["invert", str(out), "--x", str(face.x), "--y", str(face.y), "--out", str(vector)])
    assert result.exit_code == 0, result.output
    point = np.load(vector)
    raw = records["embedding"].astype(np.float64)
    raw /= np.linalg.norm(raw, axis=1, keepdims=True)
    # the vector is in the input's own space: nearest (by the input's cosine) to the identity of the face there
    means = np.stack([raw[records["id"] == i].mean(axis=0) for i in range(spec.n_identities)])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    assert int(np.argmax(means @ point)) == int(face.id)


def test_a_model_from_before_the_geometry_reads_as_uncentred(tmp_path: Path, smoke_run) -> None:
    with np.load(smoke_run.out_dir / MODEL_FILE) as stored:
        arrays = {name: stored[name] for name in stored.files}
    legacy = {k: v for k, v in arrays.items() if k not in ("centre", "centre_scale", "temperature")}
    np.savez(tmp_path / "legacy.npz", **legacy)
    model = load_model(tmp_path / "legacy.npz")
    assert model.centre is None and model.temperature == DEFAULT_TEMPERATURE
    for broken in ({"centre": np.full(arrays["centroid"].shape[1], np.nan, np.float32)},
                   {"centre": np.ones(arrays["centroid"].shape[1], np.float32)},  # longer than a unit face
                   {"temperature": np.float64(-1.0)}):
        np.savez(tmp_path / "broken.npz", **{**arrays, **broken})
        with pytest.raises(InputError, match="no faceatlas run writes"):
            load_model(tmp_path / "broken.npz")
