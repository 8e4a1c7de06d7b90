"""The client's handle on the faces a cluster's workers hold, and the stages that run over them.

:class:`ClusterFaces` stands where a single-process run passes its (n_faces, dim) unit array: gathers of a few
rows (``faces[rows]``, the fit sample, the faces left out of an identity) are answered from the client's own
copy, and the passes over every face (identity sums, row-wise dot products, each face's best candidate
identity, the kNN queries) run as one task per chunk on the worker that holds the chunk. The analysis code
asks for these through the methods it finds on its ``unit`` argument, so it is the same code in both runs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from job.arrays import FloatArray, IdArray
from job.cluster import tasks
from job.cluster.session import ClusterSession, failures
from job.cluster.source import FaceSource, ids_digest, read_faces
from job.progress import ProgressFactory, no_progress

LOCAL_BELOW = 1 << 14
"""Row-wise products over fewer pairs than this are computed on the client (a task costs more)."""
READ = "reading faces"
SUMS, DOTS, CANDIDATES, GRAPH, PLACE, DENSITY = ("identity sums", "per-face fits (row-wise products)",
                                                 "best candidate identities", "kNN graph queries",
                                                 "placement of the faces not fitted",
                                                 "density aggregate (datashader)")


class ClusterFaces:
    """The unit faces (n_faces, dim) of a run, held in chunks of ``session.chunk_faces`` faces by the workers
    (each read by the worker from the input) and, for gathers, by the client (``local``)."""

    def __init__(self, session: ClusterSession, local: np.ndarray, source: FaceSource, rows: IdArray,
                 ids: IdArray) -> None:
        self.session, self.local = session, local
        size = session.chunk_faces
        self.bounds = [(start, min(start + size, len(local))) for start in range(0, len(local), size)]
        self.chunks = [session.submit(READ, read_faces, source, rows[start:stop], ids_digest(ids[start:stop]))
                       for start, stop in self.bounds]

    # the array the analysis indexes
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.local.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.local.dtype

    @property
    def ndim(self) -> int:
        return 2

    def __len__(self) -> int:
        return len(self.local)

    def __getitem__(self, rows: Any) -> np.ndarray:
        return self.local[rows]

    # the passes over every face
    def identity_sums(self, codes: IdArray, n_identities: int) -> tuple[FloatArray, np.ndarray]:
        """Unit centroids (n_identities, dim) float32 and sum lengths float64 of the faces with ``codes`` >= 0
        (-1: left out), summed per chunk on the workers and merged there pairwise (only float32 centroids
        come back)."""
        client = self.session.client
        parts = [self.session.submit(SUMS, tasks.chunk_sums, chunk, codes[start:stop])
                 for chunk, (start, stop) in zip(self.chunks, self.bounds, strict=True)]
        while len(parts) > 1:
            parts = [client.submit(tasks.merge_sums, *parts[i:i + 2], pure=False) if i + 1 < len(parts)
                     else parts[i] for i in range(0, len(parts), 2)]
        done = client.submit(tasks.finish_sums, parts[0], n_identities, self.shape[1], pure=False)
        return self.session.gather(SUMS, done)

    def rowwise_dot(self, others: np.ndarray, index: IdArray, rows: IdArray | None = None) -> np.ndarray:
        """:func:`job.analysis.identities.rowwise_dot` over these faces: one task per chunk of ``rows``."""
        from job.analysis.identities import rowwise_dot

        if len(index) < LOCAL_BELOW:
            return rowwise_dot(self.local, others, index, rows)
        faces = np.arange(len(self.local)) if rows is None else np.asarray(rows, dtype=np.int64)
        order = np.argsort(faces, kind="stable") if rows is not None else np.arange(len(faces))
        starts = np.searchsorted(faces[order], [start for start, _ in self.bounds])
        ends = np.r_[starts[1:], len(order)]
        shared = self.session.scatter(others)
        calls, picked = [], []
        for chunk, (start, _), first, last in zip(self.chunks, self.bounds, starts, ends, strict=True):
            if last > first:
                chosen = order[first:last]
                calls.append((chunk, shared, index[chosen], faces[chosen] - start))
                picked.append(chosen)
        out = np.empty(len(index), dtype=np.float64)
        for chosen, values in zip(picked, self.session.run(DOTS, tasks.chunk_rowwise_dot, calls), strict=True):
            out[chosen] = values
        return out

    def best_candidate(self, centroids: FloatArray, scale: np.ndarray, candidates: IdArray, codes: IdArray
                       ) -> tuple[np.ndarray, IdArray]:
        """:func:`job.analysis.suspects.best_candidate` over these faces, one task per chunk."""
        shared = self.session.scatter((centroids, scale))
        calls = [(chunk, shared, candidates[start:stop], codes[start:stop])
                 for chunk, (start, stop) in zip(self.chunks, self.bounds, strict=True)]
        found = self.session.run(CANDIDATES, _best_candidate, calls)
        return np.concatenate([value for value, _ in found]), np.concatenate([best for _, best in found])

    def graph_rows(self, index: Any, reference: np.ndarray, k: int, position: IdArray,
                   progress: ProgressFactory = no_progress) -> tuple[np.ndarray, FloatArray]:
        """Every face's row of the run's kNN graph (:func:`job.knn.index.graph_rows`), the built ``index`` and
        the ``reference`` vectors sent to every worker once and one task per chunk."""
        shared = self.session.scatter((index, reference))
        calls = [(chunk, shared, k, position[start:stop])
                 for chunk, (start, stop) in zip(self.chunks, self.bounds, strict=True)]
        found = self.session.run(GRAPH, tasks.chunk_graph, calls, progress,
                                 [stop - start for start, stop in self.bounds])
        return np.concatenate([rows for rows, _ in found]), np.concatenate([dist for _, dist in found])


def _best_candidate(unit: np.ndarray, shared: tuple[FloatArray, np.ndarray], candidates: IdArray, codes: IdArray
                    ) -> tuple[np.ndarray, IdArray]:
    centroids, scale = shared
    return tasks.chunk_best_candidate(unit, centroids, scale, candidates, codes)


def place_on_cluster(session: ClusterSession, fitted: FloatArray, indices: np.ndarray, distances: FloatArray,
                     kernel: Any, progress: ProgressFactory = no_progress) -> FloatArray:
    """:func:`job.reduce.extend.place_rest` with one task per chunk of faces (faces never interact, and each
    face's random state comes from its own start, so chunks do not change the answer)."""
    scaled = session.scatter(np.ascontiguousarray(fitted * kernel.scale, dtype=np.float32))
    size = session.chunk_faces
    bounds = [(start, min(start + size, len(indices))) for start in range(0, len(indices), size)]
    calls = [(scaled, indices[start:stop], distances[start:stop], kernel) for start, stop in bounds]
    placed = session.run(PLACE, tasks.chunk_place, calls, progress, [stop - start for start, stop in bounds])
    if not placed:
        return np.empty((0, fitted.shape[1]), dtype=np.float32)
    return np.concatenate(placed) / np.float32(kernel.scale)


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
