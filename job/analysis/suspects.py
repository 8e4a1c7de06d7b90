"""Per-face verdicts: ``ok``, ``misfiled``, ``low_quality``, ``lone`` or ``duplicate``.

Decided in the embedding space, never on the map, for face f filed under identity c and its best candidate d
(among the identities of f's nearest faces in the run's kNN graph and the identities most like c,
:mod:`job.analysis.candidates`; so the cost is n_faces x (k + m) x dim, never all pairs).

*Fit.* The mean cosine of f to the faces of an identity X, divided by X's own mean face-to-face cosine mu_X
(:func:`within_similarity`; leave-one-out for f's own identity, so a face does not vouch for itself). 1 means
"as alike as X's faces are to each other", whatever X's number of faces: a cosine to a centroid would not do,
because the centroid of 2 faces is one noisy face and that of 30 faces is nearly the identity's centre.

*Evidence.* A face of c of quality g is expected at (own, other) = g sqrt(mu_c) (1, rho) in the plane of
``mean cosine / sqrt(mu)`` to c and to d, and a face of d at g sqrt(mu_d) (rho, 1), where rho is how alike the
two identities' faces are (their mean cross cosine over sqrt(mu_c mu_d); near 1 for twins). The noise of each
coordinate shrinks with the number of faces behind it: its covariance is the two identities' scaled sums'
Gram matrix, so a 2-face identity is judged on the evidence one other face gives, a 30-face one on thirty.
The score is the log-likelihood ratio of "belongs to d" over "belongs to c", each with its best quality g >= 0
(so a blurred face is not called misfiled for being unlike everyone), with the noise scale calibrated on the
database itself (:func:`_noise`). Between near-twins, the two
lines are close and the test is between them, along the pair; when rho is within ``SEPARABLE_Z`` errors of 1,
the faces cannot tell the two identities apart and no face is called misfiled between them.

*Chance is not evidence.* Every face fits the best of many other identities a little, by chance: how much
is measured on the database (:func:`chance_fit`: the best other fit of faces that fit their own identity and
whose best other is no look-alike of it): its 99th percentile is ~0.5 for ArcFace, ~0.8 for dlib's crowded
space (where the best of 400 strangers fits a typical face at ~0.65). Only a fit beyond
it *claims* a face. And the score is a likelihood ratio: the verdict reads it against the base rate of
misfiled faces in this database (:func:`prior_log_odds`), except between near-twins (rho at or above
``SAME_PERSON``), where the other identity is the one confusion expected rather than the best of many.

*Verdicts.* ``misfiled``: the score exceeds ``min_score`` (log odds; 3 ~ 20:1) plus the base rate's log odds
against, the face's mean cosine to d over sqrt(mu_d) beats that to c by more than ``margin``, d claims it
(beyond chance) and there is plain evidence besides the odds (a fit to d of ``LOW_FIT`` or more, or to c under
``UNLIKE_OWN``) — or, where face quality is measured apart from identity (norms that carry it,
:class:`Calibration`), a recognisable face fits its own identity no better than a stranger's face does (no
clear target: someone the database does not hold). Either way not when more than half of c's faces say so
(then c as a whole resembles d: a look-alike or one person filed twice, which :mod:`job.analysis.lookalikes`
reports). The surest misfiled face of each identity of 3+ faces then leaves it, and every face is judged again.
``low_quality``: not misfiled, weakly like every identity (its own fit, and its best other fit if that claims
it, below ``LOW_FIT``) and of a low ``quality`` (from the norms, or from the geometry: how close its nearest
faces are, :func:`job.analysis.geometry.neighbour_quality`; unknown: a fit below ``LOW_FIT_UNRATED`` alone).
A hard photo of the right person — turned, blurred, occluded — is unlike its identity and claimed by nobody:
it lands here, not in ``misfiled``. ``lone``: the only face of its identity, nothing to compare with (its
score is ``NO_SCORE``; its suggested id is the identity that claims it as well as that identity's own faces
fit each other, else its own). ``duplicate``: a re-enrolment of an earlier face of the same identity
(:func:`near_duplicates`, from :func:`judge_faces`, at a closeness relative to the database's genuine pairs).
Precedence: duplicate, misfiled, lone, low_quality, ok.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from job.analysis.identities import IdentityTable
from job.analysis.lookalikes import SAME_PERSON
from job.arrays import BoolArray, FloatArray, IdArray
from job.knn.graph import FaceGraph
from job.space.faces import Faces, as_faces
from job.space.kernels import rowwise_dot
from job.xp import lexsort, namespace, run_starts

VERDICTS = ("ok", "misfiled", "low_quality", "lone", "duplicate")
OK, MISFILED, LOW_QUALITY, LONE, DUPLICATE = range(len(VERDICTS))
MIN_SCORE = 3.0  # log odds that the face belongs to the suggested identity rather than the one it is filed under
LOW_FIT = 0.8  # below this fit to every identity, a face of low quality is "low_quality"
QUALITY_LOW = 0.8  # quality (raw norm / the database's median norm) below this is low
UNLIKE_OWN = 0.5  # a face this unlike its own identity's faces is plainly not one of them
LOW_FIT_UNRATED = 0.75  # without norms, a fit this low to every identity is taken as a low-quality face
DUPLICATE_COS = 0.99  # a face this close to an earlier face is a re-enrolment of the same photo
DUPLICATE_COLUMNS = 3  # a re-enrolled photo is among a face's first few neighbours
CALIBRATION_RHO = 0.5  # faces whose best other identity is this alike measure the noise (see _noise)
CALIBRATION_MIN = 20
SEPARABLE_Z = 3.0  # two identities are told apart when rho is below 1 by this many standard errors (two random
# halves of one person's photos pass 2 standard errors 3% of the time on real embeddings: bench/bench_real.py)
PRIOR_MAX = 0.5  # the base rate of misfiled faces is taken as at most this
CHANCE_QUANTILE = 0.99  # a face claimed by another identity fits it better than 99% of faces fit their best stranger
NO_SCORE = np.float32(-1000.0)  # outlier_score of a face with nothing to compare with
_CHI2_1_MEDIAN = 0.4549364


@dataclass(frozen=True)
class Calibration:
    """The settings verdicts are read with, relative to the database's own geometry (a run's come from
    :meth:`job.analysis.geometry.Geometry.calibration`).

    ``margin`` and ``min_score``: the misfiled test's settings (``analysis.suspect_margin``,
    ``analysis.misfiled_score``); ``duplicate_cos``: the cosine at or above which two faces of one identity
    are one photo enrolled twice; ``stranger_cos``: the cosine a stranger's face reaches (the impostor pairs'
    95th percentile) when face quality is measured independently of identity (raw norms that carry it), else
    None. With it, a recognisable face (quality not low) that fits its own identity no better than a stranger
    does is misfiled even when no other identity claims it: someone the database does not hold (whatever
    ``min_score`` says: no odds against a candidate stand for it). ``baseline``: the database's impostor
    median cosine, above which pairs of identities are compared (:meth:`pair_similarity`)."""

    margin: float = 0.0
    min_score: float = MIN_SCORE
    duplicate_cos: float = DUPLICATE_COS
    stranger_cos: float | None = None
    baseline: float = 0.0

    def pair_similarity(self, rho: np.ndarray, mu_own: np.ndarray, mu_other: np.ndarray) -> np.ndarray:
        """rho measured above the ``baseline`` (the database's impostor median), as look-alikes measure a pair
        (:mod:`job.analysis.lookalikes`), so "as alike as one person's faces" means the same in both."""
        if not self.baseline:
            return rho
        xp = namespace(rho)
        within = xp.sqrt(xp.clip(mu_own - self.baseline, 0.05, None) * xp.clip(mu_other - self.baseline, 0.05, None))
        measured: np.ndarray = (rho * xp.sqrt(mu_own * mu_other) - self.baseline) / within
        return measured


@dataclass(frozen=True)
class SuspectScores:
    """Per-face verdicts, each of shape (n_faces,).

    ``score`` float32 (log odds of the suggested identity over the filed one; higher = more likely misfiled,
    ``NO_SCORE`` with nothing to compare), ``suspect`` bool (verdict misfiled), ``suggested_id`` int64 (-1: no
    identity to compare with), ``own`` and ``other`` float32 fits to the filed and the best other identity
    (1 = as alike as that identity's faces are to each other; NaN: none), ``lone`` bool (its identity's only
    face), ``verdict`` int8 index into :data:`VERDICTS`, ``claimed`` bool (the best other identity fits the face
    beyond what chance gives: a misfiled face without it has no clear target, see :class:`Calibration`).
    """

    score: FloatArray
    suspect: BoolArray
    suggested_id: IdArray
    own: FloatArray
    other: FloatArray
    lone: BoolArray
    verdict: np.ndarray
    claimed: BoolArray

    @property
    def left_out(self) -> BoolArray:
        """Faces that must not vouch for an identity: misfiled ones and re-enrolments (n_faces,) bool."""
        left_out: BoolArray = self.suspect | (self.verdict == DUPLICATE)
        return left_out

    def verdict_names(self) -> np.ndarray:
        """The verdict of each face as text, (n_faces,) object."""
        names: np.ndarray = np.asarray(VERDICTS, dtype=object)[self.verdict]
        return names


@dataclass(frozen=True)
class Tightness:
    """How alike an identity's faces are (mu, the mean cosine between two of its faces), as one database-wide
    model: identities' mu spread around ``typical`` with variance ``spread``; one face pair's cosine has
    variance ``pair_noise`` around its identity's mu. An identity's estimate is its raw mean over its pairs,
    shrunk towards ``typical`` by how many pairs it has (empirical Bayes)."""

    typical: float
    spread: float
    pair_noise: float

    def shrunk(self, squared: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """mu of identities whose faces sum to a vector of squared length ``squared`` over ``counts`` faces
        (from the sum s of n unit faces, the mean over the n(n-1) ordered pairs is (|s|^2 - n) / (n(n-1)))."""
        xp = namespace(squared, counts)
        pairs = counts * (counts - 1) / 2
        raw = xp.where(pairs > 0, (squared - counts) / xp.where(pairs > 0, 2 * pairs, 1), self.typical)
        mu: np.ndarray = xp.clip(self.typical + self._weight(pairs) * (raw - self.typical), 0.05, None)
        return mu

    def variance(self, counts: np.ndarray) -> np.ndarray:
        """How unsure the shrunk mu of an identity of ``counts`` faces is (its posterior variance)."""
        pairs = counts * (counts - 1) / 2
        return self.spread * (1.0 - self._weight(pairs))

    def _weight(self, pairs: np.ndarray) -> np.ndarray:
        xp = namespace(pairs)
        weight: np.ndarray = self.spread / (self.spread + self.pair_noise / xp.maximum(pairs, 1e-9))
        return weight


def within_similarity(table: IdentityTable, dim: int) -> tuple[np.ndarray, Tightness]:
    """Each identity's shrunk mu (n_identities,) float64 (an identity of one face gets the typical value),
    and the model it comes from (:class:`Tightness`), fitted on the identities of two or more faces: the
    squared deviation of their raw mu from the median is spread + pair_noise / pairs (least squares, the
    2% largest left out as misfiled-face outliers; pair_noise at least isotropic, (1 - typical^2) / dim)."""
    xp = namespace(table.counts)
    counts = table.counts.astype(xp.float64)
    pairs = counts * (counts - 1) / 2
    measured = pairs > 0
    raw = (table.norms[measured] ** 2 - counts[measured]) / (2 * pairs[measured])
    typical = float(xp.median(raw)) if len(raw) else 1.0
    floor = max(1.0 - typical**2, 1e-3) / dim
    spread, pair_noise = 1e-6, floor
    if len(raw) >= 10:
        deviation, inverse = (raw - typical) ** 2, 1.0 / pairs[measured]
        kept = deviation <= xp.quantile(deviation, 0.98)
        design = xp.stack([xp.ones(int(kept.sum())), inverse[kept]], axis=1)
        (spread, pair_noise), *_ = xp.linalg.lstsq(design, deviation[kept], rcond=None)
        spread, pair_noise = max(float(spread), 1e-6), max(float(pair_noise), floor)
    model = Tightness(typical, spread, pair_noise)
    return model.shrunk(table.norms**2, counts), model


def leave_one_out(unit: Faces | np.ndarray, table: IdentityTable) -> tuple[FloatArray, BoolArray]:
    """Each face's cosine to the mean of its identity's *other* faces (n_faces,) float32, and which faces are
    their identity's only face (whose value is then the database's median). Used to draw the fit sample."""
    xp = namespace(table.codes)
    codes, counts = table.codes, table.counts
    # |s - u|^2 = |s|^2 - 2 u.s + 1 for a unit u, with s = norm * centroid
    dot = as_faces(unit).rowwise_dot(table.centroids, codes) * table.norms[codes]
    squared = table.norms[codes] ** 2 - 2.0 * dot + 1.0
    lone = counts[codes] <= 1
    with np.errstate(invalid="ignore", divide="ignore"):
        own = xp.where(lone | (squared <= 1e-12), xp.nan, (dot - 1.0) / xp.sqrt(xp.maximum(squared, 1e-12)))
    typical = float(xp.nanmedian(own)) if xp.isfinite(own).any() else 1.0
    return xp.where(xp.isfinite(own), own, typical).astype(xp.float32), lone


@dataclass(frozen=True)
class _Fits:
    """Per face: the (own, other) coordinates, mean cosine / sqrt(mu), with their noise covariance
    (``var_own``, ``var_other``, ``covar``, up to one scale), rho of the pair, and mu of each side."""

    own: np.ndarray
    other: np.ndarray
    var_own: np.ndarray
    var_other: np.ndarray
    covar: np.ndarray
    rho: np.ndarray
    mu_own: np.ndarray
    mu_other: np.ndarray


def _fits(faces: Faces, table: IdentityTable, codes: IdArray, best: IdArray, counted: BoolArray, *,
          mu: np.ndarray, model: Tightness) -> _Fits:
    """The coordinates of every face against its own identity (leave-one-out) and ``best`` (-1 rows: NaN)."""
    xp = namespace(best)
    counts, norms, centroids = table.counts.astype(xp.float64), table.norms, table.centroids
    other_id = xp.maximum(best, 0)
    f_own = faces.rowwise_dot(centroids, codes) * norms[codes]  # f . S_c
    f_other = faces.rowwise_dot(centroids, other_id) * norms[other_id]  # f . S_d
    inside = counted.astype(xp.float64)  # a face left out of the sums (a duplicate) is not taken out again
    rest = counts[codes] - inside  # faces of c besides f
    rest_squared = norms[codes] ** 2 - inside * (2.0 * f_own - 1.0)  # |S_c - f|^2
    mu_own = model.shrunk(rest_squared, rest)
    mu_other = mu[other_id]
    # (S_c - f) . S_d, the centroid products in row blocks (no n_faces x dim gathers)
    cross = rowwise_dot(centroids, centroids, other_id, codes) * norms[codes] * norms[other_id] - inside * f_other
    n_other = xp.maximum(counts[other_id], 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        own = (f_own - inside) / rest / xp.sqrt(mu_own)
        other = xp.where(best >= 0, f_other / n_other / xp.sqrt(mu_other), xp.nan)
        scale_own, scale_other = rest * xp.sqrt(mu_own), n_other * xp.sqrt(mu_other)
        # the face is left out of how alike the two identities are: a misfiled twin's face would make them alike
        rho = xp.clip(cross / (rest * n_other) / xp.sqrt(mu_own * mu_other), -1.0, 1.0)
        return _Fits(own, other, rest_squared / scale_own**2, norms[other_id] ** 2 / scale_other**2,
                     cross / (scale_own * scale_other), rho, mu_own, mu_other)


def _distances(fits: _Fits, extra_own: np.ndarray | float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Squared Mahalanobis distance of each face's (own, other) point to its own identity's line (1, rho) and to
    the other identity's line (rho, 1), each at its best quality g >= 0, in units of the noise scale that
    ``extra_own`` (variance added to the own coordinate) is given in."""
    xp = namespace(fits.own)
    a, b, d = fits.var_own + extra_own, fits.covar, fits.var_other
    with np.errstate(invalid="ignore"):
        det = xp.maximum(a * d - b * b, 1e-9 * a * d)

    def quad(x1: np.ndarray, x2: np.ndarray, y1: np.ndarray, y2: np.ndarray) -> np.ndarray:
        value: np.ndarray = (x1 * (d * y1 - b * y2) + x2 * (a * y2 - b * y1)) / det
        return value

    x, y = fits.own, fits.other
    one = xp.ones_like(x)
    found = []
    with np.errstate(invalid="ignore", divide="ignore"):  # rows without a candidate are NaN, left to the caller
        point = quad(x, y, x, y)
        for r1, r2 in ((one, fits.rho), (fits.rho, one)):
            along, length = quad(r1, r2, x, y), quad(r1, r2, r1, r2)
            found.append(xp.where(along > 0, point - along * along / length, point))
    return found[0], found[1]


