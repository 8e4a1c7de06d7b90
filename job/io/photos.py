"""The per-face photo fields of a database file: its photo key (``input.photo_field``, for the same-photo check),
the photo's path (``input.image_field``) and the face's box in it (``input.box_field``, for the atlas page's
face crops). Each is a Parquet column, an ``.npz`` array or a field of a structured ``.npy``, one value per row.

The image and box fields are read where the file has them under their default names (``image``, ``box``);
a name given in their place must be there. :mod:`job.io.formats` reads the ids and embeddings of the same files.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from job.errors import InputError, one_line
from job.io.formats import member_header, sniff_format
from job.io.memory import require

IMAGE_FIELD = "image"
"""``input.image_field``'s default: read where a file has it."""
BOX_FIELD = "box"
"""``input.box_field``'s default: read where a file has it."""
_TEXT_BYTES = 128  # memory per face of a path held as a Python string (object, header, typical length)
_NOUNS = {"parquet": "column", "npz": "array", "npy": "field"}


@dataclass(frozen=True)
class PhotoPlaces:
    """Where each face of a file was found, or None where the file does not say.

    Attributes
    ----------
    image : ndarray of shape (n_rows,), object — each face's photo path as text, None where unknown
    box : ndarray of shape (n_rows, 4), float32 — ``x1, y1, x2, y2`` in pixels of the photo as displayed,
        NaN where unknown
    skipped : one line for each field under its default name that was left unread, being something else
        (e.g. an ``image`` column of integer ids), for the run's log
    """

    image: np.ndarray | None = None
    box: np.ndarray | None = None
    skipped: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Fields:
    """The fields one file holds, and reading one whole: a pyarrow ChunkedArray (Parquet) or an ndarray."""

    path: Path
    kind: str
    names: tuple[str, ...]

    @classmethod
    def of(cls, path: Path) -> _Fields:
        kind = sniff_format(path)
        if kind == "parquet":
            import pyarrow.parquet as pq

            with path.open("rb") as handle:  # a Python file: pyarrow takes only UTF-8 path strings
                names = tuple(pq.read_schema(handle).names)
        elif kind == "npz":
            with zipfile.ZipFile(path) as archive:
                names = tuple(name.removesuffix(".npy") for name in archive.namelist() if name.endswith(".npy"))
        else:
            names = np.load(path, mmap_mode="r", allow_pickle=False).dtype.names or ()
        return cls(path, kind, names)

    @property
    def noun(self) -> str:
        return _NOUNS[self.kind]

    def read(self, name: str, max_memory: int | None, n_rows: int) -> Any:
        """Field ``name`` whole, after checking what it claims fits in memory."""
        where = f"{self.path}: reading {self.noun} {name!r}"
        fix = "save the database without it, or with fewer faces per file"
        if self.kind == "parquet":
            import pyarrow.parquet as pq

            with self.path.open("rb") as handle, pq.ParquetFile(handle) as source:
                metadata = source.metadata
                at = source.schema_arrow.get_field_index(name)
                claimed = sum(metadata.row_group(g).column(at).total_uncompressed_size
                              for g in range(metadata.num_row_groups)) if at >= 0 else 0
                require(2 * claimed + n_rows * _TEXT_BYTES, max_memory, where, fix)
                return source.read(columns=[name]).column(name)
        if self.kind == "npz":
            with zipfile.ZipFile(self.path) as archive:
                info = archive.getinfo(f"{name}.npy")
                header = member_header(archive, info, self.path)  # object dtypes and forged shapes refused
                require(header.data_bytes + n_rows * _TEXT_BYTES, max_memory, where, fix)
                with archive.open(info) as member:
                    from numpy.lib import format as npy

                    return npy.read_array(member, allow_pickle=False)
        require(n_rows * _TEXT_BYTES, max_memory, where, fix)
        return np.asarray(np.load(self.path, mmap_mode="r", allow_pickle=False)[name])

    def missing(self, name: str, setting: str, fix: str) -> InputError:
        found = ", ".join(self.names) if self.names else "none"
        return InputError(f"{self.path}: no {self.noun} {name!r} for input.{setting} ({self.noun}s found: {found}); "
                          f"{fix}")


def read_photo_places(path: Path, *, image_field: str, box_field: str, n_rows: int,
                      max_memory: int | None = None) -> PhotoPlaces:
    """Each row's photo path and box from ``image_field`` and ``box_field`` (``input.image_field``,
    ``input.box_field``; "" = not read) of a Parquet file, an ``.npz`` or a structured ``.npy``.

    Image paths: text (Parquet string or dictionary-encoded string; numpy ``U``/``S``), "" or null = unknown.
    Boxes: four numbers ``[x1, y1, x2, y2]`` per face (Parquet list or fixed_size_list, a null cell or value =
    unknown; an (n_rows, 4) ``.npz`` array; a ``.npy`` field of shape (4,)). A field under its default name
    (:data:`IMAGE_FIELD`, :data:`BOX_FIELD`) is read where the file has it, and left unread (said in
    ``skipped``) where it holds something else, so a file that maps today still does; another name must be
    there and be what it should.

    Raises
    ------
    InputError
        A field named in place of the default missing, of another length, or of a type that is not text
        (image) or four numbers (box).
    """
    if not image_field and not box_field:
        return PhotoPlaces()
    fields = _Fields.of(path)
    image_fix = 'name the column of photo paths with --set input.image_field=..., or set it to "" to read none'
    box_fix = ('name the column of face boxes with --set input.box_field=..., or set it to "" to read none; '
               "boxes are [x1, y1, x2, y2] in pixels, as list<float> of 4 or an (n, 4) array")
    try:
        image, image_note = _read_field(fields, image_field, setting="image_field", default=IMAGE_FIELD,
                                        fix=image_fix, convert=_image_text, n_rows=n_rows, max_memory=max_memory)
        box, box_note = _read_field(fields, box_field, setting="box_field", default=BOX_FIELD, fix=box_fix,
                                    convert=_boxes, n_rows=n_rows, max_memory=max_memory)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: cannot read the photo fields ({_short(exc)}); re-write the file, or set "
                         'input.image_field and input.box_field to "" to read neither') from None
    return PhotoPlaces(image, box, tuple(note for note in (image_note, box_note) if note))


