"""Writing a corrected copy of a file database, in its own format and with everything else in it unchanged:
the faces' new ids written over the old, the removed faces' rows left out, every other field, array,
column and metadata copied as it was.

* ``.npy`` (one structured record per face): copied in blocks into a memory-mapped file of the same dtype;
* ``.npz``: every array with one entry per face is filtered, the ids replaced, the rest copied; compressed
  when the input was;
* Parquet: read and written one batch at a time under the input's own schema (its metadata kept).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from job.arrays import BoolArray, IdArray
from job.errors import InputError
from job.io.formats import sniff_format

_BLOCK = 1 << 16  # faces copied at a time
NPZ_IDS = ("ids",)  # the .npz id array faceatlas reads first (job.io.formats), then input.id_field


@dataclass(frozen=True)
class Edits:
    """The change to every row of the input: its new identity ``ids`` (n_rows,) int64 and ``keep`` (n_rows,)
    bool (False: removed)."""

    ids: IdArray
    keep: BoolArray


def read_ids(path: Path, id_field: str) -> IdArray:
    """Every input row's identity id (n_rows,) int64, read as ``faceatlas run`` reads them."""
    kind = sniff_format(path)
    try:
        if kind == "npy":
            array = np.load(path, mmap_mode="r", allow_pickle=False)
            return np.asarray(array[id_field], dtype=np.int64)
        if kind == "npz":
            with np.load(path, allow_pickle=False) as archive:
                return np.asarray(archive[_npz_id_key(archive.files, id_field, path)], dtype=np.int64)
        import pyarrow.parquet as pq

        with path.open("rb") as handle:
            return np.asarray(pq.read_table(handle, columns=[id_field]).column(id_field).to_numpy(), dtype=np.int64)
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{path}: cannot read its ids {id_field!r} ({type(exc).__name__}); check --input") from None


def write_copy(source: Path, target: Path, edits: Edits, id_field: str) -> int:
    """Write the corrected copy of ``source`` to ``target`` (a new file); returns the faces written."""
    kind = sniff_format(source)
    {"npy": _copy_npy, "npz": _copy_npz, "parquet": _copy_parquet}[kind](source, target, edits, id_field)
    return int(edits.keep.sum())


def _copy_npy(source: Path, target: Path, edits: Edits, id_field: str) -> None:
    from numpy.lib import format as npy

    array = np.load(source, mmap_mode="r", allow_pickle=False)
    out = npy.open_memmap(target, mode="w+", dtype=array.dtype, shape=(int(edits.keep.sum()),))
    at = 0
    for start in range(0, len(array), _BLOCK):
        keep = edits.keep[start:start + _BLOCK]
        block = np.array(array[start:start + _BLOCK][keep])
        block[id_field] = edits.ids[start:start + _BLOCK][keep]
        out[at:at + len(block)] = block
        at += len(block)
    out.flush()
    del out


def _copy_npz(source: Path, target: Path, edits: Edits, id_field: str) -> None:
    n_rows = len(edits.keep)
    with zipfile.ZipFile(source) as archive:
        compressed = any(info.compress_type != zipfile.ZIP_STORED for info in archive.infolist())
    arrays: dict[str, Any] = {}
    with np.load(source, allow_pickle=False) as archive:
        id_key = _npz_id_key(archive.files, id_field, source)
        for name in archive.files:
            try:
                value = archive[name]
            except ValueError:
                raise InputError(f"{source}: array {name!r} holds Python objects, which faceatlas never loads; "
                                 "save it without object arrays") from None
            if name == id_key:
                value = edits.ids.astype(value.dtype)
            if value.ndim and len(value) == n_rows:
                value = value[edits.keep]
            arrays[name] = value
    save: Any = np.savez_compressed if compressed else np.savez  # numpy < 2.1 has no allow_pickle here
    with target.open("wb") as handle:
        save(handle, **arrays)  # no object arrays: none was loaded


def _copy_parquet(source: Path, target: Path, edits: Edits, id_field: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with source.open("rb") as handle:
        reader = pq.ParquetFile(handle)
        schema = reader.schema_arrow
        column = schema.get_field_index(id_field)
        kind = schema.field(id_field).type
        with pq.ParquetWriter(target, schema) as writer:
            at = 0
            for batch in reader.iter_batches(batch_size=_BLOCK):
                stop = at + batch.num_rows
                keep = pa.array(edits.keep[at:stop])
                ids = pa.array(edits.ids[at:stop]).cast(kind)
                table: Any = pa.Table.from_batches([batch], schema=schema).set_column(column, schema.field(column),
                                                                                     ids)
                writer.write_table(table.filter(keep))
                at = stop


def _npz_id_key(names: list[str], id_field: str, path: Path) -> str:
    key = next((name for name in (*NPZ_IDS, id_field) if name in names), None)
    if key is None:
        raise InputError(f"{path}: no id array ('ids' or {id_field!r}); pass the file the run read")
    return key
