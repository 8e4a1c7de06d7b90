"""Small JPEG crops of faces for the atlas page, cut from the photos a source names (``image`` and ``box``).

Local files only: a path with a URL scheme (``https://``, ``file://``) is never opened, and nothing else that
is not a regular file either (a pipe or a device would block or never end). Each photo is read once for all its
faces, at most :attr:`ThumbnailLimits.photo_bytes` of it, and decoded by the common photo formats' plugins only
(no plugin that calls out to another program); Pillow's decompression-bomb warning counts as an error while
:func:`crop_faces` runs (Pillow's own settings are left alone). A photo that cannot be used is counted, never
raised: a thumbnail is a nicety, the run's answers do not depend on it. Photos are decoded in a few threads
(Pillow releases the GIL while it decodes); the thumbnails kept do not depend on how many.

Boxes are in pixels of the photo as displayed (after its EXIF orientation), or of a ``frame`` of another size
(Immich's ``imageWidth`` x ``imageHeight``: the preview its face detection ran on), scaled to the photo's own.
"""

from __future__ import annotations

import io
import math
import os
import re
import stat
import warnings
from collections import deque
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from job.errors import InternalError

if TYPE_CHECKING:
    from PIL import Image

PAD = 0.15
"""Context around a face: the crop is a square of the box's longer side plus this share on each side."""
LOWER_QUALITIES = (50, 35, 20)
"""JPEG qualities tried, in turn, for a face whose JPEG at the set quality exceeds ``face_bytes``."""
PHOTO_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "TIFF", "GIF", "BMP", "AVIF")
"""The Pillow plugins a photo may be decoded by (those this Pillow has); none that runs another program."""
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_MISSING, _UNREADABLE, _OVER = "missing", "unreadable", "over_budget"
_HIGH_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
_Target = tuple[int, np.ndarray, "np.ndarray | None"]  # a face: its position, box and frame (or None)


@dataclass(frozen=True)
class ThumbnailLimits:
    """How big thumbnails are, and how much of them and of the photos is ever read or kept.

    Attributes
    ----------
    size : pixels on a thumbnail's longer side
    quality : JPEG quality
    face_bytes : the largest JPEG kept for one face (above it, lower qualities are tried; then none)
    total_bytes : all thumbnails together; the faces beyond it (in priority order) get none
    photo_bytes : a photo file larger than this is not opened
    """

    size: int = 64
    quality: int = 70
    face_bytes: int = 4096
    total_bytes: int = 5 * 2**20
    photo_bytes: int = 64 * 2**20


@dataclass(frozen=True)
class Thumbnails:
    """The thumbnails made, and why the other faces asked for have none.

    Attributes
    ----------
    jpeg : position in the input sequence -> JPEG bytes
    missing : faces whose photo is not found, is not a regular file, or is named by a URL
    unreadable : faces whose photo is not an image Pillow reads here (truncated, over ``photo_bytes``, a
        decompression bomb, unreadable by this user), or whose box is inverted or outside the photo
    no_photo : faces with no image path or no (finite) box
    over_budget : faces left out for bytes: ``total_bytes`` was reached before them, or their own JPEG stayed
        above ``face_bytes`` at the lowest quality
    """

    jpeg: dict[int, bytes]
    missing: int = 0
    unreadable: int = 0
    no_photo: int = 0
    over_budget: int = 0

    @property
    def bytes(self) -> int:
        """All thumbnails' bytes together."""
        return sum(len(data) for data in self.jpeg.values())

    def record(self) -> dict[str, int]:
        """What run.json records: ``made``, ``missing``, ``unreadable``, ``no_photo``, ``over_budget``, ``bytes``."""
        return {"made": len(self.jpeg), "missing": self.missing, "unreadable": self.unreadable,
                "no_photo": self.no_photo, "over_budget": self.over_budget, "bytes": self.bytes}