def score_faces(unit: Faces | np.ndarray, table: IdentityTable, nearby: IdArray, similar: IdArray | None = None, *,
                quality: FloatArray | None = None, duplicate: BoolArray | None = None,
                calibration: Calibration = Calibration()) -> SuspectScores:
    """Verdicts for every face of ``unit`` (n_faces, dim) filed as ``table.codes`` (see the module docstring).

    ``nearby`` (n_faces, k): identity codes of each face's nearest other faces (-1: none); ``similar``
    (n_identities, m): each identity's most similar identities (-1: none; :mod:`job.analysis.candidates`);
    ``quality`` (n_faces,): 1 = a typical face, from the raw norms or the neighbours
    (:meth:`job.analysis.geometry.Geometry.face_quality`; NaN: unknown); ``duplicate`` (n_faces,):
    re-enrolled faces, which ``table`` should have left out of its sums; ``calibration``: the settings read
    relative to the database's geometry.
    """
    faces = as_faces(unit)
    xp = namespace(table.codes)
    n_faces = len(table.codes)
    duplicate = xp.zeros(n_faces, dtype=bool) if duplicate is None else duplicate
    quality = xp.full(n_faces, xp.nan, dtype=xp.float32) if quality is None else quality
    candidates = nearby if similar is None else xp.concatenate([nearby, similar[table.codes]], axis=1)
    counted = ~duplicate  # the caller's table holds every face but the duplicates
    lone = (table.counts[table.codes] - counted) < 1
    evidence = _evidence(faces, table, candidates, counted, lone)
    # the surest misfiled face of each identity of 3+ faces leaves its identity, and every face is judged
    # again: inside, it made the other faces of a small identity look unlike their own (and outvote it)
    surest = _surest(evidence.score, table.codes, calibration.min_score, table.counts[table.codes] - counted >= 2)
    if len(surest):
        counted = counted.copy()
        counted[surest] = False
        # each face's best other identity stays: a face leaving one identity barely moves its centroid
        evidence = _evidence(faces, table.without(faces, surest), candidates, counted, lone, best=evidence.best)
    return _decide(evidence, table, lone, duplicate, quality, calibration=calibration)


