"""The database's own similarity geometry, measured before any verdict, and the space the run computes in.

Face recognizers disagree about where "unrelated" sits. ArcFace-family models give two different people a
cosine near 0 and two photos of one person ~0.5-0.7; dlib's ResNet gives different people ~0.84 and the same
person ~0.95, because every vector shares one large mean direction. A fixed cosine threshold holds for one
family only, so a run first measures, on sampled face pairs of its own database:

* the **genuine** (same identity) and **impostor** (different identities) cosine distributions;
* whether to **centre**: subtract the database's mean direction (the mean of the identities' mean faces, each
  identity weighing the same, so one large identity does not pull it) and renormalise every face. Done when
  impostor pairs are clearly not centred (their median cosine above ``CENTRE_SHARE`` of the genuine median,
  and above zero by more than ``CENTRE_SIGNIFICANCE`` standard errors): the mean direction then carries no
  identity and hides the differences that do. A centred model is left as it is, and so is a database whose
  faces all point one way (the centre would take everything);
* whether the raw **norms carry quality** (ArcFace-family models give blurred or turned faces short vectors):
  when the lengths vary and track how alike a face is to the other faces of its identity (Spearman rank
  correlation over the genuine pairs). When they do not (unit input, or dlib's lengths), a face's quality
  comes from the geometry instead: how close its nearest faces are (:func:`neighbour_quality`).

Every verdict threshold is then read in the working space and relative to these distributions (duplicate
closeness as a share of the genuine distance, placement temperature as a share of the genuine-impostor gap;
fits and look-alike similarities were relative to each identity's own genuine similarity already). The map
model carries the centre, so ``transform``, ``nearest`` and ``invert`` work in the same space.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from job.analysis.suspects import MIN_SCORE, Calibration
from job.arrays import FloatArray, IdArray
from job.knn.graph import FaceGraph
from job.xp import to_host

CENTRE_SHARE = 0.1  # impostor median above this share of the genuine median: a shared mean direction, subtract it
CENTRE_SIGNIFICANCE = 5.0  # ... and above 0 by this many standard errors of the median (not sampling noise)
MIN_CENTRED_LENGTH = 1e-3  # a centred face shorter than this (all faces one direction): not centred
NORM_QUALITY_MIN = 0.15  # Spearman of norms with genuine similarity at or above this: norms carry quality
PAIRS = 20_000  # genuine and impostor pairs sampled
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
DUPLICATE_SHARE = 0.03  # a re-enrolled photo: 1 - cos below this share of a typical genuine pair's 1 - cos
TEMPERATURE_SHARE = 1 / 30  # placement weights: exp((cos - best) / (gap x this)); 0.02 for ArcFace's 0.6 gap
QUALITY_NEIGHBOURS = 3  # neighbour quality: mean cosine to this many nearest other faces
_BLOCK = 1 << 14
Centring = Literal["auto", "on", "off"]


@dataclass(frozen=True)
class Distributions:
    """Quantiles (``QUANTILES``) of the sampled genuine and impostor pair cosines."""

    genuine: tuple[float, ...]
    impostor: tuple[float, ...]

    @property
    def genuine_median(self) -> float:
        """The genuine median; 1.0 when nothing was measured (every identity has one face)."""
        return _or(self.genuine[len(QUANTILES) // 2], 1.0)

    @property
    def impostor_median(self) -> float:
        """The impostor median; 0.0 when nothing was measured (a single identity)."""
        return _or(self.impostor[len(QUANTILES) // 2], 0.0)

    def record(self) -> dict[str, Any]:
        names = [f"q{round(q * 100):02d}" for q in QUANTILES]
        return {"genuine": dict(zip(names, _rounded(self.genuine), strict=True)),
                "impostor": dict(zip(names, _rounded(self.impostor), strict=True))}


@dataclass(frozen=True)
class Geometry:
    """What was measured of a database's geometry and what the run decided from it.

    ``centre`` (dim,) float32: subtracted from every unit face before renormalising (None: not centred);
    ``centre_scale``: the median length of a unit face once the centre is subtracted (to map a working-space
    vector back to the input's space); ``raw`` / ``working``: the pair distributions as given and in the space
    the run computes in; ``quality_from``: "norms" or "neighbours"; ``norm_quality``: the Spearman correlation
    the decision rests on (None: the lengths do not vary, or fewer than 10 genuine pairs).
    """

    centre: FloatArray | None
    centre_scale: float
    reason: str
    raw: Distributions
    working: Distributions
    quality_from: str
    norm_quality: float | None
    pairs: dict[str, int] = field(default_factory=dict)

    @property
    def centred(self) -> bool:
        return self.centre is not None

    @property
    def duplicate_cos(self) -> float:
        """The cosine at or above which two faces of one identity are the same photo enrolled twice."""
        return 1.0 - DUPLICATE_SHARE * max(1.0 - self.working.genuine_median, 1e-3)

    @property
    def temperature(self) -> float:
        """The cosine scale of placement's identity weights (``job.maps.placement.place``)."""
        return TEMPERATURE_SHARE * max(self.working.genuine_median - self.working.impostor_median, 0.03)

    def calibration(self, margin: float = 0.0, min_score: float = MIN_SCORE) -> Calibration:
        """The verdicts' settings in this geometry (see :class:`job.analysis.suspects.Calibration`): the
        stranger test only where quality is measured apart from identity (the norms)."""
        upper = self.working.impostor[-1]
        stranger = upper if self.quality_from == "norms" and np.isfinite(upper) else None
        return Calibration(margin, min_score, self.duplicate_cos, stranger, self.working.impostor_median)

    def face_quality(self, from_norms: np.ndarray, graph: FaceGraph) -> np.ndarray:
        """Each face's quality (n_faces,), 1 = typical: ``from_norms`` (the raw lengths over their median,
        :attr:`job.io.database.FaceDatabase.quality`) when the lengths carry it, else from the neighbours in
        ``graph`` (:func:`neighbour_quality`, host float32)."""
        return from_norms if self.quality_from == "norms" else neighbour_quality(graph)

    def apply(self, unit: np.ndarray) -> np.ndarray:
        """``unit`` rows (n, dim) in the working space: centred and renormalised (as they are when not centred).
        Row by row in float64, the dtype kept, so a worker converting its chunk gets the client's bits."""
        return unit if self.centre is None else centre_rows(unit, self.centre)

    def record(self) -> dict[str, Any]:
        """run.json's ``geometry``."""
        return {"centred": self.centred, "reason": self.reason, "raw": self.raw.record(),
                "working": self.working.record(), "quality_from": self.quality_from,
                "norm_quality": None if self.norm_quality is None else round(self.norm_quality, 4),
                "duplicate_cos": round(self.duplicate_cos, 6), "temperature": round(self.temperature, 6),
                "pairs": self.pairs}


def measure_geometry(unit: np.ndarray, ids: IdArray, log_norms: np.ndarray | None, *, centring: Centring = "auto",
                     seed: int | None = None) -> Geometry:
    """Measure the geometry of the unit faces ``unit`` (n_faces, dim) filed under ``ids`` (n_faces,) and decide
    the working space; ``log_norms`` (n_faces,) the log of each face's length as given (None: unit input)."""
    rng = np.random.default_rng(0 if seed is None else seed)
    _, codes, counts = np.unique(ids, return_inverse=True, return_counts=True)
    codes, counts = codes.reshape(-1).astype(np.int64), counts.astype(np.int64)
    genuine, impostor = _genuine_pairs(rng, codes, counts), _impostor_pairs(rng, codes, counts)
    raw = Distributions(_quantiles(_cosines(unit, genuine)), _quantiles(_cosines(unit, impostor)))
    centre, reason = _decide_centre(unit, codes, counts, raw, len(impostor), centring=centring)
    centre_scale = 1.0
    working = raw
    if centre is not None:
        sample = np.sort(rng.choice(len(codes), size=min(len(codes), PAIRS), replace=False))
        centre_scale = float(np.median(np.linalg.norm(_rows(unit, sample) - centre, axis=1)))
        if 1.0 - float(np.linalg.norm(centre)) < MIN_CENTRED_LENGTH or centre_scale < MIN_CENTRED_LENGTH:
            centre, centre_scale = None, 1.0
            reason = "not centred: the faces all point one way, the mean direction would take everything"
        else:
            working = Distributions(_quantiles(_cosines(unit, genuine, centre)),
                                    _quantiles(_cosines(unit, impostor, centre)))
    norm_quality = _norm_quality(unit, genuine, log_norms, centre)
    carries = norm_quality is not None and norm_quality >= NORM_QUALITY_MIN
    return Geometry(centre, centre_scale, reason, raw, working, "norms" if carries else "neighbours", norm_quality,
                    {"genuine": len(genuine), "impostor": len(impostor)})


def centre_rows(unit: np.ndarray, centre: FloatArray) -> np.ndarray:
    """Rows of ``unit`` minus ``centre``, renormalised, in ``unit``'s dtype (float64 arithmetic, row by row). A
    row the centre cancels stays zeros; none does, as the centre is shorter than a unit face
    (:func:`measure_geometry` does not centre faces that all point one way)."""
    wide = np.asarray(unit, dtype=np.float64) - centre.astype(np.float64)
    lengths = np.sqrt(np.einsum("ij,ij->i", wide, wide))
    return (wide / np.where(lengths > 0, lengths, 1.0)[:, None]).astype(unit.dtype, copy=False)


def centre_in_place(unit: np.ndarray, geometry: Geometry) -> None:
    """Move every face of ``unit`` (n_faces, dim) into the working space, block by block (no second copy)."""
    if geometry.centre is None:
        return
    for start in range(0, len(unit), _BLOCK):
        unit[start:start + _BLOCK] = geometry.apply(unit[start:start + _BLOCK])


def to_input_space(vector: FloatArray, centre: FloatArray | None, centre_scale: float) -> FloatArray:
    """A working-space unit ``vector`` (dim,) as a unit vector of the input's own space (the centre added back
    at a typical face's length): what ``invert`` hands the user, comparable with their database's vectors."""
    if centre is None:
        return vector
    raw = centre.astype(np.float64) + centre_scale * vector.astype(np.float64)
    return (raw / np.linalg.norm(raw)).astype(np.float32)


def neighbour_quality(graph: FaceGraph) -> FloatArray:
    """Quality from the geometry: each face's mean cosine to its ``QUALITY_NEIGHBOURS`` nearest other faces in
    the run's kNN graph, over the database's median of that (n_faces,) float32, 1 = typical. A recognisable
    face has close neighbours (its identity's other photos); a turned, blurred or occluded one is far from
    every face. NaN for a face with no other face in the graph."""
    k = min(QUALITY_NEIGHBOURS, graph.k - 1)
    rows = to_host(graph.neighbour_rows(slice(0, k + 1)))
    cosines = 1.0 - to_host(graph.distances[:, : k + 1]).astype(np.float64)
    usable = (rows >= 0) & (rows != np.arange(len(rows))[:, None]) & np.isfinite(cosines)
    # the first k usable entries of each row (a face's own entry, first for fitted faces, drops out)
    usable &= np.cumsum(usable, axis=1) <= k
    counted = usable.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(usable, cosines, 0.0).sum(axis=1) / counted
    finite = counted > 0
    typical = float(np.median(mean[finite])) if finite.any() else 1.0
    return np.where(finite, mean / max(typical, 1e-6), np.nan).astype(np.float32)


def _decide_centre(unit: np.ndarray, codes: IdArray, counts: IdArray, raw: Distributions, n_impostor: int, *,
                   centring: Centring) -> tuple[FloatArray | None, str]:
    impostor, genuine = raw.impostor_median, raw.genuine_median
    shown = f"{genuine:.3f}" if np.isfinite(raw.genuine[0]) else "not measured (no identity of 2+ faces)"
    measured = f"impostor median cosine {impostor:.3f}, genuine {shown}"
    if not n_impostor:
        return None, "not centred: a single identity, no pair of different people to measure"
    if centring == "off":
        return None, f"not centred: analysis.centre = off ({measured})"
    # the standard error of a median: 1.2533 sigma / sqrt(n), sigma from the interquartile range
    noise = 1.2533 * (raw.impostor[3] - raw.impostor[1]) / 1.349 / np.sqrt(n_impostor)
    if centring == "auto" and not (impostor > CENTRE_SHARE * genuine and impostor > CENTRE_SIGNIFICANCE * noise):
        return None, f"not centred: impostor pairs already centred ({measured})"
    centre = _identity_mean(unit, codes, counts)
    why = ("analysis.centre = on" if centring == "on" else
           f"impostor pairs not centred ({measured}: a mean direction shared by every face)")
    return centre, f"centred: {why}; mean direction length {float(np.linalg.norm(centre)):.3f} subtracted"


def _identity_mean(unit: np.ndarray, codes: IdArray, counts: IdArray) -> FloatArray:
    """The mean over identities of each identity's mean unit face (every identity weighs the same): one pass."""
    weights = 1.0 / (counts[codes].astype(np.float64) * len(counts))
    total = np.zeros(unit.shape[1], dtype=np.float64)
    for start in range(0, len(unit), _BLOCK):
        block = np.asarray(unit[start:start + _BLOCK], dtype=np.float64)
        total += weights[start:start + _BLOCK] @ block
    return total.astype(np.float32)


def _genuine_pairs(rng: np.random.Generator, codes: IdArray, counts: IdArray) -> np.ndarray:
    """``PAIRS`` (face, another face of its identity) pairs, (m, 2) int64: first faces uniform among the faces
    of identities of 2+ faces, partners uniform among the rest of the identity (none: no such identity)."""
    eligible = np.flatnonzero(counts[codes] >= 2)
    if not len(eligible):
        return np.zeros((0, 2), dtype=np.int64)
    order = np.argsort(codes, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(codes), dtype=np.int64)  # each face's position within its identity
    rank[order] = np.arange(len(codes)) - starts[codes[order]]
    first = eligible[rng.integers(0, len(eligible), size=PAIRS)]
    offset = rng.integers(0, counts[codes[first]] - 1)
    offset += offset >= rank[first]  # skip the face itself
    # each pair once: a pair drawn twice would tie with itself in the rank correlation
    return np.unique(np.stack([first, order[starts[codes[first]] + offset]], axis=1).astype(np.int64), axis=0)


def _impostor_pairs(rng: np.random.Generator, codes: IdArray, counts: IdArray) -> np.ndarray:
    """``PAIRS`` (face, face of another identity) pairs, (m, 2) int64: first faces uniform among the faces that
    have a face of another identity, partners uniform among those other faces (none: a single identity). Drawn
    exactly, so one identity holding most faces leaves the sample as large."""
    outside = len(codes) - counts[codes]
    eligible = np.flatnonzero(outside > 0)
    if not len(eligible):
        return np.zeros((0, 2), dtype=np.int64)
    order = np.argsort(codes, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    first = eligible[rng.integers(0, len(eligible), size=PAIRS)]
    code = codes[first]
    offset = rng.integers(0, outside[first])
    offset += np.where(offset >= starts[code], counts[code], 0)  # skip the first face's own identity
    return np.unique(np.stack([first, order[offset]], axis=1).astype(np.int64), axis=0)


def _rows(unit: np.ndarray, rows: IdArray) -> np.ndarray:
    return np.asarray(unit[rows], dtype=np.float64)


def _cosines(unit: np.ndarray, pairs: np.ndarray, centre: FloatArray | None = None) -> np.ndarray:
    if not len(pairs):
        return np.zeros(0)
    a, b = _rows(unit, pairs[:, 0]), _rows(unit, pairs[:, 1])
    if centre is not None:
        a, b = centre_rows(a, centre), centre_rows(b, centre)
    cosines: np.ndarray = np.einsum("ij,ij->i", a, b)
    return cosines


def _quantiles(values: np.ndarray) -> tuple[float, ...]:
    if not len(values):
        return tuple(float("nan") for _ in QUANTILES)
    return tuple(float(v) for v in np.quantile(values, QUANTILES))


def _norm_quality(unit: np.ndarray, genuine: np.ndarray, log_norms: np.ndarray | None,
                  centre: FloatArray | None) -> float | None:
    """Spearman rank correlation, over the genuine pairs, between the pair's summed log lengths and its cosine
    in the working space: do longer vectors mean more recognisable faces? None when the lengths do not vary."""
    from job.io.database import lengths_constant  # job.io imports the analysis' neighbours, not the reverse

    if lengths_constant(log_norms) or len(genuine) < 10:
        return None
    assert log_norms is not None
    summed = log_norms[genuine[:, 0]].astype(np.float64) + log_norms[genuine[:, 1]]
    cosines = _cosines(unit, genuine, centre)
    with np.errstate(invalid="ignore", divide="ignore"):  # constant cosines (identical faces): no correlation
        correlation = float(np.corrcoef(_ranks(summed), _ranks(cosines))[0, 1])
    return correlation if np.isfinite(correlation) else None


def _ranks(values: np.ndarray) -> np.ndarray:
    ranks = np.empty(len(values))
    ranks[np.argsort(values, kind="stable")] = np.arange(len(values))
    return ranks


def _or(value: float, fallback: float) -> float:
    return value if np.isfinite(value) else fallback


def _rounded(values: tuple[float, ...]) -> list[float | None]:
    return [round(v, 4) if np.isfinite(v) else None for v in values]
