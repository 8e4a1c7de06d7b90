"""The atlas page (report.html) and the commands that remake it from a run's files: ``faceatlas report`` and
``faceatlas render``. The page itself is opened in a real browser in tests/report/test_browser.py."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from job.analysis.similar import similar_identities
from job.knn.graph import FaceGraph
from job.maps.mapmodel import load_model
from job.maps.placement import nearest, nearest_points
from job.pipeline import RunResult
from job.render.maps import MAP_FILES
from job.report.content import pick_points
from job.report.page import safe_json

CLI = [sys.executable, "-m", "job"]


def faceatlas(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=600, check=False)


def page_meta(html: str) -> dict:
    block = re.search(r'<script type="application/json" id="fa-meta">(.*?)</script>', html, re.S)
    assert block is not None
    return json.loads(block.group(1))


@pytest.fixture
def run_copy(smoke_run: RunResult, tmp_path: Path) -> Path:
    """A copy of the smoke run's folder, for commands that rewrite it."""
    folder = tmp_path / "run"
    shutil.copytree(smoke_run.out_dir, folder)
    return folder


def test_every_run_writes_a_self_contained_page(smoke_run: RunResult) -> None:
    page = smoke_run.files["report"]
    assert page.name == "report.html"
    html = page.read_text(encoding="utf-8")
    record = json.loads((smoke_run.out_dir / "run.json").read_text())
    assert record["files"]["report"] == "report.html"
    assert record["file_sha256"]["report.html"] == hashlib.sha256(page.read_bytes()).hexdigest()
    # nothing is fetched: no remote URL in any src/href/url(), and a policy that forbids connections
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", html, re.I)
    assert "url(" not in html
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1)
    assert "default-src 'none'" in policy and "connect-src 'none'" in policy and "img-src data:" in policy
    # the one inline script is the one the policy allows, by its hash
    scripts = re.findall(r"<script>(.*?)</script>", html, re.S)
    assert len(scripts) == 1
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in policy
    meta = page_meta(html)
    assert meta["n_faces"] == meta["n_points"] == record["input"]["n_faces"] and not meta["sampled"]
    assert meta["suspects"] == record["metrics"]["suspects"]
    for section in ("summary", "maps", "suspects", "lookalikes", "clusters"):
        assert f'<section id="{section}">' in html
    assert html.count("data:image/png;base64,") == 1 + len(MAP_FILES)  # the underlay and the five maps
    assert "Trustworthiness" in html and "Suspect precision" in html  # the metrics, each with its meaning


def test_the_summary_says_what_each_metric_means_and_whether_it_is_good(smoke_run: RunResult) -> None:
    html = smoke_run.files["report"].read_text(encoding="utf-8")
    metrics = json.loads((smoke_run.out_dir / "run.json").read_text())["metrics"]
    row = re.search(r"<tr><td>Trustworthiness</td><td class=num>([0-9.]+)</td><td class=\"judge (\w*)\">", html)
    assert row is not None and float(row.group(1)) == pytest.approx(metrics["trustworthiness"], abs=5e-4)
    expected = "good" if metrics["trustworthiness"] >= 0.9 else "fair" if metrics["trustworthiness"] >= 0.8 \
        else "poor"
    assert row.group(2) == expected
    assert "how far each face&#x27;s map neighbours are also its neighbours in 512-D" in html


def test_each_face_records_its_most_similar_identities(smoke_run: RunResult) -> None:
    table = pq.read_table(smoke_run.out_dir / "projection.parquet").to_pandas()
    for rank in (1, 2, 3):
        assert f"similar_id_{rank}" in table and f"similar_cos_{rank}" in table
    # cosines fall with rank, the ids of one face differ, and a misfiled face's first is near its suggestion
    cos = table[["similar_cos_1", "similar_cos_2", "similar_cos_3"]].to_numpy()
    ok = np.isfinite(cos).all(axis=1)
    assert ok.mean() > 0.9 and (np.diff(cos[ok], axis=1) <= 1e-6).all()
    ids = table[["similar_id_1", "similar_id_2", "similar_id_3"]].to_numpy()
    assert (ids[ok, 0] != ids[ok, 1]).all() and (ids[ok, 1] != ids[ok, 2]).all()
    suspects = table[table["suspect"]]
    assert len(suspects) and (suspects["similar_id_1"] == suspects["suggested_id"]).mean() > 0.8
    clean = table[table["verdict"] == "ok"]
    assert (clean["similar_id_1"] == clean["id"]).mean() > 0.9


