"""The demo's cartoon face photos: JPEGs whose boxes frame the faces (EXIF-turned photos included), the same bytes
for the same arguments, and faces of one person more alike than faces of two."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from job.errors import UsageError
from job.io.demo_photos import DemoPhotos, draw_photos, face_look
from job.report.thumbnails import crop_faces

IDS = np.repeat(np.arange(10), 3)  # 30 faces of 10 identities
SIZE = (480, 360)


@pytest.fixture(scope="module")
def drawn(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoPhotos]:
    folder = tmp_path_factory.mktemp("photos") / "demo"  # not there yet: draw_photos makes it
    return folder, draw_photos(IDS, folder, seed=3, rotated=0.5)


def _orientation(path: Path) -> int:
    with Image.open(path) as photo:
        return int(photo.getexif().get(0x0112, 1))


def test_photos_are_jpegs_and_boxes_frame_the_faces(drawn: tuple[Path, DemoPhotos]) -> None:
    folder, photos = drawn
    assert photos.image.shape == (30,) and photos.box.shape == (30, 4) and photos.box.dtype == np.float32
    names = sorted(set(photos.image.tolist()))
    assert sorted(path.name for path in folder.iterdir()) == names
    assert {_orientation(folder / name) for name in names} == {1, 6, 8}  # upright and turned both ways
    x1, y1, x2, y2 = photos.box.T
    assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= SIZE[0]).all() and (y2 <= SIZE[1]).all()
    assert (x2 - x1 > 20).all() and (y2 - y1 > 40).all()
    for name in names:
        faces = np.flatnonzero(photos.image == name)
        assert 1 <= len(faces) <= 3 and len(set(IDS[faces].tolist())) == len(faces)  # different people
        with Image.open(folder / name) as stored:
            assert stored.format == "JPEG"
            shown = ImageOps.exif_transpose(stored).convert("RGB")
        assert shown.size == SIZE
        for face in faces.tolist():  # the box's centre is the person's skin (under this face's light)
            cx, cy = (photos.box[face, :2] + photos.box[face, 2:]) / 2
            patch = np.asarray(shown.crop((round(cx) - 2, round(cy) - 2, round(cx) + 3, round(cy) + 3)))
            skin = np.array(face_look(int(IDS[face]), seed=3).skin)
            assert np.abs(np.median(patch.reshape(-1, 3), axis=0) - skin).max() < 40, (name, face)


def test_same_arguments_give_the_same_bytes(drawn: tuple[Path, DemoPhotos], tmp_path: Path) -> None:
    folder, photos = drawn
    again = draw_photos(IDS, tmp_path / "again", seed=3, rotated=0.5)
    assert np.array_equal(again.image, photos.image) and np.array_equal(again.box, photos.box)
    for name in set(photos.image.tolist()):
        assert (tmp_path / "again" / name).read_bytes() == (folder / name).read_bytes()
    other = draw_photos(IDS, tmp_path / "other", seed=4, rotated=0.5)
    assert not np.array_equal(other.box, photos.box)
    assert face_look(5, seed=3) == face_look(5, seed=3) != face_look(5, seed=4)


def test_faces_of_one_person_are_more_alike_than_of_two(drawn: tuple[Path, DemoPhotos]) -> None:
    folder, photos = drawn
    thumbs = crop_faces(photos.image.tolist(), photos.box, np.arange(len(IDS)), root=str(folder))
    assert sorted(thumbs.jpeg) == list(range(len(IDS)))
    pixels = np.stack([np.asarray(Image.open(io.BytesIO(thumbs.jpeg[face])).convert("RGB").resize((64, 64)),
                                  dtype=np.float32) for face in range(len(IDS))])
    distance = np.abs(pixels[:, None] - pixels[None, :]).mean(axis=(2, 3, 4))
    same = IDS[:, None] == IDS[None, :]
    np.fill_diagonal(same, False)
    other = IDS[:, None] != IDS[None, :]
    assert distance[same].mean() < 0.7 * distance[other].mean()
    np.fill_diagonal(distance, np.inf)
    assert (IDS[distance.argmin(axis=1)] == IDS).mean() >= 0.5  # chance: 2 in 29


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="faces_per_photo"):
        draw_photos(IDS, tmp_path, faces_per_photo=0)
    with pytest.raises(UsageError, match="true_ids"):
        draw_photos(IDS.astype(np.float32), tmp_path)
    with pytest.raises(UsageError, match="size"):
        draw_photos(IDS, tmp_path, size=(50, 50))
    assert not any(tmp_path.iterdir())
