from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from job import __version__
from job.cli import app
from tests.conftest import truth_of

runner = CliRunner()
ROOT = Path(__file__).parents[2]
SMOKE = str(ROOT / "configs" / "smoke.toml")


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_help_does_not_import_heavy_libraries() -> None:
    # job.reduce.sgd and job.knn.pairs are the modules of numba kernels (their decorators need numba); only a fit
    # and a kNN graph import them
    code = ("import sys, pkgutil, importlib, job; from typer.testing import CliRunner; from job.cli import app; "
            "[importlib.import_module(m.name) for m in pkgutil.walk_packages(job.__path__, 'job.') "
            "if m.name not in ('job.__main__', 'job.reduce.sgd', 'job.knn.pairs')]; "
            "[CliRunner().invoke(app, args) for args in (['--help'], ['run', '--help'], ['demo-db', '--help'], "
            "['backends', '--help'])]; "
            "print(','.join(m for m in ('umap', 'numba', 'cupy', 'cuml', 'datashader', 'dask', 'pandas', 'faiss', "
            "'sklearn', 'scipy', 'pyarrow') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == ""


def test_python_dash_m_job_works() -> None:
    done = subprocess.run([sys.executable, "-m", "job", "--version"], capture_output=True, text=True, check=True)
    assert __version__ in done.stdout


def test_run_writes_the_contract(small_db: Path, tmp_path: Path) -> None:
    names = tmp_path / "names.jsonl"
    names.write_text("\n".join(json.dumps({"name": f"Star {i}"}) for i in range(200)), encoding="utf-8")
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", "--config", SMOKE, "--input", str(small_db), "--out", str(out),
                                 "--highlight", "3,5,8", "--names", str(names), "--seed", "7",
                                 "--truth", str(truth_of(small_db)), "--set", "umap.n_neighbors=12"])
    assert result.exit_code == 0, result.output
    for name in ("projection.parquet", "map_identities.png", "map_highlight.png", "map_density.png", "run.json",
                 "map_suspects.png", "map_clusters.png", "suspects.csv", "lookalikes.csv", "map_model.npz",
                 "low_quality.csv", "truth.json", "names.json", "report.html"):
        assert (out / name).is_file()
        assert str((out / name).resolve()) in result.stdout  # says where each file is
    table = pq.read_table(out / "projection.parquet")
    assert table.column_names == ["row", "id", "x", "y", "outlier_score", "suspect", "suggested_id", "cluster",
                                  "held_out", "fitted", "verdict", "quality", "fit", "duplicate_of",
                                  "similar_id_1", "similar_id_2", "similar_id_3", "similar_cos_1", "similar_cos_2",
                                  "similar_cos_3"]
    assert [str(t) for t in table.schema.types] == ["int64", "int64", "float", "float", "float", "bool", "int64",
                                                    "int64", "bool", "bool",
                                                    "dictionary<values=string, indices=int32, ordered=0>", "float",
                                                    "float", "int64"] + ["int64"] * 3 + ["float"] * 3
    assert (table.column("fitted").to_numpy() != table.column("held_out").to_numpy()).all()  # small: all fitted
    records = np.load(small_db)
    assert table.column("row").to_pylist() == list(range(len(records)))
    assert np.array_equal(table.column("id").to_numpy(), records["id"])
    record = json.loads((out / "run.json").read_text())
    assert {"version", "backend", "backend_reason", "config", "input", "timings", "metrics", "versions"} <= set(record)
    assert record["backend"] == "umap-learn"
    assert record["config"]["umap"]["n_neighbors"] == 12 and record["config"]["seed"] == 7
    assert record["config"]["render"]["highlight"] == [3, 5, 8] and record["highlight"] == [3, 5, 8]
    assert set(record["input"]) == {"path", "n_faces", "n_identities", "dim", "dtype", "sha256", "dropped",
                                    "duplicates", "unit_length", "quality_known"}
    assert record["input"]["unit_length"] is True and record["input"]["quality_known"] is False  # unit vectors
    assert record["input"]["dropped"] == {"nan_or_inf": 0, "zero": 0}
    assert record["file_sha256"].keys() == {p.name for p in out.iterdir()} - {"run.json"}
    assert record["input"]["n_faces"] == len(records) and record["input"]["dtype"] == "float16"
    assert {"trustworthiness", "same_id_knn", "suspect_precision", "suspect_recall"} <= set(record["metrics"])
    assert record["config"]["input"]["truth"] == str(truth_of(small_db))
    assert {"load", "umap", "metrics", "render"} <= set(record["timings"])
    assert {"umap-learn", "datashader", "numpy"} <= set(record["versions"])


