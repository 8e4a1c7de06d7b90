"""The same-photo check: of the faces of one photo filed under one identity, all but the best-fitting one are
misfiled; and its reason reaches suspects.csv, for a file whose rows carry a photo field too."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from job.analysis.samephoto import same_photo_conflicts
from job.cli import app
from job.config import InputConfig
from job.errors import InputError
from job.io.database import load_database
from job.io.demo import DemoSpec, make_demo


def test_the_worse_fitting_face_of_a_shared_photo_is_flagged() -> None:
    photo = np.array(["a", "a", "a", "b", "b", None, None, "c", "c"], dtype=object)
    ids = np.array([1, 1, 2, 3, 3, 4, 4, 5, 5])
    fit = np.array([0.9, 0.4, 0.1, np.nan, 0.7, 0.1, 0.2, 0.5, 0.5], dtype=np.float32)
    skip = np.zeros(9, dtype=bool)
    flagged = same_photo_conflicts(photo, ids, fit, skip)
    # photo a: faces 0 and 1 under id 1 (face 2 is another person); b: the unknown fit loses; None: no photo
    # known; c: a tie keeps the first in input order
    assert np.flatnonzero(flagged).tolist() == [1, 3, 8]
    skip[8] = True  # a re-enrolment of one photo is not a second person in it
    assert np.flatnonzero(same_photo_conflicts(photo, ids, fit, skip)).tolist() == [1, 3]


def test_three_faces_of_one_photo_leave_one() -> None:
    photo = np.array(["p"] * 3, dtype=object)
    flagged = same_photo_conflicts(photo, np.zeros(3, dtype=np.int64), np.array([0.2, 0.9, 0.5]), np.zeros(3, bool))
    assert flagged.tolist() == [True, False, True]


@pytest.fixture(scope="module")
def photo_parquet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    """A demo database as Parquet with a photo column: each face its own photo, except two genuine faces of
    identity 0 put in one photo (a conflict no embedding would show)."""
    records, truth = make_demo(DemoSpec(n_identities=60, faces_per_identity=5, seed=2))
    photos = [f"img-{row}" for row in range(len(records))]
    genuine = [row for row in np.flatnonzero(records["id"] == 0).tolist() if row not in set(truth.misfiled_rows)]
    photos[genuine[1]] = photos[genuine[0]]
    path = tmp_path_factory.mktemp("photos") / "faces.parquet"
    table = pa.table({"id": records["id"].astype(np.int64),
                      "embedding": pa.array(records["embedding"].astype(np.float32).tolist(),
                                            type=pa.list_(pa.float32())),
                      "photo": photos})
    pq.write_table(table, path)
    return path, genuine[:2]


def test_photo_field_runs_the_check_on_a_file(photo_parquet: tuple[Path, list[int]], tmp_path: Path) -> None:
    path, (first, second) = photo_parquet
    result = CliRunner().invoke(app, ["run", "--input", str(path), "--set", "input.photo_field=photo",
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    with (tmp_path / "out" / "suspects.csv").open(encoding="utf-8") as handle:
        rows = {int(row["row"]): row for row in csv.DictReader(handle)}
    flagged = [row for row in (first, second) if row in rows]
    assert len(flagged) == 1 and rows[flagged[0]]["reason"] == "same_photo"
    assert rows[flagged[0]]["photo_key"] == f"img-{first}" and rows[flagged[0]]["suggested_id"] == "-1"
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["metrics"]["same_photo"] == 1
    assert {row["reason"] for row in rows.values()} <= {"evidence", "same_photo", "both"}


def test_a_file_without_photos_says_evidence(smoke_run) -> None:  # type: ignore[no-untyped-def]
    with (smoke_run.out_dir / "suspects.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and {row["reason"] for row in rows} == {"evidence"}
    assert "same_photo" not in json.loads((smoke_run.out_dir / "run.json").read_text())["metrics"]


@pytest.mark.parametrize(("field", "message"), [("nope", "no column 'nope'"), ("id", "not text or integers")])
def test_a_wrong_photo_field_is_named(photo_parquet: tuple[Path, list[int]], field: str, message: str) -> None:
    path, _ = photo_parquet
    if field == "id":  # an integer column is a fine key; a float one is not
        bad = path.with_name("floats.parquet")
        table = pq.read_table(path)
        pq.write_table(table.append_column("score", pa.array(np.zeros(table.num_rows))), bad)
        path, field = bad, "score"
    with pytest.raises(InputError, match=message):
        load_database(InputConfig(path=str(path), photo_field=field))


def test_photo_field_of_an_npz_and_a_structured_npy(tmp_path: Path) -> None:
    records, _ = make_demo(DemoSpec(n_identities=20, faces_per_identity=5, seed=3))
    photos = np.array([f"p{row // 2}" for row in range(len(records))])
    np.savez(tmp_path / "faces.npz", ids=records["id"], embeddings=records["embedding"], photo=photos)
    npz = load_database(InputConfig(path=str(tmp_path / "faces.npz"), photo_field="photo"))
    assert npz.keys is not None and npz.keys.photo is not None and npz.keys.photo.tolist() == photos.tolist()
    table = np.empty(len(records), dtype=[("id", "<u2"), ("embedding", "<f2", (512,)), ("shot", "<i8")])
    table["id"], table["embedding"], table["shot"] = records["id"], records["embedding"], np.arange(len(records)) // 3
    np.save(tmp_path / "faces.npy", table)
    npy = load_database(InputConfig(path=str(tmp_path / "faces.npy"), photo_field="shot"))
    assert npy.keys is not None and npy.keys.photo is not None and npy.keys.photo[:4].tolist() == ["0", "0", "0", "1"]
    np.savez(tmp_path / "short.npz", ids=records["id"], embeddings=records["embedding"], photo=photos[:3])
    with pytest.raises(InputError, match="has 3 values for"):
        load_database(InputConfig(path=str(tmp_path / "short.npz"), photo_field="photo"))
