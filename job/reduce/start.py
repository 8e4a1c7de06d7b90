"""Where UMAP's layout starts: the first principal components of the fitted faces, computed in blocks.

umap-learn's ``init="pca"`` runs scikit-learn's PCA, which holds a centred copy of the data (400 MB for 200k
faces at 512-D) on top of the copy umap-learn already holds. The same components come from the dim x dim
covariance, summed over row blocks, so the only extra memory is one block. umap-learn rescales any start
to [0, 10] per axis, so the scale here does not matter; tiny noise (as umap-learn adds) keeps duplicate
faces apart.
"""

from __future__ import annotations

import numpy as np

from job.arrays import FloatArray

BLOCK = 1 << 14  # rows per block: float64 temporaries of 64 MiB at 512-D
NOISE = 1e-4  # of a start scaled to [-10, 10], as umap-learn's noisy_scale_coords


def pca_start(data: np.ndarray, n_components: int, seed: int | None) -> FloatArray:
    """The ``n_components`` leading principal components of ``data`` (n, dim): (n, n_components) float32,
    each axis's sign fixed so its largest loading is positive (the same start for the same data)."""
    n, dim = data.shape
    total = np.zeros(dim)
    gram = np.zeros((dim, dim))
    for start in range(0, n, BLOCK):
        block = np.asarray(data[start:start + BLOCK], dtype=np.float64)
        total += block.sum(axis=0)
        gram += block.T @ block
    mean = total / n
    covariance = gram / n - np.outer(mean, mean)
    _, vectors = np.linalg.eigh(covariance)
    axes = vectors[:, ::-1][:, :n_components]
    axes *= np.sign(axes[np.abs(axes).argmax(axis=0), np.arange(axes.shape[1])])
    coords = np.empty((n, n_components), dtype=np.float32)
    for start in range(0, n, BLOCK):
        coords[start:start + BLOCK] = (np.asarray(data[start:start + BLOCK], dtype=np.float64) - mean) @ axes
    coords *= np.float32(10.0 / max(float(np.abs(coords).max()), 1e-30))
    coords += np.random.default_rng(seed).normal(scale=NOISE, size=coords.shape).astype(np.float32)
    return coords
