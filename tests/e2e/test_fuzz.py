"""Property-based fuzzing of every reader: random bytes, mutated valid files and random structured dtypes for
the database loader; random names files and configs; run records with fields of random JSON; re-hashed mutated
map models. Each either loads or raises one of faceatlas's own one-line errors, and nothing is ever unpickled.

FUZZ_EXAMPLES=5000 pytest tests/e2e/test_fuzz.py fuzzes longer than the default 120 examples per test.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from job.config import InputConfig
from job.errors import FaceatlasError
from job.io.database import FaceDatabase, load_database

UNPICKLED: list[str] = []
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "120")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
MAGICS = [b"", b"\x93NUMPY", b"\x93NUMPY\x01\x00", b"\x93NUMPY\x02\x00", b"PK\x03\x04", b"PAR1"]
SCALARS = ["<i1", "<u2", ">i4", "<i8", "<u8", "?", "<f2", "<f4", ">f8", "<c8", "<U3", "S2", "<M8[s]", "O"]


def _unpickled() -> None:
    UNPICKLED.append("a pickle was loaded")


class Canary:
    """Unpickling one of these records it: the loader must never do so."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return _unpickled, ()


def _load(content: bytes, name: str = "db.bin", **fields: str) -> FaceDatabase | None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(content)
        try:
            return load_database(InputConfig(path=str(path), **fields))
        except FaceatlasError as exc:
            text = str(exc)
            assert "\n" not in text and str(path) in text, text  # one line that names the file
            return None


def _valid_files() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    records = np.zeros(12, dtype=[("id", "<u2"), ("embedding", "<f2", (8,))])
    records["id"] = np.arange(12) // 3
    records["embedding"] = rng.standard_normal((12, 8))
    npy, npz, parquet = io.BytesIO(), io.BytesIO(), io.BytesIO()
    np.save(npy, records)
    np.savez(npz, ids=records["id"], embeddings=records["embedding"])
    column = pa.FixedSizeListArray.from_arrays(pa.array(records["embedding"].astype(np.float32).ravel()), 8)
    pq.write_table(pa.table({"id": records["id"], "embedding": column}), parquet)
    return {"npy": npy.getvalue(), "npz": npz.getvalue(), "parquet": parquet.getvalue()}


VALID = _valid_files()


@FUZZ
@given(magic=st.sampled_from(MAGICS), tail=st.binary(max_size=3000))
def test_random_bytes_never_crash_the_loader(magic: bytes, tail: bytes) -> None:
    _load(magic + tail)


@FUZZ
@given(kind=st.sampled_from(sorted(VALID)), data=st.data())
def test_mutated_valid_files_never_crash_the_loader(kind: str, data: st.DataObject) -> None:
    content = bytearray(VALID[kind])
    for _ in range(data.draw(st.integers(1, 6))):
        position = data.draw(st.integers(0, len(content) - 1))
        content[position] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        content = content[: data.draw(st.integers(0, len(content)))]
    _load(bytes(content))


@st.composite
def structured(draw: st.DrawFn) -> np.ndarray:
    names = draw(st.lists(st.sampled_from(["id", "embedding", "x"]), min_size=1, max_size=3, unique=True))
    fields = []
    for name in names:
        scalar = draw(st.sampled_from(SCALARS))
        shape = draw(st.sampled_from([(), (1,), (4,), (2, 3)]))
        fields.append((name, scalar, shape) if shape else (name, scalar))
    n_rows = draw(st.integers(0, 6))
    array = np.zeros(n_rows, dtype=fields)
    raw = draw(st.binary(min_size=array.nbytes, max_size=array.nbytes))
    for name in names:
        if array.dtype[name].hasobject:
            array[name] = Canary()
    plain = [name for name in names if not array.dtype[name].hasobject]
    if plain and n_rows:  # random bit patterns in every plain field: NaN, inf, huge ids, odd dates
        filler = np.frombuffer(raw.ljust(array.nbytes, b"\0")[: array.nbytes], dtype=np.uint8)
        view = np.zeros(n_rows, dtype=[(n, array.dtype[n]) for n in plain])
        view.view(np.uint8)[:] = filler[: view.nbytes]
        for name in plain:
            array[name] = view[name]
    return array


