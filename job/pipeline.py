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
from job.analysis import (
    against_truth,
    candidate_codes,
    held_out_quality,
    map_inverse_quality,
    model_from_fit,
    pick_holdout,
    supervised_disagreement,
)
from job.arrays import FloatArray, IdArray
from job.backends import resolve
from job.clusters import agreement, cluster_map
from job.config import Config
from job.database import FaceDatabase, load_database
from job.errors import UsageError
from job.formats import file_sha256
from job.identities import IdentityTable, identity_table
from job.knn import Neighbors, neighbours, normalise
from job.lookalikes import Lookalikes, find_lookalikes
from job.mapmodel import MODEL_FILE, MapModel, save_model
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
from job.placement import place
from job.remote import redact
from job.render import render_analysis_maps, render_maps
from job.reports import LOOKALIKES_FILE, SUSPECTS_FILE, write_lookalikes, write_suspects
from job.suspects import SuspectScores, score_faces

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
    metrics: dict[str, Any]
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
    ids, settings = database.ids, config.analysis
    with _timed(timings, "knn"):
        held = pick_holdout(ids, settings.holdout, settings.holdout_max, config.seed,
                            min_fitted=config.umap.n_neighbors + 1)
        fitted, held_rows = np.flatnonzero(~held), np.flatnonzero(held)
        graph = neighbours(unit[fitted], max(config.umap.n_neighbors, settings.neighbours + 1),
                           _exact_max(config, len(fitted)), config.seed)
    with _timed(timings, "suspects"):
        table = identity_table(unit, ids)
        nearby = candidate_codes(table, unit, fitted, graph, held_rows, settings.neighbours)
        scores = score_faces(unit, table, nearby, settings.suspect_margin,
                             exact_max=_exact_max(config, len(table.ids)))
    log(f"{int(scores.suspect.sum()):,} suspected misfiled faces; fitting UMAP on {len(fitted):,} faces "
        f"({len(held_rows):,} held out to measure transform and invert)")
    # dense codes 0..n_identities-1: umap-learn reads label -1 as "unlabelled", cuML wants int32
    labels = table.codes[fitted].astype(np.int32) if config.umap.supervised else None
    with _timed(timings, "umap"):
        reduction = backend.fit_transform(unit[fitted], labels, config.umap, config.knn, config.seed, graph)
    log(f"UMAP done in {timings['umap']:.1f} s")
    _check_coords(reduction.coords, config)
    with _timed(timings, "analysis"):
        analysis = _analyse(config, database, unit, table, scores, fitted, held_rows, graph, reduction.coords,
                            backend.name)
    with _timed(timings, "metrics"):
        metrics: dict[str, Any] = {
            # of the map as written: fitted faces and the held-out ones placed on it
            "trustworthiness": trustworthiness(unit, analysis.coords, config.metrics.trustworthiness_k,
                                               config.metrics.trustworthiness_sample, config.seed),
            "same_id_knn": same_id_knn(analysis.coords, ids, config.metrics.same_id_k),
            **analysis.metrics,
        }
    coords = analysis.coords
    with staged_outputs(out_dir) as staging:
        with _timed(timings, "render"):
            labels_text = {int(i): database.label(i) for i in highlight}
            title = Path(database.source).name
            files = render_maps(coords, ids, highlight, labels_text, config.render, staging, title)
            files.update(render_analysis_maps(coords, scores.suspect, analysis.targets, analysis.filed,
                                              analysis.clusters, config.render, staging, title))
        with _timed(timings, "write"):
            files["projection"] = write_projection(staging / PROJECTION_FILE, ids, coords, database.input_rows,
                                                   analysis.columns)
            files["suspects"] = write_suspects(staging / SUSPECTS_FILE, database.input_rows, ids, scores,
                                               database.names)
            files["lookalikes"] = write_lookalikes(staging / LOOKALIKES_FILE, analysis.lookalikes, database.names)
            files["model"] = save_model(analysis.model, staging / MODEL_FILE)
            if database.truth is not None:
                files["truth"] = write_json(staging / TRUTH_FILE, database.truth.to_json())
        record = _run_record(config, database, backend.name, reason, reduction.knn_method, highlight, metrics,
                             timings, files)
        files["run"] = write_json(staging / RUN_FILE, record)  # last: its presence marks a complete run
    final = {role: out_dir / path.name for role, path in files.items()}
    return RunResult(out_dir, final, backend.name, reason, metrics, timings)


