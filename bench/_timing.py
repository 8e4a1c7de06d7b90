"""Shared by the benchmarks: wall time of one command in a fresh process."""

from __future__ import annotations

import subprocess
import time


def wall(command: list[str]) -> float:
    """Seconds ``command`` took, output discarded; raises if it fails."""
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start
