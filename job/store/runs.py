"""Opening a finished run's folder and proving its files are the ones the run wrote.

``run.json`` records the SHA-256 of every other file of the run (``file_sha256``). Anything that reads a
run back (``faceatlas verify``, and later ``transform``/``nearest``/``invert``) goes through
:func:`open_run`, which refuses a folder whose files were changed, swapped or left half-written, and
never unpickles anything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from job.errors import InputError
from job.io.formats import file_sha256
from job.store.outputs import RUN_FILE


@dataclass(frozen=True)
class FinishedRun:
    """A run folder whose files all match ``run.json``: the record, and each verified file by name."""

    folder: Path
    record: dict[str, Any]
    files: dict[str, Path]


def open_run(folder: Path) -> FinishedRun:
    """Read ``folder/run.json`` and check every file it lists against its recorded SHA-256.

    Raises
    ------
    InputError
        No or unreadable run.json, a run.json without checksums, a missing file, or a file whose
        SHA-256 differs from the record.
    """
    record = _read_record(folder)
    checksums = record.get("file_sha256")
    if not isinstance(checksums, dict) or not checksums:
        raise InputError(f"{folder / RUN_FILE}: has no file checksums (written by faceatlas < 0.2?); "
                         "rerun faceatlas run to make a verifiable run")
    files: dict[str, Path] = {}
    for name, expected in checksums.items():
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", "..", RUN_FILE):
            raise InputError(f"{folder / RUN_FILE}: lists {name!r}, which is not a file of this folder; "
                             "the record was edited, rerun faceatlas run")
        path = folder / name
        if not path.is_file():
            raise InputError(f"{path}: missing, but run.json lists it; rerun faceatlas run")
        if file_sha256(path) != expected:
            raise InputError(f"{path}: differs from the file this run wrote (sha256 mismatch with run.json); "
                             "it was changed or replaced, rerun faceatlas run")
        files[name] = path
    return FinishedRun(folder, record, files)


def _read_record(folder: Path) -> dict[str, Any]:
    path = folder / RUN_FILE
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder; pass the --out folder of a faceatlas run")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: not found, so {folder} holds no complete run; run faceatlas run "
                         "--out there first") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{path}: unreadable ({exc.__class__.__name__}); rerun faceatlas run") from None
    if not isinstance(record, dict):
        raise InputError(f"{path}: not a JSON object; rerun faceatlas run")
    return record
