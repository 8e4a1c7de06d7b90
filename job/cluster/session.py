"""Reaching the cluster, checking its workers, and running tasks on them with Dask's own fault tolerance.

A task that dies with its worker is Dask's to run again elsewhere (``distributed.scheduler.allowed-failures``);
what cannot be recovered (no scheduler, no workers, workers without faceatlas or the input, a task that kept
killing workers) ends the run with one :class:`~job.errors.ClusterError` line, and since the outputs are
written only after every stage, nothing half-written is left.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from job.cluster.address import ClusterAddress, parse_address, shown_address
from job.errors import ClusterError, FaceatlasError

if TYPE_CHECKING:
    from job.cluster.source import FaceSource
    from job.config import DaskConfig
    from job.progress import ProgressFactory

Log = Callable[[str], None]
POLL_SECONDS = 0.05  # how often unfinished tasks are looked at
INSTALL_FIX = "install the client's faceatlas on every worker (pip install 'faceatlas[dask]=={version}')"


@dataclass
class ClusterSession:
    """An open cluster: the Dask ``client``, the LocalCluster when the run started one, what ``--dask`` said
    (``address``, as shown: no credentials), the workers' facts once checked, and the stages that ran on it."""

    client: Any
    address: str
    kind: str
    chunk_faces: int
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)
    stages: list[str] = field(default_factory=list)
    timeout: float = 30.0
    source: FaceSource | None = None
    device: bool = False  # the chunk tasks compute on each worker's GPU (a GPU-backend run)
    device_reason: str = ""
    cuvs: bool = False  # every GPU worker has cuVS (its brute-force search); else CuPy's
    stream: Any = None  # Dask's task stream since the session opened (per-task compute seconds)

    def check(self, source: FaceSource | None, probe: tuple[Any, str] | None = None, gpu_required: bool = True
              ) -> None:
        """Every worker imports this faceatlas and reads the client's faces from ``source`` (``probe``: the first
        and last faces' input rows and digest), and for a GPU run (``device``) has a usable GPU; else a
        :class:`ClusterError` naming the worker and the fix. Without ``gpu_required`` (``--backend auto``),
        workers without a GPU run the chunk tasks on their CPUs instead (``device`` turns False, said in
        ``device_reason``)."""
        from job import __version__
        from job.cluster.tasks import worker_facts

        fix = INSTALL_FIX.format(version=__version__)
        try:
            facts = self.client.run(worker_facts, source, probe, self.device, on_error="return")
        except Exception as exc:  # the scheduler went away, or the client cannot send the function
            raise ClusterError(f"--dask {self.address}: the workers could not be asked ({_brief(exc)}); {fix}") \
                from None
        if not facts:
            raise ClusterError(f"--dask {self.address}: the scheduler has no workers; start some "
                               f"(dask worker {self.address})")
        for worker, answer in sorted(facts.items()):
            if isinstance(answer, BaseException):  # e.g. ModuleNotFoundError: job is not importable there
                raise ClusterError(f"--dask {self.address}: worker {worker} cannot run faceatlas ({_brief(answer)}); "
                                   f"{fix}")
            if answer["faceatlas"] != __version__:
                raise ClusterError(f"--dask {self.address}: worker {worker} runs faceatlas {answer['faceatlas']}, "
                                   f"this client {__version__}; {fix}")
            if answer["input"] != "ok":
                raise ClusterError(answer["input"])
        lacking = sorted(worker for worker, answer in facts.items() if self.device and not answer.get("gpu"))
        if lacking and gpu_required:
            raise ClusterError(f"--dask {self.address}: worker {lacking[0]} has no usable GPU "
                               f"({facts[lacking[0]]['gpu_reason']}) for --backend cuml; start GPU workers with "
                               f"dask-cuda (dask cuda worker {self.address}), or run with --backend umap-learn")
        if lacking:
            self.device = False
            self.device_reason = (f"{len(lacking)} of {len(facts)} workers have no usable GPU "
                                  f"({facts[lacking[0]]['gpu_reason']}): the chunk tasks run on the workers' CPUs")
        self.workers, self.source = facts, source
        self.cuvs = self.device and all(answer.get("cuvs") for answer in facts.values())

    def scatter(self, value: Any) -> Any:
        """``value`` on every worker, once (a future the tasks take as an argument)."""
        return self.client.scatter(value, broadcast=True, hash=False)

    def run(self, stage: str, function: Callable[..., Any], calls: Sequence[tuple[Any, ...]],
            progress: ProgressFactory | None = None, sizes: Sequence[int] = ()) -> list[Any]:
        """``function(*call)`` for every call, as tasks; results in order. ``stage`` names the work in
        run.json and in errors; with ``progress`` a bar counts ``sizes`` (faces per call) as tasks finish."""
        self.note(stage)
        with failures(self.address, stage):
            futures = [self.client.submit(function, *call, pure=False) for call in calls]
            if progress is None:
                return self.collect(stage, futures)
            size = dict(zip((future.key for future in futures), sizes or [1] * len(futures), strict=True))
            with progress(stage, sum(size.values()), "faces") as bar:
                return self.collect(stage, futures, lambda future: bar.advance(size[future.key]))

    def submit(self, stage: str, function: Callable[..., Any], *args: Any) -> Any:
        """One task, its future (for work that stays on the workers, e.g. the chunks of faces)."""
        self.note(stage)
        with failures(self.address, stage):
            return self.client.submit(function, *args, pure=False)

    def gather(self, stage: str, future: Any) -> Any:
        """The result of ``future`` (a task of ``stage``)."""
        with failures(self.address, stage):
            return self.collect(stage, [future])[0]

    def collect(self, stage: str, futures: list[Any], done: Callable[[Any], None] = lambda future: None
                ) -> list[Any]:
        """The results of ``futures`` (``done`` called on each as it finishes). While workers come and go Dask
        reruns what was lost, but a cluster left without any worker for ``timeout`` seconds ends the run (Dask
        itself would wait for one forever)."""
        pending, alone_since, looked = list(futures), None, time.monotonic()
        while pending:
            still = []
            for future in pending:
                if future.done():
                    done(future)
                else:
                    still.append(future)
            if len(still) < len(pending):
                pending, alone_since = still, None
                continue
            time.sleep(POLL_SECONDS)
            if time.monotonic() - looked < 1.0:
                continue
            looked = time.monotonic()
            if self.client.nthreads():
                alone_since = None
            elif alone_since is None:
                alone_since = looked
            elif looked - alone_since >= self.timeout:
                raise ClusterError(f"--dask {self.address}: {stage}: no worker left for {self.timeout:g} s; start "
                                   f"workers (dask worker {self.address}) and rerun (nothing was written)")
        return self.client.gather(futures)

    def note(self, stage: str) -> None:
        """Record that ``stage`` ran on the cluster (run.json ``cluster.stages``)."""
        if stage not in self.stages:
            self.stages.append(stage)

    def record(self) -> dict[str, Any]:
        """run.json's ``cluster``: the address without credentials, the workers, their versions, the stages, each
        kind of task's count and compute seconds, and where the chunk tasks computed."""
        versions = {name: sorted({str(facts[name]) for facts in self.workers.values()})
                    for name in ("faceatlas", "python", "numpy", "dask", "distributed")}
        with failures(self.address, "run.json"):
            threads = self.client.nthreads()
            tasks = self.task_seconds()
        return {"address": self.address, "kind": self.kind, "workers": len(self.workers),
                "threads": int(sum(threads.values())), "chunk_faces": self.chunk_faces,
                "worker_versions": {name: values[0] if len(values) == 1 else values
                                    for name, values in versions.items()},
                "stages": list(self.stages), "tasks": tasks, "device": "gpu" if self.device else "cpu",
                "device_reason": self.device_reason,
                "worker_gpus": sorted({str(facts["gpu"]) for facts in self.workers.values() if facts.get("gpu")})}

    def task_seconds(self) -> dict[str, dict[str, float]]:
        """Per kind of task (its function's name), how many ran and their compute seconds, from the scheduler's
        task stream since the session opened (what ``bench/bench_dask.py`` scales from; on a scheduler shared
        with other clients, their tasks of the same names count too)."""
        from dask.utils import key_split

        self.stream.__exit__(None, None, None)  # collects the stream since the session opened
        kinds: dict[str, dict[str, float]] = {}
        for task in self.stream.data:
            seconds = sum(part["stop"] - part["start"] for part in task.get("startstops", ())
                          if part.get("action") == "compute")
            entry = kinds.setdefault(key_split(task["key"]), {"count": 0, "seconds": 0.0})
            entry["count"] += 1
            entry["seconds"] = round(entry["seconds"] + seconds, 3)
        return dict(sorted(kinds.items()))


