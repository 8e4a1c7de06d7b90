"""Proving that a finished run's files belong together: the second half of :func:`job.store.runs.open_run`.

A SHA-256 in ``run.json`` proves a file is the one the record vouches for, not that the record is the run's:
whoever can edit a file can re-hash it into ``run.json``. So every command that opens a run (``verify``,
``report``, ``render``, ``nearest``, ``transform``, ``invert``) also gets, from :func:`check_run`, one proof
that the files are one run's, read as untrusted input:

* ``run.json``: typed as it is read (:meth:`job.store.runrecord.RunRecord.parse`: every field of its type,
  every number one faceatlas writes, an integer within int64, a finite float), and the counts and times read
  back from it within their ranges (:func:`check_run`);
* ``map_model.npz``: each array within its own ranges (:func:`job.maps.mapmodel.load_model`), its dim and
  identity count those of run.json;
* ``projection.parquet``: one row per face of run.json (counted before it is read), the columns a run writes
  with their dtypes, map positions finite float32 within :data:`~job.maps.mapmodel.MAP_LIMIT`, cluster labels
  within the faces, and, against the model, exactly its identities and its faces where the model puts them;
* ``names.json``: integer ids within int64;
* ``lookalikes.csv``: pairs of the model's identities with finite similarities.

Anything else is refused with one line naming the file, what is wrong, and the fix (:data:`FIX`).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from job.analysis.suspects import VERDICTS
from job.config import COUNT_MAX
from job.errors import InputError
from job.io.files import parse_json, read_text, shown
from job.maps.mapmodel import MAP_LIMIT, MODEL_FILE, MapModel, load_model, model_bytes
from job.store.outputs import PROJECTION_FILE, RUN_FILE
from job.store.reports import LOOKALIKES_FILE
from job.store.runrecord import RunRecord

NAMES_FILE = "names.json"
FIX = "the folder's files do not belong together or were edited; rerun faceatlas run"
INT64 = 2**63
ROW_LIMIT = 2**53  # input rows and row numbers: positions in a file, which the page carries as exact float64
SECONDS_MAX = 1e9  # a stage's time in run.json (some 30 years)

# projection.parquet: the columns a run writes, by kind; the first five kinds must be present (faceatlas >= 0.5)
_POSITIONS = ("x", "y", "z")
_INTEGERS = ("row", "id", "suggested_id", "cluster", "duplicate_of")
_FLOATS = ("outlier_score", "quality", "fit")
_FLAGS = ("suspect", "held_out", "fitted", "supervised_disagreement")
_BASE = ("row", "id", "x", "y")  # every run since 0.1; the rest are cross-checked where present
PAGE_COLUMNS = ("row", "id", "x", "y", "suspect", "suggested_id", "cluster", "outlier_score", "verdict")
_SIMILAR = ("similar_id_", "similar_cos_")
_CELL_BYTES = 64  # a generous bound on one cell of a column a run writes, as stored (verdict text included)


@dataclass(frozen=True)
class RunContents:
    """A finished run's data files, read and proven to belong together (None: the run has no such file).

    Attributes
    ----------
    columns : projection.parquet columns by name, each ndarray of shape (n_faces,) (``verdict`` as str objects)
    model : the map model (identity ids, centroids, anchors, the map faces' positions)
    names : identity id -> display name
    lookalikes : lookalikes.csv's (id_a, id_b, similarity, possible_same_person), most alike first
    """

    columns: dict[str, np.ndarray] | None
    model: MapModel | None
    names: dict[int, str] | None
    lookalikes: list[tuple[int, int, float, bool]] | None = None


@dataclass(frozen=True)
class _Sizes:
    """run.json's ``input`` counts, each checked (None: not recorded)."""

    n_faces: int | None
    n_identities: int | None
    dim: int | None


def check_run(folder: Path, record: RunRecord, files: dict[str, Path]) -> RunContents:
    """Read the run's projection, map model and names (those it has) and prove they and ``record`` are one run's.

    Raises
    ------
    InputError
        A count or time in run.json out of its range, a file that cannot be read, or files that disagree (see
        the module).
    """
    sizes = _record_sizes(record, folder / RUN_FILE)
    model = _read_model(files.get(MODEL_FILE), sizes)
    columns = None
    if PROJECTION_FILE in files:
        columns = read_projection(files[PROJECTION_FILE], sizes.n_faces)
        _refuse(files[PROJECTION_FILE], _value_problem(columns))
        if model is not None:
            _refuse(files[MODEL_FILE], _model_problem(model, columns))
    names = read_run_names(files[NAMES_FILE]) if NAMES_FILE in files else None
    lookalikes = None
    if LOOKALIKES_FILE in files:
        lookalikes = read_lookalikes(files[LOOKALIKES_FILE], model.identity if model is not None else None)
    return RunContents(columns, model, names, lookalikes)


def _number(value: float | None, key: str, path: Path, *, low: float, high: float) -> None:
    """Refuse the record's number at dotted ``key`` (typed already; None: not recorded) outside ``low``..``high``."""
    if value is not None and not low <= value <= high:
        kind = "an integer" if isinstance(low, int) and isinstance(high, int) else "a number"
        raise InputError(f"{path}: field {key!r} is {shown(value)}, expected {kind} from {_text(low)} to "
                         f"{_text(high)}; {FIX}")


def _text(bound: float) -> str:
    return f"{bound:,}" if isinstance(bound, int) else f"{bound:g}"


def _record_sizes(record: RunRecord, path: Path) -> _Sizes:
    """The record's counts and times that faceatlas reads back, each within its range (its types and numbers
    were checked as it was read: :meth:`RunRecord.parse`)."""
    given, fit, metrics = record.input, record.fit, record.metrics
    _number(given.n_faces, "input.n_faces", path, low=1, high=COUNT_MAX)
    faces = given.n_faces or COUNT_MAX
    _number(given.n_identities, "input.n_identities", path, low=1, high=faces)
    _number(given.dim, "input.dim", path, low=1, high=1 << 20)
    counts = {"fit.fitted": fit.fitted, "fit.placed": fit.placed, "fit.held_out": fit.held_out,
              "metrics.suspects": metrics.suspects, "metrics.held_out": metrics.held_out,
              "metrics.clusters.n": metrics.clusters.n if metrics.clusters is not None else None,
              "metrics.supervised_disagreement": metrics.supervised_disagreement}
    counts.update({f"metrics.verdicts.{name}": value for name, value in (metrics.verdicts or {}).items()})
    for key, value in counts.items():
        _number(value, key, path, low=0, high=faces)
    for name, seconds in record.timings.items():
        _number(seconds, f"timings.{name}", path, low=0, high=SECONDS_MAX)
    return _Sizes(given.n_faces, given.n_identities, given.dim)


def _read_model(path: Path | None, sizes: _Sizes) -> MapModel | None:
    """The model (its size bounded by the record's, before it is read) with the record's dim and identity count."""
    if path is None:
        return None
    n_faces, n_identities, dim = sizes.n_faces, sizes.n_identities, sizes.dim
    bound = None
    if n_faces is not None and n_identities is not None and dim is not None:
        bound = model_bytes(n_faces, n_identities, dim)
    model = load_model(path, bound)
    if sizes.dim is not None and model.dim != sizes.dim:
        raise InputError(f"{path}: holds {model.dim}-D centroids but run.json says input.dim {sizes.dim}; {FIX}")
    if sizes.n_identities is not None and len(model.identity) != sizes.n_identities:
        raise InputError(f"{path}: holds {len(model.identity):,} identities but run.json says input.n_identities "
                         f"{sizes.n_identities:,}; {FIX}")
    n_faces = sizes.n_faces
    if n_faces is not None and (len(model.coords) > n_faces or int(model.count.sum()) > n_faces):
        raise InputError(f"{path}: holds more faces than run.json's input.n_faces {n_faces:,}; {FIX}")
    return model


def read_projection(path: Path, n_faces: int | None = None) -> dict[str, np.ndarray]:
    """``projection.parquet`` as {column: ndarray of shape (n_faces,)} (``verdict`` as str objects); its rows
    (``n_faces`` when given) and the columns' presence and types are checked before any column is read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with path.open("rb") as handle:  # a Python file: pyarrow takes only UTF-8 path strings
            source = pq.ParquetFile(handle)
            _check_schema(source.schema_arrow, source.metadata.num_rows, path, n_faces)
            known = [name for name in source.schema_arrow.names if _known(name)]  # others are never read
            check_stored_size(source.metadata, known, path)
            table = source.read(columns=known)
        columns: dict[str, np.ndarray] = {}
        for name in table.column_names:
            column = table.column(name)
            if column.null_count:
                raise InputError(f"{path}: column {name!r} has empty cells, which no faceatlas run writes; {FIX}")
            columns[name] = _verdicts(column) if name == "verdict" else column.to_numpy(zero_copy_only=False)
    except (OSError, ValueError, TypeError, NotImplementedError, pa.ArrowException) as exc:
        raise InputError(f"{path}: not a readable Parquet file ({type(exc).__name__}); {FIX}") from None
    return columns


def _known(name: str) -> bool:
    """A column faceatlas reads back (any other a file holds is left unread)."""
    return name in (*_POSITIONS, *_INTEGERS, *_FLOATS, *_FLAGS, "verdict") or name.startswith(_SIMILAR)


def check_stored_size(metadata: Any, names: list[str], path: Path, cell_bytes: int = _CELL_BYTES) -> None:
    """Refuse, before reading, columns larger than a run's rows can make them at ``cell_bytes`` a cell (a re-hashed
    file with huge cells would otherwise be read whole into memory)."""
    n_rows, wanted = metadata.num_rows, set(names)
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        for index in range(row_group.num_columns):
            chunk = row_group.column(index)
            bound = row_group.num_rows * cell_bytes + (1 << 20)
            if chunk.path_in_schema in wanted and chunk.total_uncompressed_size > bound:
                raise InputError(f"{path}: column {chunk.path_in_schema!r} holds {chunk.total_uncompressed_size:,} "
                                 f"bytes for {n_rows:,} faces, more than a run writes; {FIX}")


def _verdicts(column: Any) -> np.ndarray:
    """The verdict column as str objects, decoded through its dictionary (a run writes a handful of values)."""
    import pyarrow as pa

    if not pa.types.is_dictionary(column.type):
        return np.asarray(column.cast(pa.string()).to_pylist(), dtype=object)
    array = column.combine_chunks()
    values = np.asarray(array.dictionary.cast(pa.string()).to_pylist(), dtype=object)
    verdicts: np.ndarray = values[array.indices.to_numpy(zero_copy_only=False)]
    return verdicts


def require_page_columns(columns: dict[str, np.ndarray], path: Path) -> None:
    """The columns the page and the maps are drawn from (written since faceatlas 0.3), else an InputError."""
    missing = [name for name in PAGE_COLUMNS if name not in columns]
    if missing:
        raise InputError(f"{path}: has no column {missing[0]!r} (made by an older faceatlas); rerun faceatlas run "
                         "to draw its page and maps")


def _check_schema(schema: Any, n_rows: int, path: Path, n_faces: int | None) -> None:
    """The columns every run writes, each column faceatlas reads of its type; similar-identity columns in pairs
    1..k."""

    missing = [name for name in _BASE if name not in schema.names]
    if missing:
        raise InputError(f"{path}: has no column {missing[0]!r}, which every faceatlas run writes; {FIX}")
    if n_faces is not None and n_rows != n_faces:
        raise InputError(f"{path}: holds {n_rows:,} face rows but run.json says input.n_faces {n_faces:,}; {FIX}")
    unpaired = _unpaired_similar(schema.names)
    if unpaired:
        raise InputError(f"{path}: column {unpaired!r} is not one of the pairs similar_id_k, similar_cos_k (k = 1, "
                         f"2, ...) a run writes; {FIX}")
    for field in schema:
        expected = _type_problem(field.name, field.type)
        if expected:
            raise InputError(f"{path}: column {field.name!r} has type {field.type}, expected {expected}; {FIX}")


def _unpaired_similar(names: list[str]) -> str:
    """The first similar-identity column outside the pairs ``similar_id_k``/``similar_cos_k``, k = 1..n, or ""."""
    n = 0
    while all(f"{prefix}{n + 1}" in names for prefix in _SIMILAR):
        n += 1
    paired = {f"{prefix}{rank}" for prefix in _SIMILAR for rank in range(1, n + 1)}
    return next((name for name in names if name.startswith(_SIMILAR) and name not in paired), "")


def _type_problem(name: str, kind: Any) -> str:
    """The type a run writes column ``name`` with, when the Arrow type ``kind`` is not it; "" when it is (or when
    faceatlas does not read the column)."""
    import pyarrow as pa

    if name in _POSITIONS:  # float32, as the map's positions are everywhere
        return "" if kind == pa.float32() else "float32"
    if name in _INTEGERS or name.startswith(_SIMILAR[0]):
        return "" if pa.types.is_signed_integer(kind) else "a signed integer"
    if name in _FLOATS or name.startswith(_SIMILAR[1]):
        return "" if pa.types.is_floating(kind) else "a floating point type"
    if name in _FLAGS:
        return "" if pa.types.is_boolean(kind) else "bool"
    if name == "verdict":
        values = kind.value_type if pa.types.is_dictionary(kind) else kind
        return "" if pa.types.is_string(values) or pa.types.is_large_string(values) else "text"
    return ""


def _refuse(path: Path, problem: str) -> None:
    if problem:
        raise InputError(f"{path}: {problem}; {FIX}")


def _value_problem(columns: dict[str, np.ndarray]) -> str:
    """What is wrong with the projection's own values, or "" (what the page, the maps and the queries rest on)."""
    n_faces = len(columns["id"])
    ranges = {**dict.fromkeys(_POSITIONS, (-MAP_LIMIT, MAP_LIMIT, "map positions")),
              "row": (0, ROW_LIMIT - 1, "input rows"), "duplicate_of": (-1, ROW_LIMIT - 1, "input rows or -1"),
              "cluster": (-1, n_faces - 1, "cluster labels (at most one cluster per face) or -1")}
    with np.errstate(invalid="ignore"):
        for name, (low, high, what) in ranges.items():
            values = columns.get(name)
            if values is None:
                continue
            inside = (values >= low) & (values <= high)
            if not inside.all():
                return (f"column {name!r} holds {shown(values[~inside][0].item())}, expected {what} from "
                        f"{_text(low)} to {_text(high)}")
        for name in (name for name in columns if name in _FLOATS or name.startswith(_SIMILAR[1])):
            if not np.all(np.isnan(columns[name]) | (np.abs(columns[name]) <= np.finfo(np.float32).max)):
                return f"column {name!r} holds inf or numbers beyond float32, expected finite scores or NaN"
    unknown = set(columns["verdict"].tolist()) - set(VERDICTS) if "verdict" in columns else set()
    if unknown:
        first = shown(sorted(map(str, unknown))[0])
        return f"column 'verdict' holds {first}, expected one of {', '.join(VERDICTS)}"
    return ""


