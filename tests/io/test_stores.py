"""Reading faces from SQL stores: real SQLite files and a real PostgreSQL server with pgvector (pgserver's
binaries, started by the session fixture ``postgres``), read-only, with one-line errors for hostile input."""

from __future__ import annotations

import hashlib
import sqlite3
import sys
from pathlib import Path

import numpy as np
import psycopg
import pytest

from job.config import InputConfig
from job.errors import InputError, UsageError
from job.io.database import load_database
from job.io.stores import address, is_store

DIM = 16


def _faces(n_people: int = 6, per_person: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_people, DIM))
    ids = np.repeat(np.arange(n_people), per_person)
    return ids, (centres[ids] + 0.1 * rng.normal(size=(len(ids), DIM))).astype(np.float32)


def _sqlite(path: Path, rows: list[tuple[object, ...]], columns: str = "face_id INTEGER PRIMARY KEY, person, photo, "
            "vec") -> Path:
    with sqlite3.connect(path) as connection:
        connection.execute(f"CREATE TABLE faces ({columns})")
        marks = ",".join("?" * len(rows[0]))
        connection.executemany(f"INSERT INTO faces VALUES ({marks})", rows)
    connection.close()
    return path


def _blob_db(tmp_path: Path, *, unassigned: tuple[int, ...] = ()) -> tuple[Path, np.ndarray, np.ndarray]:
    ids, vectors = _faces()
    rows = [(row, None if row in unassigned else f"person-{ids[row]}", f"photo-{row}", vectors[row].tobytes())
            for row in range(len(ids))]
    return _sqlite(tmp_path / "faces.db", rows), ids, vectors


QUERY = "SELECT face_id AS face, person AS identity, photo, vec AS embedding FROM faces ORDER BY face_id"


def _load(url: str, query: str = QUERY, **settings: object):
    return load_database(InputConfig(path=url, query=query, **settings))  # type: ignore[arg-type]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sqlite_blobs_text_keys_and_unassigned(tmp_path: Path) -> None:
    db, ids, vectors = _blob_db(tmp_path, unassigned=(2, 9))
    before = _sha(db)
    database = _load(f"sqlite:///{db}")
    assert _sha(db) == before  # read-only: the file is byte-for-byte unchanged
    filed = [row for row in range(len(ids)) if row not in (2, 9)]
    assert database.n_faces == len(filed) and database.input_rows.tolist() == filed
    keys = database.keys
    assert keys is not None and keys.identity is not None
    # text keys map to their sorted order, and the mapping is kept
    assert [keys.identity_key(int(i)) for i in database.ids] == [f"person-{ids[row]}" for row in filed]
    assert keys.face is not None and keys.face.tolist() == [str(row) for row in filed]
    assert keys.photo is not None and keys.photo.tolist() == [f"photo-{row}" for row in filed]
    expected = vectors[filed] / np.linalg.norm(vectors[filed], axis=1, keepdims=True)
    np.testing.assert_allclose(database.unit, expected, atol=1e-6)
    loose = database.unassigned
    assert loose is not None and loose.rows.tolist() == [2, 9] and loose.keys.face is not None
    assert loose.keys.face.tolist() == ["2", "9"]
    assert database.store is not None and database.store["unassigned"] == 2 and database.store["kind"] == "sqlite"


def test_sqlite_integer_identities_are_the_ids(tmp_path: Path) -> None:
    ids, vectors = _faces()
    rows = [(row, int(ids[row]) * 10, None, vectors[row].astype("<f8").tobytes()) for row in range(len(ids))]
    db = _sqlite(tmp_path / "f8.db", rows)
    database = _load(f"sqlite:///{db}", blob_dtype="<f8")
    assert sorted(set(database.ids.tolist())) == [0, 10, 20, 30, 40, 50]
    assert database.keys is not None and database.keys.identity is None and database.keys.identity_key(30) == "30"


def test_sqlite_names_and_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ids, vectors = _faces()
    rows = [(row, f"p{ids[row]}", f"Name {ids[row]}", vectors[row].tobytes()) for row in range(len(ids))]
    _sqlite(tmp_path / "named.db", rows, "face_id INTEGER PRIMARY KEY, person, label, vec")
    monkeypatch.chdir(tmp_path)
    database = _load("sqlite:///named.db", "SELECT person AS identity, label AS name, vec AS embedding FROM faces")
    assert database.names == {i: f"Name {i}" for i in range(6)}


