"""``faceatlas apply``: a run's accepted corrections carried out on a copy of the file database it read.

The run folder is verified first (every file against run.json), the input against the SHA-256 the run
recorded (so the rows and ids the corrections name are the ones the run saw), every row of the corrections
file checked against the run (:mod:`job.apply.requests`); only then is the copy written, beside a record of
every change (``NEW.applied.json``), both or neither. The input is never written: an ``--out`` that is the
input by any name (the same path, a link, a hard link) is refused, and so is one that exists, unless
``force``. A database source is refused: faceatlas never writes to a database.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from job.apply.copies import Edits, read_ids, write_copy
from job.apply.requests import APPLIED, Change, Requested, RunFaces, read_requests
from job.atomic import atomic_write, move_without_replacing
from job.errors import InputError, UsageError
from job.io.files import display_text
from job.io.formats import file_sha256, sniff_format
from job.io.stores import is_store
from job.store.reports import CORRECTIONS_FILE

_SUFFIXES = {"npy": (".npy",), "npz": (".npz",), "parquet": (".parquet", ".pq")}


@dataclass(frozen=True)
class Applied:
    """What ``apply`` wrote: the copy ``out``, its record ``record``, the faces in it, and counts per action
    (``move``, ``remove``, ``merge``: rows carried out; ``merged_faces``: faces relabelled by the merges;
    ``review``: rows left as they are)."""

    out: Path
    record: Path
    n_faces: int
    counts: dict[str, int]


def applied_record_path(out: Path) -> Path:
    """``NEW.applied.json`` beside the copy ``NEW``."""
    return out.with_name(out.name + ".applied.json")


def apply_corrections(folder: Path, out: Path, *, corrections: Path | None = None, source: Path | None = None,
                      force: bool = False) -> Applied:
    """Carry out ``corrections`` (default: the run's own corrections.csv) on a copy of the run's input
    (``source``: where that file is now, when run.json's path no longer leads to it), written to ``out``."""
    from job.store.coherence import read_projection
    from job.store.runs import open_run

    finished = open_run(folder)
    record = finished.record
    source = _source(folder, record.input.path, record.input.store, source)
    kind = sniff_format(source)
    _check_out(source, out, kind, force=force)
    if out.resolve().parent == folder.resolve():
        raise UsageError(f"--out {out}: that is inside the run folder {folder}, which holds only the run's own "
                         "files; write the copy elsewhere")
    chosen = corrections if corrections is not None else folder / CORRECTIONS_FILE
    if corrections is None and CORRECTIONS_FILE not in finished.files:
        raise InputError(f"{folder}: this run wrote no {CORRECTIONS_FILE} (faceatlas < 0.10); rerun it, or pass "
                         "--corrections FILE")
    digest = file_sha256(source)
    if record.input.sha256 and digest != record.input.sha256:
        raise InputError(f"{source}: sha256 is {digest}, but the run read {record.input.sha256}; the file changed "
                         "since the run: rerun faceatlas run on it, then apply that run's corrections")
    projection = read_projection(finished.files["projection.parquet"])
    faces = RunFaces.of(projection["row"], projection["id"])
    requested = read_requests(chosen, faces)
    id_field = record.config.input.id_field or "id"
    ids = read_ids(source, id_field)
    if len(faces.rows) and (int(faces.rows[-1]) >= len(ids) or not np.array_equal(ids[faces.rows], faces.ids)):
        raise InputError(f"{source}: its ids are not the ones the run read; pass the file the run read as --input")
    moved = after_moves(requested.changes, ids)
    edits = edits_of(requested.changes, moved)
    record_path = applied_record_path(out)
    counts = {**_counts(requested), "merged_faces": int(np.sum((edits.ids != moved) & edits.keep))}
    install = os.replace if force else _new_file(out)
    # the copy takes its name first, its record last: a record never vouches for a copy that is not there
    with atomic_write(record_path, install=install) as tmp_record, atomic_write(out, install=install) as tmp_out:
        copied = write_copy(source, tmp_out, edits, id_field)
        summary = _record(folder, source, chosen, requested, counts=counts, digest=digest, n_faces=copied.n_faces)
        summary["output"] = {"path": str(out), "sha256": file_sha256(tmp_out), "n_faces": copied.n_faces,
                             "per_face_arrays": copied.per_face}
        from job.store.outputs import write_json

        write_json(tmp_record, summary)
    return Applied(out, record_path, copied.n_faces, counts)


def _new_file(out: Path) -> Callable[[Path, Path], None]:
    """Install a written file under a name nobody took since ``out`` was checked (else a one-line refusal)."""
    def install(tmp: Path, path: Path) -> None:
        try:
            move_without_replacing(tmp, path)
        except FileExistsError:
            raise UsageError(f"--out {out}: {path} appeared while apply wrote it, and apply replaces no file "
                             "unasked; pick a new name or pass --force") from None
    return install


def edits_of(changes: list[Change], moved: np.ndarray) -> Edits:
    """Every input row's new id and whether it stays, from checked ``changes`` and the ids ``moved`` gives
    (:func:`after_moves`): each merge relabels every face its identity holds after the moves (a chain
    a -> b -> c ends at c); removed rows are left out."""
    new = moved
    keep = np.ones(len(moved), dtype=bool)
    removed = [change.face for change in changes if change.what == "remove"]
    keep[np.asarray(removed, dtype=np.int64)] = False
    into = {change.source: change.target for change in changes if change.what == "merge"}
    if into:
        def end(identity: int) -> int:
            while identity in into:
                identity = into[identity]
            return identity
        values, inverse = np.unique(new, return_inverse=True)
        new = np.asarray([end(int(v)) for v in values.tolist()], dtype=np.int64)[inverse.ravel()]
    return Edits(new, keep)


def after_moves(changes: list[Change], ids: np.ndarray) -> np.ndarray:
    """Every input row's id (n_rows,) int64 once the ``move`` changes are made."""
    new = np.asarray(ids, dtype=np.int64).copy()
    moves = [(change.face, change.target) for change in changes if change.what == "move"]
    if moves:
        rows, targets = np.asarray(moves, dtype=np.int64).T
        new[rows] = targets
    return new


def _counts(requested: Requested) -> dict[str, int]:
    counts = dict.fromkeys(APPLIED, 0)
    for change in requested.changes:
        counts[change.what] += 1
    return {**counts, "review": requested.reviews}


def _record(folder: Path, source: Path, corrections: Path, requested: Requested, *, counts: dict[str, int],
            digest: str, n_faces: int) -> dict[str, Any]:
    return {
        "run": str(folder), "input": {"path": str(source), "sha256": digest},
        "corrections": {"path": str(corrections), "sha256": file_sha256(corrections)},
        "counts": counts, "n_faces": n_faces,
        "changes": [{"line": c.line, "what": c.what, **({"face": c.face} if c.face >= 0 else {}), "from": c.source,
                     **({"to": c.target} if c.target >= 0 else {})} for c in requested.changes],
    }


def _source(folder: Path, recorded: str | None, store: dict[str, Any] | None, given: Path | None) -> Path:
    """The file the run read: ``given``, else run.json's path (relative paths from where apply runs)."""
    if store is not None or is_store(recorded or ""):
        raise UsageError(f"{folder}: the run read a database, and faceatlas never writes to a database; apply "
                         f"{CORRECTIONS_FILE} with the database's own tools (see docs/databases.md)")
    if given is not None:
        return given
    if not recorded or recorded == "demo":
        raise UsageError(f"{folder}: the run read the built-in demo, which has no file to correct; write one with "
                         "faceatlas demo-db, run on it, then apply")
    if "://" in recorded:
        raise UsageError(f"{folder}: the run read {display_text(recorded, 120)}; download it and pass the file as "
                         "--input")
    path = Path(recorded)
    if not path.is_file():
        raise InputError(f"{path}: the run's input is not here (run.json gives the path as the run was started); "
                         "pass the file as --input")
    return path


def _check_out(source: Path, out: Path, kind: str, *, force: bool) -> None:
    """``out`` may be written: the input's format, not the input by any name, new unless ``force``."""
    if out.suffix.lower() not in _SUFFIXES[kind]:
        raise UsageError(f"--out {out}: the input is {kind}, so the copy is too; name it {out.stem}"
                         f"{_SUFFIXES[kind][0]}")
    record = applied_record_path(out)
    for path in (out, record):
        if _same_file(source, path):
            raise UsageError(f"--out {out}: that is the input ({source}), and apply never writes in place; pick "
                             "a new file")
    for path in (out, record):
        if os.path.lexists(path) and not force:
            raise UsageError(f"--out {out}: {path} exists, and apply replaces no file unasked; pick a new name or "
                             "pass --force")
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: no folder {out.parent}; create it first")


def _same_file(source: Path, path: Path) -> bool:
    try:
        if path.resolve() == source.resolve():
            return True
        return path.exists() and os.path.samefile(source, path)
    except OSError:
        return False
