"""Every face of a run, wherever it is held, and the passes over all of them.

A run holds its unit faces (n_faces, dim) in one of three places, decided once (:func:`job.where.hold_faces`):

* :class:`HostFaces`: a NumPy array in this process;
* :class:`DeviceFaces`: a CuPy array on this process's GPU (copied there once);
* :class:`job.cluster.faces.ClusterFaces`: chunks held by a Dask cluster's workers (and the client's copy).

The stages never ask which: they call the operations of :class:`Faces` (identity sums, row-wise products, each
face's best candidate identity, the kNN graph, placing the faces not fitted, gathering rows) and compute the
rest in :attr:`Faces.xp`, the namespace the small per-identity results live in. Each operation notes itself in
:attr:`Faces.ran` when it runs, so run.json's record of what ran where is read from what ran.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from job.arrays import FloatArray, IdArray, take_rows
from job.progress import ProgressFactory, no_progress
from job.space import kernels
from job.xp import namespace, on_device, to_host

if TYPE_CHECKING:
    from job.config import GpuConfig, KnnConfig
    from job.knn.graph import FaceGraph
    from job.reduce.extend import Kernel

SUMS, DOTS, CANDIDATES, GRAPH, PLACE = ("identity sums", "per-face fits (row-wise products)",
                                        "best candidate identities", "kNN graph queries",
                                        "placement of the faces not fitted")
"""The passes over every face, as :attr:`Faces.ran` names them."""

Density = Callable[[Any], np.ndarray]
HOST, DEVICE, CLUSTER = "host", "device", "cluster"
"""Where work runs, as :attr:`Faces.where` and run.json's ``gpu`` record name it."""


class Faces(ABC):
    """The unit faces (n_faces, dim) of a run and the passes over every face, computed where they are held.

    ``where``: "host", "device" or "cluster". ``xp``: the namespace of the arrays the operations take and give
    (NumPy, or CuPy for device faces). ``array``: every face as an array of ``xp`` for the whole-map work this
    process does itself (trustworthiness' sample, the held-out and inverse checks read rows of it).
    """

    where: ClassVar[str]
    array_at: ClassVar[str] = HOST
    """Where the whole-map work on :attr:`array` runs (trustworthiness' sample)."""
    map_work_at: ClassVar[str] = HOST
    """Where the passes over the map's faces run (placing the faces not fitted, counting faces per pixel)."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    @property
    @abstractmethod
    def array(self) -> Any:
        """Every face, (n_faces, dim), in ``xp``."""

    @property
    def xp(self) -> ModuleType:
        return namespace(self.array)

    @property
    def n_faces(self) -> int:
        return int(self.array.shape[0])

    @property
    def dim(self) -> int:
        return int(self.array.shape[1])

    def rows(self, rows: Any, dtype: Any = None) -> Any:
        """The faces ``rows`` (a NumPy index array) as a NumPy array; with ``dtype``, converted block by block
        (no full-size temporary of the stored dtype). Device faces gather on the device."""
        return self.array[rows] if dtype is None else take_rows(self.array, np.asarray(rows), dtype)

    def to_here(self, array: Any) -> Any:
        """``array`` in ``xp`` (one copy to the GPU for device faces)."""
        return self.xp.asarray(array) if on_device(self.xp) else to_host(array)

    def noted(self, label: str) -> None:
        """Note that the pass ``label`` ran (once)."""
        if label not in self.ran:
            self.ran.append(label)

    @abstractmethod
    def identity_sums(self, codes: IdArray, n_identities: int) -> tuple[FloatArray, np.ndarray]:
        """:func:`job.space.kernels.sum_identities` over every face (``codes`` -1: left out)."""

    @abstractmethod
    def rowwise_dot(self, others: np.ndarray, index: IdArray, rows: IdArray | None = None) -> np.ndarray:
        """:func:`job.space.kernels.rowwise_dot` over these faces (``rows`` None: every face in order)."""

    @abstractmethod
    def best_candidate(self, centroids: FloatArray, scale: np.ndarray, candidates: IdArray, codes: IdArray
                       ) -> tuple[np.ndarray, IdArray]:
        """:func:`job.space.kernels.best_candidate` over every face."""

    @abstractmethod
    def face_graph(self, reference: IdArray, k: int, *, knn: KnnConfig, seed: int | None, gpu: GpuConfig,
                   progress: ProgressFactory = no_progress, gpu_free: int | None = None) -> FaceGraph:
        """:func:`job.knn.index.face_graph` over these faces (``gpu_free``: the GPU's free memory before the
        run, for a device index's batching)."""

    def place(self, fitted: FloatArray, indices: np.ndarray, distances: FloatArray, kernel: Kernel, *,
              parallel: bool, progress: ProgressFactory = no_progress) -> FloatArray:
        """:func:`job.reduce.extend.place_rest` (host code, numba) for the faces whose graph rows are given."""
        from job.reduce.extend import place_rest

        self.noted(PLACE)
        return place_rest(fitted, indices, distances, kernel, parallel=parallel, progress=progress)

    def density(self, coords: FloatArray) -> Density | None:
        """How to count the map's faces per pixel elsewhere (a Dask cluster's workers), or None: here."""
        return None


class HostFaces(Faces):
    """The faces as a NumPy array of this process."""

    where = HOST

    def __init__(self, unit: np.ndarray) -> None:
        super().__init__()
        self.unit = unit

    @property
    def array(self) -> Any:
        return self.unit

    def identity_sums(self, codes: IdArray, n_identities: int) -> tuple[FloatArray, np.ndarray]:
        self.noted(SUMS)
        return kernels.sum_identities(self.unit, codes, n_identities)

    def rowwise_dot(self, others: np.ndarray, index: IdArray, rows: IdArray | None = None) -> np.ndarray:
        self.noted(DOTS)
        return kernels.rowwise_dot(self.unit, others, index, rows)

    def best_candidate(self, centroids: FloatArray, scale: np.ndarray, candidates: IdArray, codes: IdArray
                       ) -> tuple[np.ndarray, IdArray]:
        self.noted(CANDIDATES)
        return kernels.best_candidate(self.unit, centroids, scale, candidates, codes)

    def face_graph(self, reference: IdArray, k: int, *, knn: KnnConfig, seed: int | None, gpu: GpuConfig,
                   progress: ProgressFactory = no_progress, gpu_free: int | None = None) -> FaceGraph:
        from job.knn.index import face_graph

        self.noted(GRAPH)
        return face_graph(self.unit, reference, k, knn, seed=seed, progress=progress, gpu=gpu, gpu_free=gpu_free)


class DeviceFaces(HostFaces):
    """The faces as a CuPy array on this process's GPU; the operations run there and answer with CuPy arrays
    (the graph too: a GPU index builds it)."""

    where = DEVICE
    array_at = DEVICE

    def rows(self, rows: Any, dtype: Any = None) -> Any:
        """The faces ``rows`` (an index array of either namespace) as a CuPy array (``dtype``: converted)."""
        chosen = self.unit[self.xp.asarray(rows)]
        return chosen if dtype is None else chosen.astype(dtype, copy=False)


def as_faces(unit: Faces | np.ndarray) -> Faces:
    """``unit`` as :class:`Faces`: an array becomes host or device faces by its own namespace (library callers
    and tests pass arrays; a run passes the faces :func:`job.where.hold_faces` chose)."""
    if isinstance(unit, Faces):
        return unit
    return DeviceFaces(unit) if on_device(namespace(unit)) else HostFaces(unit)
