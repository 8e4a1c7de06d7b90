"""Clusters on the map: HDBSCAN (scikit-learn on CPU, cuML on a GPU), scored against the identity ids."""

from __future__ import annotations

import numpy as np

from job.arrays import FloatArray, IdArray


def cluster_map(coords: FloatArray, min_size: int, use_gpu: bool = False) -> IdArray:
    """HDBSCAN labels of the map points ``coords`` (n_faces, n_components): int64, -1 = noise."""
    if len(coords) < max(min_size, 2):
        return np.full(len(coords), -1, dtype=np.int64)
    if use_gpu:
        from cuml.cluster import HDBSCAN as GpuHDBSCAN

        labels = GpuHDBSCAN(min_cluster_size=min_size, output_type="numpy").fit_predict(coords)
        return np.asarray(labels, dtype=np.int64)
    from sklearn.cluster import HDBSCAN

    # a k-d tree suits 2-D/3-D points; copy=True leaves the caller's array untouched
    return HDBSCAN(min_cluster_size=min_size, algorithm="kd_tree", copy=True).fit_predict(coords).astype(np.int64)


def agreement(labels: IdArray, ids: IdArray) -> dict[str, float]:
    """``n`` clusters found, and their adjusted Rand index / normalised mutual information with ``ids``.

    Noise points (-1) each count as their own cluster, so calling everything noise scores no better than chance.
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    solo = labels < 0
    spread = np.where(solo, labels.max(initial=-1) + 1 + np.cumsum(solo), labels)
    return {"n": int(len(np.unique(labels[~solo]))), "ari": float(adjusted_rand_score(ids, spread)),
            "nmi": float(normalized_mutual_info_score(ids, spread)), "noise": float(solo.mean())}
