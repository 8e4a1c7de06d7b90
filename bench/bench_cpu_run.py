"""The everyday run, told truthfully: the seed's code vs ``faceatlas run`` on the 5k demo, cold and warm.

Each run is a fresh process, the two interleaved, ``--repeats`` times:

* seed's code = the blog post's path: ``umap.UMAP(n_components=2, metric="cosine").fit_transform(embedding)``
  on the loaded ``actor.npy``, then a scatter PNG of the faces coloured by id (matplotlib, ``+`` markers);
* faceatlas = ``faceatlas run --input actor.npy`` (every output: five maps, tables, analysis, model);
* cold = empty numba and user caches (``NUMBA_CACHE_DIR`` and ``XDG_CACHE_HOME`` fresh per run), as on a
  fresh machine; warm = a second run on the machine (caches filled by a run before the timed ones).

Prints per mode the median wall time of each, the ratio, peak RSS, map quality of both maps
(trustworthiness k=15 cosine, same-id share of 4 map neighbours, computed alike from the coordinates each
wrote), faceatlas's per-stage medians from ``run.json`` ``timings``, and ``faceatlas --help``'s wall time.

``--before TREE`` adds a third command, ``python -m job run`` in another checkout (e.g. a ``git worktree`` of
an older commit), so a change's gain is measured side by side in the same runs.

    python bench/bench_cpu_run.py [--repeats 3] [--skip-cold] [--before TREE] [-- extra faceatlas run arguments]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEED_CODE = """
import sys
import numpy as np
import umap
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
records = np.load(sys.argv[1], allow_pickle=False)
embedding = umap.UMAP(n_components=2, metric="cosine").fit_transform(records["embedding"])
plt.figure(figsize=(10, 10))
plt.scatter(embedding[:, 0], embedding[:, 1], c=records["id"], cmap="hsv", marker="+", s=10)
plt.savefig(sys.argv[2])
np.save(sys.argv[3], embedding.astype(np.float32))
"""


def timed(command: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of ``command`` in a fresh process; raises if it fails."""
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"{command[:3]} failed: {process.stderr.read().decode()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024


def quality(db: Path, coords: Path) -> tuple[float, float]:
    """Trustworthiness (k=15, cosine in 512-D, 5,000 faces) and same-id share of 4 map neighbours."""
    import numpy as np

    from job.analysis.metrics import same_id_knn, trustworthiness

    records = np.load(db, allow_pickle=False)
    unit = records["embedding"].astype(np.float32)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    xy = np.load(coords, allow_pickle=False)
    return trustworthiness(unit, xy, 15, 5000, 0), same_id_knn(xy, records["id"].astype(np.int64), 4)


def projection_coords(out: Path, coords: Path) -> None:
    import numpy as np
    import pyarrow.parquet as pq

    table = pq.read_table(out / "projection.parquet", columns=["row", "x", "y"]).to_pydict()
    order = np.argsort(table["row"])
    np.save(coords, np.column_stack([np.asarray(table["x"])[order], np.asarray(table["y"])[order]]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-cold", action="store_true", help="warm runs only (a cold seed run takes ~35 s)")
    parser.add_argument("--before", type=Path, help="a checkout of an earlier faceatlas to time side by side")
    parser.add_argument("extra", nargs="*", help="more faceatlas run arguments, after --")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_cpu_run_"))
    try:
        db = work / "actor.npy"
        subprocess.run([sys.executable, "-m", "job", "demo-db", str(db)], check=True, capture_output=True)
        seed = [sys.executable, "-c", SEED_CODE, str(db), str(work / "seed.png"), str(work / "seed_coords.npy")]
        ours = [sys.executable, "-m", "job", "run", "--input", str(db), "--truth", str(work / "actor.truth.json"),
                "--out", str(work / "out"), *args.extra]
        commands: dict[str, tuple[list[str], Path | None]] = {"seed": (seed, None)}
        if args.before:
            before = [sys.executable, "-m", "job", "run", "--input", str(db), "--out", str(work / "before"),
                      *args.extra]
            commands["before"] = (before, args.before.resolve())
        commands["faceatlas"] = (ours, None)
        modes = [("warm", False)] if args.skip_cold else [("cold", True), ("warm", False)]
        warm_env = {**os.environ, "NUMBA_CACHE_DIR": str(work / "warm" / "numba"), "XDG_CACHE_HOME": str(work / "warm")}
        for command, cwd in commands.values():  # fill the warm caches
            timed(command, warm_env, cwd)
        print(f"machine: {os.cpu_count()} cores, {_memory_gib():.0f} GiB; {args.repeats} runs each, interleaved")
        for mode, cold in modes:
            runs: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
            stages: dict[str, list[dict[str, float]]] = {name: [] for name in commands if name != "seed"}
            for repeat in range(args.repeats):
                for name, (command, cwd) in commands.items():
                    env = warm_env
                    if cold:
                        fresh = work / f"cold{repeat}{name}"
                        env = {**os.environ, "NUMBA_CACHE_DIR": str(fresh / "numba"), "XDG_CACHE_HOME": str(fresh)}
                    runs[name].append(timed(command, env, cwd))
                    if name in stages:
                        out = work / ("out" if name == "faceatlas" else "before")
                        stages[name].append(json.loads((out / "run.json").read_text())["timings"])
            _report(mode, runs, stages)
        projection_coords(work / "out", work / "ours_coords.npy")
        seed_q, ours_q = quality(db, work / "seed_coords.npy"), quality(db, work / "ours_coords.npy")
        print(f"map quality (last run): trustworthiness seed {seed_q[0]:.4f}  faceatlas {ours_q[0]:.4f}  "
              f"(diff {ours_q[0] - seed_q[0]:+.4f}); same-id share seed {seed_q[1]:.4f}  faceatlas {ours_q[1]:.4f}  "
              f"(diff {ours_q[1] - seed_q[1]:+.4f})")
        recorded = json.loads((work / "out" / "run.json").read_text())["metrics"]
        print("faceatlas analysis (last run): " + ", ".join(
            f"{key} {recorded[key]}" for key in ("suspect_precision", "suspect_recall", "lookalike_recall")
            if key in recorded) + f", clusters ari {recorded['clusters']['ari']}")
        for name, cwd in (("faceatlas", None), ("before", args.before)):
            if name == "faceatlas" or cwd:
                helps = [timed([sys.executable, "-m", "job", "--help"], warm_env, cwd)[0] for _ in range(5)]
                print(f"{name} --help: median {statistics.median(helps):.2f} s (of 5)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _report(mode: str, runs: dict[str, list[tuple[float, float]]], stages: dict[str, list[dict[str, float]]]) -> None:
    wall = {name: statistics.median(t for t, _ in values) for name, values in runs.items()}
    rss = {name: statistics.median(r for _, r in values) for name, values in runs.items()}
    print(f"{mode}:")
    for name, values in runs.items():
        print(f"  {name:<10} median {wall[name]:6.2f} s  peak RSS {rss[name]:6.0f} MiB  runs "
              + ", ".join(f"{t:.2f}" for t, _ in values))
    for name in wall:
        if name != "faceatlas":
            print(f"  {name} / faceatlas: {wall[name] / wall['faceatlas']:.2f}x")
    for name, recorded in stages.items():
        medians = {stage: statistics.median(s.get(stage, 0.0) for s in recorded) for stage in recorded[0]}
        print(f"  {name} stages (median s): " + ", ".join(f"{stage} {value:.2f}" for stage, value in medians.items())
              + f"; outside the stages {wall[name] - sum(medians.values()):.2f}")


def _memory_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


if __name__ == "__main__":
    main()
