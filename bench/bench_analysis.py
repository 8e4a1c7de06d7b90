"""Map analysis against baselines, side by side on the same faces in one run.

1. Misfiled faces, on the standard, hard, wild and uncentred demo shapes and several seeds, each in the working
   space a run computes in (job/analysis/geometry.py): faceatlas's verdicts vs
   (a) the leave-one-out centroid margin (other - own > 0, every identity compared), (b) faceatlas 0.4's rule
   (the same margin over the run's candidates, with the majority rule), (c) kNN-classifier label-issue
   baselines (the cleanlab approach: an out-of-sample k=10 neighbour vote as predicted probabilities): an
   issue when the vote's top label is not the given label, and cleanlab's own ``find_label_issues`` when
   cleanlab is installed. Precision/recall (low-quality faces called misfiled count as false alarms, and are
   also counted apart), precision in the top 10/50/100 by each method's own ranking, recall of misfiles
   between near-twins; faceatlas's low-quality and duplicate verdicts against the planted ones.
2. Look-alikes: recall of the planted pairs in the top 2x-planted pairs, and of near-twins in the top 2x-twins.
3. New faces and map points, on held-out faces of the standard demo (2% left out of the fit): faceatlas's
   transform/invert vs umap-learn's ``transform``/``inverse_transform`` on the same fitted faces.
   transform id_at_1: the nearest fitted face on the map has the face's id. inverse: cosine between the
   face and the inverse of its map position (each method's own placement, and umap-learn's inverse at our
   placement), id_at_1: the most similar identity centroid of the inverted vector is the face's id.
4. From verdict to fix (``--sections apply``): each planted database (and, with ``--real MODEL``, the cached
   LFW set through a real recognizer with 3% of its faces relabelled) run, its own corrections.csv applied
   (``faceatlas apply``), the copy run again. Planted-truth precision/recall of the misfiled verdicts before
   and after; planted misfiles left unfixed; new errors (a face filed right moved away, a face removed that
   was no re-enrolment); and the review rows' merges, which apply leaves to a person (how many of them join
   two planted people).
5. Cost: analysis vs UMAP time in whole runs on the standard demo (run.json timings), and analysis time
   (kNN graph + verdicts + look-alikes, an approximate index forced) at 4x and 16x the faces, to show it grows
   ~linearly, not quadratically.

    python bench/bench_analysis.py [--repeats 3] [--sections suspects,pipeline,placement,scaling,apply]
                                   [--real arcface,dlib,sface]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from job.analysis.candidates import find_candidates
from job.analysis.geometry import centre_in_place, measure_geometry
from job.analysis.identities import IdentityTable, identity_table, top_similar
from job.analysis.lookalikes import find_lookalikes
from job.analysis.quality import top_pair_recall
from job.analysis.suspects import DUPLICATE, LOW_QUALITY, judge_faces, leave_one_out, score_faces
from job.config import KnnConfig, UmapConfig
from job.io.database import check_arrays, face_quality
from job.io.demo import HARD, UNCENTRED, WILD, DemoSpec, DemoTruth, make_demo
from job.knn.exact import exact_knn
from job.knn.graph import normalise
from job.knn.index import face_graph
from job.maps.placement import invert, place
from job.maps.quality import model_from_map
from job.reduce.sample import pick_holdout
from job.space.kernels import rowwise_dot

SHAPES = [("standard", DemoSpec()), ("standard s3", DemoSpec(seed=3)), ("hard", HARD),
          ("hard s1", replace(HARD, seed=1)), ("wild", WILD), ("wild s1", replace(WILD, seed=1)),
          ("wild s2", replace(WILD, seed=2)), ("wild 600 ids s3", replace(WILD, n_identities=600, seed=3)),
          ("uncentred", UNCENTRED), ("uncentred s1", replace(UNCENTRED, seed=1)),
          ("uncentred s2", replace(UNCENTRED, seed=2))]
TOPS = (10, 50, 100)


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


def centroid_margin(unit: np.ndarray, table: IdentityTable, candidates: np.ndarray | None, majority: bool
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Flags and scores of other - own > 0: own the cosine to the leave-one-out centroid, other the best cosine
    to another identity's centroid (every identity when ``candidates`` is None; faceatlas 0.4 used the run's
    candidates and the majority rule: when more than half an identity's faces pass, none is flagged)."""
    own, lone = leave_one_out(unit, table)
    codes = table.codes
    if candidates is None:
        sims = unit @ table.centroids.T
        sims[np.arange(len(codes)), codes] = -np.inf
        other = sims.max(axis=1)
    else:
        other = np.full(len(codes), -np.inf)
        for column in candidates.T:
            sims = rowwise_dot(unit, table.centroids, np.maximum(column, 0))
            other = np.where((column >= 0) & (column != codes), np.maximum(other, sims), other)
    score = np.where(lone, -np.inf, other - own)
    flagged = score > 0
    if majority:
        count = np.bincount(codes[flagged], minlength=len(table.ids))
        flagged &= count[codes] * 2 <= table.counts[codes]
    return flagged, score


