"""Clusters on the map: HDBSCAN (scikit-learn's, as ported in :mod:`job.analysis.hdbscan`, on CPU; cuML on a
GPU), scored against the identity ids.

HDBSCAN builds its minimum spanning tree with Prim's method, which compares every pair of
points (16k points ~1.8 s, 4x per doubling). On CPU it therefore clusters a random sample of at most
``sample`` faces; every other face takes the cluster of its nearest sampled face on the map (a k-d tree,
n log n), or noise when that face is noise.
"""

from __future__ import annotations

import numpy as np

from job.analysis.hdbscan import agreement, hdbscan_labels
from job.arrays import FloatArray, IdArray

__all__ = ["agreement", "cluster_map"]


def cluster_map(coords: FloatArray, min_size: int, use_gpu: bool = False, sample: int = 20_000,
                seed: int | None = None) -> IdArray:
    """HDBSCAN labels of the map points ``coords`` (n_faces, n_components): int64, -1 = noise."""
    n_faces = len(coords)
    if n_faces < max(min_size, 2):
        return np.full(n_faces, -1, dtype=np.int64)
    if use_gpu:
        from cuml.cluster import HDBSCAN as GpuHDBSCAN

        labels = GpuHDBSCAN(min_cluster_size=min_size, output_type="numpy").fit_predict(coords)
        return np.asarray(labels, dtype=np.int64)
    if n_faces <= sample:
        return hdbscan_labels(coords, min_size)
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(0 if seed is None else seed)
    chosen = np.sort(rng.choice(n_faces, size=max(sample, min_size), replace=False))
    labels = hdbscan_labels(coords[chosen], min_size)
    _, nearest = cKDTree(coords[chosen]).query(coords, k=1, workers=-1)
    return labels[nearest].astype(np.int64)
