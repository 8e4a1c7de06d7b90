"""run.json as one typed schema (job/store/runrecord.py): what a run writes, how every command reads it, and runs
written by earlier versions.

``tests/fixtures/run-0.6.json`` is the run.json a faceatlas of commit ab8e67d (the last before run.json gained
``geometry`` and ``schema_version``) wrote for its demo database (``demo-db --identities 30 --faces-per-identity
4 --seed 1``, ``run -c configs/smoke.toml --truth``), byte for byte; ``run-0.6-files.json`` holds that run's
data files (projection, map model, look-alikes, suspects, low-quality faces, truth), base64. The old run's folder
is rebuilt from them; its PNG maps and page (0.8 MB) were not stored, so the only change to the old record is
that it no longer lists those six files.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from job.cli import app
from job.errors import InputError, InternalError
from job.io.database import load_database
from job.io.demo import DemoSpec, make_demo
from job.pipeline import RunResult
from job.store.record import run_record
from job.store.runrecord import SCHEMA_VERSION, Fit, Metrics, RunRecord
from job.store.runs import open_run

FIXTURES = Path(__file__).parents[1] / "fixtures"
OLD_RECORD = FIXTURES / "run-0.6.json"
OLD_FILES = FIXTURES / "run-0.6-files.json"
OLD_DEMO = DemoSpec(n_identities=30, faces_per_identity=4, seed=1)  # the database the old run mapped
runner = CliRunner()


def _invoke(*args: object) -> Any:
    return runner.invoke(app, [str(arg) for arg in args])


def _parse(raw: object) -> RunRecord:
    return RunRecord.parse(raw, Path("run.json"))


def _refused(raw: dict[str, Any]) -> str:
    with pytest.raises(InputError) as caught:
        _parse(raw)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("run.json: ") and message.endswith("rerun faceatlas run")
    return message


@pytest.fixture
def old_run(tmp_path: Path) -> Path:
    """The 0.6 run's folder: its data files as that version wrote them, and its run.json without the listing of
    the PNG maps and the page, which were not stored."""
    bundle = json.loads(OLD_FILES.read_text())
    folder = tmp_path / "run"
    folder.mkdir()
    for name, data in bundle["files"].items():
        (folder / name).write_bytes(base64.b64decode(data))
    record = json.loads(OLD_RECORD.read_text())
    record["files"] = {role: name for role, name in record["files"].items() if name not in bundle["left_out"]}
    record["file_sha256"] = {name: digest for name, digest in record["file_sha256"].items()
                             if name not in bundle["left_out"]}
    (folder / "run.json").write_text(json.dumps(record, indent=2))
    return folder


# the schema

def test_a_new_run_writes_the_current_schema_and_reads_back_to_the_same_json(smoke_run: RunResult) -> None:
    path = smoke_run.out_dir / "run.json"
    raw = json.loads(path.read_text())
    assert raw["schema_version"] == SCHEMA_VERSION == 1
    record = RunRecord.parse(raw, path)
    assert record.to_json() == raw and list(record.to_json()) == list(raw)  # the same keys, values and order
    assert json.dumps(record.to_json()) == json.dumps(raw)  # ints stay ints, floats floats
    assert isinstance(record.metrics, Metrics) and isinstance(record.fit, Fit)
    assert record.metrics.suspects == raw["metrics"]["suspects"] and record.metrics.clusters is not None
    assert record.metrics.verdicts == raw["metrics"]["verdicts"]
    assert record.metrics.suspect_precision == raw["metrics"]["suspect_precision"]  # given --truth
    assert "supervised_disagreement" not in raw["metrics"]  # absent stays absent, no null added
    assert record.geometry is not None and record.geometry.quality_from in ("norms", "neighbours")
    assert record.input.n_faces == raw["input"]["n_faces"] and record.fit.fitted == raw["fit"]["fitted"]
    assert open_run(smoke_run.out_dir).record == record


@pytest.fixture
def inputs(small_db: Path, smoke_run: RunResult) -> dict[str, Any]:
    """run_record's arguments for the smoke database, with NumPy scalars as a stage hands them over."""
    from job.config import load_config

    config = load_config(Path(__file__).parents[2] / "configs" / "smoke.toml", {"input.path": str(small_db)})
    written = json.loads((smoke_run.out_dir / "run.json").read_text())
    return {"config": config, "database": load_database(config.input), "backend": "umap-learn",
            "backend_reason": "because", "knn_method": "exact", "knn_reason": "small", "fit": written["fit"],
            "highlight": [np.int64(3)], "metrics": {**written["metrics"], "trustworthiness": np.float64(0.123456789)},
            "timings": {"load": 0.12345}, "files": {}, "geometry": written["geometry"], "written": written}


