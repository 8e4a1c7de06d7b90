"""The atlas page at size: how large report.html is, how long ``faceatlas report`` takes, and how soon a real
Chromium can use the page (and how fast it answers), against the issue's budgets in the same run: under ~30 MB
and interactive within a few seconds (taken here as 3 s).

For each run folder (``--runs``; by default the 5k demo, made here, and a 1M-face run if one is given):

* ``faceatlas report DIR`` in a fresh process, ``--repeats`` times (median), on a copy of the folder;
* the page's size, and what it holds (drawn points, identities, the density image, the five maps);
* Chromium (Debian's, through Playwright), a fresh page each time: from navigation to the script's ready mark
  (``document.documentElement.dataset.faceatlas``), and the script's own start-up (``faceatlas.readyMs``);
* the time a redraw of the map takes (pan/zoom frame), a hover pick, and a click until the panel shows the face.

Also the page's share of the run that wrote it (run.json timings ``report`` over the whole run). Run it alone.

``--thumbnails``: the same 5k demo with a synthetic photo for each face (cartoon faces,
:mod:`job.io.demo_photos`: no real person's photo is ever used or kept), its page made with and without the
faces' crops side by side, against the issue's 10 MB budget for a 5k-face page with crops.

    python bench/bench_report.py [--runs DIR ...] [--repeats 3] [--loads 5] [--thumbnails]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUDGET_MB, BUDGET_S = 30.0, 3.0
BUDGET_THUMBS_MB = 10.0  # the page of a 5k-face run with its faces' crops


def machine() -> str:
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_scale import machine as describe

    return describe()


def demo_run(root: Path) -> Path:
    out = root / "demo"
    subprocess.run([sys.executable, "-m", "job", "run", "--seed", "0", "--out", str(out)], check=True,
                   capture_output=True)
    return out


def photo_run(root: Path) -> Path:
    """The 5k demo as Parquet with a synthetic photo per face (image, box), run with its faces' crops."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from job.io.demo import DemoSpec, make_demo
    from job.io.demo_photos import draw_photos

    records, truth = make_demo(DemoSpec())
    true_ids = truth.true_ids(records["id"])
    start = time.perf_counter()
    photos = draw_photos(true_ids, root / "photos", seed=0)
    print(f"drew {len(set(photos.image.tolist())):,} photos for {len(true_ids):,} faces in "
          f"{time.perf_counter() - start:.1f} s")
    table = pa.table({"id": pa.array(records["id"].astype(np.int32)),
                      "embedding": pa.array(list(records["embedding"].astype(np.float32)),
                                            type=pa.list_(pa.float32())),
                      "image": pa.array(photos.image.tolist()), "box": pa.array(photos.box.tolist())})
    pq.write_table(table, root / "faces.parquet")
    out = root / "faces"
    subprocess.run([sys.executable, "-m", "job", "run", "--seed", "0", "--input", str(root / "faces.parquet"),
                    "--thumbnails", "--set", f"input.image_root={root / 'photos'}", "--out", str(out)],
                   check=True, capture_output=True)
    return out


def report_times(folder: Path, repeats: int, root: Path, *options: str) -> tuple[Path, list[float]]:
    """``faceatlas report`` on a copy of ``folder`` (with ``options``), ``repeats`` times; the copy holds this
    version's page."""
    copy = root / f"copy-{folder.name}"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(folder, copy)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "job", "report", str(copy), *options], check=True,
                       capture_output=True)
        times.append(time.perf_counter() - start)
    return copy, times


def contents(page: Path) -> dict[str, float]:
    html = page.read_text(encoding="utf-8")
    meta = json.loads(re.search(r'id="fa-meta">(.*?)</script>', html, re.S).group(1))
    blob = re.search(r'id="fa-blob">(.*?)</script>', html, re.S).group(1)
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)
    return {"MB": len(html.encode()) / 1e6, "arrays MB": len(blob) / 1e6, "underlay MB": len(images[0]) / 1e6,
            "maps MB": sum(len(i) for i in images[1:]) / 1e6, "points": meta["n_points"], "faces": meta["n_faces"]}


