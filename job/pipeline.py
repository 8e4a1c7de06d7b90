"""One faceatlas run: load -> measure the geometry -> plan the fit -> kNN graph -> verdicts -> UMAP -> place ->
map model -> place the held-out faces -> analyse -> render -> write -> the atlas page (report.html,
:mod:`job.report`).

Wiring only: where the run computes is decided once (:mod:`job.where`), each stage (:mod:`job.stages`) is
entered once, timed, and hands a frozen value to the next; then the outputs are written, all of them or none.
Never prints: it reports through ``log`` and ``progress``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from job.analysis.geometry import Geometry
from job.analysis.suspects import LOW_QUALITY
from job.apply.proposals import Proposals
from job.apply.table import CORRECTIONS_FILE, write_corrections
from job.cluster.session import open_cluster
from job.config import Config
from job.errors import GpuOutOfMemoryError, UsageError
from job.footprint import run_bytes
from job.gpu import gpu_memory_errors
from job.io.database import FaceDatabase, load_database
from job.maps.mapmodel import MODEL_FILE, save_model
from job.maps.placement import Placement
from job.progress import ProgressFactory, no_progress
from job.render.maps import MapIdentities, MapVerdicts, draw_all_maps, require_render_memory
from job.report.faces import photo_settings
from job.report.page import write_page
from job.report.rundata import write_names
from job.space.faces import Faces
from job.stages import (
    Analysis,
    FitPlan,
    MapResult,
    Verdicts,
    analyse,
    check_same_photo,
    describe_plan,
    embedding_space,
    fit_map,
    judge,
    map_model,
    measure,
    place_faces,
    place_held_out,
    place_unassigned,
    plan_fit,
    propose_changes,
    shared_graph,
    working_space,
)
from job.store.coherence import NAMES_FILE
from job.store.keys import projection_keys
from job.store.outputs import (
    PROJECTION_FILE,
    RUN_FILE,
    TRUTH_FILE,
    check_output_folder,
    staged_outputs,
    write_json,
    write_projection,
)
from job.store.record import run_record
from job.store.reports import (
    LOOKALIKES_FILE,
    LOW_QUALITY_FILE,
    SUSPECTS_FILE,
    UNASSIGNED_FILE,
    Labels,
    write_lookalikes,
    write_low_quality,
    write_suspects,
    write_unassigned,
)
from job.store.runrecord import Metrics, ReportFacts, RunRecord
from job.where import Ledger, Site, check_cluster, choose_site, hold_faces, require_gpu_run
from job.xp import fields_to_host

Log = Callable[[str], None]
N_DEFAULT_HIGHLIGHT = 5


@dataclass(frozen=True)
class RunResult:
    """What a run produced: the output folder, each file by role, and the facts written to run.json."""

    out_dir: Path
    files: dict[str, Path]
    backend: str
    backend_reason: str
    metrics: Metrics
    timings: dict[str, float]


@dataclass(frozen=True)
class Work:
    """What the stages between loading and writing computed, and where (``site``, ``faces``)."""

    site: Site
    faces: Faces
    plan: FitPlan
    verdicts: Verdicts
    mapped: MapResult
    analysis: Analysis
    metrics: Metrics
    knn_reason: str
    changes: Proposals
    unassigned: Placement | None = None


def run(config: Config, log: Log = lambda message: None, progress: ProgressFactory = no_progress) -> RunResult:
    """Run the whole job for ``config`` and write its outputs to ``config.out`` (all of them, or none)."""
    ledger = Ledger()
    out_dir = Path(config.out)
    check_output_folder(out_dir)
    require_render_memory(config.render, config.max_memory_bytes)  # before the work, not after it
    chosen = choose_site(config)
    log(f"backend: {chosen.backend.name} ({chosen.reason})")
    with open_cluster(config.dask, log) as cluster:
        site = chosen.with_cluster(cluster)
        with ledger.stage("load"):
            database = load_database(config.input, config.max_memory_bytes, log,
                                     working=lambda *size: run_bytes(config, *size))
            highlight = _check_run(config, database)
        log(f"loaded {database.source}: {database.n_faces:,} faces, {len(database.identities):,} identities, "
            f"dim {database.dim}")
        _warn_about(database, log)
        with ledger.stage("geometry"):
            geometry = working_space(config, database)
        log(f"geometry: {geometry.reason}; face quality from the {geometry.quality_from}")
        check_cluster(site, config, database, geometry, ledger)
        try:
            require_gpu_run(site, config, database)
            work = compute(config, site, database, geometry, ledger=ledger, log=log, progress=progress)
        except GpuOutOfMemoryError as exc:
            site = site.on_cpu(exc, asked=config.backend)
            log(f"backend: {site.backend.name} ({site.reason})")
            work = compute(config, site, database, geometry, ledger=ledger, log=log, progress=progress)
        with staged_outputs(out_dir, log, checked=True) as staging:
            with ledger.stage("render", work.faces.map_work_at):
                files = render(config, database, work, highlight, staging)
            with ledger.stage("write"):
                files.update(write_tables(database, work, staging))

            ran_on_cluster = site.cluster_record()  # once: it reads the cluster's task stream

            def record(written: dict[str, Path]) -> RunRecord:
                return run_record(
                    config=config, database=database, backend=site.backend.name, backend_reason=site.reason,
                    knn_method=work.mapped.knn_method, knn_reason=work.knn_reason, fit=work.mapped.placement,
                    highlight=highlight, metrics=work.metrics, timings=ledger.timings, files=written,
                    gpu=ledger.gpu_record(site, work.faces, clusters_on_gpu=site.backend.uses_gpu),
                    cluster=ran_on_cluster, geometry=geometry.record())

            with ledger.stage("report"):  # the page shows the record (its files are hashed after)
                page = write_page(staging, record({}), files, highlight, model=work.analysis.model,
                                  photos=photo_settings(config.render, config.input.image_root))
                files["report"] = page.path
            final_record = record(files)
            if page.thumbnails is not None:
                final_record = final_record.model_copy(update={"report": ReportFacts(thumbnails=page.thumbnails)})
            files["run"] = final_record.write(staging / RUN_FILE)  # last: its presence marks a whole run
    final = {role: out_dir / path.name for role, path in files.items()}
    return RunResult(out_dir, final, site.backend.name, site.reason, work.metrics, ledger.timings)


def compute(config: Config, site: Site, database: FaceDatabase, geometry: Geometry, *, ledger: Ledger, log: Log,
            progress: ProgressFactory) -> Work:
    """Every stage between loading and writing, each where ``site`` says: the passes over every face where the
    run holds them (:func:`job.where.hold_faces`), the fit on the backend, the rest on the host."""
    faces = hold_faces(site, database)
    near = faces.where
    with ledger.stage("sample", near), gpu_memory_errors("the identity table"):
        space = embedding_space(database, faces)
        plan = plan_fit(config, database, space)
    log(describe_plan(plan, database.n_faces))
    with ledger.stage("knn", near), gpu_memory_errors("the kNN graph"):
        graph = shared_graph(config, space, plan, progress, site.gpu_free)
    log(f"kNN graph: {graph.method} ({graph.reason})")
    with ledger.stage("suspects", near), gpu_memory_errors("the verdicts"):
        verdicts = check_same_photo(judge(config, space, plan, graph, geometry), database)
    log(f"{int(verdicts.scores.suspect.sum()):,} suspected misfiled faces; fitting UMAP on {len(plan.fitted):,} faces")
    with ledger.stage("umap", site.fit_at), gpu_memory_errors("the UMAP fit"):
        fit = fit_map(config, site.backend, plan, graph, space)
    log(f"UMAP done in {ledger.timings['umap']:.1f} s")
    graph = fields_to_host(graph)  # placement, the supervised check and the writers are host code
    with ledger.stage("place", faces.map_work_at):
        mapped = place_faces(config, plan, graph, fit, faces, progress=progress, temperature=geometry.temperature)
    with ledger.stage("model", near), gpu_memory_errors("the map model"):
        modelled = map_model(config, space, plan, verdicts, mapped, geometry=geometry)
    with ledger.stage("held_out"):
        mapped = place_held_out(database, plan, modelled.model, mapped)
    with ledger.stage("analysis"), gpu_memory_errors("the analysis"):
        analysis = analyse(config, database, plan, verdicts, graph, mapped=mapped, modelled=modelled,
                           gpu=site.backend.uses_gpu)
    with ledger.stage("unassigned"):
        loose = place_unassigned(database, modelled.model)
    with ledger.stage("corrections"):
        changes = propose_changes(database, verdicts, analysis, loose=loose)
    with ledger.stage("metrics", faces.array_at), gpu_memory_errors("the map quality"):
        metrics = measure(config, database, space, mapped, analysis)
    return Work(site, faces, plan, verdicts, mapped, analysis, metrics, graph.reason, changes, loose)


def render(config: Config, database: FaceDatabase, work: Work, highlight: list[int], staging: Path
           ) -> dict[str, Path]:
    """The five PNG maps (the faces per pixel aggregated where the run's faces say: a cluster's workers)."""
    scores, model, coords = work.verdicts.scores, work.analysis.model, work.mapped.coords
    require_render_memory(config.render, config.max_memory_bytes)
    labels_text = {int(i): database.label(i) for i in highlight}
    drawn = MapVerdicts.of(scores.suspect, scores.verdict == LOW_QUALITY, scores.suggested_id, database.ids,
                           work.analysis.clusters, identity=model.identity, anchor=model.anchor)
    faces = MapIdentities(database.ids, highlight, labels_text, work.plan.table.codes)
    return draw_all_maps(coords, faces, drawn, config.render, staging, title=Path(database.source).name,
                         density=work.faces.density(coords))


def write_tables(database: FaceDatabase, work: Work, staging: Path) -> dict[str, Path]:
    """projection.parquet, suspects.csv, low_quality.csv, lookalikes.csv, map_model.npz, names.json when the run
    has names and truth.json when it has planted answers."""
    verdicts, analysis, keys = work.verdicts, work.analysis, database.keys
    columns = {**analysis.columns, **projection_keys(database)}
    files = {
        "projection": write_projection(staging / PROJECTION_FILE, database.ids, work.mapped.coords,
                                       database.input_rows, columns),
        "suspects": write_suspects(staging / SUSPECTS_FILE, database.input_rows, database.ids, verdicts.scores,
                                   labels=Labels(database.names, keys), quality=verdicts.quality,
                                   same_person=analysis.lookalikes.same_person_keys(), reasons=verdicts.reasons()),
        "low_quality": write_low_quality(staging / LOW_QUALITY_FILE, database.input_rows, database.ids,
                                         verdicts.scores, verdicts.quality, names=database.names, keys=keys),
        "lookalikes": write_lookalikes(staging / LOOKALIKES_FILE, analysis.lookalikes, database.names, keys),
        "model": save_model(analysis.model, staging / MODEL_FILE),
    }
    loose, placed = database.unassigned, work.unassigned
    if loose is not None and placed is not None:
        files["unassigned"] = write_unassigned(staging / UNASSIGNED_FILE, loose.rows, placed.coords,
                                               placed.nearest_id, placed.similarity, keys=loose.keys,
                                               names=database.names)
    files["corrections"] = write_corrections(staging / CORRECTIONS_FILE, work.changes, database.input_rows,
                                             names=database.names, keys=keys, database=database.store is not None,
                                             loose_rows=None if loose is None else loose.rows,
                                             loose_keys=None if loose is None else loose.keys)
    if database.names is not None:
        files["names"] = write_names(staging / NAMES_FILE, database.names)
    if database.truth is not None:
        files["truth"] = write_json(staging / TRUTH_FILE, database.truth.to_json())
    return files


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


