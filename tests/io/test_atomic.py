"""The two shared helpers of issue 26: :func:`job.atomic.atomic_write` (every file faceatlas writes goes through
it: readers never see half a file, a failure or an interrupt leaves no temporary file and the old file as it
was) and :func:`job.errors.one_line` (every message quoted into an error is one line), with the one text
sanitiser :func:`job.io.files.display_text`."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

from job.atomic import atomic_write, temporary_path
from job.errors import one_line
from job.io.demo import DemoSpec, write_demo
from job.io.files import display_text
from job.report.content import clean_text
from job.store.outputs import foreign_files, write_json, write_projection, write_text
from job.store.reports import _write_csv


class _Boom(Exception):
    pass


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _write_then_fail(target: Path, error: type[BaseException], data: bytes) -> None:
    with atomic_write(target) as tmp:
        tmp.write_bytes(data)
        raise error()


def test_the_file_appears_complete_and_no_temporary_is_left(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    with atomic_write(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".a.bin.") and tmp.name.endswith(".tmp")
        tmp.write_bytes(b"new")
        assert not target.exists()  # nothing under the name until the block ends
    assert target.read_bytes() == b"new"
    assert _names(tmp_path) == ["a.bin"]


@pytest.mark.parametrize("error", [_Boom, OSError, KeyboardInterrupt, SystemExit, GeneratorExit])
def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path: Path, error: type[BaseException]) -> None:
    target = tmp_path / "run.json"
    target.write_text("old")
    with pytest.raises(error):
        _write_then_fail(target, error, b"half of the ne")
    assert target.read_text() == "old"
    assert _names(tmp_path) == ["run.json"]


@pytest.mark.parametrize("error", [_Boom, KeyboardInterrupt])
def test_a_failing_first_write_leaves_nothing(tmp_path: Path, error: type[BaseException]) -> None:
    with pytest.raises(error):
        _write_then_fail(tmp_path / "a.png", error, b"\x89PNG")
    assert _names(tmp_path) == []


def test_a_failing_install_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "demo.npy"
    target.write_bytes(b"someone's database")

    def refuse(tmp: Path, path: Path) -> None:
        os.link(tmp, path)  # what demo-db does without --force: FileExistsError

    with pytest.raises(FileExistsError), atomic_write(target, install=refuse) as tmp:
        tmp.write_bytes(b"demo")
    assert target.read_bytes() == b"someone's database"
    assert _names(tmp_path) == ["demo.npy"]


def test_an_install_that_links_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "demo.npy"
    with atomic_write(target, install=os.link) as tmp:
        tmp.write_bytes(b"demo")
    assert target.read_bytes() == b"demo"
    assert _names(tmp_path) == ["demo.npy"]


def test_a_reader_sees_the_old_file_until_the_new_one_is_whole(tmp_path: Path) -> None:
    target = tmp_path / "projection.parquet"
    old, new = b"A" * 1_000_000, b"B" * 1_000_000
    target.write_bytes(old)
    half_written, read = threading.Event(), threading.Event()
    seen: list[bytes] = []

    def reader() -> None:
        half_written.wait(10)
        seen.append(target.read_bytes())
        read.set()

    thread = threading.Thread(target=reader)
    thread.start()
    with atomic_write(target) as tmp, tmp.open("wb") as handle:
        handle.write(new[: len(new) // 2])
        handle.flush()
        half_written.set()
        assert read.wait(10)
        handle.write(new[len(new) // 2:])
    thread.join(10)
    assert seen == [old]
    assert target.read_bytes() == new


def test_concurrent_readers_never_see_a_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "run.json"
    versions = [bytes([65 + i]) * 200_000 for i in range(6)]
    target.write_bytes(versions[0])
    done, torn = threading.Event(), []

    def reader() -> None:
        while not done.is_set():
            data = target.read_bytes()
            if data not in versions:
                torn.append(len(data))

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(5):
            for version in versions[1:]:
                with atomic_write(target) as tmp, tmp.open("wb") as handle:
                    for start in range(0, len(version), 10_000):  # in pieces, so a reader could catch half
                        handle.write(version[start:start + 10_000])
                        handle.flush()
    finally:
        done.set()
        for thread in threads:
            thread.join(10)
    assert torn == []
    assert _names(tmp_path) == ["run.json"]


def test_temporary_names_are_hidden_unique_and_recognised_as_ours(tmp_path: Path) -> None:
    names = {temporary_path(tmp_path / "run.json").name for _ in range(100)}
    assert len(names) == 100 and all(name.startswith(".run.json.") for name in names)
    barrier = threading.Barrier(8)
    made: list[str] = []

    def make() -> None:
        barrier.wait(10)
        made.extend(temporary_path(tmp_path / "run.json").name for _ in range(200))

    threads = [threading.Thread(target=make) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(set(made)) == len(made) == 1600
    # a run killed mid-write leaves one: the next run must take it for its own, not for a user's file
    folder = tmp_path / "out"
    folder.mkdir()
    for name in ("run.json", "projection.parquet", "map_identity.png", "suspects.csv"):
        temporary_path(folder / name).write_bytes(b"")
    assert foreign_files(folder) == []


def test_the_writers_leave_nothing_when_they_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "run.json").mkdir()  # os.replace of a file onto a folder fails
    with pytest.raises(IsADirectoryError):
        write_json(tmp_path / "run.json", {"a": 1})
    with pytest.raises(IsADirectoryError):
        write_text(tmp_path / "run.json", "x")
    with pytest.raises(IsADirectoryError):
        write_projection(tmp_path / "run.json", np.arange(3), np.zeros((3, 2)))
    with pytest.raises(IsADirectoryError):
        _write_csv(tmp_path / "run.json", ["a"], [[1]])
    existing = tmp_path / "demo.npy"
    existing.write_bytes(b"mine")
    with pytest.raises(FileExistsError):
        write_demo(existing, DemoSpec(n_identities=20, faces_per_identity=2, seed=0))
    assert existing.read_bytes() == b"mine"

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    import pyarrow.parquet as pq

    monkeypatch.setattr(pq, "write_table", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_projection(tmp_path / "projection.parquet", np.arange(3), np.zeros((3, 2)))
    assert _names(tmp_path) == ["demo.npy", "run.json"]


@pytest.mark.parametrize(("text", "limit", "ellipsis", "expected"), [
    ("plain", None, "", "plain"),
    ("  two\nlines\r\nand\ta  tab \n", None, "", "two lines and a tab"),
    ("a\x0b\x0cb\u2028c\u00a0d", None, "", "a b c d"),  # every kind of whitespace Python knows
    ("x" * 10, 10, "", "x" * 10),  # at the limit: not cut
    ("x" * 11, 10, "", "x" * 10),
    ("word\n" * 5, 12, "", "word word wo"),  # squashed first, then cut
    ("x" * 11, 10, "...", "x" * 7 + "..."),
    ("x" * 10, 10, "...", "x" * 10),
    ("abcdef", 4, "...", "a..."),
    ("abcdef", 3, "...", "abc"),  # no room for the marker and any text: cut plainly
    ("abcdef", 0, "...", ""),
    ("\n\t ", 5, "...", ""),
])
def test_one_line(text: str, limit: int | None, ellipsis: str, expected: str) -> None:
    assert one_line(text, limit, ellipsis=ellipsis) == expected


def test_one_line_takes_an_exception_or_any_object() -> None:
    assert one_line(ValueError("bad\n  value\there")) == "bad value here"
    assert one_line(OSError(2, "No such\nfile")) == "[Errno 2] No such file"
    assert one_line(12) == "12"
    assert one_line(ValueError()) == ""


def test_display_text_is_the_one_sanitiser() -> None:
    text = "a\tb\nc\x00d\udcff\ud800e"
    assert display_text(text) == "a b c d\ufffd\ufffde"  # a figure's title, a legend, a terminal line
    assert display_text(text, flatten=False) == "a\tb\nc\x00d\ufffd\ufffde"  # a page escapes the rest itself
    assert clean_text(text) == display_text(text, 300, flatten=False)
    assert display_text("x" * 10, 10) == "x" * 10
    assert display_text("x" * 11, 10) == "x" * 9 + "\u2026"
    assert clean_text("\udcff" * 400, 5) == "\ufffd" * 4 + "\u2026"
    assert display_text("caf\u00e9 \U0001f600") == "caf\u00e9 \U0001f600"
