"""The stages of a run, between loading and writing: each takes frozen values and returns one.

plan the fit -> kNN graph -> verdicts -> UMAP fit -> place the faces not fitted -> map model -> place the
held-out faces -> analysis -> map quality. The passes over every face go through the run's
:class:`job.space.faces.Faces` (host, GPU or Dask cluster, :mod:`job.where`); results come back to the host
once, at each stage's end. :mod:`job.pipeline` chains them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np

from job.analysis.candidates import find_candidates
from job.analysis.clusters import agreement, cluster_map
from job.analysis.geometry import Geometry, centre_in_place, measure_geometry
from job.analysis.identities import IdentityTable, identity_table
from job.analysis.lookalikes import Lookalikes, find_lookalikes
from job.analysis.metrics import same_id_knn, trustworthiness
from job.analysis.quality import against_truth, supervised_disagreement
from job.analysis.samephoto import same_photo_conflicts
from job.analysis.similar import similar_identities
from job.analysis.suspects import DUPLICATE, MISFILED, VERDICTS, SuspectScores, judge_faces, leave_one_out
from job.apply.proposals import Proposals, assign_bar, propose, repeats_of
from job.arrays import BoolArray, FloatArray, IdArray
from job.config import Config, UmapConfig
from job.errors import UsageError
from job.io.database import FaceDatabase
from job.knn.graph import FaceGraph
from job.maps.mapmodel import MapModel
from job.maps.placement import Placement, place
from job.maps.quality import held_out_quality, map_inverse_quality, model_from_map
from job.progress import ProgressFactory, no_progress
from job.reduce.extend import make_kernel
from job.reduce.interface import Backend
from job.reduce.params import fit_params
from job.reduce.sample import fit_sample, pick_holdout, sample_size
from job.space.faces import Faces
from job.store.runrecord import ClusterAgreement, Fit, InverseQuality, Metrics, TransformQuality
from job.xp import fields_to_host, namespace, to_host, to_namespace

SIMILAR_IDENTITIES = 5  # identities with the centroids nearest a face's own are suspect candidates too


@dataclass(frozen=True)
class FitPlan:
    """Who is fitted, who is placed, who is held out: sorted face rows each; ``table`` groups all faces."""

    table: IdentityTable
    fitted: IdArray
    placed: IdArray
    held: IdArray

    @cached_property
    def on_map(self) -> IdArray:
        """The faces UMAP put on the map, fitted or placed (sorted rows): all but the held-out ones."""
        return np.sort(np.concatenate([self.fitted, self.placed]))


@dataclass(frozen=True)
class Space:
    """The embedding space where the run computes: every face (``faces``, where they are held), each face's
    input row and quality (n_faces,), and the identity table, as arrays of ``faces.xp``."""

    faces: Faces
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
    same_photo: BoolArray | None = None
    """Faces misfiled by the same-photo check (another face of their photo fits their identity better), or None
    when the source has no photo keys."""
    evidence: BoolArray | None = None
    """Faces misfiled by the embeddings' evidence (before the same-photo check), or None without it."""

    def reasons(self) -> np.ndarray:
        """Why each face is misfiled (n_faces,) object: ``evidence``, ``same_photo``, ``both``; "" for the rest."""
        evidence = self.scores.suspect if self.evidence is None else self.evidence
        photo = np.zeros_like(evidence) if self.same_photo is None else self.same_photo
        reasons = np.full(len(evidence), "", dtype=object)
        reasons[evidence] = "evidence"
        reasons[photo] = "same_photo"
        reasons[evidence & photo] = "both"
        return reasons


@dataclass(frozen=True)
class FitResult:
    """The UMAP fit: ``coords`` (len(plan.fitted), n_components) float32 of the fitted faces, the settings
    used (``"auto"`` resolved) and what ran the fit."""

    coords: FloatArray
    params: UmapConfig
    engine: str


@dataclass(frozen=True)
class MapResult:
    """The whole map: ``coords`` (n_faces, n_components) for every face (NaN: not placed yet), and how it was
    made."""

    coords: FloatArray
    knn_method: str
    placement: Fit


