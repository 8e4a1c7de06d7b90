"""Placing the faces that were not fitted onto the fitted UMAP map, chunk by chunk, with UMAP's layout step.

Each face has its ``k`` nearest fitted faces in the run's kNN graph. It starts at the mean of their map
positions weighted by ``exp((cos - best) / temperature)`` (the run's geometry's placement temperature,
:mod:`job.analysis.geometry`; so a face clearly of one person starts on
that person), then moves under UMAP's layout step (umap-learn's ``optimize_layout_euclidean``, as ported in
:mod:`job.reduce.layout`) against the
fixed fitted map: pulled by its neighbours with UMAP's membership weights, pushed off random fitted faces.
That is what ``UMAP.transform`` does, with two differences measured at 300k faces (docs/scale.md):

* the starting point: umap-learn's weighted mean over all ``k`` neighbours drags a face towards strangers
  that sit all over the map;
* the scale: UMAP's kernel has a fixed length (set by ``min_dist``/``spread``), but a map fitted on one face
  per identity is dense, so at that length a placed face drifts away from its identity. The step runs in
  coordinates scaled so that neighbouring fitted faces are ``SPACING`` kernel units apart (then scaled back):
  a placed face settles close to its identity's fitted faces, each at its own spot (faces of one identity
  keep a spread), instead of all on one anchor as ``faceatlas transform`` puts query faces. Measured at 300k
  faces (same-id share of 4 map neighbours / trustworthiness): ``SPACING`` 0.2: 0.866, 0.3: 0.906 / 0.906,
  0.6: 0.916 / 0.909, 1.2: 0.916 / 0.909 (map_id_at_1 0.964), 2.5: 0.915 / 0.908 (0.952); at 10k faces the
  same-id share rises from 0.71 (0.3) to 0.92 (1.2).

Faces never interact with each other, so chunks are independent: :func:`place_chunk` is a pure function of
its chunk, the result does not depend on how the faces are cut into chunks, and a cluster can map it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from job.arrays import FloatArray
from job.progress import ProgressFactory, no_progress

SPACING = 1.2
DEFAULT_TEMPERATURE = 0.02  # where no geometry was measured (models written before it): ArcFace's
CHUNK = 1 << 16


@dataclass(frozen=True)
class Kernel:
    """The layout step's settings, shared by every chunk: UMAP's curve ``a``, ``b``, the repulsion
    ``gamma``, ``n_epochs`` of refinement, the ``scale`` from map units to kernel units, and the random state
    (three int64) every chunk starts from."""

    a: float
    b: float
    gamma: float
    n_epochs: int
    scale: float
    rng_state: np.ndarray
    negative_sample_rate: float = 5.0
    initial_alpha: float = 0.25  # umap-learn's transform: a quarter of the fit's learning rate
    temperature: float = DEFAULT_TEMPERATURE  # the cosine scale of the starting point's neighbour weights


def make_kernel(fitted: FloatArray, min_dist: float, spread: float, gamma: float, n_epochs: int, *,
                seed: int | None, temperature: float = DEFAULT_TEMPERATURE) -> Kernel:
    """The kernel for placing faces on the fitted map ``fitted`` (n_fitted, n_components)."""
    from scipy.spatial import cKDTree

    from job.curve import ab_params

    a, b = ab_params(spread, min_dist)
    gap, _ = cKDTree(fitted).query(fitted, k=2)
    typical = float(np.median(np.asarray(gap)[:, 1])) if len(fitted) > 1 else 1.0
    rng = np.random.default_rng(seed)
    state = rng.integers(np.iinfo(np.int32).min, np.iinfo(np.int32).max, 3).astype(np.int64)
    return Kernel(float(a), float(b), gamma, n_epochs, SPACING / max(typical, 1e-9), state, temperature=temperature)


def place_rest(fitted: FloatArray, indices: np.ndarray, distances: FloatArray, kernel: Kernel, *,
               parallel: bool = True, progress: ProgressFactory = no_progress) -> FloatArray:
    """Map positions of faces whose nearest fitted faces are ``indices`` (n, k) at cosine ``distances``.

    Parameters
    ----------
    fitted : ndarray of shape (n_fitted, n_components), float32 — the fitted map
    indices : ndarray of shape (n, k), int — positions in ``fitted``, nearest first (-1: none)
    distances : ndarray of shape (n, k), float32 — cosine distances to them

    Returns ndarray of shape (n, n_components), float32.
    """
    placed = np.empty((len(indices), fitted.shape[1]), dtype=np.float32)
    scaled = np.ascontiguousarray(fitted * kernel.scale, dtype=np.float32)
    with progress("placing faces", len(indices), "faces") as bar:
        for start in range(0, len(indices), CHUNK):
            stop = min(start + CHUNK, len(indices))
            placed[start:stop] = place_chunk(scaled, indices[start:stop], distances[start:stop], kernel, parallel)
            bar.advance(stop - start)
    return placed / np.float32(kernel.scale)


def place_chunk(scaled: FloatArray, indices: np.ndarray, distances: FloatArray, kernel: Kernel,
                parallel: bool) -> FloatArray:
    """One chunk of :func:`place_rest`, in kernel units (``scaled`` = fitted map x ``kernel.scale``)."""
    from job.reduce.layout import Graph, SgdSettings, optimize_layout, smooth_distances

    n, k = indices.shape
    found = indices >= 0
    position = np.where(found, indices, 0).astype(np.int64)
    dist = np.where(found, distances, np.inf).astype(np.float32)
    start = _start(scaled, position, dist, found, kernel.temperature)
    if kernel.n_epochs <= 0 or not n:
        return start
    # a neighbour not found counts at the row's own farthest found distance (from the row alone: chunks of any
    # size give the same answer)
    farthest = np.where(found, dist, -np.inf).max(axis=1)
    fill = np.where(np.isfinite(farthest), farthest, np.float32(1.0)).astype(np.float32)
    finite = np.where(found, dist, fill[:, None])
    sigmas, rhos = smooth_distances(finite, float(k))
    weight = np.exp(-np.maximum(finite - rhos[:, None], 0.0) / sigmas[:, None]).astype(np.float32)
    weight[~found] = 0.0
    weight[weight < 1.0 / kernel.n_epochs] = 0.0  # as UMAP prunes: edges sampled less than once are dropped
    head = np.repeat(np.arange(n, dtype=np.int32), k)[weight.ravel() > 0]
    tail = position.ravel()[weight.ravel() > 0].astype(np.int32)
    edge = weight.ravel()[weight.ravel() > 0]
    if not len(edge):
        return start
    sgd = SgdSettings(kernel.n_epochs, kernel.a, kernel.b, kernel.rng_state.copy(), kernel.gamma, kernel.initial_alpha,
                      kernel.negative_sample_rate)
    return optimize_layout(start, scaled, Graph(head, tail, edge, len(scaled)), sgd, parallel=parallel,
                           move_other=False)


def _start(scaled: FloatArray, position: np.ndarray, dist: FloatArray, found: np.ndarray, temperature: float
           ) -> FloatArray:
    """Each face's starting point: its neighbours' positions weighted by exp((cos - best) / temperature)."""
    closeness = np.where(found, -(dist - dist[:, :1]) / temperature, -np.inf)
    weight = np.exp(closeness)
    weight /= np.maximum(weight.sum(axis=1, keepdims=True), 1e-30)
    return np.ascontiguousarray(np.einsum("nk,nkc->nc", weight, scaled[position]), dtype=np.float32)
