"""transform / nearest / invert on a finished run, through the CLI, with real files and a real fitted map."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from job.cli import app
from job.io.demo import make_demo
from job.io.formats import file_sha256
from job.pipeline import RunResult
from tests.conftest import SMALL, copy_of_run

runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def _one_line_error(result, code: int, fragment: str) -> None:
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("faceatlas: error:")]
    assert len(lines) == 1 and fragment in lines[0] and "; " in lines[0], result.output


@pytest.fixture(scope="module")
def run_dir(smoke_run: RunResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_of_run(smoke_run, tmp_path_factory, "map")


@pytest.fixture(scope="module")
def projection(run_dir: Path):
    return pq.read_table(run_dir / "projection.parquet").to_pandas()


def test_run_writes_the_analysis_contract(run_dir: Path, projection) -> None:
    record = json.loads((run_dir / "run.json").read_text())
    metrics = record["metrics"]
    assert {"suspects", "clusters", "inverse", "transform", "suspect_precision", "suspect_recall",
            "lookalike_recall"} <= set(metrics)
    assert set(metrics["clusters"]) >= {"n", "ari", "nmi"}
    assert set(metrics["inverse"]) == {"mean_cos", "id_at_1", "map_mean_cos", "map_id_at_1"}
    assert set(metrics["transform"]) == {"id_at_1"} and metrics["held_out"] > 0
    assert metrics["suspects"] == int(projection["suspect"].sum()) > 0
    assert projection["held_out"].sum() == metrics["held_out"] + int(projection["suspect"][projection["held_out"]]
                                                                     .sum())
    assert (projection["cluster"] >= -1).all() and projection["cluster"].max() >= 1
    clean = projection[~projection["suspect"]]
    assert (clean["suggested_id"] == clean["id"]).mean() >= 0.95  # the rest: whole identities like another
    flagged = projection[projection["suspect"]]
    assert (flagged["suggested_id"] != flagged["id"]).all() and (flagged["suggested_id"] >= 0).all()
    with (run_dir / "suspects.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["row", "id", "suggested_id", "score", "fit", "suggested_fit", "quality",
                             "same_person_pair", "clear_target", "reason"]  # reason: added in 0.9
    assert {r["reason"] for r in rows} == {"evidence"}  # a file without photo keys
    assert {r["clear_target"] for r in rows} == {"true"}  # planted misfiles: each drawn from another identity
    assert len(rows) == metrics["suspects"]
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True) and min(scores) > 0
    assert {int(r["row"]) for r in rows} == set(flagged["row"].tolist())
    assert all(int(r["suggested_id"]) != int(r["id"]) for r in rows)
    assert metrics["suspect_precision"] >= 0.9 and metrics["suspect_recall"] >= 0.9  # input.truth: small.truth.json
    with (run_dir / "lookalikes.csv").open() as handle:
        pairs = list(csv.DictReader(handle))
    assert list(pairs[0]) == ["id_a", "id_b", "similarity", "possible_same_person"] and len(pairs) >= 100
    assert {"map_model.npz", "suspects.csv", "lookalikes.csv", "map_suspects.png",
            "map_clusters.png"} <= set(record["file_sha256"])


def test_names_travel_into_the_tables(small_db: Path, tmp_path: Path) -> None:
    names = tmp_path / "names.jsonl"
    names.write_text("\n".join(json.dumps({"name": f"Star {i}"}) for i in range(200)), encoding="utf-8")
    out = tmp_path / "out"
    result = _invoke("run", "--config", Path(__file__).parents[2] / "configs" / "smoke.toml", "--input", small_db,
                     "--out", out, "--names", names, "--set", "analysis.holdout=0")
    assert result.exit_code == 0, result.output
    suspects = list(csv.DictReader((out / "suspects.csv").open()))
    assert suspects and suspects[0]["name"] == f"Star {suspects[0]['id']}"
    assert suspects[0]["suggested_name"] == f"Star {suspects[0]['suggested_id']}"
    pairs = list(csv.DictReader((out / "lookalikes.csv").open()))
    assert pairs[0]["name_a"] == f"Star {pairs[0]['id_a']}" and pairs[0]["name_b"] == f"Star {pairs[0]['id_b']}"
    record = json.loads((out / "run.json").read_text())
    assert record["metrics"]["held_out"] == 0 and not pq.read_table(out / "projection.parquet")["held_out"] \
        .to_numpy().any()


def _new_faces(tmp_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Fresh faces of the map's identities: the same generator, drawn again with another noise seed."""
    records, _ = make_demo(SMALL)
    rng = np.random.default_rng(99)
    ids = records["id"].astype(np.int64)
    table_centres = {}
    for identity in np.unique(ids):
        faces = records["embedding"][ids == identity].astype(np.float32)
        table_centres[identity] = faces.mean(axis=0)
    chosen = rng.choice(len(ids), size=150, replace=False)
    centres = np.stack([table_centres[i] for i in ids[chosen]])
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    noise = rng.standard_normal(centres.shape).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    return ids[chosen], (np.sqrt(0.6) * centres + np.sqrt(0.4) * noise).astype(np.float32)


