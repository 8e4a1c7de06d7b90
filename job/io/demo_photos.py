"""Cartoon face photos for the demo databases, so that no photo of a real person is ever needed or committed.

:func:`draw_photos` draws every face of a demo database into JPEG photos in a folder and says where each one is
(``image`` and ``box``, as :mod:`job.report.thumbnails` crops them). Each true identity has a look of its own
(:func:`face_look`: skin, hair colour and style, face shape, eyes, brows, nose, mouth, glasses, beard, earrings,
shirt), drawn from (seed, identity) alone; each face of it differs a little (tilt, size, expression, lighting).
Callers pass the true ids, so a misfiled face shows the person it really is.

A photo holds 1..``faces_per_photo`` faces of different people in front of a soft scene with grain; a share
``rotated`` of the photos is stored turned a quarter with EXIF Orientation 6 or 8, as cameras store them, the
boxes still in displayed pixels. Speed decides the drawing: faces are Pillow polygons in the photo's own pixels
(halving a twice-size drawing cost more than all the rest), and the scenes, the slow part to make, are made once
per call and each photo shows a random window of one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from job.atomic import atomic_write
from job.errors import UsageError, one_line
from job.io.demo import DemoTruth

if TYPE_CHECKING:
    from PIL import Image, ImageDraw

RGB = tuple[int, int, int]
Points = np.ndarray  # complex128: u + iv in a face's units (its box's height; 0 its centre, +v down)
SIDE = (80.0, 160.0)
"""A face box's height in pixels is drawn from this range (smaller where a photo's faces would not fit)."""
MIN_SIDE = 40
"""No face box is less high than this."""
QUALITY = 85
ORIENTATION = 0x0112
SCENES = 16
"""Scenes made per call (each also mirrored); each photo shows a random window of one."""
HAIR_STYLES = ("short", "long", "bald", "curly", "bob", "spiky", "bun")
FACE_SHAPES = {"round": (0.9, 2.0), "oval": (0.8, 1.7), "long": (0.72, 2.0), "square": (0.86, 3.0)}
"""Face shape -> (box width over height, exponent of the jaw's superellipse: 2 round, 3 square, <2 pointed)."""
SKIN = ((255, 224, 196), (250, 208, 178), (241, 194, 167), (234, 190, 136), (224, 172, 138), (198, 134, 96),
        (176, 120, 84), (161, 102, 70), (120, 74, 48), (92, 58, 40))
HAIR = ((28, 24, 24), (58, 40, 30), (100, 66, 42), (150, 105, 65), (222, 190, 120), (236, 226, 196),
        (190, 88, 40), (128, 48, 34), (146, 146, 150), (226, 226, 226), (56, 92, 200), (226, 104, 168),
        (64, 160, 110), (120, 70, 166))
HAIR_WEIGHTS = (6, 6, 5, 4, 4, 1, 2, 2, 2, 1, 0.5, 0.5, 0.5, 0.5)
EYES = ((88, 54, 30), (40, 30, 26), (66, 118, 190), (78, 140, 88), (118, 128, 140), (140, 108, 58))
FRAMES = ((30, 30, 30), (120, 70, 40), (170, 30, 40), (200, 170, 80))
METALS = ((222, 182, 62), (196, 200, 206), (180, 40, 60))
_LOOK, _PHOTO, _SPLIT, _SCENE = 1, 2, 3, 4  # the streams of randomness, each its own SeedSequence
_ROOM = 1.6 * 1.55 * 0.9  # a face's room (box, hair, ears, neck) over its box height squared, for the widest face
_PAD = 48  # a scene is this much larger than a photo each way: the room its windows move in
_GRAIN = 6  # noise amplitude: a scene's pixels move by up to this many levels


@dataclass(frozen=True)
class DemoPhotos:
    """Where each demo face was drawn.

    Attributes
    ----------
    image : ndarray of shape (n_faces,), object — each face's photo path, relative to the folder ("p00012.jpg")
    box : ndarray of shape (n_faces, 4), float32 — ``x1, y1, x2, y2`` in pixels of the photo as displayed
    """

    image: np.ndarray
    box: np.ndarray


@dataclass(frozen=True)
class FaceLook:
    """One identity's cartoon look; lengths are in units of its face box's height."""

    skin: RGB
    hair: RGB
    hair_style: str
    face_shape: str
    eye: RGB
    eye_spacing: float
    eye_size: float
    brow: str
    brow_weight: float
    nose: str
    mouth_width: float
    smile: float
    glasses: str | None
    frame: RGB
    beard: str | None
    earrings: RGB | None
    shirt: RGB

    @property
    def width(self) -> float:
        """The face box's width over its height."""
        return FACE_SHAPES[self.face_shape][0]


def face_look(identity: int, *, seed: int = 0) -> FaceLook:
    """The look of ``identity``: a function of (``seed``, ``identity``) alone, whatever else is drawn."""
    rng = np.random.default_rng((seed, _LOOK, identity % 2**64))
    style = str(rng.choice(HAIR_STYLES, p=[0.24, 0.2, 0.1, 0.14, 0.14, 0.09, 0.09]))
    hair = HAIR[int(rng.choice(len(HAIR), p=np.array(HAIR_WEIGHTS) / sum(HAIR_WEIGHTS)))]
    glasses = str(rng.choice(["round", "square", "sun", ""], p=[0.12, 0.12, 0.04, 0.72]))
    beard = str(rng.choice(["full", "goatee", "moustache", "stubble", ""], p=[0.08, 0.06, 0.06, 0.06, 0.74]))
    return FaceLook(
        skin=_jitter(rng, SKIN[rng.integers(len(SKIN))], 10), hair=_jitter(rng, hair, 14), hair_style=style,
        face_shape=str(rng.choice(list(FACE_SHAPES))), eye=_jitter(rng, EYES[rng.integers(len(EYES))], 12),
        eye_spacing=float(rng.uniform(0.16, 0.22)), eye_size=float(rng.uniform(0.8, 1.25)),
        brow=str(rng.choice(["straight", "arched", "angled"])), brow_weight=float(rng.uniform(0.02, 0.045)),
        nose=str(rng.choice(["button", "line", "wide", "pointed"])), mouth_width=float(rng.uniform(0.18, 0.34)),
        smile=float(rng.uniform(-0.2, 1.0)), glasses=glasses or None,
        frame=_jitter(rng, FRAMES[rng.integers(len(FRAMES))], 10), beard=beard or None,
        earrings=METALS[rng.integers(len(METALS))] if rng.random() < 0.15 else None,
        shirt=_hsv(rng.uniform(0, 1), rng.uniform(0.3, 0.8), rng.uniform(0.3, 0.9)))


def draw_photos(true_ids: np.ndarray, folder: Path, *, seed: int = 0, faces_per_photo: int = 3,
                size: tuple[int, int] = (480, 360), rotated: float = 0.1) -> DemoPhotos:
    """Draw each face of ``true_ids`` into JPEG photos ``pNNNNN.jpg`` in ``folder`` (created if missing; files
    of these names are replaced).

    Parameters
    ----------
    true_ids : ndarray of shape (n_faces,), int — the identity each face really shows (a misfiled face: its true
        id, not the id it is filed under)
    folder : where the photos go
    seed : the looks, the photos and their scenes are a function of (seed, true_ids, the other parameters)
    faces_per_photo : at most this many faces, of different people, in one photo (1..6)
    size : (width, height) of a photo as displayed, in pixels
    rotated : the share of photos stored turned a quarter, with EXIF Orientation 6 or 8

    Faces are taken in turn by identity (every identity's first face in a random order of identities, then every
    one's second face, ...), so a photo's faces are of different people. The same arguments give the same bytes.
    """
    from PIL import Image

    ids = np.asarray(true_ids)
    _check(ids, seed=seed, faces_per_photo=faces_per_photo, size=size, rotated=rotated)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"{folder}: cannot make the demo photos' folder ({one_line(error)}); pick another") from None
    looks = {i: face_look(i, seed=seed) for i in np.unique(ids).tolist()}
    photos = _split(ids, faces_per_photo=faces_per_photo, seed=seed)
    scenes = [_scene(np.random.default_rng((seed, _SCENE, at)), size) for at in range(min(SCENES, len(photos)))]
    scenes += [scene.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for scene in scenes]
    digits = max(5, len(str(len(photos) - 1)))
    image = np.empty(len(ids), dtype=object)
    box = np.zeros((len(ids), 4), dtype=np.float32)
    for index, faces in enumerate(photos):
        rng = np.random.default_rng((seed, _PHOTO, index))
        photo, boxes = _photo(rng, [looks[i] for i in ids[faces].tolist()], size=size, scenes=scenes)
        exif = Image.Exif()
        if rng.random() < rotated:  # stored as a camera held sideways stores it: turned, with the turn in EXIF
            exif[ORIENTATION] = int(rng.choice([6, 8]))
            photo = photo.transpose(Image.Transpose.ROTATE_90 if exif[ORIENTATION] == 6
                                    else Image.Transpose.ROTATE_270)
        name = f"p{index:0{digits}d}.jpg"
        with atomic_write(folder / name) as tmp:
            photo.save(tmp, format="JPEG", quality=QUALITY, exif=exif.tobytes() if exif else b"")
        image[faces] = name
        box[faces] = boxes
    return DemoPhotos(image=image, box=box)


