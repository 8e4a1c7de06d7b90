"""Map analysis against baselines, side by side on the same faces in one run.

1. Misfiled faces, on the standard and the hard demo: faceatlas's centroid margin vs kNN-classifier
   label-issue baselines (the cleanlab approach: an out-of-sample k=10 neighbour vote as predicted
   probabilities): (a) an issue when the vote's top label is not the given label, (b) cleanlab's own
   ``find_label_issues`` on those probabilities, when cleanlab is installed. Precision/recall.
2. Look-alikes: recall of the planted pairs in the top 2x-planted pairs.
3. New faces and map points, on held-out faces of the standard demo (2% left out of the fit): faceatlas's
   transform/invert vs umap-learn's ``transform``/``inverse_transform`` on the same fitted faces.
   transform id_at_1: the nearest fitted face on the map has the face's id. inverse: cosine between the
   face and the inverse of its map position (each method's own placement, and umap-learn's inverse at our
   placement), id_at_1: the most similar identity centroid of the inverted vector is the face's id.
4. Cost: analysis vs UMAP time in whole runs on the standard demo (run.json timings), and analysis time
   (kNN graph + suspects + look-alikes, NN-descent forced) at 4x and 16x the faces, to show it grows
   ~linearly, not quadratically.

    python bench/bench_analysis.py [--repeats 3] [--sections suspects,pipeline,placement,scaling]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from dataclasses import replace

import numpy as np

from job.analysis.quality import model_from_fit, pick_holdout
from job.config import UmapConfig
from job.io.demo import HARD, DemoSpec, make_demo
from job.analysis.identities import identity_table, top_similar
from job.knn.exact import neighbours, normalise
from job.analysis.lookalikes import find_lookalikes
from job.maps.placement import invert, place
from job.analysis.suspects import score_faces


def knn_vote_issues(ids: np.ndarray, graph: np.ndarray, k: int = 10) -> np.ndarray:
    """cleanlab-style label issues from an out-of-sample k-NN vote (the face itself excluded)."""
    labels = ids[graph[:, 1 : k + 1]]
    own = (labels == ids[:, None]).sum(axis=1)
    best = np.array([np.unique(row, return_counts=True)[1].max() for row in labels])
    return own < best


def cleanlab_issues(ids: np.ndarray, graph: np.ndarray, k: int = 10) -> np.ndarray | None:
    """cleanlab's own ``find_label_issues`` (default filter) on the out-of-sample k-NN vote as pred_probs;
    None when cleanlab is not installed (``pip install cleanlab``; not a faceatlas dependency)."""
    try:
        from cleanlab.filter import find_label_issues
    except ImportError:
        return None
    codes = np.unique(ids, return_inverse=True)[1]
    n_classes = int(codes.max()) + 1
    probs = np.full((len(ids), n_classes), 1e-3 / n_classes, dtype=np.float32)
    np.add.at(probs, (np.repeat(np.arange(len(ids)), k), codes[graph[:, 1 : k + 1]].ravel()), 1.0 / k)
    probs /= probs.sum(axis=1, keepdims=True)
    with warnings.catch_warnings():  # "too few examples in class N": one per identity with few faces
        warnings.simplefilter("ignore", UserWarning)
        return np.asarray(find_label_issues(codes, probs, n_jobs=1), dtype=bool)


def suspects_section(repeats: int) -> None:
    print("== misfiled faces: precision / recall (faceatlas vs kNN-classifier label-issue baselines) ==")
    for name, spec in [("standard", DemoSpec()), ("hard", HARD), ("hard seed 1", replace(HARD, seed=1))]:
        records, truth = make_demo(spec)
        ids, unit = records["id"].astype(np.int64), normalise(records["embedding"].astype(np.float32))
        planted = np.zeros(len(ids), dtype=bool)
        planted[truth.misfiled_rows] = True
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            graph = neighbours(unit, 11)
            table = identity_table(unit, ids)
            scores = score_faces(unit, table, table.codes[graph.indices[:, 1:]])
            pairs = find_lookalikes(identity_table(unit, ids, ~scores.suspect))
            times.append(time.perf_counter() - start)
        baselines = {"kNN vote, top label != given": knn_vote_issues(ids, graph.indices),
                     "cleanlab find_label_issues": cleanlab_issues(ids, graph.indices)}
        if baselines["cleanlab find_label_issues"] is None:
            print("(cleanlab not installed: pip install cleanlab to add its find_label_issues as a baseline)")
        for label, flagged in (("faceatlas", scores.suspect), *baselines.items()):
            if flagged is None:
                continue
            hits = int((flagged & planted).sum())
            print(f"{name:<12} {label:<30} precision {hits / max(flagged.sum(), 1):.3f}  recall "
                  f"{hits / planted.sum():.3f}  ({int(flagged.sum())} flagged, {int(planted.sum())} planted)")
        wanted = {tuple(p) for p in truth.lookalike_pairs}
        top = set(zip(pairs.id_a[: 2 * len(wanted)].tolist(), pairs.id_b[: 2 * len(wanted)].tolist(), strict=True))
        print(f"{name:<12} look-alike recall at top {2 * len(wanted)}: {len(top & wanted) / len(wanted):.3f}; "
              f"kNN graph + suspects + look-alikes median {statistics.median(times):.2f} s over {len(ids):,} faces")


def placement_section() -> None:
    from scipy.spatial import cKDTree

    from job.reduce.backends import import_umap, umap_params

    print("== held-out faces: transform and inverse (faceatlas vs umap-learn) ==")
    records, _ = make_demo(DemoSpec())
    ids, unit = records["id"].astype(np.int64), normalise(records["embedding"].astype(np.float32))
    held = pick_holdout(ids, 0.02, 1000, 0)
    fitted, rows = np.flatnonzero(~held), np.flatnonzero(held)
    table = identity_table(unit, ids)
    graph = neighbours(unit[fitted], 16)
    nearby = np.empty((len(ids), 10), dtype=np.int64)
    nearby[fitted] = table.codes[fitted[graph.indices[:, 1:11]]]
    nearby[rows] = top_similar(unit[rows], table.centroids, 10)[0]
    scores = score_faces(unit, table, nearby)
    rows = rows[~scores.suspect[rows]]
    umap = import_umap()
    params = UmapConfig()
    start = time.perf_counter()
    model_umap = umap.UMAP(**umap_params(params, 0)).fit(unit[fitted])
    fit_s = time.perf_counter() - start
    coords = np.asarray(model_umap.embedding_, dtype=np.float32)
    model, _ = model_from_fit(unit, table, scores, fitted, coords)
    tree = cKDTree(coords)

    def map_id_at_1(points: np.ndarray) -> float:
        return float((ids[fitted][tree.query(points)[1]] == ids[rows]).mean())

    def inverse_scores(vectors: np.ndarray) -> tuple[float, float]:
        vectors = normalise(vectors.astype(np.float32))
        cos = float(np.mean(np.einsum("ij,ij->i", vectors, unit[rows])))
        best = model.identity[top_similar(vectors, model.centroid, 1)[0][:, 0]]
        return cos, float((best == ids[rows]).mean())

    start = time.perf_counter()
    ours = place(model, unit[rows]).coords
    ours_inv = np.stack([invert(model, p).vector for p in ours])
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    theirs = np.asarray(model_umap.transform(unit[rows]), dtype=np.float32)
    theirs_inv = np.asarray(model_umap.inverse_transform(theirs))
    theirs_s = time.perf_counter() - start
    cross_inv = np.asarray(model_umap.inverse_transform(ours))
    print(f"{len(rows)} held-out faces, UMAP fit on {len(fitted):,} faces in {fit_s:.1f} s")
    print(f"transform id_at_1   faceatlas {map_id_at_1(ours):.3f}   umap-learn transform {map_id_at_1(theirs):.3f}")
    for label, (cos, hit) in (("faceatlas invert(place(face))", inverse_scores(ours_inv)),
                              ("umap-learn inverse_transform(transform(face))", inverse_scores(theirs_inv)),
                              ("umap-learn inverse_transform(place(face))", inverse_scores(cross_inv))):
        print(f"inverse {label:<48} mean_cos {cos:.3f}  id_at_1 {hit:.3f}")
    print(f"time for all held-out faces: faceatlas {ours_s:.2f} s, umap-learn {theirs_s:.2f} s "
          f"(ratio {ours_s / theirs_s:.2g})")


def scaling_section(repeats: int) -> None:
    print("== analysis cost vs faces (NN-descent forced; 4x the faces each step) ==")
    previous = None
    for n_identities in (2_000, 8_000, 32_000):
        records, _ = make_demo(DemoSpec(n_identities=n_identities, seed=2))
        ids, unit = records["id"].astype(np.int64), normalise(records["embedding"].astype(np.float32))
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            graph = neighbours(unit, 11, exact_max=0, seed=None)
            table = identity_table(unit, ids)
            scores = score_faces(unit, table, table.codes[graph.indices[:, 1:]], exact_max=0)
            find_lookalikes(identity_table(unit, ids, ~scores.suspect), exact_max=0)
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        growth = f"  x{median / previous:.2f} for 4x the faces" if previous else ""
        print(f"{len(ids):>8,} faces  median {median:7.2f} s  runs {', '.join(f'{t:.2f}' for t in times)}{growth}")
        previous = median


def pipeline_section(repeats: int) -> None:
    import json
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    print("== whole run on the standard demo: analysis stages vs the UMAP fit (fresh processes) ==")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats + 1):  # the first fills numba's cache and is dropped
            subprocess.run([sys.executable, "-m", "job", "run", "--out", str(Path(tmp) / "out")], check=True,
                           capture_output=True)
            rows.append(json.loads((Path(tmp) / "out" / "run.json").read_text())["timings"])
    rows = rows[1:]
    for stage in ("knn", "suspects", "umap", "analysis", "render"):
        print(f"{stage:<9} median {statistics.median(r[stage] for r in rows):6.2f} s")
    ratio = statistics.median((r["suspects"] + r["analysis"]) / r["umap"] for r in rows)
    shared = statistics.median((r["knn"] + r["suspects"] + r["analysis"]) / r["umap"] for r in rows)
    print(f"ratio (suspects + analysis) / umap: {ratio:.2f}; with the kNN graph (shared with UMAP): {shared:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sections", default="suspects,pipeline,placement,scaling",
                        help="comma-separated: suspects, pipeline, placement, scaling")
    args = parser.parse_args()
    sections = {"suspects": lambda: suspects_section(args.repeats), "pipeline": lambda: pipeline_section(args.repeats),
                "placement": placement_section, "scaling": lambda: scaling_section(args.repeats)}
    for name in args.sections.split(","):
        sections[name.strip()]()


if __name__ == "__main__":
    main()