def test_a_writing_query_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    db, _, _ = _blob_db(tmp_path)
    before = _sha(db)
    with pytest.raises(InputError, match=r"input\.query failed"):
        _load(f"sqlite:///{db}", "DELETE FROM faces RETURNING person AS identity, vec AS embedding")
    assert _sha(db) == before


@pytest.mark.parametrize(("rows", "query", "blob_dtype", "message"), [
    ([(0, "a", "p", None)], QUERY, "<f4", "row 0 has a NULL embedding"),
    ([(0, "a", "p", b"\x00" * 10)], QUERY, "<f4", "blob of 10 bytes, not a multiple of 4"),
    ([(0, "a", "p", np.ones(4, "<f4").tobytes()), (1, "b", "p", np.ones(5, "<f4").tobytes())], QUERY, "<f4",
     "has 5 embedding values where the first had 4"),
    ([(0, "a", "p", np.ones(4, "<f4").tobytes())], "SELECT person, vec FROM faces", "<f4",
     "returns the columns person, vec; it needs identity and embedding"),
    ([(0, "a", "p", np.ones(4, "<f4").tobytes())], "SELECT nope FROM faces", "<f4", "input.query failed"),
    ([(0, "a", "p", np.ones(4, "<f4").tobytes()), (1, 7, "p", np.ones(4, "<f4").tobytes())], QUERY, "<f4",
     "mixes integers and text"),
    ([(0, None, "p", np.ones(4, "<f4").tobytes())], QUERY, "<f4", "none of its 1 faces is filed under an identity"),
    ([(0, "a", "p", np.ones(4, "<f4").tobytes())], QUERY + " LIMIT 0", "<f4", "returned no faces"),
    ([(0, "a", "p", "[1, 2, nope]")], QUERY, "<f4", "text embedding that is not a list of numbers"),
    ([(0, "a", "p", np.array([1, np.nan, 0, 1], "<f4").tobytes())], QUERY, "<f4", "NaN"),
])
def test_hostile_rows_get_one_line_errors(tmp_path: Path, rows: list[tuple[object, ...]], query: str,
                                          blob_dtype: str, message: str) -> None:
    db = _sqlite(tmp_path / "bad.db", rows)
    with pytest.raises(InputError) as caught:
        _load(f"sqlite:///{db}", query, blob_dtype=blob_dtype)
    text = str(caught.value)
    assert message in text and "\n" not in text and str(db) in text


@pytest.mark.parametrize(("url", "settings", "error", "message"), [
    ("sqlite:///{db}", {"query": ""}, UsageError, "not an Immich database"),
    ("sqlite:///{db}", {"blob_dtype": "<i4"}, UsageError, "not a floating-point type"),
    ("sqlite:///{db}", {"owner": "me"}, UsageError, "not a UUID"),
    ("sqlite:///{missing}", {}, InputError, "is not a file"),
    ("sqlite:///{text}", {}, InputError, "cannot read it as SQLite"),
])
def test_hostile_stores_get_one_line_errors(tmp_path: Path, url: str, settings: dict[str, str],
                                            error: type[Exception], message: str) -> None:
    db, _, _ = _blob_db(tmp_path)
    (tmp_path / "text.db").write_text("not a database")
    address_of = url.format(db=db, missing=tmp_path / "missing.db", text=tmp_path / "text.db")
    with pytest.raises(error, match=message) as caught:
        _load(address_of, **{"query": QUERY, **settings})
    assert "\n" not in str(caught.value)


def test_addresses_leave_out_secrets() -> None:
    assert is_store("postgresql://u:pw@db/x") and is_store("sqlite:///a.db") and not is_store("https://x/a.npy")
    assert address("postgresql://u:s3cret@db.lan:5433/immich?password=s3cret&sslmode=require") == \
        "postgresql://db.lan:5433/immich?sslmode=require"
    assert address("postgres://u@/immich?host=/run/postgresql") == "postgres:///immich?host=/run/postgresql"


# --- PostgreSQL ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_faces(postgres):  # type: ignore[no-untyped-def]
    """A database ``generic`` with the same faces stored four ways: vector, real[], float8[] and bytea."""
    from tests.immich import database_url

    postgres.psql('CREATE DATABASE "generic";')
    url = database_url(postgres, "generic")
    ids, vectors = _faces()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("CREATE EXTENSION IF NOT EXISTS vector")
        connection.execute(f"CREATE TABLE faces (id serial PRIMARY KEY, person text, photo bigint, v vector({DIM}), "
                           "r real[], d float8[], b bytea)")
        for row in range(len(ids)):
            values = vectors[row].tolist()
            connection.execute("INSERT INTO faces (person, photo, v, r, d, b) VALUES (%s, %s, %s::vector, %s, %s, %s)",
                               (None if row == 3 else f"p-{ids[row]}", row // 2, str(values), values,
                                [float(v) for v in values], vectors[row].tobytes()))
    return url, ids, vectors


