from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from job.config import InputConfig
from job.errors import InputError
from job.io.database import load_database
from job.io.demo import DemoSpec, make_demo

RECORDS, _ = make_demo(DemoSpec(n_identities=30, faces_per_identity=4, dim=64, seed=3))
IDS = RECORDS["id"].astype(np.int64)
VECTORS = RECORDS["embedding"].astype(np.float32)


def _load(path: Path, **fields: str) -> object:
    return load_database(InputConfig(path=str(path), **fields))


def _write_parquet(path: Path, embeddings: np.ndarray, fixed: bool, names: tuple[str, str] = ("id", "embedding")):
    flat = pa.array(embeddings.reshape(-1))
    column = (pa.FixedSizeListArray.from_arrays(flat, embeddings.shape[1]) if fixed
              else pa.ListArray.from_arrays(pa.array(np.arange(0, embeddings.size + 1, embeddings.shape[1],
                                                               dtype=np.int32)), flat))
    pq.write_table(pa.table({names[0]: IDS, names[1]: column}), path)


def _writers() -> dict[str, object]:
    return {
        "npy-float16": lambda p: np.save(p, RECORDS),
        "npz-float32": lambda p: np.savez(p, ids=IDS, embeddings=VECTORS),
        "npz-float64-not-unit": lambda p: np.savez(p, ids=IDS.astype(np.int32),
                                                   embeddings=VECTORS.astype(np.float64) * 7),
        "parquet-list": lambda p: _write_parquet(p, VECTORS, fixed=False),
        "parquet-fixed-size-list": lambda p: _write_parquet(p, VECTORS, fixed=True),
        "parquet-float16": lambda p: _write_parquet(p, RECORDS["embedding"], fixed=True),
    }


@pytest.mark.parametrize("kind", list(_writers()))
def test_each_input_format_loads_the_same_faces(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "db.bin"  # formats are recognised by content, not by name
    _writers()[kind](path)
    if not path.exists():  # numpy appends .npy/.npz
        path = next(tmp_path.iterdir())
    database = load_database(InputConfig(path=str(path)))
    assert database.ids.dtype == np.int64 and np.array_equal(database.ids, IDS)
    # one unit-length copy: float16 stays float16, everything else becomes float32
    assert database.unit.dtype == (np.float16 if "float16" in kind else np.float32)
    assert database.unit.shape == VECTORS.shape
    unit = database.unit.astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=2e-3)
    np.testing.assert_allclose(unit, VECTORS / np.linalg.norm(VECTORS, axis=1, keepdims=True), atol=2e-3)
    assert len(database.sha256) == 64
    assert database.n_faces == len(IDS) and database.dim == 64


def test_field_names_are_configurable(tmp_path: Path) -> None:
    records = np.empty(len(IDS), dtype=[("person", "<i4"), ("vec", "<f4", (64,))])
    records["person"], records["vec"] = IDS, VECTORS
    np.save(tmp_path / "a.npy", records)
    assert _load(tmp_path / "a.npy", id_field="person", embedding_field="vec").n_faces == len(IDS)
    _write_parquet(tmp_path / "a.parquet", VECTORS, fixed=False, names=("person", "vec"))
    assert _load(tmp_path / "a.parquet", id_field="person", embedding_field="vec").n_faces == len(IDS)


