"""UMAP's layout SGD as numba kernels cached on disk (``cache=True``), so only a machine's first run compiles.

The step is umap-learn's ``_optimize_layout_euclidean_single_epoch`` (0.5) with every epoch inside one kernel:
for each edge due this epoch, pull its head towards its tail (and the tail back when ``move_other``), then
push the head off ``negative_sample_rate`` random faces per sample, drawn with the Tausworthe generator from
the head's own state; the learning rate falls linearly. ``epochs_serial`` is reproducible; ``epochs_parallel``
spreads each epoch's edges over the cores as umap-learn does without a seed (concurrent updates). Both release
the GIL. Kept apart from :mod:`job.reduce.layout` so that importing the layout code compiles nothing.
"""

from __future__ import annotations

import numpy as np

from job.caches import cached_numba

numba = cached_numba()  # before any kernel is declared: the cache stays in faceatlas's cache folder

_FLAGS = {"fastmath": True, "cache": True, "nogil": True}
# kernel args: the kernels take umap-learn's arguments positionally, in its order (layout.optimize_layout hands both
# epoch kernels one argument tuple, and they hand it on to _edges), hence PLR0913 / PLR0917 off on each


@numba.njit(**_FLAGS)
def _tau_rand_int(states, row):
    """The next int32 of row ``row``'s three-word Tausworthe generator (L'Ecuyer 1996), as umap-learn's
    ``tau_rand_int`` (indexed in place: no row view, so no reference counting in the inner loop)."""
    s0, s1, s2 = states[row, 0], states[row, 1], states[row, 2]
    s0 = (((s0 & 4294967294) << 12) & 0xFFFFFFFF) ^ ((((s0 << 13) & 0xFFFFFFFF) ^ s0) >> 19)
    s1 = (((s1 & 4294967288) << 4) & 0xFFFFFFFF) ^ ((((s1 << 2) & 0xFFFFFFFF) ^ s1) >> 25)
    s2 = (((s2 & 4294967280) << 17) & 0xFFFFFFFF) ^ ((((s2 << 3) & 0xFFFFFFFF) ^ s2) >> 11)
    states[row, 0], states[row, 1], states[row, 2] = s0, s1, s2
    return np.int32(s0 ^ s1 ^ s2)


@numba.njit(**_FLAGS)
def _clip(value):
    return 4.0 if value > 4.0 else -4.0 if value < -4.0 else value


@numba.njit(**_FLAGS)
def _squared(x, j, y, k):
    """Squared distance between rows ``x[j]`` and ``y[k]``, summed in float32 as umap-learn's ``rdist``."""
    result = np.float32(0.0)
    for d in range(x.shape[1]):
        diff = np.float32(x[j, d] - y[k, d])
        result += diff * diff
    return result