def add_photos(database: Path, truth: DemoTruth, folder: Path, *, seed: int = 0) -> DemoPhotos:
    """Draw the faces of the demo ``database`` (.npy, with its planted ``truth``: each face drawn as the person
    it really is) into photos in ``folder`` and write the database again with two more fields, ``image`` (each
    face's photo, an absolute path) and ``box``, which ``faceatlas run --thumbnails`` reads
    (``input.image_field``/``input.box_field``)."""
    records = np.load(database, allow_pickle=False)
    drawn = draw_photos(truth.true_ids(records["id"]), folder, seed=seed)
    paths = [str((folder / name).resolve()) for name in drawn.image.tolist()]
    width = max(len(path) for path in paths) if paths else 1
    dtype = np.dtype([*records.dtype.descr, ("image", f"<U{width}"), ("box", "<f4", (4,))])
    out = np.empty(len(records), dtype=dtype)
    for name in records.dtype.names or ():
        out[name] = records[name]
    out["image"], out["box"] = paths, drawn.box
    with atomic_write(database) as tmp, tmp.open("wb") as handle:
        np.save(handle, out, allow_pickle=False)
    return drawn


def _check(ids: np.ndarray, *, seed: int, faces_per_photo: int, size: tuple[int, int], rotated: float) -> None:
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise UsageError(f"demo photos: true_ids of shape {ids.shape} and dtype {ids.dtype}; expected one integer "
                         "id per face")
    if seed < 0 or not 1 <= faces_per_photo <= 6 or not 0.0 <= rotated <= 1.0:
        raise UsageError(f"demo photos: seed={seed}, faces_per_photo={faces_per_photo}, rotated={rotated}; expected "
                         "seed >= 0, faces_per_photo in 1..6 and rotated in [0, 1]")
    if len(size) != 2 or not all(96 <= side <= 8192 for side in size):
        raise UsageError(f"demo photos: size={size}; expected (width, height) of 96..8192 pixels each")
    if faces_per_photo * _ROOM * MIN_SIDE**2 > size[0] * size[1] / 2:
        raise UsageError(f"demo photos: {faces_per_photo} faces of {MIN_SIDE}+ pixels do not fit in a photo of "
                         f"{size[0]}x{size[1]} pixels; ask for fewer faces per photo or larger photos")


