"""The faces themselves in the atlas page (``--thumbnails``): which faces get a crop, the most useful first,
cut from the photos the run's projection names (:mod:`job.report.thumbnails`), packed into the page's data.

Order, each face once, until the budget is spent: every suspect (most certain first); then, per suspect, a few
faces of its filed and of its suggested identity (those that fit their identity best: what the identity
looks like); the faces of each look-alike pair's identities (most alike pair first); the faces corrections.csv
names; then the rest, one face of every identity before a second of any. The page shows a crop where it has
one and a placeholder where it has none; ``run.json`` ``report.thumbnails`` counts both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from job.config import RenderConfig
from job.report.rundata import RunData
from job.report.thumbnails import ThumbnailLimits, Thumbnails, crop_faces
from job.store.outputs import PROJECTION_FILE

FACE_BYTES = 4096  # the largest crop at 64 px (a 64 px JPEG at quality 70 is about 1 KB)
FACES_PER_IDENTITY = 4  # faces shown beside a suspect or a look-alike pair for each identity
SMALLEST_JPEG = 400  # bytes: no more faces are tried than the budget holds at this size
PLACE_COLUMNS = ("image", "box_x1", "box_y1", "box_x2", "box_y2", "image_width", "image_height")
_PATH_BYTES = 4096  # the largest image path a projection cell may hold (a guard against edited files)


@dataclass(frozen=True)
class PhotoSettings:
    """Face crops for the page: ``root`` rewrites the photos' paths (``input.image_root``); ``limits`` caps
    each crop and their total."""

    root: str = ""
    limits: ThumbnailLimits = field(default_factory=ThumbnailLimits)


@dataclass(frozen=True)
class PageFaces:
    """The crops the page carries: ``positions`` (n,) the faces' positions in projection order, ``crops``
    what :func:`crop_faces` made of them (keyed by index into ``positions``), and the ``limits`` used."""

    positions: np.ndarray
    crops: Thumbnails
    limits: ThumbnailLimits
    untried: int = 0
    """Faces never tried: more than the budget could hold even at :data:`SMALLEST_JPEG` bytes each."""

    def record(self) -> dict[str, int]:
        """run.json ``report.thumbnails``: ``made``, ``missing``, ``unreadable``, ``no_photo``, ``over_budget``
        (past the budget, tried or not), ``bytes``, and the caps."""
        counts = self.crops.record()
        return {**counts, "over_budget": counts["over_budget"] + self.untried, "face_bytes_max": self.limits.face_bytes,
                "total_bytes_max": self.limits.total_bytes, "size": self.limits.size}


def photo_settings(render: RenderConfig, image_root: str) -> PhotoSettings | None:
    """The page's face crops as ``render.thumbnails`` asks (None: off), photos found under ``image_root``
    (``input.image_root``)."""
    if not render.thumbnails:
        return None
    size = render.thumbnail_size
    face_bytes = max(FACE_BYTES, FACE_BYTES * size * size // (64 * 64))  # 4 KiB at 64 px, as much a pixel above
    return PhotoSettings(image_root, ThumbnailLimits(size=size, face_bytes=face_bytes,
                                                     total_bytes=render.thumbnail_bytes))


def thumbnails_note(thumbs: dict[str, int]) -> str:
    """What the page says of its face crops: how many, their caps, what the placeholders stand for."""
    shown = thumbs["made"]
    missing = thumbs["missing"] + thumbs["unreadable"] + thumbs["no_photo"]
    return (f"Face crops: {shown:,} of the {thumbs['faces']:,} faces, {thumbs['size']} px JPEGs of at most "
            f"{thumbs['face_bytes_max']:,} bytes each and {thumbs['total_bytes_max'] / 2**20:.1f} MiB in all "
            f"({thumbs['bytes'] / 2**20:.1f} MiB here), the most useful first: the suspects, their identities' "
            "faces, the look-alike pairs', the faces the corrections name, then one face of every identity. "
            f"A grey square stands for a face without a crop: {missing:,} photos missing or unreadable, "
            f"{thumbs['over_budget']:,} faces past the budget. Face crops are biometric data: this page holds "
            "them; share it as you would the photos.")


def faces_for(run: RunData, settings: PhotoSettings) -> PageFaces | None:
    """The crops for ``run``'s page, or None when its projection names no photos (no image and box)."""
    places = read_places(run.folder / PROJECTION_FILE, run.n_faces)
    if places is None:
        return None
    lookalikes = [(a, b) for a, b, _, _ in run.lookalikes]
    order = priority(run.columns, lookalikes=lookalikes, named_rows=corrected_rows(run))
    return page_faces(places, order, settings)


def corrected_rows(run: RunData) -> list[int]:
    """The input rows of the faces corrections.csv names (its ``row`` column, else ``face``), in its order."""
    found = run.corrections
    if found is None or not found.header:
        return []
    column = "row" if "row" in found.header else "face"
    at = found.header.index(column)
    return [int(row[at]) for row in found.rows if at < len(row) and row[at].isascii() and row[at].isdecimal()
            and len(row[at]) < 19]


