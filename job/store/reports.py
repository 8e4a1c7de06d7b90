"""The analysis tables: ``suspects.csv``, ``low_quality.csv`` and ``lookalikes.csv`` (plain CSV, UTF-8, one
header line). Columns added later go at the end, so readers by position keep working."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from job.analysis.lookalikes import Lookalikes
from job.analysis.suspects import LOW_QUALITY, SuspectScores
from job.arrays import FloatArray, IdArray
from job.atomic import atomic_write
from job.io.database import SourceKeys

SUSPECTS_FILE = "suspects.csv"
LOW_QUALITY_FILE = "low_quality.csv"
LOOKALIKES_FILE = "lookalikes.csv"
UNASSIGNED_FILE = "unassigned.csv"
CORRECTIONS_FILE = "corrections.csv"


@dataclass(frozen=True)
class Labels:
    """How the source names what a table lists: display names by identity id, and its own keys."""

    names: dict[int, str] | None = None
    keys: SourceKeys | None = None


def write_suspects(path: Path, rows: IdArray, ids: IdArray, scores: SuspectScores, *, labels: Labels = Labels(),
                   quality: FloatArray | None = None, same_person: set[tuple[int, int]] | None = None,
                   reasons: np.ndarray | None = None) -> Path:
    """``row,id,suggested_id,score`` (+ ``name,suggested_name``), then ``fit,suggested_fit,quality,
    same_person_pair,clear_target`` for misfiled faces only, most certain first (highest score).

    ``fit``/``suggested_fit``: the face's fit to its filed and its suggested identity (1 = as alike as that
    identity's own faces); ``same_person_pair``: the two ids are a ``possible_same_person`` pair of
    lookalikes.csv, so the face was judged between near-twins (or one person under two ids);
    ``clear_target``: the suggested identity fits the face beyond what chance gives (``false``: a recognisable
    face as unlike its identity as a stranger's, claimed by nobody — someone the database does not hold; its
    suggested id is only the nearest); ``reason`` (added in 0.9): ``evidence`` (the embeddings), ``same_photo``
    (another face of its photo fits its identity better) or ``both``; with the source's ``keys`` (added in 0.9):
    ``face_key,identity_key,suggested_key,photo_key``.
    """
    names, keys = labels.names, labels.keys
    chosen = np.flatnonzero(scores.suspect)
    chosen = chosen[np.argsort(-scores.score[chosen], kind="stable")]
    header = ["row", "id", "suggested_id", "score"] + (["name", "suggested_name"] if names is not None else [])
    header += ["fit", "suggested_fit", "quality", "same_person_pair", "clear_target", "reason"]
    header += ["face_key", "identity_key", "suggested_key", "photo_key"] if keys is not None else []
    pairs = same_person or set()
    why = reasons if reasons is not None else np.where(scores.suspect, "evidence", "").astype(object)
    lines = []
    for face in chosen.tolist():
        filed, suggested = int(ids[face]), int(scores.suggested_id[face])
        line: list[object] = [int(rows[face]), filed, suggested, f"{float(scores.score[face]):.4f}"]
        if names is not None:
            line += [cell(names.get(filed, "")), cell(names.get(suggested, ""))]
        line += [_number(scores.own[face]), _number(scores.other[face]),
                 _number(quality[face] if quality is not None else np.nan),
                 _flag((min(filed, suggested), max(filed, suggested)) in pairs), _flag(bool(scores.claimed[face])),
                 why[face]]
        if keys is not None:
            line += [_key(keys.face, face), cell(keys.identity_key(filed)), cell(keys.identity_key(suggested)),
                     _key(keys.photo, face)]
        lines.append(line)
    return _write_csv(path, header, lines)


def write_low_quality(path: Path, rows: IdArray, ids: IdArray, scores: SuspectScores, quality: FloatArray, *,
                      names: dict[int, str] | None = None, keys: SourceKeys | None = None) -> Path:
    """``row,id,quality,fit`` (+ ``name``) for the faces judged low quality, the weakest first (lowest quality,
    then lowest fit; quality from the norms or the neighbours, as run.json ``geometry.quality_from`` says, and
    empty for a face with no neighbour); with the source's ``keys``: ``face_key,identity_key,photo_key``."""
    chosen = np.flatnonzero(scores.verdict == LOW_QUALITY)
    order = np.lexsort((scores.own[chosen], np.nan_to_num(quality[chosen], nan=np.inf)))
    header = ["row", "id", "quality", "fit"] + (["name"] if names is not None else [])
    header += ["face_key", "identity_key", "photo_key"] if keys is not None else []
    lines = []
    for face in chosen[order].tolist():
        line: list[object] = [int(rows[face]), int(ids[face]), _number(quality[face]), _number(scores.own[face])]
        if names is not None:
            line.append(cell(names.get(int(ids[face]), "")))
        if keys is not None:
            line += [_key(keys.face, face), cell(keys.identity_key(int(ids[face]))), _key(keys.photo, face)]
        lines.append(line)
    return _write_csv(path, header, lines)


