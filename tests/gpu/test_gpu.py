"""The GPU path without a GPU: what faceatlas passes to cuML and cuVS is checked against their recorded
sources, the probe is checked under each failure, and the whole job runs ``--backend cuml`` on the FAKE
CuPy/cuML/cuVS of ``tests/fakes`` (recorded signatures and validation, real CPU libraries behind). The
same job on a real GPU is the ``gpu``-marked test at the end (``pytest --run-gpu``)."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from job.cli import app
from job.config import UmapConfig, load_config
from job.errors import BackendUnavailable, GpuOutOfMemoryError, UsageError
from job.pipeline import run
from job.reduce.backends import probe_gpu, resolve
from job.reduce.gpu_umap import MIN_CUML, cuml_params, installed_cuml
from job.reduce.params import fit_params
from tests.conftest import truth_of

FIXTURES = Path(__file__).parents[1] / "fixtures"
CUML = json.loads((FIXTURES / "cuml-26.10.json").read_text())
CUVS = json.loads((FIXTURES / "cuvs-26.10.json").read_text())
SMOKE = Path(__file__).parents[2] / "configs" / "smoke.toml"
runner = CliRunner()
OOM = MemoryError("std::bad_alloc: out_of_memory: CUDA error at: rmm/mr/device/cuda_memory_resource.hpp")


def test_the_fixtures_come_from_the_pinned_sources() -> None:
    assert CUML["version"] == "26.10.0" and CUML["sources"]["umap"].endswith("umap.pyx")
    assert CUVS["version"].startswith("26.10")
    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert '"cuml-cu12>=26.6' in pyproject and '"cuvs-cu12>=26.6' in pyproject and MIN_CUML == (26, 2)
    compat = json.loads((FIXTURES / "cuml-26.02-compat.json").read_text())
    assert compat["cuml"] == "26.2.0" and all(call["works"] for call in compat["checked"].values())


@pytest.mark.parametrize("supervised", [False, True])
@pytest.mark.parametrize("components", [2, 3])
@pytest.mark.parametrize("init", ["pca", "spectral", "random"])
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_cuml_arguments_are_in_cumls_recorded_signature(supervised: bool, components: int, init: str,
                                                        metric: str) -> None:
    recorded = CUML["UMAP"]
    for n_fitted, sampled in ((5000, False), (200_000, True), (40, False)):
        params = fit_params(UmapConfig(n_components=components, init=init, metric=metric, supervised=supervised),
                            sampled, n_fitted)
        kwargs = cuml_params(params, 3, n_fitted)
        assert set(kwargs) <= set(recorded["init"])  # no stale or invented keyword
        assert kwargs["build_algo"] in recorded["build_algo"] and kwargs["init"] in recorded["init_values"]
        assert kwargs["metric"] in recorded["metrics"] and kwargs["output_type"] in recorded["output_type_values"]
        assert kwargs["target_metric"] in recorded["target_metric_values"]
        assert kwargs["n_components"] == components and kwargs["n_neighbors"] == params.n_neighbors
    assert "knn_graph" in recorded["fit_transform"] and recorded["knn_graph"]["point_first_required"]


def test_the_fakes_take_exactly_the_recorded_parameters() -> None:
    from tests.fakes import fake_rapids

    def names(entries: list[dict[str, str]]) -> list[str]:
        return [next(iter(entry)) for entry in entries]

    assert list(inspect.signature(fake_rapids.brute_force_build).parameters) == names(CUVS["brute_force"]["build"])
    assert list(inspect.signature(fake_rapids.brute_force_search).parameters) == names(CUVS["brute_force"]["search"])
    assert list(inspect.signature(fake_rapids.all_neighbors_build).parameters) == \
        names(CUVS["all_neighbors"]["build"])
    assert list(inspect.signature(fake_rapids.UMAP.fit_transform).parameters)[1:] == CUML["UMAP"]["fit_transform"]


def test_probe_under_each_failure(monkeypatch: pytest.MonkeyPatch, fake_gpu) -> None:
    from tests.fakes import fake_cupy

    probe = BACKENDS_PROBE()
    assert probe.available and "FAKE GPU" in probe.reason and "26.10.0" in probe.reason
    info = probe_gpu()
    assert (info.compute_capability, info.driver_cuda, info.runtime_cuda) == ("9.0", "13.0", "12.8")
    assert "140.00 GiB" in info.describe() and "compute capability 9.0" in info.describe()

    monkeypatch.setitem(fake_cupy.GPU, "major", 6)
    assert "compute capability 6.0, below the 7.0" in BACKENDS_PROBE().reason
    monkeypatch.setitem(fake_cupy.GPU, "major", 9)

    fake_gpu.install(monkeypatch, version="25.12.0")
    assert "cuML 25.12.0 is older than 26.02" in BACKENDS_PROBE().reason
    fake_gpu.install(monkeypatch, version="26.2.0")  # Colab's: runs, and says its layout differs
    probe = BACKENDS_PROBE()
    assert probe.available and "maps differ a little from 26.06+" in probe.reason
    fake_gpu.install(monkeypatch)

    monkeypatch.setitem(fake_cupy.GPU, "raises", RuntimeError("cudaErrorInsufficientDriver"))
    assert "CUDA GPU probe failed (RuntimeError: cudaErrorInsufficientDriver)" in BACKENDS_PROBE().reason
    monkeypatch.setitem(fake_cupy.GPU, "raises", None)

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert "CUDA_VISIBLE_DEVICES is empty" in BACKENDS_PROBE().reason
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")

    import sys

    for name in ("cuvs", "cuvs.common", "cuvs.neighbors"):
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr("importlib.util.find_spec", _find_spec_without("cuvs"))
    assert "cuVS is not installed (cuML does not bring it): exact kNN by CuPy" in BACKENDS_PROBE().reason
    monkeypatch.setattr("importlib.util.find_spec", _find_spec_without("cuml"))
    assert "RAPIDS cuML is not installed" in BACKENDS_PROBE().reason


def BACKENDS_PROBE():  # noqa: N802 - reads as the thing it probes
    from job.reduce.backends import CumlBackend

    return CumlBackend.probe()


def _find_spec_without(missing: str):
    import importlib.util

    real = importlib.util.find_spec

    def find_spec(name: str, *args, **kwargs):
        return None if name == missing or name.startswith(missing + ".") else real(name, *args, **kwargs)

    return find_spec


def test_without_a_gpu_cuml_fails_with_its_exit_code_and_auto_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(BackendUnavailable, match=r"faceatlas\[gpu\].*--backend umap-learn"):
        resolve("cuml")
    backend, reason = resolve("auto")
    assert backend.name == "umap-learn" and "cuml: CUDA_VISIBLE_DEVICES is empty" in reason
    result = runner.invoke(app, ["run", "--backend", "cuml", "--out", "/tmp/never-written"])
    assert result.exit_code == 4 and len(result.output.strip().splitlines()) == 1


def test_backends_command_shows_the_gpu(fake_gpu) -> None:
    result = runner.invoke(app, ["backends"])
    assert result.exit_code == 0, result.output
    assert "gpu  FAKE GPU (not a GPU), 140.00 GiB (100.00 GiB free), compute capability 9.0, driver CUDA 13.0" in \
        result.output and "auto -> cuml" in result.output
    payload = json.loads(runner.invoke(app, ["backends", "--json"]).stdout)
    assert payload["gpu"]["compute_capability"] == "9.0" and payload["gpu"]["total_bytes"] == 140 << 30


def _config(small_db: Path, out: Path, **overrides):
    return load_config(SMOKE, {"input.path": str(small_db), "input.truth": str(truth_of(small_db)), "out": str(out),
                               **overrides})


@pytest.fixture(scope="module")
def cpu_run(small_db: Path, tmp_path_factory: pytest.TempPathFactory):
    return run(_config(small_db, tmp_path_factory.mktemp("cpu"), backend="umap-learn"))


def test_the_whole_job_runs_on_the_fake_gpu_with_one_graph(fake_gpu, small_db: Path, tmp_path: Path,
                                                           cpu_run) -> None:
    result = run(_config(small_db, tmp_path / "gpu", backend="cuml"))
    record = json.loads((tmp_path / "gpu" / "run.json").read_text())
    assert record["backend"] == "cuml" and record["knn_method"] == "cuvs-brute-force"
    assert record["fit"]["engine"].startswith("cuML 26.10.0")
    assert record["gpu"]["device"] == "FAKE GPU (not a GPU)" and "verdicts" in record["gpu"]["on_gpu"]
    # what ran where is read from the run: the passes over every face where the faces were (the GPU), the
    # fit and HDBSCAN on the backend, placement and the maps on the host
    on_gpu, on_cpu = record["gpu"]["on_gpu"], record["gpu"]["on_cpu"]
    assert {"identity table", "kNN graph", "verdicts", "UMAP fit (cuml)", "clusters (HDBSCAN, cuml)",
            "look-alikes and map-model cohesion", "trustworthiness"} <= set(on_gpu)
    assert {"loading", "fit sample", "placement of the other faces (numba)", "map model", "held-out placement",
            "held-out and inverse checks", "same-id share (k-d tree)", "maps", "tables"} <= set(on_cpu)
    assert len(on_gpu) + len(on_cpu) == len(set(on_gpu) | set(on_cpu))  # each piece of work named once
    calls = {call["call"]: call for call in fake_gpu.CALLS}
    fit = calls["UMAP.fit_transform"]
    # the run's one graph went to cuML, trimmed to n_neighbors, each face first in its row
    assert fit["graph_columns"] == fit["params"]["n_neighbors"] == 10
    assert (fit["indices"][:, 0] == np.arange(fit["n"])).all()
    assert calls["brute_force.build"]["metric"] == "cosine"
    assert calls["HDBSCAN.fit_predict"]["params"]["build_algo"] == "brute_force"
    # the same answers as the CPU run (the same exact graph and verdict arithmetic), and a good map
    for key in ("suspect_precision", "suspect_recall", "lookalike_recall"):
        assert getattr(result.metrics, key) == pytest.approx(getattr(cpu_run.metrics, key))
    assert result.metrics.suspects == cpu_run.metrics.suspects
    # cuML's own tests accept trustworthiness within 0.05-0.1 of umap-learn's (spectral start here, PCA on CPU)
    assert result.metrics.trustworthiness > cpu_run.metrics.trustworthiness - 0.1
    assert result.metrics.same_id_knn > cpu_run.metrics.same_id_knn - 0.05


def test_a_gpu_fitted_map_is_read_on_cpu(fake_gpu, small_db: Path, tmp_path: Path, monkeypatch) -> None:
    run(_config(small_db, tmp_path / "gpu", backend="cuml"))
    monkeypatch.undo()  # the fakes out: a CPU-only install reads the map model
    import pyarrow.parquet as pq

    first = pq.read_table(tmp_path / "gpu" / "projection.parquet").slice(0, 1).to_pylist()[0]
    result = runner.invoke(app, ["nearest", str(tmp_path / "gpu"), "--x", str(first["x"]), "--y", str(first["y"]),
                                 "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["id"] == first["id"]
    placed = runner.invoke(app, ["transform", str(tmp_path / "gpu"), str(small_db), "--out",
                                 str(tmp_path / "t.parquet")])
    assert placed.exit_code == 0, placed.output


def test_nn_descent_batches_with_the_data_on_the_host(fake_gpu, small_db: Path, tmp_path: Path) -> None:
    run(_config(small_db, tmp_path / "gpu", backend="cuml", **{"knn.method": "approximate", "gpu.knn_n_clusters": 3}))
    build = next(call for call in fake_gpu.CALLS if call["call"] == "all_neighbors.build")
    assert build["n_clusters"] == 3 and not build["on_device"] and build["metric"] == "sqeuclidean"
    record = json.loads((tmp_path / "gpu" / "run.json").read_text())
    assert record["knn_method"] == "cuvs-nn-descent" and "3 batches" in record["knn_reason"]
    assert "not reproducible even with --seed" in record["knn_reason"]  # smoke.toml sets seed = 0


def test_gpu_out_of_memory_is_its_own_error_and_auto_falls_back(fake_gpu, small_db: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(fake_gpu.STATE, "fail_fit", OOM)
    with pytest.raises(GpuOutOfMemoryError, match=r"gpu\.memory=managed.*--backend umap-learn"):
        run(_config(small_db, tmp_path / "a", backend="cuml"))
    assert not (tmp_path / "a").exists()  # nothing half-written
    result = runner.invoke(app, ["run", "--config", str(SMOKE), "--input", str(small_db), "--out",
                                 str(tmp_path / "b"), "--backend", "cuml"])
    errors = [line for line in result.output.splitlines() if line.startswith("faceatlas: error:")]
    assert result.exit_code == 6 and len(errors) == 1 and "GPU ran out of memory during the UMAP fit" in errors[0]
    fallen = run(_config(small_db, tmp_path / "c", backend="auto"))
    record = json.loads((tmp_path / "c" / "run.json").read_text())
    assert fallen.backend == "umap-learn" and "fell back to umap-learn on CPU" in record["backend_reason"]
    assert record["gpu"] is None and record["knn_method"] == "exact"


def test_free_gpu_memory_is_checked_before_the_work(fake_gpu, small_db: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fakes import fake_cupy

    monkeypatch.setitem(fake_cupy.GPU, "free", 1 << 20)
    with pytest.raises(GpuOutOfMemoryError, match=r"needs about .* of GPU memory but FAKE GPU .* has 1\.0 MiB free"):
        run(_config(small_db, tmp_path / "a", backend="cuml"))
    assert [call["call"] for call in fake_gpu.CALLS] == ["rmm.reinitialize"]  # refused before any GPU work
    run(_config(small_db, tmp_path / "b", backend="cuml", **{"gpu.memory": "managed"}))  # managed may exceed it
    assert any(call["call"] == "UMAP.fit_transform" for call in fake_gpu.CALLS)


def test_free_memory_is_read_before_the_pool_takes_half(fake_gpu, small_db: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from job.footprint import gpu_run_bytes
    from job.io.database import load_database
    from tests.fakes import fake_cupy

    config = _config(small_db, tmp_path / "out", backend="cuml")
    database = load_database(config.input)
    need = gpu_run_bytes(config, database.n_faces, len(database.identities), database.dim, 4)
    monkeypatch.setitem(fake_cupy.GPU, "free", need * 3 // 2)  # fits; half of it (after the pool) would not
    assert run(config).backend == "cuml"
    assert fake_gpu.CALLS[0] == {"call": "rmm.reinitialize", "pool_allocator": True, "managed_memory": False}


@pytest.mark.gpu
def test_the_whole_job_on_a_real_gpu(small_db: Path, tmp_path: Path) -> None:
    assert installed_cuml() is not None
    result = run(_config(small_db, tmp_path / "gpu", backend="cuml"))
    assert result.backend == "cuml" and result.metrics.trustworthiness > 0.9


def test_without_cuvs_the_exact_graph_is_cupy_matrix_products(fake_gpu, small_db: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch, cpu_run) -> None:
    import sys

    for name in [name for name in sys.modules if name == "cuvs" or name.startswith("cuvs.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr("importlib.util.find_spec", _find_spec_without("cuvs"))
    result = run(_config(small_db, tmp_path / "gpu", backend="cuml"))
    record = json.loads((tmp_path / "gpu" / "run.json").read_text())
    assert record["knn_method"] == "cupy-exact" and result.metrics.suspects == cpu_run.metrics.suspects
    run(_config(small_db, tmp_path / "nnd", backend="cuml", **{"knn.method": "approximate"}))
    record = json.loads((tmp_path / "nnd" / "run.json").read_text())
    assert record["knn_method"] == "cupy-exact" and "cuVS (NN-descent) is not installed" in record["knn_reason"]
    with pytest.raises(UsageError, match="'cuvs-nn-descent' needs cuVS, which is not installed"):
        run(_config(small_db, tmp_path / "named", backend="cuml", **{"knn.method": "cuvs-nn-descent"}))


def test_auto_falls_back_when_the_gpu_is_too_small(fake_gpu, small_db: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fakes import fake_cupy

    monkeypatch.setitem(fake_cupy.GPU, "free", 1 << 20)
    result = run(_config(small_db, tmp_path / "out", backend="auto"))
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert result.backend == "umap-learn" and "of GPU memory but FAKE GPU" in record["backend_reason"]
    assert "fell back to umap-learn on CPU" in record["backend_reason"]


def test_the_gpu_check_script_runs_on_the_fake() -> None:
    # NumPy computes both sides under the fake: this checks the script, its comparisons and its report
    import subprocess
    import sys

    script = Path(__file__).parents[2] / "bench" / "gpu_check.py"
    done = subprocess.run([sys.executable, str(script), "--sizes", "1500", "--fake"], capture_output=True, text=True,
                          check=True, cwd=Path(__file__).parents[2])
    assert "answers agree" in done.stdout and "verdict codes agree on 1.000000" in done.stdout
