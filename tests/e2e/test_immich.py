"""faceatlas run on an Immich-shaped database in a real PostgreSQL with pgvector, built from Immich's own DDL
(v3.2's person groups and the <= 3.1 ``personId`` shape) and planted like a demo: the misfiled faces found as
from a file, every same-photo conflict, unassigned faces with their person suggested, deleted faces absent,
and the database unchanged."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from job.cli import app
from job.config import InputConfig
from job.io.database import load_database
from job.io.demo import DemoSpec, make_demo
from tests.immich import BAD_NAME, ImmichPlant, build_immich, fingerprint

SPEC = DemoSpec(n_identities=200, faces_per_identity=5, seed=4)
SECRET = "pw-not-shown-7"


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module", params=["3.2", "3.1"])
def immich(request: pytest.FixtureRequest, postgres, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The planted database, a run of it (with a password in the address) and a run of the same faces from .npy."""
    records, truth = make_demo(SPEC)
    ids, embeddings = records["id"].astype(np.int64), records["embedding"]
    version = request.param
    plant = build_immich(postgres, f"immich_{version.replace('.', '_')}", ids, embeddings,
                         list(truth.misfiled_rows), version=version)
    before = fingerprint(plant.url)
    out = tmp_path_factory.mktemp(f"immich_{version}")
    url = plant.url.replace("postgres:@", f"postgres:{SECRET}@", 1)
    result = CliRunner().invoke(app, ["run", "--input", url, "--out", str(out / "run"), "--seed", "0"])
    assert result.exit_code == 0, result.output
    after = fingerprint(plant.url)
    # the same faces, as a file: those Immich maps under a person (neither deleted nor unassigned)
    kept = sorted(set(range(len(ids))) - set(plant.deleted_rows) - set(plant.unassigned_rows))
    np.save(out / "same.npy", records[kept])
    from_file = CliRunner().invoke(app, ["run", "--input", str(out / "same.npy"), "--out", str(out / "file"),
                                         "--seed", "0"])
    assert from_file.exit_code == 0, from_file.output
    return plant, out, before, after, kept, truth, result.output


def _face_rows(plant: ImmichPlant) -> dict[str, int]:
    return {key: row for row, key in enumerate(plant.face_key)}


def test_database_unchanged_and_password_never_written(immich) -> None:  # type: ignore[no-untyped-def]
    _, out, before, after, *_, output = immich
    assert after == before  # row counts of every table read, checksums of the embeddings and the face rows
    for name in ("run.json", "report.html", "suspects.csv", "unassigned.csv"):
        assert SECRET not in (out / "run" / name).read_text(encoding="utf-8")
    assert SECRET not in output
    record = json.loads((out / "run" / "run.json").read_text())
    assert record["input"]["store"]["kind"] == "immich" and record["input"]["store"]["owner"] == "all"
    assert record["input"]["path"].startswith("postgresql:///immich_") and "@" not in record["input"]["path"]


def test_deleted_faces_are_absent(immich) -> None:  # type: ignore[no-untyped-def]
    plant, out, *_ = immich
    projection = pq.read_table(out / "run" / "projection.parquet").to_pydict()
    listed = set(projection["face_key"]) | {row["face_key"] for row in _rows(out / "run" / "unassigned.csv")}
    deleted = {plant.face_key[row] for row in plant.deleted_rows}
    assert deleted and not deleted & listed
    record = json.loads((out / "run" / "run.json").read_text())
    assert record["input"]["store"]["left_out_deleted"] == len(plant.deleted_rows)
    assert len(listed) == len(plant.face_key) - len(plant.deleted_rows)


def test_every_same_photo_conflict_is_found(immich) -> None:  # type: ignore[no-untyped-def]
    plant, out, *_ = immich
    suspects = {row["face_key"]: row for row in _rows(out / "run" / "suspects.csv")}
    assert plant.conflicts
    for misfiled, genuine in plant.conflicts:
        flagged = suspects[plant.face_key[misfiled]]
        assert flagged["reason"] in {"same_photo", "both"}
        assert suspects.get(plant.face_key[genuine], {}).get("reason") in (None, "evidence")
    record = json.loads((out / "run" / "run.json").read_text())
    assert record["metrics"]["same_photo"] == len(plant.conflicts)


