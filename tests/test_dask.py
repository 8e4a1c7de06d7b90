"""faceatlas on a real Dask cluster: a LocalCluster of 2 worker processes on loopback, real tasks, real faults.

The claim under test: a distributed run writes the same contract with the same answers as a single-process run
(same fit sample and seed: the same bits, since every per-face computation is row by row and the kNN graph is
rescored exactly), survives a worker killed mid-run, and refuses a cluster it cannot use with exit 7 and one line.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from job import __version__
from job.cli import app
from job.cluster.address import parse_address, shown_address
from job.cluster.faces import CANDIDATES, DENSITY, DOTS, GRAPH, PLACE, READ, SUMS
from job.cluster.session import open_cluster
from job.cluster.source import FaceSource, face_source, ids_digest, read_faces
from job.config import Config, DaskConfig, load_config
from job.errors import ClusterError, UsageError
from job.io.database import demo_database, load_database
from job.io.demo import DemoSpec, make_demo, truth_json
from job.pipeline import RunResult, plan_fit, run, shared_graph
from job.progress import no_progress

SMOKE = str(Path(__file__).parents[1] / "configs" / "smoke.toml")
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
    """A 20k-face planted demo database (4,000 identities), with its truth file beside it."""
    records, truth = make_demo(DemoSpec(n_identities=4000, faces_per_identity=5, seed=2))
    path = tmp_path_factory.mktemp("db20k") / "db20k.npy"
    np.save(path, records, allow_pickle=False)
    path.with_name("db20k.truth.json").write_text(truth_json(truth), encoding="utf-8")
    return path


def _config(db: Path, out: Path, **overrides: Any) -> Config:
    # a sample is fitted (sample_above 10k), so 16k faces are placed on the fitted map: every stage runs
    return load_config(Path(SMOKE), {"input.path": str(db), "out": str(out), "umap.sample_above": 10_000,
                                     **overrides})


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
    assert result.metrics["suspect_precision"] >= 0.95 and result.metrics["suspect_recall"] >= 0.95
    _same_outputs(single, out)
    record = json.loads((out / "run.json").read_text())
    assert json.loads((single.out_dir / "run.json").read_text())["cluster"] is None
    info = record["cluster"]
    assert info["address"] == cluster.scheduler_address and info["kind"] == "remote"
    assert info["workers"] == 2 and info["threads"] == 2 and info["chunk_faces"] == 4096
    assert info["worker_versions"]["faceatlas"] == __version__
    assert set(info["stages"]) == {READ, SUMS, DOTS, GRAPH, CANDIDATES, PLACE, DENSITY}
    assert record["fit"]["placed"] > 10_000  # the placement ran, on the workers


def test_the_faiss_graph_is_the_same_on_the_cluster(cluster, db20k: Path, tmp_path: Path) -> None:
    """faiss IVF's scores come from BLAS too: rescored exactly, its graph does not depend on who searched."""
    config = _config(db20k, tmp_path / "out", **{"knn.method": "faiss-ivf", "seed": 1,
                                                 "dask.address": cluster.scheduler_address,
                                                 "dask.chunk_faces": 8192})
    database = load_database(config.input)
    plan, space = plan_fit(config, database)
    alone = shared_graph(config, space, plan, no_progress)
    with open_cluster(config.dask) as session:
        session.check(face_source(config.input, database))
        plan_there, space_there = plan_fit(config, database, np, session)
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
    source = face_source(config.input, database)
    with open_cluster(config.dask) as session:
        elsewhere = FaceSource("file", str(tmp_path / "not-there.npy"), "id", "embedding", source.sha256, 10)
        with pytest.raises(ClusterError, match="not-there.npy does not exist there"):
            session.check(elsewhere)
        other_size = FaceSource("file", source.location, "id", "embedding", source.sha256, source.size + 1)
        with pytest.raises(ClusterError, match="bytes there and"):
            session.check(other_size)
        session.check(source)
        rows = np.arange(100, 200)
        faces = session.gather("test", session.submit("test", read_faces, source, rows, ids_digest(database.ids[rows])))
        np.testing.assert_array_equal(faces, database.unit[rows])  # the loader's own bits
        with pytest.raises(ClusterError, match="holds other ids"):  # a worker reading another file stops the run
            session.gather("test", session.submit("test", read_faces, source, rows, ids_digest(database.ids[rows] + 1)))


def test_workers_regenerate_the_demo(cluster) -> None:
    demo = demo_database()
    source = FaceSource("demo", "standard", "id", "embedding", demo.sha256)
    with open_cluster(DaskConfig(address=cluster.scheduler_address)) as session:
        session.check(source)
        rows = np.arange(len(demo.ids))
        np.testing.assert_array_equal(session.gather("t", session.submit("t", read_faces, source, rows,
                                                                       ids_digest(demo.ids))), demo.unit)


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


@pytest.mark.parametrize("text, kind, workers, address", [
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