def test_names_file_gives_labels(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", RECORDS)
    names = tmp_path / "actor.jsonl"
    names.write_text("\n".join(json.dumps({"name": f"Person {i}"}) for i in range(30)) + "\n", encoding="utf-8")
    database = load_database(InputConfig(path=str(tmp_path / "a.npy"), names=str(names)))
    assert database.label(3) == "id 3 Person 3"


def test_pickled_object_arrays_are_refused_without_unpickling(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Boom:
        def __reduce__(self):
            return (Path.touch, (marker,))

    np.save(tmp_path / "evil.npy", np.array([Boom()], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match=re.escape("evil.npy")):
        _load(tmp_path / "evil.npy")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b"hello world"), "not a .npy, .npz or Parquet"),
        (lambda p: np.save(p, VECTORS), "no field 'id'"),
        (lambda p: np.savez(p, a=IDS), "expected arrays 'ids' and 'embeddings'"),
        (lambda p: np.savez(p, ids=IDS.astype(float), embeddings=VECTORS), "expected integers"),
        (lambda p: np.savez(p, ids=IDS, embeddings=(VECTORS * 100).astype(np.int8)), "expected float"),
        (lambda p: np.savez(p, ids=IDS, embeddings=VECTORS[:, 0]), "expected \\(n_faces, dim\\)"),
        (lambda p: np.savez(p, ids=IDS[:-1], embeddings=VECTORS), "give one id per face"),
        (lambda p: np.savez(p, ids=IDS, embeddings=np.where(np.arange(len(IDS))[:, None] == 4, np.nan, VECTORS)),
         "rows 4"),
        (lambda p: np.savez(p, ids=IDS, embeddings=np.where(np.arange(len(IDS))[:, None] == 2, 0, VECTORS)),
         "all zeros \\(rows 2\\)"),
    ],
)
def test_bad_inputs_get_one_line_errors_naming_the_file(tmp_path: Path, make, message: str) -> None:
    path = tmp_path / "bad.npz"
    make(path)
    path = next(tmp_path.iterdir())
    with pytest.raises(InputError, match=message) as info:
        _load(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot open"):
        _load(tmp_path / "nope.npy")
    with pytest.raises(InputError, match="is a directory"):
        _load(tmp_path)


def test_names_follow_sorted_ids_not_line_numbers(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", ids=IDS + 100, embeddings=VECTORS)
    names = tmp_path / "actor.jsonl"
    lines = [json.dumps({"name": f"Person {i}"}) for i in range(30)]
    names.write_text("\ufeff" + "\n\n".join(lines) + "\n", encoding="utf-8")  # BOM and blank lines
    database = load_database(InputConfig(path=str(tmp_path / "a.npz"), names=str(names)))
    assert database.label(100) == "id 100 Person 0"
    assert database.label(129) == "id 129 Person 29"
    lines[5] = json.dumps({"id": 999, "name": "Explicit"})  # by id on one line, by position on the others
    names.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match='line 6 has an "id" key, unlike line 1'):
        load_database(InputConfig(path=str(tmp_path / "a.npz"), names=str(names)))


def test_names_apply_to_the_demo_database(tmp_path: Path) -> None:
    names = tmp_path / "n.jsonl"
    names.write_text(json.dumps({"name": "Zero"}) + "\n" + "".join(json.dumps({"name": f"n{i}"}) + "\n"
                                                                  for i in range(1, 1000)), encoding="utf-8")
    assert load_database(InputConfig(names=str(names))).label(0) == "id 0 Zero"
    names.write_text(json.dumps({"name": "Zero"}) + "\n", encoding="utf-8")  # by position, but 1 line for 1,000 ids
    with pytest.raises(InputError, match="1 lines for the 1,000 identities"):
        load_database(InputConfig(names=str(names)))


def test_uint64_ids_beyond_int64_are_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", ids=np.full(len(IDS), 2**63 + 5, dtype=np.uint64), embeddings=VECTORS)
    with pytest.raises(InputError, match="do not fit int64"):
        _load(tmp_path / "a.npz")


def test_chunked_parquet_and_null_ids(tmp_path: Path) -> None:
    column = pa.FixedSizeListArray.from_arrays(pa.array(VECTORS.reshape(-1)), 64)
    table = pa.table({"id": IDS, "embedding": column})
    pq.write_table(table, tmp_path / "chunked.parquet", row_group_size=7)
    assert np.array_equal(_load(tmp_path / "chunked.parquet").ids, IDS)
    pq.write_table(table.set_column(0, "id", pa.array([None, *IDS[1:].tolist()], pa.int64())), tmp_path / "n.parquet")
    with pytest.raises(InputError, match="1 empty ids"):
        _load(tmp_path / "n.parquet")


def test_near_duplicates_do_not_hide_exact_ones() -> None:
    from job.io.database import count_duplicates

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((6, 512)).astype(np.float32)
    vectors[2] = vectors[0]
    vectors[1] = vectors[0]
    vectors[1, 7] += 1.0  # a near duplicate of row 0 between rows 0 and 2
    keys = np.array([5, 5, 5, 1, 2, 3], dtype=np.uint64)  # rows 0-2 share a hash: compared in full
    counts = count_duplicates(keys, np.array([0, 0, 1, 2, 3, 4]), lambda rows: vectors[rows])
    assert counts == {"faces": 1, "other_id": 1}


@pytest.mark.filterwarnings("ignore:Stored array in format 3.0")
def test_npy_format_3_with_non_latin1_field_names_loads(tmp_path: Path) -> None:
    records = np.zeros(len(IDS), dtype=[("ид", "<i8"), ("вектор", "<f4", (64,))])
    records["ид"], records["вектор"] = IDS, VECTORS
    np.save(tmp_path / "v3.npy", records)
    assert (tmp_path / "v3.npy").read_bytes()[6] == 3
    database = load_database(InputConfig(path=str(tmp_path / "v3.npy"), id_field="ид", embedding_field="вектор"))
    assert np.array_equal(database.ids, IDS)