def test_misfiled_faces_found_as_from_a_file(immich) -> None:  # type: ignore[no-untyped-def]
    plant, out, _, _, kept, truth, _ = immich
    by_evidence = {row["face_key"] for row in _rows(out / "run" / "suspects.csv") if row["reason"] != "same_photo"}
    from_file = {plant.face_key[kept[int(row["row"])]] for row in _rows(out / "file" / "suspects.csv")}
    assert by_evidence == from_file
    planted = {plant.face_key[row] for row in truth.misfiled_rows}
    assert len(planted & by_evidence) >= 0.8 * len(planted)


def test_unassigned_faces_get_their_person_suggested(immich) -> None:  # type: ignore[no-untyped-def]
    plant, out, *_ = immich
    records, _ = make_demo(SPEC)
    rows = _rows(out / "run" / "unassigned.csv")
    at = _face_rows(plant)
    assert {row["face_key"] for row in rows} == {plant.face_key[r] for r in plant.unassigned_rows}
    right = [row["suggested_key"] == plant.person_key[int(records["id"][at[row["face_key"]]])] for row in rows]
    assert np.mean(right) >= 0.9 and {row["verdict"] for row in rows} == {"unassigned"}
    assert all(np.isfinite(float(row["x"])) and np.isfinite(float(row["y"])) for row in rows)


def test_keys_names_and_hidden_persons_in_the_outputs(immich) -> None:  # type: ignore[no-untyped-def]
    plant, out, *_ = immich
    records, _ = make_demo(SPEC)
    projection = pq.read_table(out / "run" / "projection.parquet").to_pydict()
    at = _face_rows(plant)
    for face, person, hidden in zip(projection["face_key"], projection["identity_key"], projection["hidden"],
                                    strict=True):
        assert person == plant.person_key[int(records["id"][at[face]])]
        assert hidden == (int(records["id"][at[face]]) in plant.hidden)
    assert set(projection["photo_key"]) and None not in projection["photo_key"]
    assert all(path.startswith("/usr/src/app/upload/") for path in projection["image"])
    page = (out / "run" / "report.html").read_text(encoding="utf-8")
    assert "\x1b" not in page and BAD_NAME not in page  # the control characters of a person's name are escaped
    lookalikes = _rows(out / "run" / "lookalikes.csv")
    assert lookalikes and all(row["key_a"] and row["key_b"] for row in lookalikes)


def test_owner_limits_the_run_to_one_user(immich) -> None:  # type: ignore[no-untyped-def]
    plant, *_ = immich
    database = load_database(InputConfig(path=plant.url, owner=plant.owner_b))
    assert database.store is not None and database.store["owner"] == plant.owner_b
    records, _ = make_demo(SPEC)
    identities = np.unique(records["id"])
    owned = {plant.person_key[int(i)] for k, i in enumerate(identities) if k % 10 == 9}
    assert database.keys is not None and database.keys.identity is not None
    assert set(database.keys.identity.values()) <= owned and len(database.identities) >= 0.8 * len(owned)


