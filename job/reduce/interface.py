"""What the pipeline needs from a UMAP backend, and what a backend gives back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

from job.arrays import FloatArray
from job.config import KnnConfig, UmapConfig
from job.knn.graph import Neighbors


@dataclass(frozen=True)
class Probe:
    """Whether a backend can run here, and why (not)."""

    name: str
    available: bool
    reason: str
    version: str | None = None


class Backend(Protocol):
    """What the pipeline needs from a UMAP implementation."""

    name: ClassVar[str]
    uses_gpu: ClassVar[bool]
    """True: the run's faces, graph and analysis live on the GPU (CuPy arrays; :meth:`namespace`)."""

    @classmethod
    def probe(cls) -> Probe: ...

    @staticmethod
    def namespace() -> Any:
        """The array module the backend computes with: numpy, or cupy."""
        ...

    def fit_transform(
        self, unit: FloatArray, labels: np.ndarray | None, params: UmapConfig, knn: KnnConfig, seed: int | None, *,
        graph: Neighbors | None = None,
    ) -> Reduction:
        """Fit UMAP on unit vectors of shape (n_faces, dim) float32.

        ``labels``: for supervised UMAP, identity codes 0..n_identities-1 of shape (n_faces,), int32.
        ``graph``: the run's cosine kNN graph of ``unit``, each face first in its row, at least
        ``n_neighbors`` columns (every backend fits on it: one graph for the map and the analysis); built
        here when None. ``unit`` and ``graph`` are CuPy arrays for a backend that ``uses_gpu``.
        """
        ...


@dataclass(frozen=True)
class Reduction:
    """A fitted map: ``coords`` of shape (n_faces, n_components) float32, and how its kNN graph was built."""

    coords: FloatArray
    knn_method: str
    engine: str = ""
