"""One faceatlas run: load -> measure the geometry -> plan the fit -> kNN graph -> verdicts -> UMAP -> place ->
analyse -> render -> write -> the atlas page (report.html, :mod:`job.report`).

Each stage is a function that takes frozen values and returns one; :func:`run` only chains them, times them
and writes the outputs. Never prints: it reports through ``log`` and ``progress``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from job import stop
from job.analysis.clusters import agreement, cluster_map
from job.analysis.candidates import find_candidates
from job.analysis.geometry import Geometry, centre_in_place, measure_geometry
from job.analysis.identities import IdentityTable, identity_table
from job.analysis.lookalikes import Lookalikes, find_lookalikes
from job.analysis.metrics import same_id_knn, trustworthiness
from job.analysis.quality import (
    against_truth,
    held_out_quality,
    map_inverse_quality,
    model_from_map,
    supervised_disagreement,
)
from job.analysis.similar import similar_identities
from job.analysis.suspects import LOW_QUALITY, VERDICTS, SuspectScores, judge_faces, leave_one_out
from job.arrays import BoolArray, FloatArray, IdArray, take_rows
from job.cluster.session import ClusterSession, open_cluster
from job.cluster.source import face_source, first_and_last
from job.config import Config, UmapConfig
from job.errors import GpuOutOfMemoryError, UsageError
from job.footprint import gpu_run_bytes, run_bytes
from job.gpu import GpuInfo, gpu_memory_errors, probe_gpu, require_gpu_memory, use_memory
from job.io.database import FaceDatabase, load_database
from job.knn.graph import FaceGraph
from job.knn.index import face_graph
from job.maps.mapmodel import MODEL_FILE, MapModel, save_model
from job.maps.placement import place
from job.progress import ProgressFactory, no_progress
from job.reduce.backends import Backend, UmapLearnBackend, resolve
from job.reduce.extend import make_kernel, place_rest
from job.reduce.params import fit_params
from job.reduce.sample import fit_sample, pick_holdout, sample_size
from job.render.maps import Frame, MapVerdicts, draw_all_maps, require_render_memory
from job.report.page import write_page
from job.report.rundata import NAMES_FILE, write_names
from job.store.outputs import PROJECTION_FILE, RUN_FILE, TRUTH_FILE, check_output_folder, staged_outputs, write_json, \
    write_projection
from job.store.record import run_record
from job.store.reports import LOOKALIKES_FILE, LOW_QUALITY_FILE, SUSPECTS_FILE, write_lookalikes, \
    write_low_quality, write_suspects
from job.xp import fields_to_host, namespace, on_device, to_host, to_namespace

Log = Callable[[str], None]
N_DEFAULT_HIGHLIGHT = 5
SIMILAR_IDENTITIES = 5  # identities with the centroids nearest a face's own are suspect candidates too


@dataclass(frozen=True)
class RunResult:
    """What a run produced: the output folder, each file by role, and the facts written to run.json."""

    out_dir: Path
    files: dict[str, Path]
    backend: str
    backend_reason: str
    metrics: dict[str, Any]
    timings: dict[str, float]


@dataclass(frozen=True)
class FitPlan:
    """Who is fitted, who is placed, who is held out: sorted face rows each; ``table`` groups all faces."""

    table: IdentityTable
    fitted: IdArray
    placed: IdArray
    held: IdArray


@dataclass(frozen=True)
class Space:
    """The embedding space where the run computes: the unit faces (n_faces, dim), each face's input row and
    quality (n_faces,), and the identity table, as NumPy arrays on CPU (the database's own) or CuPy arrays on
    a GPU backend (copied there once)."""

    unit: Any
    rows: Any
    quality: Any
    table: IdentityTable


@dataclass(frozen=True)
class Verdicts:
    """The embedding-space answers: per-face verdicts, each identity's look-alike candidates, for each
    re-enrolled face the face it repeats (n_faces,) int64 (-1: none), and each face's quality (n_faces,)
    float32, from the norms or the neighbours as the geometry decided."""

    scores: SuspectScores
    lookalike: IdArray
    original: IdArray
    quality: FloatArray


@dataclass(frozen=True)
class MapResult:
    """The whole map: ``coords`` (n_faces, n_components) for every face, and how it was made."""

    coords: FloatArray
    knn_method: str
    placement: dict[str, Any]


@dataclass(frozen=True)
class Analysis:
    """Everything decided after the map: columns for projection.parquet, the model, metrics, map overlays."""

    columns: dict[str, np.ndarray]
    model: MapModel
    lookalikes: Lookalikes
    clusters: IdArray
    metrics: dict[str, Any]


def run(config: Config, log: Log = lambda message: None, progress: ProgressFactory = no_progress) -> RunResult:
    """Run the whole job for ``config`` and write its outputs to ``config.out`` (all of them, or none)."""
    timings: dict[str, float] = {}
    out_dir = Path(config.out)
    check_output_folder(out_dir)
    require_render_memory(config.render, config.max_memory_bytes)  # before the work, not after it
    backend, reason = resolve(config.backend)
    gpu = prepare_gpu(config) if backend.uses_gpu else None
    log(f"backend: {backend.name} ({reason})")
    with open_cluster(config.dask, log) as cluster:
        with _timed(timings, "load"):
            database = load_database(config.input, config.max_memory_bytes, log,
                                     working=lambda *size: run_bytes(config, *size))
            highlight = _check_run(config, database)
        log(f"loaded {database.source}: {database.n_faces:,} faces, {len(database.identities):,} identities, "
            f"dim {database.dim}")
        _warn_about(database, log)
        with _timed(timings, "geometry"):
            geometry = working_space(config, database)
        log(f"geometry: {geometry.reason}; face quality from the {geometry.quality_from}")
        if cluster is not None:
            cluster.device = backend.uses_gpu  # a GPU run's chunk tasks run on the workers' GPUs (dask-cuda)
            with _timed(timings, "cluster check"):
                cluster.check(face_source(config.input, database, geometry.centre), first_and_last(database),
                              gpu_required=config.backend == "cuml")
        try:
            if gpu is not None:
                require_gpu_run(config, database, gpu)
            work = compute(config, backend, database, geometry, timings, log, progress, gpu, cluster)
        except GpuOutOfMemoryError as exc:
            if config.backend != "auto":
                raise
            backend, reason, gpu = UmapLearnBackend(), f"{reason}; fell back to umap-learn on CPU: {exc}", None
            log(f"backend: {backend.name} ({reason})")
            if cluster is not None:
                cluster.device = False
            work = compute(config, backend, database, geometry, timings, log, progress, cluster=cluster)
        plan, graph, verdicts, mapped, analysis, metrics = work
        with staged_outputs(out_dir, log, checked=True) as staging:
            with _timed(timings, "render"):
                files = render(config, database, plan, highlight, verdicts, mapped, analysis, staging, cluster)
            with _timed(timings, "write"):
                files.update(write_tables(database, verdicts, mapped, analysis, staging))
            make_record = partial(run_record, config, database, backend.name, reason, mapped.knn_method,
                                  graph.reason, mapped.placement, highlight, metrics, timings,
                                  gpu=None if gpu is None else gpu_record(gpu, cluster),
                                  cluster=None if cluster is None else cluster.record(), geometry=geometry.record())
            with _timed(timings, "report"):  # the page shows the record (its files are hashed after)
                files["report"] = write_page(staging, make_record(files={}), files, highlight, analysis.model)
            record = make_record(files=files)
            files["run"] = write_json(staging / RUN_FILE, record)  # last: its presence marks a complete run
    final = {role: out_dir / path.name for role, path in files.items()}
    return RunResult(out_dir, final, backend.name, reason, metrics, timings)


def working_space(config: Config, database: FaceDatabase) -> Geometry:
    """Measure the database's geometry and move its faces into the space every later stage computes in
    (``database.unit`` centred in place when the geometry says so, :mod:`job.analysis.geometry`; once per
    loaded database)."""
    geometry = measure_geometry(database.unit, database.ids, database.log_norms, centring=config.analysis.centre,
                                seed=config.seed)
    centre_in_place(database.unit, geometry)
    return geometry


def compute(config: Config, backend: Backend, database: FaceDatabase, geometry: Geometry, timings: dict[str, float],
            log: Log, progress: ProgressFactory, gpu: GpuRun | None = None, cluster: ClusterSession | None = None
            ) -> tuple[FitPlan, FaceGraph, Verdicts, MapResult, Analysis, dict[str, Any]]:
    """Every stage between loading and writing, where ``backend`` computes (the GPU: faces, graph and
    analysis as CuPy arrays; the results come back to the host once, at each stage's end). With a
    ``cluster``, the passes over every face run on its workers, chunk by chunk (:mod:`job.cluster`), and the
    client keeps the rest (the fit, the per-identity and the whole-map work)."""
    with _timed(timings, "sample"), gpu_memory_errors("the identity table"):
        plan, space = plan_fit(config, database, backend.namespace() if cluster is None else np, cluster)
    log(_describe_plan(plan, database.n_faces))
    with _timed(timings, "knn"), gpu_memory_errors("the kNN graph"):
        graph = shared_graph(config, space, plan, progress, None if gpu is None else gpu.info.free_bytes)
    log(f"kNN graph: {graph.method} ({graph.reason})")
    with _timed(timings, "suspects"), gpu_memory_errors("the verdicts"):
        verdicts = judge(config, space, plan, graph, geometry)
    log(f"{int(verdicts.scores.suspect.sum()):,} suspected misfiled faces; fitting UMAP on {len(plan.fitted):,} faces")
    with _timed(timings, "umap"), gpu_memory_errors("the UMAP fit"):
        fitted, params, engine = fit_map(config, backend, plan, graph, space)
    log(f"UMAP done in {timings['umap']:.1f} s")
    graph = fields_to_host(graph)  # placement, the supervised check and the writers are host code
    with _timed(timings, "place"):
        mapped = place_faces(config, plan, graph, fitted, params, engine, progress, cluster,
                             temperature=geometry.temperature)
    with _timed(timings, "analysis"), gpu_memory_errors("the analysis"):
        analysis = analyse(config, database, space, plan, verdicts, graph, mapped, backend.name, geometry)
    with _timed(timings, "metrics"), gpu_memory_errors("the map quality"):
        metrics = measure(config, database, space, mapped, analysis)
    return plan, graph, verdicts, mapped, analysis, metrics


@dataclass(frozen=True)
class GpuRun:
    """The GPU a GPU-backend run computes on, as probed before its memory pool took any (``info``: its free
    memory is what the run can have), and the memory set-up (``memory``)."""

    info: GpuInfo
    memory: str


def prepare_gpu(config: Config) -> GpuRun:
    """Probe the GPU, then set up its memory pool (an RMM pool reserves half the free memory at once, so the
    free memory is read first)."""
    info = probe_gpu()
    return GpuRun(info, use_memory(config.gpu.memory))


def gpu_record(gpu: GpuRun, cluster: ClusterSession | None = None) -> dict[str, Any]:
    """run.json's ``gpu``: the device, its memory set-up, and what ran where (with a ``cluster``, the passes
    over every face ran on its workers' GPUs, and the client's GPU fitted the map and clustered it)."""
    info = gpu.info
    on_gpu = ["identity table", "kNN graph", "verdicts", "look-alikes", "UMAP fit (cuML)", "HDBSCAN (cuML)",
              "map-model cohesion", "trustworthiness"]
    on_cpu = ["loading", "geometry (sampled pairs, centring)", "fit sample", "placement of the other faces (numba)",
              "map model and held-out check", "same-id share (k-d tree)", "maps", "tables"]
    if cluster is not None:
        on_gpu = ["UMAP fit (cuML)", "HDBSCAN (cuML)", "on each worker's GPU: identity sums, per-face fits, best "
                  "candidates, kNN queries (CuPy; run.json cluster)"]
        on_cpu = [*on_cpu[:3], "placement of the other faces (numba, on the workers)", *on_cpu[4:],
                  "the verdicts' per-identity model", "look-alikes", "trustworthiness"]
    return {"device": info.device, "count": info.count, "total_bytes": info.total_bytes,
            "free_bytes": info.free_bytes, "compute_capability": info.compute_capability,
            "driver_cuda": info.driver_cuda, "runtime_cuda": info.runtime_cuda, "memory": gpu.memory,
            "on_gpu": on_gpu, "on_cpu": on_cpu}


def require_gpu_run(config: Config, database: FaceDatabase, gpu: GpuRun) -> None:
    """Refuse (:class:`GpuOutOfMemoryError`) a GPU run that would not fit in the GPU's free memory."""
    need = gpu_run_bytes(config, database.n_faces, len(database.identities), database.dim,
                         database.unit.dtype.itemsize)
    require_gpu_memory(need, gpu.info, config.gpu.memory, f"a GPU run on {database.n_faces:,} faces")


def plan_fit(config: Config, database: FaceDatabase, xp: Any = np, cluster: ClusterSession | None = None
             ) -> tuple[FitPlan, Space]:
    """Group faces by identity, hold some out, and pick the faces UMAP is fitted on (the rest are placed); the
    faces and their table in the namespace ``xp`` (numpy, or cupy for a GPU backend), or held by ``cluster``."""
    space = embedding_space(database, xp, cluster)
    own = to_host(leave_one_out(space.unit, space.table)[0])
    table = fields_to_host(space.table)
    held = pick_holdout(database.ids, config.analysis.holdout, config.analysis.holdout_max, config.seed,
                        min_fitted=config.umap.n_neighbors + 1)
    fitted = fit_sample(table.codes, own, ~held, sample_size(config.umap, database.n_faces, len(table.ids)),
                        config.seed)
    on_map = ~held
    on_map[fitted] = False
    return FitPlan(table, fitted, np.flatnonzero(on_map), np.flatnonzero(held)), space


def embedding_space(database: FaceDatabase, xp: Any = np, cluster: ClusterSession | None = None) -> Space:
    """The faces, rows, qualities and identity table in ``xp`` (one copy each to the GPU for CuPy); with a
    ``cluster``, the faces are read by its workers, chunk by chunk, and the passes over them run there."""
    if cluster is not None:
        from job.cluster.faces import ClusterFaces

        unit = ClusterFaces(cluster, database.unit, cluster.source, database.input_rows, database.ids)
        return Space(unit, database.input_rows, database.quality, identity_table(unit, database.ids))
    unit = to_namespace(xp, database.unit)
    return Space(unit, to_namespace(xp, database.input_rows), to_namespace(xp, database.quality),
                 identity_table(unit, database.ids))


def shared_graph(config: Config, space: Space, plan: FitPlan, progress: ProgressFactory,
                 gpu_free: int | None = None) -> FaceGraph:
    """The run's one kNN graph: every face's nearest fitted faces (the fitted faces find themselves first), on
    the GPU for a GPU backend (``gpu_free``: its free memory before the run)."""
    k = max(config.umap.n_neighbors, config.analysis.neighbours + 1)
    return face_graph(space.unit, plan.fitted, k, config.knn.method, config.knn.exact_max_faces, config.seed,
                      progress, gpu=config.gpu, gpu_free=gpu_free)


def judge(config: Config, space: Space, plan: FitPlan, graph: FaceGraph, geometry: Geometry) -> Verdicts:
    """Per-face verdicts from the graph's neighbours and similar identities (re-enrolled photos found in the
    graph and left out of the identities first), read in the run's ``geometry``; look-alike candidates.
    Computed where ``space`` is; the verdicts come back to the host."""
    settings, table = config.analysis, space.table
    candidates = find_candidates(graph, table.codes, table.centroids, settings.neighbours, SIMILAR_IDENTITIES,
                                 settings.lookalike_k, config.knn.method, config.knn.exact_max_faces, config.seed)
    quality = to_namespace(namespace(table.codes), geometry.face_quality(space.quality, graph))
    scores, original = judge_faces(space.unit, table, graph, candidates.nearby, candidates.similar, space.rows,
                                   quality=quality,
                                   calibration=geometry.calibration(settings.suspect_margin, settings.misfiled_score))
    return Verdicts(fields_to_host(scores), to_host(candidates.lookalike), to_host(original), to_host(quality))


def fit_map(config: Config, backend: Backend, plan: FitPlan, graph: FaceGraph, space: Space
            ) -> tuple[FloatArray, UmapConfig, str]:
    """UMAP coordinates of the fitted faces, (len(plan.fitted), n_components) float32, the settings used and
    what ran the fit. The backend fits on the run's graph, where the graph is (the GPU for cuML)."""
    params = fit_params(config.umap, sampled=len(plan.placed) > 0, n_fitted=len(plan.fitted))
    # dense codes 0..n_identities-1: umap-learn reads label -1 as "unlabelled", cuML wants int32
    labels = plan.table.codes[plan.fitted].astype(np.int32) if params.supervised else None
    xp = namespace(space.unit)
    fitted = (space.unit[xp.asarray(plan.fitted)].astype(xp.float32) if on_device(xp)
              else take_rows(space.unit, plan.fitted, np.float32))
    reduction = backend.fit_transform(fitted, labels, params, config.knn, config.seed,
                                      graph.among_reference(params.n_neighbors))
    _check_coords(reduction.coords, config)
    return reduction.coords, params, reduction.engine


def place_faces(config: Config, plan: FitPlan, graph: FaceGraph, fitted: FloatArray, params: UmapConfig,
                engine: str, progress: ProgressFactory, cluster: ClusterSession | None = None, *,
                temperature: float) -> MapResult:
    """The whole map: fitted faces where UMAP put them (``engine``: what fitted them), every other face placed on
    that map (on the ``cluster``'s workers, chunk by chunk, when there is one), starting from its neighbours
    weighted with the geometry's ``temperature``."""
    n_faces = len(plan.table.codes)
    coords = np.full((n_faces, fitted.shape[1]), np.nan, dtype=np.float32)
    coords[plan.fitted] = fitted
    placement: dict[str, Any] = {"fitted": int(len(plan.fitted)), "placed": int(len(plan.placed)),
                                 "held_out": int(len(plan.held)), "init": params.init, "min_dist": params.min_dist,
                                 "repulsion_strength": params.repulsion_strength, "n_epochs": params.n_epochs,
                                 "engine": engine}
    if len(plan.placed):
        kernel = make_kernel(fitted, params.min_dist, params.spread, params.repulsion_strength,
                             params.place_epochs, config.seed, temperature=temperature)
        k = min(params.n_neighbors, graph.k)
        indices, distances = graph.indices[plan.placed, :k], graph.distances[plan.placed, :k]
        if cluster is None:
            coords[plan.placed] = place_rest(fitted, indices, distances, kernel, parallel=config.seed is None,
                                             progress=progress)
        else:
            from job.cluster.faces import place_on_cluster

            coords[plan.placed] = place_on_cluster(cluster, fitted, indices, distances, kernel, progress)
        placement.update(method="knn-weighted start + umap-learn layout against the fixed fitted map",
                         place_neighbors=k, place_epochs=params.place_epochs, kernel_scale=round(kernel.scale, 6))
    return MapResult(coords, graph.method, placement)


def analyse(config: Config, database: FaceDatabase, space: Space, plan: FitPlan, verdicts: Verdicts,
            graph: FaceGraph, mapped: MapResult, backend: str, geometry: Geometry) -> Analysis:
    """Everything decided after the map, in the run's ``geometry``: the map model, held-out placement and
    quality, clusters, look-alikes (those where ``space`` is)."""
    settings, ids, scores = config.analysis, database.ids, verdicts.scores
    left_out = scores.left_out
    # one derived identity table at a time (each is n_identities x dim): the look-alikes' first, then freed
    xp = namespace(space.unit)
    pairs = fields_to_host(find_lookalikes(space.table.without(space.unit, xp.asarray(np.flatnonzero(left_out))),
                                           to_namespace(xp, verdicts.lookalike), settings.lookalike_top,
                                           settings.lookalike_threshold, baseline=geometry.working.impostor_median))
    on_map = np.sort(np.concatenate([plan.fitted, plan.placed]))
    held = _mask(plan.held, len(ids))
    # the table without misfiled and held-out faces, and its cohesion (n_faces x dim), where the faces are
    clean_x = space.table.without(space.unit, xp.asarray(np.flatnonzero(left_out | held)))
    model = model_from_map(space.unit, clean_x, scores, on_map, mapped.coords[on_map], geometry=geometry)
    clean = fields_to_host(clean_x)
    coords = mapped.coords
    if len(plan.held):
        coords[plan.held] = place(model, database.unit[plan.held]).coords
    # a held-out face filed under the wrong id proves nothing, nor does a re-enrolment of a fitted photo
    judged = plan.held[~left_out[plan.held]]
    quality = held_out_quality(model, database.unit[judged], ids[judged], coords[judged])
    quality["inverse"].update(map_inverse_quality(model, clean, database.unit, on_map, settings.holdout_max,
                                                  config.seed))
    clusters = cluster_map(coords, settings.cluster_min_size, use_gpu=backend == "cuml",
                           sample=settings.cluster_sample, seed=config.seed)
    fitted = _mask(plan.fitted, len(ids))
    columns: dict[str, np.ndarray] = {"outlier_score": scores.score, "suspect": scores.suspect,
                                      "suggested_id": scores.suggested_id, "cluster": clusters,
                                      "held_out": held}
    metrics: dict[str, Any] = {"suspects": int(scores.suspect.sum()), "clusters": agreement(clusters, ids),
                               "held_out": quality["n"], "inverse": quality["inverse"],
                               "transform": quality["transform"]}
    if config.umap.supervised:
        columns["supervised_disagreement"] = supervised_disagreement(coords, plan.table.codes, graph,
                                                                     settings.disagreement_k)
        metrics["supervised_disagreement"] = int(columns["supervised_disagreement"].sum())
    columns["fitted"] = fitted  # added in 0.4: the face is in the UMAP fit (else placed on the fitted map)
    # added in 0.5: the verdict of every face, its quality and fit, and the row a re-enrolment repeats
    columns.update(verdict=scores.verdict_names(), quality=verdicts.quality, fit=scores.own,
                   duplicate_of=np.where(verdicts.original >= 0, database.input_rows[np.maximum(verdicts.original, 0)],
                                         -1).astype(np.int64))
    metrics["verdicts"] = {name: int((scores.verdict == code).sum()) for code, name in enumerate(VERDICTS)}
    # added in 0.6: each face's most similar identities in 512-D (from the graph), shown by the atlas page
    columns.update(similar_identities(graph, plan.table.codes, plan.table.ids).columns())
    if database.truth is not None:
        truth = against_truth(database.truth, database.input_rows, scores, pairs)
        metrics.update(suspect_precision=truth.suspect_precision, suspect_recall=truth.suspect_recall,
                       lookalike_recall=truth.lookalike_recall, twin_recall=truth.twin_recall,
                       low_quality_precision=truth.low_quality_precision,
                       low_quality_recall=truth.low_quality_recall)
    return Analysis(columns, model, pairs, clusters, metrics)


def measure(config: Config, database: FaceDatabase, space: Space, mapped: MapResult, analysis: Analysis
            ) -> dict[str, Any]:
    """Map quality of the map as written (fitted, placed and held-out faces alike), then the analysis metrics."""
    settings = config.metrics
    return {"trustworthiness": trustworthiness(space.unit, mapped.coords, settings.trustworthiness_k,
                                               settings.trustworthiness_sample, config.seed),
            "same_id_knn": same_id_knn(mapped.coords, database.ids, settings.same_id_k),
            **analysis.metrics}


def render(config: Config, database: FaceDatabase, plan: FitPlan, highlight: list[int], verdicts: Verdicts,
           mapped: MapResult, analysis: Analysis, staging: Path, cluster: ClusterSession | None = None
           ) -> dict[str, Path]:
    """The five PNG maps (the faces per pixel aggregated by datashader on the ``cluster``'s workers, if any)."""
    scores, model = verdicts.scores, analysis.model
    require_render_memory(config.render, config.max_memory_bytes)
    labels_text = {int(i): database.label(i) for i in highlight}
    density: Callable[[Frame], np.ndarray] | None = None
    if cluster is not None:
        from job.cluster.faces import density_on_cluster

        density = partial(density_on_cluster, cluster, mapped.coords)
    drawn = MapVerdicts.of(scores.suspect, scores.verdict == LOW_QUALITY, scores.suggested_id, database.ids,
                           analysis.clusters, model.identity, model.anchor)
    return draw_all_maps(mapped.coords, database.ids, plan.table.codes, highlight, labels_text, drawn, config.render,
                         staging, Path(database.source).name, density)


def write_tables(database: FaceDatabase, verdicts: Verdicts, mapped: MapResult, analysis: Analysis,
                 staging: Path) -> dict[str, Path]:
    """projection.parquet, suspects.csv, low_quality.csv, lookalikes.csv, map_model.npz, names.json when the run
    has names and truth.json when it has planted answers."""
    files = {
        "projection": write_projection(staging / PROJECTION_FILE, database.ids, mapped.coords, database.input_rows,
                                       analysis.columns),
        "suspects": write_suspects(staging / SUSPECTS_FILE, database.input_rows, database.ids, verdicts.scores,
                                   database.names, verdicts.quality, analysis.lookalikes.same_person_keys()),
        "low_quality": write_low_quality(staging / LOW_QUALITY_FILE, database.input_rows, database.ids,
                                         verdicts.scores, verdicts.quality, database.names),
        "lookalikes": write_lookalikes(staging / LOOKALIKES_FILE, analysis.lookalikes, database.names),
        "model": save_model(analysis.model, staging / MODEL_FILE),
    }
    if database.names is not None:
        files["names"] = write_names(staging / NAMES_FILE, database.names)
    if database.truth is not None:
        files["truth"] = write_json(staging / TRUTH_FILE, database.truth.to_json())
    return files


def _mask(rows: IdArray, n: int) -> BoolArray:
    mask = np.zeros(n, dtype=bool)
    mask[rows] = True
    return mask


def _describe_plan(plan: FitPlan, n_faces: int) -> str:
    if not len(plan.placed):
        return f"fitting every face ({len(plan.held):,} held out to measure transform and invert)"
    return (f"fitting {len(plan.fitted):,} of {n_faces:,} faces (drawn by identity), placing {len(plan.placed):,} "
            f"on the fitted map, {len(plan.held):,} held out to measure transform and invert")


def _check_coords(coords: FloatArray, config: Config) -> None:
    bad = int((~np.isfinite(coords).all(axis=1)).sum())
    if bad:
        hint = " (umap-learn gives NaN at target_weight 1.0)" if config.umap.supervised else ""
        raise UsageError(f"UMAP returned NaN/inf positions for {bad:,} of {len(coords):,} faces{hint}; lower "
                         "umap.target_weight, or change umap.n_neighbors / umap.min_dist")


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


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = time.perf_counter() - start
    stop.check()  # a Ctrl-C that a C callback swallowed during the stage (job/stop.py)