@pytest.mark.parametrize("column", ["v", "r", "d", "b"])
def test_postgres_reads_every_vector_type(pg_faces, column: str) -> None:  # type: ignore[no-untyped-def]
    url, ids, vectors = pg_faces
    query = f"SELECT id AS face, person AS identity, photo, {column} AS embedding FROM faces ORDER BY id"
    database = _load(url, query)
    filed = [row for row in range(len(ids)) if row != 3]
    expected = vectors[filed] / np.linalg.norm(vectors[filed], axis=1, keepdims=True)
    np.testing.assert_allclose(database.unit, expected, atol=1e-6)
    assert database.unassigned is not None and database.unassigned.rows.tolist() == [3]
    assert database.keys is not None and database.keys.photo is not None
    assert database.keys.photo.tolist()[:3] == ["0", "0", "1"]


def test_postgres_session_is_read_only(pg_faces) -> None:  # type: ignore[no-untyped-def]
    url, ids, _ = pg_faces
    writing = "SELECT person AS identity, v AS embedding, nextval('faces_id_seq') AS face FROM faces"
    with pytest.raises(InputError, match="read-only transaction") as caught:
        _load(url, writing)
    assert "\n" not in str(caught.value)
    with psycopg.connect(url) as connection:
        assert connection.execute("SELECT count(*) FROM faces").fetchone() == (len(ids),)


def test_postgres_wrong_password_never_shows_it(postgres, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.immich import database_url

    postgres.psql("CREATE ROLE guarded LOGIN PASSWORD 'right-one';")
    hba = Path(postgres.pgdata) / "pg_hba.conf"
    hba.write_text("local all guarded scram-sha-256\n" + hba.read_text())
    postgres.psql("SELECT pg_reload_conf();")
    url = database_url(postgres, "postgres").replace("postgres:@", "guarded:Wr0ng-s3cret@", 1)
    with pytest.raises(InputError) as caught:
        _load(url, "SELECT 1 AS identity, '[1,2]'::vector AS embedding")
    message = str(caught.value)
    assert "Wr0ng-s3cret" not in message and "cannot connect" in message and "password" in message
    assert "\n" not in message


def test_postgres_unreachable_server() -> None:
    with pytest.raises(InputError, match="cannot connect") as caught:
        _load("postgresql://someone:hunter2@127.0.0.1:1/immich", url_timeout=2)
    assert "hunter2" not in str(caught.value) and "postgresql://127.0.0.1:1/immich" in str(caught.value)


def test_missing_postgres_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if faceatlas[postgres] were not installed
    with pytest.raises(UsageError, match=r"pip install 'faceatlas\[postgres\]'"):
        _load("postgresql://db/immich")


def test_not_immich_without_query(pg_faces) -> None:  # type: ignore[no-untyped-def]
    url, _, _ = pg_faces
    with pytest.raises(UsageError, match=r"not an Immich database .* and no input\.query"):
        _load(url, "")


@pytest.mark.parametrize("url", ["postgres://u:s3cretpw@[::1/db", "postgresql://u:s3cretpw@host:notaport/db",
                                 "postgresql://u@h.invalid/db?password=s3cretpw&host=["])
def test_malformed_addresses_never_show_the_password(url: str) -> None:
    with pytest.raises((InputError, UsageError)) as caught:
        _load(url, url_timeout=2)
    assert "s3cretpw" not in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://u:pa?ss@h/db", "postgresql://h/db"),
    ("postgresql://u:12?ab@h:5432/db?sslmode=require", "postgresql://h:5432/db?sslmode=require"),
    ("postgresql://u:p#w@h/db", "postgresql://h/db"),
    ("postgresql://u:p@ss@h/db", "postgresql://h/db"),
    ("postgresql://u:pw@h?password=pw", "postgresql://h"),
])
def test_addresses_cut_the_password_as_libpq_does(url: str, shown: str) -> None:
    assert address(url) == shown


@pytest.mark.parametrize("url", ["postgresql://u:ab%41%zz@h/db", "postgresql://u:ab%00cd@h/db",
                                 "postgresql://u@h/db?password=hunter%zz2"])
def test_unparsable_addresses_never_quote_the_password(url: str) -> None:
    with pytest.raises((InputError, UsageError)) as caught:
        _load(url, url_timeout=2)
    message = str(caught.value)
    assert "%zz" not in message and "ab%00cd" not in message and "hunter" not in message and "\n" not in message


