"""``run.json``: what a run did, with what, how well, and the SHA-256 of every file it wrote."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from job import __version__
from job.config import Config
from job.io.database import FaceDatabase
from job.io.formats import file_sha256
from job.io.remote import redact

_VERSIONED = ("numpy", "umap-learn", "pynndescent", "numba", "faiss-cpu", "datashader", "pyarrow", "scikit-learn",
              "cuml-cu12", "cuml-cu13", "cuvs-cu12", "cuvs-cu13", "cupy-cuda12x", "cupy-cuda13x", "rmm-cu12",
              "rmm-cu13", "cuml", "cuvs", "cupy", "rmm", "typer", "pydantic")  # the last four: conda's names


def run_record(config: Config, database: FaceDatabase, backend: str, reason: str, knn_method: str, knn_reason: str,
               fit: dict[str, Any], highlight: list[int], metrics: dict[str, Any], timings: dict[str, float],
               files: dict[str, Path], gpu: dict[str, Any] | None = None, cluster: dict[str, Any] | None = None,
               geometry: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run.json payload; ``files`` are hashed here, so every file but run.json must be written already.
    ``gpu``: the GPU a GPU backend ran on and what ran where (None on CPU); ``cluster``: the Dask cluster the
    run used and the stages that ran on it (None without ``--dask``); ``geometry``: what was measured of the
    database's similarity geometry and decided from it (:meth:`job.analysis.geometry.Geometry.record`)."""
    return {
        "tool": "faceatlas",
        "version": __version__,
        "backend": backend,
        "backend_reason": reason,
        "knn_method": knn_method,
        "knn_reason": knn_reason,
        "fit": fit,
        "gpu": gpu,
        "cluster": cluster,
        "config": _recorded_config(config),
        "input": {
            "path": database.source,
            "n_faces": database.n_faces,
            "n_identities": int(len(database.identities)),
            "dim": database.dim,
            "dtype": database.dtype,
            "sha256": database.sha256,
            "dropped": database.dropped,
            "duplicates": database.duplicates,
            "unit_length": database.unit_length,  # the embeddings came unit-length: their norms say nothing
            # their lengths vary and track how recognisable a face is, so projection's quality comes from them
            "quality_known": database.quality_known if geometry is None else geometry["quality_from"] == "norms",
        },
        "geometry": geometry,
        "highlight": highlight,
        "timings": {stage: round(seconds, 3) for stage, seconds in timings.items()},
        "metrics": _rounded(metrics),
        "files": {role: path.name for role, path in files.items()},
        "file_sha256": {path.name: file_sha256(path) for path in files.values()},
        "versions": _versions(),
    }


def _rounded(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    return round(value, 4) if isinstance(value, float) else value


def _recorded_config(config: Config) -> dict[str, Any]:
    """The resolved config, with any secret in the input URL or the Dask address left out (run.json travels)."""
    from job.cluster.address import shown_address

    recorded = config.model_dump(mode="json")
    recorded["input"]["path"] = redact(config.input.path)
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
