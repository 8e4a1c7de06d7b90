"""Moving between the map and the embedding space with a fitted :class:`~job.mapmodel.MapModel`.

* :func:`place` (``faceatlas transform``): a new face goes where the identities it resembles sit on the
  map — the anchors of its most similar identity centroids, weighted by ``exp((cos - best) / temperature)``,
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

from job.arrays import FloatArray, IdArray
from job.errors import UsageError
from job.identities import top_similar, unit_rows
from job.mapmodel import MapModel

TEMPERATURE = 0.02
VOTERS = 15
SHARPEN = 4.0


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
    """Map position of each unit face in ``unit`` (n, dim), without refitting."""
    usable = np.flatnonzero(np.isfinite(model.anchor[:, 0]) & (model.count > 0))
    index, sims = top_similar(unit, model.centroid[usable], candidates)
    weights = np.exp((sims - sims[:, :1]) / TEMPERATURE)
    weights /= weights.sum(axis=1, keepdims=True)
    coords = np.einsum("nk,nkc->nc", weights, model.anchor[usable[index]]).astype(np.float32)
    return Placement(coords, model.identity[usable[index[:, 0]]], sims[:, 0].astype(np.float32))


def invert(model: MapModel, point: FloatArray, leave_out: int = -1, own: tuple[int, FloatArray] | None = None
           ) -> Inversion:
    """The embedding-space unit vector for ``point`` (n_components,) on the map.

    ``leave_out`` and ``own`` serve the leave-one-out check of the map's inverse: the fitted face
    ``leave_out`` does not vote, and identity ``own[0]`` (an index into ``model.identity``) is represented
    by the centroid ``own[1]`` (its faces without that face).

    Raises
    ------
    UsageError
        The point is farther than the model's ``radius`` from every fitted face.
    """
    point = np.asarray(point, dtype=np.float64).reshape(-1)
    if point.shape != (model.n_components,) or not np.isfinite(point).all():
        raise UsageError(f"map point {point.tolist()}: expected {model.n_components} finite coordinates; "
                         "pass --x and --y" + (" and --z" if model.n_components == 3 else ""))
    k = min(VOTERS + (leave_out >= 0), len(model.coords))
    distances, faces = model.tree().query(point, k=k)
    distances, faces = np.atleast_1d(distances), np.atleast_1d(faces)
    voters = faces != leave_out
    distances, faces = distances[voters], faces[voters]
    k = len(faces)
    if not k or distances[0] > model.radius:
        lo, hi = model.coords.min(axis=0), model.coords.max(axis=0)
        extent = ", ".join(f"{axis} {a:.2f}..{b:.2f}" for axis, a, b in zip("xyz", lo, hi, strict=False))
        raise UsageError(f"map point ({', '.join(f'{v:g}' for v in point)}) is {distances[0]:.3g} from the "
                         f"nearest face, outside the populated map (answers need a face within "
                         f"{model.radius:.3g}; faces span {extent}); pick a point on the map")
    scale = max(float(distances[min(4, k - 1)]), model.radius / 20, 1e-9)
    votes = np.exp(-((distances / scale) ** 2))
    identities, slot = np.unique(model.face_identity[faces], return_inverse=True)
    share = np.bincount(slot, weights=votes, minlength=len(identities))
    share /= share.sum()
    sharp = share**SHARPEN
    weights = sharp / sharp.sum()
    centroids = model.centroid[identities]
    if own is not None and (identities == own[0]).any():
        centroids[identities == own[0]] = own[1]
    vector = unit_rows((weights[:, None] * centroids).sum(axis=0, keepdims=True))[0]
    fidelity = float(np.sum(share * model.cohesion[identities] * (centroids @ vector)))
    return Inversion(vector.astype(np.float32), fidelity, float(distances[0]))


@dataclass(frozen=True)
class Neighbour:
    """One identity near a map point: cosine ``similarity`` in the embedding space, ``map_distance`` to the
    nearest of its faces on the map (inf when none of its faces was fitted)."""

    id: int
    similarity: float
    map_distance: float


def nearest(model: MapModel, point: FloatArray, k: int = 10) -> list[Neighbour]:
    """The ``k`` identities most similar to the embedding-space vector of ``point``, best first."""
    inversion = invert(model, point)
    index, sims = top_similar(inversion.vector[None, :], model.centroid, k)
    point = np.asarray(point, dtype=np.float32).reshape(-1)
    order = np.argsort(model.face_identity, kind="stable")
    bounds = np.searchsorted(model.face_identity[order], np.stack([index[0], index[0] + 1]))
    answers = []
    for rank, (code, similarity) in enumerate(zip(index[0].tolist(), sims[0].tolist(), strict=True)):
        own = model.coords[order[bounds[0, rank] : bounds[1, rank]]]
        distance = float(np.linalg.norm(own - point, axis=1).min()) if len(own) else float("inf")
        answers.append(Neighbour(int(model.identity[code]), float(similarity), distance))
    return answers