def test_percent_signs_and_a_trailing_semicolon_in_a_query(pg_faces) -> None:  # type: ignore[no-untyped-def]
    url, ids, _ = pg_faces
    query = "SELECT person AS identity, v AS embedding FROM faces WHERE person LIKE 'p-%' ;  "
    database = _load(url, query)
    assert database.n_faces == len(ids) - 1 and database.unassigned is None


def test_vector_in_another_schema_and_unreadable_types(postgres) -> None:  # type: ignore[no-untyped-def]
    from tests.immich import database_url

    postgres.psql('CREATE DATABASE "elsewhere";')
    url = database_url(postgres, "elsewhere")
    _, vectors = _faces()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("CREATE SCHEMA extensions")
        connection.execute("CREATE EXTENSION vector SCHEMA extensions")
        connection.execute("CREATE TABLE faces (person int, v extensions.vector(16), spot point)")
        for row, vector in enumerate(vectors):
            connection.execute("INSERT INTO faces VALUES (%s, %s::text::extensions.vector, point(1, 2))",
                               (row % 3, str(vector.tolist())))
    database = _load(url, "SELECT person AS identity, v AS embedding FROM faces")  # search_path lacks the schema
    np.testing.assert_allclose(database.unit, vectors / np.linalg.norm(vectors, axis=1, keepdims=True), atol=1e-6)
    with pytest.raises(InputError, match=r"type \(oid 600\) is not one faceatlas reads; cast it"):
        _load(url, "SELECT person AS identity, spot AS embedding FROM faces")


def test_unassigned_faces_under_drop_invalid_and_their_rows(tmp_path: Path) -> None:
    ids, vectors = _faces()
    cells = [(f"p{ids[row]}", vectors[row].tobytes()) for row in range(len(ids))]
    cells.insert(2, (None, np.zeros(DIM, "<f4").tobytes()))  # read row 2: no person, all zeros
    db = _sqlite(tmp_path / "zero.db", [(row, person, None, vector) for row, (person, vector) in enumerate(cells)])
    with pytest.raises(InputError, match=r"faces without an identity\): 1 embeddings are all zeros \(rows 2\)"):
        _load(f"sqlite:///{db}", "SELECT face_id AS face, person AS identity, vec AS embedding FROM faces "
              "ORDER BY rowid")
    database = _load(f"sqlite:///{db}", "SELECT person AS identity, vec AS embedding FROM faces ORDER BY rowid",
                     drop_invalid=True)
    assert database.unassigned is None and database.dropped == {"nan_or_inf": 0, "zero": 1}
    assert database.n_faces == len(ids) and 2 not in database.input_rows.tolist()


def test_hidden_cells_are_read_as_flags(tmp_path: Path) -> None:
    ids, vectors = _faces()
    flags = ["false", "0", "t", "1", "", "no"]
    rows = [(row, f"p{ids[row]}", flags[ids[row]], vectors[row].tobytes()) for row in range(len(ids))]
    db = _sqlite(tmp_path / "hidden.db", rows, "face_id INTEGER PRIMARY KEY, person, hide, vec")
    database = _load(f"sqlite:///{db}", "SELECT person AS identity, hide AS hidden, vec AS embedding FROM faces")
    assert database.keys is not None and database.keys.identity is not None
    assert sorted(database.keys.identity[i] for i in database.keys.hidden) == ["p2", "p3"]


def test_a_store_of_unassigned_faces_is_placed_by_transform(tmp_path: Path) -> None:
    ids, vectors = _faces()
    db = _sqlite(tmp_path / "loose.db", [(row, None, None, vectors[row].tobytes()) for row in range(len(ids))])
    with pytest.raises(InputError, match="none of its 24 faces is filed under an identity"):
        _load(f"sqlite:///{db}")
    faces = load_database(InputConfig(path=f"sqlite:///{db}", query=QUERY), ids_optional=True)
    assert not faces.has_ids and faces.n_faces == len(ids)
    assert faces.keys is not None and faces.keys.face is not None and faces.keys.face[0] == "0"


def test_held_memory_counts_against_the_cap_only() -> None:
    from job.errors import OutOfMemoryError
    from job.io.memory import require

    mib = 2**20
    require(10 * mib, 100 * mib, "x", "y", held=80 * mib)
    with pytest.raises(OutOfMemoryError, match=r"needs 0\.11 GiB but the configured max_memory is 0\.10 GiB"):
        require(30 * mib, 100 * mib, "x", "y", held=80 * mib)
