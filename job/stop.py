"""A stop asked for by a signal (Ctrl-C, SIGTERM), remembered until the run acts on it.

The signal handler raises :class:`KeyboardInterrupt` where the main thread happens to be. When that is inside a
C callback (numba's cache notifier runs as a ctypes callback while umap-learn loads its kernels), Python prints
the exception and drops it, and the run would go on to write its outputs. So the handler also records the
request, and the run checks it between stages and once more before its outputs take the old ones' place.
"""

from __future__ import annotations

_requested: list[int] = []  # signal numbers received; a list, so the handler mutates without `global`


def request(signum: int) -> None:
    """Record a stop request (called from the signal handler) and raise it where the program is."""
    _requested.append(signum)
    raise KeyboardInterrupt


def check() -> None:
    """Raise :class:`KeyboardInterrupt` if a stop was requested and swallowed on the way."""
    if _requested:
        raise KeyboardInterrupt
