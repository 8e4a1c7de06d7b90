"""Cost of faceatlas's input checks on a big .npy: time and peak memory of ``load_database`` against
the plain way (``np.load`` then ``astype(float32)``), each in a fresh process, side by side.

faceatlas memory-maps the file, checks its header against its size, converts and checks NaN/inf/zero rows
block by block, and hashes rows to count duplicates. The baseline does none of that.

    python bench/bench_load.py [--faces 1000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from _timing import PEAK  # bench/ is on sys.path when a bench runs as a script

BASELINE = PEAK + """
import json, resource, time, numpy as np
start = time.perf_counter()
records = np.load({path!r}, allow_pickle=False)
vectors = records["embedding"].astype(np.float32)
ids = records["id"].astype(np.int64)
print(json.dumps({{"s": time.perf_counter() - start, "rss": _peak()}}))
"""
OURS = PEAK + """
import json, resource, time
from job.config import InputConfig
from job.io.database import load_database
start = time.perf_counter()
database = load_database(InputConfig(path={path!r}))
print(json.dumps({{"s": time.perf_counter() - start, "rss": _peak()}}))
"""


def _measure(code: str) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.npy"
        records = np.empty(args.faces, dtype=[("id", "<u2"), ("embedding", "<f2", (512,))])
        records["id"] = rng.integers(0, 60_000, args.faces)
        for start in range(0, args.faces, 100_000):
            block = rng.standard_normal((min(100_000, args.faces - start), 512), dtype=np.float32)
            records["embedding"][start:start + len(block)] = block
        np.save(path, records)
        del records
        runs: dict[str, list[dict[str, float]]] = {"np.load + astype (baseline)": [], "load_database": []}
        for _ in range(args.repeats):
            runs["np.load + astype (baseline)"].append(_measure(BASELINE.format(path=str(path))))
            runs["load_database"].append(_measure(OURS.format(path=str(path))))
    print(f"{args.faces:,} faces x 512 float16 ({args.faces * 1026 / 2**30:.2f} GiB .npy)")
    medians = {}
    for name, values in runs.items():
        seconds = statistics.median(v["s"] for v in values)
        peak = statistics.median(v["rss"] for v in values) / 2**20  # ru_maxrss is KiB on Linux
        medians[name] = (seconds, peak)
        print(f"{name:<30} median {seconds:6.2f} s   peak RSS {peak:5.2f} GiB")
    (base_s, base_m), (ours_s, ours_m) = medians.values()
    print(f"ratio load_database / baseline: time {ours_s / base_s:.2f}, peak memory {ours_m / base_m:.2f}")


if __name__ == "__main__":
    main()