def browser_times(page: Path, loads: int) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    url = page.resolve().as_uri()
    navigations, scripts, frames, picks, clicks = [], [], [], [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        for _ in range(loads):
            tab = browser.new_page(viewport={"width": 1400, "height": 1000})
            start = time.perf_counter()
            tab.goto(url)
            tab.wait_for_function("document.documentElement.dataset.faceatlas === 'ready'", timeout=120_000)
            navigations.append(time.perf_counter() - start)
            scripts.append(tab.evaluate("window.faceatlas.readyMs") / 1000)
            frames.append(tab.evaluate("""() => { const t = performance.now();
                for (let i = 0; i < 10; i++) window.faceatlas.focus(window.faceatlas.meta.frame.x0 * 0.9 +
                    window.faceatlas.meta.frame.x1 * 0.1 + i * 0.01, (window.faceatlas.meta.frame.y0 +
                    window.faceatlas.meta.frame.y1) / 2, 1 + i / 10);
                return (performance.now() - t) / 10000; }"""))
            box = tab.locator("#fa-map").bounding_box()
            centre = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            tab.click("#fa-reset")
            start = time.perf_counter()
            tab.mouse.move(*centre)
            picks.append(time.perf_counter() - start)
            start = time.perf_counter()
            tab.mouse.click(*centre)
            tab.wait_for_function("document.querySelector('#fa-panel h3').textContent !== 'Point at the map'")
            clicks.append(time.perf_counter() - start)
            tab.close()
        browser.close()
    return {"to ready s": statistics.median(navigations), "script s": statistics.median(scripts),
            "frame s": statistics.median(frames), "hover s": statistics.median(picks),
            "click s": statistics.median(clicks), "loads": loads}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="*", type=Path, default=[], help="finished run folders (a 5k demo is made)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--thumbnails", action="store_true", help="only the 5k demo with photos: the page "
                        "with and without the faces' crops")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    if args.thumbnails:
        with tempfile.TemporaryDirectory() as scratch:
            thumbnails(Path(scratch), args.repeats, args.loads)
        return
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        runs = [demo_run(root), *args.runs]
        for folder in runs:
            record = json.loads((folder / "run.json").read_text())
            timings = record["timings"]
            copy, remade = report_times(folder, args.repeats, root)
            size = contents(copy / "report.html")
            shown = browser_times(copy / "report.html", args.loads)
            shutil.rmtree(copy)
            print(f"\n{folder} ({size['faces']:,} faces, {size['points']:,} drawn)")
            verdict = "within" if size["MB"] <= BUDGET_MB else "OVER"
            print(f"  page {size['MB']:.1f} MB (budget {BUDGET_MB:.0f} MB: {verdict}); arrays "
                  f"{size['arrays MB']:.1f}, density image {size['underlay MB']:.2f}, maps {size['maps MB']:.1f}")
            print(f"  faceatlas report: median {statistics.median(remade):.1f} s (runs "
                  f"{', '.join(f'{t:.1f}' for t in remade)})")
            share = timings.get("report", 0.0) / sum(timings.values())
            print(f"  in the run: report stage {timings.get('report', 0.0):.1f} s of {sum(timings.values()):.1f} s "
                  f"({share:.1%})")
            ready = shown["to ready s"]
            print(f"  Chromium, median of {shown['loads']} fresh loads: navigation to ready {ready:.2f} s (budget "
                  f"{BUDGET_S:.0f} s: {'within' if ready <= BUDGET_S else 'OVER'}), the script's start "
                  f"{shown['script s']:.2f} s; a map frame {shown['frame s'] * 1000:.0f} ms, a hover "
                  f"{shown['hover s'] * 1000:.0f} ms, a click to the panel {shown['click s'] * 1000:.0f} ms")


def thumbnails(root: Path, repeats: int, loads: int) -> None:
    """The 5k photo demo's page without and with crops, side by side."""
    folder = photo_run(root)
    print(f"{'page':<16} {'MB':>6} {'report s':>9} {'to ready s':>11} {'script s':>9} {'click ms':>9}")
    for label, option in (("without crops", "--no-thumbnails"), ("with crops", "--thumbnails")):
        copy, remade = report_times(folder, repeats, root, option)
        size = contents(copy / "report.html")
        shown = browser_times(copy / "report.html", loads)
        record = json.loads((copy / "run.json").read_text())
        print(f"{label:<16} {size['MB']:6.2f} {statistics.median(remade):9.2f} {shown['to ready s']:11.2f} "
              f"{shown['script s']:9.2f} {shown['click s'] * 1000:9.0f}")
        crops = (record.get("report") or {}).get("thumbnails")
        if crops:
            verdict = "within" if size["MB"] <= BUDGET_THUMBS_MB else "OVER"
            print(f"  crops: {crops['made']:,} made, {crops['bytes'] / 2**20:.2f} MiB of JPEG "
                  f"({crops['bytes'] / max(crops['made'], 1):.0f} B each), {crops['over_budget']:,} past the "
                  f"budget; page budget {BUDGET_THUMBS_MB:.0f} MB: {verdict}")
        shutil.rmtree(copy)


if __name__ == "__main__":
    main()
