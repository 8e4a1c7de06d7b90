"""Questions asked of a finished run: place new faces, and what lies at a map point.

Everything starts from :func:`open_map`, which goes through :func:`job.store.runs.open_run` (every file's
SHA-256 checked against ``run.json``, ``map_model.npz`` read with ``allow_pickle=False``, the model proven to
be the one of the run's projection and record). The
model is backend-neutral, so a CPU-only install answers for maps fitted with cuML too.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from job.atomic import atomic_write, existing_ancestor
from job.config import InputConfig
from job.errors import InputError, UsageError
from job.io.database import FaceDatabase, load_database
from job.maps.mapmodel import MODEL_FILE, MapModel
from job.maps.placement import Placement, place
from job.store.runs import FinishedRun, open_run


@dataclass(frozen=True, eq=False)
class OpenMap:
    """A verified run and its map model."""

    run: FinishedRun
    model: MapModel

    @property
    def input_fields(self) -> tuple[str, str]:
        """The id and embedding field names the run read its database with."""
        recorded = self.run.record.config.input
        return ("id" if recorded.id_field is None else recorded.id_field,
                "embedding" if recorded.embedding_field is None else recorded.embedding_field)


    @cached_property
    def identity_keys(self) -> dict[int, str] | None:
        """The run's identity id -> the source's own key (projection's ``identity_key``), or None when the run's
        source had no keys (a file)."""
        import pyarrow.parquet as pq

        from job.store.coherence import check_stored_size
        from job.store.outputs import PROJECTION_FILE

        path = self.run.files.get(PROJECTION_FILE)  # verified against run.json by open_run
        if path is None:
            return None
        with path.open("rb") as handle:
            source = pq.ParquetFile(handle)
            if "identity_key" not in source.schema_arrow.names:
                return None
            check_stored_size(source.metadata, ["identity_key"], path, cell_bytes=KEY_BYTES)
            table = source.read(columns=["id", "identity_key"])
        keys: dict[int, str] = {}
        for identity, key in zip(table.column("id").to_pylist(), table.column("identity_key").to_pylist(),
                                 strict=True):
            if key is not None and identity is not None:
                keys.setdefault(int(identity), str(key))
        return keys

    def key_of(self, identity: int) -> str | None:
        """The source's key of ``identity`` (None without keys, or for -1)."""
        keys = self.identity_keys
        return None if keys is None else keys.get(int(identity))


KEY_BYTES = 1024  # a generous bound on one stored identity key (Immich's are 36-character UUIDs)


def open_map(folder: Path) -> OpenMap:
    """Verify ``folder`` (a ``faceatlas run`` output) and load its map model."""
    finished = open_run(folder)
    model = finished.contents.model
    if model is None:
        raise InputError(f"{folder}: has no {MODEL_FILE} (made by faceatlas < 0.3); rerun faceatlas run to "
                         "make a map that can place faces and answer map points")
    return OpenMap(finished, model)



def _outside(folder: Path, out: Path) -> None:
    """Refuse an output file inside the run folder: it would change a file run.json vouches for."""
    if Path(os.path.realpath(out)).is_relative_to(os.path.realpath(folder)):
        raise UsageError(f"--out {out}: is inside the run folder {folder}, whose files run.json vouches for; "
                         "write it somewhere else")


@dataclass(frozen=True)
class Transformed:
    """What ``transform`` wrote: the file, how many faces, and whether they had ids."""

    path: Path
    n_faces: int
    has_ids: bool
    same_id: float | None


@dataclass(frozen=True)
class NewReading:
    """How ``transform`` reads its new faces: field names (None: the run's), ``--drop-invalid``, a database's
    ``--query``."""

    id_field: str | None = None
    embedding_field: str | None = None
    drop_invalid: bool = False
    query: str = ""


def transform_file(opened: OpenMap, new: str, out: Path, *, reading: NewReading = NewReading(),
                   max_memory: int | None = None, log: Callable[[str], None] = lambda message: None) -> Transformed:
    """Place the faces of ``new`` (any supported format or a database, ids optional) on the map and write ``out``.

    ``out`` (Parquet): ``row``, ``id`` (when the input has integer ids), ``x``, ``y`` (``z``), ``nearest_id``,
    ``similarity`` (the cosine in the run's working space: centred when run.json ``geometry.centred``); then,
    where known, ``nearest_key`` (the run's source key of that identity), ``face_key`` and ``identity_key`` (the
    new source's own). A database's faces with no identity are placed too (no ``identity_key``).
    ``same_id`` is the share of faces whose nearest identity is their own (by key where both have keys).
    """
    _check_out(opened, out, "placed.parquet", [new])
    run_id, run_embedding = opened.input_fields
    # a file's photo paths and boxes are not read: they would give its faces source keys (str(id)), which the
    # same-id share would then compare with a database run's keys instead of comparing ids
    config = InputConfig(path=new, id_field=reading.id_field or run_id,
                         embedding_field=reading.embedding_field or run_embedding, drop_invalid=reading.drop_invalid,
                         query=reading.query, image_field="", box_field="")
    faces = load_database(config, max_memory, log, ids_optional=True)
    if faces.dim != opened.model.dim:
        raise InputError(f"{faces.source}: embeddings have dim {faces.dim}, but the map in {opened.run.folder} "
                         f"was fitted on dim {opened.model.dim}; use embeddings from the same face recognizer")
    new_faces = _new_faces(faces)
    placement = place(opened.model, opened.model.working(new_faces.unit))  # in the run's geometry (centred if it was)
    extra: dict[str, np.ndarray] = {}
    if opened.identity_keys is not None:
        extra["nearest_key"] = np.array([opened.key_of(i) for i in placement.nearest_id.tolist()], dtype=object)
    extra.update(new_faces.keys)
    integer_ids = faces.has_ids and (faces.keys is None or faces.keys.identity is None)
    write_placement(out, new_faces.rows, new_faces.ids if integer_ids else None, placement, extra)
    same = _same_share(new_faces, placement, extra, integer_ids)
    return Transformed(out, len(new_faces.rows), faces.has_ids, same)


@dataclass(frozen=True)
class _NewFaces:
    unit: np.ndarray
    rows: np.ndarray
    ids: np.ndarray  # -1: no identity
    keys: dict[str, np.ndarray]


def _new_faces(faces: FaceDatabase) -> _NewFaces:
    """The faces to place: those filed under an identity, then a database's unassigned ones."""
    from job.store.keys import face_keys

    loose = faces.unassigned
    keys = {} if faces.keys is None else face_keys(faces.keys, faces.ids, faces.n_faces)
    if loose is None:
        return _NewFaces(faces.unit, faces.input_rows, faces.ids, _identity_columns(keys))
    none = np.full(loose.n_faces, -1, dtype=np.int64)
    loose_keys = face_keys(loose.keys, none, loose.n_faces)
    joined = {name: np.concatenate([values, loose_keys[name]]) for name, values in keys.items()}
    return _NewFaces(np.concatenate([faces.unit, loose.unit.astype(faces.unit.dtype)]),
                     np.concatenate([faces.input_rows, loose.rows]), np.concatenate([faces.ids, none]),
                     _identity_columns(joined))


def _identity_columns(keys: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: keys[name] for name in ("face_key", "identity_key", "photo_key") if name in keys}


def _same_share(new: _NewFaces, placement: Placement, extra: dict[str, np.ndarray], integer_ids: bool
                ) -> float | None:
    if "nearest_key" in extra and "identity_key" in extra:
        filed = np.array([key is not None for key in extra["identity_key"]])
        if filed.any():
            return float((extra["nearest_key"][filed] == extra["identity_key"][filed]).mean())
    if integer_ids:
        filed = new.ids >= 0
        return float((placement.nearest_id[filed] == new.ids[filed]).mean()) if filed.any() else None
    return None


def write_placement(path: Path, rows: np.ndarray, ids: np.ndarray | None, placement: Placement,
                    extra: dict[str, np.ndarray] | None = None) -> Path:
    """Write placed faces as Parquet atomically (see :func:`transform_file` for the columns)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns: dict[str, Any] = {"row": rows.astype(np.int64)}
    if ids is not None:
        columns["id"] = ids.astype(np.int64)
    for axis, name in enumerate("xyz"[: placement.coords.shape[1]]):
        columns[name] = np.ascontiguousarray(placement.coords[:, axis], dtype=np.float32)
    columns["nearest_id"] = placement.nearest_id.astype(np.int64)
    columns["similarity"] = placement.similarity.astype(np.float32)
    for name, values in (extra or {}).items():
        columns[name] = pa.array(values.tolist(), type=pa.string())
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp, tmp.open("wb") as handle:  # a Python file: pyarrow takes only UTF-8 paths
        pq.write_table(pa.table(columns), handle)
    return path


def check_vector_out(opened: OpenMap, out: Path | None) -> None:
    """``invert --out``: a ``.npy`` file name outside the run folder (checked before any work)."""
    if out is not None:
        _check_out(opened, out, "point.npy")


def _check_out(opened: OpenMap, out: Path, example: str, inputs: list[object] | None = None) -> None:
    """An output file of a query, before any work: named like ``example``, writable, not a folder, outside the
    run folder, and none of the files the command reads (``inputs`` and the run's own input)."""
    suffix = Path(example).suffix
    if out.suffix.lower() != suffix:
        raise UsageError(f"--out {out}: expected a {suffix} file name; e.g. --out {example}")
    check_output_file(out)
    if out.is_dir():
        raise UsageError(f"--out {out}: is a folder; pass a file name such as {out / example}")
    _outside(opened.run.folder, out)
    _not_an_input(out, [*(inputs or []), opened.run.record.input.path])


def _not_an_input(out: Path, inputs: list[object]) -> None:
    """Refuse an output file that is one of the command's inputs (the same file, by any name or link)."""
    for source in inputs:
        if not isinstance(source, str) or not source or "://" in source:
            continue
        try:
            same = os.path.samefile(source, out)
        except (OSError, ValueError):
            continue
        if same:
            raise UsageError(f"--out {out}: is the input {source}, which writing would overwrite; write the "
                             "result to another file")


def check_output_file(out: Path) -> None:
    """What would make writing ``out`` fail after the work: a name too long, a missing or unwritable folder."""
    longest = max(len(os.fsencode(part)) for part in Path(os.path.abspath(out)).parts)
    if longest + 24 > 255:  # the temporary sibling adds ".", ".PID-N.tmp"; 255: Linux file systems' NAME_MAX
        raise UsageError(f"--out {str(out)[:80]}...: a name of {longest} bytes is longer than file systems hold "
                         "(255, with faceatlas's temporary suffix); pick a shorter name")
    parent = Path(os.path.abspath(out)).parent
    existing = existing_ancestor(parent)
    if not existing.is_dir():
        raise UsageError(f"--out {out}: {existing} is not a folder; pick another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: {existing} is not writable; pick a folder you can write to")


def map_point(opened: OpenMap, x: float, y: float, z: float | None) -> np.ndarray:
    """The point as an array of the map's dimensionality; a 3-D map needs ``z``, a 2-D one refuses it."""
    if opened.model.n_components == 3 and z is None:
        raise UsageError(f"{opened.run.folder}: is a 3-D map; pass --z as well as --x and --y")
    if opened.model.n_components == 2 and z is not None:
        raise UsageError(f"{opened.run.folder}: is a 2-D map; drop --z")
    return np.array([x, y] + ([z] if z is not None else []), dtype=np.float64)


def write_vector(path: Path, vector: np.ndarray) -> Path:
    """Save ``vector`` as a float32 ``.npy`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp, tmp.open("wb") as handle:
        np.save(handle, vector.astype(np.float32), allow_pickle=False)
    return path