@dataclass
class Case:
    """One demo database, judged as a run judges it."""

    ids: np.ndarray
    unit: np.ndarray
    truth: DemoTruth
    table: IdentityTable
    graph: np.ndarray
    candidates: np.ndarray
    faceatlas: object
    original: np.ndarray
    seconds: float
    pairs: object


def judge_case(spec: DemoSpec) -> Case:
    """The run's verdict path on ``spec``'s database (loader checks, the geometry and its working space, one
    graph, candidates, quality from the norms or the neighbours, verdicts, pairs)."""
    records, truth = make_demo(spec)
    checked = check_arrays(records["id"], records["embedding"], "demo")
    ids, unit = checked.ids, np.asarray(checked.unit, dtype=np.float32)
    start = time.perf_counter()
    geometry = measure_geometry(unit, ids, checked.log_norms)
    centre_in_place(unit, geometry)
    table = identity_table(unit, ids)
    knn = KnnConfig(method="auto")
    graph = face_graph(unit, np.arange(len(ids)), 11, knn, seed=0)
    found = find_candidates(graph, table.codes, table.centroids, width=10, similar=5, k=10, knn=knn, seed=0)
    quality = geometry.face_quality(face_quality(checked.log_norms, len(ids)), graph)
    scores, original = judge_faces(unit, table, graph, found.nearby, found.similar, rows=checked.rows,
                                   quality=quality,
                                   calibration=geometry.calibration())
    pairs = find_lookalikes(table.without(unit, np.flatnonzero(scores.left_out)), found.lookalike,
                            baseline=geometry.working.impostor_median)
    seconds = time.perf_counter() - start
    candidates = np.concatenate([found.nearby, found.similar[table.codes]], axis=1)
    return Case(ids, unit, truth, table, graph.indices, candidates, scores, original, seconds, pairs)


def _line(name: str, label: str, flagged: np.ndarray, order: np.ndarray | None, case: Case) -> str:
    planted = np.zeros(len(case.ids), dtype=bool)
    planted[case.truth.misfiled_rows] = True
    low = np.zeros(len(case.ids), dtype=bool)
    low[case.truth.low_quality_rows] = True
    twins = {frozenset(pair) for pair in case.truth.twin_pairs}
    twin_rows = [row for row, true in zip(case.truth.misfiled_rows, case.truth.misfiled_true_ids, strict=True)
                 if frozenset((int(case.ids[row]), true)) in twins]
    hits = int((flagged & planted).sum())
    tops = ""
    if order is not None:
        ranked = order[flagged[order]]
        tops = " ".join(f"@{top} {planted[ranked[:top]].mean():.2f}" if len(ranked) >= top else f"@{top} -"
                        for top in TOPS)
    twin = f"twin misfiles {int(flagged[twin_rows].sum())}/{len(twin_rows)}" if twin_rows else ""
    return (f"{name:<16} {label:<28} P {hits / max(flagged.sum(), 1):.3f} R {hits / max(planted.sum(), 1):.3f} "
            f"({int(flagged.sum())} flagged, {int(planted.sum())} planted, {int((flagged & low).sum())} low-quality "
            f"called misfiled) {tops} {twin}")


def suspects_section(repeats: int) -> None:
    print("== misfiled faces: precision / recall, precision at top 10/50/100 (faceatlas vs baselines) ==")
    for name, spec in SHAPES:
        case = judge_case(spec)
        times = [case.seconds] + [judge_case(spec).seconds for _ in range(repeats - 1)]
        scores = case.faceatlas
        margin_flags, margin_score = centroid_margin(case.unit, case.table, None, majority=False)
        old_flags, old_score = centroid_margin(case.unit, case.table, case.candidates, majority=True)
        rows = [("faceatlas", scores.suspect, np.argsort(-scores.score, kind="stable")),
                ("leave-one-out margin", margin_flags, np.argsort(-margin_score, kind="stable")),
                ("faceatlas 0.4 rule", old_flags, np.argsort(-old_score, kind="stable")),
                ("kNN vote != given", knn_vote_issues(case.ids, case.graph), None),
                ("cleanlab find_label_issues", cleanlab_issues(case.ids, case.graph), None)]
        for label, flagged, order in rows:
            if flagged is not None:
                print(_line(name, label, flagged, order, case))
        _other_verdicts(name, case, statistics.median(times))
    if cleanlab_issues(np.zeros(2, dtype=np.int64), np.zeros((2, 11), dtype=np.int64)) is None:
        print("(cleanlab not installed: pip install cleanlab to add its find_label_issues as a baseline)")


