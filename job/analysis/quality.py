"""How well the verdicts and the map hold up: with ``--supervised``, the faces whose map neighbourhood
disagrees with their embedding neighbourhood, and the verdicts against a demo database's planted truth (the
map model's own checks, held-out and inverse, are :mod:`job.maps.quality`). Array maths over batches of
points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from job.analysis.lookalikes import Lookalikes
from job.analysis.suspects import LOW_QUALITY, SuspectScores
from job.arrays import BoolArray, FloatArray, IdArray
from job.io.demo import DemoTruth
from job.knn.graph import FaceGraph


def supervised_disagreement(coords: FloatArray, codes: IdArray, graph: FaceGraph, k: int) -> BoolArray:
    """Fitted faces whose filed identity is far more common among their ``k`` nearest fitted faces on the map
    than among their ``k`` nearest fitted faces in the embedding space (share difference >= 0.5): the
    supervised map pulled them towards the identity they are filed under, their embeddings do not agree.

    ``coords`` (n_faces, n_components) is the whole map; only the fitted faces (``graph.reference``) count.
    """
    from job.analysis.metrics import map_neighbours

    fitted = graph.reference
    flags = np.zeros(len(codes), dtype=bool)
    k = min(k, len(fitted) - 1, graph.k - 1)
    if k < 1:
        return flags
    own = codes[fitted]
    on_map = (own[map_neighbours(coords[fitted], k)] == own[:, None]).mean(axis=1)
    near = graph.indices[fitted, 1 : k + 1]
    in_space = np.where(near >= 0, own[np.maximum(near, 0)] == own[:, None], False).mean(axis=1)
    flags[fitted] = on_map - in_space >= 0.5
    return flags


@dataclass(frozen=True)
class TruthScores:
    """How the verdicts compare with a demo database's planted answers."""

    suspect_precision: float
    suspect_recall: float
    lookalike_recall: float
    twin_recall: float | None
    low_quality_precision: float | None
    low_quality_recall: float | None


def against_truth(truth: DemoTruth, rows: IdArray, scores: SuspectScores, lookalikes: Lookalikes) -> TruthScores:
    """Precision/recall of the misfiled and low-quality verdicts; the share of planted pairs (look-alikes and
    near-twins) among the top 2x-planted pairs, and of planted near-twins among the top 2x-twins pairs (None
    where the demo shape plants no low-quality faces or no twins)."""
    suspect_precision, suspect_recall = _precision_recall(set(rows[scores.suspect].tolist()),
                                                          set(truth.misfiled_rows))
    low_precision: float | None
    low_recall: float | None
    low_precision, low_recall = _precision_recall(set(rows[scores.verdict == LOW_QUALITY].tolist()),
                                                  set(truth.low_quality_rows))
    twins = {(a, b) for a, b in truth.twin_pairs}
    if not truth.spec.low_quality_fraction:  # a shape without low-quality faces: nothing to measure against
        low_precision = low_recall = None
    return TruthScores(suspect_precision, suspect_recall,
                       top_pair_recall(lookalikes, {(a, b) for a, b in truth.lookalike_pairs} | twins),
                       top_pair_recall(lookalikes, twins) if twins else None, low_precision, low_recall)


def top_pair_recall(lookalikes: Lookalikes, planted: set[tuple[int, int]]) -> float:
    """The share of ``planted`` pairs among the first 2 x len(planted) listed pairs (1.0 with none planted)."""
    top = 2 * len(planted)
    listed = set(zip(lookalikes.id_a[:top].tolist(), lookalikes.id_b[:top].tolist(), strict=True))
    return len(listed & planted) / len(planted) if planted else 1.0


def _precision_recall(flagged: set[int], planted: set[int]) -> tuple[float, float]:
    hits = len(flagged & planted)
    return (hits / len(flagged) if flagged else float(not planted)), (hits / len(planted) if planted else 1.0)
