"""Identity ids beyond 2**53 on the atlas page, in a real headless Chromium: JavaScript's numbers round them
(every id near 2**63 reads 9223372036854776000), so the page must show, search, sort and highlight them
exactly. The database's ids sit just below 2**63 and differ only in their last digits; a second page, made
from the same run with its ids renumbered, mixes negative, small and large ids to check sorting with sign.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from job.config import load_config
from job.io.demo import DemoSpec, make_demo
from job.pipeline import RunResult, run
from tests.report.test_browser import SMOKE, Page, browser  # noqa: F401 - the browser fixture, shared

pytestmark = pytest.mark.slow  # the browser tier: a real Chromium (pytest -m 'not slow' leaves it out)

TOP = 2**63 - 1
ROUNDED = "9223372036854776000"  # what JavaScript shows for every id near 2**63 when it holds it as a Number


@pytest.fixture(scope="module")
def big_run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    """A run of a demo database whose identity k has the int64 id 2**63 - 1 - k, named by id."""
    folder = tmp_path_factory.mktemp("bigids")
    records, _ = make_demo(DemoSpec(n_identities=200, faces_per_identity=5, seed=1))
    big = np.empty(len(records), dtype=[("id", "<i8"), ("embedding", records.dtype["embedding"])])
    big["id"] = TOP - records["id"].astype(np.int64)
    big["embedding"] = records["embedding"]
    np.save(folder / "big.npy", big, allow_pickle=False)
    names = folder / "names.jsonl"
    names.write_text("\n".join(json.dumps({"id": TOP - k, "name": f"Star {k}"}) for k in range(200)),
                     encoding="utf-8")
    config = load_config(SMOKE, {"input.path": str(folder / "big.npy"), "input.names": str(names),
                                 "out": str(folder / "out"), "seed": 3})
    return run(config)


@pytest.fixture
def opened(browser: Any, big_run: RunResult) -> Iterator[Page]:  # noqa: F811 - the imported fixture
    page = Page(browser, big_run.files["report"])
    yield page
    page.page.close()


def _suspects(result: RunResult) -> Any:
    table = pq.read_table(result.out_dir / "projection.parquet").to_pandas()
    return table[table["suspect"] & (table["suggested_id"] >= 0)]


def test_filed_and_suggested_ids_near_2_63_are_shown_exactly(opened: Page, big_run: RunResult) -> None:
    suspects = _suspects(big_run)
    assert len(suspects) and (suspects["id"] > 2**62).all()
    face = suspects.iloc[0]
    filed, suggested = int(face["id"]), int(face["suggested_id"])
    assert filed != suggested and str(filed)[:-3] == str(suggested)[:-3]  # they differ in the last digits only
    rows = [[cell.strip() for cell in row.split("\t")]
            for row in opened.page.locator("#fa-suspects tbody tr").all_inner_texts()]
    assert [int(face["row"]), filed, suggested] in [[int(r[0]), int(r[1]), int(r[3])] for r in rows]
    assert {int(r[1]) for r in rows} | {int(r[3]) for r in rows} <= set(range(TOP - 199, TOP + 1))
    opened.page.locator("#fa-suspects tbody tr").nth([int(r[0]) for r in rows].index(int(face["row"]))).click()
    panel = opened.page.locator("#fa-panel")
    assert panel.get_attribute("data-id") == str(filed)
    text = panel.inner_text()
    assert f"Filed under {filed} (Star {TOP - filed})" in text
    assert f"suggested identity {suggested} (Star {TOP - suggested})" in text
    assert f"Highlight identity {filed}" in text
    assert ROUNDED not in opened.page.locator("body").inner_text()
    assert opened.console == []


def test_the_search_box_finds_the_identity_of_an_exact_id(opened: Page, big_run: RunResult) -> None:
    face = _suspects(big_run).iloc[0]
    for wanted in (int(face["id"]), int(face["suggested_id"])):
        opened.page.fill("#fa-search", str(wanted))
        assert opened.js("window.faceatlas.highlighted()") == [wanted]  # a BigInt, exact in Python's int
        assert opened.page.locator("#fa-matches li").all_inner_texts()[0].startswith(
            f"{wanted} (Star {TOP - wanted}) \u2013 ")
        status = opened.page.locator("#fa-status").inner_text()
        assert status.startswith("1 identity highlighted") and f": {wanted} (Star {TOP - wanted})" in status
    for absent in (ROUNDED, str(2**63), str(TOP - 200), str(-TOP)):  # near, but no identity has that id
        opened.page.fill("#fa-search", absent)
        assert opened.js("window.faceatlas.highlighted()") == []
        assert "no identity has the id" in opened.page.locator("#fa-status").inner_text()
    assert opened.console == []


def test_sorting_by_id_and_look_alike_pairs_are_exact(opened: Page, big_run: RunResult) -> None:
    filed = lambda: [int(t) for t in opened.page.locator("#fa-suspects tbody tr td:nth-child(2)")  # noqa: E731
                     .all_inner_texts()]
    opened.page.click("#fa-suspects th:nth-child(2)")
    assert filed() == sorted(filed()) and len(set(filed())) > 1
    opened.page.click("#fa-suspects th:nth-child(2)")
    assert filed() == sorted(filed(), reverse=True)
    pairs = [line.split(",") for line in (big_run.out_dir / "lookalikes.csv").read_text().splitlines()[1:]]
    first = opened.page.locator("#fa-lookalikes tbody tr").first
    a, b = (int(first.locator("td").nth(k).inner_text()) for k in (0, 2))
    assert [str(a), str(b)] == pairs[0][:2]
    first.click()
    assert sorted(opened.js("window.faceatlas.highlighted()")) == sorted([a, b])
    assert opened.console == []


def test_negative_small_and_large_ids_sort_with_their_sign(browser: Any, big_run: RunResult,  # noqa: F811
                                                           tmp_path: Path) -> None:
    """The run's page remade with its 200 ids renumbered (in order) to ids of every sign and size; the
    database refuses negative ids, the page would still show them exactly."""
    from job.report.page import write_report
    from job.report.rundata import read_run
    from job.store.runs import open_run

    finished = open_run(big_run.out_dir)
    data = read_run(big_run.out_dir, finished.record, finished.files)
    old = data.model.identity
    chosen = [-TOP - 1, -TOP, -(2**53) - 1, -(2**53), -1000, -7, 0, 9, 10, 99, 100, 2**53, 2**53 + 1, TOP - 1, TOP]
    new = np.unique(np.concatenate([chosen, np.arange(1000, 1000 + len(old) - len(chosen))])).astype(np.int64)

    def renumber(ids: np.ndarray) -> np.ndarray:
        return np.where(ids >= 0, new[np.searchsorted(old, np.maximum(ids, 0))], -1)

    columns = dict(data.columns)
    for name in [n for n in columns if n == "id" or n.endswith("_id") or n.startswith("similar_id_")]:
        columns[name] = renumber(np.asarray(columns[name], dtype=np.int64))
    code = {int(i): int(n) for i, n in zip(old, new, strict=True)}
    data = dataclasses.replace(
        data, columns=columns, model=dataclasses.replace(data.model, identity=new),
        names={code[i]: name for i, name in (data.names or {}).items()},
        lookalikes=[(code[a], code[b], s, same) for a, b, s, same in data.lookalikes])
    page = Page(browser, write_report(tmp_path / "report.html", data, [TOP, -TOP - 1], "id"))
    try:
        assert sorted(page.js("window.faceatlas.highlighted()")) == [-TOP - 1, TOP]
        page.page.fill("#fa-search", str(-(2**53) - 1))
        assert page.js("window.faceatlas.highlighted()") == [-(2**53) - 1]
        page.page.fill("#fa-search", "")
        shown = lambda: [int(t) for t in page.page.locator("#fa-lookalikes tbody tr td:nth-child(1)")  # noqa: E731
                         .all_inner_texts()]
        page.page.click("#fa-lookalikes th:nth-child(1)")
        assert shown() == sorted(shown())
        filed = lambda: [int(t) for t in page.page.locator("#fa-suspects tbody tr td:nth-child(2)")  # noqa: E731
                         .all_inner_texts()]
        page.page.click("#fa-suspects th:nth-child(2)")
        assert filed() == sorted(filed()) and set(filed()) <= set(new.tolist())
        assert page.console == []
    finally:
        page.page.close()
