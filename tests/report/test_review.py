"""The atlas page's review of ``corrections.csv``: its rows read as untrusted text (a cap, ragged rows, huge
cells, bytes that are not UTF-8), listed with Accept / Reject, the choices kept in localStorage, and the
accepted rows downloaded byte for byte as the file holds them, in a real headless Chromium (the browser tier
of tests/report/test_browser.py, whose fixtures it shares).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from job.pipeline import RunResult
from job.report.page import report_html
from job.report.rebuild import report_again
from job.report.rundata import MAX_CELL_CHARS, read_corrections, run_data
from job.store.reports import CORRECTIONS_FILE
from job.store.runs import open_run
from tests.report.test_browser import HOSTILE, Page, atlas_run, browser  # noqa: F401 - fixtures, shared
from tests.report.test_report import page_meta
from tests.store.test_runrecord import old_run  # noqa: F401 - the 0.6 run's folder, a fixture

slow = pytest.mark.slow  # the browser tier: a real Chromium (pytest -m 'not slow' leaves it out)

HEADER = ["what", "face", "from", "to", "score", "reason", "names", "action"]
INJECTION = "'=SUM(A1:A9)*1"  # a formula as faceatlas writes it, behind the CSV-injection guard's quote
TRICKY = 'Bob, Jr. \u2192 Carl "C"'  # a comma and quotes: quoted, its quotes doubled
TWO_LINES = "Ann\nLee \u2192 Bo"  # a line break inside a cell: quoted
EVIL = "<img src=x onerror=window.__pwned=3>"


def csv_line(cells: list[str]) -> bytes:
    """One row as faceatlas writes its CSVs (Python's csv module, ``\\n`` line ends, UTF-8)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(cells)
    return buffer.getvalue().encode("utf-8")


def with_corrections(folder: Path, data: bytes) -> Path:
    """``folder`` (a copy of a run) with ``data`` as its corrections.csv, listed and hashed in run.json as a run
    lists its files, and its page made again (``faceatlas report``)."""
    (folder / CORRECTIONS_FILE).write_bytes(data)
    record = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    role = next((r for r, name in record["files"].items() if name == CORRECTIONS_FILE), "corrections")
    record["files"][role] = CORRECTIONS_FILE
    record["file_sha256"][CORRECTIONS_FILE] = hashlib.sha256(data).hexdigest()
    (folder / "run.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    return report_again(folder)


def without_corrections(folder: Path) -> Path:
    """``folder`` as a run made before corrections.csv existed: the file gone from it and from run.json."""
    record = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    record["files"] = {role: name for role, name in record["files"].items() if name != CORRECTIONS_FILE}
    record["file_sha256"].pop(CORRECTIONS_FILE, None)
    (folder / CORRECTIONS_FILE).unlink(missing_ok=True)
    (folder / "run.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    return report_again(folder)


@dataclasses.dataclass(frozen=True)
class Reviewed:
    """The run with a hand-written corrections.csv: its page, each row's bytes in the file, and what they name."""

    page: Path
    header: bytes
    rows: list[bytes]
    moved: dict[str, int]  # the move row's face row, filed id and target id
    merged: tuple[int, int]
    accepted: list[bytes]  # each row as the download writes it once accepted


@pytest.fixture(scope="module")
def reviewed(atlas_run: RunResult, tmp_path_factory: pytest.TempPathFactory) -> Reviewed:  # noqa: F811
    """A copy of the named run (three names hostile) with corrections for its own faces and identities: a move, a
    remove, a merge of its most alike pair (names with a comma and quotes), a review whose names cell starts with
    ``'=``, one with a hostile names cell, one with a line break in a cell, and an assign of an unassigned face."""
    folder = tmp_path_factory.mktemp("review") / "run"
    shutil.copytree(atlas_run.out_dir, folder)
    table = pq.read_table(folder / "projection.parquet").to_pandas()
    suspects = table[table["suspect"]].sort_values("outlier_score", ascending=False)
    first, second = suspects.iloc[0], suspects.iloc[1]
    plain = table[~table["suspect"]]
    pair = (folder / "lookalikes.csv").read_text(encoding="utf-8").splitlines()[1].split(",")[:2]
    a, b = int(pair[0]), int(pair[1])
    rows = [
        ["move", str(int(first["row"])), str(int(first["id"])), str(int(first["suggested_id"])),
         f"{first['outlier_score']:.4f}", "evidence", "Star \u2192 Other", "move"],
        ["remove", str(int(plain.iloc[0]["row"])), str(int(plain.iloc[0]["id"])), "", "1.0000", "duplicate", "Ada",
         "remove"],
        ["review", "", str(a), str(b), "0.9123", "possible_same_person", TRICKY, "merge"],
        ["review", str(int(plain.iloc[1]["row"])), str(int(plain.iloc[1]["id"])), "", "0.4100", "low_quality",
         INJECTION, "remove"],
        ["review", str(int(second["row"])), str(int(second["id"])), str(int(second["suggested_id"])), "2.0000",
         "no_clear_target", EVIL, "move"],
        ["move", str(int(plain.iloc[2]["row"])), str(int(plain.iloc[2]["id"])), "5", "1.5000", "evidence", TWO_LINES,
         "move"],
        ["assign", "999999", "", "4", "0.8000", "unassigned", "\u2192 Star 4", "assign"],
    ]
    header, lines = csv_line(HEADER), [csv_line(row) for row in rows]
    # an accepted review is downloaded as the action it proposes
    accepted = [csv_line([row[-1], *row[1:]]) for row in rows]
    page = with_corrections(folder, header + b"".join(lines))
    moved = {"row": int(first["row"]), "from": int(first["id"]), "to": int(first["suggested_id"])}
    return Reviewed(page, header, lines, moved, (a, b), accepted)


@pytest.fixture
def opened(browser: Any, reviewed: Reviewed) -> Iterator[Page]:  # noqa: F811
    page = Page(browser, reviewed.page)
    yield page
    page.page.close()


def pressed(page: Page) -> dict[int, str]:
    """Each listed row's choice as the buttons show it: row position -> "accept" / "reject"."""
    found = page.js("""() => Array.from(document.querySelectorAll('#fa-review tbody tr')).map(tr => [
        Number(tr.dataset.index),
        tr.querySelector('button.accept').getAttribute('aria-pressed') === 'true' ? 'accept' :
        tr.querySelector('button.reject').getAttribute('aria-pressed') === 'true' ? 'reject' : ''])""")
    return {r: choice for r, choice in found if choice}


def row(page: Page, index: int) -> Any:
    return page.page.locator(f'#fa-review tbody tr[data-index="{index}"]')


@slow
def test_accepted_rows_download_byte_for_byte_and_choices_survive_a_reload(opened: Page, reviewed: Reviewed) -> None:
    assert opened.page.locator("#review h2").inner_text() == "Proposed corrections (7)"
    assert opened.page.locator('nav a[href="#review"]').inner_text() == "Review"
    assert "kept in this browser's localStorage for this run only; Clear choices forgets them" in \
        opened.page.locator("#review").inner_text()
    assert opened.page.locator("#fa-review tbody tr").count() == 7
    assert opened.page.locator("#fa-review-download").get_attribute("href") is None  # nothing accepted yet
    for index in (2, 3, 5):
        row(opened, index).locator("button.accept").click()
    row(opened, 0).locator("button.reject").click()
    assert pressed(opened) == {0: "reject", 2: "accept", 3: "accept", 5: "accept"}
    assert opened.page.locator("#fa-review-status").inner_text() == "3 accepted, 1 rejected of 7"
    opened.page.reload()
    opened.page.wait_for_function("document.documentElement.dataset.faceatlas === 'ready'")
    assert pressed(opened) == {0: "reject", 2: "accept", 3: "accept", 5: "accept"}
    key = opened.js("window.faceatlas.meta.review.storage_key")
    assert re.fullmatch(r"faceatlas-review:[0-9a-f]{64}:[0-9a-f]{64}", key)
    assert json.loads(opened.js("key => localStorage.getItem(key)", key)) == {
        "0": "reject", "2": "accept", "3": "accept", "5": "accept"}
    link = opened.page.locator("#fa-review-download")
    assert link.get_attribute("href").startswith("blob:") and link.get_attribute("download") == "corrections.csv"
    with opened.page.expect_download() as caught:
        link.click()
    download = caught.value
    assert download.suggested_filename == "corrections.csv"
    got = Path(download.path()).read_bytes()
    assert got == reviewed.header + reviewed.accepted[2] + reviewed.accepted[3] + reviewed.rows[5]
    assert reviewed.accepted[2].startswith(b"merge,") and reviewed.accepted[3].startswith(b"remove,")
    assert b'"Bob, Jr. \xe2\x86\x92 Carl ""C"""' in got and b",'=SUM(A1:A9)*1,remove\n" in got  # as the file has them
    assert opened.console == [] and opened.dialogs == []
    assert [url for url in opened.requests if not url.startswith("blob:")] == [opened.url, opened.url]  # reloaded
    assert opened.js("window.__pwned") is None


@slow
def test_accept_all_shown_and_clear_choices(opened: Page) -> None:
    opened.page.click("#fa-review-accept-all")
    assert pressed(opened) == dict.fromkeys(range(7), "accept")
    row(opened, 1).locator("button.accept").click()  # pressed again: no choice
    assert 1 not in pressed(opened)
    opened.page.click("#fa-review-clear")
    assert pressed(opened) == {}
    assert opened.js("key => localStorage.getItem(key)", opened.js("window.faceatlas.meta.review.storage_key")) is None
    assert opened.page.locator("#fa-review-download").get_attribute("href") is None
    assert opened.console == []


@slow
def test_clicking_a_row_shows_its_face_or_both_identities_of_a_merge(opened: Page, reviewed: Reviewed) -> None:
    row(opened, 0).locator("td").first.click()
    panel = opened.page.locator("#fa-panel")
    assert panel.get_attribute("data-row") == str(reviewed.moved["row"])
    assert panel.get_attribute("data-id") == str(reviewed.moved["from"])
    assert opened.js("window.faceatlas.highlighted()") == [reviewed.moved["to"]]
    assert pressed(opened) == {}  # a click on the row chooses nothing
    row(opened, 2).locator("td").nth(4).click()
    assert sorted(opened.js("window.faceatlas.highlighted()")) == sorted(reviewed.merged)
    row(opened, 6).locator("td").first.click()  # an unassigned face: not on the map
    assert "filed under no identity" in opened.page.locator("#fa-review-where").inner_text()
    assert opened.js("window.faceatlas.highlighted()") == [4]
    filed = reviewed.moved["from"]
    assert row(opened, 0).locator("td").all_inner_texts()[:3] == [
        "move", str(reviewed.moved["row"]), f"{filed} ({HOSTILE.get(filed, f'Star {filed}')})"]
    assert opened.console == []


@slow
def test_a_hostile_names_cell_stays_text(opened: Page) -> None:
    assert row(opened, 4).locator("td.name-col").inner_text() == EVIL
    assert row(opened, 3).locator("td.name-col").inner_text() == INJECTION
    assert opened.js("document.querySelectorAll('#review img, img[src=x], svg').length") == 0
    assert opened.js("window.__pwned") is None and opened.dialogs == [] and opened.console == []


@slow
def test_choices_stay_in_memory_where_the_browser_refuses_local_storage(browser: Any,  # noqa: F811
                                                                        reviewed: Reviewed) -> None:
    class Refusing:
        """The browser, its pages' localStorage throwing as under some file:// and privacy settings."""

        def new_page(self, **options: Any) -> Any:
            page = browser.new_page(**options)
            page.add_init_script("Object.defineProperty(window, 'localStorage', {get() { "
                                 "throw new DOMException('refused', 'SecurityError'); }});")
            return page

    page = Page(Refusing(), reviewed.page)
    try:
        row(page, 1).locator("button.accept").click()
        assert pressed(page) == {1: "accept"}
        assert "keeps no localStorage here" in page.page.locator("#fa-review-status").inner_text()
        with page.page.expect_download() as caught:
            page.page.click("#fa-review-download")
        assert Path(caught.value.path()).read_bytes() == reviewed.header + reviewed.rows[1]
        assert page.console == []
    finally:
        page.page.close()


@slow
def test_a_run_without_corrections_has_no_review_and_no_errors(browser: Any, old_run: Path,  # noqa: F811
                                                               atlas_run: RunResult,  # noqa: F811
                                                               tmp_path: Path) -> None:
    copy = tmp_path / "new"
    shutil.copytree(atlas_run.out_dir, copy)
    for page_path in (report_again(old_run), without_corrections(copy)):
        html = page_path.read_text(encoding="utf-8")
        assert '<section id="review">' not in html and 'href="#review"' not in html
        page = Page(browser, page_path)
        try:
            assert page.js("window.faceatlas.meta.review") is None
            assert page.page.locator("#review").count() == 0
            assert page.console == [] and page.requests == [page.url]
        finally:
            page.page.close()


@slow
def test_a_database_runs_keys_are_shown_and_its_own_rows_and_ids_locate_the_face(
        browser: Any, atlas_run: RunResult, tmp_path: Path) -> None:  # noqa: F811
    """corrections.csv of a database: the source's keys in face/from/to, faceatlas's row and ids after them."""
    folder = tmp_path / "run"
    shutil.copytree(atlas_run.out_dir, folder)
    table = pq.read_table(folder / "projection.parquet").to_pandas()
    face = table[table["suspect"]].iloc[0]
    filed, target = int(face["id"]), int(face["suggested_id"])
    rows = [["move", "'-4f1c-face", "9b2e-person", "77aa-person", "3.2000", "same_photo", "A \u2192 B", "move",
             str(int(face["row"])), str(filed), str(target)],
            ["assign", "0c0c-face", "", "77aa-person", "0.7000", "unassigned", "\u2192 B", "assign", "12", "",
             str(target)]]
    header = csv_line([*HEADER, "row", "from_id", "to_id"])
    lines = [csv_line(r) for r in rows]
    page = Page(browser, with_corrections(folder, header + b"".join(lines)))
    try:
        first = row(page, 0)
        assert first.locator("td").nth(1).inner_text() == str(int(face["row"]))
        assert first.locator("td").nth(1).get_attribute("title") == "'-4f1c-face"
        assert first.locator("td").nth(2).inner_text() == f"{filed} ({HOSTILE.get(filed, f'Star {filed}')})"
        assert first.locator("td").nth(3).get_attribute("title") == "77aa-person"
        first.locator("td").first.click()
        assert page.page.locator("#fa-panel").get_attribute("data-row") == str(int(face["row"]))
        row(page, 1).locator("td").first.click()
        assert "filed under no identity" in page.page.locator("#fa-review-where").inner_text()
        row(page, 0).locator("button.accept").click()
        row(page, 1).locator("button.accept").click()
        with page.page.expect_download() as caught:
            page.page.click("#fa-review-download")
        assert Path(caught.value.path()).read_bytes() == header + lines[0] + lines[1]
        assert page.console == []
    finally:
        page.page.close()


# the data: corrections.csv read as untrusted text (no browser)

def write(path: Path, *parts: bytes) -> Path:
    path.write_bytes(b"".join(parts))
    return path


def test_rows_past_the_cap_are_counted_and_unreadable_rows_left_out(tmp_path: Path) -> None:
    good = [["move", str(r), "1", "2", "1.0000", "evidence", f"A{r} \u2192 B", "move"] for r in range(6)]
    path = write(tmp_path / CORRECTIONS_FILE, csv_line(HEADER), csv_line(good[0]),
                 b"move,1,2\n",  # ragged: too few cells
                 csv_line([*good[1], "extra"]),  # ragged: too many
                 csv_line(good[2]),
                 b"review,3,4,,0.1,low_quality,\xff\xfe not UTF-8\n",
                 csv_line(["review", "9", "1", "", "0.5", "low_quality", "x" * (MAX_CELL_CHARS + 1)]),
                 b"\n",  # a blank line is no row
                 *(csv_line(r) for r in good[3:]))
    read = read_corrections(path, limit=4)
    assert read.header == HEADER and read.problem is None
    assert read.rows == [good[0], good[2], good[3], good[4]]  # the first four readable rows, as written
    assert read.skipped == 4 and read.total == 9  # four left out among those read, one more past the cap
    everything = read_corrections(path)
    assert everything.rows == [good[0], good[2], *good[3:]] and everything.skipped == 4 and everything.total == 9


@pytest.mark.parametrize(("data", "problem"), [
    (b"", "it is empty"),
    (b"a,b,c\n1,2,3\n", "its header has no column what, face, from, to, score, reason (it reads: a, b, c)"),
    (b"what,face,\xff,to,score,reason,names\n", "its header is not UTF-8 text"),
    (b"\x00\x01\x02" * 1000, "its header has no column"),
])
def test_a_file_that_cannot_be_listed_says_why(tmp_path: Path, data: bytes, problem: str) -> None:
    read = read_corrections(write(tmp_path / CORRECTIONS_FILE, data))
    assert read.problem is not None and read.problem.startswith(problem) and "\n" not in read.problem
    assert read.rows == [] and read.header == []


def test_a_huge_line_and_broken_quoting_cost_bounded_memory_and_no_error(tmp_path: Path) -> None:
    good = ["move", "1", "2", "3", "1.0000", "evidence", "A \u2192 B", "move"]
    path = write(tmp_path / CORRECTIONS_FILE, csv_line(HEADER), b"x" * (3 << 20), b"\n",  # one 3 MB line
                 csv_line(good), b'review,2,"unclosed,1,,0.1,low_quality,a\n')
    read = read_corrections(path)
    assert read.problem is None and read.rows == [good] and read.skipped >= 2


def test_the_page_lists_corrections_in_its_meta_and_says_what_it_left_out(smoke_run: RunResult,
                                                                          tmp_path: Path) -> None:
    rows = [["review", "", "1", "2", "0.9", "possible_same_person", "<b>x</b> \u2192 y", "merge"],
            ["remove", "3", "1", "", "1.0", "duplicate", "", "remove"]]
    path = write(tmp_path / CORRECTIONS_FILE, csv_line([*HEADER, "row", "from_id", "to_id"]),
                 *(csv_line([*r, "", "", ""]) for r in rows), b"ragged\n")
    run = dataclasses.replace(run_data(open_run(smoke_run.out_dir)), corrections=read_corrections(path, limit=1))
    html = report_html(run, [])
    review = page_meta(html)["review"]
    assert review["rows"] == [rows[0] + ["", "", ""]] and review["total"] == 3 and review["skipped"] == 0
    assert review["columns"] == {"what": 0, "face": 1, "from": 2, "to": 3, "score": 4, "reason": 5, "names": 6,
                                 "action": 7, "row": 8, "from_id": 9, "to_id": 10}
    sha = json.loads((smoke_run.out_dir / "run.json").read_text())["input"]["sha256"]
    assert review["storage_key"] == f"faceatlas-review:{sha}:{review['digest']}"
    assert '<section id="review"><h2>Proposed corrections (3)</h2>' in html
    assert "The page lists the first 1 of the 3 proposed corrections" in html
    assert "<b>x</b>" not in html  # in the JSON as \u003c, set by the script as text
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1)
    assert "img-src data: blob:;" in policy and "connect-src 'none'" in policy
    broken = dataclasses.replace(run, corrections=read_corrections(write(tmp_path / "bad.csv", b"<i>a</i>,b\n")))
    html = report_html(broken, [])
    assert "could not be read: its header has no column" in html and "&lt;i&gt;a&lt;/i&gt;, b" in html
    assert 'id="fa-review"' not in html  # no table, no buttons: nothing to choose