@dataclass(frozen=True)
class ModelResult:
    """The map model of the faces on the map, the look-alike pairs, and the identity table without misfiled
    and held-out faces (host arrays)."""

    model: MapModel
    lookalikes: Lookalikes
    clean: IdentityTable


@dataclass(frozen=True)
class Analysis:
    """Everything decided after the map: columns for projection.parquet, the model, metrics, map overlays."""

    columns: dict[str, np.ndarray]
    model: MapModel
    lookalikes: Lookalikes
    clusters: IdArray
    metrics: Metrics


def working_space(config: Config, database: FaceDatabase) -> Geometry:
    """Measure the database's geometry and move its faces into the space every later stage computes in
    (``database.unit`` centred in place when the geometry says so, :mod:`job.analysis.geometry`; once per
    loaded database)."""
    geometry = measure_geometry(database.unit, database.ids, database.log_norms, centring=config.analysis.centre,
                                seed=config.seed)
    centre_in_place(database.unit, geometry)
    return geometry


def embedding_space(database: FaceDatabase, faces: Faces) -> Space:
    """The run's ``faces`` with the rows, qualities and identity table beside them, in ``faces.xp``."""
    return Space(faces, faces.to_here(database.input_rows), faces.to_here(database.quality),
                 identity_table(faces, database.ids))


def plan_fit(config: Config, database: FaceDatabase, space: Space) -> FitPlan:
    """Hold some faces out, and pick the faces UMAP is fitted on (the rest are placed)."""
    own = to_host(leave_one_out(space.faces, space.table)[0])
    table = fields_to_host(space.table)
    held = pick_holdout(database.ids, config.analysis.holdout, config.analysis.holdout_max, config.seed,
                        min_fitted=config.umap.n_neighbors + 1)
    fitted = fit_sample(table.codes, own, ~held, sample_size(config.umap, database.n_faces, len(table.ids)),
                        config.seed)
    on_map = ~held
    on_map[fitted] = False
    return FitPlan(table, fitted, np.flatnonzero(on_map), np.flatnonzero(held))


def shared_graph(config: Config, space: Space, plan: FitPlan, progress: ProgressFactory = no_progress,
                 gpu_free: int | None = None) -> FaceGraph:
    """The run's one kNN graph: every face against the fitted faces (fitted faces find themselves first), where
    the faces are held (``gpu_free``: the GPU's free memory before the run)."""
    k = max(config.umap.n_neighbors, config.analysis.neighbours + 1)
    return space.faces.face_graph(plan.fitted, k, knn=config.knn, seed=config.seed, gpu=config.gpu, progress=progress,
                                  gpu_free=gpu_free)


def judge(config: Config, space: Space, plan: FitPlan, graph: FaceGraph, geometry: Geometry) -> Verdicts:
    """Per-face verdicts from the graph's neighbours and similar identities (re-enrolled photos found in the
    graph and left out of the identities first), read in the run's ``geometry``; look-alike candidates.
    Computed where ``space`` is; the verdicts come back to the host."""
    settings, table = config.analysis, space.table
    candidates = find_candidates(graph, table.codes, table.centroids, width=settings.neighbours,
                                 similar=SIMILAR_IDENTITIES, k=settings.lookalike_k, knn=config.knn, seed=config.seed)
    quality = to_namespace(namespace(table.codes), geometry.face_quality(space.quality, graph))
    scores, original = judge_faces(space.faces, table, graph, candidates.nearby, candidates.similar, rows=space.rows,
                                   quality=quality,
                                   calibration=geometry.calibration(settings.suspect_margin, settings.misfiled_score))
    return Verdicts(fields_to_host(scores), to_host(candidates.lookalike), to_host(original), to_host(quality))


