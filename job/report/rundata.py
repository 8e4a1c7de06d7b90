"""A finished run read back from its folder: what the atlas page and the redrawn maps are made from.

Everything comes from the files the run wrote (``run.json``, ``projection.parquet``, ``map_model.npz``,
``lookalikes.csv``, ``names.json``), never from the input database, so ``faceatlas report`` and ``faceatlas
render`` need neither the database nor a refit. The commands take it from :func:`job.store.runs.open_run`
(every file's checksum verified, the files proven to belong together: :func:`run_data`); the run itself reads
its staging folder before run.json exists (:func:`read_run`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from job.errors import InputError
from job.maps.mapmodel import MODEL_FILE, MapModel, load_model, model_bytes
from job.store.coherence import NAMES_FILE, read_lookalikes, read_projection, read_run_names, require_page_columns
from job.store.outputs import PROJECTION_FILE
from job.store.reports import LOOKALIKES_FILE
from job.store.runrecord import RunRecord
from job.store.runs import FinishedRun

REPORT_FILE = "report.html"


@dataclass(frozen=True)
class RunData:
    """One run's map and answers, as host arrays.

    Attributes
    ----------
    folder : the run's folder
    record : run.json, typed (the run passes its own before writing it)
    columns : projection.parquet columns by name, each ndarray of shape (n_faces,) (``verdict`` as str objects)
    model : the map model (identity ids, centroids, anchors, fitted faces' coordinates)
    names : identity id -> display name, or None when the run had no names file
    lookalikes : (id_a, id_b, similarity, possible_same_person) of lookalikes.csv, most alike first
    """

    folder: Path
    record: RunRecord
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


def run_data(finished: FinishedRun) -> RunData:
    """The run :func:`job.store.runs.open_run` opened, its files already read and proven to belong together."""
    columns, model = finished.contents.columns, finished.contents.model
    if columns is None or model is None:
        raise _missing(finished.folder, PROJECTION_FILE if columns is None else MODEL_FILE)
    require_page_columns(columns, finished.files[PROJECTION_FILE])
    return RunData(finished.folder, finished.record, columns, model, finished.contents.names,
                   finished.contents.lookalikes or [])


def read_run(folder: Path, record: RunRecord, files: dict[str, Path], model: MapModel | None = None) -> RunData:
    """The run in ``folder`` whose record is ``record`` and whose files by name are ``files`` (``model``: its
    map model, when the caller holds it already: the run itself, which reads what it has just written)."""
    projection = files.get(PROJECTION_FILE)
    model_path = files.get(MODEL_FILE)
    if projection is None or model_path is None:
        raise _missing(folder, PROJECTION_FILE if projection is None else MODEL_FILE)
    n_faces, n_identities, dim = record.input.n_faces, record.input.n_identities, record.input.dim
    bound = None
    if n_faces is not None and n_identities is not None and dim is not None and min(n_faces, n_identities, dim) > 0:
        bound = model_bytes(n_faces, n_identities, dim)
    model = load_model(model_path, bound) if model is None else model
    columns = read_projection(projection)
    names = read_run_names(files[NAMES_FILE]) if NAMES_FILE in files else None
    lookalikes = read_lookalikes(files[LOOKALIKES_FILE]) if LOOKALIKES_FILE in files else []
    return RunData(folder, record, columns, model, names, lookalikes)


def _missing(folder: Path, name: str) -> InputError:
    return InputError(f"{folder}: has no {name} (made by faceatlas < 0.3?); rerun faceatlas run")


def write_names(path: Path, names: dict[int, str]) -> Path:
    """``names.json``: the run's display names by identity id, so its page and maps can be redrawn later."""
    from job.store.outputs import write_json

    ordered = sorted(names.items())
    return write_json(path, {"ids": [i for i, _ in ordered], "names": [n for _, n in ordered]})
