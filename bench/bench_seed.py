"""What ``--seed`` costs: wall time of ``faceatlas run`` on the demo database with and without a seed.

A seed makes the CPU fit reproducible (byte-identical projection.parquet) by running its layout on one
thread. Fresh process per run, interleaved, first runs discarded (numba cache). Prints medians and ratio.

    python bench/bench_seed.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from _timing import interleaved, report  # bench/ is on sys.path when a bench runs as a script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = [sys.executable, "-m", "job", "run", "--out", str(Path(tmp) / "out")]
        commands = {"no seed (baseline)": base, "--seed 42": [*base, "--seed", "42"]}
        times = interleaved(commands, args.repeats)
    report(times, "seeded / unseeded")


if __name__ == "__main__":
    main()
