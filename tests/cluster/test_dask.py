"""faceatlas on a real Dask cluster: a LocalCluster of 2 worker processes on loopback, real tasks, real faults.

The claim under test: a distributed run writes the same contract with the same answers as a single-process run
(same fit sample and seed: the same bits, since every per-face computation is row by row and the kNN graph is
rescored exactly), survives a worker killed mid-run, and refuses a cluster it cannot use with exit 7 and one line.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from job import __version__
from job.address import parse_address, shown_address
from job.cli import app
from job.cluster.faces import CANDIDATES, DENSITY, DOTS, GRAPH, PLACE, READ, SUMS, ClusterFaces
from job.cluster.session import open_cluster
from job.cluster.source import chunk_digest, face_source, first_and_last, read_faces
from job.config import Config, load_config
from job.errors import ClusterError, UsageError
from job.io.database import demo_database, load_database
from job.io.demo import UNCENTRED, DemoSpec, make_demo, truth_json
from job.pipeline import RunResult, run
from job.progress import no_progress
from job.space.faces import HostFaces
from job.stages import embedding_space, plan_fit, shared_graph
from tests.conftest import truth_of

pytestmark = pytest.mark.slow  # the cluster tier: LocalClusters (pytest -m 'not slow' leaves it out)

SMOKE = str(Path(__file__).parents[2] / "configs" / "smoke.toml")
TABLES = ("suspects.csv", "lookalikes.csv", "low_quality.csv", "truth.json")
MAPS = ("map_identities.png", "map_highlight.png", "map_density.png", "map_suspects.png", "map_clusters.png")
runner = CliRunner()


@pytest.fixture(scope="module")
def cluster():
    """A real LocalCluster: 2 worker processes (one thread each) behind nannies, on 127.0.0.1 only."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR) as local:
        yield local


@pytest.fixture(scope="module")
def db20k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 20k-face planted demo database (4,000 identities), with its truth file beside it (given as --truth by
    :func:`_config`)."""
    records, truth = make_demo(DemoSpec(n_identities=4000, faces_per_identity=5, seed=2))
    path = tmp_path_factory.mktemp("db20k") / "db20k.npy"
    np.save(path, records, allow_pickle=False)
    truth_of(path).write_text(truth_json(truth), encoding="utf-8")
    return path


def _config(db: Path, out: Path, **overrides: Any) -> Config:
    # a sample is fitted (sample_above 10k), so 16k faces are placed on the fitted map: every stage runs
    return load_config(Path(SMOKE), {"input.path": str(db), "input.truth": str(truth_of(db)), "out": str(out),
                                     "umap.sample_above": 10_000, **overrides})


@pytest.fixture(scope="module")
def single(db20k: Path, tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    return run(_config(db20k, tmp_path_factory.mktemp("single") / "out"))


def _same_outputs(single: RunResult, other: Path) -> None:
    """Every output of ``other`` holds what the single-process run's does (the map to the bit)."""
    pd.testing.assert_frame_equal(pd.read_parquet(other / "projection.parquet"),
                                  pd.read_parquet(single.out_dir / "projection.parquet"))
    for name in TABLES + MAPS:
        assert (other / name).read_bytes() == (single.out_dir / name).read_bytes(), name
    with np.load(other / "map_model.npz") as mine, np.load(single.out_dir / "map_model.npz") as theirs:
        assert sorted(mine.files) == sorted(theirs.files)
        for key in mine.files:
            np.testing.assert_array_equal(mine[key], theirs[key], err_msg=key)
    mine, theirs = (json.loads((folder / "run.json").read_text()) for folder in (other, single.out_dir))
    assert mine["metrics"] == theirs["metrics"]
    assert mine["fit"] == theirs["fit"] and mine["knn_method"] == theirs["knn_method"]
    assert set(mine) == set(theirs)


