"""Moving between the map and the embedding space with a fitted :class:`~job.maps.mapmodel.MapModel`.

* :func:`place` (``faceatlas transform``): a new face goes where the identities it resembles sit on the
  map — the anchors of its most similar identity centroids, weighted by ``exp((cos - best) / temperature)``
  (the temperature a share of the database's genuine-impostor gap, carried by the model),
  so a face clearly of one person lands on that person and an in-between face lands in between. The
  decision is made in the embedding space; umap-learn's ``transform`` instead optimises the point against
  the fitted graph and needs the pickled model.
* :func:`invert` (``faceatlas invert``): the faces within a few neighbours of a map point vote for their
  identities with a Gaussian weight of their map distance; the answer is the unit vector of the vote-weighted
  identity centroids (sharpened, so the dominant identity counts most). ``fidelity`` estimates the cosine
  between that vector and a face found at the point: sum over identities of vote x cohesion x cosine.
* :func:`nearest` ranks all identities by cosine to the inverted vector.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from job.analysis.identities import top_similar, unit_rows
from job.arrays import FloatArray, IdArray
from job.errors import UsageError
from job.maps.mapmodel import MapModel

VOTERS = 15
SHARPEN = 4.0
_RESCORED = 5  # candidates beyond k whose cosines nearest() sums again exactly


@dataclass(frozen=True)
class Placement:
    """New faces on the map: ``coords`` (n, n_components) float32, ``nearest_id`` (n,) int64 (the most similar
    identity), ``similarity`` (n,) float32 (cosine to its centroid)."""

    coords: FloatArray
    nearest_id: IdArray
    similarity: FloatArray


@dataclass(frozen=True)
class Inversion:
    """A map point in the embedding space: ``vector`` (dim,) unit float32, its estimated ``fidelity``, and
    ``distance`` from the point to the nearest fitted face on the map."""

    vector: FloatArray
    fidelity: float
    distance: float


def place(model: MapModel, unit: FloatArray, candidates: int = 5) -> Placement:
    """Map position of each unit face in ``unit`` (n, dim), in the model's working space (new faces go through
    :meth:`MapModel.working` first), without refitting."""
    usable = np.flatnonzero(np.isfinite(model.anchor[:, 0]) & (model.count > 0))
    index, sims = top_similar(unit, model.centroid[usable], candidates)
    weights = np.exp((sims - sims[:, :1]) / model.temperature)
    weights /= weights.sum(axis=1, keepdims=True)
    coords = np.einsum("nk,nkc->nc", weights, model.anchor[usable[index]]).astype(np.float32)
    return Placement(coords, model.identity[usable[index[:, 0]]], sims[:, 0].astype(np.float32))


def invert(model: MapModel, point: np.ndarray, leave_out: int = -1, own: tuple[int, FloatArray] | None = None
           ) -> Inversion:
    """The embedding-space unit vector for ``point`` (n_components,) on the map.

    ``leave_out`` and ``own`` serve the leave-one-out check of the map's inverse: the face ``leave_out`` of
    the model does not vote, and identity ``own[0]`` (an index into ``model.identity``) is represented by the
    centroid ``own[1]`` (its faces without that face).

    Raises
    ------
    UsageError
        The point is farther than the model's ``radius`` from every face of the map.
    """
    point = np.asarray(point, dtype=np.float64).reshape(-1)
    if point.shape != (model.n_components,) or not np.isfinite(point).all():
        raise UsageError(f"map point {point.tolist()}: expected {model.n_components} finite coordinates; "
                         "pass --x and --y" + (" and --z" if model.n_components == 3 else ""))
    inverted = invert_points(model, point[None, :], np.array([leave_out]),
                             None if own is None else (np.array([own[0]]), np.asarray(own[1])[None, :]))
    if not inverted.on_map[0]:
        lo, hi = model.coords.min(axis=0), model.coords.max(axis=0)
        extent = ", ".join(f"{axis} {a:.2f}..{b:.2f}" for axis, a, b in zip("xyz", lo, hi, strict=False))
        raise UsageError(f"map point ({', '.join(f'{v:g}' for v in point)}) is {inverted.distance[0]:.3g} from "
                         f"the nearest face, outside the populated map (answers need a face within "
                         f"{model.radius:.3g}; faces span {extent}); pick a point on the map")
    return Inversion(inverted.vectors[0], float(inverted.fidelity[0]), float(inverted.distance[0]))


@dataclass(frozen=True)
class Inversions:
    """Many map points in the embedding space: ``vectors`` (m, dim) unit float32 (zero rows off the map),
    ``fidelity`` (m,), ``distance`` (m,) to the nearest face, ``on_map`` (m,) bool."""

    vectors: FloatArray
    fidelity: np.ndarray
    distance: np.ndarray
    on_map: np.ndarray


def invert_points(model: MapModel, points: np.ndarray, leave_out: np.ndarray | None = None,
                  own: tuple[np.ndarray, FloatArray] | None = None) -> Inversions:
    """:func:`invert` for a matrix of points (m, n_components) at once: one k-d tree query, array maths.

    ``leave_out`` (m,): a model face that does not vote for that point (-1: none); ``own`` = (codes (m,),
    centroids (m, dim)): the centroid that stands for identity ``codes[i]`` at point i.
    """
    m = len(points)
    leave_out = np.full(m, -1) if leave_out is None else np.asarray(leave_out)
    k = min(VOTERS + int((leave_out >= 0).any()), len(model.coords))
    distances, faces = model.tree().query(np.asarray(points, dtype=np.float64), k=k)
    distances, faces = distances.reshape(m, k), faces.reshape(m, k)
    found = faces < len(model.coords)  # a point so far out that distances overflow gets "no neighbour" (index n)
    faces = np.where(found, faces, 0)
    voting = found & (faces != leave_out[:, None])
    # keep the first VOTERS voters of each row (the left-out face, when present, drops out)
    rank = np.cumsum(voting, axis=1)
    voting &= rank <= VOTERS
    nearest = np.where(voting, distances, np.inf).min(axis=1)
    on_map = voting.any(axis=1) & (nearest <= model.radius)
    sorted_d = np.sort(np.where(voting, distances, np.inf), axis=1)
    fifth = sorted_d[np.arange(m), np.minimum(4, np.maximum(voting.sum(axis=1) - 1, 0))]
    scale = np.maximum(np.maximum(np.where(np.isfinite(fifth), fifth, 0.0), model.radius / 20), 1e-9)
    votes = np.where(voting, np.exp(-((distances / scale[:, None]) ** 2)), 0.0)
    voter_id = model.face_identity[faces].astype(np.int64)
    # share of each identity's votes per point, and how many voters each identity has there
    key = np.arange(m)[:, None] * len(model.identity) + voter_id
    _, slot = np.unique(key, return_inverse=True)
    slot = slot.reshape(m, k)
    share_of = np.bincount(slot.ravel(), weights=votes.ravel())
    total = np.maximum(votes.sum(axis=1), 1e-300)
    share = share_of[slot] / total[:, None]  # each voter carries its identity's share
    voters_of = np.bincount(slot.ravel(), weights=voting.ravel().astype(np.float64))
    per_voter = np.where(voting, 1.0 / np.maximum(voters_of[slot], 1.0), 0.0)
    sharp = np.where(voting, share**SHARPEN, 0.0) * per_voter
    weights = sharp / np.maximum(sharp.sum(axis=1, keepdims=True), 1e-300)
    centroids = model.centroid[voter_id]  # (m, k, dim)
    if own is not None:
        mine = voter_id == np.asarray(own[0])[:, None]
        centroids = np.where(mine[:, :, None], np.asarray(own[1], dtype=np.float32)[:, None, :], centroids)
    vectors = unit_rows(np.einsum("mk,mkd->md", weights, centroids))
    cosines = np.einsum("mkd,md->mk", centroids, vectors)
    fidelity = np.sum(share * per_voter * model.cohesion[voter_id] * cosines, axis=1)
    vectors[~on_map] = 0.0
    return Inversions(vectors.astype(np.float32), np.where(on_map, fidelity, np.nan), nearest, on_map)


@dataclass(frozen=True)
class Neighbour:
    """One identity near a map point: cosine ``similarity`` in the embedding space, ``map_distance`` to the
    nearest of its faces on the map (inf when none of its faces was fitted)."""

    id: int
    similarity: float
    map_distance: float


def nearest(model: MapModel, point: np.ndarray, k: int = 10) -> list[Neighbour]:
    """The ``k`` identities most similar to the embedding-space vector of ``point``, best first."""
    point = np.asarray(point, dtype=np.float64).reshape(-1)
    invert(model, point)  # refuses a malformed point, or one off the populated map, with the reason
    answers = nearest_points(model, point[None, :], k)
    return [Neighbour(int(i), float(s), float(d))
            for i, s, d in zip(answers.ids[0].tolist(), answers.similarity[0].tolist(),
                               answers.map_distance[0].tolist(), strict=True)]


@dataclass(frozen=True)
class NearestAnswers:
    """:func:`nearest` for many map points (m, n_components): ``ids`` (m, k) int64, ``similarity`` (m, k)
    float32, ``map_distance`` (m, k) float32, and ``on_map`` (m,) bool (rows off the map hold -1 / NaN)."""

    ids: IdArray
    similarity: FloatArray
    map_distance: FloatArray
    on_map: np.ndarray


def nearest_points(model: MapModel, points: np.ndarray, k: int = 10) -> NearestAnswers:
    """The ``k`` identities most similar to each map point's embedding-space vector, best first; the same
    arithmetic as :func:`nearest` (which calls it for one point), in one pass over the centroids."""
    points = np.asarray(points, dtype=np.float64)
    inverted = invert_points(model, points)
    m, k = len(points), min(k, len(model.identity))
    ids = np.full((m, k), -1, dtype=np.int64)
    similarity = np.full((m, k), np.nan, dtype=np.float32)
    distance = np.full((m, k), np.nan, dtype=np.float32)
    on = np.flatnonzero(inverted.on_map)
    if len(on):
        # BLAS finds the candidates; their cosines are summed again in float64 without BLAS, so the answer does
        # not depend on how many threads BLAS ran (its last bits do), and near-ties rank the same everywhere
        wide, _ = top_similar(inverted.vectors[on], model.centroid, min(k + _RESCORED, len(model.identity)))
        exact = np.einsum("md,mkd->mk", inverted.vectors[on].astype(np.float64),
                          model.centroid[wide].astype(np.float64))
        order = np.lexsort((wide, -exact), axis=1)[:, :k]
        index = np.take_along_axis(wide, order, axis=1)
        ids[on], similarity[on] = model.identity[index], np.take_along_axis(exact, order, axis=1)
        distance[on] = _map_distances(model, points[on].astype(np.float32), index)
    return NearestAnswers(ids, similarity, distance, inverted.on_map)


def _map_distances(model: MapModel, points: FloatArray, codes: np.ndarray) -> FloatArray:
    """Distance (m, k) from each point to the nearest map face of each identity ``codes`` (m, k) (inf: none);
    one rank at a time, so the temporaries hold m x (faces of one identity each), not m x k of them."""
    order = np.argsort(model.face_identity, kind="stable")
    sorted_identity = model.face_identity[order]
    best = np.full(codes.shape, np.inf, dtype=np.float64)
    for rank in range(codes.shape[1]):
        starts = np.searchsorted(sorted_identity, codes[:, rank])
        lengths = np.searchsorted(sorted_identity, codes[:, rank] + 1) - starts
        point = np.repeat(np.arange(len(codes)), lengths)
        face = order[np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())]
        gaps = np.linalg.norm(model.coords[face] - points[point], axis=1)
        np.minimum.at(best[:, rank], point, gaps)
    return best.astype(np.float32)
