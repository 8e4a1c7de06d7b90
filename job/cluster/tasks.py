"""What the workers run: pure functions of their arguments, each over one chunk of faces.

Each takes the chunk's unit vectors (a task result the worker already holds, :func:`job.cluster.source.read_faces`)
and small per-chunk arrays, and calls the same code a single-process run calls on all faces at once, so a
chunk's answer is that code's answer for those faces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from job.arrays import FloatArray, IdArray


def worker_facts(source: Any, probe: tuple[IdArray, str] | None = None, device: bool = False) -> dict[str, Any]:
    """What the client checks on every worker: versions, whether it reads the client's faces from ``source``
    (``probe``: input rows and their :func:`~job.cluster.source.chunk_digest` on the client; ``input`` is "ok"
    or why not), and with ``device`` its GPU (``gpu``: the device's name, or None with ``gpu_reason``) and
    whether cuVS is there."""
    import importlib.util
    import platform

    import dask
    import distributed

    from job import __version__
    from job.errors import FaceatlasError

    facts: dict[str, Any] = {"faceatlas": __version__, "python": platform.python_version(), "numpy": np.__version__,
                             # set in their __init__ by `from ._version import __version__`: no export to mypy
                             "dask": dask.__version__,  # type: ignore[attr-defined, unused-ignore]
                             "distributed": distributed.__version__,  # type: ignore[attr-defined, unused-ignore]
                             "input": "ok"}
    if source is not None and probe is not None:
        from job.cluster.source import read_faces

        try:
            read_faces(source, *probe)
        except FaceatlasError as exc:
            facts["input"] = str(exc)
    if device:
        from job.gpu import probe_gpu

        info = probe_gpu()
        facts.update(gpu=info.device if info.available else None, gpu_reason=info.reason,
                     cuvs=importlib.util.find_spec("cuvs") is not None)
    return facts


def forget() -> None:
    """Drop what this worker keeps between tasks of a run (its open inputs, its GPU index): run at the run's
    end, so a long-lived worker holds nothing of the database."""
    from job.cluster.source import forget as close_inputs

    close_inputs()
    _GPU_INDEX.clear()


def _on(device: bool, *arrays: Any) -> tuple[Any, ...]:
    """``arrays`` on this worker's GPU (CuPy) when ``device``, else as they are."""
    if not device:
        return arrays
    import cupy

    return tuple(cupy.asarray(array) for array in arrays)


@dataclass(frozen=True)
class Partial:
    """Sums of unit faces per identity over some chunks: the identity ``codes`` (sorted) and their float64
    ``sums`` (len(codes), dim)."""

    codes: IdArray
    sums: np.ndarray


def chunk_sums(unit: np.ndarray, codes: IdArray, device: bool = False) -> Partial:
    """The identity sums of one chunk's kept faces (``codes`` per face, -1: left out of the sums); on the
    worker's GPU with ``device``."""
    from job.xp import group_sums, namespace, run_starts, to_host

    unit, codes = _on(device, unit, codes)
    xp = namespace(unit, codes)
    kept = xp.flatnonzero(codes >= 0)
    kept = kept[xp.argsort(codes[kept], kind="stable")]
    if not len(kept):
        return Partial(np.zeros(0, dtype=np.int64), np.zeros((0, unit.shape[1])))
    starts = run_starts(codes[kept])
    return Partial(to_host(codes[kept][starts]), to_host(group_sums(unit[kept].astype(xp.float64), starts)))


def merge_sums(first: Partial, second: Partial) -> Partial:
    """Two partial sums as one (identities in both are added)."""
    codes = np.union1d(first.codes, second.codes)
    sums = np.zeros((len(codes), max(first.sums.shape[1], second.sums.shape[1])))
    for part in (first, second):
        if len(part.codes):
            sums[np.searchsorted(codes, part.codes)] += part.sums
    return Partial(codes, sums)


def finish_sums(total: Partial, n_identities: int, dim: int) -> tuple[FloatArray, np.ndarray]:
    """The unit centroids (n_identities, dim) float32 and sum lengths (n_identities,) float64 of the summed
    identities (zero rows for an identity with no face summed), as :func:`job.space.kernels.sum_identities`
    stores them."""
    from job.space.kernels import store_sums

    centroids = np.zeros((n_identities, dim), dtype=np.float32)
    norms = np.zeros(n_identities, dtype=np.float64)
    if len(total.codes):
        store_sums(centroids, norms, total.codes, total.sums)
    return centroids, norms


def chunk_rowwise_dot(unit: np.ndarray, others: np.ndarray, index: IdArray, rows: IdArray, device: bool = False
                      ) -> np.ndarray:
    """``unit[rows[i]] . others[index[i]]`` within one chunk (float64); on the worker's GPU with ``device``."""
    from job.space.kernels import rowwise_dot
    from job.xp import to_host

    dots: np.ndarray = to_host(rowwise_dot(*_on(device, unit, others, index, rows)))
    return dots


def chunk_best_candidate(unit: np.ndarray, shared: tuple[FloatArray, np.ndarray], candidates: IdArray,
                         codes: IdArray, device: bool = False) -> tuple[np.ndarray, IdArray]:
    """:func:`job.space.kernels.best_candidate` for one chunk's faces (``shared``: the centroids and their
    scales, sent to every worker once); on the worker's GPU with ``device``."""
    from job.space.kernels import best_candidate
    from job.xp import to_host

    centroids, scale = shared
    value, best = best_candidate(*_on(device, unit, centroids, scale, candidates, codes))
    return to_host(value), to_host(best)


def chunk_graph(unit: np.ndarray, shared: tuple[Any, np.ndarray], k: int, own: IdArray
                ) -> tuple[np.ndarray, FloatArray]:
    """One chunk's rows of the run's kNN graph: positions among the reference faces (int32, reference faces
    first in their own rows) and cosine distances (float32); ``shared`` is the built index and the reference
    vectors."""
    from job.knn.index import graph_rows

    index, reference = shared
    return graph_rows(index, unit, k, own, reference)


_GPU_INDEX: dict[int, tuple[Any, Any]] = {}  # the one GPU index of this worker: id(reference) -> (reference, index)


def chunk_graph_gpu(unit: np.ndarray, shared: tuple[str, np.ndarray, Any], k: int, own: IdArray
                    ) -> tuple[np.ndarray, FloatArray]:
    """One chunk's graph rows searched on this worker's GPU: ``shared`` is the GPU index's name
    (:data:`job.knn.index.GPU_INDEXES`), the reference vectors and the seed; the index is built once per worker
    (each worker holds one copy of the broadcast reference) and kept for the run's other chunks."""
    import cupy

    from job.knn.index import GPU_INDEXES, graph_rows
    from job.xp import to_host

    name, reference, seed = shared
    held = _GPU_INDEX.get(id(reference))
    if held is None or held[0] is not reference:
        _GPU_INDEX.clear()
        index = GPU_INDEXES[name]()(seed)
        index.build(cupy.asarray(reference))
        held = _GPU_INDEX[id(reference)] = (reference, index)
    found, distances = graph_rows(held[1], cupy.asarray(unit), k, cupy.asarray(own))
    return to_host(found), to_host(distances)


def chunk_place(scaled: FloatArray, indices: np.ndarray, distances: FloatArray, kernel: Any) -> FloatArray:
    """One chunk of placed faces, in kernel units (:func:`job.reduce.extend.place_chunk`, one thread: the
    cluster's workers are the parallelism)."""
    from job.reduce.extend import place_chunk

    return place_chunk(scaled, indices, distances, kernel, parallel=False)

