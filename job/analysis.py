"""The analysis half of a run, decided in the embedding space and only shown on the map.

Before UMAP: hold out a few faces (:func:`pick_holdout`), build one kNN graph of the fitted faces (shared
with umap-learn), score every face for being misfiled (:mod:`job.suspects`). After UMAP: build the map
model (:mod:`job.mapmodel`), place the held-out faces with it and measure how well ``transform`` and
``invert`` recover them, find look-alikes and clusters, and, with ``--supervised``, flag faces whose map
neighbourhood disagrees with their embedding neighbourhood.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from job.arrays import BoolArray, FloatArray, IdArray
from job.demo import DemoTruth
from job.errors import UsageError
from job.identities import IdentityTable, identity_table, top_similar
from job.knn import Neighbors
from job.lookalikes import Lookalikes
from job.mapmodel import MapModel, build_model
from job.placement import invert
from job.suspects import SuspectScores


def pick_holdout(ids: IdArray, share: float, cap: int, seed: int | None, min_fitted: int = 0) -> BoolArray:
    """Faces to leave out of the fit: ``share`` of all faces, ``cap`` at most, at most one per identity and
    only from identities with 3+ faces (so each keeps 2 on the map), leaving at least ``min_fitted`` faces."""
    n_faces = len(ids)
    wanted = min(int(round(share * n_faces)), cap, n_faces - min_fitted)
    held = np.zeros(n_faces, dtype=bool)
    if wanted <= 0:
        return held
    rng = np.random.default_rng(0 if seed is None else seed)
    unique, codes, counts = np.unique(ids, return_inverse=True, return_counts=True)
    order = rng.permutation(n_faces)
    _, first = np.unique(codes[order], return_index=True)  # one random face of every identity
    eligible = order[first][counts[codes[order[first]]] >= 3]
    chosen = rng.permutation(eligible)[:wanted]
    held[chosen] = True
    return held


def candidate_codes(table: IdentityTable, unit: FloatArray, fitted: IdArray, graph: Neighbors, held: IdArray,
                    k: int) -> IdArray:
    """Identity codes of each face's ``k`` nearest other faces: from the fitted faces' kNN graph, and for
    held-out faces (not in the graph) their most similar identity centroids."""
    nearby = np.empty((len(unit), k), dtype=np.int64)
    width = min(k, graph.indices.shape[1] - 1)
    columns = table.codes[fitted[graph.indices[:, 1 : width + 1]]]
    nearby[fitted] = np.pad(columns, ((0, 0), (0, k - width)), mode="edge") if width < k else columns
    if len(held):
        closest = top_similar(unit[held], table.centroids, k)[0]
        nearby[held] = np.pad(closest, ((0, 0), (0, k - closest.shape[1])), mode="edge")
    return nearby



def model_from_fit(unit: FloatArray, table: IdentityTable, scores: SuspectScores, fitted: IdArray,
                   coords: FloatArray) -> tuple[MapModel, IdentityTable]:
    """The map model of the fitted faces ``fitted`` at ``coords`` (len(fitted), n_components), and the identity
    table its centroids come from.

    Centroids use fitted faces that are not suspects; a suspect face stands on the map for the identity
    it was suggested as.
    """
    keep = np.zeros(len(unit), dtype=bool)
    keep[fitted] = True
    keep &= ~scores.suspect
    clean = identity_table(unit, table.ids[table.codes], keep)
    resolved = np.where(scores.suspect, np.searchsorted(clean.ids, np.maximum(scores.suggested_id, 0)), clean.codes)
    resolved = np.where(scores.suggested_id >= 0, resolved, clean.codes)
    model = build_model(clean.ids, clean.sums, clean.counts, clean.cohesion(unit, keep), coords, resolved[fitted])
    return model, clean


NULL_QUALITY = {"inverse": {"mean_cos": None, "id_at_1": None, "map_mean_cos": None, "map_id_at_1": None},
                "transform": {"id_at_1": None}}


def held_out_quality(model: MapModel, unit: FloatArray, ids: IdArray, placed: FloatArray) -> dict[str, Any]:
    """Score held-out faces ``unit`` (n, dim) that ``place`` put at ``placed`` (n, n_components), and the
    inverse of those positions.

    Returns ``{"n", "transform": {"id_at_1"}, "inverse": {"mean_cos", "id_at_1"}}`` (None values when there
    is no face to measure); transform id_at_1: the nearest fitted face on the map has the face's id;
    inverse id_at_1: the identity most similar to the inverted vector is the face's id.
    """
    if not len(unit):
        return {"n": 0, "inverse": dict(NULL_QUALITY["inverse"]), "transform": dict(NULL_QUALITY["transform"])}
    _, nearest_face = model.tree().query(placed, k=1)
    transform_hit = model.identity[model.face_identity[nearest_face]] == ids
    cosines, inverse_hit = np.zeros(len(unit)), np.zeros(len(unit), dtype=bool)
    for i, point in enumerate(placed):
        try:
            vector = invert(model, point).vector
        except UsageError:
            continue
        cosines[i] = float(vector @ unit[i])
        inverse_hit[i] = model.identity[top_similar(vector[None, :], model.centroid, 1)[0][0, 0]] == ids[i]
    return {"n": int(len(unit)), "transform": {"id_at_1": float(transform_hit.mean())},
            "inverse": {"mean_cos": float(cosines.mean()), "id_at_1": float(inverse_hit.mean())}}


def map_inverse_quality(model: MapModel, clean: IdentityTable, unit: FloatArray, fitted: IdArray,
                        sample: int, seed: int | None) -> dict[str, float | None]:
    """``invert`` where UMAP itself put faces: for up to ``sample`` fitted non-suspect faces of identities with
    2+ such faces, each left out of the vote and out of its identity's centroid (leave-one-out), the cosine
    between the face and the inverse of its map position (``map_mean_cos``) and whether its identity ranks
    first there (``map_id_at_1``). This scores the map, not the embedding-space placement of ``transform``."""
    codes = clean.codes
    fitted_codes = codes[fitted]
    # a suspect stands for its suggested identity on the map: only faces standing for their own identity count
    ok = (clean.counts[fitted_codes] >= 2) & (model.face_identity == fitted_codes)
    eligible = np.flatnonzero(ok)  # positions among the fitted faces
    if not len(eligible):
        return {"map_mean_cos": None, "map_id_at_1": None}
    rng = np.random.default_rng(0 if seed is None else seed)
    chosen = np.sort(rng.choice(eligible, size=min(sample, len(eligible)), replace=False))
    cosines, hits = [], []
    for slot in chosen.tolist():
        face, code = int(fitted[slot]), int(fitted_codes[slot])
        rest = clean.sums[code] - unit[face]
        rest = (rest / np.linalg.norm(rest)).astype(np.float32)
        try:
            vector = invert(model, model.coords[slot], leave_out=slot, own=(code, rest)).vector
        except UsageError:
            cosines.append(0.0)
            hits.append(False)
            continue
        sims = model.centroid @ vector
        sims[code] = rest @ vector
        cosines.append(float(vector @ unit[face]))
        hits.append(int(np.argmax(sims)) == code)
    return {"map_mean_cos": float(np.mean(cosines)), "map_id_at_1": float(np.mean(hits))}


def supervised_disagreement(coords: FloatArray, codes: IdArray, fitted: IdArray, graph: Neighbors,
                            n_faces: int, k: int) -> BoolArray:
    """Fitted faces whose filed identity is far more common among their ``k`` nearest map neighbours than
    among their ``k`` nearest faces in the embedding space (share difference >= 0.5): the supervised map
    pulled them towards the identity they are filed under, their embeddings do not agree."""
    from job.metrics import map_neighbours

    flags = np.zeros(n_faces, dtype=bool)
    k = min(k, len(fitted) - 1, graph.indices.shape[1] - 1)
    if k < 1:
        return flags
    own = codes[fitted]
    on_map = (own[map_neighbours(coords, k)] == own[:, None]).mean(axis=1)
    in_space = (own[graph.indices[:, 1 : k + 1]] == own[:, None]).mean(axis=1)
    flags[fitted] = on_map - in_space >= 0.5
    return flags


@dataclass(frozen=True)
class TruthScores:
    """How the verdicts compare with a demo database's planted answers."""

    suspect_precision: float
    suspect_recall: float
    lookalike_recall: float


def against_truth(truth: DemoTruth, rows: IdArray, scores: SuspectScores, lookalikes: Lookalikes) -> TruthScores:
    """Precision/recall of suspects, and the share of planted look-alike pairs among the top 2x-planted pairs."""
    flagged = set(rows[scores.suspect].tolist())
    planted = set(truth.misfiled_rows)
    hits = len(flagged & planted)
    pairs = {tuple(pair) for pair in truth.lookalike_pairs}
    top = set(zip(lookalikes.id_a[: 2 * len(pairs)].tolist(), lookalikes.id_b[: 2 * len(pairs)].tolist(),
                  strict=True))
    return TruthScores(hits / len(flagged) if flagged else float(not planted),
                       hits / len(planted) if planted else 1.0,
                       len(top & pairs) / len(pairs) if pairs else 1.0)
