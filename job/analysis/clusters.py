"""Clusters on the map: HDBSCAN (scikit-learn on CPU, cuML on a GPU), scored against the identity ids.

scikit-learn's HDBSCAN builds its minimum spanning tree with Prim's method, which compares every pair of
points (16k points ~1.8 s, 4x per doubling). On CPU it therefore clusters a random sample of at most
``sample`` faces; every other face takes the cluster of its nearest sampled face on the map (a k-d tree,
n log n), or noise when that face is noise.
"""

from __future__ import annotations

import numpy as np

from job.arrays import FloatArray, IdArray


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
    from sklearn.cluster import HDBSCAN

    if n_faces <= sample:
        return HDBSCAN(min_cluster_size=min_size, algorithm="kd_tree", copy=True).fit_predict(coords).astype(np.int64)
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(0 if seed is None else seed)
    chosen = np.sort(rng.choice(n_faces, size=max(sample, min_size), replace=False))
    labels = HDBSCAN(min_cluster_size=min_size, algorithm="kd_tree", copy=True).fit_predict(coords[chosen])
    _, nearest = cKDTree(coords[chosen]).query(coords, k=1, workers=-1)
    return labels[nearest].astype(np.int64)


def agreement(labels: IdArray, ids: IdArray) -> dict[str, float]:
    """``n`` clusters found, and their adjusted Rand index / normalised mutual information with ``ids``.

    Noise points (-1) count as one cluster, so calling everything noise scores 0 on both. (Counting each noise
    point as a cluster of its own would score an all-noise answer highly: singletons share much information
    with identities of a few faces each.)
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    solo = labels < 0
    return {"n": int(len(np.unique(labels[~solo]))), "ari": float(adjusted_rand_score(ids, labels)),
            "nmi": float(normalized_mutual_info_score(ids, labels)), "noise": float(solo.mean())}
