"""Cosine similarities of (query, candidate) pairs, as a numba kernel cached on disk (``cache=True``).

Each pair is one dot product summed in float64 (float32 products are exact there) in an order fixed by the
code: ``LANES`` running sums over the dimensions, then added pairwise. So a pair's similarity has the same bits
on any machine, thread count and chunking: what
:func:`job.knn.index.rescore` needs to make the run's graph independent of where it was computed. No
``fastmath``: reassociating the sum (to vectorise it) is exactly what would make the bits depend on the CPU.
Kept apart from :mod:`job.knn.index` so that importing the index compiles nothing.
"""

from __future__ import annotations

import numpy as np

from job.caches import cached_numba

numba = cached_numba()  # before any kernel is declared: the cache stays in faceatlas's cache folder


LANES = 8  # independent partial sums: the CPU can run them side by side, and their order is fixed in the code


@numba.njit(cache=True, nogil=True, parallel=True)
def _pair_dots(queries, reference, found, out):
    dim = queries.shape[1]
    for i in numba.prange(found.shape[0]):
        lanes = np.zeros(LANES)
        for j in range(found.shape[1]):
            row = found[i, j]
            if row < 0:
                out[i, j] = -np.inf
                continue
            lanes[:] = 0.0
            d = 0
            while d + LANES <= dim:
                for lane in range(LANES):
                    lanes[lane] += np.float64(queries[i, d + lane]) * np.float64(reference[row, d + lane])
                d += LANES
            total = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]))
            while d < dim:
                total += np.float64(queries[i, d]) * np.float64(reference[row, d])
                d += 1
            out[i, j] = np.float32(total)


def pair_similarities(queries: np.ndarray, reference: np.ndarray, found: np.ndarray) -> np.ndarray:
    """``queries[i] . reference[found[i, j]]`` (n, m) float32, -inf where ``found`` is -1; ``queries`` (n, dim)
    and ``reference`` float32 (converted here otherwise)."""
    out = np.empty(found.shape, dtype=np.float32)
    _pair_dots(np.ascontiguousarray(queries, dtype=np.float32), np.ascontiguousarray(reference, dtype=np.float32),
               np.ascontiguousarray(found, dtype=np.int64), out)
    return out
