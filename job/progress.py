"""Progress of long stages: a tqdm bar with an ETA on a terminal, plain periodic lines everywhere else.

The library never prints: stages take a :data:`ProgressFactory` and call ``advance`` as chunks finish. The
CLI hands in :func:`stderr_progress`; tests and library users get :func:`no_progress` by default. Lines go to
stderr only, so nothing ever mixes into a command's ``--json`` output on stdout.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import IO, Protocol

LINE_EVERY_S = 10.0  # non-terminal: at most one line per stage this often (CI logs, container logs)


class Progress(Protocol):
    """One stage's progress: ``advance`` by units done; used as a context manager that closes it."""

    def advance(self, n: int) -> None: ...

    def __enter__(self) -> Progress: ...

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None: ...


ProgressFactory = Callable[[str, int, str], Progress]
"""``factory(stage, total, unit)`` -> a :class:`Progress` for one stage of ``total`` ``unit`` (e.g. "faces")."""


class _Silent:
    def advance(self, n: int) -> None:
        pass

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def no_progress(stage: str, total: int, unit: str) -> Progress:
    """Report nothing (the library's default)."""
    return _Silent()


class _Lines:
    """Plain lines: ``faceatlas: knn: 120,000/300,000 faces (40%), 12 s, about 18 s left``."""

    def __init__(self, stage: str, total: int, unit: str, stream: IO[str], every: float) -> None:
        self.stage, self.total, self.unit, self.stream, self.every = stage, max(total, 0), unit, stream, every
        self.done, self.start = 0, time.monotonic()
        self.last = self.start

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every and self.done < self.total:
            self.last = now
            self._line(now)

    def _line(self, now: float, final: bool = False) -> None:
        spent = now - self.start
        share = self.done / self.total if self.total else 1.0
        tail = "done" if final else (f"about {spent / share - spent:.0f} s left" if share > 0 else "starting")
        self.stream.write(f"faceatlas: {self.stage}: {self.done:,}/{self.total:,} {self.unit} ({share:.0%}), "
                          f"{spent:.0f} s, {tail}\n")
        self.stream.flush()

    def __enter__(self) -> _Lines:
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        if kind is None:
            self._line(time.monotonic(), final=True)


class _Bar:
    """A tqdm bar (rate and ETA), removed when the stage ends."""

    def __init__(self, stage: str, total: int, unit: str, stream: IO[str]) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=f"faceatlas: {stage}", unit=f" {unit}", unit_scale=True, file=stream,
                        leave=False, dynamic_ncols=True)

    def advance(self, n: int) -> None:
        self.bar.update(n)

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()


def stream_progress(stream: IO[str], every: float = LINE_EVERY_S) -> ProgressFactory:
    """A factory writing to ``stream``: a bar when it is a terminal, plain lines every ``every`` s otherwise."""
    terminal = bool(getattr(stream, "isatty", lambda: False)())

    def factory(stage: str, total: int, unit: str) -> Progress:
        return _Bar(stage, total, unit, stream) if terminal else _Lines(stage, total, unit, stream, every)

    return factory


def stderr_progress() -> ProgressFactory:
    """What the CLI uses: :func:`stream_progress` on stderr."""
    return stream_progress(sys.stderr)