def check_same_photo(verdicts: Verdicts, database: FaceDatabase) -> Verdicts:
    """``verdicts`` with the same-photo check applied where the faces carry photo keys
    (:func:`job.analysis.samephoto.same_photo_conflicts`): a face that shares a photo with a face filed under
    its identity that fits it better is misfiled."""
    if database.keys is None or database.keys.photo is None:
        return verdicts
    scores = verdicts.scores
    conflict = same_photo_conflicts(database.keys.photo, database.ids, scores.own, scores.verdict == DUPLICATE)
    evidence = scores.suspect.copy()
    # a face misfiled only by its photo has no identity that claims it: no suggestion (-1), as for a stranger
    unclaimed = conflict & ~evidence & (scores.suggested_id == database.ids)
    checked = replace(scores, suspect=scores.suspect | conflict, claimed=scores.claimed & ~unclaimed,
                      suggested_id=np.where(unclaimed, -1, scores.suggested_id).astype(np.int64),
                      verdict=np.where(conflict, MISFILED, scores.verdict).astype(scores.verdict.dtype))
    return replace(verdicts, scores=checked, same_photo=conflict, evidence=evidence)


def fit_map(config: Config, backend: Backend, plan: FitPlan, graph: FaceGraph, space: Space) -> FitResult:
    """UMAP coordinates of the fitted faces, the settings used and what ran the fit. The backend fits on the
    run's graph, where the graph is (the GPU for cuML)."""
    params = fit_params(config.umap, sampled=len(plan.placed) > 0, n_fitted=len(plan.fitted))
    # dense codes 0..n_identities-1: umap-learn reads label -1 as "unlabelled", cuML wants int32
    labels = plan.table.codes[plan.fitted].astype(np.int32) if params.supervised else None
    reduction = backend.fit_transform(space.faces.rows(plan.fitted, np.float32), labels, params, config.knn,
                                      config.seed, graph=graph.among_reference(params.n_neighbors))
    _check_coords(reduction.coords, config)
    return FitResult(reduction.coords, params, reduction.engine)


def place_faces(config: Config, plan: FitPlan, graph: FaceGraph, fit: FitResult, faces: Faces, *,
                progress: ProgressFactory = no_progress, temperature: float) -> MapResult:
    """The map of the faces not held out: fitted faces where UMAP put them (``fit``), every other face placed on
    that map where ``faces`` run their passes, starting from its neighbours weighted with the geometry's
    ``temperature``. Held-out faces stay NaN (:func:`place_held_out`)."""
    fitted, params, engine = fit.coords, fit.params, fit.engine
    n_faces = len(plan.table.codes)
    coords = np.full((n_faces, fitted.shape[1]), np.nan, dtype=np.float32)
    coords[plan.fitted] = fitted
    # fit_params resolved every "auto": these are numbers (float() and int() refuse one left unresolved)
    min_dist, repulsion, n_epochs = float(params.min_dist), float(params.repulsion_strength), int(params.n_epochs)
    made = Fit(fitted=len(plan.fitted), placed=len(plan.placed), held_out=len(plan.held), init=params.init,
               min_dist=min_dist, repulsion_strength=repulsion, n_epochs=n_epochs, engine=engine)
    if len(plan.placed):
        kernel = make_kernel(fitted, min_dist, params.spread, repulsion,
                             params.place_epochs, seed=config.seed, temperature=temperature)
        k = min(params.n_neighbors, graph.k)
        coords[plan.placed] = faces.place(fitted, graph.indices[plan.placed, :k], graph.distances[plan.placed, :k],
                                          kernel, parallel=config.seed is None, progress=progress)
        made = made.model_copy(update={"method": "knn-weighted start + umap-learn layout against the fixed fitted map",
                                       "place_neighbors": k, "place_epochs": params.place_epochs,
                                       "kernel_scale": round(kernel.scale, 6)})
    return MapResult(coords, graph.method, made)