def _decide(evidence: _Evidence, table: IdentityTable, lone: BoolArray, duplicate: BoolArray, quality: FloatArray,
            *, calibration: Calibration) -> SuspectScores:
    """The verdicts and suggestions from the last pass's evidence."""
    xp = namespace(evidence.best)
    margin, min_score = calibration.margin, calibration.min_score
    codes, fits, best, found, score = table.codes, evidence.fits, evidence.best, evidence.found, evidence.score
    with np.errstate(invalid="ignore"):
        fit_own = xp.where(lone, xp.nan, fits.own / xp.sqrt(fits.mu_own))
        fit_other = xp.where(best >= 0, fits.other / xp.sqrt(fits.mu_other), xp.nan)
        # the best of many identities fits every face a little by chance: only a fit beyond that claims it
        claimed = fit_other > chance_fit(fit_own, fit_other, fits.rho, found)
        # misfiled needs plain evidence besides the odds: the face fits the other identity about as well as that
        # identity's own faces do, or is plainly unlike its own identity's faces
        plain = claimed & ((fit_other >= LOW_FIT) | (fit_own < UNLIKE_OWN))
        candidate = found & (fits.other - fits.own > margin) & plain & ~duplicate
        # the odds are a likelihood ratio; a database with few misfiled faces asks more evidence of each, except
        # between identities as alike as one person's faces (near-twins): there the other is the one confusion
        # expected, not the best of many
        twins = calibration.pair_similarity(fits.rho, fits.mu_own, fits.mu_other) >= SAME_PERSON
        prior = xp.where(twins, 0.0, prior_log_odds(candidate & (score > min_score), found))
        suspect = candidate & (score > min_score - prior)
        if calibration.stranger_cos is not None:  # a recognisable face as unlike its identity as a stranger's
            stranger = fits.own * xp.sqrt(fits.mu_own) < calibration.stranger_cos
            suspect |= found & ~duplicate & stranger & (quality >= QUALITY_LOW)
    flagged = xp.bincount(codes[suspect], minlength=len(table.ids))
    suspect &= flagged[codes] * 2 <= table.counts[codes]
    verdict = _verdicts(suspect, lone, duplicate, fit_own, xp.where(claimed, fit_other, xp.nan), quality=quality)
    # a lone face has no own fit: it is suggested as the identity it fits as well as that identity's own faces
    resembles = xp.where(lone, (fit_other >= LOW_FIT) & claimed, found & (fits.other > fits.own))
    suggested = xp.where(suspect | resembles, table.ids[xp.maximum(best, 0)], table.ids[codes])
    suggested = xp.where((best >= 0) | ~lone, suggested, -1).astype(xp.int64)
    return SuspectScores(score.astype(xp.float32), suspect, suggested, fit_own.astype(xp.float32),
                         fit_other.astype(xp.float32), lone, verdict, claimed & found)