def test_transform_and_nearest_answer_with_keys(immich, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    plant, out, *_ = immich
    placed = tmp_path / "placed.parquet"
    result = CliRunner().invoke(app, ["transform", str(out / "run"), plant.url, "--out", str(placed)])
    assert result.exit_code == 0, result.output
    table = pq.read_table(placed).to_pydict()
    assert "id" not in table  # a database's own identity codes mean nothing outside it: its keys are given
    assert len(table["face_key"]) == len(plant.face_key) - len(plant.deleted_rows)
    filed = [(near, own) for near, own in zip(table["nearest_key"], table["identity_key"], strict=True) if own]
    assert np.mean([near == own for near, own in filed]) >= 0.9
    loose = {plant.face_key[row] for row in plant.unassigned_rows}
    assert {face for face, own in zip(table["face_key"], table["identity_key"], strict=True) if own is None} == loose
    projection = pq.read_table(out / "run" / "projection.parquet").to_pydict()
    x, y = projection["x"][0], projection["y"][0]
    answer = CliRunner().invoke(app, ["nearest", str(out / "run"), "--x", str(x), "--y", str(y), "-k", "3", "--json"])
    assert answer.exit_code == 0, answer.output
    keys = set(plant.person_key.values())
    assert all(item["key"] in keys for item in json.loads(answer.output))


def test_corrections_name_immichs_own_keys_and_apply_refuses(immich) -> None:  # type: ignore[no-untyped-def]
    plant, out, *_ = immich
    rows = _rows(out / "run" / "corrections.csv")
    assert list(rows[0]) == ["what", "face", "from", "to", "score", "reason", "names", "action", "row", "from_id",
                             "to_id"]
    faces, people = set(plant.face_key), set(plant.person_key.values())
    moved = [row for row in rows if row["what"] == "move"]
    assert moved and all(row["face"] in faces and row["from"] in people and row["to"] in people for row in moved)
    loose = {plant.face_key[r] for r in plant.unassigned_rows}
    assigned = [row for row in rows if row["action"] == "assign"]
    assert {row["face"] for row in assigned} == loose  # each unassigned face: an assign or a review of one
    assert all(row["from"] == "" and row["to"] in people for row in assigned)
    sure = [row for row in assigned if row["what"] == "assign"]
    assert len(sure) >= 0.8 * len(loose)  # most fit their person as well as the database's own faces fit theirs
    result = CliRunner().invoke(app, ["apply", str(out / "run"), "--out", str(out / "fixed.npy")])
    assert result.exit_code == 2 and "faceatlas never writes to a database" in result.output
    assert not (out / "fixed.npy").exists()


def test_face_crops_come_from_immichs_originals_scaled_from_its_frame(immich, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Immich's boxes are in pixels of the image its detector saw (imageWidth x imageHeight, 4000 x 3000 here);
    the originals, mounted elsewhere, are a quarter of that: each crop is cut where the face is in the original."""
    import shutil

    from PIL import Image, ImageDraw

    _, out, *_ = immich
    run = tmp_path / "run"
    shutil.copytree(out / "run", run)
    projection = pq.read_table(run / "projection.parquet").to_pydict()
    library = tmp_path / "photos" / "library"
    library.mkdir(parents=True)
    drawn = {}
    for k, (image, x1, y1, x2, y2) in enumerate(zip(projection["image"], projection["box_x1"], projection["box_y1"],
                                                    projection["box_x2"], projection["box_y2"], strict=True)):
        photo = library / Path(image).name
        if photo.exists() or k % 3:  # a third of the photos are here; the others are placeholders
            continue
        original = Image.new("RGB", (1000, 750), (120, 120, 120))
        ImageDraw.Draw(original).ellipse([x1 / 4, y1 / 4, x2 / 4, y2 / 4], fill=(200, 30, 160))
        original.save(photo, quality=92)
        drawn[Path(image).name] = True
    result = CliRunner().invoke(app, ["report", str(run), "--thumbnails", "--image-root",
                                      f"/usr/src/app/upload={tmp_path / 'photos'}"])
    assert result.exit_code == 0, result.output
    thumbs = json.loads((run / "run.json").read_text())["report"]["thumbnails"]
    with_photo = sum(Path(image).name in drawn for image in projection["image"])
    assert thumbs["made"] == with_photo and thumbs["missing"] == len(projection["image"]) - with_photo
    assert CliRunner().invoke(app, ["verify", str(run)]).exit_code == 0
    from tests.report.test_page_faces import _crops

    crops = _crops((run / "report.html").read_text(encoding="utf-8"))
    assert len(crops) == with_photo
    for crop in list(crops.values())[:20]:
        rgb = crop.convert("RGB")
        centre = np.asarray(rgb.getpixel((rgb.size[0] // 2, rgb.size[1] // 2)), dtype=float)
        assert np.abs(centre - (200, 30, 160)).max() < 40  # the face, where the frame puts it in the original
