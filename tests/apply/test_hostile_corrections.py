"""Corrections files that must not apply: each refused in one line naming the file, the lines and the fix,
before anything is written; and the edits that do apply, exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from job.apply.applying import after_moves, edits_of
from job.apply.requests import RunFaces, read_requests
from job.errors import InputError

HEADER = "what,face,from,to,score,reason,names\n"
# a run of 12 faces (input rows 0..12, row 5 dropped by --drop-invalid) under identities 1..4
FACES = RunFaces(np.array([0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12]), np.array([1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]))


def _write(tmp_path: Path, text: str, name: str = "corrections.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _refusal(path: Path) -> str:
    with pytest.raises(InputError) as caught:
        read_requests(path, FACES)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    return message


@pytest.mark.parametrize(("rows", "expected"), [
    ("move,99,1,2,,,\n", "line 2: face 99 is not a face of this run"),
    ("move,5,2,3,,,\n", "line 2: face 5 is not a face of this run"),  # dropped by --drop-invalid
    ("move,0,1,9,,,\n", "line 2: move to '9', which is not an identity of this run"),
    ("move,0,2,3,,,\n", "line 2: face 0 is filed under 1 in this run, not '2'"),
    ("move,0,1,1,,,\n", "line 2: face 0 is already filed under 1"),
    ("move,0,1,2,,,\nremove,0,1,,,,\n", "line 3: face 0 is already named on line 2"),
    ("move,0,1,2,,,\nmove,0,1,2,,,\n", "line 3: face 0 is already named on line 2"),  # a duplicate row
    ("merge,,1,2,,,\nmerge,,1,3,,,\n", "line 3: identity 1 is already merged on line 2"),
    ("merge,,1,2,,,\nmerge,,2,1,,,\n", "undoes an earlier merge"),
    ("merge,,1,2,,,\nmerge,,2,3,,,\nmerge,,3,1,,,\n", "line 4: merging 3 into 1 undoes an earlier merge"),
    ("merge,,1,1,,,\n", "merges 1 into itself"),
    ("merge,3,1,2,,,\n", "a merge names identities, not a face"),
    ("assign,0,,2,,,\n", "a file database has none"),
    ("rename,0,1,2,,,\n", "what 'rename' is not one of"),
    ('move,=HYPERLINK("http://x"),1,2,,,\n', "is not a row number"),
    ("move,'0,1,2,,,\n", "face \"'0\" is not a row number"),
    ("move,0,1,=2+1,,,\n", "move to '=2+1'"),
    ("move,+1,1,2,,,\n", "face '+1' is not a row number"),
    ("move,-1,1,2,,,\n", "face '-1' is not a row number"),
    ("move,1e0,1,2,,,\n", "face '1e0' is not a row number"),
    ("move,0,1,2\n", ""),  # short rows are fine: the cells past 'to' are only for people
])
def test_rows_that_cannot_apply_are_refused_with_their_line(tmp_path: Path, rows: str, expected: str) -> None:
    path = _write(tmp_path, HEADER + rows)
    if not expected:
        assert len(read_requests(path, FACES).changes) == 1
        return
    message = _refusal(path)
    assert expected in message, message
    assert "nothing was written" in message


def test_every_problem_is_counted_and_the_first_few_named(tmp_path: Path) -> None:
    path = _write(tmp_path, HEADER + "".join(f"move,{row},9,2,,,\n" for row in (0, 1, 2, 3, 4, 6, 7, 8)))
    message = _refusal(path)
    assert message.count("line ") == 5 and "8 rows cannot apply" in message and "(and 3 more)" in message


@pytest.mark.parametrize(("content", "expected"), [
    (b"\xff\xfe" + "what,face\n".encode("utf-16-le"), "not UTF-8"),
    (b"what,face,from,to\nmove,0,1,\x002\n", "line 2: move to ' 2'"),  # a NUL byte: shown, refused
    (b"face,from,to\n0,1,2\n", "no column 'what'"),
    (b"", "no column 'what'"),
    (b'what,face,from,to\nmove,"0,1,2\n', "not readable as CSV"),
    (b"what,face,from,to\nmove,0,1," + b"2" * 200_000 + b"\n", "not readable as CSV"),
])
def test_unreadable_files_are_refused(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "corrections.csv"
    path.write_bytes(content)
    assert expected in _refusal(path)


def test_a_million_rows_are_refused_without_reading_them_all(tmp_path: Path) -> None:
    path = tmp_path / "corrections.csv"
    with path.open("w", encoding="utf-8") as handle:
        handle.write(HEADER)
        handle.writelines(f"review,{k},1,,,,\n" for k in range(1_000_000))
    message = _refusal(path)
    assert "more than 16 rows" in message and "12 faces and 4 identities" in message


@pytest.mark.slow
def test_a_million_rows_for_a_million_faces_apply(tmp_path: Path) -> None:
    n = 1_000_000
    faces = RunFaces(np.arange(n), np.arange(n) // 4)
    path = tmp_path / "corrections.csv"
    with path.open("w", encoding="utf-8") as handle:
        handle.write(HEADER)
        handle.writelines(f"move,{row},{row // 4},{(row // 4 + 1) % (n // 4)},1.0,evidence,\n" for row in range(n))
    requested = read_requests(path, faces)
    edits = edits_of(requested.changes, after_moves(requested.changes, faces.ids))
    assert np.array_equal(edits.ids, (np.arange(n) // 4 + 1) % (n // 4)) and edits.keep.all()


def test_a_spreadsheet_saved_file_applies(tmp_path: Path) -> None:
    """A BOM, CRLF line ends, columns in another order, extra columns, blank lines, names cells that look like
    formulas (written with a leading quote): all fine."""
    text = ("\ufeffreason,names,what,face,from,to,my notes\r\n"
            "evidence,'=cmd|' /C calc'!A0,move,0,1,2,checked\r\n"
            "\r\n"
            "duplicate,,remove,3,2,,\r\n"
            "possible_same_person,Ann \u2192 Anne,merge,,3,4,\r\n"
            "possible_same_person,,merge,,4,1,chain\r\n"
            "low_quality,,review,6,2,,\r\n")
    path = tmp_path / "corrections.csv"
    path.write_bytes(text.encode("utf-8"))
    requested = read_requests(path, FACES)
    assert [(c.line, c.what) for c in requested.changes] == [(2, "move"), (4, "remove"), (5, "merge"), (6, "merge")]
    assert requested.reviews == 1
    ids = np.array([1, 1, 1, 2, 2, 9, 2, 3, 3, 3, 4, 4, 4])  # every input row, row 5 as the file holds it
    edits = edits_of(requested.changes, after_moves(requested.changes, ids))
    # face 0 moved to 2; face 3 removed; 3 merged into 4, then 4 into 1: 3 and 4 end at 1
    assert edits.ids.tolist() == [2, 1, 1, 2, 2, 9, 2, 1, 1, 1, 1, 1, 1]
    assert edits.keep.tolist() == [True] * 3 + [False] + [True] * 9


def test_ids_of_any_int64_size_apply_and_unicode_digits_do_not(tmp_path: Path) -> None:
    big = 2**63 - 1
    faces = RunFaces.of(np.array([2, 0, 1]), np.array([5, big, big]))  # rows in any order
    path = _write(tmp_path, HEADER + f"move,0,{big},5,,,\nreview,,{big},5,,,\n")
    requested = read_requests(path, faces)
    assert [(c.face, c.source, c.target) for c in requested.changes] == [(0, big, 5)] and requested.reviews == 1
    for rows in ("move,\uff10,1,2,,,\n", f"move,0,{big + 1},5,,,\n", "review,,77,5,,,\n", f"move,{2**64},1,2,,,\n"):
        with pytest.raises(InputError):
            read_requests(_write(tmp_path, HEADER + rows), faces)
