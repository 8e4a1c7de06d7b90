"""Writing a run's files: every file goes to a temporary name first and is renamed into place."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from job.arrays import FloatArray, IdArray

PROJECTION_FILE = "projection.parquet"
RUN_FILE = "run.json"
TRUTH_FILE = "truth.json"


def temporary_path(path: Path) -> Path:
    """A hidden sibling of ``path`` to write before ``os.replace``; unique per process."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_projection(path: Path, ids: IdArray, coords: FloatArray) -> Path:
    """``projection.parquet``: ``row`` (int64), ``id`` (int64), ``x``, ``y`` (float32), ``z`` for 3-D."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns: dict[str, Any] = {"row": np.arange(len(ids), dtype=np.int64), "id": ids.astype(np.int64)}
    for axis, name in enumerate("xyz"[: coords.shape[1]]):
        columns[name] = np.ascontiguousarray(coords[:, axis], dtype=np.float32)
    tmp = temporary_path(path)
    pq.write_table(pa.table(columns), tmp)
    os.replace(tmp, path)
    return path


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Write indented JSON atomically."""
    tmp = temporary_path(path)
    tmp.write_text(json.dumps(payload, indent=2, default=_plain) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
