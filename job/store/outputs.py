"""Writing a run's files so that a failed or killed run never leaves a mix of two runs.

All files of a run are written into a hidden staging folder next to ``--out``; when the last one
(``run.json``) is there, the staging folder takes the place of the output folder in one atomic step
(Linux ``renameat2(RENAME_EXCHANGE)``, or a plain rename when there was no previous run), and the
previous run is deleted. A run killed before that step leaves the previous outputs untouched; one
killed after it leaves the new outputs complete. Stale staging folders of dead runs are removed by the
next run.

Where the parent folder cannot hold a staging folder (``--out`` is a mount point, say ``/out`` in a
container), files are staged inside the output folder and renamed one by one with ``run.json`` removed
first and written last: then a killed run can leave new and old files side by side, but never a
``run.json`` that vouches for them. faceatlas owns its output folder: it refuses one that holds files no
faceatlas run wrote.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import stat
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from job.arrays import FloatArray, IdArray
from job.atomic import atomic_write, existing_ancestor
from job.errors import UsageError

PROJECTION_FILE = "projection.parquet"
RUN_FILE = "run.json"
TRUTH_FILE = "truth.json"
_STAGING = ".staging-"
_PENDING = ".faceatlas-replacing.json"  # file-by-file mode: the names being replaced, until run.json is in
_STAGING_TAIL = r"\.staging-\d+-[0-9a-f]{8}"
_MARKER = ".faceatlas-staging"  # inside every staging folder: only folders holding it are ever deleted as ours
_OUR_FILES = (r"(projection\.parquet|run\.json|truth\.json|names\.json|report\.html|suspects\.csv|lookalikes\.csv"
              r"|low_quality\.csv|map_[a-z_]+\.(png|npz)"
              r"|\.faceatlas-replacing\.json)")
_OWN_HIDDEN = re.compile(rf"^(\.{_OUR_FILES}\.\d+(-\d+)?\.tmp|\.faceatlas-replacing\.json|\.faceatlas-staging)$")
_OWN_STAGING = re.compile(rf"^{_STAGING_TAIL}$")
_NO_LOCKS = (errno.EBADF, errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL)  # NFS, Lustre...
_NO_SWAP = (errno.EINVAL, errno.ENOSYS, errno.EXDEV, errno.EBUSY, errno.ENOTSUP, errno.EPERM, errno.EACCES)
_RENAME_EXCHANGE = 2
_STAGING_EXTRA = 48  # ".", ".staging-PID-xxxxxxxx", ".new" and room for a long PID
_LONGEST_FILE = 120  # the staging folder's name plus the longest temporary file name inside it
_AT_FDCWD = -100


def check_output_folder(out_dir: Path) -> None:
    """Refuse, before any heavy work, an output folder that cannot be written or holds foreign files.

    Everything that would otherwise fail only when the outputs are written is checked here: a symbolic-link
    loop, a name too long for the file system (with the staging folder's suffix), a path too long.
    """
    try:
        out_dir = _resolved(Path(os.path.abspath(out_dir)))
        _check_name_lengths(out_dir)
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG:
            raise
        raise UsageError(f"--out {str(out_dir)[:120]}...: a name in it is longer than the file system holds; pick "
                         "a shorter name") from None
    if out_dir == out_dir.parent:
        raise UsageError(f"--out {out_dir}: the root folder cannot be an output folder; pick a folder below it")
    existing = existing_ancestor(out_dir)
    if not existing.is_dir():
        raise UsageError(f"--out {out_dir}: {existing} is not a folder; pick another output folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out_dir}: {existing} is not writable; pick a folder you can write to")
    if existing == out_dir:
        foreign = foreign_files(out_dir)
        if foreign:
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise UsageError(f"--out {out_dir}: holds files no faceatlas run wrote ({shown}) and faceatlas "
                             "replaces its output folder as a whole; pick a new or empty folder")


def foreign_files(folder: Path) -> list[str]:
    """Names in an existing ``folder`` that no faceatlas run wrote (neither run.json nor a file it lists, nor our
    hidden leftovers), sorted."""
    return sorted(set(_entries(folder)) - _owned_names(folder))


def _resolved(out_dir: Path) -> Path:
    """``out_dir`` with a symbolic link at its end followed (a loop, or a link to nowhere reachable, refused)."""
    if not out_dir.is_symlink():
        return out_dir
    try:
        return Path(os.path.realpath(out_dir, strict=True))
    except FileNotFoundError:
        return out_dir.resolve()  # a link to a folder yet to be made: made where the link points
    except (OSError, RuntimeError) as exc:
        problem = "a symbolic-link loop" if isinstance(exc, RuntimeError) or getattr(exc, "errno", 0) == errno.ELOOP \
            else f"a link that cannot be followed ({getattr(exc, 'strerror', exc)})"
        raise UsageError(f"--out {out_dir}: is {problem}; pick a real folder") from None


def _check_name_lengths(out_dir: Path) -> None:
    """Refuse a folder name the file system cannot hold once faceatlas adds its staging suffix."""
    existing = existing_ancestor(out_dir)
    try:
        name_max = os.pathconf(existing, "PC_NAME_MAX")
        path_max = os.pathconf(existing, "PC_PATH_MAX")
    except (OSError, ValueError):
        name_max, path_max = 255, 4096
    fresh = [p.name for p in (out_dir, *out_dir.parents) if not p.exists() and p != p.parent]
    too_long = [name for name in fresh if len(os.fsencode(name)) > name_max]
    if len(os.fsencode(out_dir.name)) + _STAGING_EXTRA > name_max:
        too_long.append(out_dir.name)
    if too_long:
        raise UsageError(f"--out {str(out_dir)[:120]}...: the folder name {too_long[0][:40]!r}... has "
                         f"{len(os.fsencode(too_long[0]))} bytes, and this file system holds names of at most "
                         f"{name_max - _STAGING_EXTRA} here; pick a shorter name")
    if len(os.fsencode(str(out_dir))) + _LONGEST_FILE > path_max:
        raise UsageError(f"--out {str(out_dir)[:120]}...: the path is {len(os.fsencode(str(out_dir)))} bytes long, "
                         f"and files in it would pass the {path_max}-byte limit; pick a shorter path")


@contextmanager
def staged_outputs(out_dir: Path, log: Callable[[str], None] = lambda message: None,
                   checked: bool = False) -> Iterator[Path]:
    """Yield a fresh folder to write a run into; on normal exit it becomes ``out_dir`` atomically.

    On any exception (or a kill) the staging folder is dropped and ``out_dir`` is left as it was. A file
    someone put into ``out_dir`` while the run wrote is moved into the new folder; if its name is one the run
    writes, it is kept under ``NAME.kept`` (``log`` says so) rather than replaced. ``checked``: the caller ran
    :func:`check_output_folder` before its work, so files that appeared since are kept, not refused.
    """
    from job import stop

    out_dir = _resolved(Path(os.path.abspath(out_dir)))
    if not checked:
        check_output_folder(out_dir)
    created = [p for p in reversed(out_dir.parents) if not p.exists()]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(out_dir)
    # swap whole folders only where that is invisible: not a mount point, not the folder we (or a shell) stand in
    beside = (os.access(out_dir.parent, os.W_OK | os.X_OK) and not os.path.ismount(out_dir)
              and not _standing_in(out_dir))
    token = f"{_STAGING}{os.getpid()}-{secrets.token_hex(4)}"
    staging = out_dir.parent / f".{out_dir.name}{token}" if beside else out_dir / token
    # made under a name no cleanup matches, locked (marks it live), then renamed: the lock follows the inode
    unborn = staging.with_name(staging.name + ".new")
    unborn.mkdir()
    (unborn / _MARKER).touch()
    held = _try_lock(unborn)
    os.rename(unborn, staging)
    committed = False
    try:
        yield staging
        edited = edited_files(out_dir) if out_dir.is_dir() else Edits()  # hashed before the swap, re-checked after
        stop.check()  # last chance: a swallowed Ctrl-C must not put the outputs in place
        (staging / _MARKER).unlink(missing_ok=True)  # the folder becomes the run: it must not carry the mark
        if beside:
            kept = _swap_in(staging, out_dir, edited)
        else:
            with _locked(out_dir):  # two runs replacing file by file take turns
                kept = _replace_file_by_file(staging, out_dir, edited)
        committed = True
        for name, new_name in kept.items():
            log(f"warning: {_kept_message(out_dir, name, new_name, edited=edited.lists(name))}")
    finally:
        if held is not None:
            os.close(held)
        shutil.rmtree(staging, ignore_errors=True)
        if not committed:
            for folder in reversed(created):  # a failed first run leaves no empty folders behind
                _rmdir_quietly(folder)


_PLAIN_TEXT = {"face_key", "identity_key", "photo_key", "image"}  # the source's keys: text, null where unknown


def write_projection(path: Path, ids: IdArray, coords: FloatArray, rows: IdArray | None = None,
                     extra: dict[str, np.ndarray] | None = None) -> Path:
    """``projection.parquet``: ``row`` (int64), ``id`` (int64), ``x``, ``y`` (float32), ``z`` for 3-D, then
    the ``extra`` columns in order (analysis verdicts; object arrays are written as text)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    row = np.arange(len(ids), dtype=np.int64) if rows is None else rows.astype(np.int64)
    columns: dict[str, Any] = {"row": row, "id": ids.astype(np.int64)}
    for axis, name in enumerate("xyz"[: coords.shape[1]]):
        columns[name] = np.ascontiguousarray(coords[:, axis], dtype=np.float32)
    for name, values in (extra or {}).items():  # text columns: verdicts dictionary-encoded, keys (nullable) plain
        if values.dtype != object:
            columns[name] = values
        elif name in _PLAIN_TEXT:
            columns[name] = pa.array(values.tolist(), type=pa.string())
        else:
            columns[name] = pa.array(values).dictionary_encode()
    with atomic_write(path) as tmp, tmp.open("wb") as handle:  # a Python file: pyarrow takes only UTF-8 paths
        pq.write_table(pa.table(columns), handle)
    return path


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Write indented JSON atomically."""
    return write_text(path, json.dumps(finite(payload), indent=2, default=_plain, allow_nan=False) + "\n")


def write_text(path: Path, text: str) -> Path:
    """Write UTF-8 ``text`` atomically (:func:`job.atomic.atomic_write`)."""
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float (a metric that could not be measured) as None: JSON has no
    NaN, and a reader must not mistake one for a number."""
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _kept_message(out_dir: Path, name: str, new_name: str, *, edited: bool) -> str:
    why = "was changed since the run that wrote it" if edited else \
        "was put there while the run wrote a file of that name"
    where = f"kept as {new_name}" if new_name != name else "left in place (the new run writes no such file)"
    return (f"{out_dir / name} {why}; it is {where}: move it out of {out_dir.name} before the next run, which "
            "refuses a folder holding files no run wrote")


def _entries(folder: Path) -> list[str]:
    return [entry.name for entry in folder.iterdir()]


def _standing_in(out_dir: Path) -> bool:
    """Whether this process's working folder is ``out_dir`` or inside it (symlinks resolved)."""
    try:
        here = Path(os.path.realpath(Path.cwd()))
    except OSError:
        return False
    return here.is_relative_to(Path(os.path.realpath(out_dir)))


def _plain_name(name: object) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and not name.startswith(".") \
        and Path(name).name == name and "\\" not in name


def _owned_names(out_dir: Path) -> set[str]:
    """Names in ``out_dir`` a faceatlas run wrote: run.json, the files it lists, and our hidden leftovers.

    Only plain names inside the folder count, so an edited run.json cannot point anywhere else.
    """
    owned = {name for name in _entries(out_dir) if _OWN_HIDDEN.match(name)
             or (_OWN_STAGING.match(name) and _is_staging(out_dir / name))}
    for record_file, key in ((RUN_FILE, "files"), (_PENDING, "names")):
        try:
            record = _read_own_json(out_dir / record_file)
            if record_file == RUN_FILE and not _ours(record):
                continue  # another tool's run.json: it vouches for nothing here
            names = record[key].values() if key == "files" else record[key]
            owned |= {name for name in names if _plain_name(name)} | {record_file}
        except (OSError, ValueError, AttributeError, KeyError, TypeError):
            continue
    return owned


@dataclass(frozen=True)
class Edits:
    """Files of a run folder someone changed since its run wrote them (``names``), and what every other file the
    run lists looked like when that was decided (``seen``: name -> inode, size, mtime, mode), so a change made
    after the check still counts (:meth:`since`)."""

    names: frozenset[str] = frozenset()
    seen: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)

    def lists(self, name: str) -> bool:
        """``name`` is a file of the previous run (so, if kept, one changed since it was written)."""
        return name in self.names or name in self.seen

    def since(self, folder: Path) -> set[str]:
        """``names``, and every file of ``seen`` that changed since, in ``folder`` (the same files, maybe moved)."""
        return set(self.names) | {name for name, signature in self.seen.items()
                                  if _signature(folder / name) != signature}