@FUZZ
@given(array=structured())
def test_random_structured_dtypes_load_or_fail_cleanly_and_never_unpickle(array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)  # the file may hold pickles; the loader must refuse them
    database = _load(buffer.getvalue())
    assert UNPICKLED == []
    if database is not None:  # whatever loaded is a clean database
        assert database.unit.dtype in (np.float16, np.float32) and np.isfinite(database.unit).all()
        assert database.ids.dtype == np.int64 and len(database.ids) == len(database.unit) > 0


@FUZZ
@given(ids=structured(), embeddings=structured())
def test_random_npz_members_never_crash_or_unpickle(ids: np.ndarray, embeddings: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=True, ids=ids[ids.dtype.names[0]], embeddings=embeddings[embeddings.dtype.names[0]])
    _load(buffer.getvalue())
    assert UNPICKLED == []


PARQUET_TYPES = [pa.int64(), pa.uint64(), pa.float32(), pa.string(), pa.bool_(), pa.list_(pa.float32()),
                 pa.list_(pa.string()), pa.list_(pa.float16()), pa.large_list(pa.float64())]


@FUZZ
@given(data=st.data())
def test_random_parquet_columns_never_crash_the_loader(data: st.DataObject) -> None:
    n_rows = data.draw(st.integers(0, 5))
    columns = {}
    for name in data.draw(st.lists(st.sampled_from(["id", "embedding", "x"]), min_size=1, max_size=3, unique=True)):
        kind = data.draw(st.sampled_from(PARQUET_TYPES))
        columns[name] = pa.array([_value(data, kind) for _ in range(n_rows)], type=kind)
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer)
    _load(buffer.getvalue())


def _value(data: st.DataObject, kind: pa.DataType) -> Any:
    if data.draw(st.integers(0, 9)) == 0:
        return None
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return [_value(data, kind.value_type) for _ in range(data.draw(st.integers(0, 3)))]
    if pa.types.is_string(kind):
        return data.draw(st.text(max_size=3))
    if pa.types.is_boolean(kind):
        return data.draw(st.booleans())
    if pa.types.is_unsigned_integer(kind):
        return data.draw(st.integers(0, 2**64 - 1))
    if pa.types.is_integer(kind):
        return data.draw(st.integers(-(2**63), 2**63 - 1))
    if kind == pa.float16():
        return np.float16(data.draw(st.floats(width=16)))
    return data.draw(st.floats(width=32))


@FUZZ
@given(shape=st.lists(st.integers(-(2**70), 2**70) | st.integers(-3, 3), max_size=3).map(tuple),
       descr=st.sampled_from(["<f4", "|u1", "<i8", [("id", "<i8"), ("embedding", "<f2", (4,))]]),
       version=st.sampled_from([1, 2, 3]), tail=st.binary(max_size=64))
def test_forged_npy_headers_never_crash_or_allocate(shape: tuple[int, ...], descr: Any, version: int,
                                                    tail: bytes) -> None:
    text = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    size = len(text).to_bytes(2 if version == 1 else 4, "little")
    _load(b"\x93NUMPY" + bytes([version, 0]) + size + text + tail)


# the other readers (issue 10): names files, configs, run records and map models

JSON = st.recursive(st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                    max_leaves=12)
NAME_LINES = st.lists(st.one_of(
    JSON.map(json.dumps),
    st.fixed_dictionaries({"id": st.integers(-(2**65), 2**65) | st.booleans() | st.text(max_size=3),
                           "name": st.text(max_size=6) | JSON}).map(json.dumps),
    st.text(max_size=20)), max_size=8).map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass"))


