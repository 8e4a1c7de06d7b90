"""Reading faces from an Immich database against the .npy loader, side by side, the same faces each way:

1. the read: faces per second of ``load_database`` on ``postgresql://`` (an Immich-shaped database in a real
   PostgreSQL 16 + pgvector, pgserver's binaries, on a unix socket) and on the same faces as ``.npy``, each in a
   fresh process, with its peak RSS;
2. the whole run: ``faceatlas run`` end to end on each, wall time, peak RSS (of the run's process) and the map's
   quality from its run.json (trustworthiness, same-id share of map neighbours, planted misfiled P/R).

The database is built from Immich's own DDL (tests/fixtures/immich_schema.sql) with the demo's faces and no
unassigned or deleted ones, and the .npy holds them as float32 (pgvector's ``vector`` is float32), so both
sides hold exactly the same values. ``--float16`` writes the .npy as the demo makes it (half the bytes: the
loader then keeps float16 unit vectors, which a database's float32 cannot).

    python bench/bench_stores.py [--identities 20000] [--per-identity 5] [--repeats 3]

``--real MODEL`` (dlib, arcface, sface) plants instead into real embeddings: the LFW set bench/real_faces.py
built and cached (``$XDG_CACHE_HOME/faceatlas-bench``, never committed): every person with 5+ photos, their
first 20, ``--relabel`` of the faces relabelled to a random other person, 20 of those put in one photo with a
genuine face of the person they are filed under, 2 % left without a person and 1 % deleted, per seed
(``--seeds``); it reports, for the Immich database and the same faces as .npy side by side, planted misfiled
precision/recall, the same-photo conflicts found, and how often an unassigned face's suggested person is its
own.

    python bench/bench_stores.py --real arcface --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import PEAK

READ = PEAK + """
import json, resource, time
from job.config import InputConfig
from job.io.database import load_database
start = time.perf_counter()
database = load_database(InputConfig(path={path!r}))
seconds = time.perf_counter() - start
print(json.dumps({{"s": seconds, "faces": database.n_faces,
                  "rss": _peak()}}))
"""


def _read(path: str) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", READ.format(path=path)], check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def _run(source: str, out: Path) -> dict[str, object]:
    """One ``faceatlas run`` in a fresh process: wall seconds, the process's peak RSS (KiB), run.json."""
    code = ("import resource, sys, time, json, subprocess; t = time.perf_counter(); "
            f"subprocess.run([{sys.executable!r}, '-m', 'job', 'run', '--input', {source!r}, '--out', {str(out)!r}, "
            "'--seed', '0'], check=True, capture_output=True); "
            "print(json.dumps({'s': time.perf_counter() - t, "
            "'rss': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))")
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    measured = json.loads(done.stdout)
    measured["record"] = json.loads((out / "run.json").read_text())
    return measured


def _planted_pr(out: Path, planted_keys: set[str], key_column: str) -> tuple[float, float]:
    import csv

    with (out / "suspects.csv").open(encoding="utf-8") as handle:
        found = {row[key_column] for row in csv.DictReader(handle)}
    hits = len(found & planted_keys)
    return hits / max(len(found), 1), hits / max(len(planted_keys), 1)


