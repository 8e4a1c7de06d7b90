"""The source's own keys in the outputs: a database's face, identity and photo keys (Immich's UUIDs, a SQL
store's ids, a file's photo field) beside faceatlas's integer row and id, so every answer can be acted on in
the source's own terms."""

from __future__ import annotations

import numpy as np

from job.io.database import FaceDatabase, SourceKeys

KEY_COLUMNS = ("face_key", "identity_key", "photo_key")
"""projection.parquet's key columns, present whenever the source has keys (text; null where a face has none)."""
PHOTO_COLUMNS = ("image", "box_x1", "box_y1", "box_x2", "box_y2")
"""Where a face was found, when the source says (an Immich asset's path and the face's box, in pixels)."""
FRAME_COLUMNS = ("image_width", "image_height")
"""The size of the image the box's pixels refer to, when the source says (Immich: the preview its face detection
ran on; NaN where the box is in the photo's own pixels, as displayed)."""


def key_columns(database: FaceDatabase) -> list[str]:
    """The key columns projection.parquet carries for ``database`` (none without keys)."""
    return list(projection_keys(database))


def projection_keys(database: FaceDatabase) -> dict[str, np.ndarray]:
    """projection.parquet's key columns for the faces of ``database``, in its order: ``face_key``,
    ``identity_key``, ``photo_key`` (object text, None where unknown), then ``image``, the box and its frame
    (``image_width``, ``image_height``) where known, and ``hidden`` (bool) where the source hides some identities."""
    keys = database.keys
    if keys is None:
        return {}
    columns = face_keys(keys, database.ids, database.n_faces)
    if keys.hidden:
        columns["hidden"] = np.isin(database.ids, np.fromiter(keys.hidden, dtype=np.int64))
    return columns


def face_keys(keys: SourceKeys, ids: np.ndarray, n_faces: int) -> dict[str, np.ndarray]:
    """The key columns of ``n_faces`` faces filed under ``ids`` (-1: none)."""
    empty = np.full(n_faces, None, dtype=object)
    columns = {"face_key": empty if keys.face is None else keys.face,
               "identity_key": identity_keys(keys, ids),
               "photo_key": empty if keys.photo is None else keys.photo}
    if keys.image is not None:
        columns["image"] = keys.image
    if keys.box is not None:
        for axis, name in enumerate(PHOTO_COLUMNS[1:]):
            columns[name] = np.ascontiguousarray(keys.box[:, axis], dtype=np.float32)
    if keys.frame is not None:
        for axis, name in enumerate(FRAME_COLUMNS):
            columns[name] = np.ascontiguousarray(keys.frame[:, axis], dtype=np.float32)
    return columns


def identity_keys(keys: SourceKeys | None, ids: np.ndarray) -> np.ndarray:
    """The source's key of each id in ``ids`` (object text; None for -1 and where the source has none)."""
    if keys is None or not len(ids):
        return np.full(len(ids), None, dtype=object)
    identities, inverse = np.unique(ids, return_inverse=True)
    table = np.empty(len(identities), dtype=object)
    table[:] = [keys.identity_key(int(identity)) or None for identity in identities.tolist()]
    out: np.ndarray = table[inverse.ravel()]
    return out
