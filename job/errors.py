"""Every error faceatlas raises on purpose, and the exit code the CLI gives it.

Tree::

    FaceatlasError              exit 1   base class; never raised directly
    ├── UsageError              exit 2   bad command line or config (unknown key, wrong type, out of range)
    ├── InputError              exit 3   an input file is missing, unreadable or malformed
    ├── BackendUnavailable      exit 4   the asked-for backend cannot run on this machine
    ├── OutOfMemoryError        exit 5   the job ran out of host memory
    │   └── GpuOutOfMemoryError exit 6   ... of GPU memory (the fix: batches, managed memory, or the CPU)
    ├── ClusterError            exit 7   the Dask cluster cannot be reached, or its workers cannot run the job
    └── InternalError           exit 70  a bug in faceatlas: please report it

Messages are one line: what was expected, what was found, and the fix. :func:`one_line` makes a message, or an
exception's own text quoted in one, a single line.
"""

from __future__ import annotations


class FaceatlasError(Exception):
    """Base class of every error faceatlas raises on purpose."""

    exit_code = 1


class UsageError(FaceatlasError):
    """The command line or the config is wrong."""

    exit_code = 2


class InputError(FaceatlasError):
    """An input file is missing, unreadable or malformed."""

    exit_code = 3


class BackendUnavailable(FaceatlasError):
    """The asked-for backend cannot run here."""

    exit_code = 4


class OutOfMemoryError(FaceatlasError):
    """Host memory ran out, or would (GPU memory: :class:`GpuOutOfMemoryError`)."""

    exit_code = 5


class GpuOutOfMemoryError(OutOfMemoryError):
    """GPU memory ran out, or would: a run on the GPU backend that does not fit. Under ``--backend auto`` the run
    falls back to the CPU instead (run.json says why)."""

    exit_code = 6


class ClusterError(FaceatlasError):
    """The Dask cluster named by ``--dask`` cannot be reached, or its workers cannot run the job (faceatlas
    missing or another version, the input out of their reach, a worker lost for good)."""

    exit_code = 7


class InternalError(FaceatlasError):
    """Something that should not happen did."""

    exit_code = 70


def one_line(text: object, limit: int | None = None, *, ellipsis: str = "") -> str:
    """``str(text)`` (a message, an exception) as one line: every run of whitespace (line breaks, tabs) one space,
    none at either end; cut to at most ``limit`` characters, the last of them ``ellipsis`` where it was cut (if
    ``limit`` leaves room for more than the ``ellipsis``)."""
    flat = " ".join(str(text).split())
    if limit is None or len(flat) <= limit:
        return flat
    marker = ellipsis if len(ellipsis) < limit else ""
    return flat[: max(limit - len(marker), 0)] + marker
