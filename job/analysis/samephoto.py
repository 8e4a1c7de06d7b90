"""The same-photo check: one person cannot appear twice in one photo. Where two faces of one photo are filed
under one identity, the one that fits the identity worse is misfiled, whatever the embeddings say of it (its
reason ``same_photo`` in suspects.csv), even when no other identity claims it."""

from __future__ import annotations

import numpy as np

from job.arrays import BoolArray, FloatArray, IdArray


def same_photo_conflicts(photo: np.ndarray, ids: IdArray, fit: FloatArray, skip: BoolArray) -> BoolArray:
    """Faces that share a photo with a face filed under the same identity that fits it better (n_faces,) bool.

    ``photo`` (n_faces,) object: each face's photo key (None: unknown, never in conflict); ``fit`` each face's fit
    to its filed identity (NaN sorts last); faces in ``skip`` (re-enrolments of one photo) take no part. Of each
    group of faces of one photo under one identity, the best-fitting one stays (ties: the first in input order).
    """
    n_faces = len(ids)
    conflict = np.zeros(n_faces, dtype=bool)
    known = np.flatnonzero(np.fromiter((key is not None for key in photo), dtype=bool, count=n_faces) & ~skip)
    if len(known) < 2:
        return conflict
    _, photo_code = np.unique(photo[known].astype(str), return_inverse=True)
    worse_first = -np.nan_to_num(fit[known].astype(np.float64), nan=-np.inf)
    order = np.lexsort((known, worse_first, ids[known], photo_code.ravel()))
    code, filed = photo_code.ravel()[order], ids[known][order]
    repeat = np.r_[False, (code[1:] == code[:-1]) & (filed[1:] == filed[:-1])]
    conflict[known[order][repeat]] = True
    return conflict