@contextmanager
def open_cluster(config: DaskConfig, log: Log = lambda message: None) -> Iterator[ClusterSession | None]:
    """The cluster ``config.address`` names, for the length of the run (None when it names none). A
    LocalCluster is started here (worker processes, one thread each, loopback only) and closed on the way out."""
    where = parse_address(config.address)
    if where.kind == "none":
        yield None
        return
    try:
        from distributed import get_task_stream
    except ImportError:
        raise ClusterError("--dask needs Dask's distributed scheduler, which is not installed: "
                           "pip install 'faceatlas[dask]'") from None

    with _client(where, config.timeout) as (client, shown):
        session = ClusterSession(client, shown, where.kind, config.chunk_faces, timeout=config.timeout)
        with failures(shown, "connecting"):
            session.stream = get_task_stream(client=client)
            session.stream.__enter__()  # left in ClusterSession.task_seconds (not on an error's way out)
            log(f"cluster: {shown} ({len(client.nthreads())} workers)")
        try:
            yield session
        finally:
            _forget(client)


@contextmanager
def _client(where: ClusterAddress, timeout: float) -> Iterator[tuple[Any, str]]:
    from distributed import Client, LocalCluster
    if where.kind == "local":
        with LocalCluster(n_workers=where.n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR) as cluster, \
                Client(cluster, set_as_default=False) as client:
            yield client, f"local:{where.n_workers}"
        return
    shown = shown_address(where.address)
    try:
        client = Client(where.address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ClusterError(f"--dask {shown}: cannot reach the scheduler ({_brief(exc)}); start it (dask scheduler) "
                           f"and check the address and port, or use --dask local:2") from None
    with client:
        try:
            client.wait_for_workers(1, timeout=timeout)
        except (OSError, TimeoutError):
            raise ClusterError(f"--dask {shown}: the scheduler has no workers after {timeout:g} s; start some "
                               f"(dask worker {shown})") from None
        yield client, shown


@contextmanager
def failures(address: str, stage: str) -> Iterator[None]:
    """Dask's unrecoverable failures during ``stage`` as one :class:`ClusterError` line; faceatlas's own
    errors raised on a worker (e.g. a worker that reads other faces) as they are."""
    from distributed import KilledWorker

    try:
        yield
    except FaceatlasError:
        raise
    except KilledWorker as exc:
        raise ClusterError(f"--dask {address}: {stage}: a task kept killing the workers that ran it ({_brief(exc)}); "
                           "check the workers' memory and logs, or lower dask.chunk_faces") from None
    except (OSError, TimeoutError) as exc:
        raise ClusterError(f"--dask {address}: {stage}: lost the cluster ({_brief(exc)}); check the scheduler and "
                           "rerun (nothing was written)") from None
    except Exception as exc:
        from concurrent.futures import CancelledError

        if isinstance(exc, CancelledError) or type(exc).__name__ in ("FutureCancelledError", "CancelledError"):
            raise ClusterError(f"--dask {address}: {stage}: the cluster dropped the run's work ({_brief(exc)}); "
                               "rerun (nothing was written)") from None
        raise


def _forget(client: Any) -> None:
    """Have every worker drop what it kept for the run (its open inputs, its GPU index); a cluster already gone
    is fine."""
    from job.cluster.tasks import forget

    with suppress(Exception):
        client.run(forget)


def _brief(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__