def map_model(config: Config, space: Space, plan: FitPlan, verdicts: Verdicts, mapped: MapResult, *,
              geometry: Geometry) -> ModelResult:
    """The map model of the faces on the map and the look-alike pairs, in the run's ``geometry`` (the passes
    over every face where ``space`` is)."""
    settings, scores = config.analysis, verdicts.scores
    left_out = scores.left_out
    # one derived identity table at a time (each is n_identities x dim): the look-alikes' first, then freed
    xp = space.faces.xp
    pairs = fields_to_host(find_lookalikes(space.table.without(space.faces, xp.asarray(np.flatnonzero(left_out))),
                                           to_namespace(xp, verdicts.lookalike), settings.lookalike_top,
                                           settings.lookalike_threshold, baseline=geometry.working.impostor_median))
    on_map = plan.on_map
    # the table without misfiled and held-out faces, and its cohesion (n_faces x dim), where the faces are
    clean = space.table.without(space.faces, xp.asarray(np.flatnonzero(left_out | _mask(plan.held, len(left_out)))))
    model = model_from_map(space.faces, clean, scores, on_map, mapped.coords[on_map], geometry=geometry)
    return ModelResult(model, pairs, fields_to_host(clean))


def place_held_out(database: FaceDatabase, plan: FitPlan, model: MapModel, mapped: MapResult) -> MapResult:
    """The whole map: ``mapped`` with the held-out faces placed by the map model, as ``transform`` places a new
    face (a new coordinate array; ``mapped`` is left as it is)."""
    coords = mapped.coords.copy()
    if len(plan.held):
        coords[plan.held] = place(model, database.unit[plan.held]).coords
    return replace(mapped, coords=coords)


def place_unassigned(database: FaceDatabase, model: MapModel) -> Placement | None:
    """The faces the source files under no identity, placed on the map as ``transform`` places a new face, each
    with the identity it most likely is (the nearest centroid in the run's working space); None without any."""
    loose = database.unassigned
    if loose is None:
        return None
    return place(model, model.working(np.asarray(loose.unit, dtype=np.float32)))


def propose_changes(database: FaceDatabase, verdicts: Verdicts, analysis: Analysis, *,
                    loose: Placement | None) -> Proposals:
    """corrections.csv's rows: the verdicts as actions (:mod:`job.apply.proposals`), the unassigned faces
    ``loose`` assigned where they fit an identity as well as the database's own filed faces fit theirs."""
    scores = verdicts.scores
    bar = float("inf")
    if loose is not None:
        fair = ~scores.left_out & ~np.asarray(analysis.columns["held_out"], dtype=bool)
        bar = assign_bar(database.unit, database.ids, analysis.model, fair)
    return propose(scores, database.ids, reasons=verdicts.reasons(),
                   repeats=repeats_of(database.unit, verdicts.original), quality=verdicts.quality,
                   lookalikes=analysis.lookalikes, loose=loose, assign_bar=bar)


