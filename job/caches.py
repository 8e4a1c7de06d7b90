"""Where faceatlas keeps what it may reuse between runs: numba's compiled kernels, under the user cache dir.

Imports nothing heavy, so the CLI can set the cache up before anything imports numba. A cache folder that
cannot be written is never worked around by writing elsewhere for good: numba would otherwise fall back to
``__pycache__`` folders inside the installed packages (faceatlas's, umap-learn's). The kernels then go to a
private temporary folder removed at exit, and the CLI warns that nothing is kept.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class NumbaCache:
    """Where numba writes compiled kernels in this process (``folder``), and where they should be kept
    (``wanted``: ``NUMBA_CACHE_DIR``, else the user cache dir); ``problem`` says why they differ."""

    folder: Path
    wanted: Path
    problem: str = ""

    @property
    def kept(self) -> bool:
        """Kernels compiled now are there for the next run."""
        return not self.problem

    def warning(self) -> str:
        """The one-line warning when nothing is kept ("" when it is)."""
        if self.kept:
            return ""
        return (f"warning: {self.wanted}: cannot hold numba's compiled kernels ({self.problem}); they last this "
                "run only (each run compiles them again); set XDG_CACHE_HOME or NUMBA_CACHE_DIR to a writable "
                "folder")


@cache
def numba_cache() -> NumbaCache:
    """Point numba's on-disk cache (``NUMBA_CACHE_DIR``) at the user cache dir, or the folder the user set, when
    it can be written; else at a private temporary folder (removed at exit). Decided once per process.

    Numba reads the variable when it is first imported, so the CLI calls this before anything else; the
    user cache dir also works in containers whose site-packages are read-only (umap-learn issue #715).
    """
    wanted = Path(os.environ.get("NUMBA_CACHE_DIR") or user_cache_dir() / "numba")
    problem = _unwritable(wanted)
    folder = wanted
    if problem:
        folder = Path(tempfile.mkdtemp(prefix="faceatlas-numba-"))
        atexit.register(shutil.rmtree, folder, True)
    os.environ["NUMBA_CACHE_DIR"] = str(folder)
    return NumbaCache(folder, wanted, problem)


def cached_numba() -> Any:
    """The ``numba`` module, its on-disk cache confined to :func:`numba_cache`'s folder: what every module that
    declares ``cache=True`` kernels imports, so a library or Dask-worker use (no CLI to set the cache up first)
    never writes kernels into the installed package either. Setting ``numba.config.CACHE_DIR`` as well covers a
    numba that was imported before faceatlas."""
    cache = numba_cache()
    import numba

    # numba's config module makes its settings at runtime from the environment (_EnvReloader), out of mypy's sight
    numba.config.CACHE_DIR = str(cache.folder)  # type: ignore[attr-defined, unused-ignore]  # set at runtime
    return numba


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/faceatlas`` (default ``~/.cache/faceatlas``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "faceatlas"


def _unwritable(folder: Path) -> str:
    """Why files cannot be made in ``folder`` (created if missing), or "" when they can."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return ""