def edited_files(folder: Path) -> Edits:
    """Files of the run in ``folder`` whose SHA-256 is no longer the one its run.json records, or that are no
    longer regular files (a folder or a link put under the name): someone changed them since (notes added to
    ``suspects.csv``, rows deleted from a corrections list). A rerun keeps them (``NAME.kept``) rather than
    replacing them."""
    from job.io.formats import file_sha256

    try:
        record = _read_own_json(folder / RUN_FILE)
        checksums = record["file_sha256"] if _ours(record) else {}
        listed = checksums.items() if isinstance(checksums, dict) else ()
    except (OSError, ValueError, KeyError, TypeError):
        return Edits()
    edited, seen = set(), {}
    for name, expected in listed:
        path = folder / name
        signature = _signature(path)
        if not _plain_name(name) or signature is None:
            continue  # not a name of this folder, or gone: nothing of the user's to keep
        try:
            changed = not stat.S_ISREG(signature[3]) or file_sha256(path) != expected
        except (OSError, ValueError):  # unreadable: keep it rather than guess
            changed = True
        if changed:
            edited.add(name)
        else:
            seen[name] = signature
    return Edits(frozenset(edited), seen)


def _signature(path: Path) -> tuple[int, int, int, int] | None:
    try:
        info = path.lstat()
    except OSError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns, info.st_mode


