"""A finished run read back from its folder: what the atlas page and the redrawn maps are made from.

Everything comes from the files the run wrote (``run.json``, ``projection.parquet``, ``map_model.npz``,
``lookalikes.csv``, ``names.json``), never from the input database, so ``faceatlas report`` and ``faceatlas
render`` need neither the database nor a refit. Read through :func:`job.store.runs.open_run` (every file's
checksum verified) by the commands; the run itself reads its staging folder before run.json exists.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from job.errors import InputError
from job.maps.mapmodel import MODEL_FILE, MapModel, load_model, model_bytes
from job.store.outputs import PROJECTION_FILE
from job.store.runs import section

NAMES_FILE = "names.json"
REPORT_FILE = "report.html"
_COLUMNS = ("row", "id", "x", "y", "suspect", "suggested_id", "cluster", "outlier_score", "verdict")


@dataclass(frozen=True)
class RunData:
    """One run's map and answers, as host arrays.

    Attributes
    ----------
    folder : the run's folder
    record : run.json (at least the keys the page shows; the run passes its own before writing it)
    columns : projection.parquet columns by name, each ndarray of shape (n_faces,) (``verdict`` as str objects)
    model : the map model (identity ids, centroids, anchors, fitted faces' coordinates)
    names : identity id -> display name, or None when the run had no names file
    lookalikes : (id_a, id_b, similarity, possible_same_person) of lookalikes.csv, most alike first
    """

    folder: Path
    record: dict[str, Any]
    columns: dict[str, np.ndarray]
    model: MapModel
    names: dict[int, str] | None
    lookalikes: list[tuple[int, int, float, bool]]

    @property
    def n_faces(self) -> int:
        return len(self.columns["id"])

    @property
    def coords(self) -> np.ndarray:
        """(n_faces, 2) float32 map positions (x, y; a 3-D map's first two axes)."""
        return np.column_stack([self.columns["x"], self.columns["y"]]).astype(np.float32)

    def similar(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Each face's most similar identities (n_faces, n) int64 and their cosines (n_faces, n) float32,
        or None for a run made before faceatlas recorded them."""
        ranks = sorted(int(name.rsplit("_", 1)[1]) for name in self.columns if name.startswith("similar_id_"))
        if not ranks:
            return None
        ids = np.column_stack([self.columns[f"similar_id_{r}"] for r in ranks]).astype(np.int64)
        cosine = np.column_stack([self.columns[f"similar_cos_{r}"] for r in ranks]).astype(np.float32)
        return ids, cosine


def read_run(folder: Path, record: dict[str, Any], files: dict[str, Path], model: MapModel | None = None
             ) -> RunData:
    """The run in ``folder`` whose record is ``record`` and whose files by name are ``files`` (``model``: its
    map model, when the caller holds it already: the run itself)."""
    projection = files.get(PROJECTION_FILE)
    model_path = files.get(MODEL_FILE)
    if projection is None or model_path is None:
        missing = PROJECTION_FILE if projection is None else MODEL_FILE
        raise InputError(f"{folder}: has no {missing} (made by faceatlas < 0.3?); rerun faceatlas run")
    recorded = section(record, "input")
    size = [recorded.get(key) for key in ("n_faces", "n_identities", "dim")]
    bound = model_bytes(*size) if all(isinstance(n, int) and n > 0 for n in size) else None
    model = load_model(model_path, bound) if model is None else model
    columns = _read_projection(projection)
    names = _read_names(files[NAMES_FILE]) if NAMES_FILE in files else None
    lookalikes = _read_lookalikes(files["lookalikes.csv"]) if "lookalikes.csv" in files else []
    return RunData(folder, record, columns, model, names, lookalikes)


def _read_projection(path: Path) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable Parquet file ({type(exc).__name__}); rerun faceatlas run") from None
    missing = [name for name in _COLUMNS if name not in table.column_names]
    if missing:
        raise InputError(f"{path}: has no column {missing[0]!r} (made by faceatlas < 0.5?); rerun faceatlas run")
    columns: dict[str, np.ndarray] = {}
    for name in table.column_names:
        column = table.column(name)
        if name == "verdict":
            columns[name] = np.asarray(column.cast("string").to_pylist(), dtype=object)
        else:
            columns[name] = column.to_numpy(zero_copy_only=False)
    return columns


def write_names(path: Path, names: dict[int, str]) -> Path:
    """``names.json``: the run's display names by identity id, so its page and maps can be redrawn later."""
    from job.store.outputs import write_json

    ordered = sorted(names.items())
    return write_json(path, {"ids": [i for i, _ in ordered], "names": [n for _, n in ordered]})


def _read_names(path: Path) -> dict[int, str]:
    from job.io.files import parse_json, read_text

    fix = "rerun faceatlas run"
    payload = parse_json(read_text(path, "a run's names file", fix, 1 << 30), str(path), fix)
    ids, names = (payload.get("ids"), payload.get("names")) if isinstance(payload, dict) else (None, None)
    if not (isinstance(ids, list) and isinstance(names, list) and len(ids) == len(names)
            and all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
            and all(isinstance(n, str) for n in names)):
        raise InputError(f"{path}: not a faceatlas names file (expected ids and names lists); {fix}")
    return dict(zip(ids, names, strict=True))


def _read_lookalikes(path: Path) -> list[tuple[int, int, float, bool]]:
    from job.io.files import read_text

    text = read_text(path, "a run's look-alikes table", "rerun faceatlas run", 1 << 30)
    pairs = []
    try:
        for line in csv.DictReader(io.StringIO(text)):
            pairs.append((int(line["id_a"]), int(line["id_b"]), float(line["similarity"]),
                          line["possible_same_person"] == "true"))
    except (KeyError, ValueError, TypeError) as exc:
        raise InputError(f"{path}: not a faceatlas look-alikes table ({type(exc).__name__}); rerun faceatlas "
                         "run") from None
    return pairs
