"""The CuPy analysis path on a GPU against the NumPy path on the CPU: same answers, times side by side.

For a GPU machine with CUDA, CuPy and numba-cuda but no cuML and no network (cuML's UMAP is not run here).
For each size, a planted demo database (5 faces per identity, misfiled faces, look-alikes), then the stages
of a run that faceatlas computes on the GPU, once with NumPy arrays (the CPU path) and twice with CuPy
arrays (first: CuPy compiles its kernels; again: warm):

* identity table and leave-one-out fits;
* the exact kNN graph of every face against a 200k fit sample (GPU: ``cupy-exact``, the index used where
  cuVS is missing; CPU: faceatlas's blocked matrix products, timed on a sample of queries and scaled);
* candidates (graph identities, centroid neighbours, graph links) and the verdicts;
* look-alike pairs; trustworthiness of a 2-D PCA map (a stand-in for UMAP, the same on both sides).

Both sides judge on the GPU's graph, so their verdicts must agree exactly (up to float rounding); the
GPU graph is compared with the CPU one on the sampled queries.

    python bench/gpu_check.py                   # 100k and 1M faces (imports neither pydantic nor faiss)
    python bench/gpu_check.py --sizes 3000 --fake   # CPU only: the FAKE CuPy of tests/fakes, to check the script
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from job.analysis.candidates import find_candidates
from job.analysis.identities import identity_table
from job.analysis.lookalikes import find_lookalikes
from job.analysis.metrics import trustworthiness
from job.analysis.suspects import judge_faces, leave_one_out
from job.config import KnnConfig
from job.io.demo import DemoSpec, make_demo
from job.knn.exact import ExactIndex
from job.knn.graph import normalise
from job.knn.index import face_graph
from job.reduce.start import pca_start
from job.xp import fields_to_host

FIT_SAMPLE = 200_000
K = 16  # max(n_neighbors 15, neighbours 10 + 1)
CPU_GRAPH_QUERIES = 20_000
GPU = types.SimpleNamespace(exact_max_faces=10**12, knn_n_clusters=1, knn_overlap_factor=2, device_ids=[])


def sync(xp: Any) -> None:
    if xp is not np and hasattr(xp, "cuda") and hasattr(xp.cuda, "Device") and not getattr(xp, "IS_FAKE", False):
        xp.cuda.Device().synchronize()


def stages(xp: Any, unit: np.ndarray, ids: np.ndarray, reference: np.ndarray, *, graph: Any, coords: np.ndarray
           ) -> tuple[dict[str, float], dict[str, Any]]:
    """The GPU-capable stages in namespace ``xp`` on the given graph; seconds per stage and host answers."""
    times: dict[str, float] = {}
    answers: dict[str, Any] = {}

    def timed(name: str, work: Any) -> Any:
        sync(xp)
        start = time.perf_counter()
        value = work()
        sync(xp)
        times[name] = time.perf_counter() - start
        return value

    space = timed("to the GPU" if xp is not np else "to the GPU (n/a)", lambda: xp.asarray(unit) if xp is not np
                  else unit)
    table = timed("identity table", lambda: identity_table(space, ids))
    timed("leave-one-out", lambda: leave_one_out(space, table))
    if graph is None:
        exact = KnnConfig(method="exact", exact_max_faces=0)
        graph = timed("kNN graph (cupy-exact)", lambda: face_graph(space, reference, K, exact, seed=0, gpu=GPU))
        answers["graph"] = graph
    knn = KnnConfig(method="exact", exact_max_faces=10**12)
    candidates = timed("candidates", lambda: find_candidates(graph, table.codes, table.centroids, width=10, similar=5,
                                                             k=10, knn=knn, seed=0))
    rows = xp.arange(len(ids))
    scores, _ = timed("verdicts", lambda: judge_faces(space, table, graph, candidates.nearby, candidates.similar,
                                                      rows=rows))
    pairs = timed("look-alikes", lambda: find_lookalikes(table.without(space, xp.flatnonzero(scores.left_out)),
                                                         candidates.lookalike, 100, 0.6))
    trust = timed("trustworthiness", lambda: trustworthiness(space, coords, 15, 5000, 0))
    answers.update(scores=fields_to_host(scores), pairs=fields_to_host(pairs), trust=trust)
    return times, answers


def cpu_graph_on_sample(unit: np.ndarray, reference: np.ndarray, rows: np.ndarray) -> tuple[float, np.ndarray,
                                                                                               np.ndarray]:
    index = ExactIndex()
    index.build(unit[reference])
    start = time.perf_counter()
    found, similarity = index.query(unit[rows], K)
    return time.perf_counter() - start, found, similarity


def check(n_faces: int, xp: Any) -> None:
    n_ids = max(2, n_faces // 5)
    start = time.perf_counter()
    records, truth = make_demo(DemoSpec(n_identities=n_ids, faces_per_identity=5, seed=3))
    ids = records["id"].astype(np.int64)
    unit = normalise(records["embedding"])
    del records
    rng = np.random.default_rng(0)
    reference = np.sort(rng.choice(len(ids), size=min(len(ids), FIT_SAMPLE), replace=False))
    coords = pca_start(unit, 2, 0)
    print(f"\n## {len(ids):,} faces, {n_ids:,} identities, {len(reference):,} reference faces "
          f"(made in {time.perf_counter() - start:.1f} s)")

    gpu_first, gpu = stages(xp, unit, ids, reference, graph=None, coords=coords)
    gpu_again, _ = stages(xp, unit, ids, reference, graph=None, coords=coords)
    graph = fields_to_host(gpu["graph"])
    cpu_times, cpu = stages(np, unit, ids, reference, graph=graph, coords=coords)

    sample = np.sort(rng.choice(len(ids), size=min(len(ids), CPU_GRAPH_QUERIES), replace=False))
    seconds, found, similarity = cpu_graph_on_sample(unit, reference, sample)
    cpu_times["kNN graph (cupy-exact)"] = seconds * len(ids) / len(sample)
    gpu_rows = graph.indices[sample]
    own = np.full(len(ids), -1)
    own[reference] = np.arange(len(reference))
    same_sets = np.mean([set(a[a != o]) == set(b[b != o]) or abs(s[-1] - s[-2]) < 1e-6 for a, b, o, s in
                         zip(gpu_rows[:, :K - 1], found[:, :K - 1], own[sample], similarity, strict=True)])
    sim_gap = float(np.max(np.abs(np.sort(1 - graph.distances[sample], axis=1) - np.sort(similarity, axis=1))))

    print(f"{'stage':<26} {'CPU (NumPy) s':>14} {'GPU first s':>12} {'GPU again s':>12} {'CPU/GPU':>8}")
    for name in gpu_again:
        cpu_s = cpu_times.get(name)
        ratio = f"{cpu_s / gpu_again[name]:.1f}x" if cpu_s and gpu_again[name] > 0 else ""
        cpu_text = "" if cpu_s is None else f"{cpu_s:.3f}" + ("*" if name.startswith("kNN") else "")
        print(f"{name:<26} {cpu_text:>14} {gpu_first[name]:>12.3f} {gpu_again[name]:>12.3f} {ratio:>8}")
    total_cpu = sum(cpu_times.values())
    total_gpu = sum(gpu_again.values())
    print(f"{'total':<26} {total_cpu:>14.3f} {sum(gpu_first.values()):>12.3f} {total_gpu:>12.3f} "
          f"{total_cpu / total_gpu:>7.1f}x")
    print(f"* CPU kNN: {len(sample):,} queries timed, scaled to {len(ids):,}")

    a, b = cpu["scores"], gpu["scores"]
    suspects_a, suspects_b = set(np.flatnonzero(a.suspect)), set(np.flatnonzero(b.suspect))
    finite = np.isfinite(a.score) & np.isfinite(b.score)
    pairs_a = set(zip(cpu["pairs"].id_a.tolist(), cpu["pairs"].id_b.tolist(), strict=True))
    pairs_b = set(zip(gpu["pairs"].id_a.tolist(), gpu["pairs"].id_b.tolist(), strict=True))
    planted = set(truth.misfiled_rows)
    print(f"graph: GPU = CPU neighbour sets on {same_sets:.4f} of sampled faces; largest similarity gap {sim_gap:.2e}")
    agreement = float(np.mean(a.verdict == b.verdict))
    print(f"verdicts: {len(suspects_b):,} misfiled on GPU, {len(suspects_a):,} on CPU, "
          f"{len(suspects_a & suspects_b):,} both; verdict codes agree on {agreement:.6f}; largest score gap "
          f"{float(np.max(np.abs(a.score[finite] - b.score[finite]))):.2e}; planted misfiled found (GPU) "
          f"{len(suspects_b & planted) / max(len(planted), 1):.3f}")
    print(f"look-alikes: {len(pairs_a & pairs_b):,} of {len(pairs_a):,} CPU pairs also on GPU; trustworthiness "
          f"CPU {cpu['trust']:.6f} GPU {gpu['trust']:.6f}")
    # cuBLAS and the CPU's BLAS round differently: a face at a threshold may flip, nothing more
    jaccard = len(suspects_a & suspects_b) / max(len(suspects_a | suspects_b), 1)
    agree = (jaccard >= 0.99 and agreement >= 0.999 and len(pairs_a & pairs_b) >= 0.98 * len(pairs_a)
             and abs(cpu["trust"] - gpu["trust"]) < 1e-3)
    print(f"answers agree (misfiled sets' Jaccard {jaccard:.4f})" if agree else
          f"ANSWERS DIFFER (misfiled sets' Jaccard {jaccard:.4f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated face counts")
    parser.add_argument("--fake", action="store_true", help="CPU only, with the FAKE CuPy of tests/fakes")
    args = parser.parse_args()
    if args.fake:
        from tests.fakes import fake_cupy

        sys.modules["cupy"] = fake_cupy
    import cupy

    if not args.fake:
        props = cupy.cuda.runtime.getDeviceProperties(0)
        free, total = cupy.cuda.runtime.memGetInfo()
        print(f"GPU: {props['name'].decode()}, {total / 2**30:.1f} GiB ({free / 2**30:.1f} GiB free), CuPy "
              f"{cupy.__version__}, CPU: {os.cpu_count()} cores")
    else:
        print("FAKE CuPy (CPU): checks the script and the answers, not GPU times")
    for size in (int(text) for text in args.sizes.split(",")):
        check(size, cupy)


if __name__ == "__main__":
    main()