def photo_path(image: str, root: str) -> Path:
    """Where the photo ``image`` is read, under ``input.image_root`` = ``root``.

    ``root`` "" leaves ``image`` as it is; ``"DIR"`` reads a relative ``image`` under DIR (an absolute one is
    unchanged); ``"PREFIX=DIR"`` replaces a leading PREFIX (whole path components: ``/data`` is no prefix of
    ``/database/a.jpg``) by DIR, e.g. ``/usr/src/app/upload=/mnt/immich`` for an Immich container's paths.

    >>> photo_path("/data/library/a.jpg", "/data=/mnt/photos").as_posix()
    '/mnt/photos/library/a.jpg'
    """
    prefix, separator, folder = root.partition("=")
    if separator:
        base = prefix.rstrip("/")
        if image in (prefix, base) or image.startswith(base + "/"):
            return Path(folder) / image[len(base):].lstrip("/")
        return Path(image)
    if root and not Path(image).is_absolute():
        return Path(root) / image
    return Path(image)


def face_region(box: Sequence[float] | np.ndarray, size: tuple[int, int]) -> tuple[float, float, float, float] | None:
    """The crop around ``box`` = ``(x1, y1, x2, y2)`` in a photo of ``size`` = (width, height): a square of
    the box's longer side padded by :data:`PAD` on each side, cut to the photo; None for a box that is not
    finite, inverted or empty, or outside the photo."""
    x1, y1, x2, y2 = (float(value) for value in box)
    width, height = size
    if not all(math.isfinite(value) for value in (x1, y1, x2, y2)) or x2 <= x1 or y2 <= y1:
        return None
    if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
        return None
    half = max(x2 - x1, y2 - y1) * (0.5 + PAD)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return max(cx - half, 0.0), max(cy - half, 0.0), min(cx + half, float(width)), min(cy + half, float(height))


def crop_faces(images: Sequence[str | None], boxes: np.ndarray, order: np.ndarray, *,
               frames: np.ndarray | None = None, root: str = "", limits: ThumbnailLimits = ThumbnailLimits(),
               workers: int = 0) -> Thumbnails:
    """Crop the faces at positions ``order`` (most wanted first) into JPEGs of at most ``limits.size`` pixels.

    Parameters
    ----------
    images : each face's photo path (None or "" = unknown), rewritten by :func:`photo_path` with ``root``
    boxes : ndarray of shape (n_faces, 4), float — ``x1, y1, x2, y2`` in pixels (NaN = unknown)
    order : ndarray of positions into ``images``; the thumbnails kept are those of the first faces in this order
        whose JPEGs fit in ``limits.total_bytes`` together (once one does not fit, the rest get none)
    frames : ndarray of shape (n_faces, 2), float, or None — the (width, height) each box's pixels refer to;
        NaN or not above 0 = the photo as displayed
    root : ``input.image_root``
    limits : sizes and byte budgets
    workers : photos decoded at once, in threads (Pillow decodes without the GIL); 0 = as many as the CPUs
        this process may use, at most 4

    Each photo is opened once, for every face of it in ``order``, in the order of its most wanted face; a photo
    that cannot be used is counted in the result, never raised. The result does not depend on ``workers``.
    """
    from PIL import Image

    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.shape != (len(images), 4) or (frames is not None and np.shape(frames) != (len(images), 2)):
        raise InternalError(f"crop_faces: {len(images)} images with boxes of shape {boxes.shape} and frames of "
                            f"shape {None if frames is None else np.shape(frames)}; expected (n, 4) and (n, 2)")
    wanted = list(dict.fromkeys(int(position) for position in np.asarray(order).ravel().tolist()))
    photos: dict[str, list[int]] = {}  # text path -> its faces, in order of each photo's most wanted face
    no_photo = 0
    for position in wanted:
        image = images[position]
        if not image or not np.isfinite(boxes[position]).all():
            no_photo += 1
        else:
            photos.setdefault(str(image), []).append(position)
    with_photo = {position for faces in photos.values() for position in faces}
    budget = _Budget(limits, [position for position in wanted if position in with_photo])
    jobs = ((image, [(p, boxes[p], None if frames is None else frames[p]) for p in faces])
            for image, faces in photos.items())
    Image.init()  # every plugin registered once, before the threads look them up
    threads = workers or min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    # the filter is process-wide, so the decoding threads see it too; the old filters come back on leaving
    with warnings.catch_warnings(), ThreadPoolExecutor(max(threads, 1)) as pool:
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        done = _in_order(pool, jobs, root=root, limits=limits, ahead=2 * max(threads, 1))
        for outcomes in done:
            if budget.add(outcomes):
                break
        done.close()  # the photos not started yet are not read
    return budget.result(no_photo)


