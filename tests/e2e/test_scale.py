"""The pieces that carry a full database, checked on small data: the index registry, the shared graph, the fit
on a sample with placement of the rest, chunking, progress, memory refusal and the streamed demo database."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

from job.analysis import suspects
from job.analysis.identities import identity_table
from job.config import KnnConfig, load_config
from job.errors import OutOfMemoryError, UsageError
from job.io.demo import DemoSpec, make_demo, write_demo
from job.knn import index as knn_index
from job.knn.exact import ExactIndex, exact_knn
from job.knn.faiss_index import FaissIvfIndex
from job.knn.graph import self_first
from job.knn.index import INDEXES, face_graph, resolve
from job.pipeline import run
from job.progress import stream_progress
from job.reduce import extend
from job.reduce.extend import make_kernel, place_rest
from job.space import kernels

CONFIGS = Path(__file__).parents[2] / "configs"


@pytest.fixture(scope="module")
def planted() -> tuple[np.ndarray, np.ndarray]:
    """2,000 identities x ~5 faces (float32 unit rows) from the demo generator."""
    records, _ = make_demo(DemoSpec(n_identities=2000, faces_per_identity=5, seed=3))
    vectors = records["embedding"].astype(np.float64)
    unit = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    return records["id"].astype(np.int64), unit


def test_resolve_picks_by_size_and_says_why() -> None:
    cls, reason = resolve("auto", 1_000, 50_000)
    assert cls is ExactIndex and "<= knn.exact_max_faces" in reason and "exact" in reason
    cls, reason = resolve("auto", 60_000, 50_000)
    assert cls is FaissIvfIndex and "> knn.exact_max_faces" in reason
    assert resolve("approximate", 10, 50_000)[0] is FaissIvfIndex
    cls, reason = resolve("exact", 10**7, 50_000)
    assert cls is ExactIndex and "knn.method=exact" in reason
    assert set(INDEXES) >= {"exact", "faiss-ivf"}
    for name in INDEXES:
        assert resolve(name, 10, 50_000)[0].name == name
    with pytest.raises(UsageError, match=re.escape("knn.method 'annoy'")):
        resolve("annoy", 10, 50_000)


def test_run_json_records_the_index_and_why(smoke_run) -> None:
    record = json.loads((smoke_run.out_dir / "run.json").read_text())
    assert record["knn_method"] == "exact"
    assert "exact_max_faces" in record["knn_reason"]
    assert record["fit"]["fitted"] + record["fit"]["placed"] + record["fit"]["held_out"] == record["input"]["n_faces"]


def test_self_first_moves_or_inserts_each_reference_face() -> None:
    found = np.array([[4, 7, 9], [3, 5, 8], [1, 2, 0]])
    similarity = np.array([[0.99, 0.98, 0.5], [0.9, 0.8, 0.7], [0.9, 0.8, 0.7]], dtype=np.float32)
    own = np.array([7, 6, -1])
    rows, sims = self_first(found.copy(), similarity.copy(), own)
    assert rows.tolist() == [[7, 4, 9], [6, 3, 5], [1, 2, 0]]  # moved up; inserted, last dropped; not reference
    assert sims[:2, 0].tolist() == [1.0, 1.0] and sims[0, 1] == pytest.approx(0.99)
    assert sims[2].tolist() == pytest.approx([0.9, 0.8, 0.7])


def test_approximate_graph_recalls_the_exact_one(planted) -> None:
    ids, unit = planted
    reference = np.arange(0, len(ids), 2)  # half the faces are the fit sample
    exact = face_graph(unit, reference, 15, KnnConfig(method="exact", exact_max_faces=0))
    approx = face_graph(unit, reference, 15, KnnConfig(method="faiss-ivf", exact_max_faces=0), seed=0)
    assert approx.method == "faiss-ivf" and exact.method == "exact"
    hits = [len(set(a) & set(e)) for a, e in zip(approx.indices, exact.indices, strict=True)]
    recall = float(np.mean(hits)) / 15
    assert recall >= 0.85, recall
    assert np.mean(approx.indices[:, 0] == exact.indices[:, 0]) >= 0.99
    assert (approx.indices[reference, 0] == np.arange(len(reference))).all()  # fitted faces find themselves
    # the planted structure survives: a face's nearest other reference face is of its own identity as often
    same = lambda graph: np.mean(ids[reference[graph.indices[:, 1]]] == ids)  # noqa: E731
    assert same(approx) >= same(exact) - 0.01


def test_exact_index_equals_brute_force(planted) -> None:
    _, unit = planted
    index = ExactIndex()
    index.build(unit[:3000])
    found, similarity = index.query(unit[:50], 10)
    full = unit[:50] @ unit[:3000].T
    assert (found == np.argsort(-full, axis=1, kind="stable")[:, :10]).all()
    assert np.allclose(similarity, np.take_along_axis(full, found, axis=1), atol=1e-5)
    assert exact_knn(unit[:500], 5).indices[:, 0].tolist() == list(range(500))


def test_chunked_graph_equals_one_chunk(planted, monkeypatch: pytest.MonkeyPatch) -> None:
    _, unit = planted
    reference = np.arange(0, len(unit), 3)
    whole = face_graph(unit, reference, 12, KnnConfig(method="faiss-ivf", exact_max_faces=0), seed=1)
    monkeypatch.setattr(knn_index, "QUERY_CHUNK", 777)
    chunked = face_graph(unit, reference, 12, KnnConfig(method="faiss-ivf", exact_max_faces=0), seed=1)
    assert (whole.indices == chunked.indices).all()
    assert np.allclose(whole.distances, chunked.distances, atol=1e-6)  # BLAS blocks by batch size: rounding only


def test_chunked_placement_equals_one_chunk(planted, monkeypatch: pytest.MonkeyPatch) -> None:
    _, unit = planted
    reference = np.arange(0, len(unit), 4)
    graph = face_graph(unit, reference, 10, KnnConfig(method="exact", exact_max_faces=0))
    rng = np.random.default_rng(0)
    fitted = rng.normal(size=(len(reference), 2)).astype(np.float32)
    kernel = make_kernel(fitted, 0.0, 1.0, 3.0, 30, seed=5)
    rest = np.setdiff1d(np.arange(len(unit)), reference)
    whole = place_rest(fitted, graph.indices[rest], graph.distances[rest], kernel, parallel=False)
    monkeypatch.setattr(extend, "CHUNK", 500)
    chunked = place_rest(fitted, graph.indices[rest], graph.distances[rest], kernel, parallel=False)
    assert np.array_equal(whole, chunked)
    assert np.isfinite(whole).all()


def test_chunked_suspect_scores_equal_one_block(planted, monkeypatch: pytest.MonkeyPatch) -> None:
    ids, unit = planted
    table = identity_table(unit, ids)
    candidates = np.random.default_rng(2).integers(-1, len(table.ids), size=(len(ids), 6))
    scale = np.random.default_rng(3).uniform(0.5, 2.0, len(table.ids))
    whole = kernels.best_candidate(unit, table.centroids, scale, candidates, table.codes)
    own = suspects.leave_one_out(unit, table)
    monkeypatch.setattr(kernels, "ROW_BLOCK", 333)
    chunked = kernels.best_candidate(unit, table.centroids, scale, candidates, table.codes)
    assert np.array_equal(whole[0], chunked[0]) and np.array_equal(whole[1], chunked[1])
    small_table = identity_table(unit, ids)
    assert np.allclose(small_table.centroids, table.centroids, atol=1e-6)
    assert np.allclose(suspects.leave_one_out(unit, small_table)[0], own[0], atol=1e-6)


def test_fit_on_a_sample_places_the_rest_with_identity_and_spread(tmp_path: Path) -> None:
    """2,000 identities x ~5 faces fitted on 2,500 faces (one per identity, as a full database is): the other
    ~8,000 are placed beside their own identity, each at its own spot, and held-out faces keep their id."""
    import pandas as pd
    from scipy.spatial import cKDTree

    path = tmp_path / "db.npy"
    records, truth = make_demo(DemoSpec(n_identities=2000, faces_per_identity=5, seed=4))
    np.save(path, records, allow_pickle=False)
    config = load_config(CONFIGS / "smoke.toml", {"input.path": str(path), "out": str(tmp_path / "out"),
                                                   "umap.fit_sample": "2500", "umap.n_epochs": "auto"})
    result = run(config)
    table = pd.read_parquet(result.files["projection"])
    record = json.loads(result.files["run"].read_text())
    fitted, held = table["fitted"].to_numpy(), table["held_out"].to_numpy()
    placed = ~fitted & ~held
    assert fitted.sum() == record["fit"]["fitted"] == 2000  # each identity enters with its most central face
    assert placed.sum() == record["fit"]["placed"] > 7000
    assert "fixed fitted map" in record["fit"]["method"]
    assert table["row"].tolist() == list(range(len(table)))  # every face, in input order
    assert table.loc[fitted, "id"].nunique() == table["id"].nunique()
    xy, ids = table[["x", "y"]].to_numpy(), table["id"].to_numpy()
    _, near = cKDTree(xy).query(xy[placed], k=5)
    assert (ids[near[:, 1:]] == ids[placed][:, None]).mean() >= 0.85  # placed faces sit with their identity
    # ... each at its own spot, from its own neighbours, not on one anchor per filed identity: no identity's
    # placed faces are stacked on one point, and a misfiled face lands with the person it really shows
    spread = table[placed].groupby("id")[["x", "y"]].std().dropna()
    assert (spread.sum(axis=1) > 0).all()
    misfiled = np.array(truth.misfiled_rows)
    shows = dict(zip(truth.misfiled_rows, truth.misfiled_true_ids, strict=True))
    moved = misfiled[placed[misfiled]]
    _, nearest = cKDTree(xy[fitted]).query(xy[moved], k=1)
    landed = ids[np.flatnonzero(fitted)[nearest]]
    assert len(moved) > 20 and np.mean(landed == np.array([shows[r] for r in moved])) >= 0.9
    assert result.metrics.transform is not None and result.metrics.transform.id_at_1 >= 0.95
    assert result.metrics.trustworthiness >= 0.9


def test_progress_lines_when_not_a_terminal() -> None:
    stream = io.StringIO()
    factory = stream_progress(stream, every=0.0)
    with factory("kNN graph", 300, "faces") as bar:
        for _ in range(3):
            bar.advance(100)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("faceatlas: kNN graph: 100/300 faces (33%)") and "left" in lines[0]
    assert lines[-1].startswith("faceatlas: kNN graph: 300/300 faces (100%)") and lines[-1].endswith("done")
    assert "\r" not in stream.getvalue()


def test_progress_bar_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    with stream_progress(stream)("placing faces", 1000, "faces") as bar:
        bar.advance(400)
        bar.advance(600)
    text = stream.getvalue()
    # a tqdm bar: redrawn in place with rate and elapsed<remaining, and removed at the end (no plain lines)
    assert "faceatlas: placing faces:" in text and "/1.00k" in text and "faces/s]" in text and "<" in text
    assert text.endswith("\r") and "\n" not in text and "done" not in text


def test_cli_progress_goes_to_stderr_not_json(small_db: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from job.cli import app

    result = CliRunner().invoke(app, ["run", "--config", str(CONFIGS / "smoke.toml"), "--input", str(small_db),
                                      "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "faceatlas: kNN graph: 1,036/1,036 faces (100%)" in result.stderr
    assert "faces (100%)" not in result.stdout


def test_a_database_over_max_memory_is_refused_before_work_starts(small_db: Path, tmp_path: Path) -> None:
    """The faces themselves fit (1,036 x 512 float16 = 1 MiB), the run's working memory does not."""
    from job.footprint import run_bytes

    assert run_bytes(load_config(), 1036, 200, 512, 2) > 100 * 2**20
    from typer.testing import CliRunner

    from job.cli import app

    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", "--config", str(CONFIGS / "smoke.toml"), "--input", str(small_db),
                                      "--out", str(out), "--set", "max_memory=100MiB"])
    assert result.exit_code == 5, result.output
    message = result.output.strip().splitlines()[-1]
    assert str(small_db) in message and "max_memory" in message and "needs" in message
    assert not out.exists()
    config = load_config(CONFIGS / "smoke.toml", {"input.path": str(small_db), "out": str(out),
                                                   "max_memory": "100MiB"})
    with pytest.raises(OutOfMemoryError, match="the run"):
        run(config)


def test_demo_db_streaming_equals_the_in_memory_generator(tmp_path: Path) -> None:
    spec = DemoSpec(n_identities=300, faces_per_identity=5, seed=11)
    records, truth = make_demo(spec)
    n, streamed_truth = write_demo(tmp_path / "demo.npy", spec, rows=97)  # many small chunks
    written = np.load(tmp_path / "demo.npy", allow_pickle=False)
    assert n == len(records) and written.dtype == records.dtype
    assert written.tobytes() == records.tobytes()
    assert streamed_truth == truth
