"""Face crops for the atlas page, cut from real image files made here (synthetic shapes, no people): the EXIF
orientation, the box and its frame are honoured (the crop's centre has the colour planted in the box), every
bad photo is counted and none raises, and the byte budgets keep the most wanted faces."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from job.report import thumbnails
from job.report.thumbnails import ThumbnailLimits, Thumbnails, crop_faces, face_region, photo_path

RED, GREEN, BLUE, YELLOW, MAGENTA = (230, 20, 20), (20, 200, 20), (20, 20, 230), (230, 230, 20), (200, 20, 200)
SHOWN = (600, 400)  # the displayed photo: a red square in a photo of four coloured quarters
SQUARE = (60, 40, 180, 160)
# what the camera stored for each EXIF orientation, given the photo as displayed (exif_transpose undoes it)
STORED = {1: None, 3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def _displayed(size: tuple[int, int] = SHOWN, square: tuple[int, int, int, int] = SQUARE) -> Image.Image:
    width, height = size
    photo = Image.new("RGB", size, GREEN)
    photo.paste(BLUE, (width // 2, 0, width, height // 2))
    photo.paste(YELLOW, (0, height // 2, width // 2, height))
    photo.paste(MAGENTA, (width // 2, height // 2, width, height))
    photo.paste(RED, square)
    return photo


def _save_jpeg(path: Path, shown: Image.Image, orientation: int = 1, quality: int = 92) -> Path:
    turn = STORED[orientation]
    stored = shown if turn is None else shown.transpose(turn)
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, "JPEG", quality=quality, exif=exif.tobytes())
    return path


def _centre(jpeg: bytes) -> tuple[int, ...]:
    with Image.open(io.BytesIO(jpeg)) as face:
        assert face.format == "JPEG" and face.mode == "RGB"
        return tuple(face.getpixel((face.width // 2, face.height // 2)))  # type: ignore[arg-type]


def _near(colour: tuple[int, ...], expected: tuple[int, int, int], tolerance: int = 40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(colour, expected, strict=True))


def _crop(images: list[str | None], boxes: list[list[float]] | np.ndarray, order: list[int] | None = None,
          **settings: object) -> Thumbnails:
    boxes = np.asarray(boxes, dtype=np.float32)
    chosen = np.arange(len(images)) if order is None else np.asarray(order)
    return crop_faces(images, boxes, chosen, **settings)  # type: ignore[arg-type]


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_the_exif_orientation_and_the_box_are_honoured(tmp_path: Path, orientation: int) -> None:
    path = _save_jpeg(tmp_path / f"o{orientation}.jpg", _displayed(), orientation)
    with Image.open(path) as stored:  # the test has teeth: the box's centre as stored is not the red square
        centre = ((SQUARE[0] + SQUARE[2]) // 2, (SQUARE[1] + SQUARE[3]) // 2)
        assert orientation == 1 or not _near(stored.convert("RGB").getpixel(centre), RED)  # type: ignore[arg-type]
    made = _crop([str(path)], [SQUARE])
    assert made.record() == {"made": 1, "missing": 0, "unreadable": 0, "no_photo": 0, "over_budget": 0,
                             "bytes": len(made.jpeg[0])}
    assert _near(_centre(made.jpeg[0]), RED)
    with Image.open(io.BytesIO(made.jpeg[0])) as face:
        assert max(face.size) == 64 and face.width == face.height  # a square of the box plus its padding


def test_the_box_is_padded_for_context(tmp_path: Path) -> None:
    path = _save_jpeg(tmp_path / "photo.jpg", _displayed())
    with Image.open(io.BytesIO(_crop([str(path)], [SQUARE]).jpeg[0])) as face:
        corner = face.getpixel((1, 1))
    assert _near(corner, GREEN)  # type: ignore[arg-type] # 15% around the box: the quarter around the square
    assert face_region(SQUARE, SHOWN) == pytest.approx((42.0, 22.0, 198.0, 178.0))


def test_a_box_in_pixels_of_another_frame_is_scaled(tmp_path: Path) -> None:
    # Immich: the box is in pixels of the 600 x 400 preview its detection ran on; the photo is 1200 x 800
    path = _save_jpeg(tmp_path / "big.jpg", _displayed((1200, 800), (600, 400, 840, 640)), orientation=6)
    box = [[300, 200, 420, 320]]
    scaled = _crop([str(path)], box, frames=np.array([[600, 400]], dtype=np.float32))
    assert _near(_centre(scaled.jpeg[0]), RED)
    unscaled = _crop([str(path)], box)  # read as the photo's own pixels, the box is on the green quarter
    assert not _near(_centre(unscaled.jpeg[0]), RED)
    unknown = _crop([str(path)], [[600, 400, 840, 640]], frames=np.array([[np.nan, 0]], dtype=np.float32))
    assert _near(_centre(unknown.jpeg[0]), RED)  # no frame known: the photo's own pixels


@pytest.mark.parametrize("mode", ["RGBA", "P", "LA", "CMYK", "I;16"])
def test_png_modes_become_rgb_jpegs(tmp_path: Path, mode: str) -> None:
    photo = _displayed()
    if mode == "RGBA":
        photo = photo.convert("RGBA")
        photo.putalpha(Image.new("L", SHOWN, 0))
        photo.paste((*RED, 255), SQUARE)  # transparent around an opaque red square: white around red
        expected = RED
    elif mode == "P":
        photo = photo.quantize(8)
        expected = RED
    elif mode == "LA":
        photo = photo.convert("LA")
        expected = tuple([photo.getpixel((100, 100))[0]] * 3)  # type: ignore[index]
    elif mode == "CMYK":
        photo = photo.convert("CMYK")
        expected = RED
    else:  # 16-bit grey: 0..65535, which a plain convert would clip to white
        photo = Image.fromarray(np.full((400, 600), 20_000, dtype=np.uint16))
        expected = (78, 78, 78)
    path = tmp_path / ("photo.jpg" if mode == "CMYK" else "photo.png")
    photo.save(path)
    made = _crop([str(path)], [SQUARE])
    assert list(made.jpeg) == [0] and _near(_centre(made.jpeg[0]), expected)  # type: ignore[arg-type]


def test_bad_photos_are_counted_and_none_raises(tmp_path: Path) -> None:
    good = _save_jpeg(tmp_path / "good.jpg", _displayed())
    text = tmp_path / "notes.jpg"
    text.write_text("not an image\n")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)  # opening it to read would block: never opened
    cases = {
        str(good): "made", str(tmp_path / "gone.jpg"): "missing", str(tmp_path): "missing", str(fifo): "missing",
        "/dev/zero": "missing", "https://example.com/face.jpg": "missing", f"file://{good}": "missing",
        str(text): "unreadable", str(truncated): "unreadable", str(good) + "\x00x": "missing",
    }
    made = _crop(list(cases), [SQUARE] * len(cases))
    expected = {kind: list(cases.values()).count(kind) for kind in ("missing", "unreadable")}
    assert made.record() == {"made": 1, **expected, "no_photo": 0, "over_budget": 0, "bytes": len(made.jpeg[0])}
    assert list(made.jpeg) == [0]


def test_bad_boxes_and_faces_without_a_photo(tmp_path: Path) -> None:
    good = str(_save_jpeg(tmp_path / "good.jpg", _displayed()))
    images: list[str | None] = [good, good, good, good, None, "", good]
    boxes = [SQUARE, [180, 40, 60, 160], [700, 500, 800, 600], [-50, -50, -10, -10], SQUARE, SQUARE,
             [np.nan, 40, 180, 160]]
    made = _crop(images, boxes)
    assert list(made.jpeg) == [0]
    assert (made.unreadable, made.no_photo, made.missing) == (3, 3, 0)  # inverted, outside x2; no path x2, NaN


def test_a_box_partly_outside_is_cut_to_the_photo(tmp_path: Path) -> None:
    good = str(_save_jpeg(tmp_path / "good.jpg", _displayed()))
    made = _crop([good], [[-30, -30, 90, 90]])
    assert list(made.jpeg) == [0]


def test_decompression_bombs_are_refused_without_changing_warnings(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    Image.new("1", (9600, 9600)).save(bomb)  # 92M pixels: above Pillow's warning limit, below its error
    filters = list(warnings.filters)
    made = _crop([str(bomb)], [[0, 0, 100, 100]])
    assert made.unreadable == 1 and not made.jpeg
    assert warnings.filters == filters and Image.MAX_IMAGE_PIXELS == 89_478_485


def test_a_photo_over_photo_bytes_is_not_opened(tmp_path: Path) -> None:
    path = _save_jpeg(tmp_path / "photo.jpg", _displayed())
    made = _crop([str(path)], [SQUARE], limits=ThumbnailLimits(photo_bytes=path.stat().st_size - 1))
    assert made.unreadable == 1 and not made.jpeg


def test_image_root_in_both_forms(tmp_path: Path) -> None:
    folder = tmp_path / "library" / "2024"
    folder.mkdir(parents=True)
    _save_jpeg(folder / "a.jpg", _displayed())
    assert _crop(["2024/a.jpg"], [SQUARE], root=str(tmp_path / "library")).jpeg
    assert _crop(["/usr/src/app/upload/library/2024/a.jpg"], [SQUARE],
                 root=f"/usr/src/app/upload={tmp_path}").jpeg
    assert _crop(["/usr/src/app/upload/library/2024/a.jpg"], [SQUARE], root=str(tmp_path)).missing == 1


def test_photo_path_rewrites() -> None:
    assert photo_path("a/b.jpg", "") == Path("a/b.jpg")
    assert photo_path("a/b.jpg", "/photos") == Path("/photos/a/b.jpg")
    assert photo_path("/x/b.jpg", "/photos") == Path("/x/b.jpg")  # absolute paths stay as they are
    assert photo_path("/data/lib/b.jpg", "/data=/mnt/p") == Path("/mnt/p/lib/b.jpg")
    assert photo_path("/data/lib/b.jpg", "/data/=/mnt/p") == Path("/mnt/p/lib/b.jpg")
    assert photo_path("/database/b.jpg", "/data=/mnt/p") == Path("/database/b.jpg")  # whole components only
    assert photo_path("rel/b.jpg", "/data=/mnt/p") == Path("rel/b.jpg")


def _noisy_photo(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, size=(400, 600, 3), dtype=np.uint8)).save(path, quality=95)
    return path


def test_the_budget_keeps_the_most_wanted_faces_first(tmp_path: Path) -> None:
    paths = [str(_noisy_photo(tmp_path / f"p{k}.jpg", k)) for k in range(3)]
    images = [paths[k % 3] for k in range(9)]  # three faces per photo
    boxes = [[20 + 60 * (k // 3), 20, 120 + 60 * (k // 3), 120] for k in range(9)]
    order = [8, 3, 5, 0, 1, 2, 4, 6, 7]
    every = _crop(images, boxes, order)
    assert set(every.jpeg) == set(range(9))
    sizes = [len(every.jpeg[k]) for k in order]
    room = sum(sizes[:4]) + sizes[4] // 2  # four fit, the fifth does not
    kept = _crop(images, boxes, order, limits=ThumbnailLimits(total_bytes=room))
    assert list(kept.jpeg) == order[:4] and kept.over_budget == 5 and kept.bytes <= room
    assert _crop(images, boxes, order, limits=ThumbnailLimits(total_bytes=0)).over_budget == 9
    one = _crop(images, boxes, order, limits=ThumbnailLimits(total_bytes=room), workers=1)
    assert one == _crop(images, boxes, order, limits=ThumbnailLimits(total_bytes=room), workers=3) == kept


def test_each_photo_is_read_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = [str(_save_jpeg(tmp_path / f"p{k}.jpg", _displayed())) for k in range(2)]
    reads: list[str] = []
    real = thumbnails._read_photo

    def spy(image: str, root: str, max_bytes: int) -> bytes | str:
        reads.append(image)
        return real(image, root, max_bytes)

    monkeypatch.setattr(thumbnails, "_read_photo", spy)
    made = _crop([paths[0], paths[1], paths[0], paths[1]], [SQUARE] * 4, [3, 0, 1, 2])
    assert sorted(reads) == sorted(paths) and len(made.jpeg) == 4


def test_face_bytes_lowers_the_quality_then_gives_up(tmp_path: Path) -> None:
    path = str(_noisy_photo(tmp_path / "noise.jpg", 0))
    box = [[100, 100, 300, 300]]
    full = _crop([path], box, limits=ThumbnailLimits(size=96, quality=95))
    lower = _crop([path], box, limits=ThumbnailLimits(size=96, quality=95, face_bytes=len(full.jpeg[0]) - 1))
    assert 0 < len(lower.jpeg[0]) < len(full.jpeg[0])
    none = _crop([path], box, limits=ThumbnailLimits(face_bytes=200))
    assert not none.jpeg and none.over_budget == 1


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_in_the_right_place(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # a 4000 x 3000 photo turned by EXIF, whose face box is 1600 px: decoded at 1/8, cut where the box is
    width, height, box = 4000, 3000, (1700, 900, 3300, 2500)
    shown = _displayed((width, height), box)
    quarter = (box[0], box[1], (box[0] + box[2]) // 2, (box[1] + box[3]) // 2)
    shown.paste(BLUE, quarter)  # the face's top-left quarter differs: a shifted or mis-scaled cut shows
    path = _save_jpeg(tmp_path / "large.jpg", shown, orientation=6)
    scales: list[int] = []
    draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self: JpegImagePlugin.JpegImageFile, mode: str | None, size: tuple[int, int] | None):  # type: ignore[no-untyped-def]
        result = draft(self, mode, size)
        scales.append(round(self.decoderconfig[0]) if result else 1)  # type: ignore[index]
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    made = _crop([str(path)], [box])
    assert scales == [8]
    with Image.open(io.BytesIO(made.jpeg[0])) as face:
        got = np.asarray(face.convert("RGB"), dtype=np.float64)
    region = face_region(box, (width, height))
    assert region is not None
    reference = shown.crop(tuple(round(v) for v in region))  # type: ignore[arg-type]
    reference.thumbnail((64, 64))
    assert got.shape == np.asarray(reference).shape
    assert np.abs(got - np.asarray(reference, dtype=np.float64)).mean() < 8


def test_limits_defaults_and_the_record() -> None:
    limits = ThumbnailLimits()
    assert (limits.size, limits.quality, limits.face_bytes, limits.total_bytes, limits.photo_bytes) == (
        64, 70, 4096, 5 * 2**20, 64 * 2**20)
    empty = crop_faces([], np.zeros((0, 4), dtype=np.float32), np.zeros(0, dtype=np.int64))
    assert empty.record() == {"made": 0, "missing": 0, "unreadable": 0, "no_photo": 0, "over_budget": 0, "bytes": 0}