def _model_problem(model: MapModel, columns: dict[str, np.ndarray]) -> str:
    """How ``model`` (already checked on its own) and the projection disagree, or "" when they are one run's."""
    ids = np.unique(columns["id"])
    if not np.array_equal(ids, model.identity):
        strangers = int(np.count_nonzero(~np.isin(model.identity, ids)))
        unknown = int(np.count_nonzero(~np.isin(ids, model.identity)))
        return (f"its {len(model.identity):,} identities are not the {len(ids):,} ids of {PROJECTION_FILE} "
                f"({strangers:,} of them are not there, {unknown:,} of its ids are not in the model)")
    if ("z" in columns) != (model.n_components == 3):
        has = "a" if "z" in columns else "no"
        return f"a {model.n_components}-D map, but {PROJECTION_FILE} has {has} z column"
    for name in (name for name in columns if name == "suggested_id" or name.startswith(_SIMILAR[0])):
        known = np.isin(columns[name], model.identity) | (columns[name] == -1)
        if not known.all():
            return (f"{PROJECTION_FILE} column {name!r} holds {int(columns[name][~known][0])}, which is none of its "
                    "identities")
    if "held_out" in columns:  # the model holds the position of every face not held out, in row order
        on_map = ~columns["held_out"]
        positions = np.column_stack([columns[axis][on_map] for axis in _POSITIONS[:model.n_components]])
        if positions.shape != model.coords.shape or not np.array_equal(positions, model.coords):
            return f"its faces are not where {PROJECTION_FILE} puts them (the faces not held out, in row order)"
    return ""