def prior_log_odds(flagged: BoolArray, judged: BoolArray) -> float:
    """The log prior odds that a face is misfiled, from how many faces the evidence alone flags (their share of
    the judged faces, at least one face in all and at most ``PRIOR_MAX``). The score is a likelihood ratio;
    added to these odds it is the posterior the verdict reads: a database with few misfiled faces asks more
    evidence of each (LFW as it is: 3 label errors in 4,202 faces, so a tilted face that a look-alike claims at
    odds of 50:1 is more likely a hard photo than a fourth error), one with many asks less."""
    n = max(int(judged.sum()), 1)
    share = min(max(int(flagged.sum()), 1) / n, PRIOR_MAX)
    return float(np.log(share / (1.0 - share)))


def chance_fit(fit_own: np.ndarray, fit_other: np.ndarray, rho: np.ndarray, found: BoolArray) -> float:
    """How well the best of the other identities fits a face by chance, measured on the database: the
    ``CHANCE_QUANTILE`` of the best other fit of faces that fit their own identity (``LOW_FIT`` or better) and
    whose best other identity is no look-alike of it (rho below ``CALIBRATION_RHO``), so that nothing but
    chance picked it. A crowded model (dlib: the best of 400 strangers fits ~0.65) sets it high, a sparse one
    (ArcFace: ~0.3) low. ``-inf`` (no bar) with under ``CALIBRATION_MIN`` such faces."""
    xp = namespace(fit_other)
    with np.errstate(invalid="ignore"):
        sample = found & (rho < CALIBRATION_RHO) & (fit_own >= LOW_FIT) & xp.isfinite(fit_other)
    if int(sample.sum()) < CALIBRATION_MIN:
        return -float("inf")
    return float(xp.quantile(fit_other[sample], CHANCE_QUANTILE))


