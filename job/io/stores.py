"""Reading faces out of a SQL store: an Immich PostgreSQL database (recognised by its tables) or any SQLite or
PostgreSQL database through a query (``input.query``) that returns ``identity`` and ``embedding`` columns.

Read-only, always: a PostgreSQL session whose transactions are READ ONLY (``default_transaction_read_only``),
a SQLite file opened with ``mode=ro`` and ``query_only``. Rows arrive in blocks from a server-side cursor
straight into one preallocated float32 array (faces filed under an identity from the front, unassigned faces
from the back), so the only copy held is the one :func:`job.io.database.check_arrays` then turns into unit
vectors in place. Passwords come from the URL or libpq's own places (``PGPASSWORD``, ``~/.pgpass``, a service
file) and are never printed: every message names the address as :func:`address` shows it.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlencode

import numpy as np

from job.arrays import IdArray
from job.errors import InputError, UsageError, one_line
from job.io.files import display_text
from job.io.memory import require

SCHEMES = ("postgresql://", "postgres://", "sqlite:///")
BLOCK_ROWS = 4096  # rows per fetch from the cursor
IMMICH_TABLES = ("face_search", "asset_face", "person", "asset")
REQUIRED = ("identity", "embedding")
OPTIONAL = ("face", "photo", "name", "image", "hidden", "box_x1", "box_y1", "box_x2", "box_y2", "image_width",
            "image_height")
_KEPT_PARAMETERS = {"host", "hostaddr", "port", "dbname", "sslmode", "service", "target_session_attrs"}
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_POSTGRES_FIX = "pip install 'faceatlas[postgres]'"
_BYTEA = 17  # PostgreSQL's type oid of bytea: the only column read as a blob of input.blob_dtype
_USERINFO = re.compile(r"(\w+://)[^@/\s\"']*@")
_PASSWORD_PARAMETER = re.compile(r"\b((?:ssl)?password)\s*=\s*([^\s&]+)", re.IGNORECASE)


class StoreSpec(Protocol):
    """What :func:`read_store` reads of the input settings (:class:`job.config.InputConfig` is one)."""

    @property
    def path(self) -> str: ...
    @property
    def query(self) -> str: ...
    @property
    def owner(self) -> str: ...
    @property
    def blob_dtype(self) -> str: ...
    @property
    def url_timeout(self) -> float: ...


@dataclass(frozen=True)
class StoreFaces:
    """The faces a store gave, in one float32 array: ``embeddings[:n_filed]`` are filed under ``ids``, the
    rest have no identity (unassigned). Every per-face array is in that same order.

    Attributes
    ----------
    rows : (n,) int64 — each face's position in the order the store returned them
    face, photo, image : (n,) object text or None per face, or None when the source has no such column
    box : (n, 4) float32 ``x1, y1, x2, y2`` in pixels (NaN where unknown), or None
    frame : (n, 2) float32 width and height of the image the box's pixels refer to (Immich's
        ``imageWidth``/``imageHeight``, a query's ``image_width``/``image_height``; NaN where unknown or not
        above 0: the photo's own pixels), or None
    identity_keys : id -> the store's own identity key (text identities: ids are their sorted order)
    names : id -> display name, where the store has a non-empty one
    hidden : ids the store marks hidden (Immich's ``person.isHidden``)
    facts : what run.json records of the read (kind, owner, faces left out and why)
    """

    embeddings: np.ndarray
    n_filed: int
    ids: IdArray
    rows: IdArray
    face: np.ndarray | None
    photo: np.ndarray | None
    image: np.ndarray | None
    box: np.ndarray | None
    identity_keys: dict[int, str] | None
    names: dict[int, str]
    hidden: frozenset[int]
    sha256: str
    facts: dict[str, Any] = field(default_factory=dict)
    frame: np.ndarray | None = None


def is_store(text: str) -> bool:
    """``text`` names a database (``postgresql://``, ``postgres://``, ``sqlite:///``), not a file or https URL."""
    return text.lower().startswith(SCHEMES)


def address(text: str) -> str:
    """The address fit for logs and run.json: no user or password, and of the query parameters only those that
    say where the server is (``host``, ``port``, ``dbname``, ``sslmode``...).

    The user part is cut as libpq cuts it: everything before the last ``@`` ahead of the path, so a password
    holding ``?``, ``#`` or ``:`` leaves nothing behind."""
    if text.lower().startswith("sqlite:"):
        return text.split("?", 1)[0]
    scheme, _, rest = text.partition("://")
    slash = rest.find("/")
    authority, tail = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
    host = authority.rsplit("@", 1)[-1]
    if slash < 0 and "?" in host:
        host, query = host.split("?", 1)
        tail = "?" + query
    path, _, query = tail.partition("?")
    kept = urlencode([(key, value) for key, value in parse_qsl(query) if key in _KEPT_PARAMETERS], safe="/[]:")
    return f"{scheme}://{host}{path.split('#', 1)[0]}" + (f"?{kept}" if kept else "")


def read_store(spec: StoreSpec, max_memory: int | None, log: Callable[[str], None] = lambda message: None
               ) -> StoreFaces:
    """Every face the store at ``spec.path`` holds (an Immich database, or the rows of ``spec.query``).

    Raises
    ------
    UsageError
        A malformed address or ``input.owner``, no ``input.query`` for a store that is not Immich's, or the
        postgres extra not installed.
    InputError
        The server cannot be reached or refuses the login, the query fails or lacks a column, or a row's
        values cannot be read as a face (NULL, mixed dimensions, a blob of the wrong length).
    """
    shown = address(spec.path)
    if spec.owner and not _UUID.match(spec.owner):
        raise UsageError(f"input.owner {display_text(spec.owner, 60)!r}: not a UUID; pass the Immich user's id "
                         "(user.id), e.g. --set input.owner=3f6c1b2e-...")
    opener = _sqlite if spec.path.lower().startswith("sqlite:") else _postgres
    with opener(spec, shown) as session:
        plan = _plan(session, spec, shown)
        log(f"reading {shown}: {plan.describe}")
        try:
            total = session.count(plan.sql, plan.parameters) if plan.total is None else plan.total
        except _QueryFailed as exc:
            raise InputError(f"{shown}: {plan.what} failed ({exc}); check it") from None
        if total == 0:
            raise InputError(f"{shown}: {plan.what} returned no faces; {plan.fix_empty}")
        return _collect(session, plan, total, spec, shown=shown, max_memory=max_memory)


# --- sessions -------------------------------------------------------------------------------------------------


class _Session(Protocol):
    kind: str

    def count(self, sql: str, parameters: Sequence[Any]) -> int: ...
    def rows(self, sql: str, parameters: Sequence[Any]) -> tuple[list[str], Iterator[Sequence[Sequence[Any]]]]: ...


@dataclass
class _Failing:
    """Turns a driver's error into one line naming the address, never the password."""

    shown: str
    secrets: tuple[str, ...]

    def message(self, exc: BaseException) -> str:
        text = _USERINFO.sub(r"\1", str(exc))  # libpq may quote an address whole
        text = _PASSWORD_PARAMETER.sub(r"\1=<password>", text)
        for secret in self.secrets:
            text = text.replace(secret, "<password>")
        return one_line(text, 300, ellipsis="...")


def _secrets(text: str) -> tuple[str, ...]:
    """The password of an address as written and as decoded (userinfo and ``password=``/``sslpassword=``), to
    blank out of any message; longest first."""
    found: set[str] = set()
    _, _, rest = text.partition("://")
    authority = rest.split("/", 1)[0]
    if "@" in authority:
        userinfo = authority.rsplit("@", 1)[0]
        if ":" in userinfo:
            found.add(userinfo.split(":", 1)[1])
    for match in _PASSWORD_PARAMETER.finditer(text):
        found.add(match.group(2).split("&", 1)[0])
    found |= {unquote(secret) for secret in found}
    return tuple(sorted((secret for secret in found if secret), key=len, reverse=True))


@contextmanager
def _postgres(spec: StoreSpec, shown: str) -> Iterator[_Session]:
    try:
        import psycopg
    except ImportError:
        raise UsageError(f"{shown}: reading PostgreSQL needs psycopg and pgvector, which are not installed; "
                         f"{_POSTGRES_FIX}") from None
    failing = _Failing(shown, _secrets(spec.path))
    try:
        given = psycopg.conninfo.conninfo_to_dict(spec.path)
    except psycopg.ProgrammingError:  # an address libpq cannot parse: its own message quotes the address whole
        raise UsageError(f"{shown}: not a PostgreSQL address libpq can parse; use postgresql://USER@HOST:PORT/DB "
                         "(percent-encode a password's special characters, or give it in PGPASSWORD)") from None
    # the server refuses every write in this session; the user's own options (search_path...) are kept
    options = " ".join(part for part in (str(given.get("options") or os.environ.get("PGOPTIONS", "")),
                                         "-c default_transaction_read_only=on") if part)
    extra: dict[str, Any] = {"options": options}
    if "connect_timeout" not in given:
        extra["connect_timeout"] = max(1, round(spec.url_timeout))
    try:
        connection = psycopg.connect(spec.path, **extra)
    except psycopg.Error as exc:
        raise InputError(f"{shown}: cannot connect ({failing.message(exc)}); check the address, that the server "
                         "is running, and the user and password (in the URL, PGPASSWORD or ~/.pgpass)") from None
    try:
        connection.read_only = True
        # one snapshot for the count and the read, so a library changing meanwhile cannot make them disagree
        connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        yield _PgSession(connection, failing)
    finally:
        connection.close()


@dataclass
class _PgSession:
    connection: Any
    failing: _Failing
    kind: str = "postgresql"
    _vector: bool | None = None

    def _scalar(self, sql: str, parameters: Sequence[Any] = ()) -> Any:
        with self._guard(sql), self.connection.cursor() as cursor:
            cursor.execute(sql, parameters or None)  # None: a '%' in the SQL is no placeholder
            row = cursor.fetchone()
        return None if row is None else row[0]

    @contextmanager
    def _guard(self, sql: str) -> Iterator[None]:
        import psycopg

        try:
            yield
        except psycopg.Error as exc:
            self.connection.rollback()
            raise _QueryFailed(self.failing.message(exc)) from None

    def has_tables(self, names: Sequence[str]) -> bool:
        return all(self._scalar("SELECT to_regclass(%s) IS NOT NULL", (f'"{name}"',)) for name in names)

    def has_column(self, table: str, column: str) -> bool:
        sql = ("SELECT count(*) FROM information_schema.columns WHERE table_name = %s AND column_name = %s "
               "AND table_schema = ANY (current_schemas(false))")
        return bool(self._scalar(sql, (table, column)))

    def count(self, sql: str, parameters: Sequence[Any]) -> int:
        return int(self._scalar(f"SELECT count(*) FROM ({sql}) AS faceatlas_faces", parameters))

    def numbers(self, sql: str, parameters: Sequence[Any]) -> tuple[int, ...]:
        with self._guard(sql), self.connection.cursor() as cursor:
            cursor.execute(sql, parameters or None)
            row = cursor.fetchone()
        return tuple(int(value) for value in row or ())

    def rows(self, sql: str, parameters: Sequence[Any]) -> tuple[list[str], Iterator[Sequence[Sequence[Any]]]]:
        self._register_vector()
        cursor = self.connection.cursor(name="faceatlas_faces", binary=True)
        with self._guard(sql):
            # every row is read: plan for the whole result, not the first rows a cursor is planned for by default
            # (a fast-start nested loop on a table not yet analysed took minutes for 100k faces)
            self.connection.execute("SET LOCAL cursor_tuple_fraction = 1.0")
            cursor.execute(sql, parameters or None)
            first = cursor.fetchmany(BLOCK_ROWS)
        columns = [column.name for column in cursor.description or []]
        types = {column.name.lower(): column.type_code for column in cursor.description or []}
        if types.get("embedding", _BYTEA) != _BYTEA and first and \
                isinstance(first[0][[name.lower() for name in columns].index("embedding")], (bytes, memoryview)):
            # a type psycopg has no loader for arrives as raw bytes: never read those as float32
            raise _QueryFailed(f"the embedding column's type (oid {types['embedding']}) is not one faceatlas "
                               "reads; cast it in the query: embedding::real[]")

        def blocks() -> Iterator[Sequence[Sequence[Any]]]:
            block = first
            while block:
                yield block
                with self._guard(sql):
                    block = cursor.fetchmany(BLOCK_ROWS)
            cursor.close()

        return columns, blocks()

    def _register_vector(self) -> None:
        """pgvector's ``vector`` type, in whichever schema it was installed (``extensions`` on some hosts)."""
        if self._vector is None:
            schema = self._scalar("SELECT n.nspname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
                                  "WHERE t.typname = 'vector' ORDER BY n.nspname = 'public' DESC LIMIT 1")
            self._vector = schema is not None
            if self._vector:
                try:
                    from pgvector.psycopg.vector import register_vector_info
                    from psycopg.types import TypeInfo
                except ImportError:
                    raise UsageError(f"{self.failing.shown}: reading pgvector columns needs the pgvector package; "
                                     f"{_POSTGRES_FIX}") from None
                quoted = '"' + str(schema).replace('"', '""') + '".vector'
                register_vector_info(self.connection, TypeInfo.fetch(self.connection, quoted))


@contextmanager
def _sqlite(spec: StoreSpec, shown: str) -> Iterator[_Session]:
    raw = spec.path.split("?", 1)[0][len("sqlite:///"):]
    if not raw:
        raise UsageError(f"{shown}: no file named; use sqlite:///relative/path.db or sqlite:////absolute/path.db")
    path = Path(unquote(raw))
    if not path.is_file():
        raise InputError(f"{shown}: {path} is not a file; check the path (sqlite:///relative.db, "
                         "sqlite:////absolute.db)")
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        connection.execute("PRAGMA query_only = ON")
        connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        raise InputError(f"{shown}: cannot read it as SQLite ({one_line(exc, 200)}); check that it is a SQLite "
                         "database file") from None
    try:
        yield _SqliteSession(connection, shown)
    finally:
        connection.close()


@dataclass
class _SqliteSession:
    connection: sqlite3.Connection
    shown: str
    kind: str = "sqlite"

    def count(self, sql: str, parameters: Sequence[Any]) -> int:
        with _sqlite_guard():
            return int(self.connection.execute(f"SELECT count(*) FROM ({sql})", tuple(parameters)).fetchone()[0])

    def rows(self, sql: str, parameters: Sequence[Any]) -> tuple[list[str], Iterator[Sequence[Sequence[Any]]]]:
        with _sqlite_guard():
            cursor = self.connection.execute(sql, parameters)
        columns = [column[0] for column in cursor.description or []]

        def blocks() -> Iterator[Sequence[Sequence[Any]]]:
            while True:
                with _sqlite_guard():
                    block = cursor.fetchmany(BLOCK_ROWS)
                if not block:
                    return
                yield block

        return columns, blocks()


@contextmanager
def _sqlite_guard() -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise _QueryFailed(one_line(exc, 300, ellipsis="...")) from None


class _QueryFailed(Exception):
    """A statement failed; :func:`read_store` says which and where in one line."""


# --- what to read ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    sql: str
    parameters: tuple[Any, ...]
    what: str
    describe: str
    fix_empty: str
    facts: dict[str, Any]
    total: int | None = None  # the rows the read returns, when the plan counted them already


def _plan(session: _Session, spec: StoreSpec, shown: str) -> _Plan:
    try:
        if spec.query:
            if spec.owner:
                raise UsageError("input.owner limits an Immich database to one user; with input.query, filter "
                                 "in the query itself")
            query = spec.query.strip().rstrip(";").rstrip()  # a trailing ';' would end the count(*) around it
            return _Plan(query, (), "input.query", "the rows of input.query",
                         "check input.query", {"kind": session.kind, "query": spec.query})
        if isinstance(session, _PgSession) and session.has_tables(IMMICH_TABLES):
            return _immich_plan(session, spec)
    except _QueryFailed as exc:
        raise InputError(f"{shown}: could not read the schema ({exc}); check the database name and the user's "
                         "rights to read it") from None
    raise UsageError(f"{shown}: not an Immich database (no tables {', '.join(IMMICH_TABLES)}) and no input.query; "
                     "name the faces with --set input.query=\"SELECT person AS identity, vector AS embedding FROM "
                     "faces\"")


def _immich_plan(session: _PgSession, spec: StoreSpec) -> _Plan:
    """Immich's faces: ``face_search`` joined to ``asset_face``, its ``asset`` and its person; faces deleted, of a
    deleted or trashed asset, hidden from view (``asset_face.isVisible`` false), or of an asset in the locked
    folder or hidden (``asset.visibility`` other than ``timeline``/``archive``) left out.

    Two shapes of the person link are read: Immich <= 3.1 files a face under ``asset_face."personId"`` ->
    ``person.id``; from 3.2 under ``asset_face."personGroupId"`` -> ``person_group``, whose ``person`` row is
    per owner (``person."ownerId"``, ``person."personGroupId"``). The identity is that id either way.
    """
    if session.has_column("asset_face", "personGroupId"):
        identity = 'af."personGroupId"'
        person = 'LEFT JOIN person p ON p."personGroupId" = af."personGroupId" AND p."ownerId" = a."ownerId"'
    elif session.has_column("asset_face", "personId"):
        identity, person = 'af."personId"', 'LEFT JOIN person p ON p.id = af."personId"'
    else:
        raise UsageError("asset_face has neither personId (Immich <= 3.1) nor personGroupId (3.2): an Immich "
                         "version faceatlas does not know; pass --set input.query=\"SELECT ...\" naming the faces")
    kept = ['af."deletedAt" IS NULL', 'a."deletedAt" IS NULL']
    if session.has_column("asset", "status"):
        kept.append("a.status::text = 'active'")
    if session.has_column("asset_face", "isVisible"):
        kept.append('af."isVisible"')
    if session.has_column("asset", "visibility"):  # the PIN-locked folder and live photos' hidden motion parts
        kept.append("a.visibility::text IN ('timeline', 'archive')")
    where, parameters = list(kept), tuple[Any, ...]()
    if spec.owner:
        where.append('a."ownerId" = %s::uuid')
        parameters = (spec.owner,)
    joined = 'FROM face_search fs JOIN asset_face af ON af.id = fs."faceId" JOIN asset a ON a.id = af."assetId"'
    sql = (f'SELECT af.id::text AS face, {identity}::text AS identity, p.name AS name, p."isHidden" AS hidden, '
           'af."assetId"::text AS photo, a."originalPath" AS image, '
           'af."boundingBoxX1" AS box_x1, af."boundingBoxY1" AS box_y1, af."boundingBoxX2" AS box_x2, '
           'af."boundingBoxY2" AS box_y2, af."imageWidth" AS image_width, af."imageHeight" AS image_height, '
           f'fs.embedding AS embedding {joined} '
           f"{person} WHERE {' AND '.join(where)} ORDER BY af.id")
    # one pass counts the faces read and those left out (the person join adds no rows: one person per face)
    counted = (f"SELECT count(*) FILTER (WHERE {' AND '.join(kept)}), count(*) {joined}"
               + (' WHERE a."ownerId" = %s::uuid' if spec.owner else ""))
    total, every = session.numbers(counted, parameters)
    owner = spec.owner or "all"
    describe = f"an Immich database, faces of user {spec.owner}" if spec.owner else "an Immich database, all users"
    return _Plan(sql, parameters, "the Immich faces", describe,
                 "the library has no detected faces yet (or none of this owner's); run Immich's face detection",
                 {"kind": "immich", "owner": owner, "left_out_deleted": every - total}, total)


# --- reading the rows -----------------------------------------------------------------------------------------


@dataclass
class _Columns:
    index: dict[str, int]

    @classmethod
    def of(cls, names: list[str], shown: str, what: str) -> _Columns:
        index: dict[str, int] = {}
        for position, name in enumerate(names):
            index.setdefault(name.lower(), position)
        missing = [name for name in REQUIRED if name not in index]
        if missing:
            got = ", ".join(display_text(name, 40) for name in names[:12]) or "none"
            raise InputError(f"{shown}: {what} returns the columns {got}; it needs {' and '.join(REQUIRED)} "
                             "(name them with AS)")
        return cls(index)

    def get(self, row: Sequence[Any], name: str) -> Any:
        position = self.index.get(name)
        return None if position is None else row[position]


def _collect(session: _Session, plan: _Plan, total: int, spec: StoreSpec, *, shown: str,
             max_memory: int | None) -> StoreFaces:
    try:
        names, rows = session.rows(plan.sql, plan.parameters)
    except _QueryFailed as exc:
        raise InputError(f"{shown}: {plan.what} failed ({exc}); check it") from None
    filler = _Filler(_Columns.of(names, shown, plan.what), total, shown, plan.what, _decoder(spec.blob_dtype, shown))
    try:
        for block in rows:
            filler.add_block(filler.read, block, max_memory)
    except _QueryFailed as exc:
        raise InputError(f"{shown}: {plan.what} failed while reading ({exc}); run again") from None
    return filler.faces(plan)


@dataclass
class _Filler:
    """Rows into one preallocated float32 array: faces with an identity from the front, without from the back."""

    columns: _Columns
    total: int
    shown: str
    what: str
    decode: Callable[[Any, int], np.ndarray]
    buffer: np.ndarray | None = None
    front: int = 0
    read: int = 0
    digest: Any = field(default_factory=hashlib.sha256)
    identities: list[Any] = field(default_factory=list)
    names: dict[Any, str] = field(default_factory=dict)
    hidden: set[Any] = field(default_factory=set)
    extra: dict[str, list[str | None]] = field(default_factory=dict)
    boxes: np.ndarray | None = None
    frames: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.order = np.empty(self.total, dtype=np.int64)  # buffer position -> read position
        self.back = self.total
        self.extra = {name: [None] * self.total for name in ("face", "photo", "image") if name in self.columns.index}
        if "box_x1" in self.columns.index:
            self.boxes = np.full((self.total, 4), np.nan, dtype=np.float32)
        if "image_width" in self.columns.index or "image_height" in self.columns.index:
            self.frames = np.full((self.total, 2), np.nan, dtype=np.float32)

    def add_block(self, start: int, block: Sequence[Sequence[Any]], max_memory: int | None) -> None:
        """Rows ``start..start+len(block)`` of the read, a block at a time (columns, then arrays)."""
        n = len(block)
        if start + n > self.total:
            raise InputError(f"{self.shown}: {self.what} returned more rows than it counted ({self.total:,}); the "
                             "database changed while it was read: run again")
        columns = list(zip(*block, strict=True))
        index = self.columns.index

        def column(name: str) -> Sequence[Any] | None:
            return columns[index[name]] if name in index else None

        identity, embedding = column("identity"), column("embedding")
        assert identity is not None and embedding is not None  # _Columns.of checked both are there
        keys = [_identity(value, start + i, self.shown) for i, value in enumerate(identity)]
        vectors = [self.decode(value, start + i) for i, value in enumerate(embedding)]
        buffer = self._buffer(len(vectors[0]), max_memory)
        width = buffer.shape[1]
        for i, vector in enumerate(vectors):
            if len(vector) != width:
                raise InputError(f"{self.shown}: face {_where(block[i], self.columns, start + i)} has {len(vector)} "
                                 f"embedding values where the first had {width}; every face must come from one "
                                 "recognizer (filter the query to one model)")
        filed = np.fromiter((key is not None for key in keys), dtype=bool, count=n)
        at = np.empty(n, dtype=np.int64)
        n_filed = int(filed.sum())
        at[filed] = np.arange(self.front, self.front + n_filed)
        at[~filed] = np.arange(self.back - 1, self.back - 1 - (n - n_filed), -1)
        self.front += n_filed
        self.back -= n - n_filed
        rows = np.stack(vectors).astype(np.float32, copy=False)
        buffer[at] = rows
        self.order[at] = np.arange(start, start + n)
        self.digest.update(repr(keys).encode())
        self.digest.update(rows.tobytes())
        filed_keys = [key for key in keys if key is not None]
        self.identities.extend(filed_keys)
        names, hidden = column("name"), column("hidden")
        for i in np.flatnonzero(filed).tolist():
            if names is not None and isinstance(names[i], str) and names[i]:
                self.names.setdefault(keys[i], names[i])
            if hidden is not None and _flag(hidden[i]):
                self.hidden.add(keys[i])
        for name, values in self.extra.items():
            for position, value in zip(at.tolist(), column(name) or (), strict=True):
                values[position] = _text(value)
        if self.boxes is not None:
            corners = [column(f"box_{corner}") for corner in ("x1", "y1", "x2", "y2")]
            self.boxes[at] = np.array([[_number(value) for value in corner or [None] * n] for corner in corners],
                                      dtype=np.float32).T
        if self.frames is not None:  # Immich's 0 x 0: not known
            sides = [column(name) or [None] * n for name in ("image_width", "image_height")]
            frames = np.array([[_number(value) for value in side] for side in sides], dtype=np.float32).T
            self.frames[at] = np.where(frames > 0, frames, np.nan)
        self.read = start + n

    def _buffer(self, dim: int, max_memory: int | None) -> np.ndarray:
        if self.buffer is None:
            require(self.total * dim * 4, max_memory, f"{self.shown}: {self.total:,} faces x {dim} as float32",
                    "limit the faces with input.query or input.owner")
            self.buffer = np.empty((self.total, dim), dtype=np.float32)
        return self.buffer

    def faces(self, plan: _Plan) -> StoreFaces:
        """What was read, faces with an identity first, then the unassigned ones in the order they came."""
        buffer, read, front, total = self.buffer, self.read, self.front, self.total
        if buffer is None:
            raise InputError(f"{self.shown}: {plan.what} returned no faces; {plan.fix_empty}")
        kept = np.r_[np.arange(front), np.arange(total - 1, self.back - 1, -1)]  # unassigned back in read order
        order, extra, boxes, frames = self.order, self.extra, self.boxes, self.frames
        if read < total or self.back < total:
            buffer = _in_read_order(buffer, front, self.back)
            order = order[kept]
            extra = {name: [values[i] for i in kept.tolist()] for name, values in extra.items()}
            boxes = None if boxes is None else boxes[kept]
            frames = None if frames is None else frames[kept]
        ids, identity_keys = _identity_ids(self.identities, self.shown)
        id_of = dict(zip(self.identities, ids.tolist(), strict=True))
        arrays = {name: np.asarray(values, dtype=object) for name, values in extra.items()}
        return StoreFaces(buffer, front, ids, order, arrays.get("face"), arrays.get("photo"), arrays.get("image"),
                          boxes, identity_keys, {id_of[key]: name for key, name in self.names.items()},
                          frozenset(id_of[key] for key in self.hidden), self.digest.hexdigest(),
                          {**plan.facts, "faces_read": read}, frames)


def _in_read_order(buffer: np.ndarray, front: int, back: int) -> np.ndarray:
    """The unassigned faces, written from the end backwards, put in read order right after the filed ones, in
    place (a copy of those rows only); the rows a short read left unused are dropped."""
    loose = buffer[back:][::-1].copy()
    buffer[front:front + len(loose)] = loose
    return buffer[: front + len(loose)]


def _identity(value: Any, position: int, shown: str) -> int | str | None:
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        raise InputError(f"{shown}: row {position} has identity {value!r}, a boolean; return an integer or text key")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise InputError(f"{shown}: row {position} has a binary identity; cast it to text in the query")
    raise InputError(f"{shown}: row {position} has identity of type {type(value).__name__}; return an integer or "
                     "text key (cast it in the query)")


def _identity_ids(identities: list[Any], shown: str) -> tuple[IdArray, dict[int, str] | None]:
    """Integer keys are the ids; text keys map to their sorted order (the mapping is kept)."""
    kinds = {type(key) for key in identities}
    if not kinds:  # no face has an identity
        return np.zeros(0, dtype=np.int64), None
    if kinds == {int}:
        return np.asarray(identities, dtype=np.int64), None
    if kinds != {str}:
        raise InputError(f"{shown}: the identity column mixes integers and text; cast it to one type in the query")
    keys, ids = np.unique(np.asarray(identities, dtype=object).astype(str), return_inverse=True)
    return ids.astype(np.int64), {i: str(key) for i, key in enumerate(keys.tolist())}


def _decoder(blob_dtype: str, shown: str) -> Callable[[Any, int], np.ndarray]:
    try:
        item = np.dtype(blob_dtype)
    except TypeError:
        raise UsageError(f"input.blob_dtype {display_text(blob_dtype, 40)!r}: not a numpy dtype; e.g. <f4 "
                         "(little-endian float32), <f2, <f8") from None
    if item.kind != "f":
        raise UsageError(f"input.blob_dtype {blob_dtype!r}: not a floating-point type; e.g. <f4, <f2, <f8")

    def decode(value: Any, position: int) -> np.ndarray:
        if value is None:
            raise InputError(f"{shown}: row {position} has a NULL embedding; leave such rows out in the query "
                             "(WHERE embedding IS NOT NULL)")
        if isinstance(value, (bytes, bytearray, memoryview)):
            data = bytes(value)
            if not data or len(data) % item.itemsize:
                raise InputError(f"{shown}: row {position} has an embedding blob of {len(data)} bytes, not a multiple "
                                 f"of {item.itemsize} ({item.str}); set input.blob_dtype to the type it was written as")
            return np.frombuffer(data, dtype=item)
        if hasattr(value, "to_numpy"):  # a pgvector Vector
            return np.asarray(value.to_numpy())
        if isinstance(value, str):
            return _parse_text(value, position, shown)
        if isinstance(value, (list, tuple, np.ndarray)):
            try:
                vector = np.asarray(value, dtype=np.float64)
            except (TypeError, ValueError):
                raise InputError(f"{shown}: row {position} has an embedding array with NULL or non-numeric "
                                 "values; leave such rows out in the query") from None
            if vector.ndim != 1 or not len(vector):
                raise InputError(f"{shown}: row {position} has an embedding of shape {vector.shape}; expected one "
                                 "flat array of numbers")
            return vector
        raise InputError(f"{shown}: row {position} has an embedding of type {type(value).__name__}; return a "
                         "pgvector vector, an array of reals, or a float32 blob")

    return decode


def _parse_text(value: str, position: int, shown: str) -> np.ndarray:
    body = value.strip()
    if body[:1] in "[{" and body[-1:] in "]}":
        body = body[1:-1]
    try:
        vector = np.array([float(part) for part in body.split(",")], dtype=np.float64)
    except ValueError:
        raise InputError(f"{shown}: row {position} has a text embedding that is not a list of numbers; return a "
                         "vector, an array of reals or a blob") from None
    return vector


def _flag(value: Any) -> bool:
    """A ``hidden`` cell as a boolean: true, a non-zero number, or text such as ``t``/``true``/``yes``/``1``."""
    if isinstance(value, str):
        return value.strip().lower() in {"t", "true", "yes", "y", "1"}
    return bool(value)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _number(value: Any) -> float:
    try:
        return float(value) if value is not None else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def _where(row: Sequence[Any], columns: _Columns, position: int) -> str:
    face = columns.get(row, "face")
    return f"{display_text(str(face), 60)!r} (row {position})" if face is not None else f"in row {position}"
