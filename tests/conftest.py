"""Shared fixtures: small planted demo databases on disk, and one fitted run reused by many tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from job.config import Config, load_config
from job.io.demo import DemoSpec, make_demo, truth_json
from job.pipeline import RunResult, run

SMALL = DemoSpec(n_identities=200, faces_per_identity=5, seed=1)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-gpu", action="store_true", help="run tests marked gpu (needs cuML and a CUDA GPU)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-gpu"):
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (CuPy; cuML where the test fits with it); run with --run-gpu")
    for item in items:
        if item.get_closest_marker("gpu") is not None:  # the marker, not a keyword: tests/gpu/ is a folder
            item.add_marker(skip)


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory):
    """A real PostgreSQL 16 server with the real pgvector extension (the pgserver package's binaries), on a unix
    socket in a temporary folder, started once for the session and stopped at its end. Yields its address
    (``postgresql://postgres:@/postgres?host=FOLDER``) and the server (``.psql(sql)``, ``.pgdata``)."""
    import pgserver

    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    try:
        server.psql("CREATE EXTENSION IF NOT EXISTS vector;")
        yield server
    finally:
        server.cleanup()


def truth_of(db: Path) -> Path:
    """The ``NAME.truth.json`` written with a demo database ``NAME.npy`` (read only when given as ``--truth``)."""
    return db.with_name(db.name.removesuffix(".npy") + ".truth.json")


@pytest.fixture(scope="session")
def small_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ~1,000-face demo database in the seed's actor.npy format, with ``small.truth.json`` beside it (as
    ``faceatlas demo-db`` writes); runs given it as ``input.truth`` (:func:`truth_of`) report precision/recall
    against the planted answers."""
    records, truth = make_demo(SMALL)
    path = tmp_path_factory.mktemp("db") / "small.npy"
    np.save(path, records, allow_pickle=False)
    truth_of(path).write_text(truth_json(truth), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def smoke_config(small_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Config:
    """The smoke config on the small database, scored against its planted answers."""
    out = tmp_path_factory.mktemp("run")
    return load_config(Path(__file__).parents[1] / "configs" / "smoke.toml",
                       {"input.path": str(small_db), "input.truth": str(truth_of(small_db)), "out": str(out)})


@pytest.fixture(scope="session")
def smoke_run(smoke_config: Config) -> RunResult:
    """One fitted run on the small database (numba compiles once per session)."""
    return run(smoke_config)


def copy_of_run(run_result: RunResult, tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A copy of ``run_result``'s folder a module may edit (the session's run stays as it was written)."""
    import shutil

    copy = tmp_path_factory.mktemp(name) / "run"
    shutil.copytree(run_result.out_dir, copy)
    return copy


@pytest.fixture(params=["numpy", "fake-cupy", pytest.param("cupy", marks=pytest.mark.gpu)])
def xp(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """The array namespace a GPU-capable function runs in: NumPy, the FAKE CuPy of ``tests/fakes`` (CPU,
    strict about host arrays), or real CuPy on a GPU (``--run-gpu``)."""
    import sys

    if request.param == "numpy":
        return np
    if request.param == "fake-cupy":
        from tests.fakes import fake_cupy

        monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
        return fake_cupy
    import cupy

    return cupy


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch):
    """A pretend GPU machine: the FAKE CuPy (CPU arrays that act like device arrays, a fake CUDA runtime) and the
    FAKE cuML and cuVS of ``tests/fakes/fake_rapids.py`` (recorded signatures, real CPU libraries behind)."""
    import job.gpu
    from tests.fakes import fake_cupy, fake_rapids

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(fake_cupy, "GPU", dict(fake_cupy.GPU))
    monkeypatch.setattr(job.gpu, "_MEMORY_SET_UP", {})  # each test a fresh process, as far as memory set-up goes
    monkeypatch.setattr(fake_rapids, "STATE", dict(fake_rapids.STATE))
    fake_rapids.install(monkeypatch)
    return fake_rapids