def _read_own_json(path: Path) -> Any:
    """A record faceatlas left in an output folder, read as untrusted (a pipe or a device there cannot hang)."""
    from job.errors import FaceatlasError
    from job.io.files import parse_json, read_text

    try:
        return parse_json(read_text(path, "a run record", "-"), str(path), "-")
    except FaceatlasError as exc:
        raise ValueError(str(exc)) from None


def _is_staging(folder: Path) -> bool:
    """A staging folder faceatlas made (a real folder holding the marker), not a look-alike name of someone's."""
    try:
        return not folder.is_symlink() and folder.is_dir() and (folder / _MARKER).is_file()
    except OSError:
        return False


def _ours(record: Any) -> bool:
    """A run.json faceatlas wrote: ``tool`` says so (0.2+), or it has the 0.1 record's keys."""
    if not isinstance(record, dict):
        return False
    return record.get("tool") == "faceatlas" or {"version", "backend", "files", "versions", "input"} <= set(record)


def _remove_stale_staging(out_dir: Path) -> None:
    """Delete staging folders left by runs that were killed (nobody holds their lock any more)."""
    places = [(out_dir.parent, re.compile(rf"^\.{re.escape(out_dir.name)}{_STAGING_TAIL}$")),
              (out_dir, re.compile(rf"^{_STAGING_TAIL}$"))]
    for folder, pattern in places:
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if not pattern.match(entry.name) or not _is_staging(entry):
                continue
            try:
                fd = _lock(entry, wait=False)
            except OSError:
                continue  # a live run holds it, or locks do not work here: then leave it be
            try:
                shutil.rmtree(entry, ignore_errors=True)
            finally:
                os.close(fd)