def read_places(path: Path, n_faces: int) -> dict[str, np.ndarray] | None:
    """projection.parquet's photo columns (image, box, frame) as arrays (n_faces,), or None without
    ``image``/box columns (a run on a file with no image field)."""
    import pyarrow.parquet as pq

    from job.store.coherence import check_stored_size

    with path.open("rb") as handle:
        source = pq.ParquetFile(handle)
        names = [name for name in PLACE_COLUMNS if name in source.schema_arrow.names]
        if "image" not in names or "box_x1" not in names:
            return None
        check_stored_size(source.metadata, ["image"], path, cell_bytes=_PATH_BYTES)
        table = source.read(columns=names)
    if table.num_rows != n_faces:
        return None
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in names}


def priority(columns: dict[str, np.ndarray], *, lookalikes: list[tuple[int, int]], named_rows: list[int]
             ) -> np.ndarray:
    """Face positions (into projection's rows) in the order their crops are worth having, each once."""
    ids = np.asarray(columns["id"])
    suspect = np.asarray(columns["suspect"], dtype=bool)
    fit = np.nan_to_num(np.asarray(columns.get("fit", np.zeros(len(ids))), dtype=np.float64), nan=-np.inf)
    # within each identity, its faces from the best-fitting down (suspects last: they are not what it looks like)
    order = np.lexsort((-fit, suspect, ids))
    sorted_ids = ids[order]
    rank = np.empty(len(ids), dtype=np.int64)
    rank[order] = np.arange(len(ids)) - np.searchsorted(sorted_ids, sorted_ids, side="left")

    def faces_of(identity: int) -> np.ndarray:
        lo, hi = np.searchsorted(sorted_ids, identity, side="left"), np.searchsorted(sorted_ids, identity, "right")
        return order[lo:min(hi, lo + FACES_PER_IDENTITY)]

    suspects = np.flatnonzero(suspect)
    suspects = suspects[np.argsort(-np.asarray(columns["outlier_score"])[suspects], kind="stable")]
    parts: list[np.ndarray] = [suspects]
    suggested = np.asarray(columns["suggested_id"])
    for face in suspects.tolist():
        parts += [faces_of(int(ids[face])), faces_of(int(suggested[face]))]
    for a, b in lookalikes:
        parts += [faces_of(a), faces_of(b)]
    if named_rows:
        rows = np.asarray(columns["row"])
        wanted = np.asarray(named_rows, dtype=np.int64)
        at = np.searchsorted(rows, wanted)
        found = (at < len(rows)) & (rows[np.minimum(at, len(rows) - 1)] == wanted)
        parts.append(at[found])
    parts.append(np.lexsort((ids, rank)))  # one face of every identity, then a second, ...
    chosen = np.concatenate([np.asarray(part, dtype=np.int64) for part in parts])
    _, first = np.unique(chosen, return_index=True)
    return chosen[np.sort(first)]


def page_faces(places: dict[str, np.ndarray], order: np.ndarray, settings: PhotoSettings) -> PageFaces:
    """Crop the faces at ``order`` (positions) from their photos, as many as the budget holds."""
    limits = settings.limits
    untried = max(0, len(order) - max(1, limits.total_bytes // SMALLEST_JPEG))
    order = order[: len(order) - untried]
    images = places["image"][order]
    boxes = np.column_stack([np.asarray(places[f"box_{c}"], dtype=np.float32)[order]
                             for c in ("x1", "y1", "x2", "y2")])
    frames = None
    if "image_width" in places and "image_height" in places:
        frames = np.column_stack([np.asarray(places["image_width"], dtype=np.float32)[order],
                                  np.asarray(places["image_height"], dtype=np.float32)[order]])
    crops = crop_faces([None if image is None else str(image) for image in images.tolist()], boxes,
                       np.arange(len(order)), frames=frames, root=settings.root, limits=limits)
    return PageFaces(order, crops, limits, untried)


def pack(faces: PageFaces, rows: np.ndarray, codes: np.ndarray) -> dict[str, Any]:
    """The crops as the page's arrays: ``thumb_row`` (each crop's input row), ``thumb_ident`` (its identity's
    position in the identity table), ``thumb_offset`` (n + 1) into ``thumb_jpeg`` (the JPEGs, end to end)."""
    made = sorted(faces.crops.jpeg)
    data = [faces.crops.jpeg[k] for k in made]
    positions = faces.positions[np.asarray(made, dtype=np.int64)]
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in data])]).astype(np.uint32)
    return {"thumb_row": rows[positions], "thumb_ident": codes[positions].astype(np.int32),
            "thumb_offset": offsets, "thumb_jpeg": np.frombuffer(b"".join(data), dtype=np.uint8)}
