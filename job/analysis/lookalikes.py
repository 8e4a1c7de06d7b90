"""Look-alike identities: pairs of different people whose faces are most alike.

The similarity of identities a and b is the mean cosine between a face of a and a face of b,
``sum_a . sum_b / (n_a n_b)`` from the identity sums, which does not favour identities with many or few
faces the way a centroid cosine does. It is divided by the geometric mean of each identity's own mean
face-to-face cosine, shrunk towards the database's typical value for identities with few faces (with two
faces, "own" is one noisy number and would make its identity look like everyone's twin). Both are measured
above the database's impostor baseline (the cosine two strangers' faces have, about 0 once the geometry is
centred), so the scale reads the same for every recognizer: 0 as alike as strangers, 1 as two photos of
one person. Up to
``ALL_PAIRS_MAX`` identities every pair is scored; above, candidate pairs are the identities most linked to
each other in the run's kNN graph (:func:`job.analysis.candidates.identity_links`), so the cost is
n_identities x k, not all pairs — and a pair above the threshold whose faces are never among each other's
nearest neighbours is not listed.
Faces flagged as misfiled should be left out of the table first, or one misfiled face makes its two
identities look alike.

A pair at ``SAME_PERSON`` or above is flagged ``possible_same_person``: their faces are nearly as alike
across the pair as within each identity, as for near-twins or one person enrolled under two ids. Such pairs
come first in the list (the most certain answer to "who looks like whom"), and a face between them has been
judged against the pair (:mod:`job.analysis.suspects`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from job.analysis.identities import IdentityTable
from job.arrays import FloatArray, IdArray
from job.xp import namespace

ALL_PAIRS_MAX = 2000
PRIOR_PAIRS = 3.0  # the typical within-identity cosine counts as this many face pairs of evidence
SAME_PERSON = 0.9  # similarity at which two identities' faces are about as alike as one identity's


@dataclass(frozen=True)
class Lookalikes:
    """Identity pairs, most alike first: ``id_a < id_b`` int64 and ``similarity`` float32, each (n_pairs,)."""

    id_a: IdArray
    id_b: IdArray
    similarity: FloatArray

    @property
    def same_person(self) -> np.ndarray:
        """Pairs whose faces are about as alike as one person's (near-twins, double enrolments): (n_pairs,) bool."""
        return self.similarity >= SAME_PERSON

    def same_person_keys(self) -> set[tuple[int, int]]:
        """The ``possible_same_person`` pairs as ``(id_a, id_b)`` with ``id_a < id_b``."""
        chosen = self.same_person
        return set(zip(self.id_a[chosen].tolist(), self.id_b[chosen].tolist(), strict=True))


def find_lookalikes(table: IdentityTable, linked: IdArray | None = None, top: int = 100, threshold: float = 0.6, *,
                    baseline: float = 0.0) -> Lookalikes:
    """The ``top`` most alike pairs, plus every scored pair above ``threshold`` or at ``SAME_PERSON``.

    Only identities with at least one face in ``table`` take part. ``linked`` (n_identities, m): candidate
    partners of each identity (-1 padded), used above ``ALL_PAIRS_MAX`` identities. ``baseline``: the cosine
    two strangers' faces have (the database's impostor median, :mod:`job.analysis.geometry`); similarities
    are measured above it, so 0 means "as alike as strangers" and 1 "as alike as two faces of one person" in
    any geometry.
    """
    xp = namespace(table.counts)
    present = xp.flatnonzero(table.counts > 0)
    if len(present) < 2:
        empty = xp.zeros(0, dtype=xp.int64)
        return Lookalikes(empty, empty, xp.zeros(0, dtype=xp.float32))
    counts = table.counts.astype(xp.float64)
    within = xp.clip(_within(table.norms, counts, present) - baseline, 0.05, None)
    # (mean cross cosine - baseline) / sqrt(within_a within_b), within measured above the baseline too
    scale = xp.sqrt(within)
    if len(present) <= ALL_PAIRS_MAX or linked is None:  # every pair, so nothing above the threshold is missed
        sums = table.sums(present)
        cross = (sums @ sums.T) / xp.outer(counts[present], counts[present])
        matrix = (cross - baseline) / xp.outer(scale[present], scale[present])
        i, j = xp.triu_indices(len(present), k=1)
        a, b, similarity = present[i], present[j], matrix[i, j].astype(xp.float32)
    else:
        a = xp.repeat(xp.arange(len(table.ids)), linked.shape[1])
        b = linked.ravel()
        valid = (b >= 0) & (a != b) & (table.counts[a] > 0) & (table.counts[xp.maximum(b, 0)] > 0)
        n_ids = len(table.ids)  # each unordered pair once, as one int64 key (cheaper than unique rows)
        keys = xp.unique(xp.minimum(a[valid], b[valid]) * n_ids + xp.maximum(a[valid], b[valid]))
        a, b = keys // n_ids, keys % n_ids
        cross = xp.empty(len(a))
        for first in range(0, len(a), 1 << 16):  # blocks: no n_pairs x dim temporaries
            block = slice(first, first + (1 << 16))
            cross[block] = xp.einsum("ij,ij->i", table.centroids[a[block]], table.centroids[b[block]],
                                     dtype=xp.float64)
        mean_cross = cross * table.norms[a] * table.norms[b] / (counts[a] * counts[b])
        similarity = ((mean_cross - baseline) / (scale[a] * scale[b])).astype(xp.float32)
    order = xp.argsort(-similarity, kind="stable")
    keep = order[: max(top, int((similarity > min(threshold, SAME_PERSON)).sum()))]  # every same-person pair
    return Lookalikes(table.ids[a[keep]], table.ids[b[keep]], similarity[keep])


def _within(norms: np.ndarray, counts: np.ndarray, present: IdArray) -> np.ndarray:
    """Mean cosine between two faces of each identity, shrunk towards the median of the others.

    From the sum s of n unit faces, the mean over the n(n-1) ordered pairs is (|s|^2 - n) / (n(n-1)): an
    identity with few faces gives a noisy value, so it is averaged with ``PRIOR_PAIRS`` pairs' worth of the
    database's median (an identity of one face gets the median itself).
    """
    xp = namespace(norms)
    pairs = counts * (counts - 1)
    raw = xp.where(pairs > 0, (norms**2 - counts) / xp.where(pairs > 0, pairs, 1), xp.nan)
    measured = raw[present][pairs[present] > 0]
    typical = float(xp.median(measured)) if len(measured) else 1.0
    weight = pairs / 2  # unordered pairs behind each value
    shrunk = (xp.nan_to_num(raw) * weight + typical * PRIOR_PAIRS) / (weight + PRIOR_PAIRS)
    clipped: np.ndarray = xp.clip(shrunk, 0.05, None)
    return clipped
