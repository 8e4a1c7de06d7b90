"""An Immich-shaped PostgreSQL database for tests and bench/bench_stores.py: Immich's own DDL
(tests/fixtures/immich_schema.sql, v3.2; immich_schema_v3_1.sql, <= 3.1) filled with planted faces.

Planted: faces filed under the wrong person (the demo's misfiles), some of them in one photo with a genuine
face of the person they are filed under (a same-photo conflict), faces with no person (unassigned), faces
deleted or on a trashed asset, hidden persons, a name with control characters, a second Immich user.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FIXTURES = Path(__file__).parent / "fixtures"
SCHEMAS = {"3.2": FIXTURES / "immich_schema.sql", "3.1": FIXTURES / "immich_schema_v3_1.sql"}
BAD_NAME = "Eve\x1b[31m\nEvil"


@dataclass(frozen=True)
class Plants:
    """How much to plant: shares of faces with no person and deleted, and same-photo conflicts."""

    unassigned_share: float = 0.02
    deleted_share: float = 0.01
    conflicts: int = 10
    vector_index: bool = True  # False: drop Immich's hnsw face_index (a bench's 100k inserts skip its upkeep)


@dataclass
class ImmichPlant:
    """What was planted: keys by input row of the source faces, and the sets a test checks."""

    url: str
    face_key: list[str]
    person_key: dict[int, str]  # identity id of the source -> its person (group) uuid
    owner_a: str
    owner_b: str
    unassigned_rows: list[int] = field(default_factory=list)
    deleted_rows: list[int] = field(default_factory=list)
    conflicts: list[tuple[int, int]] = field(default_factory=list)  # (misfiled row, genuine row) in one photo
    hidden: list[int] = field(default_factory=list)


def _uuid(rng: np.random.Generator) -> str:
    return str(uuid.UUID(bytes=rng.bytes(16), version=4))


def database_url(server: Any, name: str) -> str:
    """The address of database ``name`` on the pgserver ``server``."""
    base = server.get_uri()
    return base.replace("/postgres?", f"/{name}?", 1)


def build_immich(server: Any, name: str, ids: np.ndarray, embeddings: np.ndarray, misfiled: list[int], *,
                 version: str = "3.2", seed: int = 0, plants: Plants = Plants()) -> ImmichPlant:
    """Create database ``name`` with Immich's schema and the faces ``ids``/``embeddings`` (the source's rows)."""
    import psycopg

    rng = np.random.default_rng(seed)
    server.psql(f'CREATE DATABASE "{name}";')
    url = database_url(server, name)
    n = len(ids)
    identities = np.unique(ids)
    owner_a, owner_b = _uuid(rng), _uuid(rng)
    person_key = {int(i): _uuid(rng) for i in identities}
    owner_of = {int(i): owner_b if k % 10 == 9 else owner_a for k, i in enumerate(identities)}
    hidden = [int(i) for k, i in enumerate(identities) if k % 50 == 7]
    face_key = [_uuid(rng) for _ in range(n)]
    misfiled_set = set(misfiled)
    genuine = [row for row in range(n) if row not in misfiled_set]
    picked = rng.permutation(genuine)
    n_loose, n_deleted = int(n * plants.unassigned_share), int(n * plants.deleted_share)
    unassigned = sorted(int(r) for r in picked[:n_loose])
    deleted = sorted(int(r) for r in picked[n_loose:n_loose + n_deleted])
    deleted_set, loose_set = set(deleted), set(unassigned)
    # one photo per face, but each conflict puts a misfiled face in the photo of a genuine face of its filed id
    photo_of = list(range(n))
    planted: list[tuple[int, int]] = []
    for row in misfiled[: plants.conflicts]:
        partners = [r for r in np.flatnonzero(ids == ids[row]).tolist()
                    if r not in misfiled_set and r not in deleted_set and r not in loose_set]
        if partners:
            photo_of[row] = photo_of[partners[0]]
            planted.append((row, partners[0]))
    # a third on a trashed asset, a third in the locked folder, a third deleted faces
    trashed_photo = {photo_of[r] for r in deleted[: n_deleted // 3]}
    locked_photo = {photo_of[r] for r in deleted[n_deleted // 3: 2 * n_deleted // 3]}
    asset_key = {photo: _uuid(rng) for photo in set(photo_of)}
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(SCHEMAS[version].read_text())
        dim = int(np.asarray(embeddings).shape[1])
        if not plants.vector_index or dim != 512:
            connection.execute("DROP INDEX face_index")
        if dim != 512:  # Immich holds buffalo_l's 512-D; other recognizers' vectors in the same shape of table
            connection.execute(f"ALTER TABLE face_search ALTER COLUMN embedding TYPE vector({dim})")
        cluster = _uuid(rng)
        users = [(owner_a, "a@example.test", "Ada"), (owner_b, "b@example.test", "Bo")]
        if version == "3.2":
            connection.execute("INSERT INTO cluster_group (id, name) VALUES (%s, 'family')", (cluster,))
            for user in users:
                connection.execute('INSERT INTO "user" (id, email, name, "clusterGroupId") VALUES (%s, %s, %s, %s)',
                                   (*user, cluster))
        else:
            for user in users:
                connection.execute('INSERT INTO "user" (id, email, name) VALUES (%s, %s, %s)', user)
        with connection.cursor() as cursor:
            for k, identity in enumerate(identities.tolist()):
                name_text = BAD_NAME if k == 3 else ("" if k == 5 else f"Person {identity}")
                key, owner = person_key[identity], owner_of[identity]
                if version == "3.2":
                    cursor.execute('INSERT INTO person_group (id, "clusterGroupId") VALUES (%s, %s)', (key, cluster))
                    cursor.execute('INSERT INTO person ("ownerId", "personGroupId", name, "isHidden") '
                                   "VALUES (%s, %s, %s, %s)", (owner, key, name_text, identity in hidden))
                else:
                    cursor.execute('INSERT INTO person (id, "ownerId", name, "isHidden") VALUES (%s, %s, %s, %s)',
                                   (key, owner, name_text, identity in hidden))
            owner_of_photo = {photo_of[row]: owner_of[int(ids[row])] for row in range(n) if photo_of[row] == row}
            with cursor.copy('COPY asset (id, "ownerId", type, "originalPath", "fileCreatedAt", "fileModifiedAt", '
                             'checksum, "originalFileName", "localDateTime", "checksumAlgorithm", status, '
                             '"deletedAt", visibility) FROM STDIN') as copy:
                for photo, key in asset_key.items():
                    trashed = photo in trashed_photo
                    copy.write_row((key, owner_of_photo.get(photo, owner_a), "IMAGE",
                                    f"/usr/src/app/upload/library/{photo:06d}.jpg", "2026-01-01", "2026-01-01",
                                    hashlib.sha1(key.encode()).digest(), f"{photo:06d}.jpg", "2026-01-01", "sha1",
                                    "trashed" if trashed else "active", "2026-02-01" if trashed else None,
                                    "locked" if photo in locked_photo else "timeline"))
            person_column = '"personGroupId"' if version == "3.2" else '"personId"'
            with cursor.copy(f'COPY asset_face (id, "assetId", {person_column}, "imageWidth", "imageHeight", '
                             '"boundingBoxX1", "boundingBoxY1", "boundingBoxX2", "boundingBoxY2", "deletedAt") '
                             "FROM STDIN") as copy:
                for row in range(n):
                    person = None if row in loose_set else person_key[int(ids[row])]
                    gone = row in deleted_set and photo_of[row] not in trashed_photo | locked_photo
                    copy.write_row((face_key[row], asset_key[photo_of[row]], person, 4000, 3000,
                                    100 + row % 7, 200, 300, 420, "2026-02-01" if gone else None))
            with cursor.copy('COPY face_search ("faceId", embedding) FROM STDIN') as copy:
                for row in range(n):
                    values = ",".join(f"{v:.8g}" for v in np.asarray(embeddings[row], dtype=np.float32).tolist())
                    copy.write_row((face_key[row], f"[{values}]"))
    return ImmichPlant(url, face_key, person_key, owner_a, owner_b, unassigned, deleted, planted, hidden)


def fingerprint(url: str) -> dict[str, Any]:
    """Row counts of every Immich table read and a checksum of the stored embeddings and person links."""
    import psycopg

    with psycopg.connect(url) as connection:
        counts = {table: connection.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]  # type: ignore[index]
                  for table in ("user", "asset", "asset_face", "person", "face_search")}
        embeddings = connection.execute(
            'SELECT md5(string_agg("faceId"::text || embedding::text, \',\' ORDER BY "faceId")) FROM face_search'
        ).fetchone()[0]  # type: ignore[index]
        faces = connection.execute(
            "SELECT md5(string_agg(to_jsonb(af)::text, ',' ORDER BY af.id)) FROM asset_face af").fetchone()[0]  # type: ignore[index]
    return {"counts": counts, "embeddings": embeddings, "faces": faces}
