"""Where each face was found, as a database says: a file's image and box fields (Parquet, .npz, structured .npy)
and a store's frame (the size of the image its boxes' pixels refer to), carried into the keys and the outputs'
columns; a field named in place of the default that is missing or of the wrong type is one line with the fix."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from job.config import InputConfig, load_config
from job.errors import InputError, UsageError
from job.io.database import FaceDatabase, load_database
from job.io.photos import BOX_FIELD, IMAGE_FIELD, read_photo_places
from job.store.keys import face_keys

DIM, N = 8, 12


def _embeddings(n: int = N, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return np.repeat(np.arange(n // 3), 3).astype(np.int64), rng.normal(size=(n, DIM)).astype(np.float32)


def _paths(n: int = N) -> list[str | None]:
    return [None if row == 4 else f"photos/p{row // 2}.jpg" for row in range(n)]


def _boxes(n: int = N) -> list[list[float] | None]:
    return [None if row == 5 else [10.0 * row, 20.0, 10.0 * row + 50, 90.0] for row in range(n)]


def _parquet(path: Path, columns: dict[str, object]) -> Path:
    ids, vectors = _embeddings()
    table = pa.table({"id": ids, "embedding": pa.array(vectors.tolist(), type=pa.list_(pa.float32())), **columns})
    pq.write_table(table, path)
    return path


def _load(path: Path | str, **settings: object) -> FaceDatabase:
    return load_database(InputConfig(path=str(path), **settings))  # type: ignore[arg-type]


def _expected_boxes() -> np.ndarray:
    return np.array([[np.nan] * 4 if box is None else box for box in _boxes()], dtype=np.float32)


@pytest.mark.parametrize("box_type", [pa.list_(pa.float32()), pa.list_(pa.float64(), 4), pa.large_list(pa.int32())])
def test_parquet_image_and_box_columns(tmp_path: Path, box_type: pa.DataType) -> None:
    boxes = _boxes()
    if pa.types.is_integer(box_type.value_type):
        boxes = [None if box is None else [int(v) for v in box] for box in boxes]
    path = _parquet(tmp_path / "faces.parquet", {"image": pa.array(_paths()), "box": pa.array(boxes, box_type)})
    database = _load(path)
    keys = database.keys
    assert keys is not None and keys.photo is None and keys.frame is None
    assert keys.image is not None and keys.image.tolist() == _paths()
    assert keys.box is not None and keys.box.dtype == np.float32
    np.testing.assert_array_equal(keys.box, _expected_boxes())
    columns = face_keys(keys, database.ids, database.n_faces)
    assert columns["image"].tolist() == _paths() and np.isnan(columns["box_x1"][5])
    assert "image_width" not in columns


def test_a_null_value_in_a_box_and_dictionary_encoded_paths(tmp_path: Path) -> None:
    boxes = [[1.0, 2.0, None, 4.0]] + [[0.0, 0.0, 1.0, 1.0]] * (N - 1)
    path = _parquet(tmp_path / "faces.parquet", {"image": pa.array(_paths()).dictionary_encode(),
                                                 "box": pa.array(boxes, pa.list_(pa.float32(), 4))})
    keys = _load(path).keys
    assert keys is not None and keys.image is not None and keys.image.tolist() == _paths()
    assert keys.box is not None and np.isnan(keys.box[0, 2]) and keys.box[0, 3] == 4.0


def test_kept_rows_take_their_own_places(tmp_path: Path) -> None:
    ids, vectors = _embeddings()
    vectors[3] = np.nan
    table = pa.table({"id": ids, "embedding": pa.array(vectors.tolist(), type=pa.list_(pa.float32())),
                      "image": _paths(), "box": pa.array(_boxes(), pa.list_(pa.float32()))})
    pq.write_table(table, tmp_path / "faces.parquet")
    database = _load(tmp_path / "faces.parquet", drop_invalid=True)
    kept = [row for row in range(N) if row != 3]
    assert database.keys is not None and database.keys.image is not None and database.keys.box is not None
    assert database.keys.image.tolist() == [_paths()[row] for row in kept]
    np.testing.assert_array_equal(database.keys.box, _expected_boxes()[kept])


def test_npz_and_structured_npy(tmp_path: Path) -> None:
    ids, vectors = _embeddings()
    texts = np.array([path or "" for path in _paths()])
    boxes = np.nan_to_num(_expected_boxes(), nan=-1).astype(np.int16)
    np.savez(tmp_path / "faces.npz", ids=ids, embeddings=vectors, image=texts, box=boxes)
    npz = _load(tmp_path / "faces.npz").keys
    assert npz is not None and npz.image is not None and npz.image.tolist() == _paths()  # "" = unknown
    assert npz.box is not None and npz.box.dtype == np.float32 and npz.box[1].tolist() == [10, 20, 60, 90]
    table = np.empty(N, dtype=[("id", "<i8"), ("embedding", "<f4", (DIM,)), ("path", "S24"), ("where", "<f4", (4,))])
    table["id"], table["embedding"], table["path"], table["where"] = ids, vectors, np.char.encode(texts), boxes
    np.save(tmp_path / "faces.npy", table)
    npy = _load(tmp_path / "faces.npy", image_field="path", box_field="where").keys
    assert npy is not None and npy.image is not None and npy.image.tolist() == _paths()
    assert npy.box is not None and npy.box[1].tolist() == [10, 20, 60, 90]


def test_a_plain_file_has_no_keys_and_fields_can_be_turned_off(tmp_path: Path) -> None:
    assert _load(_parquet(tmp_path / "plain.parquet", {})).keys is None
    path = _parquet(tmp_path / "faces.parquet", {"image": _paths()})
    assert _load(path, image_field="").keys is None
    keys = _load(path).keys
    assert keys is not None and keys.box is None and keys.image is not None


@pytest.mark.parametrize(("setting", "message"), [
    ({"image_field": "path"}, (r"no column 'path' for input\.image_field \(columns found: id, embedding, image, "
                               r"box\); name the column of photo paths with --set input\.image_field=")),
    ({"box_field": "bbox"}, r"no column 'bbox' for input\.box_field .*--set input\.box_field="),
])
def test_a_named_field_that_is_missing_is_one_line(tmp_path: Path, setting: dict[str, str], message: str) -> None:
    path = _parquet(tmp_path / "faces.parquet", {"image": _paths(), "box": pa.array(_boxes(),
                                                                                   pa.list_(pa.float32()))})
    with pytest.raises(InputError, match=message) as caught:
        _load(path, **setting)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


def test_missing_fields_of_npz_and_npy_are_named(tmp_path: Path) -> None:
    ids, vectors = _embeddings()
    np.savez(tmp_path / "faces.npz", ids=ids, embeddings=vectors)
    with pytest.raises(InputError, match=r"no array 'where' for input\.box_field \(arrays found: ids, embeddings\)"):
        _load(tmp_path / "faces.npz", box_field="where")
    table = np.empty(N, dtype=[("id", "<i8"), ("embedding", "<f4", (DIM,))])
    table["id"], table["embedding"] = ids, vectors
    np.save(tmp_path / "faces.npy", table)
    with pytest.raises(InputError, match=r"no field 'path' for input\.image_field"):
        _load(tmp_path / "faces.npy", image_field="path")


@pytest.mark.parametrize(("columns", "setting", "message"), [
    ({"path": pa.array(range(N))}, {"image_field": "path"}, r"column 'path' is int64, expected one text path"),
    ({"where": pa.array([[1.0, 2.0, 3.0]] * N)}, {"box_field": "where"}, r"holds a list of 3 values, expected four"),
    ({"where": pa.array([["a", "b", "c", "d"]] * N)}, {"box_field": "where"}, r"is list<\w+: string>, expected four"),
    ({"where": pa.array(np.zeros(N))}, {"box_field": "where"}, r"is double, expected four numbers"),
])
def test_wrong_types_are_refused_with_the_fix(tmp_path: Path, columns: dict[str, pa.Array], setting: dict[str, str],
                                              message: str) -> None:
    path = _parquet(tmp_path / "faces.parquet", columns)
    with pytest.raises(InputError, match=message) as caught:
        _load(path, **setting)
    assert "\n" not in str(caught.value) and "--set input." in str(caught.value)


def test_wrong_numpy_shapes_are_refused(tmp_path: Path) -> None:
    ids, vectors = _embeddings()
    np.savez(tmp_path / "faces.npz", ids=ids, embeddings=vectors, where=np.zeros((N, 3)), path=np.arange(N),
             short=np.array(["a.jpg"] * 3))
    for setting, message in [({"box_field": "where"}, r"shape \(12, 3\), expected four numbers"),
                             ({"image_field": "path"}, r"dtype int64 and shape \(12,\), expected one text path"),
                             ({"image_field": "short"}, r"has 3 values for 12 faces")]:
        with pytest.raises(InputError, match=message):
            _load(tmp_path / "faces.npz", **setting)


def test_a_default_named_field_of_another_kind_is_left_unread(tmp_path: Path) -> None:
    # an `image` column of integer ids mapped before this release: it still maps, with a warning in the log
    path = _parquet(tmp_path / "faces.parquet", {"image": pa.array(range(N)), "box": pa.array(["x"] * N)})
    logged: list[str] = []
    database = load_database(InputConfig(path=str(path)), log=logged.append)
    assert database.keys is None
    assert len(logged) == 2 and all(line.startswith("warning: input.") for line in logged)
    assert "image_field left unread" in logged[0] and "box_field left unread" in logged[1]
    places = read_photo_places(path, image_field=IMAGE_FIELD, box_field=BOX_FIELD, n_rows=N)
    assert places.image is None and places.box is None and len(places.skipped) == 2


def test_image_root_is_checked_in_the_config() -> None:
    assert load_config(None, {"input.image_root": "/usr/src/app/upload=/mnt/immich"}).input.image_root
    assert load_config(None, {"input.image_root": "photos"}).input.image_root == "photos"
    for bad in ("=/mnt", "/data=", "a\x00b"):
        with pytest.raises(UsageError, match=r"input\.image_root"):
            load_config(None, {"input.image_root": bad})


def test_a_query_s_image_size_is_the_box_frame(tmp_path: Path) -> None:
    ids, vectors = _embeddings()
    db = tmp_path / "faces.db"
    with sqlite3.connect(db) as connection:
        connection.execute("CREATE TABLE faces (person, vec, path, x1, y1, x2, y2, w, h)")
        connection.executemany("INSERT INTO faces VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                               [(int(ids[row]), vectors[row].tobytes(), f"/p/{row}.jpg", 1, 2, 30, 40,
                                 0 if row == 2 else 1440, 1080) for row in range(N)])
    connection.close()
    query = ("SELECT person AS identity, vec AS embedding, path AS image, x1 AS box_x1, y1 AS box_y1, x2 AS box_x2, "
             "y2 AS box_y2, w AS image_width, h AS image_height FROM faces")
    database = _load(f"sqlite:///{db}", query=query)
    keys = database.keys
    assert keys is not None and keys.frame is not None and keys.frame.dtype == np.float32
    assert keys.frame[0].tolist() == [1440, 1080] and np.isnan(keys.frame[2, 0])  # 0: not known
    columns = face_keys(keys.take(np.array([2, 0])), database.ids[[2, 0]], 2)
    assert np.isnan(columns["image_width"][0]) and columns["image_height"].tolist() == [1080, 1080]
    plain = _load(f"sqlite:///{db}", query="SELECT person AS identity, vec AS embedding FROM faces").keys
    assert plain is not None and plain.frame is None


def test_immich_boxes_come_with_their_frame(postgres) -> None:  # type: ignore[no-untyped-def]
    import psycopg

    from tests.immich import Plants, build_immich

    ids, vectors = _embeddings(24)
    plant = build_immich(postgres, "frames", ids, vectors, [], plants=Plants(unassigned_share=0, deleted_share=0,
                                                                          conflicts=0))
    with psycopg.connect(plant.url, autocommit=True) as connection:
        connection.execute('UPDATE asset_face SET "imageWidth" = 0, "imageHeight" = 0 WHERE id = %s',
                           (plant.face_key[0],))
    keys = load_database(InputConfig(path=plant.url)).keys
    assert keys is not None and keys.frame is not None and keys.face is not None and keys.box is not None
    first = keys.face.tolist().index(plant.face_key[0])
    others = np.delete(keys.frame, first, axis=0)
    assert np.isnan(keys.frame[first]).all() and (others == [4000, 3000]).all()
    assert np.isfinite(keys.box).all()
