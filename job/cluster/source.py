"""Where the workers read the faces, and the reading itself (run on the workers).

A worker reads the rows of its chunk from the same input the client loaded: a path every worker can open (a
shared filesystem) or an https URL (each worker downloads it once into its own cache, verified against the
SHA-256 the client computed). The built-in demo is generated in the client's memory, so the client sends its
chunks instead (:func:`face_source` gives None). Rows become unit vectors with the loader's own conversion
(:func:`job.io.database.unit_block`), so a worker's faces are the client's to the bit, and each chunk is
checked against the client's digest of its ids and of every ``DIGEST_STRIDE``-th face: a worker that sees
another file (a stale copy, another mount, the same ids re-embedded) stops the run instead of answering about
other faces.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from job.arrays import IdArray
from job.errors import ClusterError, FaceatlasError

if TYPE_CHECKING:
    from job.config import InputConfig
    from job.io.database import FaceDatabase

_BLOCK = 1 << 14  # rows converted at a time (the loader's block)
DIGEST_STRIDE = 64  # every 64th face's bytes go into a chunk's digest (a changed file differs nearly everywhere)


@dataclass(frozen=True)
class FaceSource:
    """The input as the workers reach it.

    ``kind`` "file" (``location`` an absolute path) or "url"; ``sha256`` and ``size`` the file as the client
    read it (the download, for a URL); ``n_rows`` the input's rows (faces dropped by ``--drop-invalid`` too);
    ``centre`` the mean direction the run subtracts from every unit face (:mod:`job.analysis.geometry`; None:
    not centred), as a tuple so the source stays hashable.
    """

    kind: str
    location: str
    id_field: str
    embedding_field: str
    sha256: str
    size: int = 0
    n_rows: int = 0
    allow_http: bool = False
    url_timeout: float = 30.0
    url_max_bytes: int = 0
    centre: tuple[float, ...] | None = None

    @property
    def shown(self) -> str:
        from job.io.remote import redact

        return redact(self.location)


def face_source(config: InputConfig, database: FaceDatabase, centre: np.ndarray | None = None
                ) -> FaceSource | None:
    """The source of ``database``, loaded with ``config``, for the workers (None for the built-in demo and for a
    database, whose faces the client sends: workers get no address or password); ``centre``: the run's
    geometry's centre, which the workers subtract as the client did."""
    from job.io.remote import is_url
    from job.io.stores import is_store

    fields = config.id_field, config.embedding_field
    shared = None if centre is None else tuple(float(value) for value in np.asarray(centre, dtype=np.float32))
    n_rows = database.n_faces + sum(database.dropped.values())
    if not config.path or is_store(config.path):
        return None
    if is_url(config.path):
        return FaceSource("url", config.path, *fields, database.sha256, 0, n_rows, config.allow_http,
                          config.url_timeout, config.url_max_bytes, centre=shared)
    path = Path(config.path).resolve()
    return FaceSource("file", str(path), *fields, database.sha256, path.stat().st_size, n_rows, centre=shared)


def chunk_digest(ids: IdArray, unit: np.ndarray) -> str:
    """A digest of a chunk's ids (as int64) and of every ``DIGEST_STRIDE``-th face's unit vector, to check that
    a worker reads the client's faces."""
    digest = hashlib.blake2b(np.ascontiguousarray(ids, dtype=np.int64).tobytes(), digest_size=16)
    digest.update(np.ascontiguousarray(unit[::DIGEST_STRIDE]).tobytes())
    return digest.hexdigest()


def first_and_last(database: FaceDatabase) -> tuple[IdArray, str]:
    """The input rows of the database's first and last faces and their digest: what every worker must read
    the same before a cluster run starts (:meth:`job.cluster.session.ClusterSession.check`)."""
    ends = np.unique([0, database.n_faces - 1])
    return database.input_rows[ends], chunk_digest(database.ids[ends], database.unit[ends])


def read_faces(source: FaceSource, rows: IdArray, digest: str) -> np.ndarray:
    """The unit vectors of input ``rows`` (n, dim), as the client's loader made them and its geometry moved them
    (``source.centre``); runs on a worker.

    Raises :class:`ClusterError` naming the worker when it cannot read the input or reads other faces (its
    chunk's :func:`chunk_digest` is not ``digest``).
    """
    try:
        stored = _stored(source)
    except FaceatlasError as exc:
        raise ClusterError(f"worker {worker_name()} cannot read the input: {exc} (every worker needs the input "
                           "at the same path, e.g. on a shared filesystem, or at a URL it can reach)") from None
    from job.analysis.geometry import centre_rows
    from job.io.database import unit_block

    rows = np.asarray(rows, dtype=np.int64)
    if len(stored.ids) != source.n_rows:
        raise ClusterError(f"worker {worker_name()}: {source.shown} has {len(stored.ids):,} rows there and "
                           f"{source.n_rows:,} on the client; every worker must read the same file")
    unit = np.empty((len(rows), stored.embeddings.shape[1]),
                    dtype=np.float16 if stored.embeddings.dtype == np.float16 else np.float32)
    centre = None if source.centre is None else np.asarray(source.centre, dtype=np.float32)
    for start in range(0, len(rows), _BLOCK):
        block = unit_block(np.asarray(stored.embeddings[rows[start:start + _BLOCK]]))[0]
        unit[start:start + _BLOCK] = block if centre is None else centre_rows(block, centre)
    if len(rows) and chunk_digest(stored.ids[rows], unit) != digest:
        raise ClusterError(f"worker {worker_name()}: {source.shown} holds other faces in rows {rows[0]}..{rows[-1]} "
                           "than the client read; every worker must read the same file (a stale copy?)")
    return unit


@dataclass(frozen=True)
class _Stored:
    ids: IdArray
    embeddings: Any  # memory-mapped for .npy


@lru_cache(maxsize=2)
def _stored(source: FaceSource) -> _Stored:
    """The input's ids and stored embeddings, opened once per worker process (a .npy memory-mapped, so only
    the pages of the chunks read count; .npz and Parquet read whole; :func:`forget` lets them go)."""
    from job.io.formats import read_arrays

    if source.kind == "url":
        from job.io.remote import fetch

        path = fetch(source.location, sha256=source.sha256, allow_http=source.allow_http,
                     timeout=source.url_timeout, max_bytes=source.url_max_bytes).path
    else:
        path = Path(source.location)
        if not path.is_file():
            raise ClusterError(f"worker {worker_name()}: {path} does not exist there (every worker needs the input "
                               "at the same path, e.g. on a shared filesystem, or a URL input)")
        size = path.stat().st_size
        if size != source.size:
            raise ClusterError(f"worker {worker_name()}: {path} is {size:,} bytes there and {source.size:,} on the "
                               "client; every worker must read the same file")
    raw = read_arrays(path, source.id_field, source.embedding_field, None)
    return _Stored(np.asarray(raw.ids).astype(np.int64), raw.embeddings)


def forget() -> None:
    """Close this worker's open inputs (run at the end of a run: a long-lived worker keeps no database)."""
    _stored.cache_clear()


def worker_name() -> str:
    """This worker's address, or "here" outside a worker."""
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return "here"