def _noise(to_own: np.ndarray, usable: BoolArray, typical: float, dim: int) -> float:
    """The noise scale of the (own, other) plane, measured on the database: the median squared distance of
    faces to their own identity's line is the chi-square(1) median. Only faces whose best other identity is a
    real look-alike count: for the rest, that identity is the best of many unrelated ones, picked for its
    noise, which would inflate the scale and hide near-twin misfiles. Never below isotropic noise (a face's
    share 1 - mu off its identity's direction, spread over the dimensions), nor measured on under
    ``CALIBRATION_MIN`` faces."""
    xp = namespace(to_own)
    isotropic = max(1.0 - typical, 1e-3) / dim
    if usable.sum() < CALIBRATION_MIN:
        return isotropic
    return max(float(xp.median(to_own[usable])) / _CHI2_1_MEDIAN, isotropic)


def _separable(fits: _Fits, table: IdentityTable, codes: IdArray, best: IdArray, counted: BoolArray, *,
               model: Tightness) -> BoolArray:
    """Whether the faces tell the filed and the best other identity apart: rho below 1 by more than
    ``SEPARABLE_Z`` standard errors. Between two identities the faces cannot separate (one person under two
    ids, or twins with too few faces) no face is called misfiled; the pair is a look-alike
    (``possible_same_person``).

    rho is a mean cross cosine over n_c x n_d face pairs (each as noisy as a within pair, ``pair_noise``)
    divided by sqrt(mu_c mu_d), each mu as unsure as its identity's pairs leave it.
    """
    xp = namespace(codes)
    counts = table.counts.astype(xp.float64)
    n_own, n_other = counts[codes] - counted, counts[xp.maximum(best, 0)]  # the face itself left out, as in rho
    cross = model.pair_noise / xp.maximum(n_own * n_other, 1) / (fits.mu_own * fits.mu_other)
    unsure = sum(model.variance(n) / mu**2 for n, mu in ((n_own, fits.mu_own), (n_other, fits.mu_other)))
    with np.errstate(invalid="ignore"):
        separable: BoolArray = (1.0 - fits.rho) > SEPARABLE_Z * xp.sqrt(cross + fits.rho**2 / 4 * unsure)
    return separable