def _lock(path: Path, wait: bool = True) -> int:
    """An exclusive ``flock`` on a folder; returns the descriptor that holds it (close it to release)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except OSError:
        os.close(fd)
        raise
    return fd


def _try_lock(path: Path) -> int | None:
    """:func:`_lock`, or None where the file system has no working flock (some NFS and Lustre mounts)."""
    try:
        return _lock(path)
    except OSError as exc:
        if exc.errno in _NO_LOCKS:
            return None
        raise


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = _try_lock(path)
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)


def _rmdir_quietly(folder: Path) -> None:
    with suppress(OSError):
        folder.rmdir()


def _swap_in(staging: Path, out_dir: Path, edited: Edits) -> dict[str, str]:
    """Put the staged run in place of ``out_dir``; returns {name: kept-as name} for colliding foreign files and
    the ``edited`` files of the previous run (:func:`edited_files`)."""
    if not out_dir.exists():
        os.rename(staging, out_dir)
        return {}
    _keep_access(out_dir, staging)
    try:
        _exchange(staging, out_dir)
    except OSError as exc:
        if exc.errno not in _NO_SWAP:
            raise
        with _locked(out_dir):
            return _replace_file_by_file(staging, out_dir, edited)
    return _retire(staging, out_dir, edited)  # staging now holds the previous run


def _keep_access(old: Path, new: Path) -> None:
    """Give the new folder the old one's permissions and group (outputs can be private)."""
    info = old.stat()
    os.chmod(new, stat.S_IMODE(info.st_mode))
    with suppress(OSError):
        os.chown(new, -1, info.st_gid)