def read_run_names(path: Path) -> dict[int, str]:
    """``names.json``: identity id -> display name (ids within int64)."""
    fix = "rerun faceatlas run"
    payload = parse_json(read_text(path, "a run's names file", fix, 1 << 30), str(path), fix)
    ids, names = (payload.get("ids"), payload.get("names")) if isinstance(payload, dict) else (None, None)
    if not (isinstance(ids, list) and isinstance(names, list) and len(ids) == len(names)
            and all(isinstance(i, int) and not isinstance(i, bool) and -INT64 <= i < INT64 for i in ids)
            and all(isinstance(n, str) for n in names)):
        raise InputError(f"{path}: not a faceatlas names file (expected ids within int64 and names lists); {fix}")
    return dict(zip(ids, names, strict=True))


def read_lookalikes(path: Path, identities: np.ndarray | None = None) -> list[tuple[int, int, float, bool]]:
    """``lookalikes.csv``'s pairs; with ``identities`` (the map model's, sorted), a pair naming another id or a
    similarity that is not finite is refused (a file edited and re-hashed into run.json)."""
    text = read_text(path, "a run's look-alikes table", "rerun faceatlas run", 1 << 30)
    pairs: list[tuple[int, int, float, bool]] = []
    limit = csv.field_size_limit(len(text) + 1)  # a long name must not fail the read (the default cap: 131,072)
    try:
        pairs.extend((int(line["id_a"]), int(line["id_b"]), float(line["similarity"]),
                      line["possible_same_person"] == "true") for line in csv.DictReader(io.StringIO(text)))
    except (KeyError, ValueError, TypeError, csv.Error) as exc:
        raise InputError(f"{path}: not a faceatlas look-alikes table ({type(exc).__name__}); rerun faceatlas "
                         "run") from None
    finally:
        csv.field_size_limit(limit)
    if identities is not None:
        known = set(identities.tolist())
        wrong = next((pair for pair in pairs if pair[0] not in known or pair[1] not in known
                      or not np.isfinite(pair[2])), None)
        if wrong is not None:
            raise InputError(f"{path}: the pair {wrong[0]}, {wrong[1]} (similarity {wrong[2]}) is not a pair of this "
                             f"run's identities with a finite similarity; {FIX}")
    return pairs
