"""Full databases on one machine: ``faceatlas run`` against plain umap-learn on the same demo database, side by side.

For each size a demo database is written with ``faceatlas demo-db`` (kept in ``--data`` for the next run),
then, each in a fresh process with its wall time and peak RSS (the child's own ``ru_maxrss``):

* ``faceatlas run --input db.npy`` — the whole job; quality read from its run.json;
* the baseline, plain umap-learn: ``umap.UMAP(metric="cosine").fit_transform(embeddings)`` (fit only), or at
  ``--transform-sizes`` umap-learn's default fit on all faces but the held-out ones + ``transform`` of those.
  Its map is scored here with faceatlas's own metrics (same sample, same seed). It gives no verdicts, so
  misfiled precision/recall and look-alike recall are faceatlas's only.

Goals (issue 9) are printed beside the numbers. The machine is described at the top. Run it alone.

    python bench/bench_scale.py [--sizes 100k,300k,1m] [--baseline-max 300000] [--data /tmp/faceatlas-scale]
    python bench/bench_scale.py --knn [--knn-size 300k]    # the ANN candidates: recall@15 and time
    python bench/bench_scale.py --settings [--sizes 300k]  # the hypotheses: where the map loses identities
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZES = {"100k": 20_000, "300k": 60_000, "1m": 200_000, "10m": 2_000_000}  # identities x 5 faces
GOALS = {"300k": {"wall_s": 150, "rss_gb": 2.5}, "1m": {"wall_s": 480, "rss_gb": 4.0}}
QUALITY_GOALS = {"same_id": 0.85, "trust": 0.90, "precision": 0.95, "recall": 0.95, "lookalike": 0.95,
                 "transform": 0.95}
BASELINE = """
import sys, numpy as np, umap
records = np.load(sys.argv[1], allow_pickle=False)
held = np.load(sys.argv[3]) if len(sys.argv) > 3 else None
x = records["embedding"]
if held is None:
    np.save(sys.argv[2], umap.UMAP(metric="cosine").fit_transform(x).astype(np.float32))
else:
    keep = np.ones(len(x), bool); keep[held] = False
    model = umap.UMAP(metric="cosine").fit(x[keep])
    coords = np.empty((len(x), 2), np.float32)
    coords[keep] = model.embedding_; coords[held] = model.transform(x[held])
    np.save(sys.argv[2], coords)
