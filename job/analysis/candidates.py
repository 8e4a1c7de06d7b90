"""Which identities a face, or an identity, is compared with: candidates drawn from the one shared kNN graph
and from the identity centroids, so that nothing is all-pairs.

* :func:`nearby_codes`: the identities of each face's nearest other faces in the graph;
* :func:`similar_identities`: each identity's most similar centroids (the kNN index registry, thorough);
* :func:`identity_links`: the identities whose faces are most often among one identity's faces' neighbours.

Misfiled-face candidates are the first and a few of the second; look-alike candidates the second and third
together (each misses pairs the other finds: measured at 300k faces, docs/scale.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from job.arrays import IdArray
from job.knn.graph import FaceGraph
from job.knn.index import identity_neighbours
from job.xp import lexsort, namespace

if TYPE_CHECKING:
    from job.config import KnnConfig


@dataclass(frozen=True)
class Candidates:
    """``nearby`` (n_faces, width): identity codes of each face's nearest other faces (-1: none);
    ``similar`` (n_identities, m): each identity's most similar identities by centroid; ``lookalike``
    (n_identities, 2k): the look-alike candidates of each identity (similar centroids, then graph links)."""

    nearby: IdArray
    similar: IdArray
    lookalike: IdArray


def find_candidates(graph: FaceGraph, codes: IdArray, centroids: np.ndarray, *, width: int, similar: int, k: int,
                    knn: KnnConfig, seed: int | None = None) -> Candidates:
    """All candidate lists of a run (see the module docstring); on the GPU when the graph is there. ``width``
    nearby faces, ``similar`` identities by centroid, ``k`` look-alike candidates of each kind; ``knn``: the
    run's index settings for the centroid search."""
    xp = namespace(codes)
    nearby = nearby_codes(graph, codes, width)
    near_ids, _ = identity_neighbours(centroids, max(similar, k), knn.method, knn.exact_max_faces, seed)
    lookalike = xp.concatenate([near_ids[:, :k], identity_links(codes, nearby, len(centroids), k)], axis=1)
    return Candidates(nearby, near_ids[:, :similar], lookalike)


def nearby_codes(graph: FaceGraph, codes: IdArray, width: int) -> IdArray:
    """Identity codes of each face's ``width`` nearest other faces in ``graph``: (n_faces, width), -1 = none.

    A reference face is its own first neighbour; it is left out, so every face gets ``width`` others.
    """
    xp = namespace(codes)
    rows = graph.neighbour_rows(slice(0, width + 1))
    others = xp.where(rows == xp.arange(len(rows))[:, None], -1, rows)
    order = xp.argsort((others < 0).astype(xp.int8), axis=1, kind="stable")
    others = xp.take_along_axis(others, order, axis=1)[:, :width]
    found: IdArray = xp.where(others >= 0, codes[xp.maximum(others, 0)], -1)
    return found


def identity_links(codes: IdArray, neighbour_codes: IdArray, n_identities: int, m: int) -> IdArray:
    """The ``m`` identities most linked to each identity by the kNN graph: (n_identities, m) int64, -1 padded.

    A link is a face of identity a with a face of identity b among its nearest neighbours
    (``neighbour_codes`` (n_faces, k), -1 = none); identities are ranked by how many such links they share.
    This is the candidate list of look-alikes and of the identities a misfiled face may belong to, found
    from the one shared graph instead of a second kNN search over centroids.
    """
    xp = namespace(codes)
    width = neighbour_codes.shape[1]
    a = xp.repeat(codes, width)
    b = neighbour_codes.ravel()
    valid = (b >= 0) & (b != a)
    a, b = a[valid], b[valid]
    # count each unordered link once per face pair, in both directions' lists
    pair = xp.concatenate([a * n_identities + b, b * n_identities + a])
    keys, counts = xp.unique(pair, return_counts=True)
    first, second = keys // n_identities, keys % n_identities
    order = lexsort((second, -counts, first))
    first, second = first[order], second[order]
    rank = xp.arange(len(first)) - xp.searchsorted(first, first)
    keep = rank < m
    linked: IdArray = xp.full((n_identities, m), -1, dtype=xp.int64)
    linked[first[keep], rank[keep]] = second[keep]
    return linked