def _real_set(model: str) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and person ids of the cached LFW set for ``model``: people with 5+ photos, their first 20."""
    real, keep = real_subset(model)
    people = np.unique(real.person[keep])
    return real.embeddings[keep].astype(np.float32), np.searchsorted(people, real.person[keep]).astype(np.int64)


def real_subset(model: str) -> tuple[object, np.ndarray]:
    """The cached LFW set for ``model`` and the faces the benches use: people with 5+ photos, their first 20."""
    import real_faces

    found = sorted(real_faces.cache_dir().glob(f"*-{model}-*.npz"))
    if not found:
        raise SystemExit(f"no cached real set for {model} in {real_faces.cache_dir()}: build it first with "
                         "bench/bench_real.py --photos LFW_FOLDER --models " + model)
    real = real_faces._read(found[0])
    counts = np.bincount(real.person)
    return real, (counts[real.person] >= 5) & (real.number <= 20)


def _csv(path: Path) -> list[dict[str, str]]:
    import csv

    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _pr(found: set[int], planted: set[int]) -> str:
    hits = len(found & planted)
    return f"{hits / max(len(found), 1):.3f}/{hits / len(planted):.3f}"


def real(model: str, seeds: list[int], relabel: float) -> None:
    """Planted damage in real embeddings, read from an Immich database and from .npy, side by side."""
    import pgserver

    from tests.immich import Plants, build_immich

    embeddings, truth_ids = _real_set(model)
    n = len(truth_ids)
    print(f"{model}: {n:,} real faces of {truth_ids.max() + 1} people (LFW, 5+ photos, first 20)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        server = pgserver.get_server(folder / "pg", cleanup_mode="stop")
        try:
            server.psql("CREATE EXTENSION IF NOT EXISTS vector;")
            for seed in seeds:
                rng = np.random.default_rng(seed)
                misfiled = np.sort(rng.choice(n, int(n * relabel), replace=False))
                ids = truth_ids.copy()
                ids[misfiled] = (ids[misfiled] + rng.integers(1, truth_ids.max() + 1, len(misfiled))) % (
                    truth_ids.max() + 1)
                plant = build_immich(server, f"real_{seed}", ids, embeddings, misfiled.tolist(), seed=seed,
                                     plants=Plants(conflicts=20))
                kept = sorted(set(range(n)) - set(plant.deleted_rows) - set(plant.unassigned_rows))
                records = np.empty(len(kept), dtype=[("id", "<i8"), ("embedding", "<f4", (embeddings.shape[1],))])
                records["id"], records["embedding"] = ids[kept], embeddings[kept]
                np.save(folder / f"real_{seed}.npy", records)
                out_db, out_npy = folder / f"db_{seed}", folder / f"npy_{seed}"
                _run(plant.url, out_db)
                _run(str(folder / f"real_{seed}.npy"), out_npy)
                planted = set(misfiled.tolist())
                db_rows = {plant.face_key[r]: r for r in range(n)}
                suspects = _csv(out_db / "suspects.csv")
                evidence = {db_rows[row["face_key"]] for row in suspects if row["reason"] != "same_photo"}
                every = {db_rows[row["face_key"]] for row in suspects}
                from_file = {kept[int(row["row"])] for row in _csv(out_npy / "suspects.csv")}
                conflicts = {m for m, _ in plant.conflicts}
                by_photo = {db_rows[row["face_key"]] for row in suspects if row["reason"] in ("same_photo", "both")}
                loose = _csv(out_db / "unassigned.csv")
                key_of = {value: key for key, value in plant.person_key.items()}
                right = np.mean([key_of[row["suggested_key"]] == truth_ids[db_rows[row["face_key"]]]
                                 for row in loose])

                print(f"  seed {seed}: misfiled P/R  .npy {_pr(from_file, planted)}  Immich by evidence "
                      f"{_pr(evidence, planted)}  Immich with the same-photo check {_pr(every, planted)}; evidence "
                      f"sets equal: {evidence == from_file}; "
                      f"same-photo conflicts found {len(conflicts & by_photo)}/{len(conflicts)} "
                      f"(flagged by photo {len(by_photo)}); unassigned given their own person "
                      f"{right:.3f} of {len(loose)}", flush=True)
        finally:
            server.cleanup()


def main() -> None:
    import pgserver

    from job.io.demo import DemoSpec, make_demo
    from tests.immich import Plants, build_immich

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", type=int, default=20_000)
    parser.add_argument("--per-identity", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--float16", action="store_true", help="write the .npy as float16, as the demo makes it")
    parser.add_argument("--reads-only", action="store_true", help="measure the reads, not the whole runs")
    parser.add_argument("--real", default="", help="plant into the cached real LFW set of this model instead")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--relabel", type=float, default=0.03)
    args = parser.parse_args()
    if args.real:
        real(args.real, [int(seed) for seed in args.seeds.split(",")], args.relabel)
        return
    records, truth = make_demo(DemoSpec(n_identities=args.identities, faces_per_identity=args.per_identity, seed=7))
    n = len(records)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        npy = folder / "faces.npy"
        if args.float16:
            np.save(npy, records)
        else:
            wide = np.empty(n, dtype=[("id", "<u2"), ("embedding", "<f4", (records["embedding"].shape[1],))])
            wide["id"], wide["embedding"] = records["id"], records["embedding"]
            np.save(npy, wide)
        server = pgserver.get_server(folder / "pg", cleanup_mode="stop")
        try:
            server.psql("CREATE EXTENSION IF NOT EXISTS vector;")
            start = time.perf_counter()
            plant = build_immich(server, "immich", records["id"].astype(np.int64), records["embedding"],
                                 list(truth.misfiled_rows), plants=Plants(0.0, 0.0, 0, vector_index=False))
            print(f"{n:,} faces x 512: .npy {npy.stat().st_size / 2**20:.0f} MiB; Immich database built in "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
            reads: dict[str, list[dict[str, float]]] = {".npy": [], "Immich (PostgreSQL)": []}
            for _ in range(args.repeats):
                reads[".npy"].append(_read(str(npy)))
                reads["Immich (PostgreSQL)"].append(_read(plant.url))
            print("\nread (load_database, fresh process each)")
            medians = {}
            for name, values in reads.items():
                seconds = statistics.median(v["s"] for v in values)
                peak = statistics.median(v["rss"] for v in values) / 2**10
                medians[name] = (seconds, peak)
                print(f"  {name:<20} median {seconds:6.2f} s  {n / seconds:10,.0f} faces/s   peak RSS {peak:6.0f} MiB")
            (npy_s, npy_m), (pg_s, pg_m) = medians.values()
            print(f"  ratio PostgreSQL / .npy: time {pg_s / npy_s:.2f}, peak memory {pg_m / npy_m:.2f}", flush=True)
            if args.reads_only:
                return
            runs: dict[str, list[dict[str, object]]] = {".npy": [], "Immich (PostgreSQL)": []}
            for repeat in range(args.repeats):
                runs[".npy"].append(_run(str(npy), folder / f"out-npy-{repeat}"))
                runs["Immich (PostgreSQL)"].append(_run(plant.url, folder / f"out-pg-{repeat}"))
            planted_rows = set(truth.misfiled_rows)
            print("\nwhole run (faceatlas run, fresh process each)")
            summary = {}
            for name, values in runs.items():
                seconds = statistics.median(float(v["s"]) for v in values)  # type: ignore[arg-type]
                peak = statistics.median(float(v["rss"]) for v in values) / 2**10  # type: ignore[arg-type]
                metrics = values[-1]["record"]["metrics"]  # type: ignore[index]
                out = folder / (f"out-npy-{args.repeats - 1}" if name == ".npy" else f"out-pg-{args.repeats - 1}")
                if name == ".npy":
                    precision, recall = _planted_pr(out, {str(r) for r in planted_rows}, "row")
                else:
                    precision, recall = _planted_pr(out, {plant.face_key[r] for r in planted_rows}, "face_key")
                summary[name] = (seconds, peak)
                print(f"  {name:<20} median {seconds:6.1f} s   peak RSS {peak:6.0f} MiB   trustworthiness "
                      f"{metrics['trustworthiness']:.3f}  same_id_knn {metrics['same_id_knn']:.3f}  misfiled P/R "
                      f"{precision:.3f}/{recall:.3f}")
            (npy_s, npy_m), (pg_s, pg_m) = summary.values()
            print(f"  ratio PostgreSQL / .npy: time {pg_s / npy_s:.2f}, peak memory {pg_m / npy_m:.2f}")
        finally:
            server.cleanup()
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    print(f"(peak RSS of the measuring process itself: {own:.0f} MiB)")


if __name__ == "__main__":
    main()
