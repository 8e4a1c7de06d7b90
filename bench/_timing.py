"""Shared by the benchmarks: wall time of one command in a fresh process."""

from __future__ import annotations

import subprocess
import time

PEAK = """
def _peak():
    # this process's own high-water mark (VmHWM, KiB); ru_maxrss would also count the process it was forked from
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
"""
"""Prepended to a measured script run with ``python -c``: ``_peak()`` is that process's own peak RSS in KiB."""


def wall(command: list[str]) -> float:
    """Seconds ``command`` took, output discarded; raises if it fails."""
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def interleaved(commands: dict[str, list[str]], repeats: int) -> dict[str, list[float]]:
    """One warm-up run each (fills numba's on-disk cache), then ``repeats`` rounds taking turns, so machine
    noise hits every command alike."""
    for command in commands.values():
        wall(command)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeats):
        for name, command in commands.items():
            times[name].append(wall(command))
    return times


def report(times: dict[str, list[float]], ratio: str) -> None:
    """Print each command's median and runs, then second median / first median as ``ratio``."""
    import statistics

    medians = {name: statistics.median(values) for name, values in times.items()}
    width = max(len(name) for name in times)
    for name, values in times.items():
        print(f"{name:<{width}} median {medians[name]:6.2f} s   runs {', '.join(f'{v:.2f}' for v in values)}")
    first, second = list(medians.values())[:2]
    print(f"ratio {ratio}: {second / first:.2f}")