def test_distributed_run_matches_the_single_process_run(cluster, single: RunResult, db20k: Path,
                                                       tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run(_config(db20k, out, **{"dask.address": cluster.scheduler_address, "dask.chunk_faces": 4096}))
    assert set(result.files) == set(single.files)
    assert result.metrics.suspect_precision >= 0.95 and result.metrics.suspect_recall >= 0.95
    _same_outputs(single, out)
    record = json.loads((out / "run.json").read_text())
    assert json.loads((single.out_dir / "run.json").read_text())["cluster"] is None
    info = record["cluster"]
    assert info["address"] == cluster.scheduler_address and info["kind"] == "remote"
    assert info["workers"] == 2 and info["threads"] == 2 and info["chunk_faces"] == 4096
    assert info["worker_versions"]["faceatlas"] == __version__
    assert set(info["stages"]) == {READ, SUMS, DOTS, GRAPH, CANDIDATES, PLACE, DENSITY}
    assert record["fit"]["placed"] > 10_000  # the placement ran, on the workers
    chunks = -(-record["input"]["n_faces"] // 4096)  # each task counted once (the page and run.json read one record)
    assert info["tasks"]["chunk_graph"]["count"] == info["tasks"]["chunk_sums"]["count"] == chunks


def test_a_centred_run_on_the_cluster_matches_the_single_process_run(cluster, tmp_path: Path) -> None:
    """Workers read an uncentred (dlib-like) file and subtract the client's centre themselves: the same bits."""
    records, truth = make_demo(replace(UNCENTRED, n_identities=500, seed=3))
    db = tmp_path / "uncentred.npy"
    np.save(db, records, allow_pickle=False)
    truth_of(db).write_text(truth_json(truth), encoding="utf-8")
    single = run(_config(db, tmp_path / "single", **{"umap.sample_above": 4000}))
    out = tmp_path / "out"
    run(_config(db, out, **{"umap.sample_above": 4000, "dask.address": cluster.scheduler_address,
                            "dask.chunk_faces": 2048}))
    _same_outputs(single, out)
    record = json.loads((out / "run.json").read_text())
    assert record["geometry"]["centred"] is True and READ in record["cluster"]["stages"]


def test_the_faiss_graph_is_the_same_on_the_cluster(cluster, db20k: Path, tmp_path: Path) -> None:
    """faiss IVF's scores come from BLAS too: rescored exactly, its graph does not depend on who searched."""
    config = _config(db20k, tmp_path / "out", **{"knn.method": "faiss-ivf", "seed": 1,
                                                 "dask.address": cluster.scheduler_address,
                                                 "dask.chunk_faces": 8192})
    database = load_database(config.input)
    space = embedding_space(database, HostFaces(database.unit))
    plan = plan_fit(config, database, space)
    alone = shared_graph(config, space, plan, no_progress)
    with open_cluster(config.dask) as session:
        session.check(face_source(config.input, database), first_and_last(database))
        held = ClusterFaces(session, database.unit, session.source, database.input_rows, database.ids)
        space_there = embedding_space(database, held)
        plan_there = plan_fit(config, database, space_there)
        there = shared_graph(config, space_there, plan_there, no_progress)
    np.testing.assert_array_equal(plan.fitted, plan_there.fitted)
    assert alone.method == there.method == "faiss-ivf"
    np.testing.assert_array_equal(there.indices, alone.indices)
    np.testing.assert_array_equal(there.distances, alone.distances)


def test_a_worker_killed_mid_run_still_ends_whole(cluster, single: RunResult, db20k: Path, tmp_path: Path) -> None:
    """SIGKILL one worker while the kNN or placement tasks run: its nanny restarts it, Dask reruns the lost
    tasks (and the chunk reads they need) elsewhere, and the run ends complete and correct, or with one clean
    error and nothing written."""
    from distributed import Client

    out = tmp_path / "out"
    config = _config(db20k, out, **{"dask.address": cluster.scheduler_address, "dask.chunk_faces": 1024})
    outcome: dict[str, Any] = {}

    def go() -> None:
        try:
            outcome["result"] = run(config)
        except ClusterError as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=go)
    killed = False
    with Client(cluster.scheduler_address, set_as_default=False) as watcher:
        pids = watcher.run(os.getpid)
        worker.start()
        while worker.is_alive() and not killed:
            for address, keys in watcher.processing().items():
                if any(str(key).startswith(("chunk_graph", "chunk_place")) for key in keys):
                    os.kill(pids[address], signal.SIGKILL)
                    killed = True
                    break
            time.sleep(0.01)
        worker.join(timeout=600)
        watcher.wait_for_workers(2, timeout=60)  # the nanny brought it back, for the other tests
    assert killed, "the run ended before a graph or placement task could be interrupted"
    print("killed mid-run; outcome:", "error: " + str(outcome["error"]) if "error" in outcome else "complete")
    if "error" in outcome:
        assert "\n" not in str(outcome["error"]) and not out.exists()
    else:
        _same_outputs(single, out)


def test_an_unreachable_scheduler_is_exit_7_and_nothing_written(small_db: Path, tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", "-c", SMOKE, "-i", str(small_db), "-o", str(out), "--dask",
                                 f"tcp://127.0.0.1:{port}", "--set", "dask.timeout=2"])
    assert result.exit_code == 7, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("faceatlas: error:")]
    assert len(errors) == 1 and "cannot reach the scheduler" in errors[0] and "--dask local:2" in errors[0]
    assert "Traceback" not in result.output and not out.exists()


