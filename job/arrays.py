"""Array aliases shared by every stage, so shapes and dtypes are named in one place."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
"""Float32 arrays: embeddings of shape (n_faces, dim), map coordinates of shape (n_faces, n_components)."""

IdArray = npt.NDArray[np.int64]
"""Int64 arrays: identity ids of shape (n_faces,), neighbour indices of shape (n_faces, k)."""

BoolArray = npt.NDArray[np.bool_]