def write_lookalikes(path: Path, pairs: Lookalikes, names: dict[int, str] | None = None,
                     keys: SourceKeys | None = None) -> Path:
    """``id_a,id_b,similarity`` (+ ``name_a,name_b``), then ``possible_same_person`` (true/false), most alike
    first; with the source's ``keys``: ``key_a,key_b``."""
    header = ["id_a", "id_b", "similarity"] + (["name_a", "name_b"] if names is not None else [])
    header.append("possible_same_person")
    header += ["key_a", "key_b"] if keys is not None else []
    lines = []
    for a, b, similarity, same in zip(pairs.id_a.tolist(), pairs.id_b.tolist(), pairs.similarity.tolist(),
                                      pairs.same_person.tolist(), strict=True):
        line: list[object] = [a, b, f"{similarity:.4f}"]
        if names is not None:
            line += [cell(names.get(a, "")), cell(names.get(b, ""))]
        line.append(_flag(same))
        if keys is not None:
            line += [cell(keys.identity_key(a)), cell(keys.identity_key(b))]
        lines.append(line)
    return _write_csv(path, header, lines)


def write_unassigned(path: Path, rows: IdArray, coords: FloatArray, suggested: IdArray, similarity: FloatArray, *,
                     keys: SourceKeys, names: dict[int, str] | None = None) -> Path:
    """``unassigned.csv``: the faces the source files under no identity, each placed on the map and given the
    identity it most likely is: ``row,face_key,photo_key,x,y[,z],verdict`` (``unassigned``),
    ``suggested_id,suggested_key,suggested_name,similarity`` (the cosine to that identity's centroid in the
    run's working space), most similar first."""
    axes = ["x", "y", "z"][: coords.shape[1]]
    header = ["row", "face_key", "photo_key", *axes, "verdict", "suggested_id", "suggested_key", "suggested_name",
              "similarity"]
    lines = []
    for face in np.argsort(-similarity, kind="stable").tolist():
        identity = int(suggested[face])
        lines.append([int(rows[face]), _key(keys.face, face), _key(keys.photo, face),
                      *(_number(value) for value in coords[face].tolist()), "unassigned", identity,
                      cell(keys.identity_key(identity)), cell((names or {}).get(identity, "")),
                      _number(similarity[face])])
    return _write_csv(path, header, lines)


def _key(values: np.ndarray | None, face: int) -> str:
    """A per-face key cell: empty where unknown."""
    value = None if values is None else values[face]
    return "" if value is None else cell(str(value))


def _number(value: float) -> str:
    """A float cell: 4 decimals, empty for NaN (unknown)."""
    return f"{float(value):.4f}" if np.isfinite(value) else ""


def _flag(value: bool) -> str:
    return "true" if value else "false"


def cell(text: str) -> str:
    """A user-given string as a CSV cell a spreadsheet shows as text: one that starts like a formula (``=``,
    ``+``, ``-``, ``@``, tab, carriage return) gets a leading ``'`` (OWASP's CSV-injection advice); every
    other string is written as it is."""
    return "'" + text if text[:1] in _FORMULA_STARTS else text


_FORMULA_STARTS = {"=", "+", "-", "@", "\t", "\r"}


def _write_csv(path: Path, header: list[str], lines: list[list[object]]) -> Path:
    with atomic_write(path) as tmp, tmp.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(lines)
    return path