HIDE_FACEATLAS = textwrap.dedent('''
    """A dask worker preload that makes faceatlas (the package ``job``) unimportable: a worker without it."""
    import sys


    class _NoFaceatlas:
        def find_spec(self, name, path=None, target=None):
            if name == "job" or name.startswith("job."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None


    sys.meta_path.insert(0, _NoFaceatlas())
''')


def test_workers_without_faceatlas_are_exit_7(small_db: Path, tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    preload = tmp_path / "hide_faceatlas.py"
    preload.write_text(HIDE_FACEATLAS)
    out = tmp_path / "out"
    with LocalCluster(n_workers=0, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0",
                      silence_logs=logging.ERROR) as scheduler_only:
        address = scheduler_only.scheduler_address
        worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nworkers", "1",
                                   "--nthreads", "1", "--no-nanny", "--no-dashboard", "--host", "127.0.0.1",
                                   "--preload", str(preload)], cwd=tmp_path, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            with Client(address, set_as_default=False) as client:
                client.wait_for_workers(1, timeout=60)
            result = runner.invoke(app, ["run", "-c", SMOKE, "-i", str(small_db), "-o", str(out), "--dask", address])
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    assert result.exit_code == 7, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("faceatlas: error:")]
    assert len(errors) == 1, result.stderr
    assert "cannot run faceatlas" in errors[0] and "No module named 'job" in errors[0]
    assert f"faceatlas[dask]=={__version__}" in errors[0]
    assert not out.exists()


def test_workers_that_cannot_read_the_input_are_refused(cluster, db20k: Path, tmp_path: Path) -> None:
    config = load_config(None, {"input.path": str(db20k), "dask.address": cluster.scheduler_address})
    database = load_database(config.input)
    source, probe = face_source(config.input, database), first_and_last(database)
    with open_cluster(config.dask) as session:
        elsewhere = replace(source, location=str(tmp_path / "not-there.npy"))
        with pytest.raises(ClusterError, match=re.escape("not-there.npy does not exist there")):
            session.check(elsewhere, probe)
        with pytest.raises(ClusterError, match="bytes there and"):
            session.check(replace(source, size=source.size + 1), probe)
        with pytest.raises(ClusterError, match="rows there and"):
            session.check(replace(source, n_rows=source.n_rows - 1), probe)
        # the same size and the same ids, other faces (the database embedded again): refused too
        records = np.load(db20k, allow_pickle=False)
        records["embedding"][0] = records["embedding"][1]
        stale = tmp_path / "stale.npy"
        np.save(stale, records, allow_pickle=False)
        with pytest.raises(ClusterError, match=re.escape("holds other faces in rows 0..20657")):
            session.check(replace(source, location=str(stale)), probe)
        session.check(source, probe)
        rows = np.arange(100, 200)
        digest = chunk_digest(database.ids[rows], database.unit[rows])
        faces = session.gather("test", session.submit("test", read_faces, source, rows, digest))
        np.testing.assert_array_equal(faces, database.unit[rows])  # the loader's own bits
        with pytest.raises(ClusterError, match="holds other faces"):  # a worker reading another file stops the run
            session.gather("test", session.submit("test", read_faces, replace(source, location=str(stale)),
                                                  np.arange(0, 100), chunk_digest(database.ids[:100],
                                                                                  database.unit[:100])))


