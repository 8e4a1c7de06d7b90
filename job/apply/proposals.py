"""The changes a run proposes (``corrections.csv``): each verdict turned into one action on the database.

What the embeddings settle is proposed as an action to carry out:

* ``remove``: a re-enrolment of an earlier face of the same identity (:mod:`job.analysis.suspects` finds them
  within an identity only; score: the cosine to that face);
* ``move``: a misfiled face with a clear target, to the identity that claims it (score: the verdict's log odds);
* ``assign``: a face the source files under no identity, to the identity it fits as well as the database's
  own filed faces fit theirs (score: the cosine to the identity's centroid).

What they cannot settle is a ``review`` row, with the ``action`` a person may take by accepting it:

* ``possible_same_person`` (action ``merge``): two identities whose faces are as alike as one person's,
  the one with fewer faces into the other (score: the pair's similarity). One person enrolled twice and two
  near-twins look the same to the embeddings: only a person can tell them apart;
* ``no_clear_target`` (``move`` to the nearest other identity) and ``same_photo`` (``remove``): a misfiled
  face claimed by nobody, or flagged by its photo alone;
* ``unassigned_unclear`` (``assign``): an unassigned face no identity fits well enough;
* ``low_quality`` (``remove``; score: its quality, weakest first).

Rows come most certain first: removes, moves, assigns, then reviews (merges, misfiled faces, unassigned
faces, low-quality faces), each most certain first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from job.analysis.lookalikes import Lookalikes
from job.analysis.suspects import DUPLICATE, LOW_QUALITY, SuspectScores
from job.arrays import FloatArray, IdArray
from job.maps.mapmodel import MapModel
from job.maps.placement import Placement

ASSIGN_QUANTILE = 0.05  # an unassigned face is assigned when it fits its identity as well as 95% of filed faces
_SAMPLE = 100_000  # filed faces measured for that bar
_SEED = 0


@dataclass(frozen=True)
class Proposals:
    """One row per proposed change, in corrections.csv's order, each array (n_rows,):

    ``what`` object (``remove``, ``move``, ``assign`` or ``review``), ``action`` object (what accepting the row
    does: ``what`` itself, or for a review the action it proposes), ``face`` int64 (a position among the run's
    faces; -1 for a merge), ``unassigned`` bool (``face`` is a position among the unassigned faces instead),
    ``from_id`` and ``to_id`` int64 (-1: none), ``score`` float32, ``reason`` object.
    """

    what: np.ndarray
    action: np.ndarray
    face: IdArray
    unassigned: np.ndarray
    from_id: IdArray
    to_id: IdArray
    score: FloatArray
    reason: np.ndarray

    def __len__(self) -> int:
        return len(self.what)


@dataclass
class _Rows:
    """Rows gathered one kind at a time, each kind sorted by its own certainty."""

    parts: list[tuple[str, np.ndarray, bool, np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]]

    def add(self, what: str, face: np.ndarray, ids: tuple[np.ndarray, np.ndarray], score: np.ndarray,
            reason: np.ndarray | str, *, order: np.ndarray, unassigned: bool = False, action: str = "") -> None:
        """Rows of one kind; ``action``: what accepting them does (default: ``what``)."""
        from_id, to_id = ids
        reasons = np.full(len(face), reason, dtype=object) if isinstance(reason, str) else reason
        self.parts.append((what, face[order], unassigned, from_id[order], to_id[order], score[order],
                           reasons[order], action or what))

    def build(self) -> Proposals:
        def joined(k: int, dtype: type) -> np.ndarray:
            values: list[np.ndarray] = [np.asarray(part[k], dtype=dtype) for part in self.parts]
            return np.concatenate(values) if values else np.empty(0, dtype=dtype)
        what = np.concatenate([np.full(len(p[1]), p[0], dtype=object) for p in self.parts] or [np.empty(0, object)])
        loose = np.concatenate([np.full(len(p[1]), p[2], dtype=bool) for p in self.parts] or [np.empty(0, bool)])
        action = np.concatenate([np.full(len(p[1]), p[7], dtype=object) for p in self.parts]
                                or [np.empty(0, object)])
        return Proposals(what, action, joined(1, np.int64), loose, joined(3, np.int64), joined(4, np.int64),
                         joined(5, np.float32), joined(6, object))


@dataclass(frozen=True)
class Repeats:
    """Re-enrolments: the face each face repeats (n_faces,) int64 (-1: none) and the cosine to it (NaN: none)."""

    original: IdArray
    cosine: FloatArray


def propose(scores: SuspectScores, ids: IdArray, *, reasons: np.ndarray, repeats: Repeats, quality: FloatArray,
            lookalikes: Lookalikes, loose: Placement | None = None, assign_bar: float = np.inf) -> Proposals:
    """The run's proposed changes from its verdicts.

    ``ids`` (n_faces,) filed identities; ``reasons`` why each face is misfiled (:meth:`Verdicts.reasons`);
    ``loose``: the unassigned faces placed, assigned where their similarity reaches ``assign_bar``
    (:func:`assign_bar`).
    """
    duplicate_cos = repeats.cosine
    rows = _Rows([])
    suspect, clear = scores.suspect, scores.suspect & scores.claimed & (scores.suggested_id >= 0)
    duplicate = np.flatnonzero(scores.verdict == DUPLICATE)  # a re-enrolment repeats a face of its own identity
    none = np.full(len(ids), -1, dtype=np.int64)
    rows.add("remove", duplicate, (ids[duplicate], none[duplicate]), duplicate_cos[duplicate], "duplicate",
             order=np.argsort(-duplicate_cos[duplicate], kind="stable"))
    moved = np.flatnonzero(clear)
    rows.add("move", moved, (ids[moved], scores.suggested_id[moved]), scores.score[moved], reasons[moved],
             order=np.argsort(-scores.score[moved], kind="stable"))
    faces = np.arange(0 if loose is None else len(loose.nearest_id))
    sure = np.zeros(0, dtype=bool) if loose is None else loose.similarity >= assign_bar
    _unassigned(rows, loose, faces[sure], what="assign", reason="unassigned")
    _merges(rows, lookalikes, ids)
    unclear = suspect & ~clear
    targeted = np.flatnonzero(unclear & (reasons != "same_photo") & (scores.suggested_id >= 0))
    rows.add("review", targeted, (ids[targeted], scores.suggested_id[targeted]), scores.score[targeted],
             "no_clear_target", order=np.argsort(-scores.score[targeted], kind="stable"), action="move")
    untargeted = np.flatnonzero(unclear & ((reasons == "same_photo") | (scores.suggested_id < 0)))
    why = np.where(reasons[untargeted] == "same_photo", "same_photo", "no_clear_target").astype(object)
    rows.add("review", untargeted, (ids[untargeted], none[untargeted]), scores.score[untargeted], why,
             order=np.argsort(-scores.score[untargeted], kind="stable"), action="remove")
    _unassigned(rows, loose, faces[~sure], what="review", reason="unassigned_unclear")
    poor = np.flatnonzero(scores.verdict == LOW_QUALITY)
    rows.add("review", poor, (ids[poor], none[poor]), quality[poor], "low_quality",
             order=np.lexsort((scores.own[poor], np.nan_to_num(quality[poor], nan=np.inf))), action="remove")
    return rows.build()


def _unassigned(rows: _Rows, loose: Placement | None, chosen: np.ndarray, *, what: str, reason: str) -> None:
    """Unassigned faces ``chosen`` to the identity each most likely is, the most similar first."""
    if loose is None:
        return
    rows.add(what, chosen, (np.full(len(chosen), -1, dtype=np.int64), loose.nearest_id[chosen]),
             loose.similarity[chosen], reason, order=np.argsort(-loose.similarity[chosen], kind="stable"),
             unassigned=True, action="assign")


def _merges(rows: _Rows, lookalikes: Lookalikes, ids: IdArray) -> None:
    """``possible_same_person`` pairs as reviews whose action is a merge: the identity with fewer faces into
    the one with more (ties: the larger id into the smaller), most alike first (lookalikes' own order)."""
    chosen = np.flatnonzero(lookalikes.same_person)
    a, b = lookalikes.id_a[chosen], lookalikes.id_b[chosen]
    identities, counts = np.unique(ids, return_counts=True)
    def faces(of: np.ndarray) -> np.ndarray:
        at = np.clip(np.searchsorted(identities, of), 0, max(len(identities) - 1, 0))
        return np.where(identities[at] == of, counts[at], 0) if len(identities) else np.zeros(len(of), np.int64)
    into_a = faces(a) >= faces(b)
    source, target = np.where(into_a, b, a), np.where(into_a, a, b)
    rows.add("review", np.full(len(chosen), -1, dtype=np.int64), (source, target),
             lookalikes.similarity[chosen], "possible_same_person", order=np.arange(len(chosen)), action="merge")


def repeats_of(unit: np.ndarray, original: IdArray) -> Repeats:
    """Each re-enrolment's cosine to the face it repeats (``original``, -1: none)."""
    out = np.full(len(original), np.nan, dtype=np.float32)
    faces = np.flatnonzero(original >= 0)
    if len(faces):
        a = np.asarray(unit[faces], dtype=np.float32)
        b = np.asarray(unit[original[faces]], dtype=np.float32)
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        out[faces] = np.einsum("nd,nd->n", a, b) / np.maximum(norms, 1e-12)
    return Repeats(original, out)


def assign_bar(unit: np.ndarray, ids: IdArray, model: MapModel, fair: np.ndarray) -> float:
    """The cosine an unassigned face needs to its nearest identity's centroid to be assigned: the
    :data:`ASSIGN_QUANTILE` of how the database's own filed faces (``fair``: not misfiled, not re-enrolled,
    of an identity with other faces) fit their identity's centroid with themselves left out of it.

    The model's centroid is the unit mean of ``count`` faces whose mean cosine to it is ``cohesion``, so its
    sum is ``centroid * cohesion * count``; a face's leave-one-out cosine follows from its cosine to the
    centroid alone. +inf (assign none) when no filed face can be measured.
    """
    position = np.searchsorted(model.identity, ids)
    position = np.clip(position, 0, len(model.identity) - 1)
    known = model.identity[position] == ids
    usable = np.flatnonzero(fair & known & (model.count[position] >= 2))
    if not len(usable):
        return float("inf")
    if len(usable) > _SAMPLE:
        usable = np.sort(np.random.default_rng(_SEED).choice(usable, _SAMPLE, replace=False))
    at = position[usable]
    x = np.asarray(unit[usable], dtype=np.float32)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    length = (model.cohesion[at] * model.count[at]).astype(np.float64)
    dot = np.einsum("nd,nd->n", x, model.centroid[at]).astype(np.float64) * length
    rest = np.sqrt(np.maximum(length**2 - 2 * dot + 1, 1e-12))
    return float(np.quantile((dot - 1) / rest, ASSIGN_QUANTILE))
