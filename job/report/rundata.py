"""A finished run read back from its folder: what the atlas page and the redrawn maps are made from.

Everything comes from the files the run wrote (``run.json``, ``projection.parquet``, ``map_model.npz``,
``lookalikes.csv``, ``names.json``, ``corrections.csv``), never from the input database, so ``faceatlas
report`` and ``faceatlas render`` need neither the database nor a refit. The commands take it from
:func:`job.store.runs.open_run` (every file's checksum verified, the files proven to belong together:
:func:`run_data`); the run itself reads its staging folder before run.json exists (:func:`read_run`).
``corrections.csv`` is read as untrusted text that can never stop the page (:func:`read_corrections`).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from job.errors import InputError, one_line
from job.maps.mapmodel import MODEL_FILE, MapModel, load_model, model_bytes
from job.store.coherence import NAMES_FILE, read_lookalikes, read_projection, read_run_names, require_page_columns
from job.store.outputs import PROJECTION_FILE
from job.store.reports import CORRECTIONS_FILE, LOOKALIKES_FILE
from job.store.runrecord import RunRecord
from job.store.runs import FinishedRun

REPORT_FILE = "report.html"
MAX_CORRECTIONS = 20_000  # rows of corrections.csv the page lists (most certain first); the file has them all
MAX_CELL_CHARS = 10_000  # a corrections.csv cell: two names of 4,096 characters and an arrow fit
CORRECTION_COLUMNS = ("what", "face", "from", "to", "score", "reason", "names", "row", "from_id", "to_id", "action")
_REQUIRED_COLUMNS = CORRECTION_COLUMNS[:6]
_LINE_CHARS = 1 << 20  # corrections.csv is read in lines of at most this many characters (memory stays bounded)
_NOT_UTF8 = re.compile("[\ud800-\udfff]")  # bytes that are not UTF-8, as the surrogateescape handler reads them


@dataclass(frozen=True)
class Corrections:
    """``corrections.csv`` as the page lists it: untrusted text, read so that no file can break the page.

    Attributes
    ----------
    header : its column names (empty when ``problem``)
    rows : its first readable rows, at most :data:`MAX_CORRECTIONS`, in file order, each ``len(header)`` cells
        exactly as the file holds them (so the page can write an accepted row back byte for byte)
    total : the rows in the file
    skipped : rows among those read that were left out: a number of cells other than the header's, a cell over
        :data:`MAX_CELL_CHARS` characters, bytes that are not UTF-8, or broken CSV quoting
    problem : why no row could be read (no header, a header without the columns the page needs), or None
    """

    header: list[str]
    rows: list[list[str]]
    total: int
    skipped: int
    problem: str | None = None


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
    corrections : corrections.csv as read, or None for a run without one (made before faceatlas wrote it)
    """

    folder: Path
    record: RunRecord
    columns: dict[str, np.ndarray]
    model: MapModel
    names: dict[int, str] | None
    lookalikes: list[tuple[int, int, float, bool]]
    corrections: Corrections | None = None

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
                   finished.contents.lookalikes or [], _corrections(finished.files))


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
    return RunData(folder, record, columns, model, names, lookalikes, _corrections(files))


def _corrections(files: dict[str, Path]) -> Corrections | None:
    return read_corrections(files[CORRECTIONS_FILE]) if CORRECTIONS_FILE in files else None


def read_corrections(path: Path, limit: int = MAX_CORRECTIONS) -> Corrections:
    """``path`` (a ``corrections.csv``) read for the page: its header and first ``limit`` readable rows.

    Never raises for what the file holds: rows that cannot be read are counted in ``skipped``, a file that
    cannot be read at all comes back with its ``problem`` (the page says it; the rest of the page is drawn).
    """
    try:
        with path.open("rb") as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")
            return _read_rows(csv.reader(_lines(text)), limit)
    except OSError as exc:
        return Corrections([], [], 0, 0, f"cannot be read ({one_line(exc.strerror or exc, 200)})")


def _lines(text: io.TextIOWrapper) -> Iterator[str]:
    """The file's lines, one longer than :data:`_LINE_CHARS` in pieces (each then read as a ragged row)."""
    while line := text.readline(_LINE_CHARS):
        yield line


def _read_rows(reader: Iterator[list[str]], limit: int) -> Corrections:
    try:
        header = next(reader, None)
    except csv.Error as exc:
        return Corrections([], [], 0, 0, f"its header is not CSV ({one_line(exc, 200)})")
    if header is None:
        return Corrections([], [], 0, 0, "it is empty (not even a header line)")
    if not all(map(_readable, header)):
        return Corrections([], [], 0, 0, "its header is not UTF-8 text")
    missing = [name for name in _REQUIRED_COLUMNS if name not in header]
    if missing:
        found = one_line(", ".join(header), 200, ellipsis="\u2026")
        return Corrections([], [], 0, 0, f"its header has no column {', '.join(missing)} (it reads: {found})")
    rows: list[list[str]] = []
    total = skipped = 0
    while True:
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error:  # quoting broken, or a field beyond csv's own limit: the reader starts afresh after it
            record = None
        if record == []:  # a blank line is no row
            continue
        total += 1
        if len(rows) >= limit:
            continue
        if record is not None and len(record) == len(header) and all(map(_readable, record)):
            rows.append(record)
        else:
            skipped += 1
    return Corrections(header, rows, total, skipped)


def _readable(cell: str) -> bool:
    """A cell the page lists as it is: within :data:`MAX_CELL_CHARS`, and UTF-8 in the file."""
    return len(cell) <= MAX_CELL_CHARS and not _NOT_UTF8.search(cell)


def _missing(folder: Path, name: str) -> InputError:
    return InputError(f"{folder}: has no {name} (made by faceatlas < 0.3?); rerun faceatlas run")


def write_names(path: Path, names: dict[int, str]) -> Path:
    """``names.json``: the run's display names by identity id, so its page and maps can be redrawn later."""
    from job.store.outputs import write_json

    ordered = sorted(names.items())
    return write_json(path, {"ids": [i for i, _ in ordered], "names": [n for _, n in ordered]})
