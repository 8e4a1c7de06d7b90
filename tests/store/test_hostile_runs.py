"""Hostile input, third round: a run folder whose file was edited and re-hashed into run.json.

A SHA-256 in run.json proves only that the record vouches for a file; whoever edits a file can re-hash it too.
Every command that opens a run must still refuse files that do not belong together (job/store/coherence.py):
exit 3, exactly one error line naming the file, the folder unchanged. Each case copies one genuine run, edits
one file, re-hashes it, and runs verify, report, render, nearest and invert on it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from job.cli import app
from job.config import load_config
from job.io.formats import file_sha256
from job.pipeline import RunResult, run
from tests.conftest import copy_of_run

SMOKE = Path(__file__).parents[2] / "configs" / "smoke.toml"
OFFSET = 1000  # the second run's ids: the first run's plus this, so its model has the same shape, other ids
COMMANDS = (["verify"], ["report"], ["render"], ["nearest", "--x", "0", "--y", "0"],
            ["invert", "--x", "0", "--y", "0"])


@pytest.fixture(scope="module")
def genuine(smoke_run: RunResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared smoke run's folder, copied once for this module."""
    return copy_of_run(smoke_run, tmp_path_factory, "genuine")


@pytest.fixture(scope="module")
def other(small_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another run of the same size: the smoke database with every id moved by ``OFFSET``."""
    folder = tmp_path_factory.mktemp("other")
    records = np.load(small_db)
    records["id"] += OFFSET
    np.save(folder / "db.npy", records)
    return run(load_config(SMOKE, {"input.path": str(folder / "db.npy"), "out": str(folder / "run")})).out_dir


def _rehash(folder: Path, name: str) -> None:
    """Vouch for the edited ``name`` in run.json, as someone who edits a run folder can."""
    record = json.loads((folder / "run.json").read_text())
    record["file_sha256"][name] = file_sha256(folder / name)
    (folder / "run.json").write_text(json.dumps(record))


def _record(change: Callable[[dict], None]) -> Callable[[Path, Path], str]:
    def edit(folder: Path, other: Path) -> str:
        record = json.loads((folder / "run.json").read_text())
        change(record)
        (folder / "run.json").write_text(json.dumps(record))
        return "run.json"
    return edit


def _projection(change: Callable[[pa.Table], pa.Table]) -> Callable[[Path, Path], str]:
    def edit(folder: Path, other: Path) -> str:
        path = folder / "projection.parquet"
        pq.write_table(change(pq.read_table(path)), path)
        _rehash(folder, path.name)
        return path.name
    return edit


def _column(name: str, change: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path, Path], str]:
    def replace(table: pa.Table) -> pa.Table:
        values = change(table.column(name).to_numpy().copy())
        return table.set_column(table.column_names.index(name), name, pa.array(values))
    return _projection(replace)


def _at_first(value: float | int, dtype: type) -> Callable[[np.ndarray], np.ndarray]:
    def change(values: np.ndarray) -> np.ndarray:
        values = values.astype(dtype)
        values[0] = value
        return values
    return change


def _plus_minus(values: np.ndarray) -> np.ndarray:
    values[:2] = (3e38, -3e38)  # finite float32, but their span is not
    return values


def _another_runs_model(folder: Path, other: Path) -> str:
    shutil.copy(other / "map_model.npz", folder / "map_model.npz")
    _rehash(folder, "map_model.npz")
    return "map_model.npz"


def _model(change: Callable[[dict[str, np.ndarray]], None]) -> Callable[[Path, Path], str]:
    def edit(folder: Path, other: Path) -> str:
        with np.load(folder / "map_model.npz") as archive:
            arrays = {name: archive[name] for name in archive.files}
        change(arrays)
        np.savez(folder / "map_model.npz", **arrays)
        _rehash(folder, "map_model.npz")
        return "map_model.npz"
    return edit


def _similar_id_7(table: pa.Table) -> pa.Table:
    return table.append_column("similar_id_7", table.column("similar_id_1"))


def _lookalikes(change: Callable[[list[list[str]]], None]) -> Callable[[Path, Path], str]:
    def edit(folder: Path, other: Path) -> str:
        path = folder / "lookalikes.csv"
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))
        change(rows)
        with path.open("w", newline="") as handle:
            csv.writer(handle).writerows(rows)
        _rehash(folder, path.name)
        return path.name
    return edit


CASES = {  # name: (edit, fragment of the error line)
    "a look-alike pair of another run's ids": (_lookalikes(lambda rows: rows[1].__setitem__(0, str(10**6))),
                                                "is not a pair of this run's identities"),
    "a look-alike similarity of inf": (_lookalikes(lambda rows: rows[1].__setitem__(2, "inf")),
                                       "is not a pair of this run's identities with a finite similarity"),
    "timings of 10**400": (_record(lambda r: r["timings"].update(load=10**400)), "'timings.load'"),
    "metrics of 10**400": (_record(lambda r: r["metrics"].update(trustworthiness=10**400)),
                           "'metrics.trustworthiness'"),
    "timings of 1e400 (inf)": (_record(lambda r: r["timings"].update(load=float("inf"))), "'timings.load'"),
    "x beyond float32": (_column("x", _at_first(1e39, np.float64)), "column 'x' has type double"),
    "x inf as float64": (_column("x", _at_first(1e4000, np.float64)), "column 'x' has type double"),
    "x inf as float32": (_column("x", _at_first(1e4000, np.float32)), "column 'x' holds inf"),
    "x of +-3e38": (_column("x", _plus_minus), "column 'x' holds 3"),
    "one face": (_projection(lambda t: t.slice(0, 1)), "holds 1 face rows but run.json says input.n_faces"),
    "an extra similar_id_7": (_projection(_similar_id_7), "column 'similar_id_7'"),
    "another run's model": (_another_runs_model, "identities are not the"),
    "model identities outside the projection's": (  # still sorted and unique: a model of other people
        _model(lambda a: a.update(identity=a["identity"] + 10**6)), "identities are not the"),
    "model anchors of inf": (_model(lambda a: a["anchor"].__setitem__(0, np.inf)), "map positions beyond"),
    "model radius of 1e300": (_model(lambda a: a.update(radius=np.array(1e300))), "a radius larger than the map"),
    "cluster label 2**40": (_column("cluster", _at_first(2**40, np.int64)), "column 'cluster' holds 1099511627776"),
}


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "<dir>"
            for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("case", CASES)
def test_an_edited_and_rehashed_file_is_refused_by_every_command(case: str, genuine: Path, other: Path,
                                                                  tmp_path: Path) -> None:
    edit, fragment = CASES[case]
    folder = tmp_path / "run"
    shutil.copytree(genuine, folder)
    edited = edit(folder, other)
    before = _tree(tmp_path)
    for command in COMMANDS:
        result = CliRunner().invoke(app, [command[0], str(folder), *command[1:]])
        assert result.exit_code == 3, (command, result.output)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("faceatlas: error: ")]
        assert len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in result.output, result.output
        assert str(folder / edited) in errors[0] and fragment in errors[0], (command, errors[0])
        assert "rerun faceatlas run" in errors[0], errors[0]
        assert _tree(tmp_path) == before, command


def test_genuine_runs_still_open(genuine: Path, other: Path) -> None:
    for folder in (genuine, other):
        result = CliRunner().invoke(app, ["verify", str(folder)])
        assert result.exit_code == 0 and result.stdout.startswith("ok: "), result.output
        x, y = pq.read_table(folder / "projection.parquet", columns=["x", "y"]).to_pandas().iloc[0]
        result = CliRunner().invoke(app, ["nearest", str(folder), "--x", str(x), "--y", str(y), "--json"])
        assert result.exit_code == 0, result.output
        ids = {answer["id"] for answer in json.loads(result.stdout)}
        assert ids and (min(ids) >= OFFSET) == (folder == other)  # each model answers with its own identities


def test_a_name_of_200_000_characters_in_the_look_alikes_reads_back(genuine: Path, tmp_path: Path) -> None:
    """Python's csv refuses fields of 131,072 characters and more by default: a run (or an older one, before
    names were capped at 4,096 characters) must still read its own look-alikes back."""
    folder = tmp_path / "run"
    shutil.copytree(genuine, folder)

    def long_name(rows: list[list[str]]) -> None:
        rows[0].append("name_a")
        rows[1].append("x" * 200_000)
        for row in rows[2:]:
            row.append("")

    _lookalikes(long_name)(folder, folder)
    result = CliRunner().invoke(app, ["report", str(folder)])
    assert result.exit_code == 0, result.output


def test_an_older_run_without_the_page_columns_still_verifies_and_answers(genuine: Path, tmp_path: Path) -> None:
    """A run made before the verdict columns existed opens for verify/nearest/invert (only report and render need
    them, and say so)."""
    folder = tmp_path / "run"
    shutil.copytree(genuine, folder)
    _projection(lambda table: table.select(["row", "id", "x", "y", "held_out"]))(folder, folder)
    for command in (["verify"], ["nearest", "--x", "0", "--y", "0"], ["invert", "--x", "0", "--y", "0"]):
        result = CliRunner().invoke(app, [command[0], str(folder), *command[1:]])
        assert result.exit_code == 0, (command, result.output)
    refused = CliRunner().invoke(app, ["report", str(folder)])
    assert refused.exit_code == 3 and "has no column 'suspect' (made by an older faceatlas)" in refused.stderr


def test_a_huge_column_is_refused_or_left_unread(genuine: Path, tmp_path: Path) -> None:
    """A re-hashed projection with huge cells is not read whole into memory: a column faceatlas reads is refused
    by its stored size, before reading; one it does not read is left unread."""
    folder = tmp_path / "run"
    shutil.copytree(genuine, folder)
    big = pa.array([f"{i}" + "x" * 100_000 for i in range(300)])  # all different: no dictionary shrinks them

    def with_column(name: str) -> Callable[[pa.Table], pa.Table]:
        def change(table: pa.Table) -> pa.Table:
            column = pa.concat_arrays([big, pa.array([""] * (len(table) - len(big)))])
            if name in table.column_names:
                return table.set_column(table.column_names.index(name), name, column)
            return table.append_column(name, column)
        return change

    _projection(with_column("notes"))(folder, folder)
    assert CliRunner().invoke(app, ["verify", str(folder)]).exit_code == 0
    _projection(with_column("verdict"))(folder, folder)
    refused = CliRunner().invoke(app, ["verify", str(folder)])
    assert refused.exit_code == 3 and "column 'verdict' holds" in refused.stderr and "more than a run writes" in \
        refused.stderr, refused.output
