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
from typing import Any, Literal

import numpy as np

from job.arrays import BoolArray, IdArray
from job.errors import InputError
from job.io.formats import npz_id_key, sniff_format

_BLOCK = 1 << 16  # faces copied at a time (.npy)
_CODECS: dict[str, Literal["gzip", "brotli", "lz4", "zstd", "snappy", "none"]] = {
    "gzip": "gzip", "brotli": "brotli", "lz4": "lz4", "lz4_raw": "lz4", "zstd": "zstd", "snappy": "snappy",
    "uncompressed": "none"}  # a Parquet file's codec, as the writer names it


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


@dataclass(frozen=True)
class Copied:
    """What a copy holds: its faces, and the fields, arrays or columns filtered with them (``per_face``)."""

    n_faces: int
    per_face: list[str]


def write_copy(source: Path, target: Path, edits: Edits, id_field: str) -> Copied:
    """Write the corrected copy of ``source`` to ``target`` (a new file)."""
    kind = sniff_format(source)
    copy = {"npy": _copy_npy, "npz": _copy_npz, "parquet": _copy_parquet}[kind]
    return Copied(int(edits.keep.sum()), copy(source, target, edits, id_field))


def _copy_npy(source: Path, target: Path, edits: Edits, id_field: str) -> list[str]:
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
    return list(array.dtype.names or ())


def _copy_npz(source: Path, target: Path, edits: Edits, id_field: str) -> list[str]:
    """Member by member: each ``.npy`` array read (never a pickle), the id array replaced, every array with one
    entry per input row filtered with the faces, the rest (other members too) copied as they were."""
    from numpy.lib import format as npy

    n_rows, per_face = len(edits.keep), []
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w", allowZip64=True) as written:
        names = [info.filename.removesuffix(".npy") for info in archive.infolist()]
        id_key = _npz_id_key(names, id_field, source)
        for info in archive.infolist():
            name = info.filename.removesuffix(".npy")
            if not info.filename.endswith(".npy"):
                written.writestr(info, archive.read(info))
                continue
            with archive.open(info) as member:
                try:
                    value = npy.read_array(member, allow_pickle=False)
                except ValueError:
                    raise InputError(f"{source}: array {name!r} holds Python objects, which faceatlas never loads; "
                                     "save it without object arrays") from None
            if name == id_key:
                value = edits.ids.astype(value.dtype)
            if value.ndim and len(value) == n_rows:
                value = value[edits.keep]
                per_face.append(name)
            entry = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            entry.compress_type = info.compress_type  # compressed where the input was (numpy.savez_compressed)
            with written.open(entry, "w", force_zip64=True) as handle:
                npy.write_array(handle, np.ascontiguousarray(value), allow_pickle=False)
    return per_face


def _copy_parquet(source: Path, target: Path, edits: Edits, id_field: str) -> list[str]:
    """Row group by row group, under the input's schema (its metadata kept) and compression."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with source.open("rb") as handle:
        reader = pq.ParquetFile(handle)
        schema = reader.schema_arrow
        column = schema.get_field_index(id_field)
        kind = schema.field(id_field).type
        metadata = reader.metadata
        used = metadata.row_group(0).column(0).compression.lower() if metadata.num_row_groups else "snappy"
        with pq.ParquetWriter(target, schema, compression=_CODECS.get(used, "snappy")) as writer:
            at = 0
            for group in range(metadata.num_row_groups):
                table: Any = reader.read_row_group(group)
                stop = at + table.num_rows
                ids = pa.array(edits.ids[at:stop]).cast(kind)
                table = table.set_column(column, schema.field(column), ids).filter(pa.array(edits.keep[at:stop]))
                writer.write_table(table, row_group_size=max(table.num_rows, 1))
                at = stop
    return list(schema.names)


def _npz_id_key(names: list[str], id_field: str, path: Path) -> str:
    key = npz_id_key(names, id_field)
    if key is None:
        raise InputError(f"{path}: no id array ('ids' or {id_field!r}); pass the file the run read")
    return key
