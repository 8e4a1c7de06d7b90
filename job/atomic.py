"""Writing a file so that no reader ever sees half of it: :func:`atomic_write`, the one way faceatlas writes files.

The content goes to a hidden sibling (``.NAME.PID-N.tmp``: the same folder, so the same file system), which
then takes the file's name in one ``os.replace``. A reader sees the old file or the new one, never a mix; a
failure or an interrupt at any point (an exception, ``KeyboardInterrupt``, ``SystemExit``) removes the sibling
and leaves the file as it was. Files are not ``fsync``-ed: the guarantee is against readers and killed runs,
not against power loss (no writer needed more, and outputs run to gigabytes).

Imports nothing of faceatlas, so every stage can use it.
"""

from __future__ import annotations

import errno
import itertools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

_COUNTER = itertools.count(1)  # next() on it is atomic under the GIL: names are unique across threads too


def temporary_path(path: Path) -> Path:
    """A new hidden sibling of ``path`` to write before it takes ``path``'s name: ``.NAME.PID-N.tmp``, unique
    per process and call (the run-folder cleanup recognises the pattern as faceatlas's leftovers)."""
    return path.with_name(f".{path.name}.{os.getpid()}-{next(_COUNTER)}.tmp")


@contextmanager
def atomic_write(path: Path, *, install: Callable[[Path, Path], None] = os.replace) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; on normal exit it becomes ``path`` in one step.

    ``install(temporary, path)`` gives the written file its name (default ``os.replace``; pass a function that
    refuses to replace an existing file where that matters). The temporary file is removed whatever happens
    (after a failure, after an interrupt, and after an ``install`` that linked rather than moved it), and on
    failure ``path`` is left untouched::

        with atomic_write(path) as tmp, tmp.open("wb") as handle:  # the handle is closed before the move
            handle.write(data)
    """
    tmp = temporary_path(path)
    try:
        yield tmp
        install(tmp, path)
    finally:
        with suppress(OSError):  # the folder went away or turned read-only: the error that got us here matters more
            tmp.unlink(missing_ok=True)


def existing_ancestor(path: Path) -> Path:
    """``path`` itself if it exists, else its nearest parent that does (where it would be created)."""
    return next(p for p in (path, *path.parents) if p.exists() or p == p.parent)


def move_without_replacing(tmp: Path, path: Path) -> None:
    """Give ``tmp`` the name ``path`` unless something took that name since the request was checked
    (:class:`FileExistsError`): a hard link, or, where the file system has none (FAT, some network mounts), the
    name claimed with ``O_EXCL`` and then replaced."""
    try:
        os.link(tmp, path)
        return
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS):
            raise
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    os.replace(tmp, path)
