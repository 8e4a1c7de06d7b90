"""Reading the small files faceatlas trusts nothing about: configs, names, run records, planted truth.

Every such read goes through :func:`read_bytes`, which opens without blocking (a named pipe cannot hang the
job), refuses anything but a regular file (a pipe, a socket, ``/dev/zero``, a folder), refuses a file larger
than its cap before reading it, and reads at most that many bytes even if the file grows meanwhile. Text is
strict UTF-8; JSON and TOML are parsed with every way a parser can fail (bad syntax, nesting deep enough to
exhaust the stack, integers beyond Python's int-to-str limit) turned into the caller's one-line error.
"""

from __future__ import annotations

import json
import os
import re
import stat
import tomllib
from pathlib import Path
from typing import Any

from job.errors import FaceatlasError, InputError, one_line
from job.io.memory import format_size, require

SMALL_FILE = 16 << 20  # a config, a truth file, a run record: far below this
_PARSE_ERRORS = (ValueError, RecursionError, MemoryError, OverflowError)  # JSONDecodeError is a ValueError
_SURROGATE = re.compile("[\ud800-\udfff]")


def open_regular(path: Path, what: str, fix: str, error: type[FaceatlasError] = InputError) -> int:
    """A read-only descriptor of ``path``, refused unless it is a regular file (symlinks are followed).

    Opened with ``O_NONBLOCK`` so a named pipe returns at once instead of waiting for a writer, then checked
    with ``fstat`` on the descriptor itself (no window for the path to be swapped between check and read).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
    except IsADirectoryError:
        raise error(f"{path}: is a folder, expected {what}; {fix}") from None
    except OSError as exc:
        raise error(f"{path}: cannot read {what} ({_reason(exc)}); {fix}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a pipe, socket or device)"
        raise error(f"{path}: {kind}, expected {what}; {fix}")
    return fd


def read_bytes(path: Path, what: str, fix: str, max_bytes: int = SMALL_FILE, *,
               error: type[FaceatlasError] = InputError, memory_factor: int = 0) -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` (see :func:`open_regular`).

    ``memory_factor``: what is built from the file needs this many times its size in memory; checked with
    :func:`job.io.memory.require` before the file is read.
    """
    fd = open_regular(path, what, fix, error)
    try:
        size = os.fstat(fd).st_size
        if size > max_bytes:
            raise error(f"{path}: {format_size(size)}, more than the {format_size(max_bytes)} {what} may have; "
                        f"{fix}")
        if memory_factor:
            require(size * memory_factor, None, f"{path}: reading {what}", "shorten the file")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            content = handle.read(max_bytes + 1)
    except OSError as exc:
        raise error(f"{path}: cannot read {what} ({_reason(exc)}); {fix}") from None
    finally:
        os.close(fd)
    if len(content) > max_bytes:  # grew while it was read
        raise error(f"{path}: grew beyond {format_size(max_bytes)} while it was read; {fix}")
    return content


def read_text(path: Path, what: str, fix: str, max_bytes: int = SMALL_FILE, *,
              error: type[FaceatlasError] = InputError, memory_factor: int = 0) -> str:
    """:func:`read_bytes` decoded as strict UTF-8 (a byte-order mark is dropped)."""
    content = read_bytes(path, what, fix, max_bytes, error=error, memory_factor=memory_factor)
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: {what} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


def parse_json(text: str, where: str, fix: str, error: type[FaceatlasError] = InputError) -> Any:
    """``json.loads`` with its failures (syntax, nesting, huge integers) as one ``error`` line."""
    try:
        return json.loads(text)
    except _PARSE_ERRORS as exc:
        raise error(f"{where}: not valid JSON ({describe_parse_error(exc)}); {fix}") from None


def parse_toml(text: str, where: str, fix: str, error: type[FaceatlasError] = InputError) -> dict[str, Any]:
    """``tomllib.loads`` with its failures (syntax, nesting, huge integers) as one ``error`` line."""
    try:
        return tomllib.loads(text)
    except (tomllib.TOMLDecodeError, *_PARSE_ERRORS) as exc:
        raise error(f"{where}: not valid TOML ({describe_parse_error(exc)}); {fix}") from None


def describe_parse_error(exc: BaseException) -> str:
    """A parser's failure in a few words: its own message, or what a stack overflow means."""
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, MemoryError):
        return "too large to parse"
    text = one_line(exc)
    if "int_max_str_digits" in text or "integer string conversion" in text:
        return "an integer with more digits than any id or setting has"
    return text[:160] or type(exc).__name__


def shown(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters; never fails (huge integers, deep nesting)."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):
        return f"a {type(value).__name__} too large to show"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def display_text(text: str, limit: int | None = None, *, flatten: bool = True) -> str:
    """``text`` as a figure, a terminal or a page can show it: lone surrogates (from file names that are not
    UTF-8) as U+FFFD; with ``flatten``, control characters and line breaks as spaces (without, they are kept:
    lines printed as lines, text a page escapes itself); at most ``limit`` characters, the last ``…`` where
    cut. The one sanitiser of shown text (the page's :func:`job.report.content.clean_text`, the CLI's output)."""
    plain = _SURROGATE.sub("\ufffd", text if limit is None else text[: limit + 1])
    if flatten:
        plain = "".join(" " if ch.isspace() or not ch.isprintable() else ch for ch in plain)
    return plain if limit is None or len(plain) <= limit else plain[: limit - 1] + "\u2026"


def _reason(exc: OSError) -> str:
    return one_line(exc.strerror or exc)