@dataclass(frozen=True)
class _Evidence:
    """One pass of scoring: each face's best other identity (-1: none), its fits, whether it could be judged,
    and its score (log odds of the other identity over its own)."""

    best: IdArray
    fits: _Fits
    found: BoolArray
    score: np.ndarray


def _evidence(faces: Faces, table: IdentityTable, candidates: IdArray, counted: BoolArray, lone: BoolArray, *,
              best: IdArray | None = None) -> _Evidence:
    """Score every face against ``table`` (whose sums hold the faces ``counted``) and its best candidate
    (found here unless ``best`` is given)."""
    xp = namespace(table.codes)
    codes = table.codes
    mu, model = within_similarity(table, faces.dim)
    if best is None:
        # an identity with no face left in the sums is no candidate (NaN never compares as better)
        scale = xp.where(table.counts > 0, table.norms / xp.maximum(table.counts, 1) / xp.sqrt(mu), xp.nan)
        _, best = faces.best_candidate(table.centroids, scale, candidates, codes)
    fits = _fits(faces, table, codes, best, counted, mu=mu, model=model)
    found = (best >= 0) & ~lone & xp.isfinite(fits.own) & (table.counts[codes] - counted >= 1)
    to_own, _ = _distances(fits)
    noise = _noise(to_own, found & (table.counts[codes] >= 3) & (fits.rho > CALIBRATION_RHO), model.typical,
                   faces.dim)
    # an identity of few faces has an uncertain mu of its own, which widens its own coordinate (with two
    # faces, the one pair is all it knows of how tight it is)
    unsure = model.variance((table.counts[codes] - counted).astype(xp.float64)) / fits.mu_own
    to_own, to_other = _distances(fits, unsure / max(noise, 1e-12))
    separable = _separable(fits, table, codes, best, counted, model=model)
    with np.errstate(invalid="ignore"):
        score = xp.where(found, (to_own - to_other) / (2.0 * max(noise, 1e-12)), NO_SCORE)
        score = xp.where(found & ~separable, xp.minimum(score, 0.0), score)
    return _Evidence(best, fits, found, xp.nan_to_num(score, nan=NO_SCORE, posinf=-NO_SCORE, neginf=NO_SCORE))


