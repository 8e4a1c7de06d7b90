"""The atlas page in a real headless Chromium (Debian's ``chromium``, driven by Playwright for Python through
its ``executable_path``): opened from disk, it draws, answers clicks and searches, keeps hostile names inert
and makes no network request.

Without a Chromium these tests are skipped, except under CI (``CI=true``), where ``.ci/run`` installs one and
a missing browser is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from job.config import load_config
from job.pipeline import RunResult, run

pytestmark = pytest.mark.slow  # the browser tier: a real Chromium (pytest -m 'not slow' leaves it out)

SMOKE = Path(__file__).parents[2] / "configs" / "smoke.toml"
HOSTILE = {7: "<img src=x onerror=alert(1)>", 9: "</script><script>window.__pwned=1</script>",
           11: '"><svg onload="window.__pwned=2">'}
LIGHT = (214, 214, 214)  # the page's colour for faces outside a highlight


def chromium() -> str | None:
    """The Chromium to drive: ``FACEATLAS_CHROMIUM``, else ``chromium`` (Debian) or ``chromium-browser``."""
    for name in (os.environ.get("FACEATLAS_CHROMIUM"), "chromium", "chromium-browser"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}: CI installs it (.ci/run), so the browser tests must run")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright for Python is not installed (pip install '.[dev]')")
    executable = chromium()
    if executable is None:
        _unavailable("no Chromium here (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def atlas_run(small_db: Path, tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    """A run of the small database with names, three of them hostile markup."""
    folder = tmp_path_factory.mktemp("atlas")
    names = folder / "names.jsonl"
    names.write_text("\n".join(json.dumps({"name": HOSTILE.get(i, f"Star {i}")}) for i in range(200)),
                     encoding="utf-8")
    config = load_config(SMOKE, {"input.path": str(small_db), "input.names": str(names), "out": str(folder / "out"),
                                 "seed": 3})
    return run(config)


class Page:
    """One opened report: the Playwright page and what it logged (console, errors, requests, dialogs)."""

    def __init__(self, browser: Any, path: Path) -> None:
        self.page = browser.new_page(viewport={"width": 1300, "height": 1000})
        self.console: list[str] = []
        self.requests: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}") if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.url = path.resolve().as_uri()
        self.page.goto(self.url)
        self.page.wait_for_function("document.documentElement.dataset.faceatlas === 'ready'", timeout=30_000)

    def js(self, expression: str, arg: Any = None) -> Any:
        return self.page.evaluate(expression, arg)

    def count(self, kind: str, colour: tuple[int, int, int] = (0, 0, 0)) -> int:
        """Pixels of the map canvas that are ``kind``: "drawn" (not white), "exactly" ``colour``, or "red"."""
        return int(self.js("""([kind, r, g, b]) => {
            const c = document.getElementById('fa-map'), d = c.getContext('2d').getImageData(0, 0, c.width,
                c.height).data;
            let n = 0;
            for (let i = 0; i < d.length; i += 4) {
                if (kind === 'drawn' ? d[i] < 255 || d[i + 1] < 255 || d[i + 2] < 255
                    : kind === 'exactly' ? d[i] === r && d[i + 1] === g && d[i + 2] === b
                    : d[i] > 190 && d[i + 1] < 80 && d[i + 2] < 80) n++;
            }
            return n; }""", [kind, *colour]))

    def click_map_centre(self) -> None:
        box = self.page.locator("#fa-map").bounding_box()
        self.page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)


@pytest.fixture
def opened(browser: Any, atlas_run: RunResult) -> Iterator[Page]:
    page = Page(browser, atlas_run.files["report"])
    yield page
    page.page.close()


def _table(atlas_run: RunResult) -> Any:
    return pq.read_table(atlas_run.out_dir / "projection.parquet").to_pandas()


def test_the_page_opens_from_disk_draws_and_asks_for_nothing(opened: Page, tmp_path: Path) -> None:
    assert opened.count("drawn") > 2000  # faces on a white ground
    assert opened.js("window.faceatlas.points") == opened.js("window.faceatlas.meta.n_faces")
    shot = tmp_path / "atlas.png"
    opened.page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
    assert opened.console == [] and opened.dialogs == []
    assert opened.requests == [opened.url]  # the page itself, nothing else (its images are data: URLs)
    for section in ("Summary", "Maps", "Clusters"):
        assert opened.page.locator("h2", has_text=section).count() == 1
    assert opened.page.locator("#fa-suspects tbody tr").count() > 0


def test_clicking_a_face_shows_its_identity_verdict_and_similar_identities(opened: Page, atlas_run: RunResult
                                                                           ) -> None:
    table = _table(atlas_run)
    face = table[table["suspect"]].iloc[0]
    x, y = opened.js("row => window.faceatlas.face(row)", int(face["row"]))
    opened.js("([x, y]) => window.faceatlas.focus(x, y, 200)", [x, y])  # so far in that no other face is near
    opened.click_map_centre()
    panel = opened.page.locator("#fa-panel")
    assert panel.get_attribute("data-id") == str(int(face["id"]))
    assert panel.get_attribute("data-row") == str(int(face["row"]))
    text = panel.inner_text()
    assert f"Face row {int(face['row'])}" in text and "Suspected misfiled: yes" in text
    named = json.loads((atlas_run.out_dir / "names.json").read_text())
    name = dict(zip(named["ids"], named["names"], strict=True))[int(face["suggested_id"])]
    assert f"suggested identity {int(face['suggested_id'])} ({name}), score {face['outlier_score']:.1f}" in text
    first = panel.locator("ol li").first.inner_text()
    assert first.startswith(f"{int(face['similar_id_1'])} (")
    assert opened.console == []


def test_clicking_empty_space_gives_the_answer_of_faceatlas_nearest(opened: Page, atlas_run: RunResult) -> None:
    grid = opened.js("window.faceatlas.meta.nearest")
    answered = None
    for cell in range(grid["nx"] * grid["ny"] // 3, grid["nx"] * grid["ny"]):
        x, y = grid["x"][cell % grid["nx"]], grid["y"][cell // grid["nx"]]
        opened.js("([x, y]) => window.faceatlas.focus(x, y, 500)", [x, y])
        opened.click_map_centre()
        if opened.page.locator("#fa-panel").get_attribute("data-cell") == str(cell):
            answered = (cell, x, y)
            break
    assert answered is not None, "no map cell could be clicked away from every face"
    cell, x, y = answered
    shown = [int(i) for i in opened.page.locator("#fa-panel tr[data-id]").evaluate_all(
        "rows => rows.map(r => r.dataset.id)")]
    command = [sys.executable, "-m", "job", "nearest", str(atlas_run.out_dir), "--x", repr(x), "--y", repr(y),
               "-k", str(grid["k"]), "--json"]
    answer = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    assert shown == [a["id"] for a in answer]
    code = opened.page.locator("#fa-panel code").inner_text().split()
    assert code[:3] == ["faceatlas", "nearest", "RUN"]
    assert float(code[code.index("--x") + 1]) == x and float(code[code.index("--y") + 1]) == y


def test_the_search_box_highlights_an_id_and_names(opened: Page, atlas_run: RunResult) -> None:
    before = opened.count("exactly", LIGHT)
    opened.page.fill("#fa-search", "42")  # the id 42, then the names holding "42"
    assert opened.js("window.faceatlas.highlighted()") == [42, 142]
    assert "2 identities highlighted" in opened.page.locator("#fa-status").inner_text()
    after = opened.count("exactly", LIGHT)
    assert after > before + 1000  # every other face fades to light grey
    opened.page.fill("#fa-search", "Star 4")
    found = opened.js("window.faceatlas.highlighted()")
    named = json.loads((atlas_run.out_dir / "names.json").read_text())
    expected = [i for i, name in zip(named["ids"], named["names"], strict=True) if "star 4" in name.lower()]
    assert sorted(found) == expected and len(expected) >= 11
    opened.page.fill("#fa-search", "")
    assert opened.js("window.faceatlas.highlighted()") == []


def test_hostile_names_stay_text(opened: Page, atlas_run: RunResult) -> None:
    assert opened.js("window.__pwned") is None and opened.dialogs == []
    assert opened.js("Array.from(document.images).every(i => i.src.startsWith('data:image/png'))")
    assert opened.js("document.querySelectorAll('svg, img[src=x]').length") == 0
    opened.page.fill("#fa-search", "<img")
    table = _table(atlas_run)
    assert opened.page.locator("#fa-matches li").all_inner_texts() == [
        f"7 ({HOSTILE[7]}) \u2013 {int((table['id'] == 7).sum())} faces"]
    face = table[table["id"] == 9].iloc[0]
    x, y = opened.js("row => window.faceatlas.face(row)", int(face["row"]))
    opened.js("([x, y]) => window.faceatlas.focus(x, y, 200)", [x, y])
    opened.click_map_centre()
    assert HOSTILE[9] in opened.page.locator("#fa-panel").inner_text()
    assert opened.js("window.__pwned") is None and opened.dialogs == [] and opened.console == []


def test_the_page_cannot_reach_the_network(opened: Page) -> None:
    """A server on this machine that the page tries to reach by fetch and by image: it is never asked."""
    import http.server
    import threading

    asked: list[str] = []

    class Listener(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Listener)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        outcome = opened.js("""async (base) => {
            const blocked = [];
            document.addEventListener('securitypolicyviolation', e => blocked.push(e.violatedDirective));
            let fetched = 'no error';
            try { await fetch(base + '/faces'); } catch (e) { fetched = e.name; }
            const image = new Image(); image.src = base + '/pixel.png';
            await new Promise(resolve => setTimeout(resolve, 500));
            return {fetched, blocked};
        }""", base)
    finally:
        server.shutdown()
    assert outcome["fetched"] == "TypeError"
    assert {"connect-src", "img-src"} <= set(outcome["blocked"])
    assert asked == []  # the policy stopped both before they left the browser
    assert opened.requests[0] == opened.url


def test_look_alike_pairs_suspects_and_sorting(opened: Page, atlas_run: RunResult) -> None:
    first = opened.page.locator("#fa-lookalikes tbody tr").first
    a, b = (int(first.locator("td").nth(k).inner_text()) for k in (0, 2))
    first.click()
    assert sorted(opened.js("window.faceatlas.highlighted()")) == sorted([a, b])
    opened.page.click("#fa-reset")
    opened.page.fill("#fa-search", "")
    before = opened.count("red")
    opened.page.check("#fa-suspects-toggle")
    opened.page.wait_for_timeout(100)
    assert opened.count("red") > before + 50  # a red ring round every suspect
    scores = lambda: [float(t) for t in opened.page.locator("#fa-suspects tbody tr td:nth-child(6)")  # noqa: E731
                      .all_inner_texts()]
    assert scores() == sorted(scores(), reverse=True)  # most certain first
    opened.page.click("#fa-suspects th:nth-child(6)")
    assert scores() == sorted(scores())
    opened.page.click("#fa-suspects th:nth-child(6)")
    assert scores() == sorted(scores(), reverse=True)
    assert opened.console == []


def test_a_sampled_page_draws_every_suspect_over_the_density_of_all(browser: Any, atlas_run: RunResult,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path) -> None:
    """The page of a database above the point limit, made here with the limit lowered to 300 faces."""
    import job.report.content as content
    from job.report.page import write_report
    from job.report.rundata import read_run
    from job.store.runs import open_run

    monkeypatch.setattr(content, "MAX_POINTS", 300)
    finished = open_run(atlas_run.out_dir)
    run_data = read_run(atlas_run.out_dir, finished.record, finished.files)
    path = write_report(tmp_path / "report.html", run_data, [3], "id")
    page = Page(browser, path)
    try:
        meta = page.js("window.faceatlas.meta")
        table = _table(atlas_run)
        assert meta["sampled"] and page.js("window.faceatlas.points") == 300 < len(table)
        drawn = set(page.js("""() => { const rows = []; for (const r of [...Array(20000).keys()])
            if (window.faceatlas.face(r)) rows.push(r); return rows; }"""))
        assert set(table.loc[table["suspect"], "row"]) <= drawn  # every suspect is drawn
        assert set(table.loc[table["id"] == 3, "row"]) <= drawn  # and every face of a highlighted identity
        assert page.count("drawn") > 2000  # the density image of all faces under the sample
        missing = [i for i in sorted(set(table["id"]) - set(table.loc[table["row"].isin(drawn), "id"])) if i >= 100]
        page.page.fill("#fa-search", f"Star {missing[0]}")  # an identity none of whose faces is drawn
        assert page.js("window.faceatlas.highlighted()") == [missing[0]]
        assert "1 identity highlighted (0 faces drawn)" in page.page.locator("#fa-status").inner_text()
        assert page.console == [] and page.requests == [page.url]
    finally:
        page.page.close()
