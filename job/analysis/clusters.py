"""Clusters on the map: HDBSCAN (scikit-learn's, as ported in :mod:`job.analysis.hdbscan`, on CPU; cuML's with
NN-descent on a GPU, on every face), scored against the identity ids.

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
    if use_gpu:  # every face: cuML's HDBSCAN builds its kNN by NN-descent, not all pairs
        from job.reduce.gpu_umap import hdbscan_labels as gpu_labels

        return gpu_labels(coords, min_size)
    if n_faces <= sample:
        return hdbscan_labels(coords, min_size)
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(0 if seed is None else seed)
    chosen = np.sort(rng.choice(n_faces, size=max(sample, min_size), replace=False))
    labels = hdbscan_labels(coords[chosen], min_size)
    _, nearest = cKDTree(coords[chosen]).query(coords, k=1, workers=-1)
    return labels[nearest].astype(np.int64)