def _surest(score: np.ndarray, codes: IdArray, min_score: float, eligible: BoolArray) -> IdArray:
    """The highest-scoring face of each identity among ``eligible`` faces scoring above ``min_score``."""
    xp = namespace(score)
    chosen = xp.flatnonzero((score > min_score) & eligible)
    chosen = chosen[lexsort((-score[chosen], codes[chosen]))]
    surest: IdArray = chosen[run_starts(codes[chosen])] if len(chosen) else chosen
    return surest


def _verdicts(suspect: BoolArray, lone: BoolArray, duplicate: BoolArray, fit_own: np.ndarray,
              fit_other: np.ndarray, *, quality: FloatArray) -> np.ndarray:
    """The verdict codes, by precedence: duplicate, misfiled, lone, low_quality, ok (a lone face has no fit
    of its own to call weak)."""
    xp = namespace(suspect)
    with np.errstate(invalid="ignore"):
        best_fit = xp.fmax(fit_own, fit_other)  # the face's best fit to any identity
        rated = xp.isfinite(quality)
        low = xp.where(rated, (quality < QUALITY_LOW) & (best_fit < LOW_FIT), best_fit < LOW_FIT_UNRATED)
    verdict: np.ndarray = xp.full(len(suspect), OK, dtype=xp.int8)
    verdict[lone] = LONE
    verdict[low & ~lone] = LOW_QUALITY
    verdict[suspect] = MISFILED
    verdict[duplicate] = DUPLICATE
    return verdict