def test_run_record_takes_keywords_and_returns_the_typed_record(inputs: dict[str, Any]) -> None:
    written = inputs.pop("written")
    record = run_record(**inputs)
    assert isinstance(record, RunRecord) and record.schema_version == SCHEMA_VERSION
    assert record.metrics.trustworthiness == 0.1235 and record.timings == {"load": 0.123}  # rounded as before
    assert record.highlight == [3] and type(record.highlight[0]) is int
    assert record.gpu is None and record.cluster is None and record.to_json()["gpu"] is None
    assert list(record.to_json()) == list(written)  # the order of a written run.json
    with pytest.raises(InternalError, match=r"metrics\.suspects"):
        run_record(**{**inputs, "metrics": {"suspects": "many"}})


def test_the_stored_0_6_record_reads_as_schema_0_and_writes_back_unchanged() -> None:
    raw = json.loads(OLD_RECORD.read_text())
    assert "schema_version" not in raw and "geometry" not in raw  # what makes it the older layout
    record = _parse(raw)
    assert record.schema_version == 0 and record.geometry is None and record.report is None
    assert record.to_json() == raw and list(record.to_json()) == list(raw)
    assert (OLD_RECORD.read_text() == json.dumps(record.to_json(), indent=2) + "\n")  # byte for byte
    assert record.version == "0.3.0" and record.backend == "umap-learn"
    assert record.input.n_faces == 120 and record.input.n_identities == 30 and record.input.dim == 512
    assert record.fit.fitted == 118 and record.fit.held_out == 2 and record.fit.method is None
    metrics = record.metrics
    assert metrics.suspects == 2 and metrics.verdicts == {"ok": 118, "misfiled": 2, "low_quality": 0, "lone": 0,
                                                          "duplicate": 0}
    assert metrics.clusters is not None and metrics.clusters.n == 13
    assert metrics.inverse is not None and metrics.inverse.map_id_at_1 == 0.5517
    assert metrics.twin_recall is None and "twin_recall" in metrics.model_fields_set  # null: not measured
    assert metrics.supervised_disagreement is None and "supervised_disagreement" not in metrics.model_fields_set
    assert record.config.input.truth == "demo.truth.json" and record.config.render == {
        "width": 400, "height": 400, "highlight": [], "palette_seed": 0}
    assert "centre" not in (record.config.analysis or {})  # the geometry's setting came later


def test_keys_the_schema_does_not_know_are_kept_and_the_known_ones_typed() -> None:
    raw = json.loads(OLD_RECORD.read_text())
    raw["schema_version"] = SCHEMA_VERSION + 1  # a later faceatlas's record
    raw["mine"] = {"notes": ["a", 1, None], "deep": {"x": 1.5}}
    raw["metrics"]["my_score"] = 0.25
    raw["fit"]["later_field"] = "x"
    record = _parse(raw)
    assert record.to_json() == raw
    assert record.model_extra == {"mine": raw["mine"]}
    assert ("my_score", 0.25) in record.metrics.flat() and ("clusters.ari", 0.5081) in record.metrics.flat()


def test_a_newer_schema_that_no_longer_reads_says_upgrade_not_edited() -> None:
    raw = json.loads(OLD_RECORD.read_text())
    raw["schema_version"] = SCHEMA_VERSION + 1
    raw["metrics"]["suspects"] = "2 of 120"  # a later faceatlas changed a known field's type
    with pytest.raises(InputError) as caught:
        _parse(raw)
    message = str(caught.value)
    assert "metrics.suspects" in message and message.endswith("upgrade faceatlas") and "edited" not in message


def test_the_gpu_and_cluster_sections_as_runs_write_them_are_typed() -> None:
    """``gpu`` and ``cluster`` as a GPU run and a ``--dask`` run write them (job/where.py, ClusterSession.record;
    a cluster's worker versions are one text, or a list where the workers differ)."""
    raw = json.loads(OLD_RECORD.read_text())
    raw["gpu"] = {"device": "NVIDIA H100 80GB HBM3", "count": 1, "total_bytes": 85_000_000_000,
                  "free_bytes": 84_000_000_000, "compute_capability": "9.0", "driver_cuda": "12.8",
                  "runtime_cuda": "12.8", "memory": "pool", "on_gpu": ["kNN graph"], "on_cpu": ["loading"]}
    raw["cluster"] = {"address": "tcp://10.0.0.1:8786", "kind": "address", "workers": 2, "threads": 8,
                      "chunk_faces": 131072, "worker_versions": {"faceatlas": "0.8.0", "python": ["3.11.7", "3.12.3"]},
                      "stages": ["identity sums"], "tasks": {"chunk_sums": {"count": 3, "seconds": 0.12}},
                      "device": "cpu", "device_reason": "", "worker_gpus": []}
    record = _parse(raw)
    assert record.gpu is not None and record.gpu.total_bytes == 85_000_000_000 and record.gpu.on_gpu == ["kNN graph"]
    assert record.cluster is not None and record.cluster.worker_versions == raw["cluster"]["worker_versions"]
    assert record.cluster.tasks is not None and record.cluster.tasks["chunk_sums"].count == 3
    assert record.to_json() == raw