def test_the_demo_is_sent_by_the_client(cluster, tmp_path: Path) -> None:
    """The built-in demo lives in the client's memory: its chunks are sent, and the run is the one-process run."""
    alone = run(load_config(Path(SMOKE), {"out": str(tmp_path / "alone")}))
    there = run(load_config(Path(SMOKE), {"out": str(tmp_path / "there"), "dask.address": cluster.scheduler_address,
                                          "dask.chunk_faces": 2048}))
    assert face_source(load_config(None).input, demo_database()) is None
    assert READ in json.loads((there.out_dir / "run.json").read_text())["cluster"]["stages"]
    _same_outputs(alone, there.out_dir)


def test_local_cluster_from_the_command_line(small_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", "-c", SMOKE, "-i", str(small_db), "-o", str(out), "--dask", "local:2"])
    assert result.exit_code == 0, result.output
    info = json.loads((out / "run.json").read_text())["cluster"]
    assert info["address"] == "local:2" and info["kind"] == "local" and info["workers"] == 2
    assert "cluster: local:2 (2 workers)" in result.stderr


def test_without_dask_the_run_imports_no_cluster_code(small_db: Path, tmp_path: Path) -> None:
    code = ("import sys; from pathlib import Path; from job.config import load_config; from job.pipeline import run; "
            f"run(load_config(Path({SMOKE!r}), {{'input.path': {str(small_db)!r}, 'out': {str(tmp_path / 'o')!r}}})); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('distributed', 'dask_cuda') "
            "or m in ('job.cluster.faces', 'job.cluster.tasks')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(("text", "kind", "workers", "address"), [
    ("", "none", 0, ""),
    ("local", "local", 2, ""),
    ("local:3", "local", 3, ""),
    ("tcp://10.0.0.5:8786", "remote", 0, "tcp://10.0.0.5:8786"),
    ("10.0.0.5:8786", "remote", 0, "tcp://10.0.0.5:8786"),
    ("tls://scheduler.internal:8786", "remote", 0, "tls://scheduler.internal:8786"),
])
def test_dask_addresses(text: str, kind: str, workers: int, address: str) -> None:
    parsed = parse_address(text)
    assert (parsed.kind, parsed.n_workers, parsed.address) == (kind, workers, address)


@pytest.mark.parametrize("text", ["local:0", "local:x", "http://host:8786", "host", "tcp://host"])
def test_bad_dask_addresses(text: str) -> None:
    with pytest.raises(UsageError, match="--dask"):
        parse_address(text)
    result = runner.invoke(app, ["run", "--dask", text, "-o", "unused"])
    assert result.exit_code == 2 and "dask.address" in result.stderr


def test_cluster_address_is_shown_without_credentials() -> None:
    assert shown_address("tls://alice:s3cret@scheduler:8786?token=abc") == "tls://scheduler:8786?<redacted>"
    assert shown_address("tcp://10.0.0.5:8786") == "tcp://10.0.0.5:8786"


FAKE_GPU_WORKER = textwrap.dedent('''
    """A dask worker preload for tests: the worker's "GPU" is the FAKE CuPy of tests/fakes (NumPy underneath, it
    runs nothing on a GPU), standing in for a dask-cuda worker on this CPU-only machine."""
    import sys

    sys.path.insert(0, {repo!r})
    from tests.fakes import fake_cupy

    sys.modules["cupy"] = fake_cupy
''')