def _split(ids: np.ndarray, *, faces_per_photo: int, seed: int) -> list[np.ndarray]:
    """The faces of each photo: taken in turn by identity, 1..faces_per_photo at a time, no identity twice."""
    rng = np.random.default_rng((seed, _SPLIT))
    unique, inverse = np.unique(ids, return_inverse=True)
    by_id = np.argsort(inverse, kind="stable")
    rank = np.empty(len(ids), dtype=np.int64)  # each face's place among its identity's faces
    rank[by_id] = np.arange(len(ids)) - np.searchsorted(inverse[by_id], inverse[by_id])
    order = np.lexsort((rng.permutation(len(unique))[inverse], rank)).tolist()
    counts = rng.integers(1, faces_per_photo + 1, size=len(ids)).tolist()
    photos: list[np.ndarray] = []
    at = 0
    while at < len(order):
        faces, seen = [order[at]], {inverse[order[at]]}
        at += 1
        while len(faces) < counts[len(photos)] and at < len(order) and inverse[order[at]] not in seen:
            faces.append(order[at])
            seen.add(inverse[order[at]])
            at += 1
        photos.append(np.array(faces, dtype=np.int64))
    return photos


def _scene(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A soft background :data:`_PAD` pixels larger than a photo each way, with grain: a gradient, perhaps a floor,
    a bright window and blurred lights, drawn small and enlarged."""
    from PIL import Image, ImageDraw, ImageFilter

    width, height = size[0] + _PAD, size[1] + _PAD
    w, h = max(width // 8, 4), max(height // 8, 4)
    hue = rng.uniform(0, 1)
    top = np.array(_hsv(hue, rng.uniform(0.05, 0.4), rng.uniform(0.55, 0.95)), dtype=np.float32)
    bottom = np.array(_hsv(hue + rng.uniform(-0.15, 0.15), rng.uniform(0.05, 0.5), rng.uniform(0.3, 0.8)),
                      dtype=np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:h, 0:w]
    t = (np.cos(angle) * xx / w + np.sin(angle) * yy / h + 1) / 2
    small = Image.fromarray((top + (bottom - top) * t[..., None]).clip(0, 255).astype(np.uint8), mode="RGB")
    draw = ImageDraw.Draw(small, "RGBA")
    if rng.random() < 0.5:
        floor = float(rng.uniform(0.55, 0.85)) * h
        draw.rectangle((0, floor, w, h), fill=(*_hsv(rng.uniform(0, 1), 0.3, rng.uniform(0.2, 0.6)), 200))
    if rng.random() < 0.3:
        x, y = float(rng.uniform(0, w * 0.7)), float(rng.uniform(0, h * 0.4))
        draw.rectangle((x, y, x + w * 0.25, y + h * 0.35), fill=(235, 240, 250, 170))
    for _ in range(int(rng.integers(0, 6))):
        x, y, r = float(rng.uniform(0, w)), float(rng.uniform(0, h)), float(rng.uniform(1, h / 6))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(*_hsv(rng.uniform(0, 1), 0.3, 1.0), 90))
    small = small.filter(ImageFilter.GaussianBlur(1.2))
    scene = np.asarray(small.resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16)
    grain = rng.normal(0, _GRAIN / 2.5, (height, width, 1)) + rng.normal(0, 1.2, (height, width, 3))
    return Image.fromarray((scene + grain.round()).clip(0, 255).astype(np.uint8), mode="RGB")


def _photo(rng: np.random.Generator, looks: list[FaceLook], *, size: tuple[int, int],
           scenes: list[Image.Image]) -> tuple[Image.Image, np.ndarray]:
    """One photo as displayed and its faces' boxes, shape (len(looks), 4), in the order of ``looks``."""
    from PIL import ImageDraw

    dx, dy, pick = (int(value) for value in rng.integers(0, (_PAD, _PAD, len(scenes))))
    photo = scenes[pick].crop((dx, dy, dx + size[0], dy + size[1]))
    boxes = _place(rng, [look.width for look in looks], size)
    draw = ImageDraw.Draw(photo, "RGBA")
    for at in np.argsort(boxes[:, 1], kind="stable").tolist():  # lower faces in front of the shoulders above
        x1, y1, x2, y2 = boxes[at].tolist()
        tilt = math.radians(float(np.clip(rng.normal(0, 4), -9, 9)))
        shift = complex(*rng.uniform(-0.015, 0.015, 2))
        pen = _Pen(draw, complex((x1 + x2) / 2, (y1 + y2) / 2) + shift * (y2 - y1), (y2 - y1) * np.exp(1j * tilt))
        _face(pen, looks[at], _pose(rng, looks[at]))
    return photo, boxes


def _place(rng: np.random.Generator, widths: list[float], size: tuple[int, int]) -> np.ndarray:
    """Boxes inside the photo whose faces, with the hair, ears and neck around them, do not overlap; while one
    does not fit, all of the photo's faces are tried again a tenth smaller."""
    high = min(SIDE[1], 0.6 * min(size))
    low = min(SIDE[0], high / 2)
    for shrink in (0.9**step for step in range(40)):
        boxes = _try_place(rng, widths, size, sides=(max(low * shrink, MIN_SIDE), max(high * shrink, MIN_SIDE)))
        if boxes is not None:
            return boxes
    raise UsageError(f"demo photos: {len(widths)} faces do not fit in a photo of {size[0]}x{size[1]} pixels; "
                     "ask for fewer faces per photo or larger photos")


def _try_place(rng: np.random.Generator, widths: list[float], size: tuple[int, int], *,
               sides: tuple[float, float]) -> np.ndarray | None:
    """Each face at one of 30 random places and heights in ``sides`` where it fits; None where one does not."""
    taken: list[tuple[float, float, float, float]] = []
    boxes = np.zeros((len(widths), 4), dtype=np.float32)
    for at, ratio in enumerate(widths):
        for _ in range(30):
            side = float(rng.uniform(*sides))
            w = side * ratio
            x1, y1 = float(rng.uniform(0, size[0] - w)), float(rng.uniform(0, size[1] - side))
            room = (x1 - 0.3 * w, y1 - 0.4 * side, x1 + 1.3 * w, y1 + 1.15 * side)  # _ROOM x side squared
            if all(room[2] <= o[0] or o[2] <= room[0] or room[3] <= o[1] or o[3] <= room[1] for o in taken):
                taken.append(room)
                boxes[at] = (x1, y1, x1 + w, y1 + side)
                break
        else:
            return None
    return boxes


@dataclass(frozen=True)
class _Pose:
    """How one face differs from the identity's others: expression and light (tilt and shift are the pen's)."""

    smile: float
    open_mouth: bool
    openness: float
    brow_raise: float
    light: float
    shade: tuple[int, int]  # the side of the face in shadow (-1, 1) and the shadow's alpha

    def __call__(self, colour: RGB, factor: float = 1.0) -> RGB:
        """``colour`` under this face's light, times ``factor``."""
        r, g, b = (min(255, max(0, round(c * self.light * factor))) for c in colour)
        return r, g, b


def _pose(rng: np.random.Generator, look: FaceLook) -> _Pose:
    smile, opened, openness, brow, light, alpha = rng.random(6).tolist()
    return _Pose(smile=min(max(look.smile + 0.5 * (smile - 0.5), -0.4), 1.2),
                 open_mouth=opened < 0.1 + 0.25 * max(look.smile, 0.0), openness=0.75 + 0.35 * openness,
                 brow_raise=0.02 * (brow - 0.5), light=0.88 + 0.24 * light,
                 shade=(1 if alpha < 0.5 else -1, int(100 * abs(alpha - 0.5))))


@dataclass(frozen=True)
class _Pen:
    """Draws in a face's own units: the point z lands at ``centre + turn * z`` (``turn`` = size x e^(i tilt))."""

    draw: ImageDraw.ImageDraw
    centre: complex
    turn: complex

    def shape(self, z: Points, fill: tuple[int, ...]) -> None:
        self.draw.polygon((self.centre + self.turn * z).view(np.float64).tolist(), fill=fill)

    def line(self, z: Points, fill: tuple[int, ...], weight: float) -> None:
        points = (self.centre + self.turn * z).view(np.float64).tolist()
        self.draw.line(points, fill=fill, width=max(1, round(weight * abs(self.turn))))

    def ellipse(self, centre: complex, radii: tuple[float, float], fill: tuple[int, ...]) -> None:
        self.shape(_arc(centre, radii), fill)


@cache
def _circle(start: float, end: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.radians(np.linspace(start, end, n))
    return np.cos(t), np.sin(t)


def _arc(centre: complex, radii: tuple[float, float], turn: tuple[float, float] = (0.0, 360.0),
         n: int = 24) -> Points:
    """Points of an ellipse from angle ``turn[0]`` to ``turn[1]`` in degrees (0 right, 90 down)."""
    cos, sin = _circle(*turn, n)
    return centre + radii[0] * cos + 1j * radii[1] * sin


def _points(*pairs: float) -> Points:
    """``u1, v1, u2, v2, ...`` as points."""
    return np.array(pairs[0::2]) + 1j * np.array(pairs[1::2])


@cache
def _head(width: float, jaw: float) -> Points:
    """A face's outline: an ellipse above, a superellipse jaw below, from the forehead (v -0.62) to the box's
    bottom (v 0.5)."""
    cos, sin = _circle(0.0, 360.0, 49)
    power = np.where(sin > 0, 2 / jaw, 1.0)
    u = width / 2 * np.sign(cos) * np.abs(cos) ** power
    outline: Points = u + 1j * (-0.06 + 0.56 * np.sign(sin) * np.abs(sin) ** power)
    return outline[:-1]


def _face(pen: _Pen, look: FaceLook, lit: _Pose) -> None:
    """One face: shirt, hair behind, neck, ears, head, hair in front, features, glasses, shadow."""
    half = look.width / 2
    pen.ellipse(1.08j, (0.78, 0.42), lit(look.shirt))
    if look.hair_style in ("long", "bob", "curly"):
        reach = {"long": 0.78, "bob": 0.3, "curly": 0.25}[look.hair_style]
        pen.ellipse(1j * (reach - 0.72) / 2, (half + 0.12, (reach + 0.72) / 2), lit(look.hair))
    neck = lit(look.skin, 0.86)
    pen.shape(_points(-0.15, 0.3, 0.15, 0.3, 0.15, 0.64, 0.0, 0.82, -0.15, 0.64), neck)
    if look.hair_style not in ("long", "bob"):
        for side in (-1, 1):
            pen.ellipse(side * half - 0.04j, (0.06, 0.1), lit(look.skin, 0.92))
    if look.earrings is not None:
        for side in (-1, 1):
            pen.ellipse(side * (half + 0.01) + 0.09j, (0.025, 0.025), lit(look.earrings))
    head = _head(look.width, FACE_SHAPES[look.face_shape][1])
    pen.shape(head, lit(look.skin))
    if look.beard is not None:
        _beard(pen, look, lit, head)
    _hair(pen, look, lit)
    _eyes(pen, look, lit)
    _nose(pen, look, lit)
    _mouth(pen, look, lit)
    if look.glasses is not None:
        _glasses(pen, look, lit)
    side, alpha = lit.shade
    for edge in (0.1 * half * side, 0.5 * half * side):  # light from one side: the other darker towards its edge
        pen.shape(np.where(side * head.real < side * edge, edge + 1j * head.imag, head), (20, 10, 30, alpha // 2))


def _hair(pen: _Pen, look: FaceLook, lit: _Pose) -> None:
    """The hair over the head: a cap down to the hairline, and the style's own shapes."""
    hair, half, style = lit(look.hair), look.width / 2, look.hair_style
    if style == "bald":  # a fringe around the back, seen above the ears
        for side in (-1, 1):
            pen.ellipse(side * (half - 0.01) - 0.17j, (0.045, 0.12), hair)
        return
    line = {"bob": -0.3, "bun": -0.48, "spiky": -0.44}.get(style, -0.4)
    pen.shape(_arc(1j * line, (half + 0.04, 0.72 + line), (180, 360)), hair)
    for side in (-1, 1):  # the sides down to the ears
        pen.shape(_side(side, _points(half + 0.04, line, half - 0.05, line, half - 0.04, -0.12, half + 0.04, -0.12)),
                  hair)
    if style in ("short", "long"):  # a parted fringe
        pen.shape(_points(-half, line, 0.06, line, -half * 0.2, line + 0.12), hair)
    elif style == "curly":
        for angle in range(170, 380, 21):
            t = math.radians(angle)
            pen.ellipse(complex(1.02 * half * math.cos(t), -0.14 + 0.54 * math.sin(t)), (0.11, 0.11), hair)
    elif style == "spiky":
        u = np.linspace(-half, half, 11)
        v = np.where(np.arange(11) % 2 == 0, -0.6, -0.8) - 0.06 * np.cos(u / half * math.pi / 2)
        pen.shape(np.concatenate(([half + 1j * line], u[::-1] + 1j * v, [-half + 1j * line])), hair)
    elif style == "bun":
        pen.ellipse(-0.78j, (0.16, 0.14), hair)


_BROWS = {"straight": (0.0, 0.0, 0.0), "arched": (0.0, 0.035, 0.0), "angled": (-0.01, 0.0, 0.035)}
"""Brow shape -> how far its inner end, middle and outer end rise."""


def _eyes(pen: _Pen, look: FaceLook, lit: _Pose) -> None:
    """Eyes (white, iris, pupil, upper lid) and brows of the identity's shape."""
    brow = lit(look.hair, 0.7) if look.hair_style != "bald" else lit((60, 44, 34))
    size, opened = look.eye_size, lit.openness
    inner, middle, outer = _BROWS[look.brow]
    for side in (-1, 1):
        eye = side * look.eye_spacing - 0.1j
        if look.glasses != "sun":
            pen.ellipse(eye, (0.062 * size, 0.04 * size * opened), lit((246, 244, 240)))
            pen.ellipse(eye, (0.032 * size, min(0.032, 0.04 * opened) * size), lit(look.eye))
            pen.ellipse(eye, (0.014 * size, 0.014 * size), (16, 12, 12))
            pen.line(_arc(eye, (0.064 * size, 0.042 * size * opened), (190, 350), 7), (40, 28, 24), 0.012)
        rise = np.array([inner, middle, outer] if side > 0 else [outer, middle, inner])
        pen.line(eye.real + np.array([-0.08, 0.0, 0.08]) + 1j * (-0.21 - lit.brow_raise - rise), brow,
                 look.brow_weight)


def _nose(pen: _Pen, look: FaceLook, lit: _Pose) -> None:
    """Below the box's centre, which stays bare skin (the tests look for it there)."""
    shadow = lit(look.skin, 0.72)
    if look.nose == "button":
        pen.ellipse(0.14j, (0.04, 0.032), lit(look.skin, 0.88))
        for side in (-1, 1):
            pen.ellipse(side * 0.022 + 0.155j, (0.01, 0.008), shadow)
    elif look.nose == "line":
        pen.line(_points(0.02, 0.07, 0.045, 0.16, -0.01, 0.17), shadow, 0.014)
    elif look.nose == "wide":
        pen.line(_arc(0.13j, (0.065, 0.035), (10, 170), 7), shadow, 0.014)
    else:
        pen.shape(_points(0.0, 0.07, 0.045, 0.17, -0.03, 0.17), lit(look.skin, 0.84))


def _mouth(pen: _Pen, look: FaceLook, lit: _Pose) -> None:
    """A curve whose ends rise with the smile; open, a dark mouth with a row of teeth."""
    half = look.mouth_width / 2
    u = np.linspace(-half, half, 9)
    top = u + 1j * (0.3 - lit.smile * 0.045 * (u / half) ** 2 + lit.smile * 0.015)
    if lit.open_mouth:
        bottom = top + 0.07j * (1 - (u / half) ** 2)
        pen.shape(np.concatenate((top, bottom[::-1])), (90, 26, 34))
        pen.shape(np.concatenate((top[1:-1], top[-2:0:-1] + 0.022j)), (240, 238, 230))
    r, g, b = look.skin
    pen.line(top, lit((max(0, r - 20), max(0, g - 70), max(0, b - 60))), 0.022)


def _beard(pen: _Pen, look: FaceLook, lit: _Pose, head: Points) -> None:
    hair, half = lit(look.hair, 0.9), look.width / 2
    if look.beard == "stubble":
        pen.shape(head.real + 1j * np.maximum(head.imag, 0.14), (*lit(look.hair, 0.6), 70))
        return
    if look.beard == "full":  # the jaw below the cheekbones, up to a rim around the mouth
        rim = _points(-half * 0.95, -0.02, -0.26, 0.18, -0.1, 0.21, 0.1, 0.21, 0.26, 0.18, half * 0.95, -0.02)
        pen.shape(np.concatenate((head[head.imag > -0.02], rim)), hair)
    elif look.beard == "goatee":
        pen.ellipse(0.42j, (0.1, 0.09), hair)
    pen.shape(_arc(0.245j, (look.mouth_width / 2 + 0.03, 0.045), (160, 380)), hair)


def _glasses(pen: _Pen, look: FaceLook, lit: _Pose) -> None:
    """Round or square frames (dark lenses for sunglasses), a bridge and the arms back to the ears."""
    frame, half, s = lit(look.frame), look.width / 2, look.eye_spacing
    for side in (-1, 1):
        if look.glasses == "round":
            lens = _arc(side * s - 0.1j, (0.085, 0.075), n=25)
        else:
            lens = side * s - 0.1j + _points(-0.09, -0.06, 0.09, -0.06, 0.09, 0.06, -0.09, 0.06, -0.09, -0.06)
        if look.glasses == "sun":
            pen.shape(lens, (24, 24, 30))
        pen.line(lens, frame, 0.016)
        pen.line(_side(side, _points(s + 0.085, -0.11, half, -0.08)), frame, 0.014)
    pen.line(_points(-s + 0.085, -0.11, 0.0, -0.125, s - 0.085, -0.11), frame, 0.014)


def _side(side: int, z: Points) -> Points:
    """``z`` on the right (side 1), or mirrored to the left (side -1)."""
    return z if side > 0 else -np.conj(z)


def _jitter(rng: np.random.Generator, colour: RGB, spread: int) -> RGB:
    r, g, b = (int(np.clip(c + rng.integers(-spread, spread + 1), 0, 255)) for c in colour)
    return r, g, b


def _hsv(hue: float, saturation: float, value: float) -> RGB:
    import colorsys

    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, saturation, value)
    return round(r * 255), round(g * 255), round(b * 255)
