"""``faceatlas apply`` on each file format: the run's own corrections carried out on a copy, the copy run again
(the moved faces are no longer suspects, the planted misfiles filed under their true ids), and the input,
its other fields and its metadata untouched."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from job.cli import app
from job.config import load_config
from job.io.formats import file_sha256
from job.pipeline import run
from tests.conftest import truth_of

SMOKE = Path(__file__).parents[2] / "configs" / "smoke.toml"


def _as_format(small_db: Path, folder: Path, kind: str) -> Path:
    """The small planted database as ``kind``, with an extra per-face field and (npz, Parquet) more."""
    records = np.load(small_db, allow_pickle=False)
    n = len(records)
    photo = np.array([f"p{row // 2}" for row in range(n)])
    if kind == "npy":
        dtype = np.dtype([*records.dtype.descr, ("photo", "U8")])
        out = np.empty(n, dtype=dtype)
        for name in records.dtype.names:
            out[name] = records[name]
        out["photo"] = photo
        path = folder / "db.npy"
        np.save(path, out, allow_pickle=False)
    elif kind == "npz":
        path = folder / "db.npz"
        np.savez_compressed(path, ids=records["id"], embeddings=records["embedding"], photo=photo,
                            model=np.array(["arcface"]))
        import io
        import zipfile

        with zipfile.ZipFile(path, "a") as archive:
            for name in ("file", "allow_pickle"):  # named as numpy.savez's own arguments: kept all the same
                buffer = io.BytesIO()
                np.save(buffer, np.arange(3))
                archive.writestr(f"{name}.npy", buffer.getvalue())
            archive.writestr("README.txt", "exported by our attendance system")  # no array: copied as it is
    else:
        path = folder / "db.parquet"
        table = pa.table({"id": pa.array(records["id"].astype(np.int32)),
                          "embedding": pa.array(list(records["embedding"].astype(np.float32)),
                                                type=pa.list_(pa.float32())),
                          "photo": pa.array(photo.tolist())})
        pq.write_table(table.replace_schema_metadata({"recognizer": "arcface-r100"}), path)
    return path


def _run(path: Path, out: Path) -> Path:
    run(load_config(SMOKE, {"input.path": str(path), "out": str(out)}))
    return out


def _rows_of(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _ids(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return np.asarray(np.load(path, allow_pickle=False)["id"], dtype=np.int64)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            return np.asarray(archive["ids"], dtype=np.int64)
    return pq.read_table(path).column("id").to_numpy().astype(np.int64)


@pytest.mark.parametrize("kind", ["npy", pytest.param("npz", marks=pytest.mark.slow),
                                  pytest.param("parquet", marks=pytest.mark.slow)])
def test_apply_round_trips(small_db: Path, tmp_path: Path, kind: str) -> None:
    source = _as_format(small_db, tmp_path, kind)
    before = file_sha256(source)
    first = _run(source, tmp_path / "run1")
    proposed = _rows_of(first / "corrections.csv")
    moves = {int(r["face"]): int(r["to"]) for r in proposed if r["what"] == "move"}
    removed = sorted(int(r["face"]) for r in proposed if r["what"] == "remove")
    merges = [(int(r["from"]), int(r["to"])) for r in proposed if r["what"] == "merge"]
    assert moves, "the planted database has misfiled faces to move"
    fixed = tmp_path / f"fixed{source.suffix}"

    result = CliRunner().invoke(app, ["apply", str(first), "--out", str(fixed)])

    assert result.exit_code == 0, result.output
    assert file_sha256(source) == before  # the input is never written
    record = json.loads(Path(f"{fixed}.applied.json").read_text(encoding="utf-8"))
    assert record["counts"]["move"] == len(moves) and record["counts"]["remove"] == len(removed)
    assert record["counts"]["merge"] == len(merges)
    assert record["input"]["sha256"] == before and record["output"]["sha256"] == file_sha256(fixed)
    assert [c["line"] for c in record["changes"]] == sorted(c["line"] for c in record["changes"])
    old_ids, new_ids = _ids(source), _ids(fixed)
    keep = np.ones(len(old_ids), dtype=bool)
    keep[removed] = False
    new_row = np.cumsum(keep) - 1  # an input row's row in the copy
    assert len(new_ids) == int(keep.sum())
    into = dict(merges)
    for row, target in moves.items():
        assert new_ids[new_row[row]] == into.get(target, target)
    untouched = keep.copy()
    untouched[list(moves)] = False
    merged = np.isin(old_ids, list(into))
    assert np.array_equal(new_ids[new_row[untouched & ~merged]], old_ids[untouched & ~merged])
    _other_fields_kept(source, fixed, keep)

    truth = json.loads(truth_of(small_db).read_text(encoding="utf-8"))
    planted = {m["row"]: m["true_id"] for m in truth["misfiled"]}
    found = set(planted) & set(moves)
    assert len(found) >= 0.9 * len(planted)
    assert all(new_ids[new_row[row]] == into.get(planted[row], planted[row]) for row in found)  # fixed, not moved
    again = _run(fixed, tmp_path / "run2")
    suspects = {int(r["row"]) for r in _rows_of(again / "suspects.csv")}
    assert not suspects & {int(new_row[row]) for row in moves}  # the moved faces are no longer suspects


def _other_fields_kept(source: Path, fixed: Path, keep: np.ndarray) -> None:
    if source.suffix == ".npy":
        old, new = np.load(source, allow_pickle=False), np.load(fixed, allow_pickle=False)
        assert new.dtype == old.dtype
        assert np.array_equal(new["photo"], old["photo"][keep])
        assert np.array_equal(new["embedding"], old["embedding"][keep])
    elif source.suffix == ".npz":
        with np.load(source, allow_pickle=False) as old, np.load(fixed, allow_pickle=False) as new:
            assert new.files == old.files
            assert np.array_equal(new["photo"], old["photo"][keep])
            assert np.array_equal(new["embeddings"], old["embeddings"][keep])
            assert np.array_equal(new["model"], old["model"])  # not one per face: copied as it was
            assert np.array_equal(new["file"], old["file"])
            assert np.array_equal(new["allow_pickle"], old["allow_pickle"])
            assert new["ids"].dtype == old["ids"].dtype
        import zipfile

        with zipfile.ZipFile(fixed) as archive:
            assert archive.read("README.txt") == b"exported by our attendance system"
    else:
        old, new = pq.read_table(source), pq.read_table(fixed)
        assert new.schema.equals(old.schema, check_metadata=True)
        assert new.column("photo").to_pylist() == [p for p, k in zip(old.column("photo").to_pylist(), keep,
                                                                       strict=True) if k]


def test_apply_refuses_to_write_the_input_by_any_name(smoke_run, small_db: Path, tmp_path: Path) -> None:
    folder = smoke_run.out_dir
    before = file_sha256(small_db)
    link = tmp_path / "link.npy"
    link.symlink_to(small_db)
    hard = small_db.with_name("hard.npy")
    os.link(small_db, hard)
    spelled = small_db.parent / "." / small_db.name
    try:
        for out in (small_db, link, hard, spelled):
            result = CliRunner().invoke(app, ["apply", str(folder), "--out", str(out), "--force"])
            assert result.exit_code == 2, result.output
            assert "never writes in place" in result.output and len(result.output.strip().splitlines()) == 1
    finally:
        hard.unlink()
    assert file_sha256(small_db) == before
    assert not list(small_db.parent.glob("*.applied.json"))


def test_apply_refuses_an_existing_out_a_wrong_suffix_and_a_changed_input(smoke_run, small_db: Path,
                                                                         tmp_path: Path) -> None:
    folder = smoke_run.out_dir
    existing = tmp_path / "taken.npy"
    existing.write_bytes(b"someone's file")
    cases = {
        "exists, and apply replaces no file unasked": ["--out", str(existing)],
        "so the copy is too": ["--out", str(tmp_path / "fixed.parquet")],
        "no folder": ["--out", str(tmp_path / "nowhere" / "fixed.npy")],
        "inside the run folder": ["--out", str(folder / "fixed.npy")],
    }
    for expected, args in cases.items():
        result = CliRunner().invoke(app, ["apply", str(folder), *args])
        assert result.exit_code == 2 and expected in result.output, result.output
    assert existing.read_bytes() == b"someone's file"
    changed = tmp_path / "changed.npy"
    records = np.load(small_db, allow_pickle=False)
    records["id"][0] = records["id"][-1]
    np.save(changed, records, allow_pickle=False)
    result = CliRunner().invoke(app, ["apply", str(folder), "--input", str(changed), "--out",
                                      str(tmp_path / "fixed.npy")])
    assert result.exit_code == 3 and "the file changed since the run" in result.output
    assert not (tmp_path / "fixed.npy").exists() and not (tmp_path / "fixed.npy.applied.json").exists()


def test_apply_refuses_a_database_and_the_demo(tmp_path: Path) -> None:
    import sqlite3

    rng = np.random.default_rng(0)
    store = tmp_path / "faces.db"
    with sqlite3.connect(store) as db:
        db.execute("CREATE TABLE faces (id INTEGER, person INTEGER, vec BLOB)")
        db.executemany("INSERT INTO faces VALUES (?, ?, ?)",
                       [(i, i // 4, rng.standard_normal(64).astype("<f4").tobytes()) for i in range(160)])
    run(load_config(SMOKE, {"input.path": f"sqlite:///{store}", "out": str(tmp_path / "run"),
                            "input.query": "SELECT id AS face, person AS identity, vec AS embedding FROM faces"}))
    demo = run(load_config(SMOKE, {"out": str(tmp_path / "demo")}))
    for folder, expected in ((tmp_path / "run", "faceatlas never writes to a database"),
                             (demo.out_dir, "the built-in demo")):
        result = CliRunner().invoke(app, ["apply", str(folder), "--out", str(tmp_path / "x.npy")])
        assert result.exit_code == 2 and expected in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