def _in_order(pool: ThreadPoolExecutor, jobs: Iterator[tuple[str, list[_Target]]], *, root: str,
              limits: ThumbnailLimits, ahead: int) -> Generator[dict[int, bytes | str], None, None]:
    """Each photo's outcomes in the order of ``jobs``, with up to ``ahead`` photos in work at once."""
    pending: deque[Future[dict[int, bytes | str]]] = deque()
    try:
        for image, targets in jobs:
            pending.append(pool.submit(_photo_thumbnails, image, targets, root=root, limits=limits))
            if len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()


@dataclass
class _Budget:
    """Thumbnails accepted in priority order: a face is decided once every face before it in ``queue`` is, and
    the first whose JPEG would pass ``total_bytes`` ends the budget."""

    limits: ThumbnailLimits
    queue: list[int]
    kept: dict[int, bytes] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=lambda: {_MISSING: 0, _UNREADABLE: 0, _OVER: 0})
    total: int = 0
    decided: int = 0
    waiting: dict[int, bytes | str] = field(default_factory=dict)

    def add(self, outcomes: dict[int, bytes | str]) -> bool:
        """One photo's faces in; True once the budget is spent."""
        self.waiting.update(outcomes)
        while self.decided < len(self.queue) and self.queue[self.decided] in self.waiting:
            position = self.queue[self.decided]
            outcome = self.waiting.pop(position)
            if isinstance(outcome, str):
                self.counts[outcome] += 1
            elif self.total + len(outcome) > self.limits.total_bytes:
                return True
            else:
                self.kept[position], self.total = outcome, self.total + len(outcome)
            self.decided += 1
        return False

    def result(self, no_photo: int) -> Thumbnails:
        over = self.counts[_OVER] + len(self.queue) - self.decided  # not reached, or beyond the budget
        return Thumbnails(self.kept, missing=self.counts[_MISSING], unreadable=self.counts[_UNREADABLE],
                          no_photo=no_photo, over_budget=over)


def _photo_thumbnails(image: str, targets: list[_Target], *, root: str,
                      limits: ThumbnailLimits) -> dict[int, bytes | str]:
    """Every target face's JPEG from the photo ``image``, or why it has none (:data:`_MISSING`, ...)."""
    data = _read_photo(image, root, limits.photo_bytes)
    if isinstance(data, str):
        return {position: data for position, _, _ in targets}
    try:
        return _cut(data, targets, limits)
    except Exception:  # noqa: BLE001 - decoding untrusted bytes: Pillow's plugins raise many types
        return {position: _UNREADABLE for position, _, _ in targets}


def _read_photo(image: str, root: str, max_bytes: int) -> bytes | str:
    """The bytes of a regular file of at most ``max_bytes``, or :data:`_MISSING` / :data:`_UNREADABLE`."""
    if _URL.match(image) or "\x00" in image:
        return _MISSING
    path = photo_path(image, root)
    try:
        # O_NONBLOCK: a FIFO put in the photo's place after any check must not block the open
        handle = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return _MISSING
    except (OSError, ValueError):  # no permission, a name too long, a loop of links...
        return _UNREADABLE if os.path.exists(path) else _MISSING
    try:
        status = os.fstat(handle)
        if not stat.S_ISREG(status.st_mode):
            return _MISSING
        if status.st_size > max_bytes:
            return _UNREADABLE
        with os.fdopen(handle, "rb", closefd=False) as source:
            data = source.read(max_bytes + 1)
    except OSError:
        return _UNREADABLE
    finally:
        os.close(handle)
    return data if len(data) <= max_bytes else _UNREADABLE  # the file grew while it was read