@dataclass(frozen=True)
class _Analysis:
    coords: FloatArray
    columns: dict[str, np.ndarray]
    targets: FloatArray
    filed: FloatArray
    clusters: IdArray
    lookalikes: Lookalikes
    model: MapModel
    metrics: dict[str, Any]


def _analyse(config: Config, database: FaceDatabase, unit: FloatArray, table: IdentityTable, scores: SuspectScores,
             fitted: IdArray, held_rows: IdArray, graph: Neighbors, fit_coords: FloatArray,
             backend: str) -> _Analysis:
    """Everything decided after UMAP: the map model, held-out placement and quality, clusters, look-alikes."""
    settings, ids = config.analysis, database.ids
    model, clean = model_from_fit(unit, table, scores, fitted, fit_coords)
    coords = np.empty((database.n_faces, fit_coords.shape[1]), dtype=np.float32)
    coords[fitted] = fit_coords
    if len(held_rows):
        coords[held_rows] = place(model, unit[held_rows]).coords
    judged = held_rows[~scores.suspect[held_rows]]  # a held-out face filed under the wrong id proves nothing
    quality = held_out_quality(model, unit[judged], ids[judged], coords[judged])
    quality["inverse"].update(map_inverse_quality(model, clean, unit, fitted, settings.holdout_max, config.seed))
    clusters = cluster_map(coords, settings.cluster_min_size, use_gpu=backend == "cuml",
                           sample=settings.cluster_sample, seed=config.seed)
    pairs = find_lookalikes(identity_table(unit, ids, ~scores.suspect), settings.lookalike_k,
                            settings.lookalike_top, settings.lookalike_threshold,
                            _exact_max(config, len(table.ids)))
    suggested = np.searchsorted(model.identity, np.maximum(scores.suggested_id[scores.suspect], 0))
    columns: dict[str, np.ndarray] = {
        "outlier_score": scores.score,
        "suspect": scores.suspect,
        "suggested_id": scores.suggested_id,
        "cluster": clusters,
        "held_out": np.isin(np.arange(database.n_faces), held_rows),
    }
    if config.umap.supervised:
        columns["supervised_disagreement"] = supervised_disagreement(
            fit_coords, table.codes, fitted, graph, database.n_faces, settings.disagreement_k)
    metrics: dict[str, Any] = {
        "suspects": int(scores.suspect.sum()),
        "clusters": agreement(clusters, ids),
        "held_out": quality["n"],
        "inverse": quality["inverse"],
        "transform": quality["transform"],
    }
    if config.umap.supervised:
        metrics["supervised_disagreement"] = int(columns["supervised_disagreement"].sum())
    if database.truth is not None:
        truth = against_truth(database.truth, database.input_rows, scores, pairs)
        metrics.update(suspect_precision=truth.suspect_precision, suspect_recall=truth.suspect_recall,
                       lookalike_recall=truth.lookalike_recall)
    filed = model.anchor[table.codes[scores.suspect]]
    return _Analysis(coords, columns, model.anchor[suggested], filed, clusters, pairs, model, metrics)


def _check_coords(coords: FloatArray, config: Config) -> None:
    bad = int((~np.isfinite(coords).all(axis=1)).sum())
    if bad:
        hint = " (umap-learn gives NaN at target_weight 1.0)" if config.umap.supervised else ""
        raise UsageError(f"UMAP returned NaN/inf positions for {bad:,} of {len(coords):,} faces{hint}; lower "
                         "umap.target_weight, or change umap.n_neighbors / umap.min_dist")


def _exact_max(config: Config, n_rows: int) -> int:
    """The row count up to which kNN is exact, as ``knn.method`` asks."""
    return {"exact": n_rows, "approximate": 0}.get(config.knn.method, config.knn.exact_max_faces)


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