def test_transform_places_new_faces_from_every_format(run_dir: Path, projection, tmp_path: Path) -> None:
    ids, faces = _new_faces(tmp_path)
    sources = {"npz": tmp_path / "new.npz", "plain": tmp_path / "plain.npy", "parquet": tmp_path / "new.parquet"}
    np.savez(sources["npz"], ids=ids, embeddings=faces.astype(np.float16))
    np.save(sources["plain"], faces)
    pq.write_table(pa.table({"embedding": pa.array(list(faces), type=pa.list_(pa.float32()))}), sources["parquet"])
    before = {p.name: file_sha256(p) for p in run_dir.iterdir()}
    out = tmp_path / "placed.parquet"
    result = _invoke("transform", run_dir, sources["npz"], "--out", out)
    assert result.exit_code == 0, result.output
    placed = pq.read_table(out)
    assert placed.column_names == ["row", "id", "x", "y", "nearest_id", "similarity"]
    frame = placed.to_pandas()
    assert (frame["row"] == np.arange(len(ids))).all() and (frame["id"] == ids).all()
    assert (frame["nearest_id"] == ids).mean() >= 0.9
    # on the map: the nearest fitted face to where a new face lands carries its identity
    from scipy.spatial import cKDTree

    fitted = projection[~projection["held_out"]]
    _, nearest = cKDTree(fitted[["x", "y"]].to_numpy()).query(frame[["x", "y"]].to_numpy())
    assert (fitted["id"].to_numpy()[nearest] == ids).mean() >= 0.8
    for name in ("plain", "parquet"):  # no ids: still placed, same places
        other = tmp_path / f"{name}.parquet.out.parquet"
        result = _invoke("transform", run_dir, sources[name], "--out", other)
        assert result.exit_code == 0, result.output
        table = pq.read_table(other)
        assert table.column_names == ["row", "x", "y", "nearest_id", "similarity"]
        assert np.allclose(table["x"].to_numpy(), frame["x"], atol=1e-2)
    assert {p.name: file_sha256(p) for p in run_dir.iterdir()} == before  # the map is read, never written