@numba.njit(**_FLAGS)
def _edges(lo, hi, head_embedding, tail_embedding, head, tail, n_vertices,  # noqa: PLR0913, PLR0917 - kernel args
           epochs_per_sample, a, b, states, gamma, move_other, alpha, epochs_per_negative_sample, next_negative,
           next_sample, n, exact):
    """Edges ``lo``..``hi`` in epoch ``n``: each due one is pulled together, then its head pushed off random
    faces. ``exact``: umap-learn's arithmetic to the bit (two float64 powers per step); otherwise the same
    gradient with one float32 power (d^(2b-2) = d^(2b) / d^2)."""
    dim = head_embedding.shape[1]
    a32, b32 = np.float32(a), np.float32(b)
    minus_2ab, two_gamma_b = np.float32(-2.0 * a * b), np.float32(2.0 * gamma * b)
    for i in range(lo, hi):
        if next_sample[i] > n:
            continue
        j = head[i]
        k = tail[i]
        dist_squared = _squared(head_embedding, j, tail_embedding, k)
        if dist_squared > 0.0:
            if exact:
                grad_coeff = -2.0 * a * b * pow(dist_squared, b - 1.0)
                grad_coeff /= a * pow(dist_squared, b) + 1.0
            else:
                power = pow(dist_squared, b32)
                grad_coeff = minus_2ab * power / (dist_squared * (a32 * power + np.float32(1.0)))
        else:
            grad_coeff = 0.0
        for d in range(dim):
            grad_d = _clip(grad_coeff * (head_embedding[j, d] - tail_embedding[k, d]))
            head_embedding[j, d] += grad_d * alpha
            if move_other:
                tail_embedding[k, d] += -grad_d * alpha
        next_sample[i] += epochs_per_sample[i]
        n_neg = int((n - next_negative[i]) / epochs_per_negative_sample[i])
        for _ in range(n_neg):
            k = _tau_rand_int(states, j) % n_vertices
            dist_squared = _squared(head_embedding, j, tail_embedding, k)
            if dist_squared > 0.0:
                if exact:
                    grad_coeff = 2.0 * gamma * b
                    grad_coeff /= (0.001 + dist_squared) * (a * pow(dist_squared, b) + 1)
                else:
                    grad_coeff = two_gamma_b / ((np.float32(0.001) + dist_squared)
                                                * (a32 * pow(dist_squared, b32) + np.float32(1.0)))
            elif j == k:
                continue
            else:
                grad_coeff = 0.0
            for d in range(dim):
                grad_d = _clip(grad_coeff * (head_embedding[j, d] - tail_embedding[k, d])) if grad_coeff > 0.0 else 0
                head_embedding[j, d] += grad_d * alpha
        next_negative[i] += n_neg * epochs_per_negative_sample[i]


@numba.njit(**_FLAGS)
def epochs_serial(head_embedding, tail_embedding, head, tail, n_vertices,  # noqa: PLR0913, PLR0917 - kernel args
                  epochs_per_sample, a, b, states, gamma, initial_alpha, negative_sample_rate, n_epochs, move_other,
                  exact):
    """All ``n_epochs`` on one thread (reproducible)."""
    epochs_per_negative_sample = epochs_per_sample / negative_sample_rate
    next_negative = epochs_per_negative_sample.copy()
    next_sample = epochs_per_sample.copy()
    alpha = initial_alpha
    for n in range(n_epochs):
        _edges(0, epochs_per_sample.shape[0], head_embedding, tail_embedding, head, tail, n_vertices,
               epochs_per_sample, a, b, states, gamma, move_other, alpha, epochs_per_negative_sample, next_negative,
               next_sample, n, exact)
        alpha = initial_alpha * (1.0 - (float(n) / float(n_epochs)))
    return head_embedding


@numba.njit(parallel=True, **_FLAGS)
def epochs_parallel(head_embedding, tail_embedding, head, tail, n_vertices,  # noqa: PLR0913, PLR0917 - kernel args
                    epochs_per_sample, a, b, states, gamma, initial_alpha, negative_sample_rate, n_epochs, move_other,
                    exact, n_blocks):
    """All ``n_epochs``, each epoch's edges cut into ``n_blocks`` blocks run on every core (not reproducible:
    faces are updated concurrently, as umap-learn does without a seed)."""
    epochs_per_negative_sample = epochs_per_sample / negative_sample_rate
    next_negative = epochs_per_negative_sample.copy()
    next_sample = epochs_per_sample.copy()
    alpha = initial_alpha
    n_edges = epochs_per_sample.shape[0]
    for n in range(n_epochs):
        for block in numba.prange(n_blocks):
            _edges(block * n_edges // n_blocks, (block + 1) * n_edges // n_blocks, head_embedding, tail_embedding,
                   head, tail, n_vertices, epochs_per_sample, a, b, states, gamma, move_other, alpha,
                   epochs_per_negative_sample, next_negative, next_sample, n, exact)
        alpha = initial_alpha * (1.0 - (float(n) / float(n_epochs)))
    return head_embedding