def test_three_dimensional_supervised_run(small_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "out3d"
    result = runner.invoke(app, ["run", "-c", SMOKE, "-i", str(small_db), "-o", str(out), "--n-components", "3",
                                 "--supervised", "--backend", "umap-learn"])
    assert result.exit_code == 0, result.output
    assert pq.read_table(out / "projection.parquet").column_names == [
        "row", "id", "x", "y", "z", "outlier_score", "suspect", "suggested_id", "cluster", "held_out",
        "supervised_disagreement", "fitted", "verdict", "quality", "fit", "duplicate_of",
        "similar_id_1", "similar_id_2", "similar_id_3", "similar_cos_1", "similar_cos_2", "similar_cos_3"]
    record = json.loads((out / "run.json").read_text())
    assert record["config"]["umap"]["supervised"] is True
    assert record["metrics"]["same_id_knn"] > 0.9  # labels pull identities together


def test_demo_db_writes_the_seed_format_and_truth(tmp_path: Path) -> None:
    out = tmp_path / "actor.npy"
    result = runner.invoke(app, ["demo-db", str(out), "--identities", "50", "--faces-per-identity", "3",
                                 "--seed", "2"])
    assert result.exit_code == 0, result.output
    records = np.load(out, allow_pickle=False)
    assert records.dtype == np.dtype([("id", "<u2"), ("embedding", "<f2", (512,))])
    truth = json.loads((tmp_path / "actor.truth.json").read_text())
    assert {"misfiled", "lookalike_pairs", "spec"} <= set(truth)
    assert f"--truth {tmp_path / 'actor.truth.json'}" in result.stdout  # how to score a run against it
    assert all(records["id"][m["row"]] != m["true_id"] for m in truth["misfiled"])


@pytest.mark.parametrize("existing", ["actor.npy", "actor.truth.json"])
def test_demo_db_refuses_an_existing_file_unless_forced(tmp_path: Path, existing: str) -> None:
    """``demo-db actor.npy`` must not replace someone's real database (nor its truth file) unasked."""
    (tmp_path / existing).write_bytes(b"someone's real faces")
    before = sorted((p.name, p.read_bytes()) for p in tmp_path.iterdir())
    refused = runner.invoke(app, ["demo-db", str(tmp_path / "actor.npy"), "--identities", "20"])
    assert refused.exit_code == 2, refused.output
    errors = refused.stderr.strip().splitlines()
    assert len(errors) == 1 and f"{tmp_path / existing}: already exists" in errors[0] and "--force" in errors[0]
    assert sorted((p.name, p.read_bytes()) for p in tmp_path.iterdir()) == before
    forced = runner.invoke(app, ["demo-db", str(tmp_path / "actor.npy"), "--identities", "20", "--force"])
    assert forced.exit_code == 0, forced.output
    assert np.load(tmp_path / "actor.npy", allow_pickle=False)["id"].max() == 19


def test_demo_db_writes_the_wild_shape(tmp_path: Path) -> None:
    out = tmp_path / "wild.npy"
    result = runner.invoke(app, ["demo-db", str(out), "--identities", "120", "--shape", "wild"])
    assert result.exit_code == 0, result.output
    records = np.load(out, allow_pickle=False)
    assert np.median(np.linalg.norm(records["embedding"].astype(np.float32), axis=1)) > 15  # raw lengths
    truth = json.loads((tmp_path / "wild.truth.json").read_text())
    assert truth["twin_pairs"] and truth["low_quality_rows"] and truth["spec"]["raw_norms"] is True
    assert "near-twin pairs" in result.stdout
    refused = runner.invoke(app, ["demo-db", str(tmp_path / "x.npy"), "--hard", "--shape", "wild"])
    assert refused.exit_code == 2 and "pick one" in refused.output
    refused = runner.invoke(app, ["demo-db", str(tmp_path / "x.npy"), "--shape", "odd"])
    assert refused.exit_code == 2 and "expected one of" in refused.output


def test_backends_reports_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    result = runner.invoke(app, ["backends", "--json"])
    assert result.exit_code == 0
    payload = json.loads(result.stdout)
    assert payload["auto"] == "umap-learn"
    assert {b["name"]: b["available"] for b in payload["backends"]} == {"cuml": False, "umap-learn": True}


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--set", "umap.n_neighbours=3"], 2, "unknown key 'umap.n_neighbours'"),
        (["--set", "umap.n_neighbors=one"], 2, "umap.n_neighbors"),
        (["--highlight", "1,x"], 2, "--highlight"),
        (["--highlight", "99999"], 2, "ids 99999 are not in"),
        (["--backend", "cuml"], 4, "faceatlas[gpu]"),
        (["--input", "/nonexistent/db.npy"], 3, "/nonexistent/db.npy"),
        (["--truth", "/nonexistent/db.truth.json"], 3, "/nonexistent/db.truth.json: cannot read a demo truth file"),
    ],
)
def test_errors_are_one_line_with_exit_codes(small_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *,
                                             args: list[str], code: int, message: str) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    out = tmp_path / "out"
    base = ["run", "-c", SMOKE, "-i", str(small_db), "-o", str(out)]
    result = runner.invoke(app, base + args)
    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("faceatlas: error:")]
    assert len(lines) == 1 and message in lines[0]
    assert "Traceback" not in result.output
    assert not out.exists()


def test_too_few_faces_for_n_neighbors(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "tiny.npz", ids=np.arange(12) // 3, embeddings=rng.standard_normal((12, 8)))
    result = runner.invoke(app, ["run", "-i", str(tmp_path / "tiny.npz"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "12 faces, but umap.n_neighbors=15 needs at least 16" in result.stderr
    assert not (tmp_path / "out").exists()


def test_unwritable_out_is_one_line(small_db: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = runner.invoke(app, ["run", "-c", SMOKE, "-i", str(small_db), "-o", str(blocker / "out")])
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("faceatlas: error:")]
    assert len(errors) == 1 and "not a folder" in errors[0]
    assert "UMAP done" not in result.stderr  # refused before the heavy work


def test_demo_db_writes_where_the_file_system_has_no_hard_links(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os

    def no_links(source: object, target: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")  # FAT, some network mounts

    monkeypatch.setattr(os, "link", no_links)
    result = runner.invoke(app, ["demo-db", str(tmp_path / "a.npy"), "--identities", "20"])
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "a.npy", allow_pickle=False)["id"].max() == 19
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "a.truth.json"]  # no temporary left