def _cut(data: bytes, targets: list[_Target], limits: ThumbnailLimits) -> dict[int, bytes | str]:
    """Decode the photo once (at a reduced scale where every crop stays above ``limits.size``) and cut each face."""
    from PIL import Image, ImageOps

    # crop_faces turned Pillow's DecompressionBombWarning into an error for the duration
    with Image.open(io.BytesIO(data), formats=[name for name in PHOTO_FORMATS if name in Image.OPEN]) as photo:
        shown = _displayed_size(photo)
        regions = {position: face_region(_scaled(box, frame, shown), shown) for position, box, frame in targets}
        sides = [max(r[2] - r[0], r[3] - r[1]) for r in regions.values() if r is not None]
        scale = _draft(photo, min(sides) / limits.size) if sides else 1
        ImageOps.exif_transpose(photo, in_place=True)  # decodes (at 1/scale); boxes are in displayed pixels
        out: dict[int, bytes | str] = {}
        for position, region in regions.items():
            if region is None:
                out[position] = _UNREADABLE
                continue
            left, top = math.floor(region[0] / scale), math.floor(region[1] / scale)
            right = min(max(math.ceil(region[2] / scale), left + 1), photo.width)
            bottom = min(max(math.ceil(region[3] / scale), top + 1), photo.height)
            out[position] = _encode(photo.crop((left, top, right, bottom)), limits)
    return out


def _displayed_size(photo: Image.Image) -> tuple[int, int]:
    """(width, height) of ``photo`` as shown: swapped for EXIF orientations 5-8 (turned a quarter)."""
    orientation = photo.getexif().get(0x0112, 1)
    return (photo.height, photo.width) if orientation in (5, 6, 7, 8) else (photo.width, photo.height)


def _scaled(box: np.ndarray, frame: np.ndarray | None, shown: tuple[int, int]) -> np.ndarray:
    """``box`` in pixels of the displayed photo, from pixels of ``frame`` (width, height) where one is given."""
    if frame is None or not np.isfinite(frame).all() or (np.asarray(frame) <= 0).any():
        return box
    sx, sy = shown[0] / float(frame[0]), shown[1] / float(frame[1])
    scaled: np.ndarray = np.asarray(box, dtype=np.float64) * np.array([sx, sy, sx, sy])
    return scaled


def _draft(photo: Image.Image, reduction: float) -> int:
    """Ask a JPEG decoder for 1/2, 1/4 or 1/8 of the pixels where the smallest crop is still ``reduction``
    times the thumbnail; the scale chosen (1 when none)."""
    wanted = next((s for s in (8, 4, 2) if reduction >= s), 1)
    if wanted == 1 or photo.format not in ("JPEG", "MPO"):
        return 1
    width, height = photo.size
    drafted = photo.draft(None, (max(width // wanted, 1), max(height // wanted, 1)))
    if drafted is None:
        return 1
    # draft's box is the original size over the scale it chose: x_decoded = x_original / scale exactly
    return round(width / drafted[1][2])


def _encode(face: Image.Image, limits: ThumbnailLimits) -> bytes | str:
    """``face`` as an RGB JPEG of at most ``limits.size`` pixels a side and ``limits.face_bytes``."""
    from PIL import Image

    face = _rgb(face)
    face.thumbnail((limits.size, limits.size), Image.Resampling.LANCZOS)
    for quality in (limits.quality, *(q for q in LOWER_QUALITIES if q < limits.quality)):
        buffer = io.BytesIO()
        face.save(buffer, format="JPEG", quality=quality, optimize=True)
        if buffer.tell() <= limits.face_bytes:
            return buffer.getvalue()
    return _OVER


def _rgb(face: Image.Image) -> Image.Image:
    """``face`` in RGB: transparency over white, 16-bit and float grey scaled to 8 bits, CMYK and the rest
    converted."""
    from PIL import Image

    if face.mode in _HIGH_BIT_MODES:  # 16-bit grey (PNG, TIFF) would clip to white as convert("RGB") does it
        values = np.nan_to_num(np.asarray(face, dtype=np.float64))
        peak = 65535.0 if values.max(initial=0.0) > 255 else 255.0
        grey = np.clip(values * (255.0 / peak), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if face.mode in ("P", "PA"):
        face = face.convert("RGBA")
    if face.mode in ("RGBA", "LA", "La", "RGBa"):
        face = face.convert("RGBA")
        white = Image.new("RGBA", face.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, face).convert("RGB")
    return face if face.mode == "RGB" else face.convert("RGB")
