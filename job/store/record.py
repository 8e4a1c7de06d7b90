"""``run.json``'s writer: :func:`run_record` builds the run's :class:`~job.store.runrecord.RunRecord` (what a run
did, with what, how well, and the SHA-256 of every file it wrote); :meth:`RunRecord.write` writes it."""

from __future__ import annotations

import platform
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from job import __version__
from job.config import Config
from job.io.database import FaceDatabase
from job.io.formats import file_sha256
from job.io.remote import redact
from job.io.stores import address, is_store
from job.store.keys import key_columns
from job.store.runrecord import SCHEMA_VERSION, Cluster, Fit, GeometryFacts, Gpu, Metrics, RunRecord

_VERSIONED = ("numpy", "umap-learn", "pynndescent", "numba", "faiss-cpu", "datashader", "pyarrow", "scikit-learn",
              "cuml-cu12", "cuml-cu13", "cuvs-cu12", "cuvs-cu13", "cupy-cuda12x", "cupy-cuda13x", "rmm-cu12",
              "rmm-cu13", "cuml", "cuvs", "cupy", "rmm", "typer", "pydantic")  # the last four: conda's names

def run_record(  # noqa: PLR0913 (one keyword per run.json section the run decides)
        *, config: Config, database: FaceDatabase, backend: str, backend_reason: str, knn_method: str,
        knn_reason: str, fit: Fit | Mapping[str, Any], highlight: list[int], metrics: Metrics | Mapping[str, Any],
        timings: Mapping[str, float], files: Mapping[str, Path], gpu: Gpu | Mapping[str, Any] | None = None,
        cluster: Cluster | Mapping[str, Any] | None = None, geometry: GeometryFacts | Mapping[str, Any] | None = None
) -> RunRecord:
    """The run's record; ``files`` (role -> path) are hashed here, so every file but run.json must be written
    already. ``fit``: how the map was made (the placement facts); ``metrics``: floats are rounded to 4 places;
    ``gpu``: the GPU a GPU backend ran on and what ran where (None on CPU); ``cluster``: the Dask cluster the run
    used and the stages that ran on it (None without ``--dask``); ``geometry``: what was measured of the
    database's similarity geometry and decided from it (:meth:`job.analysis.geometry.Geometry.record`)."""
    measured = None if geometry is None else GeometryFacts.model_validate(_plain(_dict(geometry)))
    return RunRecord.of({
        "schema_version": SCHEMA_VERSION,
        "tool": "faceatlas",
        "version": __version__,
        "backend": backend,
        "backend_reason": backend_reason,
        "knn_method": knn_method,
        "knn_reason": knn_reason,
        "fit": _plain(_dict(fit)),
        "gpu": None if gpu is None else _plain(_dict(gpu)),
        "cluster": None if cluster is None else _plain(_dict(cluster)),
        "config": _recorded_config(config),
        "input": {
            "path": database.source,
            "n_faces": database.n_faces,
            "n_identities": len(database.identities),
            "dim": database.dim,
            "dtype": database.dtype,
            "sha256": database.sha256,
            "dropped": _plain(database.dropped),
            "duplicates": _plain(database.duplicates),
            "unit_length": database.unit_length,  # the embeddings came unit-length: their norms say nothing
            # their lengths vary and track how recognisable a face is, so projection's quality comes from them
            "quality_known": database.quality_known if measured is None else measured.quality_from == "norms",
            **({} if database.store is None else {"store": _plain(database.store)}),
            **({} if database.keys is None else {"keys": key_columns(database)}),
        },
        "geometry": measured,
        "highlight": [int(i) for i in highlight],
        "timings": {stage: round(float(seconds), 3) for stage, seconds in timings.items()},
        "metrics": _rounded(_plain(_dict(metrics))),
        "files": {role: path.name for role, path in files.items()},
        "file_sha256": {path.name: file_sha256(path) for path in files.values()},
        "versions": _versions(),
    })


def _dict(part: Any) -> Any:
    """A section given as a model or a mapping, as a mapping (a model: the keys it was given)."""
    return part.model_dump(exclude_unset=True) if isinstance(part, BaseModel) else dict(part)


def _plain(value: Any) -> Any:
    """``value`` with NumPy scalars as Python numbers and tuples as lists (what JSON holds)."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value.item() if isinstance(value, np.generic) else value


def _rounded(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    return round(value, 4) if isinstance(value, float) else value


def _recorded_config(config: Config) -> dict[str, Any]:
    """The resolved config, with any secret in the input URL or the Dask address left out (run.json travels)."""
    from job.address import shown_address

    recorded = config.model_dump(mode="json")
    recorded["input"]["path"] = address(config.input.path) if is_store(config.input.path) else redact(config.input.path)
    recorded["dask"]["address"] = shown_address(config.dask.address)
    return recorded


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found
