"""How faithful a map is: trustworthiness (local structure kept) and same-identity neighbours."""

from __future__ import annotations

import numpy as np

from job.arrays import FloatArray, IdArray


def trustworthiness(
    unit: FloatArray, coords: FloatArray, k: int = 15, sample: int = 5000, seed: int | None = None
) -> float:
    """scikit-learn's trustworthiness (cosine in the input space) on a random sample of at most ``sample`` faces.

    The sample keeps the cost at sample**2 whatever the database size; neighbourhoods are within the sample.
    """
    from sklearn.manifold import trustworthiness as sk_trustworthiness

    rows = _sample_rows(len(unit), sample, seed)
    k = min(k, (len(rows) - 1) // 2)
    return float(sk_trustworthiness(unit[rows], coords[rows], n_neighbors=k, metric="cosine"))


def same_id_knn(coords: FloatArray, ids: IdArray, k: int = 4) -> float:
    """Mean share of each face's ``k`` nearest map neighbours that carry the same identity id.

    Exact kNN in the 2-D/3-D map with a k-d tree, n log n, so it runs on every face even at millions.
    """
    from scipy.spatial import cKDTree

    n_faces = len(coords)
    k = min(k, n_faces - 1)
    _, neighbours = cKDTree(coords).query(coords, k=k + 1, workers=-1)
    is_self = neighbours == np.arange(n_faces)[:, None]
    # drop the face itself; where a duplicate point displaced it, drop the farthest instead
    keep = ~is_self
    keep[~is_self.any(axis=1), -1] = False
    neighbours = neighbours[keep].reshape(n_faces, k)
    return float((ids[neighbours] == ids[:, None]).mean())


def _sample_rows(n: int, size: int, seed: int | None) -> np.ndarray:
    if n <= size:
        return np.arange(n)
    rng = np.random.default_rng(0 if seed is None else seed)
    return np.sort(rng.choice(n, size=size, replace=False))
