"""Opening a finished run's folder and proving its files are the ones the run wrote.

``run.json`` records the SHA-256 of every other file of the run (``file_sha256``). Anything that reads a
run back (``faceatlas verify``, ``report``, ``render``, ``transform``, ``nearest``, ``invert``) goes through
:func:`open_run`, which refuses a folder whose files were changed, swapped or left half-written, then reads
its data files and proves they belong together (:func:`job.store.coherence.check_run`: a file edited and
re-hashed into run.json is caught there), and never unpickles anything.
"""

from __future__ import annotations

import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from job.errors import InputError
from job.io.files import parse_json, read_text, shown
from job.io.formats import file_sha256
from job.store.outputs import RUN_FILE

if TYPE_CHECKING:
    from job.store.coherence import RunContents


@dataclass(frozen=True)
class FinishedRun:
    """A run folder whose files all match ``run.json`` and belong together: the record, each verified file by
    name, and the data files' contents (projection, map model, names) as read and checked."""

    folder: Path
    record: dict[str, Any]
    files: dict[str, Path]
    contents: RunContents


def open_run(folder: Path) -> FinishedRun:
    """Read ``folder/run.json``, check every file it lists against its recorded SHA-256, then read the data files
    and check that they and the record are one run's (:func:`job.store.coherence.check_run`).

    Raises
    ------
    InputError
        No or unreadable run.json (a pipe, a device, not UTF-8, not JSON, too large), a run.json without
        checksums or with fields of the wrong type, a missing file, a listed file that is not a regular file,
        a file whose SHA-256 differs from the record, or files that do not belong together.
    """
    from job.store.coherence import check_run

    record = _read_record(folder)
    checksums = record.get("file_sha256")
    if not isinstance(checksums, dict) or not checksums:
        raise InputError(f"{folder / RUN_FILE}: has no file checksums (written by faceatlas < 0.2?); "
                         "rerun faceatlas run to make a verifiable run")
    files: dict[str, Path] = {}
    for name, expected in checksums.items():
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", "..", RUN_FILE):
            raise InputError(f"{folder / RUN_FILE}: lists {shown(name)}, which is not a file of this folder; "
                             "the record was edited, rerun faceatlas run")
        if not isinstance(expected, str) or not _SHA256.fullmatch(expected):
            raise InputError(f"{folder / RUN_FILE}: the checksum of {name!r} is {shown(expected)}, not a SHA-256; "
                             "the record was edited, rerun faceatlas run")
        path = folder / name
        _check_listed(path)
        if file_sha256(path) != expected:
            raise InputError(f"{path}: differs from the file this run wrote (sha256 mismatch with run.json); "
                             "it was changed or replaced, rerun faceatlas run")
        files[name] = path
    return FinishedRun(folder, record, files, check_run(folder, record, files))


_SHA256 = re.compile(r"[0-9a-f]{64}")


def section(record: dict[str, Any], key: str) -> dict[str, Any]:
    """``record[key]`` when it is a dict (a run.json section), else an empty one: records are read as untrusted."""
    value = record.get(key)
    return value if isinstance(value, dict) else {}
_TYPES = {"version": str, "backend": str, "files": dict, "input": dict, "config": dict, "metrics": dict}
_INPUT_TYPES = {"n_faces": int, "n_identities": int, "dim": int, "sha256": str, "path": str}


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


def _read_record(folder: Path) -> dict[str, Any]:
    path = folder / RUN_FILE
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder; pass the --out folder of a faceatlas run")
    if not path.exists() and not path.is_symlink():
        raise InputError(f"{path}: not found, so {folder} holds no complete run; run faceatlas run "
                         "--out there first")
    fix = "rerun faceatlas run"
    record = parse_json(read_text(path, "a run record", fix), str(path), fix)
    if not isinstance(record, dict):
        raise InputError(f"{path}: not a JSON object; rerun faceatlas run")
    _check_types(record, path)
    return record


def _check_types(record: dict[str, Any], path: Path) -> None:
    """The fields faceatlas reads back have the types it wrote (an edited record fails here, not later)."""
    wrong = [(key, kind) for key, kind in _TYPES.items() if key in record and not isinstance(record[key], kind)]
    section = record["input"] if isinstance(record.get("input"), dict) else {}
    wrong += [(f"input.{key}", kind) for key, kind in _INPUT_TYPES.items()
              if key in section and (not isinstance(section[key], kind) or isinstance(section[key], bool))]
    if isinstance(section.get("dim"), int) and not 1 <= section["dim"] <= 1 << 20:
        wrong.append(("input.dim", int))
    config = record["config"] if isinstance(record.get("config"), dict) else {}
    if "input" in config and not isinstance(config["input"], dict):
        wrong.append(("config.input", dict))
    fields = config.get("input") if isinstance(config.get("input"), dict) else {}
    wrong += [(f"config.input.{key}", str) for key in ("id_field", "embedding_field")
              if key in fields and not isinstance(fields[key], str)]
    if wrong:
        key, kind = wrong[0]
        raise InputError(f"{path}: field {key!r} is {shown(_field(record, key))}, expected "
                         f"{'a small positive ' if key == 'input.dim' else 'a '}{kind.__name__}; the record was "
                         "edited, rerun faceatlas run")


def _field(record: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        record = record[part]
    return record
