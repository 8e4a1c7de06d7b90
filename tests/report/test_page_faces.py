"""Faces in the atlas page (``--thumbnails``): crops cut from real JPEG and PNG files (EXIF-rotated ones among
them) through a whole run, a missing photo and a non-image file as placeholders counted in run.json, off by
default, the most useful faces first under a budget, ``report --thumbnails`` on an earlier run, and the page
in a real Chromium: the clicked face's crop, the suspects beside their identities' faces, no request."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from job.cli import app
from job.config import load_config
from job.io.demo import DemoSpec, make_demo
from job.pipeline import RunResult, run
from tests.report.test_browser import Page, browser  # noqa: F401 - the Chromium fixture
from tests.report.test_report import page_meta

SMOKE = Path(__file__).parents[2] / "configs" / "smoke.toml"
MISSING_ROW, NOT_AN_IMAGE_ROW = 7, 11


def colour_of(identity: int) -> tuple[int, int, int]:
    """Each true identity's own face colour (far from the photos' grey backgrounds)."""
    rng = np.random.default_rng(1000 + identity)
    return tuple(int(v) for v in rng.integers(0, 255, 3))  # type: ignore[return-value]


@pytest.fixture(scope="module")
def true_ids() -> np.ndarray:
    """Each face's true identity in the database below (its misfiled faces show the person they are)."""
    records, truth = make_demo(DemoSpec(n_identities=200, faces_per_identity=5, seed=1))
    return truth.true_ids(records["id"])


@pytest.fixture(scope="module")
def photo_db(tmp_path_factory: pytest.TempPathFactory, true_ids: np.ndarray) -> Path:
    """A Parquet database of 200 identities whose faces are discs of their true identity's colour in photos:
    JPEGs (every fifth stored rotated with EXIF orientation 6), PNGs, one photo missing, one not an image."""
    folder = tmp_path_factory.mktemp("photos")
    records, _ = make_demo(DemoSpec(n_identities=200, faces_per_identity=5, seed=1))
    rng = np.random.default_rng(0)
    images, boxes = [], []
    for row, identity in enumerate(true_ids.tolist()):
        x, y = int(rng.integers(10, 160)), int(rng.integers(10, 60))
        box = [x, y, x + 90, y + 90]
        photo = Image.new("RGB", (300, 200), (128, 128, 128))
        ImageDraw.Draw(photo).ellipse(box, fill=colour_of(identity))
        name = f"p{row}.png" if row % 7 == 3 else f"p{row}.jpg"
        if row % 5 == 0 and name.endswith(".jpg"):  # stored rotated: displayed upright after orientation 6
            exif = Image.Exif()
            exif[0x0112] = 6
            photo.transpose(Image.Transpose.ROTATE_90).save(folder / name, quality=90, exif=exif)
        else:
            photo.save(folder / name)
        images.append(name)
        boxes.append(box)
    images[MISSING_ROW] = "gone.jpg"
    (folder / "notes.jpg").write_text("not a photo", encoding="utf-8")
    images[NOT_AN_IMAGE_ROW] = "notes.jpg"
    table = pa.table({"id": pa.array(records["id"].astype(np.int32)),
                      "embedding": pa.array(list(records["embedding"].astype(np.float32)),
                                            type=pa.list_(pa.float32())),
                      "image": pa.array(images), "box": pa.array(boxes, type=pa.list_(pa.float32()))})
    path = folder / "faces.parquet"
    pq.write_table(table, path)
    return path


def _run(db: Path, out: Path, **overrides: object) -> RunResult:
    settings = {"input.path": str(db), "out": str(out), "input.image_root": str(db.parent), **overrides}
    return run(load_config(SMOKE, settings))


