"""Where a run computes, decided once: the UMAP backend, the GPU it runs on, the Dask cluster, and where the
faces are held (:func:`hold_faces`). run.json's ``gpu`` record is read from what ran (:class:`Ledger`).

The stages never branch on any of this: they call the :class:`job.space.faces.Faces` the run holds and the
backend it chose.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from job import stop
from job.config import Config
from job.errors import GpuOutOfMemoryError
from job.footprint import gpu_run_bytes
from job.gpu import GpuInfo, probe_gpu, require_gpu_memory, use_memory
from job.reduce.backends import UmapLearnBackend, resolve
from job.reduce.interface import Backend
from job.space.faces import CLUSTER, DEVICE, HOST, DeviceFaces, Faces, HostFaces
from job.xp import on_device

if TYPE_CHECKING:
    from job.analysis.geometry import Geometry
    from job.cluster.session import ClusterSession
    from job.io.database import FaceDatabase

WORK: dict[str, tuple[str, str | None]] = {
    "load": ("loading", None), "geometry": ("geometry (sampled pairs, centring)", None),
    "cluster check": ("the workers' check", None), "sample": ("identity table", "fit sample"),
    "knn": ("kNN graph", None), "suspects": ("verdicts", None), "umap": ("UMAP fit", None),
    "place": ("placement of the other faces (numba)", None),
    "model": ("look-alikes and map-model cohesion", "map model"), "held_out": ("held-out placement", None),
    "analysis": ("held-out and inverse checks", None), "metrics": ("trustworthiness", "same-id share (k-d tree)"),
    "render": ("maps", None), "write": ("tables", None), "report": ("atlas page", None)}
"""What each timed stage of a run does, as run.json's ``gpu`` record names it: the part that runs where the
stage is said to compute (the host, the GPU, or a cluster's client with its workers), and the part that runs on
the host whatever the stage's place."""


@dataclass(frozen=True)
class GpuRun:
    """The GPU a GPU-backend run computes on, as probed before its memory pool took any (``info``: its free
    memory is what the run can have), and the memory set-up (``memory``)."""

    info: GpuInfo
    memory: str


@dataclass(frozen=True)
class Site:
    """Where a run computes: the UMAP ``backend`` (and ``reason`` it was chosen), the ``gpu`` it runs on (None on
    CPU) and the Dask ``cluster`` that runs the passes over every face (None without ``--dask``)."""

    backend: Backend
    reason: str
    gpu: GpuRun | None = None
    cluster: ClusterSession | None = None

    @property
    def fit_at(self) -> str:
        """Where the UMAP fit and the map's clustering run: the backend's device."""
        return DEVICE if self.backend.uses_gpu else HOST

    def cluster_record(self) -> dict[str, Any] | None:
        """run.json's ``cluster``: the cluster the run used and the stages that ran on it (None: no cluster)."""
        return None if self.cluster is None else self.cluster.record()

    @property
    def gpu_free(self) -> int | None:
        """The GPU's free memory before the run's pool took any (None: no GPU)."""
        return None if self.gpu is None else self.gpu.info.free_bytes

    def on_cpu(self, error: GpuOutOfMemoryError, *, asked: str) -> Site:
        """The same run on CPU (umap-learn; the cluster's tasks on its workers' CPUs) after ``error``, when the
        backend was chosen automatically (``asked`` "auto"); a GPU backend asked for by name raises ``error``."""
        if asked != "auto":
            raise error
        if self.cluster is not None:
            self.cluster.device = False
        return Site(UmapLearnBackend(), f"{self.reason}; fell back to umap-learn on CPU: {error}", None, self.cluster)

    def with_cluster(self, cluster: ClusterSession | None) -> Site:
        """This site with the run's ``cluster``, whose chunk tasks run on its workers' GPUs for a GPU backend
        (dask-cuda)."""
        if cluster is not None:
            cluster.device = self.backend.uses_gpu
        return replace(self, cluster=cluster)


def choose_site(config: Config) -> Site:
    """The backend ``config`` asks for (or the first that can run, for "auto"), and for a GPU backend the GPU,
    probed, then its memory pool set up (an RMM pool reserves half the free memory at once, so the free memory
    is read first)."""
    backend, reason = resolve(config.backend)
    if not backend.uses_gpu:
        return Site(backend, reason)
    info = probe_gpu()
    return Site(backend, reason, GpuRun(info, use_memory(config.gpu.memory)))


def check_cluster(site: Site, config: Config, database: FaceDatabase, geometry: Geometry, ledger: Ledger
                  ) -> None:
    """The run's cluster workers import this faceatlas and read the faces the client holds (a GPU run: have a
    usable GPU, or run the chunk tasks on their CPUs, said in run.json); timed as the stage "cluster check".
    Nothing to check without a cluster."""
    from job.cluster.source import face_source, first_and_last

    if site.cluster is None:
        return
    with ledger.stage("cluster check", CLUSTER):
        site.cluster.check(face_source(config.input, database, geometry.centre), first_and_last(database),
                           gpu_required=config.backend == "cuml")


def require_gpu_run(site: Site, config: Config, database: FaceDatabase) -> None:
    """Refuse (:class:`GpuOutOfMemoryError`) a GPU run that would not fit in the GPU's free memory."""
    if site.gpu is None:
        return
    need = gpu_run_bytes(config, database.n_faces, len(database.identities), database.dim,
                         database.unit.dtype.itemsize)
    require_gpu_memory(need, site.gpu.info, config.gpu.memory, f"a GPU run on {database.n_faces:,} faces")


def hold_faces(site: Site, database: FaceDatabase) -> Faces:
    """The run's faces where ``site`` computes on them: read by the cluster's workers chunk by chunk, copied
    once to the GPU for a GPU backend, or the database's own array."""
    if site.cluster is not None:
        from job.cluster.faces import ClusterFaces

        return ClusterFaces(site.cluster, database.unit, site.cluster.source, database.input_rows, database.ids)
    xp = site.backend.namespace()
    return DeviceFaces(xp.asarray(database.unit)) if on_device(xp) else HostFaces(database.unit)


@dataclass
class Ledger:
    """Each timed stage's seconds (``timings``, run.json's) and where it computed (``where``: host, device or
    cluster)."""

    timings: dict[str, float] = field(default_factory=dict)
    where: dict[str, str] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str, where: str = HOST) -> Iterator[None]:
        """Time the stage ``name`` computed at ``where``; then honour a Ctrl-C that a C callback swallowed
        during it (job/stop.py)."""
        start = time.perf_counter()
        self.where[name] = where
        try:
            yield
        finally:
            self.timings[name] = time.perf_counter() - start
        stop.check()

    def gpu_record(self, site: Site, faces: Faces | None, clusters_on_gpu: bool) -> dict[str, Any] | None:
        """run.json's ``gpu``: the device, its memory set-up, and what ran on it and what on the host (with a
        cluster, the passes over every face on its workers' GPUs: ``faces.ran``), read from where each stage
        computed."""
        if site.gpu is None:
            return None
        on_gpu: list[str] = []
        on_cpu: list[str] = []
        for name, where in self.where.items():
            part, host_part = WORK.get(name, (name, None))
            part = f"UMAP fit ({site.backend.name})" if name == "umap" else part
            if where == CLUSTER:  # the client's share here; its passes over every face in the workers' entry
                part = f"{part} (the client's share)"
            (on_gpu if where == DEVICE else on_cpu).append(part)
            on_cpu += [host_part] if host_part else []
        (on_gpu if clusters_on_gpu else on_cpu).append(f"clusters (HDBSCAN, {site.backend.name})")
        if site.cluster is not None and faces is not None:
            workers = "GPU" if site.cluster.device else "CPU"
            (on_gpu if site.cluster.device else on_cpu).append(
                f"on each worker's {workers}: {', '.join(faces.ran)} (run.json cluster)")
        info = site.gpu.info
        return {"device": info.device, "count": info.count, "total_bytes": info.total_bytes,
                "free_bytes": info.free_bytes, "compute_capability": info.compute_capability,
                "driver_cuda": info.driver_cuda, "runtime_cuda": info.runtime_cuda, "memory": site.gpu.memory,
                "on_gpu": on_gpu, "on_cpu": on_cpu}