def _read_field(fields: _Fields, name: str, *, setting: str, default: str, fix: str, convert: Any, n_rows: int,
                max_memory: int | None) -> tuple[np.ndarray | None, str]:
    """Field ``name`` converted (``convert(stored, where, fix)``), or None and why where it is the default name
    and absent or of another kind."""
    if not name or (name not in fields.names and name == default):
        return None, ""
    if name not in fields.names:
        raise fields.missing(name, setting, fix)
    where = f"{fields.path}: {fields.noun} {name!r}"
    try:
        values: np.ndarray = convert(fields.read(name, max_memory, n_rows), where, fix)
        if len(values) != n_rows:
            raise InputError(f"{where} has {len(values):,} values for {n_rows:,} faces; {fix}")
    except InputError as exc:
        if name != default:
            raise
        return None, f"input.{setting} left unread: {exc}"
    return values, ""


def _image_text(values: Any, where: str, fix: str) -> np.ndarray:
    """Photo paths as an object array of text, None where empty or null."""
    if isinstance(values, np.ndarray):
        if values.ndim != 1 or values.dtype.kind not in "US":
            raise InputError(f"{where} has dtype {values.dtype} and shape {values.shape}, expected one text path "
                             f"per face; {fix}")
        texts = [value.decode("utf-8", "replace") if isinstance(value, bytes) else value
                 for value in values.tolist()]
    else:
        import pyarrow as pa

        kind = values.type.value_type if pa.types.is_dictionary(values.type) else values.type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise InputError(f"{where} is {values.type}, expected one text path per face; {fix}")
        texts = values.to_pylist()
    return np.asarray([text or None for text in texts], dtype=object)


def _boxes(values: Any, where: str, fix: str) -> np.ndarray:
    """Boxes as (n, 4) float32, NaN where unknown."""
    expected = f"expected four numbers [x1, y1, x2, y2] per face; {fix}"
    if isinstance(values, np.ndarray):
        if values.ndim != 2 or values.shape[1] != 4 or values.dtype.kind not in "iuf":
            raise InputError(f"{where} has dtype {values.dtype} and shape {values.shape}, {expected}")
        with np.errstate(over="ignore"):  # beyond float32: inf, a box the crops then refuse
            return values.astype(np.float32)
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = values.type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)) or not (
            pa.types.is_floating(kind.value_type) or pa.types.is_integer(kind.value_type)):
        raise InputError(f"{where} is {kind}, {expected}")
    out = np.full((len(values), 4), np.nan, dtype=np.float32)
    start = 0
    for chunk in values.chunks:
        lengths = pc.list_value_length(chunk).to_numpy(zero_copy_only=False).astype(np.float64)  # NaN: a null box
        given = ~np.isnan(lengths)
        if (lengths[given] != 4).any():
            raise InputError(f"{where} holds a list of {int(lengths[given][lengths[given] != 4][0])} values, "
                             f"{expected}")
        flat = pc.cast(chunk.flatten(), pa.float64()).to_numpy(zero_copy_only=False)  # null values: NaN
        with np.errstate(over="ignore"):
            out[start:start + len(chunk)][given] = flat.reshape(-1, 4)
        start += len(chunk)
    return out


def read_photo_keys(path: Path, photo_field: str, n_rows: int) -> np.ndarray:
    """Each row's photo key from ``photo_field`` (``input.photo_field``) of a Parquet file (a column), an .npz
    (an array) or a structured .npy (a field), as text (n_rows,) object; None where a Parquet cell is null.

    Raises
    ------
    InputError
        No such column/array/field, one of another length, or of a type that is not text or integers.
    """
    fix = "pass the name of the photo column with --set input.photo_field=..., or drop it"
    try:
        fields = _Fields.of(path)
        if photo_field not in fields.names:
            raise fields.missing(photo_field, "photo_field", fix)
        stored = fields.read(photo_field, None, n_rows)
        if isinstance(stored, np.ndarray):
            values = _photo_text(stored, path, photo_field, fix)
        else:
            import pyarrow as pa

            if not (pa.types.is_string(stored.type) or pa.types.is_large_string(stored.type)
                    or pa.types.is_integer(stored.type)):
                raise InputError(f"{path}: column {photo_field!r} is {stored.type}, not text or integers; {fix}")
            values = [None if value is None else str(value) for value in stored.to_pylist()]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: cannot read input.photo_field {photo_field!r} ({_short(exc)}); {fix}") from None
    if len(values) != n_rows:
        raise InputError(f"{path}: {photo_field!r} has {len(values):,} values for {n_rows:,} faces; {fix}")
    return np.asarray(values, dtype=object)


def _photo_text(array: np.ndarray, path: Path, name: str, fix: str) -> list[str | None]:
    if array.ndim != 1 or array.dtype.kind not in "iuUS":
        raise InputError(f"{path}: {name!r} has dtype {array.dtype} and shape {array.shape}, expected one text "
                         f"or integer key per face; {fix}")
    if array.dtype.kind == "S":
        return [value.decode("utf-8", "replace") for value in array.tolist()]
    return [str(value) for value in array.tolist()]


def _short(exc: BaseException) -> str:
    """An exception's message on one line, at most 160 characters."""
    return one_line(exc, 160, ellipsis="...") or type(exc).__name__
