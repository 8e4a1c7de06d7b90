"""UMAP's CPU fit without importing umap-learn: its fuzzy simplicial set in numpy, its layout as a cached kernel.

Why (measured on the 2-core machine, docs/benchmarks.md, "The everyday run"): ``import umap`` costs 2.3 s in a
warm process (scikit-learn 0.95 s, pynndescent 2.0 s loading its cached kernels) and 18 s on a fresh machine, where
pynndescent compiles its eagerly typed kernels at import; ``umap.utils`` recompiles two kernels on every
import, and umap-learn's fuzzy-set and layout kernels are not cached, so every new process compiles them.
faceatlas never uses pynndescent (it hands UMAP its own kNN graph), so the fit is done here, step for step as
umap-learn 0.5 does it for a precomputed graph:

* :func:`smooth_distances` — ``smooth_knn_dist``: each face's ``rho`` (distance to its nearest other face) and
  ``sigma`` (binary search, 64 steps, so the memberships sum to log2(k)), vectorised over all faces at once;
* :func:`fuzzy_graph` — ``compute_membership_strengths`` and the fuzzy union A + A^T - A o A^T, with the
  supervised intersection (``target_weight``) and ``reset_local_connectivity`` when labels are given;
* :func:`job.curve.ab_params` — ``find_ab_params``: UMAP's low-dimensional curve fitted by Levenberg-Marquardt;
* :func:`optimize_layout` — ``optimize_layout_euclidean``: the same SGD (attraction along sampled edges,
  negative sampling with the same Tausworthe generator and per-face states, the same learning-rate decay),
  run as one numba kernel with ``cache=True`` that releases the GIL.

``tests/reduce/test_layout.py`` checks each against umap-learn itself: the same sigmas, rhos and graph, and with one
thread the very same layout from the same start and random state.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from job.arrays import FloatArray

SMOOTH_K_TOLERANCE = 1e-5  # as umap-learn
MIN_K_DIST_SCALE = 1e-3
N_ITER = 64
INITIAL_ALPHA = 1.0  # umap-learn's learning_rate
NEGATIVE_SAMPLE_RATE = 5.0
BLOCKS_PER_THREAD = 4  # edges of an epoch cut into this many blocks per thread, so no thread waits long
DISCONNECTED = 2.0  # cosine distance at which umap-learn cuts an edge (opposite vectors)


@dataclass(frozen=True)
class Graph:
    """UMAP's weighted graph as edge lists, in umap-learn's order (rows, then columns): ``head``, ``tail``
    int32 and ``weight`` float32, over ``n_vertices`` faces."""

    head: np.ndarray
    tail: np.ndarray
    weight: np.ndarray
    n_vertices: int


def smooth_distances(distances: FloatArray, k: float) -> tuple[FloatArray, FloatArray]:
    """``sigma`` and ``rho`` of each row of ``distances`` (n, k) float32, sorted, column 0 = the face itself.

    As umap-learn's ``smooth_knn_dist`` with local_connectivity 1: rho is the row's first positive distance;
    sigma is found by bisection so that sum over columns 1.. of exp(-max(d - rho, 0) / sigma) = log2(k),
    then floored at 1e-3 of the row's mean distance (of all distances when rho is 0).
    Returns (sigmas, rhos), each (n,) float32.
    """
    distances = np.asarray(distances, dtype=np.float32)
    n = len(distances)
    target = np.log2(k)
    positive = distances > 0.0
    has = positive.any(axis=1)
    rho = np.where(has, distances[np.arange(n), positive.argmax(axis=1)], 0.0).astype(np.float32)
    shifted = distances[:, 1:] - rho[:, None]  # float32, as in umap-learn
    inside = shifted <= 0  # these count 1 whatever sigma is
    lo, hi, mid = np.zeros(n), np.full(n, np.inf), np.ones(n)
    active = np.ones(n, dtype=bool)
    for _ in range(N_ITER):
        rows = np.flatnonzero(active)
        if not len(rows):
            break
        psum = np.where(inside[rows], 1.0, np.exp(-(shifted[rows] / mid[rows, None]))).sum(axis=1)
        done = np.abs(psum - target) < SMOOTH_K_TOLERANCE
        move = rows[~done]
        above = psum[~done] > target
        high, low = move[above], move[~above]
        hi[high] = mid[high]
        mid[high] = (lo[high] + hi[high]) / 2.0
        lo[low] = mid[low]
        unbounded = low[np.isinf(hi[low])]
        bounded = low[~np.isinf(hi[low])]
        mid[unbounded] *= 2
        mid[bounded] = (lo[bounded] + hi[bounded]) / 2.0
        active[rows[done]] = False
    sigma = mid.astype(np.float32)
    floor = np.where(rho > 0.0, MIN_K_DIST_SCALE * distances.mean(axis=1, dtype=np.float64),
                     MIN_K_DIST_SCALE * float(distances.mean(dtype=np.float64)))
    sigma = np.where(sigma < floor, floor, sigma).astype(np.float32)
    return sigma, rho


def fuzzy_graph(indices: np.ndarray, distances: FloatArray, labels: np.ndarray | None = None,
                target_weight: float = 0.5) -> Graph:
    """UMAP's fuzzy simplicial set of a kNN graph ``indices`` (n, k) int, ``distances`` (n, k), nearest first
    with each face itself in column 0; ``labels`` (n,) int for a supervised map (``target_weight`` 0..1).

    Edges are not yet pruned for the number of epochs (:func:`prune`)."""
    import scipy.sparse

    indices = np.asarray(indices)
    distances = np.array(distances, dtype=np.float32)
    n, k = indices.shape
    cut = distances >= DISCONNECTED
    distances[cut] = np.inf
    sigma, rho = smooth_distances(distances, float(k))
    with np.errstate(over="ignore", invalid="ignore"):
        strength = np.exp(-((distances - rho[:, None]) / sigma[:, None])).astype(np.float32)
    strength = np.where((distances - rho[:, None] <= 0.0) | (sigma[:, None] == 0.0), np.float32(1.0), strength)
    strength[indices == np.arange(n)[:, None]] = 0.0
    found = (indices >= 0) & ~cut
    rows = np.repeat(np.arange(n, dtype=np.int32), k)[found.ravel()]
    cols = indices.ravel()[found.ravel()].astype(np.int32)
    matrix = scipy.sparse.coo_matrix((strength.ravel()[found.ravel()], (rows, cols)), shape=(n, n))
    matrix.eliminate_zeros()
    graph = _union(matrix)
    if labels is not None:
        graph = _intersect_labels(graph, np.asarray(labels), target_weight)
    graph = graph.tocoo()
    graph.sum_duplicates()
    return Graph(graph.row.astype(np.int32), graph.col.astype(np.int32), graph.data.astype(np.float32), n)


def _union(matrix: Any) -> Any:
    transpose = matrix.transpose()
    graph = matrix + transpose - matrix.multiply(transpose)
    graph.eliminate_zeros()
    return graph


def _intersect_labels(graph: Any, labels: np.ndarray, target_weight: float) -> Any:
    """umap-learn's categorical ``discrete_metric_simplicial_set_intersection`` and
    ``reset_local_connectivity`` of the scipy.sparse ``graph``: edges between faces of different labels weaken by
    exp(-far), far = 2.5 / (1 - target_weight); each row is rescaled to a maximum of 1 and the union taken again."""
    import scipy.sparse

    far = 2.5 * (1.0 / (1.0 - target_weight)) if target_weight < 1.0 else 1.0e12
    graph = graph.tocoo()
    data = graph.data.copy()
    unknown = (labels[graph.row] == -1) | (labels[graph.col] == -1)
    data[unknown] *= np.exp(-1.0)
    data[~unknown & (labels[graph.row] != labels[graph.col])] *= np.exp(-far)
    graph = scipy.sparse.coo_matrix((data, (graph.row, graph.col)), shape=graph.shape)
    graph.eliminate_zeros()
    graph = graph.tocsr()
    lengths = np.diff(graph.indptr)
    nonempty = lengths > 0
    top = np.ones(graph.shape[0], dtype=graph.data.dtype)
    if graph.nnz:
        top[nonempty] = np.maximum.reduceat(np.abs(graph.data), graph.indptr[:-1][nonempty])
    graph.data = graph.data / np.repeat(top, lengths)
    return _union(graph)


def prune(graph: Graph, n_epochs: int) -> Graph:
    """Drop the edges too weak to be sampled once in ``n_epochs`` (weight < max / n_epochs), as umap-learn."""
    keep = graph.weight >= graph.weight.max() / float(n_epochs) if len(graph.weight) else np.zeros(0, dtype=bool)
    return Graph(graph.head[keep], graph.tail[keep], graph.weight[keep], graph.n_vertices)


def epochs_per_sample(weights: FloatArray, n_epochs: int) -> np.ndarray:
    """How many epochs pass between two samples of each edge: n_epochs / (n_epochs x weight / max weight)."""
    result = -np.ones(len(weights), dtype=np.float64)
    samples = n_epochs * (weights / weights.max())
    result[samples > 0] = float(n_epochs) / np.float64(samples[samples > 0])
    return result


def start_states(rng_state: np.ndarray, head_embedding: FloatArray) -> np.ndarray:
    """Each face's generator state (n, 3) int64: the run's three-int64 state offset by the bits of the face's
    starting x (umap-learn's per-sample states)."""
    return np.full((len(head_embedding), len(rng_state)), rng_state, dtype=np.int64) + \
        head_embedding[:, 0].astype(np.float64).view(np.int64).reshape(-1, 1)


@dataclass(frozen=True)
class SgdSettings:
    """The layout SGD's settings, as umap-learn's ``optimize_layout_euclidean`` takes them: ``n_epochs``, the
    curve's ``a`` and ``b`` (:func:`job.curve.ab_params`), the run's ``rng_state`` (three int64), the repulsion
    ``gamma``,
    the learning rate ``initial_alpha`` (falling linearly to 0) and the ``negative_sample_rate`` (random faces
    pushed off per edge sample)."""

    n_epochs: int
    a: float
    b: float
    rng_state: np.ndarray
    gamma: float = 1.0
    initial_alpha: float = INITIAL_ALPHA
    negative_sample_rate: float = NEGATIVE_SAMPLE_RATE


def optimize_layout(head_embedding: FloatArray, tail_embedding: FloatArray, graph: Graph, settings: SgdSettings, *,
                    parallel: bool = False, move_other: bool = True, exact: bool = False) -> FloatArray:
    """Run UMAP's SGD for ``settings.n_epochs`` on ``head_embedding`` (n, c) float32, in place, and return it.

    ``tail_embedding`` is ``head_embedding`` itself for a fit (``move_other`` True) or a fixed map that
    placed faces move against (``move_other`` False). ``parallel`` runs the edges of an epoch on every core
    (umap-learn's unseeded mode: Hogwild updates, not reproducible); otherwise one thread, reproducible.
    """
    from job.reduce import sgd

    per_sample = epochs_per_sample(graph.weight, settings.n_epochs)
    states = start_states(np.asarray(settings.rng_state, dtype=np.int64), head_embedding)
    args = (head_embedding, tail_embedding, graph.head, graph.tail, len(tail_embedding), per_sample,
            float(settings.a), float(settings.b), states, float(settings.gamma), float(settings.initial_alpha),
            float(settings.negative_sample_rate), int(settings.n_epochs), bool(move_other), bool(exact))
    if parallel:
        import numba

        sgd.epochs_parallel(*args, max(1, min(BLOCKS_PER_THREAD * numba.get_num_threads(), len(per_sample))))
    else:
        sgd.epochs_serial(*args)
    return head_embedding


def warm_kernels() -> float:
    """Compile (or load from numba's cache) both layout kernels, one-thread and parallel, for the very types
    a fit and a placement pass, and the kNN graph's pair kernel (:mod:`job.knn.pairs`): ``faceatlas
    warm-up``, which container images run at build time. Returns the seconds it took."""
    import time

    from job.knn.pairs import pair_similarities

    start = time.perf_counter()
    pair_similarities(np.zeros((1, 2), dtype=np.float32), np.zeros((1, 2), dtype=np.float32),
                      np.zeros((1, 1), dtype=np.int64))
    graph = Graph(np.zeros(1, dtype=np.int32), np.ones(1, dtype=np.int32), np.ones(1, dtype=np.float32), 2)
    for parallel in (False, True):
        embedding = np.zeros((2, 2), dtype=np.float32)
        optimize_layout(embedding, embedding, graph, SgdSettings(1, 1.0, 1.0, np.zeros(3, dtype=np.int64)),
                        parallel=parallel)
    return time.perf_counter() - start


def kernel_caches() -> list[Path]:
    """The folders numba keeps the warmed kernels' machine code in (``dispatcher._cache.cache_path``)."""
    from job.knn.pairs import _pair_dots
    from job.reduce import sgd

    return [Path(kernel._cache.cache_path) for kernel in (sgd.epochs_serial, sgd.epochs_parallel, _pair_dots)]


def scale_start(start: np.ndarray) -> FloatArray:
    """A start (n, c) rescaled to [0, 10] on each axis, as float32 (umap-learn does this to every start before its
    SGD)."""
    low, high = start.min(axis=0), start.max(axis=0)
    scaled: FloatArray = (10.0 * (start - low) / (high - low)).astype(np.float32, order="C")
    return scaled
