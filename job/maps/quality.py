"""How well the map model answers: built from every face on the map, it places the held-out faces (how well
``transform`` and ``invert`` recover them) and inverts the map where UMAP put faces (leave-one-out).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from job.analysis.geometry import Geometry
from job.analysis.identities import IdentityTable, top_similar
from job.analysis.suspects import SuspectScores
from job.arrays import FloatArray, IdArray
from job.maps.mapmodel import MapModel, build_model
from job.maps.placement import invert_points
from job.space.faces import Faces
from job.xp import fields_to_host, namespace, to_host, to_namespace


def model_from_map(unit: Faces | np.ndarray, clean: IdentityTable, scores: SuspectScores, on_map: IdArray,
                   coords: FloatArray, *, geometry: Geometry | None = None) -> MapModel:
    """The map model of the faces ``on_map`` (sorted rows) at ``coords`` (len(on_map), n_components), in the
    run's ``geometry`` (its centre and placement temperature; None: the input's space).

    ``clean``: the identity table without suspects and held-out faces. A suspect face stands on the map for
    the identity it was suggested as. ``unit`` and ``clean`` may be on the GPU (the cohesion, a pass over
    every face, is computed there); the model is made on the host.
    """
    keep = np.zeros(len(clean.codes), dtype=bool)
    keep[on_map] = True
    keep &= ~scores.left_out  # as in ``clean``: neither vouches for an identity
    cohesion = to_host(clean.cohesion(unit, to_namespace(namespace(clean.codes), keep)))
    clean = fields_to_host(clean)
    resolved = np.where(scores.suspect & (scores.suggested_id >= 0),
                        np.searchsorted(clean.ids, np.maximum(scores.suggested_id, 0)), clean.codes)
    return build_model(clean.ids, clean.centroids, clean.counts, cohesion, coords, face_identity=resolved[on_map],
                       geometry=geometry)


@dataclass(frozen=True)
class HeldOutCheck:
    """How well the model recovers ``n`` held-out faces (None: no face to measure): ``transform_id_at_1``, the
    share whose nearest face on the map has their id; ``mean_cos``, the mean cosine of a face to the inverse of
    its position; ``id_at_1``, the share whose identity is the most similar to that inverse."""

    n: int
    transform_id_at_1: float | None = None
    mean_cos: float | None = None
    id_at_1: float | None = None


@dataclass(frozen=True)
class MapInverse:
    """``invert`` where the map put faces (leave-one-out; None: no face to measure): the mean cosine of a face
    to the inverse of its map position, and the share whose identity ranks first there."""

    map_mean_cos: float | None = None
    map_id_at_1: float | None = None


def held_out_quality(model: MapModel, unit: np.ndarray, ids: IdArray, placed: FloatArray) -> HeldOutCheck:
    """Score held-out faces ``unit`` (n, dim) that ``place`` put at ``placed`` (n, n_components), and the
    inverse of those positions (:class:`HeldOutCheck`)."""
    if not len(unit):
        return HeldOutCheck(0)
    _, nearest_face = model.tree().query(placed, k=1)
    transform_hit = model.identity[model.face_identity[nearest_face]] == ids
    inverted = invert_points(model, placed)
    best = top_similar(inverted.vectors, model.centroid, 1)[0][:, 0]
    cosines = np.where(inverted.on_map, np.einsum("nd,nd->n", inverted.vectors, np.asarray(unit, np.float32)), 0.0)
    inverse_hit = inverted.on_map & (model.identity[best] == ids)
    return HeldOutCheck(len(unit), float(transform_hit.mean()), float(cosines.mean()), float(inverse_hit.mean()))


def map_inverse_quality(model: MapModel, clean: IdentityTable, unit: np.ndarray, on_map: IdArray, *, sample: int,
                        seed: int | None) -> MapInverse:
    """``invert`` where the map put faces: for up to ``sample`` non-suspect faces on the map of identities
    with 2+ such faces, each left out of the vote and out of its identity's centroid (leave-one-out), the
    cosine between the face and the inverse of its map position (``map_mean_cos``) and whether its identity
    ranks first there (``map_id_at_1``). This scores the map, not the embedding-space placement of
    ``transform``."""
    map_codes = clean.codes[on_map]
    # a suspect stands for its suggested identity on the map: only faces standing for their own identity count
    ok = (clean.counts[map_codes] >= 2) & (model.face_identity == map_codes)
    eligible = np.flatnonzero(ok)  # positions among the faces on the map
    if not len(eligible):
        return MapInverse()
    rng = np.random.default_rng(0 if seed is None else seed)
    chosen = np.sort(rng.choice(eligible, size=min(sample, len(eligible)), replace=False))
    faces, codes = on_map[chosen], map_codes[chosen]
    vectors = np.asarray(unit[faces], dtype=np.float64)
    rest = clean.sums(codes) - vectors
    rest = (rest / np.linalg.norm(rest, axis=1, keepdims=True)).astype(np.float32)
    inverted = invert_points(model, model.coords[chosen], leave_out=chosen, own=(codes, rest))
    sims = inverted.vectors @ model.centroid.T
    sims[np.arange(len(chosen)), codes] = np.einsum("nd,nd->n", rest, inverted.vectors)
    hits = inverted.on_map & (np.argmax(sims, axis=1) == codes)
    cosines = np.where(inverted.on_map, np.einsum("nd,nd->n", inverted.vectors, vectors.astype(np.float32)), 0.0)
    return MapInverse(float(cosines.mean()), float(hits.mean()))
