"""The client's handle on the faces a cluster's workers hold, and the stages that run over them.

:class:`ClusterFaces` is the :class:`job.space.faces.Faces` of a run with ``--dask``: gathers of a few rows (the
fit sample, the faces left out of an identity) are answered from the client's own copy, and the passes over
every face (identity sums, row-wise dot products, each face's best candidate identity, the kNN queries,
placing the faces not fitted) run as one task per chunk on the worker that holds the chunk.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from job.arrays import FloatArray, IdArray
from job.cluster import tasks
from job.cluster.session import ClusterSession, failures
from job.cluster.source import FaceSource, chunk_digest, read_faces
from job.progress import ProgressFactory, no_progress
from job.space.faces import CANDIDATES, CLUSTER, DOTS, GRAPH, PLACE, SUMS, Density, Faces

if TYPE_CHECKING:
    from job.config import GpuConfig, KnnConfig
    from job.knn.graph import FaceGraph
    from job.reduce.extend import Kernel

LOCAL_BELOW = 1 << 14
"""Row-wise products over fewer pairs than this are computed on the client (a task costs more)."""
READ = "reading faces"
DENSITY = "density aggregate (datashader)"


class ClusterFaces(Faces):
    """The unit faces (n_faces, dim) of a run, held in chunks of ``session.chunk_faces`` faces by the workers
    (each read by the worker from the input ``source``; sent by the client for the built-in demo, ``source``
    None) and, for gathers, by the client (``local``)."""

    where = CLUSTER
    map_work_at = CLUSTER

    def __init__(self, session: ClusterSession, local: np.ndarray, source: FaceSource | None, rows: IdArray,
                 ids: IdArray) -> None:
        super().__init__()
        self.session, self.local = session, local
        size = session.chunk_faces
        self.bounds = [(start, min(start + size, len(local))) for start in range(0, len(local), size)]
        if source is None:
            session.note(READ)
            self.chunks = [session.client.scatter(local[start:stop], hash=False) for start, stop in self.bounds]
        else:
            self.chunks = [session.submit(READ, read_faces, source, rows[start:stop],
                                          chunk_digest(ids[start:stop], local[start:stop]))
                           for start, stop in self.bounds]
        self._sent: list[tuple[Any, Any]] = []  # (array, its future): what was sent to every worker lately

    @property
    def array(self) -> Any:
        return self.local

    # the passes over every face
    def identity_sums(self, codes: IdArray, n_identities: int) -> tuple[FloatArray, np.ndarray]:
        """Unit centroids (n_identities, dim) float32 and sum lengths float64 of the faces with ``codes`` >= 0
        (-1: left out), summed per chunk on the workers and merged there pairwise (only float32 centroids
        come back)."""
        self.noted(SUMS)
        client = self.session.client
        parts = [self.session.submit(SUMS, tasks.chunk_sums, chunk, codes[start:stop], self.session.device)
                 for chunk, (start, stop) in zip(self.chunks, self.bounds, strict=True)]
        while len(parts) > 1:
            parts = [client.submit(tasks.merge_sums, *parts[i:i + 2], pure=False) if i + 1 < len(parts)
                     else parts[i] for i in range(0, len(parts), 2)]
        done = client.submit(tasks.finish_sums, parts[0], n_identities, self.dim, pure=False)
        sums: tuple[FloatArray, np.ndarray] = self.session.gather(SUMS, done)
        return sums

    def rowwise_dot(self, others: np.ndarray, index: IdArray, rows: IdArray | None = None) -> np.ndarray:
        """:func:`job.space.kernels.rowwise_dot` over these faces: one task per chunk of ``rows``."""
        from job.space.kernels import rowwise_dot

        if len(index) < LOCAL_BELOW:
            return rowwise_dot(self.local, others, index, rows)
        self.noted(DOTS)
        faces = np.arange(len(index)) if rows is None else np.asarray(rows, dtype=np.int64)
        order = np.argsort(faces, kind="stable") if rows is not None else np.arange(len(faces))
        starts = np.searchsorted(faces[order], [start for start, _ in self.bounds])
        ends = np.r_[starts[1:], len(order)]
        shared = self._send(others)
        calls, picked = [], []
        for chunk, (start, _), first, last in zip(self.chunks, self.bounds, starts, ends, strict=True):
            if last > first:
                chosen = order[first:last]
                calls.append((chunk, shared, index[chosen], faces[chosen] - start, self.session.device))
                picked.append(chosen)
        out = np.empty(len(index), dtype=np.float64)
        for chosen, values in zip(picked, self.session.run(DOTS, tasks.chunk_rowwise_dot, calls), strict=True):
            out[chosen] = values
        return out

    def best_candidate(self, centroids: FloatArray, scale: np.ndarray, candidates: IdArray, codes: IdArray
                       ) -> tuple[np.ndarray, IdArray]:
        """:func:`job.space.kernels.best_candidate` over these faces, one task per chunk."""
        self.noted(CANDIDATES)
        shared = self._send((centroids, scale))
        calls = [(chunk, shared, candidates[start:stop], codes[start:stop], self.session.device)
                 for chunk, (start, stop) in zip(self.chunks, self.bounds, strict=True)]
        found = self.session.run(CANDIDATES, tasks.chunk_best_candidate, calls)
        return np.concatenate([value for value, _ in found]), np.concatenate([best for _, best in found])

    def face_graph(self, reference: IdArray, k: int, *, knn: KnnConfig, seed: int | None, gpu: GpuConfig,
                   progress: ProgressFactory = no_progress, gpu_free: int | None = None) -> FaceGraph:
        """:func:`job.knn.index.face_graph` over these faces: the index built once (on the client for a CPU index,
        sent to every worker with the reference vectors; on each GPU worker for a GPU one), one task per chunk."""
        from job.arrays import take_rows
        from job.knn.graph import FaceGraph
        from job.knn.index import GPU_EXACT, GPU_EXACT_CUPY, GPU_INDEXES, resolve

        self.noted(GRAPH)
        vectors = take_rows(self.local, reference, np.float32)
        k = min(k, len(reference))
        position = np.full(len(self.local), -1, dtype=np.int64)
        position[reference] = np.arange(len(reference))
        task: Callable[[np.ndarray, Any, int, IdArray], tuple[np.ndarray, FloatArray]]
        if self.session.device:  # exact on the workers' GPUs: NN-descent builds one graph, chunks cannot share it
            cls = GPU_INDEXES[GPU_EXACT if self.session.cuvs else GPU_EXACT_CUPY]()
            reason = (f"knn.method={knn.method} on a cluster of GPU workers: exact search ({cls.name}, the index built "
                      "once on each worker); each chunk searched on a GPU worker")
            shared, task = self.session.scatter((cls.name, vectors, seed)), tasks.chunk_graph_gpu
        else:
            cls, reason = resolve(knn.method, len(reference), knn.exact_max_faces)
            index = cls(seed)
            index.build(vectors)
            shared, task = self.session.scatter((index, vectors)), tasks.chunk_graph
        calls = [(chunk, shared, k, position[start:stop])
                 for chunk, (start, stop) in zip(self.chunks, self.bounds, strict=True)]
        found = self.session.run(GRAPH, task, calls, progress, [stop - start for start, stop in self.bounds])
        return FaceGraph(reference, np.concatenate([rows for rows, _ in found]),
                         np.concatenate([distance for _, distance in found]), cls.name, reason)

    def place(self, fitted: FloatArray, indices: np.ndarray, distances: FloatArray, kernel: Kernel, *,
              parallel: bool, progress: ProgressFactory = no_progress) -> FloatArray:
        """:func:`place_on_cluster`: one task per chunk of the faces placed (``parallel`` is the workers')."""
        self.noted(PLACE)
        return place_on_cluster(self.session, fitted, indices, distances, kernel, progress=progress)

    def density(self, coords: FloatArray) -> Density | None:
        return partial(density_on_cluster, self.session, coords)

    def _send(self, value: Any) -> Any:
        """``value`` (an array, or a tuple of arrays) on every worker, once: the same table's centroids serve
        several passes in a row (a table is never changed in place; a derived one is a new object), so the last
        two values sent are kept, matched by identity."""
        parts = value if isinstance(value, tuple) else (value,)
        for sent, future in self._sent:
            if len(sent) == len(parts) and all(a is b for a, b in zip(sent, parts, strict=True)):
                return future
        future = self.session.scatter(value)
        self._sent = [(parts, future), *self._sent[:1]]
        return future


def place_on_cluster(session: ClusterSession, fitted: FloatArray, indices: np.ndarray, distances: FloatArray,
                     kernel: Kernel, *, progress: ProgressFactory = no_progress) -> FloatArray:
    """:func:`job.reduce.extend.place_rest` with one task per chunk of faces (faces never interact, and each
    face's random state comes from its own start, so chunks do not change the answer)."""
    scaled = session.scatter(np.ascontiguousarray(fitted * kernel.scale, dtype=np.float32))
    size = session.chunk_faces
    bounds = [(start, min(start + size, len(indices))) for start in range(0, len(indices), size)]
    calls = [(scaled, indices[start:stop], distances[start:stop], kernel) for start, stop in bounds]
    placed = session.run(PLACE, tasks.chunk_place, calls, progress, [stop - start for start, stop in bounds])
    if not placed:
        return np.empty((0, fitted.shape[1]), dtype=np.float32)
    whole: FloatArray = np.concatenate(placed)  # the chunks' float32 (numpy's stubs lose the dtype of a list of Any)
    return whole / np.float32(kernel.scale)


def density_on_cluster(session: ClusterSession, coords: FloatArray, frame: Any) -> np.ndarray:
    """Faces per pixel of ``frame`` (plot_height, plot_width) float64: datashader's ``Canvas.points`` count
    over a Dask DataFrame of the map, one partition per chunk of faces, aggregated on the workers."""
    import dask
    import dask.dataframe as dd
    import datashader as ds
    import pandas as pd

    session.note(DENSITY)
    frame_df = dd.from_pandas(pd.DataFrame({"x": coords[:, 0], "y": coords[:, 1]}),
                              npartitions=max(1, -(-len(coords) // session.chunk_faces)), sort=False)
    canvas = ds.Canvas(plot_width=frame.plot_width, plot_height=frame.plot_height, x_range=frame.x_range,
                       y_range=frame.y_range)
    with failures(session.address, DENSITY), dask.config.set(scheduler=session.client.get):
        agg = canvas.points(frame_df, "x", "y", agg=ds.count())
    return np.asarray(agg.data, dtype=np.float64)
