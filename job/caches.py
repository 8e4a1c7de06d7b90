"""Where faceatlas keeps what it may reuse between runs: numba's compiled kernels, under the user cache dir.

Imports nothing heavy, so the CLI can set the cache up before anything imports numba.
"""

from __future__ import annotations

import os
from pathlib import Path


def default_numba_cache() -> None:
    """Point numba's on-disk cache at the user cache dir unless ``NUMBA_CACHE_DIR`` is set.

    Numba reads the variable when it is first imported, so the CLI calls this before anything else; the
    user cache dir also works in containers whose site-packages are read-only (umap-learn issue #715).
    """
    os.environ.setdefault("NUMBA_CACHE_DIR", str(user_cache_dir() / "numba"))


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/faceatlas`` (default ``~/.cache/faceatlas``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "faceatlas"