def test_similar_identities_leave_the_face_itself_out() -> None:
    # four faces, two identities; faces 0 and 1 are fitted (reference), each finds itself first
    reference = np.array([0, 1, 3])
    indices = np.array([[0, 1, 2], [1, 0, 2], [0, 2, 1], [2, 0, 1]], dtype=np.int32)
    distances = np.array([[0.0, 0.1, 0.5], [0.0, 0.1, 0.6], [0.2, 0.3, 0.4], [0.0, 0.7, 0.8]], dtype=np.float32)
    graph = FaceGraph(reference, indices, distances, "exact", "test")
    codes = np.array([0, 0, 1, 1])
    found = similar_identities(graph, codes, np.array([10, 20]), n=2)
    # face 0: itself left out, then face 1 (id 10, cos 0.9), then face 3 (id 20, cos 0.5)
    assert found.ids[0].tolist() == [10, 20] and found.cosine[0] == pytest.approx([0.9, 0.5])
    # face 2 (not fitted): face 0 (10, 0.8), face 3 (20, 0.7); face 1 of id 10 again is not repeated
    assert found.ids[2].tolist() == [10, 20] and found.cosine[2] == pytest.approx([0.8, 0.7])
    # face 3 is fitted as reference 2: itself left out, then ids 10 (face 0, 0.3); no second identity
    assert found.ids[3].tolist() == [10, -1] and np.isnan(found.cosine[3, 1])