"""


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    return f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB RAM, Python {platform.python_version()}"


def timed(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (GB) of ``command`` in its own process; raises if it fails."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{process.stderr.read().decode()[-3000:]}")
    return wall, usage.ru_maxrss * 1024 / 1e9


def database(size: str, data: Path) -> Path:
    path = data / f"scale_{size}.npy"
    if not path.exists():
        subprocess.run([sys.executable, "-m", "job", "demo-db", str(path), "--identities", str(SIZES[size]),
                        "--faces-per-identity", "5"], check=True, capture_output=True)
    return path


def truth_of(db: Path) -> Path:
    """The ``NAME.truth.json`` that ``faceatlas demo-db`` wrote with ``NAME.npy`` (read only with ``--truth``)."""
    return db.with_name(db.name.removesuffix(".npy") + ".truth.json")


def ours(db: Path, out: Path, extra: list[str] = ()) -> dict[str, object]:
    wall, rss = timed([sys.executable, "-m", "job", "run", "--input", str(db), "--truth", str(truth_of(db)),
                       "--out", str(out), *extra])
    record = json.loads((out / "run.json").read_text())
    m = record["metrics"]
    return {"wall_s": wall, "rss_gb": rss, "same_id": m["same_id_knn"], "trust": m["trustworthiness"],
            "precision": m.get("suspect_precision"), "recall": m.get("suspect_recall"),
            "lookalike": m.get("lookalike_recall"), "transform": m["transform"]["id_at_1"],
            "timings": record["timings"], "fit": record.get("fit", {})}


def baseline(db: Path, out: Path, transform: bool) -> dict[str, object]:
    """Plain umap-learn on ``db``; with ``transform``, held-out faces placed by its ``transform`` (the same
    faces faceatlas holds out: read from faceatlas's projection.parquet in ``out``)."""
    import pandas as pd

    from job.analysis.metrics import same_id_knn, trustworthiness
    from job.config import InputConfig, load_config
    from job.io.database import load_database

    coords_path = out / "baseline_coords.npy"
    args = [sys.executable, "-c", BASELINE, str(db), str(coords_path)]
    held = None
    if transform:
        table = pd.read_parquet(out / "projection.parquet", columns=["row", "held_out"])
        held = table["row"].to_numpy()[table["held_out"].to_numpy()]
        np.save(out / "held.npy", held)
        args.append(str(out / "held.npy"))
    wall, rss = timed(args)
    coords = np.load(coords_path)
    metrics = load_config().metrics
    faces = load_database(InputConfig(path=str(db)))
    result: dict[str, object] = {
        "wall_s": wall, "rss_gb": rss, "same_id": same_id_knn(coords, faces.ids, metrics.same_id_k),
        "trust": trustworthiness(faces.unit, coords, metrics.trustworthiness_k, metrics.trustworthiness_sample, 0),
        "precision": None, "recall": None, "lookalike": None, "transform": None}
    if held is not None:
        from scipy.spatial import cKDTree

        on_map = np.setdiff1d(np.arange(len(coords)), held)
        _, nearest = cKDTree(coords[on_map]).query(coords[held], k=1)
        result["transform"] = float((faces.ids[on_map[nearest]] == faces.ids[held]).mean())
    return result


def _cell(value: object, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def table(rows: list[tuple[str, str, dict[str, object]]]) -> None:
    columns = [("wall_s", "wall s", 0), ("rss_gb", "peak RSS GB", 2), ("same_id", "same-id@4", 3),
               ("trust", "trust", 3), ("precision", "misfiled P", 3), ("recall", "misfiled R", 3),
               ("lookalike", "look-alike R", 3), ("transform", "transform id@1", 3)]
    print("| size | run | " + " | ".join(title for _, title, _ in columns) + " |")
    print("|---" * (len(columns) + 2) + "|")
    for size, name, result in rows:
        cells = [_cell(result[key], digits) for key, _, digits in columns]
        print(f"| {size} | {name} | " + " | ".join(cells) + " |")


def goals(size: str, result: dict[str, object], base: dict[str, object] | None) -> None:
    checks = dict(GOALS.get(size, {}))
    for key, goal in checks.items():
        print(f"  {size} {key}: {result[key]:.2f} (goal <= {goal}) {'ok' if result[key] <= goal else 'MISSED'}")
    for key, goal in QUALITY_GOALS.items():
        value = result[key]
        if value is None:
            continue
        line = f"  {size} {key}: {value:.3f} (goal >= {goal})"
        if base is not None and base[key] is not None:
            line += f", umap-learn {base[key]:.3f}"
            ok = value >= goal and value >= base[key] - 0.005
        else:
            ok = value >= goal
        print(line + (" ok" if ok else " MISSED"))
    if base is not None:
        print(f"  {size} speed-up over umap-learn: {base['wall_s'] / result['wall_s']:.1f}x, "
              f"memory ratio faceatlas/umap-learn {result['rss_gb'] / base['rss_gb']:.2f}")


ALL_FACES = ["umap.fit_sample=100000000", "umap.sample_above=100000000"]
SETTINGS = {  # the hypotheses of issue 9, as faceatlas runs (each fits the graph faceatlas builds)
    "every face fitted, umap-learn defaults (min_dist 0.1, spectral, 200 epochs)":
        [*ALL_FACES, "umap.min_dist=0.1", "umap.init=spectral", "umap.n_epochs=200", "umap.repulsion_strength=1.0"],
    "every face fitted, 500 epochs":
        [*ALL_FACES, "umap.min_dist=0.1", "umap.init=spectral", "umap.n_epochs=500", "umap.repulsion_strength=1.0"],
    "every face fitted, min_dist 0 (pca start, 500 epochs)":
        [*ALL_FACES, "umap.min_dist=0.0", "umap.n_epochs=500", "umap.repulsion_strength=1.0"],
    "every face fitted, faceatlas's all-faces settings (auto)": ALL_FACES,
    "one face per identity fitted, the rest placed (default)": [],
}


def settings(sizes: list[str], data: Path) -> None:
    print("## Where the map loses identities (each a whole faceatlas run)\n")
    rows = []
    with tempfile.TemporaryDirectory(dir=data) as tmp:
        for size in sizes:
            db = database(size, data)
            for i, (name, overrides) in enumerate(SETTINGS.items()):
                extra = [item for override in overrides for item in ("--set", override)]
                rows.append((size, name, ours(db, Path(tmp) / f"{size}_{i}", extra)))
                print(f"  done: {size} {name}", file=sys.stderr, flush=True)
    table(rows)


def knn(size: str, data: Path, n_queries: int) -> None:
    """Each candidate index on the fit sample of ``size`` (one face per identity, as the run fits), queried with
    ``n_queries`` faces: build + query seconds, recall@15 and @1 against exact search."""
    from job.config import InputConfig
    from job.io.database import load_database
    from job.knn.exact import ExactIndex
    from job.knn.faiss_index import FaissIvfIndex

    faces = load_database(InputConfig(path=str(database(size, data))))
    _, first = np.unique(faces.ids, return_index=True)
    reference = np.ascontiguousarray(faces.unit[first], dtype=np.float32)
    queries = np.ascontiguousarray(faces.unit[np.random.default_rng(0).choice(faces.n_faces, n_queries, False)],
                                   dtype=np.float32)
    k = 15

    def exact() -> np.ndarray:
        index = ExactIndex()
        index.build(reference)
        return index.query(queries, k)[0]

    def faiss_ivf() -> np.ndarray:
        index = FaissIvfIndex(0)
        index.build(reference)
        return index.query(queries, k)[0]

    def faiss_hnsw() -> np.ndarray:
        import faiss

        index = faiss.IndexHNSWFlat(reference.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = 48
        index.add(reference)
        return index.search(queries, k)[1]

    def hnswlib_index() -> np.ndarray:
        import hnswlib

        index = hnswlib.Index(space="ip", dim=reference.shape[1])
        index.init_index(max_elements=len(reference), M=16, ef_construction=100, random_seed=0)
        index.add_items(reference)
        index.set_ef(48)
        return index.knn_query(queries, k)[0]

    def usearch_index() -> np.ndarray:
        from usearch.index import Index

        index = Index(ndim=reference.shape[1], metric="ip", dtype="f16", connectivity=16, expansion_search=48)
        index.add(np.arange(len(reference)), reference)
        return index.search(queries, k).keys

    def pynndescent_index() -> np.ndarray:
        from pynndescent import NNDescent

        index = NNDescent(reference, metric="cosine", n_neighbors=30, random_state=0)
        index.prepare()
        return index.query(queries, k)[0]

    candidates = {"exact (blocked matrix products)": exact, "faiss IVF fp16, big_batch (faceatlas)": faiss_ivf,
                  "faiss HNSW32 efSearch 48": faiss_hnsw, "hnswlib M16 ef 48": hnswlib_index,
                  "usearch f16 M16 ef 48": usearch_index, "pynndescent (umap-learn's)": pynndescent_index}
    print(f"## kNN candidates: {len(reference):,} reference faces, {n_queries:,} queries, k={k}\n")
    print("| index | build+query s | recall@15 | recall@1 |\n|---|---|---|---|")
    truth = None
    for name, build_and_query in candidates.items():
        try:
            start = time.perf_counter()
            found = np.asarray(build_and_query())
            seconds = time.perf_counter() - start
        except ImportError as exc:
            print(f"| {name} | not installed ({exc.name}) | | |")
            continue
        truth = found if truth is None else truth
        recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(found, truth, strict=True)])
        print(f"| {name} | {seconds:.1f} | {recall:.3f} | {np.mean(found[:, 0] == truth[:, 0]):.3f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100k,300k,1m", help=f"comma-separated, of {', '.join(SIZES)}")
    parser.add_argument("--baseline-max", type=int, default=300_000,
                        help="run plain umap-learn up to this many faces (it takes ~10 min and 5 GB at 300k)")
    parser.add_argument("--transform-sizes", default="100k", help="sizes whose baseline is fit + transform")
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "faceatlas-scale")
    parser.add_argument("--knn", action="store_true", help="compare the kNN index candidates instead")
    parser.add_argument("--knn-size", default="300k")
    parser.add_argument("--knn-queries", type=int, default=100_000)
    parser.add_argument("--settings", action="store_true", help="run the hypotheses table instead")
    args = parser.parse_args()
    args.data.mkdir(parents=True, exist_ok=True)
    sizes = [size.strip() for size in args.sizes.split(",") if size.strip()]
    print(f"machine: {machine()}\n")
    if args.knn:
        knn(args.knn_size, args.data, args.knn_queries)
        return
    if args.settings:
        settings(sizes, args.data)
        return
    rows, checks = [], []
    transform_sizes = set(args.transform_sizes.split(","))
    with tempfile.TemporaryDirectory(dir=args.data) as tmp:
        for size in sizes:
            db = database(size, args.data)
            out = Path(tmp) / f"ours_{size}"
            result = ours(db, out)
            rows.append((size, "faceatlas run", result))
            print(f"  {size} faceatlas stages (s): " + ", ".join(f"{k} {v:.0f}" for k, v in result["timings"].items()),
                  file=sys.stderr, flush=True)
            base = None
            if SIZES[size] * 5 <= args.baseline_max:
                base = baseline(db, out, size in transform_sizes)
                kind = "fit + transform" if size in transform_sizes else "fit_transform"
                rows.append((size, f"umap-learn {kind}", base))
            checks.append((size, result, base))
    table(rows)
    print("\ngoals:")
    for size, result, base in checks:
        goals(size, result, base)


if __name__ == "__main__":
    main()