def test_gpu_workers_compute_the_chunks_with_cupy(fake_gpu, db20k: Path, tmp_path: Path) -> None:
    """FAKE GPU: the client runs on the fake CuPy/cuML/cuVS (``fake_gpu``), and the workers of a real LocalCluster
    on the fake CuPy (a preload), as dask-cuda workers would on real ones: the chunk tasks run there on "device"
    arrays (the fake refuses host arrays in device code), and the answers are the single-process GPU run's."""
    from distributed import LocalCluster

    preload = tmp_path / "fake_gpu_worker.py"
    preload.write_text(FAKE_GPU_WORKER.format(repo=str(Path(__file__).parents[2])))
    alone = run(_config(db20k, tmp_path / "alone", backend="cuml"))
    out = tmp_path / "out"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR, preload=[str(preload)]) as gpus:
        there = run(_config(db20k, out, backend="cuml", **{"dask.address": gpus.scheduler_address,
                                                           "dask.chunk_faces": 8192}))
    record = json.loads((out / "run.json").read_text())
    info = record["cluster"]
    assert info["device"] == "gpu" and info["worker_gpus"] == ["FAKE GPU (not a GPU)"]
    assert {READ, SUMS, DOTS, GRAPH, CANDIDATES, PLACE} <= set(info["stages"])
    assert "chunk_graph_gpu" in info["tasks"] and "chunk_graph" not in info["tasks"]
    assert "each chunk searched on a GPU worker" in record["knn_reason"]
    assert any("on each worker's GPU" in item for item in record["gpu"]["on_gpu"])
    assert there.backend == alone.backend == "cuml"
    mine, theirs = (pd.read_parquet(folder / "projection.parquet") for folder in (out, alone.out_dir))
    for column in ("verdict", "suspect", "suggested_id", "fitted", "held_out", "duplicate_of"):
        np.testing.assert_array_equal(mine[column], theirs[column], err_msg=column)
    np.testing.assert_allclose(mine["outlier_score"], theirs["outlier_score"], rtol=1e-5, atol=1e-4)
    assert (out / "suspects.csv").read_text().splitlines()[0] == (alone.out_dir / "suspects.csv").read_text() \
        .splitlines()[0]
    for key in ("suspect_precision", "suspect_recall", "lookalike_recall"):
        assert getattr(there.metrics, key) == getattr(alone.metrics, key)
    assert abs(there.metrics.same_id_knn - alone.metrics.same_id_knn) < 0.02


def test_a_cpu_worker_is_refused_for_a_gpu_run(fake_gpu, cluster, small_db: Path, tmp_path: Path) -> None:
    """FAKE GPU on the client only: the module cluster's workers have no CuPy, so --backend cuml stops at the
    worker check with exit 7 and the dask-cuda fix."""
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", "-c", SMOKE, "-i", str(small_db), "-o", str(out), "--backend", "cuml",
                                 "--dask", cluster.scheduler_address])
    assert result.exit_code == 7, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("faceatlas: error:")]
    assert len(errors) == 1 and "has no usable GPU" in errors[0] and "dask cuda worker" in errors[0]
    assert not out.exists()


def test_auto_on_a_gpu_client_uses_cpu_workers(fake_gpu, cluster, small_db: Path, tmp_path: Path) -> None:
    """FAKE GPU on the client only, --backend auto: the workers have no GPU, so the chunk tasks run on their CPUs
    (run.json says why) instead of refusing the cluster."""
    result = run(load_config(Path(SMOKE), {"input.path": str(small_db), "out": str(tmp_path / "out"),
                                           "dask.address": cluster.scheduler_address}))
    info = json.loads((tmp_path / "out" / "run.json").read_text())["cluster"]
    assert result.backend == "cuml" and info["device"] == "cpu"
    assert "2 of 2 workers have no usable GPU" in info["device_reason"]
    assert "chunk_graph" in info["tasks"] and "chunk_graph_gpu" not in info["tasks"]


