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

from job.address import ClusterAddress, parse_address, require_transport, shown_address
from job.errors import ClusterError, FaceatlasError, one_line

if TYPE_CHECKING:
    from job.cluster.source import FaceSource
    from job.config import DaskConfig
    from job.progress import ProgressFactory

Log = Callable[[str], None]
POLL_SECONDS = 0.05  # how often unfinished tasks are looked at
HANDSHAKE_GRACE = 2.0  # seconds past dask.timeout before an unanswered handshake is given up
LOOP_STOP_SECONDS = 10.0  # for the IO loop's thread to end (it is a daemon: exit never waits on it)
WORKER_BYTES = 140 * 2**20  # one LocalCluster worker process (Python, NumPy, Dask, faceatlas) before any faces
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
    streamed: list[dict[str, Any]] | None = None  # the stream's tasks, collected once (task_seconds)

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
        except Exception as exc:  # noqa: BLE001 - the scheduler went away, or the client cannot send the function
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
        results: list[Any] = self.client.gather(futures)
        return results

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

        if self.streamed is None:  # collected once: leaving the stream again would add its tasks again
            self.stream.__exit__(None, None, None)  # collects the stream since the session opened
            self.streamed = list(self.stream.data)
        kinds: dict[str, dict[str, float]] = {}
        for task in self.streamed:
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
        _require_local_memory(where.n_workers)
        with LocalCluster(n_workers=where.n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR) as cluster, \
                Client(cluster, set_as_default=False) as client:
            yield client, f"local:{where.n_workers}"
        return
    shown = shown_address(where.address)
    require_transport(where.address)
    with _io_loop() as loop:
        client = _handshake(loop, where.address, shown, timeout)
        try:
            try:
                client.wait_for_workers(1, timeout=timeout)
            except (OSError, TimeoutError):
                raise ClusterError(f"--dask {shown}: the scheduler has no workers after {timeout:g} s; start some "
                                   f"(dask worker {shown})") from None
            yield client, shown
        finally:
            _close(client, timeout)


def _require_local_memory(n_workers: int) -> None:
    """Refuse a LocalCluster whose worker processes would not fit in the memory available now, naming how many
    would (:class:`~job.errors.OutOfMemoryError`: the same ``local:N`` runs on a machine with more memory)."""
    from job.io.memory import available_bytes, require

    fit = (available_bytes() or 0) // WORKER_BYTES
    fix = f"use --dask local:{fit} (at most {fit} fit)" if fit else "run without --dask"
    require(n_workers * WORKER_BYTES, None, f"--dask local:{n_workers}: starting {n_workers} worker processes "
            f"(about {WORKER_BYTES >> 20} MiB each)", fix)


@contextmanager
def _io_loop() -> Iterator[Any]:
    """A Tornado IO loop in a daemon thread of this module's own, stopped (its leftover tasks cancelled, as
    ``asyncio.run`` does) on the way out. A Client made on it is asynchronous there and synchronous everywhere
    else (``distributed.utils.SyncMethodMixin``), and its handshake can be abandoned at a deadline."""
    import asyncio
    import threading
    from concurrent.futures import Future

    ready: Future[tuple[Any, asyncio.Event]] = Future()

    async def serve() -> None:
        from tornado.ioloop import IOLoop

        stop = asyncio.Event()
        ready.set_result((IOLoop.current(), stop))
        await stop.wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), name="faceatlas-dask-loop", daemon=True)
    thread.start()
    loop, stop = ready.result(timeout=LOOP_STOP_SECONDS)
    try:
        yield loop
    finally:
        loop.add_callback(stop.set)
        thread.join(timeout=LOOP_STOP_SECONDS)


