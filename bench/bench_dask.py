"""The same job in one process and on ``--dask local:2``, side by side; and what 10M and 100M faces would take.

For each size, on the same demo database (``faceatlas demo-db``, kept in ``--data``), each in a fresh process:

* ``faceatlas run --seed 0``;
* ``faceatlas run --seed 0 --dask local:2`` (a LocalCluster of two worker processes, one thread each).

Printed side by side: wall time, peak RSS of the client and of each worker (the process tree sampled from /proc
every 0.2 s), the quality metrics from run.json, and whether the two maps and verdicts are identical. On a
2-core machine no speed-up is expected: the point is the overhead and the memory per worker.

Then a model of larger databases, built from what the distributed run measured: run.json ``cluster.tasks``
holds each task kind's count and compute seconds, so each chunk's cost is known; the chunk work is spread over
N workers, and the client's own stages (loading, the fit on ``umap.fit_sample`` faces, the per-identity and
whole-map work) are scaled from this size (linearly in faces, the fit held at its sample). Memory: a worker
holds its share of the unit vectors plus the broadcast fit sample and centroids; the client holds one unit copy
(``job/footprint.py``). Run it alone.

    python bench/bench_dask.py [--sizes 300k,1m] [--data /tmp/faceatlas-scale] [--workers 8,32,128]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_scale import SIZES, database, machine, truth_of

CHUNK_TASKS = ("read_faces", "chunk_sums", "chunk_rowwise_dot", "chunk_best_candidate", "chunk_graph", "chunk_place")
"""Tasks run once per chunk of faces (their count grows with the database); the rest are per merge or per map."""


def _tree(root: int) -> dict[int, int]:
    """RSS in bytes of ``root`` and every descendant, by pid (from /proc)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            parents[int(entry.name)] = int(fields[1])
            rss[int(entry.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    family, frontier = {root}, [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier and pid not in family]
        family.update(frontier)
    return {pid: rss.get(pid, 0) for pid in family}


def timed_tree(command: list[str]) -> tuple[float, float, list[float]]:
    """Wall seconds, the client's peak RSS (GB) and each other process's peak RSS (GB: the workers, and for a
    LocalCluster the nannies and the spawn helper) while ``command`` runs."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peaks: dict[int, int] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for pid, size in _tree(process.pid).items():
                peaks[pid] = max(peaks.get(pid, 0), size)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = process.communicate()
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{err.decode()[-3000:]}")
    client = peaks.pop(process.pid, 0)
    return wall, client / 1e9, sorted((size / 1e9 for size in peaks.values()), reverse=True)


def one_run(db: Path, out: Path, extra: list[str] = ()) -> dict[str, object]:
    wall, client, others = timed_tree([sys.executable, "-m", "job", "run", "--input", str(db), "--truth",
                                       str(truth_of(db)), "--out", str(out), "--seed", "0", *extra])
    record = json.loads((out / "run.json").read_text())
    m = record["metrics"]
    return {"wall_s": wall, "client_gb": client, "others_gb": others, "same_id": m["same_id_knn"],
            "trust": m["trustworthiness"], "precision": m.get("suspect_precision"),
            "recall": m.get("suspect_recall"), "lookalike": m.get("lookalike_recall"),
            "transform": m["transform"]["id_at_1"], "timings": record["timings"], "cluster": record["cluster"],
            "n_faces": record["input"]["n_faces"], "n_identities": record["input"]["n_identities"],
            "fit": record["fit"]}


def identical(first: Path, second: Path) -> str:
    import pandas as pd

    a, b = pd.read_parquet(first / "projection.parquet"), pd.read_parquet(second / "projection.parquet")
    same_map = bool(np.array_equal(a[["x", "y"]].to_numpy(), b[["x", "y"]].to_numpy()))
    same_verdicts = bool((a["verdict"] == b["verdict"]).all() and (a["suggested_id"] == b["suggested_id"]).all())
    gap = float(np.abs(a[["x", "y"]].to_numpy() - b[["x", "y"]].to_numpy()).max())
    return f"map identical: {same_map} (max |dx| {gap:.2g}), verdicts identical: {same_verdicts}"


def side_by_side(size: str, alone: dict[str, object], spread: dict[str, object]) -> None:
    print(f"\n{size}: {alone['n_faces']:,} faces, {alone['n_identities']:,} identities")
    print("| run | wall s | client peak GB | worker peak GB | same-id@4 | trust | misfiled P / R | look-alike R |")
    print("|---|---|---|---|---|---|---|---|")
    for name, row in (("one process", alone), ("--dask local:2", spread)):
        workers = ", ".join(f"{gb:.2f}" for gb in row["others_gb"][:2]) or "-"
        print(f"| {name} | {row['wall_s']:.0f} | {row['client_gb']:.2f} | {workers} | {row['same_id']:.3f} | "
              f"{row['trust']:.3f} | {row['precision']:.3f} / {row['recall']:.3f} | {row['lookalike']:.3f} |")
    print(f"ratio (dask / one process): wall {spread['wall_s'] / alone['wall_s']:.2f}, client memory "
          f"{spread['client_gb'] / alone['client_gb']:.2f}")
    stages = sorted(set(alone["timings"]) | set(spread["timings"]))
    print("per stage (s), one process / dask: " + ", ".join(
        f"{stage} {alone['timings'].get(stage, 0):.1f} / {spread['timings'].get(stage, 0):.1f}" for stage in stages))


def chunk_costs(spread: dict[str, object]) -> dict[str, float]:
    """Compute seconds per chunk of each chunk task, and the faces per chunk."""
    tasks = spread["cluster"]["tasks"]
    costs = {name: tasks[name]["seconds"] / tasks[name]["count"] for name in CHUNK_TASKS if name in tasks}
    print("measured per chunk of " + f"{spread['cluster']['chunk_faces']:,} faces (compute s): " +
          ", ".join(f"{name} {seconds:.2f} x{tasks[name]['count']}" for name, seconds in costs.items()))
    return costs


def projection(spread: dict[str, object], costs: dict[str, float], workers: list[int]) -> None:
    """What 10M and 100M faces would take: chunk work over N workers plus the client's stages, scaled."""
    from job.config import Config
    from job.footprint import run_bytes

    n, chunk = int(spread["n_faces"]), int(spread["cluster"]["chunk_faces"])
    per_face_ids = spread["n_identities"] / n
    fitted = int(spread["fit"]["fitted"])
    timings = spread["timings"]
    on_cluster_wall = sum(tasks["seconds"] for tasks in spread["cluster"]["tasks"].values()) / 2  # 2 workers
    client_fixed = timings.get("umap", 0.0)  # the fit: fit_sample faces whatever the size
    client_per_face = (sum(timings.values()) - on_cluster_wall - client_fixed) / n
    print("\nfaces | workers | chunk tasks s (wall) | client s | total s | client memory GB | memory per worker GB")
    print("|---|---|---|---|---|---|---|")
    for faces in (10_000_000, 100_000_000):
        chunks = -(-faces // chunk)
        identities = int(faces * per_face_ids)
        client_gb = run_bytes(Config(), faces, identities, 512, 2) / 1e9 + faces * 512 * 2 / 1e9
        for count in workers:
            chunk_wall = sum(costs.values()) * -(-chunks // count)
            client = client_fixed + client_per_face * faces
            worker_gb = (faces / count * 512 * 2 + fitted * 512 * 8 + identities * 512 * 4) / 1e9
            print(f"| {faces / 1e6:.0f}M | {count} | {chunk_wall:.0f} | {client:.0f} | {chunk_wall + client:.0f} | "
                  f"{client_gb:.0f} | {worker_gb:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="300k,1m")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "faceatlas-scale")
    parser.add_argument("--workers", default="8,32,128")
    args = parser.parse_args()
    args.data.mkdir(parents=True, exist_ok=True)
    print(machine())
    spread: dict[str, object] = {}
    for size in args.sizes.split(","):
        if size not in SIZES:
            raise SystemExit(f"--sizes: {size!r} is not one of {', '.join(SIZES)}")
        db = database(size, args.data)
        alone = one_run(db, args.data / f"out_{size}_one")
        spread = one_run(db, args.data / f"out_{size}_dask", ["--dask", "local:2"])
        side_by_side(size, alone, spread)
        print(identical(args.data / f"out_{size}_one", args.data / f"out_{size}_dask"))
    if spread:
        projection(spread, chunk_costs(spread), [int(count) for count in args.workers.split(",")])


if __name__ == "__main__":
    main()