def _other_verdicts(name: str, case: Case, seconds: float) -> None:
    scores, truth = case.faceatlas, case.truth
    low = set(np.flatnonzero(scores.verdict == LOW_QUALITY).tolist())
    dup = set(np.flatnonzero(scores.verdict == DUPLICATE).tolist())
    parts = []
    for label, found, planted in (("low quality", low, set(truth.low_quality_rows)),
                                  ("duplicate", dup, set(truth.duplicate_rows))):
        if planted:
            hits = len(found & planted)
            parts.append(f"{label} P {hits / max(len(found), 1):.3f} R {hits / len(planted):.3f}")
    every = {tuple(pair) for pair in truth.lookalike_pairs} | {tuple(pair) for pair in truth.twin_pairs}
    parts.append(f"look-alikes in top 2x {top_pair_recall(case.pairs, every):.3f}")
    if truth.twin_pairs:
        parts.append(f"near-twins in top 2x {top_pair_recall(case.pairs, {tuple(p) for p in truth.twin_pairs}):.3f}")
    print(f"{name:<16} {'; '.join(parts)}; graph + verdicts + look-alikes median {seconds:.2f} s over "
          f"{len(case.ids):,} faces")


def placement_section() -> None:
    from scipy.spatial import cKDTree

    from job.reduce.backends import import_umap, umap_params

    print("== held-out faces: transform and inverse (faceatlas vs umap-learn) ==")
    records, _ = make_demo(DemoSpec())
    ids, unit = records["id"].astype(np.int64), normalise(records["embedding"].astype(np.float32))
    held = pick_holdout(ids, 0.02, 1000, 0)
    fitted, rows = np.flatnonzero(~held), np.flatnonzero(held)
    table = identity_table(unit, ids)
    graph = exact_knn(unit[fitted], 16)
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
    model = model_from_map(unit, table, scores, fitted, coords)
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
    print("== analysis cost vs faces (approximate index forced; 4x the faces each step) ==")
    previous = None
    for n_identities in (2_000, 8_000, 32_000):
        records, _ = make_demo(DemoSpec(n_identities=n_identities, seed=2))
        ids, unit = records["id"].astype(np.int64), normalise(records["embedding"].astype(np.float32))
        rows = np.arange(len(ids))
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            knn = KnnConfig(method="auto", exact_max_faces=0)
            graph = face_graph(unit, rows, 11, knn, seed=None)
            table = identity_table(unit, ids)
            found = find_candidates(graph, table.codes, table.centroids, width=10, similar=5, k=10, knn=knn)
            scores, _ = judge_faces(unit, table, graph, found.nearby, found.similar, rows=rows)
            find_lookalikes(table.without(unit, np.flatnonzero(scores.suspect)), found.lookalike)
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


APPLY_SHAPES = [("standard", DemoSpec()), ("hard", HARD), ("hard s1", replace(HARD, seed=1)), ("wild", WILD),
                ("wild s1", replace(WILD, seed=1)), ("wild s2", replace(WILD, seed=2)), ("uncentred", UNCENTRED),
                ("uncentred s1", replace(UNCENTRED, seed=1))]
REAL_RELABEL = 0.03


@dataclass(frozen=True)
class Round:
    """One database before and after its own corrections: its input rows' true ids, planted misfiled rows, the
    rows that are re-enrolments (None: unknown) and the possible-same-person pairs planted as two people."""

    truth_ids: np.ndarray
    planted: set[int]
    duplicates: set[int] | None
    two_people: set[tuple[int, int]]
    known_errors: frozenset[int] = frozenset()  # faces whose given label is known to be wrong


