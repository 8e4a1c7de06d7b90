"""Reading raw arrays out of .npy, .npz and Parquet files, checking each file's own claims first.

Nothing here unpickles and nothing allocates what a header merely claims: a ``.npy`` header's shape is
compared with the file's size before the file is memory-mapped, an ``.npz`` member's header with the
member's stored size before it is read, and every read that must hold data in memory asks
:func:`job.io.memory.require` first. :mod:`job.io.database` then decides whether the arrays make a database.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import math
import mmap
import stat
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from job.errors import InputError, one_line
from job.io.memory import require

_MAGIC = {b"\x93NUMPY": "npy", b"PK\x03\x04": "npz", b"PAR1": "parquet"}
_MAX_HEADER = 10_000  # numpy's own limit for np.load
_MAX_ELEMENTS = 2**62
_NPZ_IDS = ("ids",)
_NPZ_EMBEDDINGS = ("embeddings",)


@dataclass(frozen=True)
class RawArrays:
    """Arrays as stored: ``ids`` (n,) and ``embeddings`` (n, dim) of any dtype, possibly memory-mapped.

    ``ids`` is None only when the caller allowed a file without ids and the file has none.
    """

    ids: np.ndarray | None
    embeddings: np.ndarray
    memory_mapped: bool
    release: Callable[[int, int], None] = field(default=lambda start, stop: None, repr=False)
    """Give back the memory pages of rows ``start:stop`` once read (a memory-mapped file's pages count as the
    process's memory until the kernel is told it may drop them)."""


@dataclass(frozen=True)
class _Header:
    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int

    @property
    def data_bytes(self) -> int:
        return int(np.prod(self.shape, dtype=object)) * self.dtype.itemsize


def sniff_format(path: Path) -> str:
    """Tell .npy, .npz and Parquet apart by their magic bytes, not their names."""
    try:
        if path.exists() and not path.is_dir() and not stat.S_ISREG(path.stat().st_mode):
            raise InputError(f"{path}: not a regular file (a pipe, socket or device); save the database to a "
                             "file and pass that")
        with path.open("rb") as handle:
            head = handle.read(6)
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory; pass a .npy, .npz or .parquet file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot open ({exc.strerror}); check the --input path") from None
    for magic, kind in _MAGIC.items():
        if head.startswith(magic):
            return kind
    found = "an empty file" if not head else f"unknown magic bytes {head!r}"
    raise InputError(f"{path}: not a .npy, .npz or Parquet file ({found}); "
                     "export the database with numpy.save, numpy.savez or pyarrow")


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_arrays(path: Path, id_field: str, embedding_field: str, max_memory: int | None,
                ids_optional: bool = False) -> RawArrays:
    """Read ids and embeddings from ``path`` in whichever supported format it is.

    With ``ids_optional`` a file without ids is accepted too: a plain 2-D float ``.npy``, a structured one
    without ``id_field``, an ``.npz`` without ``ids``, a Parquet file without the id column.
    """
    kind = sniff_format(path)
    reader = {"npy": _read_npy, "npz": _read_npz, "parquet": _read_parquet}[kind]
    return reader(path, id_field, embedding_field, max_memory, ids_optional)


def _read_header(handle: IO[bytes], where: str) -> _Header:
    """Parse a .npy header (format 1.0, 2.0 or 3.0) without reading the data.

    Refuses object dtypes (only pickle can read them) and shapes no array can have (negative, or more
    than 2**62 elements), so nothing downstream allocates what a header merely claims.
    """
    try:
        shape, dtype = _parse_header(handle)
    except Exception as exc:  # noqa: BLE001 - parsing untrusted bytes: numpy raises many types (TokenError...)
        raise InputError(f"{where}: the .npy header is unreadable ({_short(exc)}); re-save it with "
                         "numpy.save") from None
    if dtype.hasobject:
        raise InputError(f"{where}: holds Python objects (dtype {dtype}), which only pickle can read and "
                         "faceatlas never unpickles; save plain numeric arrays")
    if dtype.itemsize == 0:
        raise InputError(f"{where}: its dtype {dtype} holds no bytes per record; save real ids and embeddings")
    if any(n < 0 for n in shape) or math.prod(max(n, 1) for n in shape) > _MAX_ELEMENTS:
        raise InputError(f"{where}: the header claims shape {shape}, which no array can have; the file is "
                         "corrupt or forged, export it again")
    return _Header(shape, dtype, handle.tell())


def _parse_header(handle: IO[bytes]) -> tuple[tuple[int, ...], np.dtype]:
    """The header dict of a .npy stream, read with ``ast.literal_eval`` (no code runs) and numpy's dtype rules."""
    from numpy.lib import format as npy

    prefix = handle.read(8)
    if len(prefix) < 8 or not prefix.startswith(b"\x93NUMPY"):
        raise ValueError("no .npy magic")
    major = prefix[6]
    if major not in (1, 2, 3):
        raise ValueError(f"format version {major}.{prefix[7]} (faceatlas reads 1.0, 2.0 and 3.0)")
    size_bytes = handle.read(2 if major == 1 else 4)
    length = int.from_bytes(size_bytes, "little")
    if len(size_bytes) < (2 if major == 1 else 4) or length > _MAX_HEADER:
        raise ValueError(f"header length {length} (at most {_MAX_HEADER})")
    text = handle.read(length)
    if len(text) < length:
        raise ValueError("the header is cut short")
    header = ast.literal_eval(text.decode("utf-8" if major == 3 else "latin1"))
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise ValueError("the header is not numpy's {descr, fortran_order, shape} dict")
    shape = header["shape"]
    if not isinstance(shape, tuple) or not all(type(n) is int for n in shape):
        raise ValueError(f"shape {shape!r} is not a tuple of integers")
    if not isinstance(header["fortran_order"], bool):
        raise ValueError("fortran_order is not a bool")
    return shape, npy.descr_to_dtype(header["descr"])


def _check_size(header: _Header, stored: int, where: str) -> None:
    if header.offset + header.data_bytes > stored:
        raise InputError(f"{where}: the header claims shape {header.shape} of {header.dtype} "
                         f"({header.data_bytes:,} bytes) but only {max(stored - header.offset, 0):,} bytes "
                         "follow; the file is truncated or corrupt, copy or export it again")


def _read_npy(path: Path, id_field: str, embedding_field: str, max_memory: int | None,
              ids_optional: bool = False) -> RawArrays:
    with path.open("rb") as handle:
        header = _read_header(handle, str(path))
    _check_size(header, path.stat().st_size, str(path))
    fields = header.dtype.names or ()
    plain = ids_optional and not fields and len(header.shape) == 2
    wanted = (embedding_field,) if ids_optional and id_field not in fields else (id_field, embedding_field)
    if not plain:
        _require_fields(fields, wanted, header, str(path))
    if header.data_bytes == 0:
        try:
            array = np.zeros(header.shape, dtype=header.dtype)
        except ValueError:  # (0, 2**40, 2**40): no bytes, but more elements per row than an array can index
            raise InputError(f"{path}: the header claims shape {header.shape}, which no array can have; the file "
                             "is corrupt, copy or export it again") from None
    else:
        try:
            array = np.load(path, allow_pickle=False, mmap_mode="r")
        except (ValueError, OSError) as exc:
            raise InputError(f"{path}: cannot memory-map the .npy file ({_short(exc)}); re-save it with "
                             "numpy.save") from None
    mapped = header.data_bytes > 0
    release = _page_release(array, header) if mapped else _keep_pages
    if plain:
        return RawArrays(None, array, memory_mapped=mapped, release=release)
    if array.ndim != 1:
        raise InputError(f"{path}: a structured array of shape {array.shape}, expected one record per face "
                         "(1-D); save a 1-D structured array")
    return RawArrays(array[id_field] if id_field in fields else None, array[embedding_field], memory_mapped=mapped,
                     release=release)


def _keep_pages(start: int, stop: int) -> None:
    """Nothing to give back (the arrays live in ordinary memory)."""


def _page_release(array: np.ndarray, header: _Header) -> Callable[[int, int], None]:
    """``release(start, stop)`` for a memory-mapped ``.npy``: ``madvise(MADV_DONTNEED)`` on the whole pages
    holding rows ``start:stop`` (the file is read-only, so a page read again is simply re-read)."""
    handle = getattr(array, "_mmap", None)
    advice = getattr(mmap, "MADV_DONTNEED", None)
    if handle is None or advice is None:
        return _keep_pages
    row_bytes = header.dtype.itemsize * int(np.prod(header.shape[1:], dtype=np.int64))
    base = header.offset % mmap.ALLOCATIONGRANULARITY  # np.memmap maps from an aligned offset before the data

    def release(start: int, stop: int) -> None:
        first = (base + start * row_bytes) // mmap.PAGESIZE * mmap.PAGESIZE
        last = (base + stop * row_bytes) // mmap.PAGESIZE * mmap.PAGESIZE
        if last > first:
            with contextlib.suppress(OSError, ValueError):
                handle.madvise(advice, first, last - first)

    return release


def _require_fields(fields: tuple[str, ...], wanted: tuple[str, ...], header: _Header, where: str) -> None:
    missing = [f for f in wanted if f not in fields]
    if not missing:
        return
    found = ", ".join(fields) if fields else f"none (a plain {header.dtype} array of shape {header.shape})"
    raise InputError(f"{where}: no field {missing[0]!r} (fields found: {found}); pass "
                     "--set input.id_field=... / input.embedding_field=..., or save a structured array")


def _read_npz(path: Path, id_field: str, embedding_field: str, max_memory: int | None,
              ids_optional: bool = False) -> RawArrays:
    try:
        with zipfile.ZipFile(path) as archive:
            listed = [name for name in archive.namelist() if name.endswith(".npy")]
            twice = sorted(name for name, times in Counter(listed).items() if times > 1)
            if twice:
                raise InputError(f"{path}: the archive holds {twice[0]!r} more than once; re-save it with "
                                 "numpy.savez")
            members = {name.removesuffix(".npy"): archive.getinfo(name) for name in listed}
            id_key = npz_id_key(members, id_field)
            emb_key = next((k for k in (*_NPZ_EMBEDDINGS, embedding_field) if k in members), None)
            if emb_key is None or (id_key is None and not ids_optional):
                raise InputError(f"{path}: expected arrays 'ids' and 'embeddings' (found: "
                                 f"{', '.join(members) or 'none'}); save with numpy.savez(path, ids=..., "
                                 "embeddings=...)")
            keys = [key for key in (id_key, emb_key) if key is not None]
            headers = {key: member_header(archive, members[key], path) for key in keys}
            require(sum(h.data_bytes for h in headers.values()), max_memory, f"{path}: reading the .npz",
                    "save the database as .npy, which faceatlas memory-maps")
            ids = _member_array(archive, members[id_key], path) if id_key is not None else None
            embeddings = _member_array(archive, members[emb_key], path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, NotImplementedError,
            RuntimeError) as exc:  # RuntimeError: an encrypted member
        raise InputError(f"{path}: cannot read as .npz ({_short(exc)}); re-save it with numpy.savez") from None
    return RawArrays(ids, embeddings, memory_mapped=False)


def npz_id_key(names: Iterable[str], id_field: str) -> str | None:
    """The member of an .npz that holds its ids: ``ids``, else ``id_field``; None without either."""
    present = set(names)
    return next((key for key in (*_NPZ_IDS, id_field) if key in present), None)


def member_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> _Header:
    """The header of one ``.npy`` member, checked against the size the archive records for it."""
    where = f"{path}[{info.filename}]"
    with archive.open(info) as member:
        header = _read_header(member, where)
    _check_size(header, info.file_size, where)
    return header


def _member_array(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> np.ndarray:
    from numpy.lib import format as npy

    with archive.open(info) as member:
        return npy.read_array(member, allow_pickle=False)


def _read_parquet(path: Path, id_field: str, embedding_field: str, max_memory: int | None,
                  ids_optional: bool = False) -> RawArrays:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with path.open("rb") as handle:  # a Python file: pyarrow takes only UTF-8 path strings
            metadata = pq.read_metadata(handle)
        schema = metadata.schema.to_arrow_schema()
        has_ids = id_field in schema.names
        wanted = [id_field, embedding_field] if has_ids or not ids_optional else [embedding_field]
        twice = [c for c in wanted if schema.names.count(c) > 1]
        if twice:
            raise InputError(f"{path}: column {twice[0]!r} appears {schema.names.count(twice[0])} times; "
                             "write each column once")
        missing = [c for c in wanted if c not in schema.names]
        if missing:
            raise InputError(f"{path}: no column {missing[0]!r} (columns found: {', '.join(schema.names)}); "
                             "pass --set input.id_field=... / input.embedding_field=...")
        table = _read_row_groups(path, wanted, metadata, max_memory)
        ids = None
        if has_ids:
            ids_column = table.column(id_field)
            if ids_column.null_count:
                raise InputError(f"{path}: column {id_field!r} has {ids_column.null_count} empty ids; "
                                 "give every face an id")
            ids = ids_column.to_numpy()
        embeddings = _parquet_vectors(table.column(embedding_field), path, embedding_field)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read as Parquet ({_short(exc)}); re-write it with pyarrow") from None
    return RawArrays(ids, embeddings, memory_mapped=False)


def _read_row_groups(path: Path, columns: list[str], metadata: Any, max_memory: int | None) -> Any:
    """Read row group by row group, checking memory against what the footer claims and what arrives.

    The footer's sizes are the file's own claim, so each group's real size is checked again once read.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    fix = "split it into several files or save it as .npy, which faceatlas memory-maps"
    claimed = sum(metadata.row_group(g).total_byte_size for g in range(metadata.num_row_groups))
    require(2 * claimed, max_memory, f"{path}: reading the Parquet file", fix)
    groups, held = [], 0
    with path.open("rb") as source, pq.ParquetFile(source) as handle:
        for group in range(metadata.num_row_groups):
            groups.append(handle.read_row_group(group, columns=columns))
            held += groups[-1].nbytes
            require(2 * held, max_memory, f"{path}: reading the Parquet file (row group {group})", fix)
        return pa.concat_tables(groups) if groups else handle.schema_arrow.empty_table().select(columns)


def _parquet_vectors(column: Any, path: Path, name: str) -> np.ndarray:
    """A list / fixed-size-list column as (n_faces, dim), converted chunk by chunk (no 2**31 offset limit)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)):
        raise InputError(f"{path}: column {name!r} has type {kind}, expected a list of floats per face; "
                         "write embeddings as list<float> or fixed_size_list<float>")
    if not (pa.types.is_floating(kind.value_type) or pa.types.is_integer(kind.value_type)):
        raise InputError(f"{path}: column {name!r} holds {kind.value_type} values, expected floats; "
                         "write embeddings as list<float>")
    lengths = np.unique(pc.list_value_length(column).to_numpy(zero_copy_only=False)) if len(column) else [0]
    if column.null_count or len(lengths) != 1:
        raise InputError(f"{path}: column {name!r} holds vectors of different lengths or nulls; "
                         "give every face a vector of the same dimension")
    dim = int(lengths[0])
    blocks = [chunk.flatten().to_numpy(zero_copy_only=False).reshape(len(chunk), dim) for chunk in column.chunks
              if len(chunk)]
    return np.concatenate(blocks) if blocks else np.empty((0, dim), dtype=np.float32)


def _short(exc: BaseException) -> str:
    """An exception's message on one line, at most 160 characters."""
    return one_line(exc, 160, ellipsis="...") or type(exc).__name__
