"""CPU wall time of one map of the demo database: the seed's code path vs ``faceatlas run``, side by side.

Each repetition runs in a fresh process, as a batch job does. Baseline = what the blog post ran:
``umap.UMAP(n_components=2, metric="cosine").fit_transform(embedding)`` (load + fit only, no drawing).
faceatlas = the whole job (load, exact kNN, UMAP, metrics, three maps, files). Prints medians and the ratio.

    python bench/bench_cpu_run.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from _timing import interleaved, report  # bench/ is on sys.path when a bench runs as a script

BASELINE = """
import numpy as np, umap
records = np.load({path!r}, allow_pickle=False)
umap.UMAP(n_components=2, metric="cosine").fit_transform(records["embedding"])
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "actor.npy"
        subprocess.run([sys.executable, "-m", "job", "demo-db", str(db)], check=True, capture_output=True)
        ours = [sys.executable, "-m", "job", "run", "--input", str(db), "--out", str(Path(tmp) / "out")]
        base = [sys.executable, "-c", BASELINE.format(path=str(db))]
        times = interleaved({"baseline (seed's umap-learn call)": base, "faceatlas run (whole job)": ours},
                            args.repeats)
    report(times, "faceatlas / baseline")


if __name__ == "__main__":
    main()
