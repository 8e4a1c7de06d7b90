"""Identity-map rendering: faceatlas's colour-sum grid vs datashader's one-category-per-identity default.

Baseline = what datashader's docs suggest for coloured categories: ``ds.by("id", ds.count())`` then
``tf.shade(color_key=...)``, which holds W x H x n_identities counts. faceatlas finds each face's pixel once
(``job/render/raster.py``) and sums three colours and a count per pixel (W x H x 4) whatever the number of
identities. Both draw the same synthetic map (clusters of 5 faces per identity) in one process; prints
medians of wall time and peak traced memory, and ratios. Also times the whole ``render_maps`` (three finished
PNGs) at growing sizes, up to 10M faces.

    python bench/bench_render.py [--faces 1000000] [--identities 1000] [--big 10000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np


def _synthetic(n_faces: int, n_identities: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 5, (n_identities, 2))
    ids = rng.integers(0, n_identities, n_faces)
    return (centres[ids] + rng.normal(0, 0.05, (n_faces, 2))).astype(np.float32), ids


def _measure(work: Callable[[], object], repeats: int) -> tuple[float, float]:
    work()  # compile datashader's kernels outside the timing
    seconds, peaks = [], []
    for _ in range(repeats):
        tracemalloc.start()
        start = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - start)
        peaks.append(tracemalloc.get_traced_memory()[1] / 2**20)
        tracemalloc.stop()
    return statistics.median(seconds), statistics.median(peaks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=1_000_000)
    parser.add_argument("--identities", type=int, default=1000)
    parser.add_argument("--big", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import datashader as ds
    import datashader.transfer_functions as tf
    import pandas as pd

    from job.config import RenderConfig
    from job.render.maps import MapIdentities, _colour_image, identity_palette, make_frame, map_grid, render_maps

    coords, ids = _synthetic(args.faces, args.identities)
    config = RenderConfig()
    frame = make_frame(coords, config)
    canvas = ds.Canvas(plot_width=frame.plot_width, plot_height=frame.plot_height, x_range=frame.x_range,
                       y_range=frame.y_range)
    palette = identity_palette(args.identities)
    labelled = pd.DataFrame({"x": coords[:, 0], "y": coords[:, 1],
                             "id": pd.Categorical(ids, categories=range(args.identities))})
    key = {i: "#" + "".join(f"{channel:02x}" for channel in (palette[i] * 255).astype(int))
           for i in range(args.identities)}

    def baseline() -> object:
        return tf.shade(canvas.points(labelled, "x", "y", agg=ds.by("id", ds.count())), color_key=key,
                        how="eq_hist")

    def ours() -> object:
        return _colour_image(map_grid(coords, config), palette, ids)

    base_s, base_mb = _measure(baseline, args.repeats)
    ours_s, ours_mb = _measure(ours, args.repeats)
    print(f"identity map, {args.faces:,} faces, {args.identities:,} identities, "
          f"{frame.plot_width}x{frame.plot_height} px, median of {args.repeats}")
    print(f"  baseline ds.by + shade      {base_s:6.2f} s  peak {base_mb:8.1f} MiB")
    print(f"  faceatlas colour grid       {ours_s:6.2f} s  peak {ours_mb:8.1f} MiB")
    print(f"  ratio faceatlas/baseline    time {ours_s / base_s:.2f}  memory {ours_mb / base_mb:.3f}")

    with tempfile.TemporaryDirectory() as tmp:
        for n in sorted({5_000, args.faces, args.big}):
            coords, ids = _synthetic(n, max(args.identities, n // 5))
            start = time.perf_counter()
            render_maps(coords, MapIdentities(ids, [0, 1, 2, 3, 4], {}, codes=ids), config, Path(tmp), f"{n:,} faces")
            print(f"render_maps, three PNGs, {n:>12,} faces: {time.perf_counter() - start:6.2f} s")


if __name__ == "__main__":
    main()