def test_the_pages_grid_answers_are_those_of_faceatlas_nearest(smoke_run: RunResult) -> None:
    html = smoke_run.files["report"].read_text(encoding="utf-8")
    meta = page_meta(html)
    grid = meta["nearest"]
    blob = re.search(r'<script type="application/octet-stream" id="fa-blob">(.*?)</script>', html, re.S).group(1)
    data = base64.b64decode(blob)
    dtype, offset, length = meta["blob"]["grid_ident"][:3]
    idents = np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<"), count=length, offset=offset)
    dtype, offset, length = meta["blob"]["grid_sim"][:3]
    sims = np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<"), count=length, offset=offset)
    model = load_model(smoke_run.out_dir / "map_model.npz")
    k = grid["k"]
    on_map = np.flatnonzero(idents[::k] >= 0)
    assert 0.1 * grid["nx"] * grid["ny"] < len(on_map) < grid["nx"] * grid["ny"]
    for cell in on_map[:: max(1, len(on_map) // 12)]:
        x, y = grid["x"][cell % grid["nx"]], grid["y"][cell // grid["nx"]]
        answers = nearest(model, np.array([x, y]), k)
        assert [a.id for a in answers] == model.identity[idents[cell * k:(cell + 1) * k]].tolist()
        assert [a.similarity for a in answers] == pytest.approx(sims[cell * k:(cell + 1) * k].tolist(), abs=1e-5)


def test_nearest_points_is_nearest_for_many_points(smoke_run: RunResult) -> None:
    model = load_model(smoke_run.out_dir / "map_model.npz")
    rng = np.random.default_rng(0)
    points = model.coords[rng.choice(len(model.coords), 20, replace=False)] + rng.normal(0, 0.05, (20, 2))
    points = np.vstack([points, [[1e6, 1e6]]]).astype(np.float64)
    answers = nearest_points(model, points, 7)
    assert answers.on_map[:-1].all() and not answers.on_map[-1] and (answers.ids[-1] == -1).all()
    for i, point in enumerate(points[:-1]):
        one = nearest(model, point, 7)
        assert [a.id for a in one] == answers.ids[i].tolist()
        assert [a.map_distance for a in one] == pytest.approx(answers.map_distance[i].tolist(), rel=1e-6)


def test_faceatlas_report_remakes_the_same_page_and_verify_holds(run_copy: Path) -> None:
    before = (run_copy / "report.html").read_bytes()
    (run_copy / "report.html").unlink()
    broken = faceatlas("verify", run_copy)
    assert broken.returncode == 3  # a run without its page is not the run that was written
    (run_copy / "report.html").write_bytes(before)
    done = faceatlas("report", run_copy)
    assert done.returncode == 0, done.stderr
    assert (run_copy / "report.html").read_bytes() == before  # the same files make the same page
    assert str((run_copy / "report.html").resolve()) in done.stdout
    assert faceatlas("verify", run_copy).returncode == 0


def test_faceatlas_render_redraws_the_maps_and_the_page(run_copy: Path) -> None:
    maps = {name: (run_copy / name).read_bytes() for name in MAP_FILES.values()}
    same = faceatlas("render", run_copy)
    assert same.returncode == 0, same.stderr
    # the same drawing code on the same files: every map as the run drew it
    assert {name: (run_copy / name).read_bytes() for name in MAP_FILES.values()} == maps
    again = faceatlas("render", run_copy, "--highlight", "3,5", "--color-by", "cluster")
    assert again.returncode == 0, again.stderr
    assert (run_copy / "map_highlight.png").read_bytes() != maps["map_highlight.png"]
    assert (run_copy / "map_identities.png").read_bytes() == maps["map_identities.png"]
    record = json.loads((run_copy / "run.json").read_text())
    assert record["highlight"] == [3, 5] and record["config"]["render"]["highlight"] == [3, 5]
    assert record["report"]["color_by"] == "cluster" and record["report"]["written_by"].startswith("faceatlas render")
    meta = page_meta((run_copy / "report.html").read_text(encoding="utf-8"))
    assert meta["color_by"] == "cluster" and meta["highlight"] == [3, 5]  # codes: the demo's ids are 0..n-1
    assert faceatlas("verify", run_copy).returncode == 0
    # the page keeps its colouring when it is remade
    assert faceatlas("report", run_copy).returncode == 0
    assert page_meta((run_copy / "report.html").read_text(encoding="utf-8"))["color_by"] == "cluster"


@pytest.mark.parametrize(("args", "problem"), [
    (["--highlight", "999999"], "--highlight: ids 999999 are not in this run"),
    (["--color-by", "rainbow"], "--color-by 'rainbow': expected one of id, cluster, suspect, density"),
    (["--highlight", "a,b"], "--highlight 'a,b': expected comma-separated integer ids"),
])
def test_render_refuses_bad_options_and_leaves_the_run(run_copy: Path, args: list[str], problem: str) -> None:
    before = {p.name: p.read_bytes() for p in run_copy.iterdir()}
    result = faceatlas("render", run_copy, *args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and problem in result.stderr
    assert {p.name: p.read_bytes() for p in run_copy.iterdir()} == before


def test_report_refuses_a_changed_run(run_copy: Path) -> None:
    table = pq.read_table(run_copy / "projection.parquet")
    pq.write_table(table.slice(0, 10), run_copy / "projection.parquet")
    before = (run_copy / "report.html").read_bytes()
    for command in ("report", "render"):
        result = faceatlas(command, run_copy)
        assert result.returncode == 3
        assert "projection.parquet: differs from the file this run wrote" in result.stderr
    assert (run_copy / "report.html").read_bytes() == before
    missing = faceatlas("report", run_copy / "nowhere")
    assert missing.returncode == 3 and missing.stderr.count("\n") == 1


def test_json_in_the_page_cannot_end_its_script_block() -> None:
    text = safe_json({"name": "</script><script>alert(1)</script><!-- & \u2028", "x": float("nan")})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"name": "</script><script>alert(1)</script><!-- & \u2028", "x": None}


def test_a_large_map_draws_a_sample_with_every_suspect_and_highlight() -> None:
    rng = np.random.default_rng(1)
    n = 50_000
    codes = rng.integers(0, 5000, n)
    columns = {"x": rng.normal(size=n).astype(np.float32), "y": rng.normal(size=n).astype(np.float32),
               "suspect": rng.random(n) < 0.01}
    columns["x"][7] = np.nan  # a face off the map is never drawn
    chosen = pick_points(columns, codes, np.array([3, 4]), 10_000)
    assert len(chosen) == 10_000 and (np.diff(chosen) > 0).all() and 7 not in chosen
    must = np.flatnonzero((columns["suspect"] | np.isin(codes, [3, 4])) & np.isfinite(columns["x"]))
    assert np.isin(must, chosen).all()
    assert (pick_points(columns, codes, np.array([3, 4]), 10_000) == chosen).all()  # seeded: the same sample
    assert len(pick_points(columns, codes, np.array([], dtype=np.int64), 10 ** 6)) == n - 1


def test_render_refuses_a_folder_with_foreign_files_or_an_edited_record(run_copy: Path) -> None:
    (run_copy / "notes.txt").write_text("mine")
    result = faceatlas("render", run_copy)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "holds notes.txt, which no faceatlas run wrote" in result.stderr and "move it out" in result.stderr
    (run_copy / "notes.txt").unlink()
    record = json.loads((run_copy / "run.json").read_text())
    record["config"]["render"]["width"] = "wide"
    (run_copy / "run.json").write_text(json.dumps(record))
    before = {p.name: p.read_bytes() for p in run_copy.iterdir()}
    result = faceatlas("render", run_copy)
    assert result.returncode == 3 and result.stderr.count("\n") == 1
    assert "run.json: config.render is not a faceatlas render section" in result.stderr
    assert {p.name: p.read_bytes() for p in run_copy.iterdir()} == before


def test_a_map_of_one_line_gets_a_density_image_of_bounded_size() -> None:
    import io

    from PIL import Image

    from job.report.content import density_png, page_frame

    coords = np.column_stack([np.zeros(500), np.linspace(0, 10, 500)]).astype(np.float32)
    image = Image.open(io.BytesIO(density_png(coords, page_frame(coords), width=256)))
    assert image.size == (256, 1024) and image.mode == "RGBA"
    assert np.asarray(image)[..., 3].max() == 255  # the faces are there, the rest transparent