def judge_faces(unit: Faces | np.ndarray, table: IdentityTable, graph: FaceGraph, nearby: IdArray,
                similar: IdArray | None, *, rows: IdArray, quality: FloatArray | None = None,
                calibration: Calibration = Calibration()) -> tuple[SuspectScores, IdArray]:
    """The run's verdicts: re-enrolled photos found in ``graph`` (among each face's first
    ``DUPLICATE_COLUMNS`` neighbours, closer than ``calibration.duplicate_cos``) and left out of the
    identities, then :func:`score_faces` with ``quality`` and ``calibration``. Returns the scores and, per face,
    the face it re-enrols (-1: none). ``rows`` (n_faces,) input rows."""
    xp = namespace(table.codes)
    columns = slice(0, min(DUPLICATE_COLUMNS + 1, graph.k))  # a reference face is its own first neighbour
    duplicate, original = near_duplicates(graph.neighbour_rows(columns), graph.distances[:, columns], rows,
                                          graph.reference, table.ids[table.codes], cos=calibration.duplicate_cos)
    faces = as_faces(unit)
    judged = table.without(faces, xp.flatnonzero(duplicate))
    return score_faces(faces, judged, nearby, similar, quality=quality, duplicate=duplicate,
                       calibration=calibration), original


def near_duplicates(neighbours: IdArray, distances: np.ndarray, rows: IdArray, reference: IdArray, ids: IdArray,
                    *, cos: float = DUPLICATE_COS) -> tuple[BoolArray, IdArray]:
    """Faces that re-enrol another face of the same identity: (n_faces,) bool, and the first face of each chain
    of copies (-1: none).

    ``neighbours``/``distances`` (n_faces, k): each face's nearest reference faces (face positions, -1: none)
    and cosine distances; ``rows`` (n_faces,) input rows; ``reference`` the positions of the reference faces;
    ``ids`` each face's identity. Of two copies the later row is the duplicate; a face outside the reference,
    which no face can find, is the duplicate of the reference face it finds. The same photo under two ids is
    not a duplicate: it is judged, as the filing error it most likely is.
    """
    xp = namespace(neighbours)
    n_faces = len(neighbours)
    in_reference = xp.zeros(n_faces, dtype=bool)
    in_reference[reference] = True
    found = xp.maximum(neighbours, 0)
    close = (neighbours >= 0) & (neighbours != xp.arange(n_faces)[:, None]) & (1.0 - distances >= cos)
    close &= (ids[found] == ids[:, None]) & ((rows[found] < rows[:, None]) | ~in_reference[:, None])
    duplicate = close.any(axis=1)
    original = xp.where(duplicate, found[xp.arange(n_faces), xp.argmax(close, axis=1)], -1).astype(xp.int64)
    for _ in range(64):  # a copy of a copy: follow the chain to its first face
        further = (original >= 0) & (original[xp.maximum(original, 0)] >= 0)
        if not further.any():
            break
        original[further] = original[original[further]]
    return duplicate, original