def test_placement_does_not_depend_on_the_chunks() -> None:
    """Faces never interact, each face's random state comes from its own start, and a missing neighbour is
    filled from its own row: any cut into chunks places every face the same (also with -1 in the graph)."""
    from job.reduce.extend import make_kernel, place_chunk

    rng = np.random.default_rng(0)
    fitted = rng.normal(size=(300, 2)).astype(np.float32)
    indices = rng.integers(0, 300, size=(500, 10))
    distances = np.sort(rng.uniform(0.1, 0.6, size=(500, 10)).astype(np.float32), axis=1)
    indices[::7, -3:], distances[::7, -3:] = -1, np.inf  # neighbours an approximate index did not find
    kernel = make_kernel(fitted, 0.0, 1.0, 3.0, 30, seed=0)
    scaled = np.ascontiguousarray(fitted * kernel.scale)
    whole = place_chunk(scaled, indices, distances, kernel, parallel=False)
    cut = np.concatenate([place_chunk(scaled, indices[start:start + 128], distances[start:start + 128], kernel,
                                      parallel=False) for start in range(0, 500, 128)])
    np.testing.assert_array_equal(cut, whole)


def test_a_cluster_left_without_workers_ends_the_run(tmp_path: Path) -> None:
    """Dask would wait forever for a worker to come back; faceatlas waits ``dask.timeout`` seconds, then stops."""
    from distributed import LocalCluster

    with (LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                       dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR) as lonely,
          open_cluster(load_config(None, {"dask.address": lonely.scheduler_address, "dask.timeout": 2}).dask)
          as session):
        future = session.submit("test", time.sleep, 30)
        lonely.scale(0)
        started = time.monotonic()
        with pytest.raises(ClusterError, match="no worker left for 2 s"):
            session.gather("test", future)
        assert time.monotonic() - started < 20


def test_without_dask_installed_dask_is_one_line(small_db: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if `pip install .` without the dask extra
    result = runner.invoke(app, ["run", "-c", SMOKE, "-i", str(small_db), "-o", str(tmp_path / "out"),
                                 "--dask", "local:2"])
    assert result.exit_code == 7 and "pip install 'faceatlas[dask]'" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_database_input_runs_on_the_cluster(cluster, tmp_path: Path) -> None:
    """A SQLite store's faces go to the workers from the client (no worker gets the address): the same outputs,
    keys included, as the single-process run."""
    import sqlite3

    records, _ = make_demo(DemoSpec(n_identities=400, faces_per_identity=5, seed=5))
    db = tmp_path / "faces.db"
    with sqlite3.connect(db) as connection:
        connection.execute("CREATE TABLE faces (face_id INTEGER PRIMARY KEY, person TEXT, vec BLOB)")
        connection.executemany("INSERT INTO faces VALUES (?, ?, ?)",
                               [(row, f"person-{int(i)}", np.asarray(vector, "<f4").tobytes())
                                for row, (i, vector) in enumerate(zip(records["id"], records["embedding"],
                                                                      strict=True))])
    connection.close()
    settings = {"input.path": f"sqlite:///{db}",
                "input.query": "SELECT face_id AS face, person AS identity, vec AS embedding FROM faces"}
    single = run(load_config(Path(SMOKE), {**settings, "out": str(tmp_path / "single")}))
    clustered = run(load_config(Path(SMOKE), {**settings, "out": str(tmp_path / "cluster"),
                                              "dask.address": cluster.scheduler_address, "dask.chunk_faces": 1024}))
    pd.testing.assert_frame_equal(pd.read_parquet(clustered.out_dir / "projection.parquet"),
                                  pd.read_parquet(single.out_dir / "projection.parquet"))
    assert (clustered.out_dir / "suspects.csv").read_bytes() == (single.out_dir / "suspects.csv").read_bytes()
    record = json.loads((clustered.out_dir / "run.json").read_text())
    assert record["cluster"]["workers"] == 2 and record["input"]["store"]["kind"] == "sqlite"
