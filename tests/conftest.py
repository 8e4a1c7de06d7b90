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
    skip = pytest.mark.skip(reason="needs a CUDA GPU and cuML; run with --run-gpu")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def small_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ~1,000-face demo database in the seed's actor.npy format, with ``small.truth.json`` beside it (as
    ``faceatlas demo-db`` writes), so runs on it report precision/recall against the planted answers."""
    records, truth = make_demo(SMALL)
    path = tmp_path_factory.mktemp("db") / "small.npy"
    np.save(path, records, allow_pickle=False)
    path.with_name("small.truth.json").write_text(truth_json(truth), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def smoke_config(small_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Config:
    out = tmp_path_factory.mktemp("run")
    return load_config(Path(__file__).parents[1] / "configs" / "smoke.toml",
                       {"input.path": str(small_db), "out": str(out)})


@pytest.fixture(scope="session")
def smoke_run(smoke_config: Config) -> RunResult:
    """One fitted run on the small database (numba compiles once per session)."""
    return run(smoke_config)
