"""The analysis tables: ``suspects.csv`` and ``lookalikes.csv`` (plain CSV, UTF-8, one header line)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from job.arrays import IdArray
from job.analysis.lookalikes import Lookalikes
from job.store.outputs import temporary_path
from job.analysis.suspects import SuspectScores

SUSPECTS_FILE = "suspects.csv"
LOOKALIKES_FILE = "lookalikes.csv"


def write_suspects(path: Path, rows: IdArray, ids: IdArray, scores: SuspectScores,
                   names: dict[int, str] | None = None) -> Path:
    """``row,id,suggested_id,score`` (+ ``name,suggested_name``) for suspects only, most suspicious first."""
    chosen = np.flatnonzero(scores.suspect)
    chosen = chosen[np.argsort(-scores.score[chosen], kind="stable")]
    header = ["row", "id", "suggested_id", "score"] + (["name", "suggested_name"] if names is not None else [])
    lines = []
    for face in chosen.tolist():
        line: list[object] = [int(rows[face]), int(ids[face]), int(scores.suggested_id[face]),
                              f"{float(scores.score[face]):.4f}"]
        if names is not None:
            line += [cell(names.get(int(ids[face]), "")), cell(names.get(int(scores.suggested_id[face]), ""))]
        lines.append(line)
    return _write_csv(path, header, lines)


def write_lookalikes(path: Path, pairs: Lookalikes, names: dict[int, str] | None = None) -> Path:
    """``id_a,id_b,similarity`` (+ ``name_a,name_b``), most alike first."""
    header = ["id_a", "id_b", "similarity"] + (["name_a", "name_b"] if names is not None else [])
    lines = []
    for a, b, similarity in zip(pairs.id_a.tolist(), pairs.id_b.tolist(), pairs.similarity.tolist(), strict=True):
        line: list[object] = [a, b, f"{similarity:.4f}"]
        if names is not None:
            line += [cell(names.get(a, "")), cell(names.get(b, ""))]
        lines.append(line)
    return _write_csv(path, header, lines)


def cell(text: str) -> str:
    """A user-given string as a CSV cell a spreadsheet shows as text: one that starts like a formula (``=``,
    ``+``, ``-``, ``@``, tab, carriage return) gets a leading ``'`` (OWASP's CSV-injection advice); every
    other string is written as it is."""
    return "'" + text if text[:1] in _FORMULA_STARTS else text


_FORMULA_STARTS = {"=", "+", "-", "@", "\t", "\r"}


def _write_csv(path: Path, header: list[str], lines: list[list[object]]) -> Path:
    tmp = temporary_path(path)
    with tmp.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(lines)
    os.replace(tmp, path)
    return path
