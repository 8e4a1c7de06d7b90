"""``corrections.csv``: the run's proposed changes (:mod:`job.apply.proposals`), one per row, in the
source's own terms, for a person to review (delete the rows they reject, by hand or in the atlas page) and
``faceatlas apply`` (file databases) or the source's own tools (databases) to carry out.

Columns: ``what,face,from,to,score,reason,names,action`` (``action``: what accepting the row does; for a
``review``, the action a person may take by writing it in ``what``). For a file database ``face`` is the
face's row in the input file and ``from``/``to`` are identity ids; for a database they are its own keys (a
face's and an identity's), and ``row,from_id,to_id`` follow with faceatlas's row and ids. ``names``: the
identities' display names, ``FROM → TO``, on one line (control characters as spaces), a name that starts
like a spreadsheet formula behind a ``'``; keys are written as they are (the source's tools must find them).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from job.apply.proposals import Proposals
from job.arrays import IdArray
from job.atomic import atomic_write
from job.io.database import SourceKeys
from job.io.files import display_text
from job.store.reports import CORRECTIONS_FILE, cell

__all__ = ["CORRECTIONS_FILE", "write_corrections"]
HEADER = ("what", "face", "from", "to", "score", "reason", "names", "action")
DATABASE_COLUMNS = ("row", "from_id", "to_id")
ARROW = " \u2192 "


def write_corrections(path: Path, proposals: Proposals, rows: IdArray, *, names: dict[int, str] | None = None,
                      keys: SourceKeys | None = None, database: bool = False, loose_rows: IdArray | None = None,
                      loose_keys: SourceKeys | None = None) -> Path:
    """Write ``proposals`` to ``path``; ``rows`` each run face's input row, ``loose_rows``/``loose_keys`` the
    unassigned faces'; ``database``: the source is a database (its keys in ``face``/``from``/``to``)."""
    header = list(HEADER) + (list(DATABASE_COLUMNS) if database else [])
    named = names or {}

    def identity(value: int) -> str:  # a database's key as it is: its own tools must find it
        if value < 0:
            return ""
        return keys.identity_key(value) if database and keys is not None else str(value)

    def label(value: int) -> str:  # one line: a CR or LF inside a name would split the row for some readers
        return display_text(named.get(value, "")) if value >= 0 else ""

    with atomic_write(path) as tmp, tmp.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        for k in range(len(proposals)):
            face, source, target = int(proposals.face[k]), int(proposals.from_id[k]), int(proposals.to_id[k])
            loose = bool(proposals.unassigned[k])
            source_rows = loose_rows if loose else rows
            row = -1 if face < 0 or source_rows is None else int(source_rows[face])
            face_keys = loose_keys if loose else keys
            if face < 0:
                face_cell = ""
            elif database:
                face_cell = _face_key(face_keys, face)
            else:
                face_cell = str(row)
            line = [proposals.what[k], face_cell, identity(source), identity(target), _score(proposals.score[k]),
                    proposals.reason[k], cell(_names(label(source), label(target), source, target)),
                    proposals.action[k]]
            if database:
                line += ["" if row < 0 else str(row), "" if source < 0 else str(source),
                         "" if target < 0 else str(target)]
            writer.writerow(line)
    return path


def _names(source_name: str, target_name: str, source: int, target: int) -> str:
    """``FROM → TO`` where either side has a name (an unnamed one as ``?``); one name for a one-sided row."""
    if not (source_name or target_name):
        return ""
    if source >= 0 and target >= 0:
        return ARROW.join([source_name or "?", target_name or "?"])
    return (ARROW.strip() + " " if source < 0 else "") + (source_name or target_name)


def _face_key(keys: SourceKeys | None, face: int) -> str:
    """A database's face key as it is (its own tools must find it); "" where unknown."""
    value = None if keys is None or keys.face is None else keys.face[face]
    return "" if value is None else str(value)


def _score(value: float) -> str:
    return f"{float(value):.4f}" if np.isfinite(value) else ""