def apply_round(name: str, db: Path, case: Round, folder: Path) -> None:
    """Run ``db``, apply its own corrections, run the copy; print one line."""
    import csv
    import json

    from job.apply.applying import apply_corrections
    from job.config import load_config
    from job.pipeline import run
    from job.store.coherence import read_projection

    def run_on(path: Path, out: Path) -> set[int]:
        run(load_config(None, {"input.path": str(path), "out": str(out), "umap.n_epochs": 50, "seed": 0}))
        with (out / "suspects.csv").open(encoding="utf-8") as handle:
            return {int(row["row"]) for row in csv.DictReader(handle)}

    def pr(found: set[int], planted: set[int]) -> str:
        hits = len(found & planted)
        return f"{hits / max(len(found), 1):.3f}/{hits / len(planted) if planted else float('nan'):.3f}"

    found = run_on(db, folder / "run1")
    fixed = folder / f"fixed{db.suffix}"
    applied = apply_corrections(folder / "run1", fixed)
    changes = json.loads(applied.record.read_text(encoding="utf-8"))["changes"]
    old_ids = np.asarray(np.load(db, allow_pickle=False)["id"], dtype=np.int64)
    new_ids = np.asarray(np.load(fixed, allow_pickle=False)["id"], dtype=np.int64)
    keep = np.ones(len(old_ids), dtype=bool)
    removed = [c["face"] for c in changes if c["what"] == "remove"]
    keep[removed] = False
    after = np.full(len(old_ids), -1, dtype=np.int64)
    after[keep] = new_ids
    right_before = old_ids == case.truth_ids
    unfixed = {row for row in case.planted if keep[row] and after[row] != case.truth_ids[row]}
    moved_away = int(np.sum(keep & right_before & (after != case.truth_ids)))
    columns = read_projection(folder / "run1" / "projection.parquet")
    partner = dict(zip(columns["row"].tolist(), columns["duplicate_of"].tolist(), strict=True))
    bad_removes = -1 if case.duplicates is None else sum(  # either face of a planted re-enrolment may go
        1 for row in removed if row not in case.duplicates and partner[row] not in case.duplicates)
    moved_rows = set(np.flatnonzero(keep & right_before & (after != case.truth_ids)).tolist())
    errata = len(moved_rows & case.known_errors)
    new_row = np.cumsum(keep) - 1
    found_after = run_on(fixed, folder / "run2")
    still = {int(new_row[row]) for row in unfixed}
    with (folder / "run1" / "corrections.csv").open(encoding="utf-8") as handle:
        merges = [(int(r["from"]), int(r["to"])) for r in csv.DictReader(handle) if r["action"] == "merge"]
    joined = sum(tuple(sorted(pair)) in case.two_people for pair in merges)
    counts = applied.counts
    print(f"{name:<16} before P/R {pr(found, case.planted)} | applied {counts['move']} moves, {counts['remove']} "
          f"removes | planted unfixed {len(unfixed)}/{len(case.planted)}, new errors: {moved_away} moved away"
          f"{f' ({errata} of them known label errors)' if case.known_errors else ''}, "
          f"{'?' if bad_removes < 0 else bad_removes} removed wrongly | after: {len(found_after)} suspects, "
          f"{len(found_after & still)} of them planted-unfixed | review merges {len(merges)}, "
          f"{joined} of them two planted people", flush=True)


def apply_section(real_models: list[str]) -> None:
    import tempfile

    from job.io.demo import write_demo

    print("== from verdict to fix: each database's own corrections applied, then run again ==")
    for name, spec in APPLY_SHAPES:
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "db.npy"
            _, truth = write_demo(db, spec)
            true_ids = truth.true_ids(np.load(db, allow_pickle=False)["id"])
            pairs = {tuple(sorted(p)) for p in (*truth.twin_pairs, *truth.lookalike_pairs)}
            apply_round(name, db, Round(true_ids, set(truth.misfiled_rows), set(truth.duplicate_rows), pairs),
                        Path(tmp))
    for model in real_models:
        import sys

        sys.path.insert(0, str(Path(__file__).parent))
        from bench_real import ERRATA
        from bench_stores import _real_set, real_subset

        embeddings, truth_ids = _real_set(model)
        real, kept = real_subset(model)
        errata = frozenset(k for k, name in enumerate(np.asarray(real.files)[kept].tolist())  # type: ignore[attr-defined]
                           if Path(name).name in ERRATA)
        for seed in (0, 1, 2):
            rng = np.random.default_rng(seed)
            n, people = len(truth_ids), int(truth_ids.max()) + 1
            planted = np.sort(rng.choice(n, int(n * REAL_RELABEL), replace=False))
            ids = truth_ids.copy()
            ids[planted] = (ids[planted] + rng.integers(1, people, len(planted))) % people
            with tempfile.TemporaryDirectory() as tmp:
                db = Path(tmp) / "real.npy"
                records = np.empty(n, dtype=[("id", "<i8"), ("embedding", "<f4", (embeddings.shape[1],))])
                records["id"], records["embedding"] = ids, embeddings
                np.save(db, records)
                apply_round(f"LFW {model} s{seed}", db,
                            Round(truth_ids, set(planted.tolist()), None, set(), errata), Path(tmp))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sections", default="suspects,pipeline,placement,scaling",
                        help="comma-separated: suspects, pipeline, placement, scaling, apply")
    parser.add_argument("--real", default="", help="apply: also the cached real LFW set of these models")
    args = parser.parse_args()
    sections = {"suspects": lambda: suspects_section(args.repeats), "pipeline": lambda: pipeline_section(args.repeats),
                "placement": placement_section, "scaling": lambda: scaling_section(args.repeats),
                "apply": lambda: apply_section([m for m in args.real.split(",") if m])}
    for name in args.sections.split(","):
        sections[name.strip()]()


if __name__ == "__main__":
    main()