def _retire(old: Path, out_dir: Path, edits: Edits) -> dict[str, str]:
    """Empty the swapped-out previous run: delete what a run wrote and nobody changed since, move anything else
    into ``out_dir`` (under ``NAME.kept`` when the new run wrote that name). Returns {name: kept-as name} for
    those, and for edited files kept under their own name."""
    edited = edits.since(old)
    owned, kept = _owned_names(old) - edited, {}
    for entry in old.iterdir():
        if entry.name in owned and not entry.is_symlink() and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.name in owned:
            entry.unlink(missing_ok=True)
        else:  # put there by someone while the run was writing
            target = _free_name(out_dir, entry.name)
            os.rename(entry, out_dir / target)
            if target != entry.name or entry.name in edited:
                kept[entry.name] = target
    return kept


def _free_name(folder: Path, name: str) -> str:
    """``name`` if nothing in ``folder`` has it, else the first free ``name.kept``, ``name.kept-2``, ..."""
    if not os.path.lexists(folder / name):
        return name
    for number in range(1, 10_000):
        candidate = f"{name}.kept" + (f"-{number}" if number > 1 else "")
        if not os.path.lexists(folder / candidate):
            return candidate
    raise OSError(errno.EEXIST, "no free name to keep a file under", str(folder / name))


def _exchange(a: Path, b: Path) -> None:
    """Atomically swap two paths (Linux ``renameat2`` with ``RENAME_EXCHANGE``)."""
    if not sys.platform.startswith("linux"):
        raise OSError(errno.ENOSYS, "renameat2 is Linux-only")
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        raise OSError(errno.ENOSYS, "this C library has no renameat2")
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(b))


def _replace_file_by_file(staging: Path, out_dir: Path, edits: Edits) -> dict[str, str]:
    """Fallback when folders cannot be swapped: retire run.json first, move files, write run.json last.

    A pending list of every name involved is written first, so a run killed half-way leaves a folder the
    next run still recognises as its own.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    edited = edits.since(out_dir)
    owned = _owned_names(out_dir) - edited
    previous = {name for name in owned if _plain_name(name)} - {RUN_FILE}
    new = [entry for entry in staging.iterdir() if entry.name not in (RUN_FILE, _MARKER)]
    kept: dict[str, str] = {}
    for entry in [*new, staging / RUN_FILE]:  # someone's file under a name the run writes: keep it aside
        if os.path.lexists(out_dir / entry.name) and entry.name not in owned:
            kept[entry.name] = _free_name(out_dir, entry.name)
            os.rename(out_dir / entry.name, out_dir / kept[entry.name])
    kept |= {name: name for name in edited - {entry.name for entry in new} if os.path.lexists(out_dir / name)}
    write_json(out_dir / _PENDING, {"names": sorted(previous | {entry.name for entry in new})})
    (out_dir / RUN_FILE).unlink(missing_ok=True)
    for entry in new:
        os.replace(entry, out_dir / entry.name)
    for name in previous - {entry.name for entry in new}:
        stale = out_dir / name
        if stale.is_file() and not stale.is_symlink():
            stale.unlink()
    os.replace(staging / RUN_FILE, out_dir / RUN_FILE)
    (out_dir / _PENDING).unlink(missing_ok=True)
    return kept
