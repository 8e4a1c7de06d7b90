"""One faceatlas run: load -> reduce -> measure -> render -> write. Never prints; reports through ``log``."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from job import __version__
from job.backends import resolve
from job.config import Config
from job.database import FaceDatabase, load_database
from job.errors import UsageError
from job.formats import file_sha256
from job.knn import normalise
from job.metrics import same_id_knn, trustworthiness
from job.outputs import (
    PROJECTION_FILE,
    RUN_FILE,
    TRUTH_FILE,
    check_output_folder,
    staged_outputs,
    write_json,
    write_projection,
)
from job.remote import redact
from job.render import render_maps

Log = Callable[[str], None]
_VERSIONED = ("numpy", "umap-learn", "pynndescent", "numba", "datashader", "pyarrow", "scikit-learn", "cuml-cu12",
              "cupy-cuda12x", "typer", "pydantic")
N_DEFAULT_HIGHLIGHT = 5


@dataclass(frozen=True)
class RunResult:
    """What a run produced: the output folder, each file by role, and the facts written to run.json."""

    out_dir: Path
    files: dict[str, Path]
    backend: str
    backend_reason: str
    metrics: dict[str, float]
    timings: dict[str, float]


def run(config: Config, log: Log = lambda message: None) -> RunResult:
    """Run the whole job for ``config`` and write its outputs to ``config.out`` (all of them, or none)."""
    timings: dict[str, float] = {}
    out_dir = Path(config.out)
    check_output_folder(out_dir)
    backend, reason = resolve(config.backend)
    log(f"backend: {backend.name} ({reason})")
    with _timed(timings, "load"):
        database = load_database(config.input, config.max_memory_bytes, log)
        highlight = _check_run(config, database)
        unit = normalise(database.embeddings)
    log(f"loaded {database.source}: {database.n_faces:,} faces, {len(database.identities):,} identities, "
        f"dim {database.dim}")
    _warn_about(database, log)
    # dense codes 0..n_identities-1: umap-learn reads label -1 as "unlabelled", cuML wants int32
    labels = np.unique(database.ids, return_inverse=True)[1].astype(np.int32) if config.umap.supervised else None
    with _timed(timings, "umap"):
        reduction = backend.fit_transform(unit, labels, config.umap, config.knn, config.seed)
    log(f"UMAP done in {timings['umap']:.1f} s")
    with _timed(timings, "metrics"):
        metrics = {
            "trustworthiness": trustworthiness(unit, reduction.coords, config.metrics.trustworthiness_k,
                                               config.metrics.trustworthiness_sample, config.seed),
            "same_id_knn": same_id_knn(reduction.coords, database.ids, config.metrics.same_id_k),
        }
    with staged_outputs(out_dir) as staging:
        with _timed(timings, "render"):
            labels_text = {int(i): database.label(i) for i in highlight}
            files = render_maps(reduction.coords, database.ids, highlight, labels_text, config.render, staging,
                                Path(database.source).name)
        with _timed(timings, "write"):
            files["projection"] = write_projection(staging / PROJECTION_FILE, database.ids, reduction.coords,
                                                   database.input_rows)
            if database.truth is not None:
                files["truth"] = write_json(staging / TRUTH_FILE, database.truth.to_json())
        record = _run_record(config, database, backend.name, reason, reduction.knn_method, highlight, metrics,
                             timings, files)
        files["run"] = write_json(staging / RUN_FILE, record)  # last: its presence marks a complete run
    final = {role: out_dir / path.name for role, path in files.items()}
    return RunResult(out_dir, final, backend.name, reason, metrics, timings)


def _warn_about(database: FaceDatabase, log: Log) -> None:
    dropped = sum(database.dropped.values())
    if dropped:
        log(f"warning: --drop-invalid left out {dropped:,} faces ({database.dropped['nan_or_inf']:,} with "
            f"NaN/inf, {database.dropped['zero']:,} all-zero); run.json lists the counts")
    duplicates = database.duplicates.get("faces", 0)
    if duplicates:
        log(f"warning: {duplicates:,} faces repeat an earlier face's embedding exactly "
            f"({database.duplicates['other_id']:,} of them under another id); they are kept")


def _check_run(config: Config, database: FaceDatabase) -> list[int]:
    """Checks that need both the config and the data; returns the identities to highlight."""
    source = database.source
    if database.n_faces < config.umap.n_neighbors + 1:
        raise UsageError(f"{source}: {database.n_faces} faces, but umap.n_neighbors={config.umap.n_neighbors} "
                         f"needs at least {config.umap.n_neighbors + 1}; lower it with --set umap.n_neighbors=N")
    identities = database.identities
    if config.umap.supervised and len(identities) < 2:
        raise UsageError(f"{source}: --supervised needs at least two identities, found one; use --unsupervised")
    if not config.render.highlight:
        return [int(i) for i in identities[:N_DEFAULT_HIGHLIGHT]]
    missing = sorted(set(config.render.highlight) - set(identities.tolist()))
    if missing:
        raise UsageError(f"--highlight: ids {', '.join(map(str, missing[:10]))} are not in {source} "
                         f"(its ids run {identities[0]}..{identities[-1]}); pick ids that exist")
    return list(dict.fromkeys(config.render.highlight))


def _run_record(
    config: Config,
    database: FaceDatabase,
    backend: str,
    reason: str,
    knn_method: str,
    highlight: list[int],
    metrics: dict[str, float],
    timings: dict[str, float],
    files: dict[str, Path],
) -> dict[str, Any]:
    return {
        "tool": "faceatlas",
        "version": __version__,
        "backend": backend,
        "backend_reason": reason,
        "knn_method": knn_method,
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
        },
        "highlight": highlight,
        "timings": {stage: round(seconds, 3) for stage, seconds in timings.items()},
        "metrics": {name: round(value, 4) for name, value in metrics.items()},
        "files": {role: path.name for role, path in files.items()},
        "file_sha256": {path.name: file_sha256(path) for path in files.values()},
        "versions": _versions(),
    }


def _recorded_config(config: Config) -> dict[str, Any]:
    """The resolved config, with any secret in the input URL left out (run.json travels)."""
    recorded = config.model_dump(mode="json")
    recorded["input"]["path"] = redact(config.input.path)
    return recorded


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = time.perf_counter() - start

