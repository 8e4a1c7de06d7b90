"""What ``--seed`` costs: wall time of ``faceatlas run`` on the demo database with and without a seed.

A seed makes umap-learn reproducible (byte-identical projection.parquet) by running its optimiser on one
thread. Fresh process per run, interleaved, first runs discarded (numba cache). Prints medians and ratio.

    python bench/bench_seed.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from _timing import wall  # bench/ is on sys.path when a bench runs as a script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = [sys.executable, "-m", "job", "run", "--out", str(Path(tmp) / "out")]
        commands = {"no seed (baseline)": base, "--seed 42": [*base, "--seed", "42"]}
        for command in commands.values():
            wall(command)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.repeats):
            for name, command in commands.items():
                times[name].append(wall(command))
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        print(f"{name:<20} median {medians[name]:6.2f} s   runs {', '.join(f'{v:.2f}' for v in values)}")
    baseline, seeded = medians.values()
    print(f"ratio seeded / unseeded: {seeded / baseline:.2f}")


if __name__ == "__main__":
    main()
