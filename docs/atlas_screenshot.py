"""Make the README's pictures of the atlas page: a run's report.html in headless Chromium.

* the whole map with the suspects shown and the surest suspect clicked (docs/atlas_page.png);
* with ``--faces``, a run made with ``--thumbnails``: the surest suspect clicked (its crop in the panel) and
  the suspects table, each suspect beside faces of its filed and its suggested identity (docs/atlas_faces.png),
  then the review section with a few changes accepted and one rejected (docs/atlas_review.png).

    faceatlas run --seed 0 --out /tmp/demo && python docs/atlas_screenshot.py /tmp/demo docs/atlas_page.png
    faceatlas demo-db /tmp/faces.npy --photos /tmp/photos --force
    faceatlas run --input /tmp/faces.npy --truth /tmp/faces.truth.json --thumbnails --seed 0 --out /tmp/faces
    python docs/atlas_screenshot.py /tmp/faces docs/atlas_faces.png --faces docs/atlas_review.png

The faces are cartoons drawn by ``faceatlas demo-db --photos``: no photo of a real person is used.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from playwright.sync_api import sync_playwright


def main(run: Path, out: Path, review: Path | None = None) -> None:
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
        if review is None:
            page.screenshot(path=str(out), clip={"x": 0, "y": 0, "width": 1280, "height": 860})
        else:
            faces(page, out, review)
        browser.close()


def faces(tab: Any, out: Path, review: Path) -> None:
    """The suspects with their faces, and the review section with choices made."""
    tab.evaluate("localStorage.clear()")
    shoot(tab, "#suspects", out, width=900, height=430)
    rows = tab.locator("#fa-review tbody tr")
    for index in (0, 1, 2, 4):
        rows.nth(index).locator("button.accept").click()
    rows.nth(3).locator("button.reject").click()
    shoot(tab, "#review", review, width=1240, height=560)


def shoot(tab: Any, selector: str, out: Path, *, width: int, height: int) -> None:
    """The top ``height`` pixels of the element ``selector``, ``width`` wide, in page coordinates."""
    box = tab.evaluate("""s => { const r = document.querySelector(s).getBoundingClientRect();
        return {x: r.left + window.scrollX, y: r.top + window.scrollY, w: r.width}; }""", selector)
    tab.screenshot(path=str(out), full_page=True,
                   clip={"x": box["x"], "y": box["y"], "width": min(box["w"], width), "height": height})


if __name__ == "__main__":
    arguments = sys.argv[1:]
    chosen = Path(arguments[arguments.index("--faces") + 1]) if "--faces" in arguments else None
    main(Path(arguments[0]), Path(arguments[1]), chosen)
