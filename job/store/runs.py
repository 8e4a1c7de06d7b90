"""Opening a finished run's folder and proving its files are the ones the run wrote.

``run.json`` records the SHA-256 of every other file of the run (``file_sha256``). Anything that reads a
run back (``faceatlas verify``, ``report``, ``render``, ``transform``, ``nearest``, ``invert``) goes through
:func:`open_run`, which reads the record as a typed :class:`~job.store.runrecord.RunRecord` (any version),
refuses a folder whose files were changed, swapped or left half-written, then reads its data files and
proves they belong together (:func:`job.store.coherence.check_run`: a file edited and re-hashed into run.json
is caught there), and never unpickles anything.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from job.errors import InputError
from job.io.files import parse_json, read_text, shown
from job.io.formats import file_sha256
from job.store.outputs import RUN_FILE
from job.store.runrecord import RunRecord

if TYPE_CHECKING:
    from job.store.coherence import RunContents


@dataclass(frozen=True)
class FinishedRun:
    """A run folder whose files all match ``run.json`` and belong together: the record (typed), each verified
    file by name, and the data files' contents (projection, map model, names) as read and checked."""

    folder: Path
    record: RunRecord
    files: dict[str, Path]
    contents: RunContents


def open_run(folder: Path) -> FinishedRun:
    """Read ``folder/run.json`` (:meth:`RunRecord.parse`), check every file it lists against its recorded
    SHA-256, then read the data files and check that they and the record are one run's
    (:func:`job.store.coherence.check_run`).

    Raises
    ------
    InputError
        No or unreadable run.json (a pipe, a device, not UTF-8, not JSON, too large), a run.json without
        checksums or with fields of the wrong type, a missing file, a listed file that is not a regular file,
        a file whose SHA-256 differs from the record, or files that do not belong together.
    """
    from job.store.coherence import check_run

    record = read_record(folder)
    if not record.file_sha256:
        raise InputError(f"{folder / RUN_FILE}: has no file checksums (written by faceatlas < 0.2?); "
                         "rerun faceatlas run to make a verifiable run")
    files: dict[str, Path] = {}
    for name, expected in record.file_sha256.items():
        if Path(name).name != name or name in ("", ".", "..", RUN_FILE):
            raise InputError(f"{folder / RUN_FILE}: lists {shown(name)}, which is not a file of this folder; "
                             "the record was edited, rerun faceatlas run")
        path = folder / name
        _check_listed(path)
        if file_sha256(path) != expected:
            raise InputError(f"{path}: differs from the file this run wrote (sha256 mismatch with run.json); "
                             "it was changed or replaced, rerun faceatlas run")
        files[name] = path
    return FinishedRun(folder, record, files, check_run(folder, record, files))


def _check_listed(path: Path) -> None:
    """A file run.json lists must be a regular file in the folder: a run writes no links, pipes or devices."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        raise InputError(f"{path}: missing, but run.json lists it; rerun faceatlas run") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror}); check its permissions or rerun faceatlas "
                         "run") from None
    if not stat.S_ISREG(mode):
        kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
        raise InputError(f"{path}: {kind}, but a run writes only regular files; it was replaced, rerun faceatlas run")


def read_record(folder: Path) -> RunRecord:
    """``folder/run.json`` read as untrusted input and typed (its files are not checked: :func:`open_run`)."""
    path = folder / RUN_FILE
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder; pass the --out folder of a faceatlas run")
    if not path.exists() and not path.is_symlink():
        raise InputError(f"{path}: not found, so {folder} holds no complete run; run faceatlas run "
                         "--out there first")
    fix = "rerun faceatlas run"
    return RunRecord.parse(parse_json(read_text(path, "a run record", fix), str(path), fix), path)
