"""Make docs/atlas_page.png, the README's picture of the atlas page: a run's report.html in headless Chromium,
the whole map with the suspects shown and the surest suspect clicked.

    faceatlas run --seed 0 --out /tmp/demo && python docs/atlas_screenshot.py /tmp/demo docs/atlas_page.png
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pyarrow.parquet as pq
from playwright.sync_api import sync_playwright


def main(run: Path, out: Path) -> None:
    table = pq.read_table(run / "projection.parquet").to_pandas()
    surest = table[table["suspect"]].sort_values("outlier_score", ascending=False).iloc[0]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.goto((run / "report.html").resolve().as_uri())
        page.wait_for_function("document.documentElement.dataset.faceatlas === 'ready'")
        page.check("#fa-suspects-toggle")
        x, y = page.evaluate("row => window.faceatlas.screenOf(row)", int(surest["row"]))
        page.mouse.click(x, y)
        page.screenshot(path=str(out), clip={"x": 0, "y": 0, "width": 1280, "height": 860})
        browser.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