def analyse(config: Config, database: FaceDatabase, plan: FitPlan, verdicts: Verdicts, graph: FaceGraph, *,
            mapped: MapResult, modelled: ModelResult, gpu: bool) -> Analysis:
    """Everything decided on the whole map: the held-out and inverse checks, clusters (HDBSCAN, on the GPU for
    ``gpu``), projection's columns and the analysis metrics."""
    settings, ids, scores, model = config.analysis, database.ids, verdicts.scores, modelled.model
    coords, left_out = mapped.coords, scores.left_out
    on_map = plan.on_map
    # a held-out face filed under the wrong id proves nothing, nor does a re-enrolment of a fitted photo
    judged = plan.held[~left_out[plan.held]]
    check = held_out_quality(model, database.unit[judged], ids[judged], coords[judged])
    inverse = map_inverse_quality(model, modelled.clean, database.unit, on_map, sample=settings.holdout_max,
                                  seed=config.seed)
    clusters = cluster_map(coords, settings.cluster_min_size, use_gpu=gpu, sample=settings.cluster_sample,
                           seed=config.seed)
    columns: dict[str, np.ndarray] = {"outlier_score": scores.score, "suspect": scores.suspect,
                                      "suggested_id": scores.suggested_id, "cluster": clusters,
                                      "held_out": _mask(plan.held, len(ids))}
    measured: dict[str, Any] = {  # Metrics' fields (absent: not measured by this run)
        "suspects": int(scores.suspect.sum()), "clusters": ClusterAgreement(**agreement(clusters, ids)),
        "held_out": check.n, "transform": TransformQuality(id_at_1=check.transform_id_at_1),
        "inverse": InverseQuality(mean_cos=check.mean_cos, id_at_1=check.id_at_1,
                                  map_mean_cos=inverse.map_mean_cos, map_id_at_1=inverse.map_id_at_1)}
    if config.umap.supervised:
        columns["supervised_disagreement"] = supervised_disagreement(coords, plan.table.codes, graph,
                                                                     settings.disagreement_k)
        measured["supervised_disagreement"] = int(columns["supervised_disagreement"].sum())
    columns["fitted"] = _mask(plan.fitted, len(ids))  # added in 0.4: the face is in the UMAP fit
    # added in 0.5: the verdict of every face, its quality and fit, and the row a re-enrolment repeats
    columns.update(verdict=scores.verdict_names(), quality=verdicts.quality, fit=scores.own,
                   duplicate_of=np.where(verdicts.original >= 0, database.input_rows[np.maximum(verdicts.original, 0)],
                                         -1).astype(np.int64))
    measured["verdicts"] = {name: int((scores.verdict == code).sum()) for code, name in enumerate(VERDICTS)}
    if verdicts.same_photo is not None:  # added in 0.9: faces misfiled because another face of their photo fits
        measured["same_photo"] = int(verdicts.same_photo.sum())
    if database.unassigned is not None:
        measured["unassigned"] = database.unassigned.n_faces
    # added in 0.6: each face's most similar identities in 512-D (from the graph), shown by the atlas page
    columns.update(similar_identities(graph, plan.table.codes, plan.table.ids).columns())
    if database.truth is not None:
        truth = against_truth(database.truth, database.input_rows, scores, modelled.lookalikes)
        measured.update(suspect_precision=truth.suspect_precision, suspect_recall=truth.suspect_recall,
                        lookalike_recall=truth.lookalike_recall, twin_recall=truth.twin_recall,
                        low_quality_precision=truth.low_quality_precision,
                        low_quality_recall=truth.low_quality_recall)
    return Analysis(columns, model, modelled.lookalikes, clusters, Metrics(**measured))


def measure(config: Config, database: FaceDatabase, space: Space, mapped: MapResult, analysis: Analysis
            ) -> Metrics:
    """Map quality of the map as written (fitted, placed and held-out faces alike), with the analysis metrics."""
    settings = config.metrics
    quality = {"trustworthiness": trustworthiness(space.faces.array, mapped.coords, settings.trustworthiness_k,
                                                  settings.trustworthiness_sample, config.seed),
               "same_id_knn": same_id_knn(mapped.coords, database.ids, settings.same_id_k)}
    return analysis.metrics.model_copy(update=quality)


def describe_plan(plan: FitPlan, n_faces: int) -> str:
    """The log line that says who is fitted, placed and held out."""
    if not len(plan.placed):
        return f"fitting every face ({len(plan.held):,} held out to measure transform and invert)"
    return (f"fitting {len(plan.fitted):,} of {n_faces:,} faces (drawn by identity), placing {len(plan.placed):,} "
            f"on the fitted map, {len(plan.held):,} held out to measure transform and invert")


def _mask(rows: IdArray, n: int) -> BoolArray:
    mask = np.zeros(n, dtype=bool)
    mask[rows] = True
    return mask


def _check_coords(coords: FloatArray, config: Config) -> None:
    bad = int((~np.isfinite(coords).all(axis=1)).sum())
    if bad:
        hint = " (umap-learn gives NaN at target_weight 1.0)" if config.umap.supervised else ""
        raise UsageError(f"UMAP returned NaN/inf positions for {bad:,} of {len(coords):,} faces{hint}; lower "
                         "umap.target_weight, or change umap.n_neighbors / umap.min_dist")