def _handshake(loop: Any, address: str, shown: str, timeout: float) -> Any:
    """A Client of the scheduler at ``address``, connected within ``timeout`` + ``HANDSHAKE_GRACE`` seconds: the
    whole of Dask's handshake (TCP connect, the comm handshake, the identity and register-client exchanges) runs
    under one deadline, since Dask bounds only the TCP connect and a server that accepts and never answers (or
    answers in HTTP) would hold it forever. Any failure is one :class:`ClusterError` line."""
    from distributed import Client
    from distributed.utils import sync

    deadline = timeout + HANDSHAKE_GRACE  # Dask's own "cannot connect" after ``timeout`` comes first

    async def new() -> Any:  # made on ``loop``, so Client.__init__ schedules its start there and returns
        return Client(address, asynchronous=True, timeout=timeout, set_as_default=False)

    async def started(client: Any) -> None:
        import asyncio

        await asyncio.wait_for(client, deadline)  # on the deadline, cancels the start (its comm is aborted)

    try:
        client = sync(loop, new)
    except Exception as exc:  # noqa: BLE001 - before any connection: a security loader or preload that fails
        raise ClusterError(f"--dask {shown}: Dask's client could not be set up ({_brief(exc)}); check Dask's "
                           "distributed.client.* config") from None
    try:
        sync(loop, started, client, callback_timeout=deadline + HANDSHAKE_GRACE)
    except Exception as exc:  # noqa: BLE001 - whatever failed, one ClusterError line (_handshake_error)
        _close(client, timeout)
        raise _handshake_error(exc, shown, timeout) from None
    except BaseException:  # Ctrl-C: close what was opened, then stop
        _close(client, timeout)
        raise
    return client


def _handshake_error(exc: Exception, shown: str, timeout: float) -> ClusterError:
    """What a failed handshake means: nothing there, something that is not a Dask scheduler, or a scheduler that
    refused this client."""
    from distributed.comm.core import CommClosedError

    port_fix = "check the port (a Dask scheduler listens on 8786, its dashboard on 8787)"
    if isinstance(exc, TimeoutError):
        return ClusterError(f"--dask {shown}: something there accepted the connection but did not answer Dask's "
                            f"handshake within {timeout:g} s, so it is not a Dask scheduler (or one too busy to "
                            f"answer); {port_fix}, or raise dask.timeout")
    if isinstance(exc, CommClosedError):
        return ClusterError(f"--dask {shown}: the server there closed the connection during Dask's handshake: not a "
                            f"Dask scheduler, or one that speaks another protocol (tls://); {port_fix} and the "
                            "protocol")
    if isinstance(exc, OSError):
        return ClusterError(f"--dask {shown}: cannot reach the scheduler ({_brief(exc)}); start it (dask scheduler) "
                            "and check the address and port, or use --dask local:2")
    if isinstance(exc, ImportError):  # the scheduler's own refusal (Dask versions it cannot work with)
        return ClusterError(f"--dask {shown}: the scheduler refused this client ({_brief(exc)}); install the "
                            "scheduler's dask and distributed versions here")
    # MemoryError: the first 8 bytes of an HTTP reply ("HTTP/1.1") read as a Dask frame length of 3 EiB
    return ClusterError(f"--dask {shown}: the server there is not a Dask scheduler (it answered in another protocol, "
                        f"e.g. HTTP: reading its reply as a Dask message failed with {_kind(exc)}); {port_fix}")


def _kind(exc: BaseException) -> str:
    """The exception's most telling name: its first built-in class short of Exception (numpy's
    _ArrayMemoryError -> MemoryError), else its own, with its module (struct.error)."""
    for cls in type(exc).__mro__:
        if cls.__module__ == "builtins" and cls not in (Exception, BaseException, object):
            return cls.__name__
    return f"{type(exc).__module__}.{type(exc).__qualname__}"


def _close(client: Any, timeout: float) -> None:
    """Close ``client`` from this thread; one that failed to start, or a scheduler already gone, is fine."""
    with suppress(Exception):
        client.close(timeout=timeout)


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
    lines = str(exc).strip().splitlines()  # the first line: a worker's error can carry its traceback
    text = one_line(lines[0], 200) if lines else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