def _one_line_naming(exc: FaceatlasError, path: Path) -> None:
    text = str(exc)
    assert "\n" not in text and str(path) in text, text


@FUZZ
@given(content=NAME_LINES | st.binary(max_size=300))
def test_random_names_files_load_or_fail_cleanly(content: bytes) -> None:
    from job.io.database import read_names

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "names.jsonl"
        path.write_bytes(content)
        try:
            names = read_names(path, np.arange(4, dtype=np.int64))
        except FaceatlasError as exc:
            _one_line_naming(exc, path)
            return
    assert all(isinstance(k, int) and isinstance(v, str) and v.encode("utf-8") is not None for k, v in names.items())


DEFAULT_TOML = (Path(__file__).parents[2] / "configs" / "default.toml").read_bytes()


@FUZZ
@given(data=st.data())
def test_random_and_mutated_configs_load_or_fail_cleanly(data: st.DataObject) -> None:
    from job.config import Config, load_config

    content = bytearray(data.draw(st.sampled_from([DEFAULT_TOML, b""])) + data.draw(st.binary(max_size=40)))
    for _ in range(data.draw(st.integers(0, 5))):
        if content:
            content[data.draw(st.integers(0, len(content) - 1))] = data.draw(st.integers(0, 255))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "c.toml"
        path.write_bytes(bytes(content))
        try:
            assert isinstance(load_config(path), Config)
        except FaceatlasError as exc:
            _one_line_naming(exc, path)


@pytest.fixture(scope="module")
def run_folder(smoke_run: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("fuzzrun") / "run"
    shutil.copytree(smoke_run.out_dir, copy)
    return copy


def _ask(folder: Path) -> None:
    """Everything a command reads back from a run folder: the record, every file's hash, the model, a query."""
    from job.maps.placement import nearest
    from job.queries import map_point, open_map

    opened = open_map(folder)
    centre = opened.model.coords.mean(axis=0)
    with contextlib.suppress(FaceatlasError):  # off the map: a clean refusal
        nearest(opened.model, map_point(opened, float(centre[0]), float(centre[1]),
                                        float(centre[2]) if len(centre) == 3 else None), 3)


@FUZZ
@given(data=st.data())
def test_run_records_with_random_fields_open_or_fail_cleanly(run_folder: Path, data: st.DataObject) -> None:
    record = json.loads((run_folder / "run.json").read_text())
    for _ in range(data.draw(st.integers(1, 3))):
        section = record
        path = data.draw(st.sampled_from([("input",), ("input", "dim"), ("input", "n_faces"), ("file_sha256",),
                                          ("config",), ("config", "input"), ("config", "input", "id_field"),
                                          ("version",), ("files",), ("file_sha256", "map_model.npz")]))
        for key in path[:-1]:
            if not isinstance(section.get(key), dict):
                section[key] = {}
            section = section[key]
        section[path[-1]] = data.draw(JSON)
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / "run"
        shutil.copytree(run_folder, copy)
        (copy / "run.json").write_text(json.dumps(record))
        try:
            _ask(copy)
        except FaceatlasError as exc:
            _one_line_naming(exc, copy)


@FUZZ
@given(data=st.data())
def test_rehashed_mutated_models_open_or_fail_cleanly(run_folder: Path, data: st.DataObject) -> None:
    from job.io.formats import file_sha256

    content = bytearray((run_folder / "map_model.npz").read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        content[data.draw(st.integers(0, len(content) - 1))] = data.draw(st.integers(0, 255))
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / "run"
        shutil.copytree(run_folder, copy)
        (copy / "map_model.npz").write_bytes(bytes(content))
        record = json.loads((copy / "run.json").read_text())
        record["file_sha256"]["map_model.npz"] = file_sha256(copy / "map_model.npz")
        (copy / "run.json").write_text(json.dumps(record))
        try:
            _ask(copy)
        except FaceatlasError as exc:
            _one_line_naming(exc, copy)
    assert UNPICKLED == []