def test_transform_runs_on_cpu_without_loading_a_umap_backend(run_dir: Path, tmp_path: Path) -> None:
    ids, faces = _new_faces(tmp_path)
    np.savez(tmp_path / "new.npz", ids=ids, embeddings=faces)
    code = ("import sys; from job.cli import app; from typer.testing import CliRunner; "
            f"r = CliRunner().invoke(app, ['transform', {str(run_dir)!r}, {str(tmp_path / 'new.npz')!r}, "
            f"'--out', {str(tmp_path / 'o.parquet')!r}]); assert r.exit_code == 0, r.output; "
            "print(','.join(m for m in ('umap', 'cuml', 'pynndescent', 'cupy') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == ""


def test_transform_refuses_bad_inputs_in_one_line(run_dir: Path, tmp_path: Path) -> None:
    np.save(tmp_path / "short.npy", np.ones((4, 128), dtype=np.float32))
    result = _invoke("transform", run_dir, tmp_path / "short.npy", "--out", tmp_path / "x.parquet")
    _one_line_error(result, 3, "dim 128")
    assert not (tmp_path / "x.parquet").exists()
    result = _invoke("transform", tmp_path, tmp_path / "short.npy", "--out", tmp_path / "x.parquet")
    _one_line_error(result, 3, "run.json")
    result = _invoke("transform", run_dir, tmp_path / "short.npy", "--out", tmp_path / "x.csv")
    _one_line_error(result, 2, ".parquet")


def test_a_swapped_model_is_refused_and_never_unpickled(run_dir: Path, tmp_path: Path) -> None:

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    canary = tmp_path / "unpickled"

    class Canary:
        def __reduce__(self):
            return (Path.touch, (canary,))

    with (copy / "map_model.npz").open("wb") as handle:
        np.savez(handle, identity=np.array([Canary()], dtype=object))
    np.save(tmp_path / "new.npy", np.ones((2, 512), dtype=np.float32))
    result = _invoke("transform", copy, tmp_path / "new.npy", "--out", tmp_path / "o.parquet")
    _one_line_error(result, 3, "sha256")
    # even with run.json edited to vouch for it, the model is read without pickle
    record = json.loads((copy / "run.json").read_text())
    record["file_sha256"]["map_model.npz"] = file_sha256(copy / "map_model.npz")
    (copy / "run.json").write_text(json.dumps(record))
    result = _invoke("transform", copy, tmp_path / "new.npy", "--out", tmp_path / "o.parquet")
    _one_line_error(result, 3, "map_model.npz")
    assert not canary.exists()  # nothing was unpickled
    for broken in (b"PK\x03\x04 not really a zip", b""):  # a corrupt archive is an input error, not a crash
        (copy / "map_model.npz").write_bytes(broken)
        record["file_sha256"]["map_model.npz"] = file_sha256(copy / "map_model.npz")
        (copy / "run.json").write_text(json.dumps(record))
        _one_line_error(_invoke("nearest", copy, "--x", 0, "--y", 0), 3, "not a faceatlas map model")
    shutil.copy(run_dir / "map_model.npz", copy / "map_model.npz")
    record["file_sha256"]["map_model.npz"] = file_sha256(copy / "map_model.npz")
    record["input"] = "not a dict"
    (copy / "run.json").write_text(json.dumps(record))
    _one_line_error(_invoke("nearest", copy, "--x", 0, "--y", 0), 3, "field 'input' is 'not a dict', expected a dict")


def test_nearest_ranks_identities_at_a_face_position(run_dir: Path, projection) -> None:
    fitted = projection[~projection["held_out"] & ~projection["suspect"]]
    hits = 0
    for _, face in fitted.sample(20, random_state=0).iterrows():
        result = _invoke("nearest", run_dir, "--x", face["x"], "--y", face["y"], "-k", 5, "--json")
        assert result.exit_code == 0, result.output
        answers = json.loads(result.stdout)
        assert len(answers) == 5 and all(set(a) == {"id", "similarity", "map_distance"} for a in answers)
        sims = [a["similarity"] for a in answers]
        assert sims == sorted(sims, reverse=True)
        hits += answers[0]["id"] == face["id"]
    assert hits >= 16
    face = fitted.iloc[0]
    text = _invoke("nearest", run_dir, "--x", face["x"], "--y", face["y"])
    assert text.exit_code == 0 and len(text.stdout.strip().splitlines()) == 11  # header + 10


def test_invert_gives_a_unit_vector_close_to_the_faces_there(run_dir: Path, projection, tmp_path: Path) -> None:
    records, _ = make_demo(SMALL)
    face = projection[~projection["held_out"] & ~projection["suspect"]].iloc[7]
    out = tmp_path / "v.npy"
    result = _invoke("invert", run_dir, "--x", face["x"], "--y", face["y"], "--out", out)
    assert result.exit_code == 0, result.output
    vector = np.load(out, allow_pickle=False)
    assert vector.shape == (512,) and vector.dtype == np.float32 and abs(np.linalg.norm(vector) - 1) < 1e-4
    original = records["embedding"][int(face["row"])].astype(np.float32)
    assert vector @ original / np.linalg.norm(original) > 0.5
    as_json = json.loads(_invoke("invert", run_dir, "--x", face["x"], "--y", face["y"], "--json").stdout)
    assert np.allclose(as_json["vector"], vector, atol=1e-6) and 0.3 < as_json["fidelity"] <= 1.0


def test_points_off_the_map_are_refused(run_dir: Path, projection, tmp_path: Path) -> None:
    far = float(projection["x"].max() + 1000)
    for command in ("invert", "nearest"):
        _one_line_error(_invoke(command, run_dir, "--x", far, "--y", 0), 2, "outside the populated map")
    _one_line_error(_invoke("invert", run_dir, "--x", far, "--y", 0, "--out", tmp_path / "v.npy"), 2, "outside")
    assert not list(tmp_path.iterdir())  # no vector file for a point that has none
    _one_line_error(_invoke("invert", run_dir, "--x", 0, "--y", 0, "--out", run_dir / "v.npy"), 2,
                    "inside the run folder")
    _one_line_error(_invoke("transform", run_dir, run_dir / "map_model.npz", "--out", run_dir / "projection.parquet"),
                    2, "inside the run folder")
    _one_line_error(_invoke("nearest", run_dir, "--x", 0, "--y", 0, "--z", 1), 2, "2-D map")
    _one_line_error(_invoke("invert", run_dir, "--x", "nan", "--y", 0), 2, "finite")


def test_three_dimensional_maps_answer_with_z(small_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "map3d"
    result = _invoke("run", "--config", Path(__file__).parents[2] / "configs" / "smoke.toml", "--input", small_db,
                     "--out", out, "--n-components", "3")
    assert result.exit_code == 0, result.output
    table = pq.read_table(out / "projection.parquet").to_pandas()
    face = table[~table["held_out"] & ~table["suspect"]].iloc[3]
    point = ["--x", face["x"], "--y", face["y"], "--z", face["z"]]
    answers = json.loads(_invoke("nearest", out, *point, "-k", 3, "--json").stdout)
    assert answers[0]["id"] == face["id"]
    assert len(json.loads(_invoke("invert", out, *point, "--json").stdout)["vector"]) == 512
    _one_line_error(_invoke("nearest", out, "--x", face["x"], "--y", face["y"]), 2, "3-D map")
    ids, faces = _new_faces(tmp_path)
    np.savez(tmp_path / "new.npz", ids=ids, embeddings=faces)
    result = _invoke("transform", out, tmp_path / "new.npz", "--out", tmp_path / "p.parquet")
    assert result.exit_code == 0, result.output
    assert pq.read_table(tmp_path / "p.parquet").column_names == ["row", "id", "x", "y", "z", "nearest_id",
                                                                  "similarity"]


def test_one_identity_and_no_holdout_still_write_every_key(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    centre = rng.standard_normal(64)
    faces = (centre + 0.5 * rng.standard_normal((40, 64))).astype(np.float32)
    np.savez(tmp_path / "one.npz", ids=np.zeros(40, dtype=np.int64), embeddings=faces)
    out = tmp_path / "out"
    result = _invoke("run", "--config", Path(__file__).parents[2] / "configs" / "smoke.toml", "--input",
                     tmp_path / "one.npz", "--out", out, "--set", "analysis.holdout=0")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "run.json").read_text())["metrics"]
    assert metrics["suspects"] == 0 and metrics["held_out"] == 0
    assert metrics["inverse"]["mean_cos"] is None and metrics["transform"] == {"id_at_1": None}
    assert metrics["inverse"]["map_mean_cos"] > 0.5  # the map's own leave-one-out inverse still measured
    table = pq.read_table(out / "projection.parquet").to_pandas()
    assert (table["suggested_id"] == 0).all() and not table["suspect"].any()
    assert list(csv.reader((out / "lookalikes.csv").open())) == [["id_a", "id_b", "similarity", "possible_same_person"]]
    answers = json.loads(_invoke("nearest", out, "--x", table["x"][0], "--y", table["y"][0], "--json").stdout)
    assert [a["id"] for a in answers] == [0]


def test_batched_invert_gives_the_per_point_values(smoke_run: RunResult) -> None:
    """``invert_points`` (one k-d tree query for all points, as the held-out and map-inverse checks use it)
    equals ``invert`` called point by point, with and without a left-out face and its own centroid."""
    from job.errors import UsageError
    from job.maps.mapmodel import MODEL_FILE, load_model
    from job.maps.placement import invert, invert_points

    model = load_model(smoke_run.out_dir / MODEL_FILE)
    rng = np.random.default_rng(0)
    faces = rng.choice(len(model.coords), 40, replace=False)
    points = np.vstack([model.coords[faces] + rng.normal(0, 0.2, (40, model.n_components)),
                        model.coords.max(axis=0) + 1e3])  # the last one is off the map
    leave_out = np.append(faces, -1)
    codes = rng.integers(0, len(model.identity), len(points))
    own = rng.normal(size=(len(points), model.dim)).astype(np.float32)
    own /= np.linalg.norm(own, axis=1, keepdims=True)
    for args in ((None, None), (leave_out, None), (leave_out, (codes, own))):
        batch = invert_points(model, points, *args)
        assert batch.on_map[:-1].all() and not batch.on_map[-1]
        for i, point in enumerate(points[:-1]):
            one = invert(model, point, -1 if args[0] is None else int(args[0][i]),
                         None if args[1] is None else (int(codes[i]), own[i]))
            np.testing.assert_allclose(batch.vectors[i], one.vector, rtol=1e-6, atol=1e-7)
            assert batch.fidelity[i] == pytest.approx(one.fidelity) and batch.distance[i] == pytest.approx(one.distance)
        with pytest.raises(UsageError):
            invert(model, points[-1])