@pytest.fixture(scope="module")
def faces_run(photo_db: Path, tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    return _run(photo_db, tmp_path_factory.mktemp("faces") / "run", **{"render.thumbnails": True})


def _crops(html: str) -> dict[int, Image.Image]:
    """The page's crops by input row, decoded from its blob as the script reads them."""
    import base64
    import io
    import re

    meta = page_meta(html)
    blob = base64.b64decode(re.search(r'id="fa-blob">([^<]*)<', html).group(1))

    def array(name: str) -> np.ndarray:
        dtype, offset, length, _ = meta["blob"][name]
        return np.frombuffer(blob, dtype=np.dtype(dtype).newbyteorder("<"), count=length, offset=offset)

    rows, offsets, data = array("thumb_row"), array("thumb_offset"), array("thumb_jpeg")
    return {int(row): Image.open(io.BytesIO(data[offsets[k]:offsets[k + 1]].tobytes()))
            for k, row in enumerate(rows.tolist())}


def test_crops_show_each_face_upright_and_count_what_could_not_be_cut(faces_run: RunResult,
                                                                       true_ids: np.ndarray) -> None:
    record = json.loads((faces_run.out_dir / "run.json").read_text(encoding="utf-8"))
    thumbs = record["report"]["thumbnails"]
    assert thumbs["missing"] == 1 and thumbs["unreadable"] == 1 and thumbs["over_budget"] == 0
    n = record["input"]["n_faces"]
    assert thumbs["made"] == n - 2 and thumbs["bytes"] < thumbs["total_bytes_max"]
    html = faces_run.files["report"].read_text(encoding="utf-8")
    assert f"Face crops: {n - 2:,} of the {n:,} faces" in html and "2 photos missing or unreadable" in html
    crops = _crops(html)
    assert MISSING_ROW not in crops and NOT_AN_IMAGE_ROW not in crops
    for row in (0, 5, 10, 3, 17):  # rotated JPEGs (0, 5, 10), a PNG (3), a plain JPEG
        crop = crops[row].convert("RGB")
        assert crop.size[0] <= 64 and crop.size[1] <= 64
        centre = np.asarray(crop.getpixel((crop.size[0] // 2, crop.size[1] // 2)), dtype=float)
        expected = colour_of(int(true_ids[row]))
        assert np.abs(centre - expected).max() < 40, (row, centre, expected)  # the face, not the grey photo
    policy = html.split('http-equiv="Content-Security-Policy" content="')[1].split('"')[0]
    assert "img-src data: blob:;" in policy and "connect-src 'none'" in policy


def test_off_by_default_and_added_or_removed_by_report(photo_db: Path, tmp_path: Path) -> None:
    plain = _run(photo_db, tmp_path / "run")
    html = plain.files["report"].read_text(encoding="utf-8")
    assert page_meta(html)["thumbs"] is None and "thumb_jpeg" not in page_meta(html)["blob"]
    assert (json.loads((plain.out_dir / "run.json").read_text()).get("report") or {}).get("thumbnails") is None
    result = CliRunner().invoke(app, ["report", str(plain.out_dir), "--thumbnails"])
    assert result.exit_code == 0, result.output
    record = json.loads((plain.out_dir / "run.json").read_text())
    n = record["input"]["n_faces"]
    assert record["report"]["thumbnails"]["made"] == n - 2 and record["config"]["render"]["thumbnails"] is True
    assert CliRunner().invoke(app, ["verify", str(plain.out_dir)]).exit_code == 0
    again = CliRunner().invoke(app, ["report", str(plain.out_dir)])  # as the run now says: with crops
    assert again.exit_code == 0 and page_meta((plain.out_dir / "report.html").read_text())["thumbs"]["made"] == n - 2
    off = CliRunner().invoke(app, ["report", str(plain.out_dir), "--no-thumbnails"])
    assert off.exit_code == 0 and page_meta((plain.out_dir / "report.html").read_text())["thumbs"] is None
    moved = CliRunner().invoke(app, ["report", str(plain.out_dir), "--thumbnails", "--image-root", str(tmp_path)])
    assert moved.exit_code == 0  # the photos are not there: every face a placeholder, never a failure
    assert json.loads((plain.out_dir / "run.json").read_text())["report"]["thumbnails"]["missing"] == n
    redrawn = CliRunner().invoke(app, ["render", str(plain.out_dir)])  # the photos where report last said
    assert redrawn.exit_code == 0, redrawn.output
    report = json.loads((plain.out_dir / "run.json").read_text())["report"]
    assert report["image_root"] == str(tmp_path) and report["thumbnails"]["missing"] == n
    back = CliRunner().invoke(app, ["report", str(plain.out_dir), "--image-root", str(photo_db.parent)])
    assert back.exit_code == 0 and json.loads((plain.out_dir / "run.json").read_text())["report"]["thumbnails"][
        "made"] == n - 2
    bad = CliRunner().invoke(app, ["report", str(plain.out_dir), "--thumbnails", "--image-root", "=x"])
    assert bad.exit_code == 2 and "--image-root" in bad.output


def test_the_budget_keeps_the_most_useful_faces(photo_db: Path, tmp_path: Path) -> None:
    small = _run(photo_db, tmp_path / "run", **{"render.thumbnails": True, "render.thumbnail_bytes": 60_000})
    record = json.loads((small.out_dir / "run.json").read_text())["report"]["thumbnails"]
    assert record["bytes"] <= 60_000 and record["over_budget"] > 500
    crops = _crops(small.files["report"].read_text(encoding="utf-8"))
    suspects = pq.read_table(small.out_dir / "projection.parquet", columns=["row", "suspect"]).to_pandas()
    assert set(suspects[suspects["suspect"]]["row"]) <= set(crops)  # every suspect first


@pytest.mark.slow
def test_the_page_shows_the_faces(browser: Any, faces_run: RunResult) -> None:  # noqa: F811
    page = Page(browser, faces_run.files["report"])
    try:
        first = page.page.locator("#fa-suspects tbody tr").first
        assert first.locator("img.fa-face").count() >= 5  # the suspect, its filed and its suggested identity's
        assert first.locator("img.fa-face").first.get_attribute("src").startswith("blob:")
        first.click()
        big = page.page.locator("#fa-panel img.fa-face.big")
        assert big.count() == 1 and page.js("img => img.naturalWidth", big.element_handle()) > 0
        at = page.js("row => window.faceatlas.face(row)", MISSING_ROW)
        page.js("([x, y]) => window.faceatlas.focus(x, y, 200)", at)  # zoomed in: no other face under the click
        x, y = page.js("row => window.faceatlas.screenOf(row)", MISSING_ROW)
        page.page.mouse.click(x, y)
        assert page.page.locator("#fa-panel").get_attribute("data-row") == str(MISSING_ROW)
        assert page.page.locator("#fa-panel .fa-face.none.big").count() == 1  # the missing photo: a placeholder
        assert page.page.locator("#fa-lookalikes tbody tr").first.locator("img.fa-face").count() >= 2
        review = page.page.locator("#fa-review tbody tr").first
        assert review.locator("td.faces-col").count() == 1
        assert page.console == [] and page.dialogs == []
        assert [url for url in page.requests if not url.startswith("blob:")] == [page.url]
    finally:
        page.page.close()


def test_demo_db_photos_give_every_face_a_crop(tmp_path: Path) -> None:
    """``demo-db --photos``: cartoon photos (no real person), image and box fields, a crop for every face."""
    db = tmp_path / "faces.npy"
    made = CliRunner().invoke(app, ["demo-db", str(db), "--identities", "60", "--photos", str(tmp_path / "photos")])
    assert made.exit_code == 0, made.output
    records = np.load(db, allow_pickle=False)
    assert {"id", "embedding", "image", "box"} <= set(records.dtype.names)
    assert all(Path(path).is_file() for path in records["image"].tolist())
    result = CliRunner().invoke(app, ["run", "--input", str(db), "--out", str(tmp_path / "run"), "--thumbnails",
                                      "--config", str(SMOKE)])
    assert result.exit_code == 0, result.output
    thumbs = json.loads((tmp_path / "run" / "run.json").read_text())["report"]["thumbnails"]
    assert thumbs["made"] == len(records) and thumbs["missing"] == thumbs["unreadable"] == 0
