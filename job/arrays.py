"""Array aliases shared by every stage, so shapes and dtypes are named in one place."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
"""Float32 arrays: embeddings of shape (n_faces, dim), map coordinates of shape (n_faces, n_components)."""

IdArray = npt.NDArray[np.int64]
"""Int64 arrays: identity ids of shape (n_faces,), neighbour indices of shape (n_faces, k)."""

BoolArray = npt.NDArray[np.bool_]

TAKE_BLOCK = 1 << 15


def take_rows(array: np.ndarray, rows: IdArray, dtype: npt.DTypeLike) -> np.ndarray:
    """``array[rows]`` as ``dtype``, gathered block by block into one new array (no full-size temporary of
    the source dtype, as ``array[rows].astype(dtype)`` makes)."""
    out = np.empty((len(rows), *array.shape[1:]), dtype=dtype)
    for start in range(0, len(rows), TAKE_BLOCK):
        out[start:start + TAKE_BLOCK] = array[rows[start:start + TAKE_BLOCK]]
    return out
