"""Reading a corrections file (``corrections.csv`` as a run wrote it, or as a person edited it) against the run
it belongs to: every row checked before anything is written, the ones that cannot apply refused with their
line numbers.

A row applies when it names a face of the run under the identity the run filed it under (``move``,
``remove``), or two identities of the run (``merge``); ``review`` rows are checked the same way and left
as they are (nothing to carry out). A face changed twice, an identity merged twice or back into itself, an
``assign`` (only a database holds unassigned faces), an unknown action, a cell that is not a number where a
number is due: each refused. The file is read as text, one row at a time (never evaluated: a spreadsheet
formula is a cell that is not a number), and no file holds more rows than the run has faces and identities
to name.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from job.arrays import IdArray
from job.errors import InputError
from job.io.files import display_text

APPLIED = ("move", "remove", "merge")
WHATS = (*APPLIED, "review", "assign")
REQUIRED = ("what", "face", "from", "to")
MAX_PROBLEMS = 5  # problems named in the one-line refusal
_ROW = re.compile(r"[0-9]{1,19}")  # ASCII digits only: a full-width or superscript digit is no number here
_ID = re.compile(r"-?[0-9]{1,19}")
_INT64 = (-(2**63), 2**63 - 1)


@dataclass(frozen=True)
class Change:
    """One row to carry out: its ``line`` in the file, ``what`` (move, remove, merge), the ``face``'s input row
    (-1 for a merge) and the identities ``source`` and ``target`` (-1: none)."""

    line: int
    what: str
    face: int
    source: int
    target: int


@dataclass
class Requested:
    """What a corrections file asks: the ``changes`` to carry out, in file order, and ``reviews`` left as they
    are."""

    changes: list[Change] = field(default_factory=list)
    reviews: int = 0


@dataclass(frozen=True)
class RunFaces:
    """The run's faces to check rows against: input ``rows`` (ascending) and each one's filed ``ids``."""

    rows: IdArray
    ids: IdArray

    @classmethod
    def of(cls, rows: np.ndarray, ids: np.ndarray) -> RunFaces:
        """The faces of a projection (rows put in ascending order, should a file not have them so)."""
        rows, ids = np.asarray(rows, dtype=np.int64), np.asarray(ids, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        return cls(rows[order], ids[order])

    def filed(self, row: int) -> int | None:
        """The identity the run filed input row ``row`` under, or None when the row is not a face of the run."""
        if row > _INT64[1]:
            return None
        at = int(np.searchsorted(self.rows, row))
        return int(self.ids[at]) if at < len(self.rows) and int(self.rows[at]) == row else None


def read_requests(path: Path, faces: RunFaces) -> Requested:
    """Every row of the corrections file ``path`` checked against the run's ``faces``.

    Raises
    ------
    InputError
        Not a readable UTF-8 CSV, no header with what/face/from/to, more rows than the run has faces and
        identities, or any row that cannot apply (the first few named with their line numbers).
    """
    identities = set(np.unique(faces.ids).tolist())
    limit = len(faces.rows) + len(identities)
    checker = _Checker(faces, identities)
    try:
        with path.open("r", encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle, strict=True)
            header = [cell.strip().lower() for cell in next(reader, [])]
            missing = [name for name in REQUIRED if name not in header]
            if missing:
                raise InputError(f"{path}: line 1 is not a corrections header (no column {missing[0]!r}; expected "
                                 f"{','.join(REQUIRED)},...); pass the corrections.csv a run wrote")
            where = {name: header.index(name) for name in REQUIRED}
            for count, cells in enumerate(reader, 1):
                if count > limit:
                    raise InputError(f"{path}: more than {limit:,} rows, but the run has {len(faces.rows):,} faces "
                                     f"and {len(identities):,} identities to name, each at most once; pass the "
                                     "corrections.csv of this run")
                if any(cell.strip() for cell in cells):
                    checker.check(reader.line_num, [cells[k].strip() if k < len(cells) else "" for k in
                                                    (where[name] for name in REQUIRED)])
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8 CSV") from None
    except csv.Error as exc:
        raise InputError(f"{path}: line {reader.line_num}: not readable as CSV ({display_text(str(exc), 120)}: "
                         "a cell over 128 KiB, or a quote left open); fix that line, or save the file as CSV again"
                         ) from None
    checker.finish(path)
    return checker.requested


class _Checker:
    """Checks rows one at a time, remembering what earlier rows changed."""

    def __init__(self, faces: RunFaces, identities: set[int]) -> None:
        self.faces, self.identities = faces, identities
        self.requested = Requested()
        self.problems: list[str] = []
        self.refused = 0
        self.face_line: dict[int, int] = {}
        self.merged: dict[int, tuple[int, int]] = {}  # merged identity -> (target, line)

    def check(self, line: int, cells: list[str]) -> None:
        what, face, source, target = cells
        problem = self._problem(line, what.lower(), face, source, target)
        if problem:
            self.refused += 1
            if len(self.problems) < MAX_PROBLEMS:
                self.problems.append(f"line {line}: {problem}")

    def finish(self, path: Path) -> None:
        if self.problems:
            more = f" (and {self.refused - len(self.problems):,} more)" if self.refused > len(self.problems) else ""
            raise InputError(f"{path}: {self.refused:,} rows cannot apply to this run: {'; '.join(self.problems)}"
                             f"{more}; fix or delete those rows (nothing was written)")

    def _problem(self, line: int, what: str, face: str, source: str, target: str) -> str:
        if what not in WHATS:
            return f"what {_shown(what)} is not one of {', '.join(WHATS)}"
        if what == "assign":
            return "assign names an unassigned face, and a file database has none"
        if what == "merge":
            return self._merge(line, face, source, target)
        if what == "review" and not face:  # a review of two identities (possible_same_person)
            named = [cell for cell in (source, target) if cell]
            unknown = next((cell for cell in named if not _is_id(cell) or int(cell) not in self.identities), None)
            if unknown is not None:
                return f"review names {_shown(unknown)}, which is not an identity of this run"
            self.requested.reviews += 1
            return ""
        if not _ROW.fullmatch(face):
            return "the face cell is empty" if not face else f"face {_shown(face)} is not a row number"
        row = int(face)
        filed = self.faces.filed(row)
        if filed is None:
            return f"face {row} is not a face of this run"
        if not _is_id(source) or int(source) != filed:
            return f"face {row} is filed under {filed} in this run, not {_shown(source)}"
        earlier = self.face_line.get(row)
        if earlier is not None:
            return f"face {row} is already named on line {earlier}"
        self.face_line[row] = line
        if what == "review":
            self.requested.reviews += 1
            return ""
        to = -1
        if what == "move":
            if not _is_id(target) or int(target) not in self.identities:
                return f"move to {_shown(target)}, which is not an identity of this run"
            to = int(target)
            if to == filed:
                return f"face {row} is already filed under {to}"
        self.requested.changes.append(Change(line, what, row, filed, to))
        return ""

    def _merge(self, line: int, face: str, source: str, target: str) -> str:
        if face:
            return f"a merge names identities, not a face ({_shown(face)})"
        for cell in (source, target):
            if not _is_id(cell) or int(cell) not in self.identities:
                return f"merge names {_shown(cell)}, which is not an identity of this run"
        a, b = int(source), int(target)
        if a == b:
            return f"merges {a} into itself"
        if a in self.merged:
            return f"identity {a} is already merged on line {self.merged[a][1]}"
        end = b
        while end in self.merged:  # a chain a -> b -> c is fine; one that leads back to a is not
            end = self.merged[end][0]
            if end == a:
                return f"merging {a} into {b} undoes an earlier merge (a loop through line {self.merged[b][1]})"
        self.merged[a] = (b, line)
        self.requested.changes.append(Change(line, "merge", -1, a, b))
        return ""


def _is_id(cell: str) -> bool:
    """An identity id: an integer of int64's range, in ASCII digits."""
    return bool(_ID.fullmatch(cell)) and _INT64[0] <= int(cell) <= _INT64[1]


def _shown(cell: str) -> str:
    """A cell as an error message quotes it: short, on one line, quoted."""
    return repr(display_text(cell, 40)) if cell else "an empty cell"