@pytest.mark.parametrize(("edit", "fragment"), [
    (lambda r: r["metrics"].update(suspects="2"), "field 'metrics.suspects' is '2', expected an integer"),
    (lambda r: r["metrics"].update(trustworthiness=True),
     "field 'metrics.trustworthiness' is True, expected a number"),
    (lambda r: r["metrics"]["clusters"].update(ari="high"), "field 'metrics.clusters.ari' is 'high'"),
    (lambda r: r["metrics"].update(verdicts=[1]), "field 'metrics.verdicts' is [1], expected a dict"),
    (lambda r: r["fit"].update(fitted=118.0), "field 'fit.fitted' is 118.0, expected an integer"),
    (lambda r: r.update(highlight=[0, "1"]), "field 'highlight[1]' is '1', expected an integer"),
    (lambda r: r["config"].update(max_memory=1.5), "field 'config.max_memory' is 1.5"),  # int | str: no tags
    (lambda r: r.update(gpu={"on_gpu": "all"}), "field 'gpu.on_gpu' is 'all', expected a list"),
    (lambda r: r.update(geometry={"raw": {"genuine": {"q50": "0.6"}}}), "field 'geometry.raw.genuine.q50'"),
    (lambda r: r.update(schema_version=-1), "field 'schema_version' is -1, expected a number from 0"),
    (lambda r: r.update(input=None), "field 'input' is None, expected a dict"),
    (lambda r: r["file_sha256"].update({"truth.json": "abc"}), "is 'abc', not a SHA-256"),
    (lambda r: r["timings"].update(load=10**400), "field 'timings.load' is an integer of 401 digits"),
])
def test_a_record_of_the_wrong_shape_is_refused_in_one_line(edit, fragment: str) -> None:
    raw = json.loads(OLD_RECORD.read_text())
    edit(raw)
    message = _refused(raw)
    assert fragment in message, message
    assert "Traceback" not in message


# a run written by an earlier version opens for every command

def test_an_older_run_verifies_and_answers_nearest_invert_and_transform(old_run: Path, tmp_path: Path) -> None:
    finished = open_run(old_run)
    assert finished.record.schema_version == 0 and finished.contents.model is not None
    result = _invoke("verify", old_run)
    assert result.exit_code == 0 and "faceatlas 0.3.0" in result.stdout, result.output
    model = finished.contents.model
    x, y = (float(v) for v in model.anchor[model.identity.tolist().index(7)])
    result = _invoke("nearest", old_run, "--x", x, "--y", y, "--json")
    assert result.exit_code == 0, result.output
    answers = json.loads(result.stdout)
    assert answers[0]["id"] == 7 and {a["id"] for a in answers} <= set(model.identity.tolist())
    result = _invoke("invert", old_run, "--x", x, "--y", y, "--out", tmp_path / "point.npy")
    assert result.exit_code == 0, result.output
    records, _ = make_demo(OLD_DEMO)
    np.save(tmp_path / "demo.npy", records, allow_pickle=False)
    result = _invoke("transform", old_run, tmp_path / "demo.npy", "--out", tmp_path / "placed.parquet")
    assert result.exit_code == 0, result.output


def test_report_and_render_remake_an_older_runs_page_and_maps(old_run: Path) -> None:
    before = json.loads((old_run / "run.json").read_text())
    result = _invoke("report", old_run)
    assert result.exit_code == 0, result.output
    page = (old_run / "report.html").read_text()
    assert "not recorded (a run made before faceatlas measured it)" in page and "faceatlas 0.3.0" in page
    after = json.loads((old_run / "run.json").read_text())
    assert "schema_version" not in after and "geometry" not in after  # still the older layout, as it was
    assert after["report"]["color_by"] == "id" and after["report"]["written_by"].startswith("faceatlas report")
    assert after["files"]["report"] == "report.html" and "report.html" in after["file_sha256"]
    unchanged = {key: value for key, value in after.items() if key not in ("report", "files", "file_sha256")}
    assert unchanged == {key: value for key, value in before.items() if key not in ("files", "file_sha256")}
    assert list(after)[:-1] == list(before)  # the keys in their order, the page's facts last
    result = _invoke("render", old_run, "--highlight", "3,5")
    assert result.exit_code == 0, result.output
    rendered = json.loads((old_run / "run.json").read_text())
    assert rendered["highlight"] == [3, 5] and rendered["config"]["render"]["highlight"] == [3, 5]
    assert {"map_identities.png", "map_clusters.png"} <= set(rendered["file_sha256"])
    assert _invoke("verify", old_run).exit_code == 0
