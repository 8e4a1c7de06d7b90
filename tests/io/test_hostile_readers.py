"""Hostile input, second round: every file faceatlas reads besides the database (run folders, map models,
names, configs), every command besides ``run``, lost files, late failures, and the numeric range.

Each case asserts the exit code, exactly one error line, and that nothing was written, changed or lost. Cases
with a named pipe or a signal run faceatlas as a real subprocess with a timeout (a hang fails the test).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from job.cli import app
from job.config import InputConfig, load_config
from job.errors import InputError
from job.io.database import load_database
from job.io.demo import DemoSpec, make_demo
from job.io.formats import file_sha256
from job.pipeline import RunResult, run
from job.progress import no_progress
from job.space.faces import HostFaces
from job.stages import embedding_space, judge, plan_fit, shared_graph, working_space

ROOT = Path(__file__).parents[2]
SMOKE = ROOT / "configs" / "smoke.toml"
FACEATLAS = [sys.executable, "-m", "job"]
RECORDS, _ = make_demo(DemoSpec(n_identities=40, faces_per_identity=5, seed=5))  # 512-D, as the shared run


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() and not p.is_symlink() else b"<other>")
            for p in sorted(root.rglob("*"))}


def _one_error(output: str, code: int, returned: int, fragment: str) -> None:
    assert returned == code, output
    lines = [line for line in output.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("faceatlas: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], output
    assert fragment in errors[0] and ";" in errors[0] and "Traceback" not in output, output


def _cli(*args: object, code: int, fragment: str) -> None:
    result = CliRunner().invoke(app, [str(a) for a in args])
    _one_error(result.stderr, code, result.exit_code, fragment)


def _subprocess(*args: object, code: int, fragment: str, timeout: float = 120) -> None:
    done = subprocess.run([*FACEATLAS, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, check=False)
    _one_error(done.stderr, code, done.returncode, fragment)


@pytest.fixture(scope="module")
def a_run(smoke_run: RunResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("hostile") / "run"
    shutil.copytree(smoke_run.out_dir, copy)
    return copy


def _edited_copy(a_run: Path, tmp_path: Path, edit) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(a_run, copy)
    record = json.loads((copy / "run.json").read_text())
    edit(record, copy)
    (copy / "run.json").write_text(json.dumps(record))
    return copy


# run folders: run.json and the files it lists are read like any untrusted input

def test_run_json_that_is_a_named_pipe_is_refused_without_hanging(a_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(a_run, copy)
    (copy / "run.json").unlink()
    os.mkfifo(copy / "run.json")
    before = _snapshot(tmp_path)
    for command in ("verify", "nearest"):
        extra = ["--x", "0", "--y", "0"] if command == "nearest" else []
        _subprocess(command, copy, *extra, code=3, fragment="not a regular file", timeout=60)
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize(("flag", "code"), [("--config", 2), ("--names", 3)])
def test_a_config_or_names_file_that_is_a_named_pipe_is_refused_without_hanging(tmp_path: Path, flag: str,
                                                                                code: int) -> None:
    np.save(tmp_path / "db.npy", RECORDS)
    os.mkfifo(tmp_path / "pipe")
    before = _snapshot(tmp_path)
    _subprocess("run", "-i", tmp_path / "db.npy", "-o", tmp_path / "out", flag, tmp_path / "pipe", code=code,
                fragment="pipe: not a regular file", timeout=60)
    assert _snapshot(tmp_path) == before


def test_run_json_pointing_at_dev_zero_is_refused(a_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(a_run, copy)
    (copy / "run.json").unlink()
    (copy / "run.json").symlink_to("/dev/zero")
    _subprocess("verify", copy, code=3, fragment="not a regular file", timeout=60)


@pytest.mark.parametrize(("name", "edit", "fragment"), [
    ("nested", lambda r, c: r.update(metrics=json.loads("[" * 50_000 + "]" * 50_000)), "nested too deeply"),
    ("input a list", lambda r, c: r.update(input=[1]), "field 'input' is [1], expected a dict"),
    ("dim a string", lambda r, c: r["input"].update(dim="512"), "field 'input.dim' is '512'"),
    ("checksum a number", lambda r, c: r["file_sha256"].update({"projection.parquet": 7}), "not a SHA-256"),
    ("id_field a dict", lambda r, c: r["config"]["input"].update(id_field={"a": 1}),
     "field 'config.input.id_field'"),
])
def test_run_json_with_fields_of_the_wrong_type_is_refused(a_run: Path, tmp_path: Path, name: str, edit,
                                                            fragment: str) -> None:
    if name == "nested":  # json.dumps cannot write what json.loads cannot read: write the text directly
        copy = tmp_path / "run"
        shutil.copytree(a_run, copy)
        text = (copy / "run.json").read_text()
        (copy / "run.json").write_text(text.replace('"metrics": {', '"deep": ' + "[" * 100_000 + "]" * 100_000
                                                    + ', "metrics": {', 1))
    else:
        copy = _edited_copy(a_run, tmp_path, edit)
    before = _snapshot(tmp_path)
    _cli("verify", copy, code=3, fragment=fragment)
    _cli("transform", copy, copy / "projection.parquet", "--out", tmp_path / "p.parquet", code=3, fragment=fragment)
    assert _snapshot(tmp_path) == before


def test_a_listed_file_that_is_a_pipe_or_a_link_is_refused(a_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(a_run, copy)
    (copy / "suspects.csv").unlink()
    os.mkfifo(copy / "suspects.csv")
    _subprocess("verify", copy, code=3, fragment="suspects.csv: not a regular file", timeout=60)
    (copy / "suspects.csv").unlink()
    (copy / "suspects.csv").symlink_to(a_run / "suspects.csv")  # same bytes, but a link: not what a run wrote
    _cli("verify", copy, code=3, fragment="suspects.csv: a symbolic link")


def test_verify_prints_no_control_characters_from_the_record(a_run: Path, tmp_path: Path) -> None:
    copy = _edited_copy(a_run, tmp_path, lambda r, c: r.update(version="\x1b[2J\n" * 3 + "x" * 10_000))
    result = CliRunner().invoke(app, ["verify", str(copy)])
    assert result.exit_code == 0 and "\x1b" not in result.stdout and len(result.stdout) < 400
    assert result.stdout.count("\n") == 1


# map models: sizes checked before reading, values after

def _rehashed_model(a_run: Path, tmp_path: Path, **changes: np.ndarray) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(a_run, copy)
    with np.load(copy / "map_model.npz") as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays.update(changes)
    np.savez_compressed(copy / "map_model.npz", **arrays)
    record = json.loads((copy / "run.json").read_text())
    record["file_sha256"]["map_model.npz"] = file_sha256(copy / "map_model.npz")
    (copy / "run.json").write_text(json.dumps(record))
    return copy


def test_a_model_that_decompresses_to_far_more_than_its_run_holds_is_refused_unread(a_run: Path,
                                                                                     tmp_path: Path) -> None:
    with np.load(a_run / "map_model.npz") as archive:
        identities = len(archive["identity"])
    bomb = np.zeros((20_000_000, 2), dtype=np.float32)  # 160 MB of zeros, ~160 KB compressed
    copy = _rehashed_model(a_run, tmp_path, coords=bomb, face_identity=np.zeros(len(bomb), np.int32))
    assert (copy / "map_model.npz").stat().st_size < 2_000_000 and identities > 0
    _cli("nearest", copy, "--x", 0, "--y", 0, code=3, fragment="more than a map of this run's size holds")


@pytest.mark.parametrize(("change", "fragment"), [
    ("nan_anchors", "no identity with a map position and faces"),
    ("unsorted", "identities not sorted and unique"),
    ("not_unit", "centroids that are not unit vectors"),
    ("radius", "a radius that is not a positive number"),
])
def test_a_model_with_impossible_values_is_refused(a_run: Path, tmp_path: Path, change: str, fragment: str) -> None:
    with np.load(a_run / "map_model.npz") as archive:
        arrays = {name: archive[name] for name in archive.files}
    changes = {"nan_anchors": {"anchor": np.full_like(arrays["anchor"], np.nan)},
               "unsorted": {"identity": arrays["identity"][::-1].copy()},
               "not_unit": {"centroid": arrays["centroid"] * 3},
               "radius": {"radius": np.array(-1.0)}}[change]
    copy = _rehashed_model(a_run, tmp_path, **changes)
    for command in (["nearest", copy, "--x", 0, "--y", 0], ["invert", copy, "--x", 0, "--y", 0],
                    ["transform", copy, a_run / "projection.parquet", "--out", tmp_path / "p.parquet"]):
        _cli(*command, code=3, fragment=fragment)
    assert not (tmp_path / "p.parquet").exists()


@pytest.mark.parametrize(("x", "y"), [(1e200, 0.0), (1e155, 1e155), (-3e38, 3e38)])
def test_points_far_off_the_map_are_refused(a_run: Path, x: float, y: float) -> None:
    for command in ("nearest", "invert"):
        _cli(command, a_run, "--x", x, "--y", y, code=2, fragment="outside the populated map")


# lost files: no output may replace an input, or land in a run folder

def _new_faces(folder: Path) -> Path:
    path = folder / "mine.npz"
    np.savez(path, ids=RECORDS["id"][:20].astype(np.int64), embeddings=RECORDS["embedding"][:20])
    return path


def test_transform_never_overwrites_its_input(a_run: Path, tmp_path: Path) -> None:
    mine = _new_faces(tmp_path)
    (tmp_path / "linked.parquet").hardlink_to(mine)
    (tmp_path / "sym.parquet").symlink_to(mine)
    before = _snapshot(tmp_path)
    for out in ("linked.parquet", "sym.parquet"):
        _cli("transform", a_run, mine, "--out", tmp_path / out, code=2, fragment="which writing would overwrite")
    assert _snapshot(tmp_path) == before


def test_outputs_never_land_inside_a_run_folder(a_run: Path, tmp_path: Path) -> None:
    mine = _new_faces(tmp_path)
    before = _snapshot(a_run)
    _cli("transform", a_run, mine, "--out", a_run / "sub" / "x.parquet", code=2, fragment="inside the run folder")
    _cli("invert", a_run, "--x", 0, "--y", 0, "--out", a_run / "deeper" / "v.npy", code=2,
         fragment="inside the run folder")
    assert _snapshot(a_run) == before


def test_transform_out_checked_before_placing(a_run: Path, tmp_path: Path) -> None:
    mine = _new_faces(tmp_path)
    _cli("transform", a_run, mine, "--out", tmp_path / ("p" * 250 + ".parquet"), code=2, fragment="shorter name")
    (tmp_path / "file").write_text("x")
    _cli("transform", a_run, mine, "--out", tmp_path / "file" / "p.parquet", code=2, fragment="is not a folder")


def test_paths_that_are_not_utf8_work(a_run: Path, tmp_path: Path) -> None:
    """Linux file names are bytes: a name that is not UTF-8 is an ordinary file (pyarrow alone would refuse it)."""
    raw = os.fsencode(tmp_path) + b"/new\xff.npz"
    np.savez(raw.decode("utf-8", "surrogateescape"), ids=RECORDS["id"][:20].astype(np.int64),
             embeddings=RECORDS["embedding"][:20])
    out = (os.fsencode(tmp_path) + b"/placed\xff.parquet").decode("utf-8", "surrogateescape")
    result = CliRunner().invoke(app, ["transform", str(a_run), raw.decode("utf-8", "surrogateescape"), "--out", out])
    assert result.exit_code == 0, result.output
    assert Path(out).is_file()


# demo-db: checks before writing, nothing left over

def test_demo_db_refuses_before_writing(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    before = _snapshot(tmp_path)
    _cli("demo-db", tmp_path / "folder", code=2, fragment="is a folder")
    _cli("demo-db", tmp_path / "x.npy", "--identities", 10**20, code=2, fragment="pick smaller numbers")
    _cli("demo-db", tmp_path / "x.npy", "--faces-per-identity", 10**20, code=2, fragment="pick smaller numbers")
    (tmp_path / "y.truth.json").mkdir()
    _cli("demo-db", tmp_path / "y.npy", code=2, fragment="y.truth.json: is a folder")
    assert _snapshot(tmp_path) == {**before, "y.truth.json": b"<other>"}


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_demo_db_interrupted_while_saving_leaves_nothing(tmp_path: Path, signum: int) -> None:
    process = subprocess.Popen([*FACEATLAS, "demo-db", str(tmp_path / "big.npy"), "--identities", "400000"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".big.npy.*.tmp")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)  # interrupt once the temporary file is being written
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert list(tmp_path.iterdir()) == []


# late failures: what would fail at the end is checked first, user strings in figures are text

def test_dollar_signs_formula_names_and_line_separators_run_through(tmp_path: Path) -> None:
    database = tmp_path / "faces_$DATE_$HOST.npy"
    np.save(database, RECORDS)
    names = ["=1+2", "+3", "-4", "@SUM(A1)", "$\\frac{a$", "Ada\u2028Lovelace", "a=b", "\tTab"]
    names_file = tmp_path / "names.jsonl"
    names_file.write_text("".join(json.dumps({"name": names[i % len(names)]}, ensure_ascii=False) + "\n"
                                  for i in range(40)), encoding="utf-8")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", "-c", str(SMOKE), "-i", str(database), "--names", str(names_file),
                                      "-o", str(out), "--highlight", "0,1,2,3,4,5"])
    assert result.exit_code == 0, result.output
    with (out / "lookalikes.csv").open(encoding="utf-8", newline="") as handle:
        cells = {cell for row in csv.DictReader(handle) for cell in (row["name_a"], row["name_b"])}
    assert cells and cells <= {"'=1+2", "'+3", "'-4", "'@SUM(A1)", "$\\frac{a$", "Ada\u2028Lovelace", "a=b", "'\tTab"}
    assert "a=b" in cells or "$\\frac{a$" in cells  # ordinary names are written as they are
    record = json.loads((out / "run.json").read_text())
    assert record["input"]["path"].endswith("faces_$DATE_$HOST.npy")


def test_a_tiny_database_with_spectral_init_runs(tmp_path: Path) -> None:
    path = tmp_path / "three.npz"
    np.savez(path, ids=np.array([0, 0, 1]), embeddings=RECORDS["embedding"][:3])
    result = CliRunner().invoke(app, ["run", "-c", str(SMOKE), "-i", str(path), "-o", str(tmp_path / "out"),
                                      "--set", "umap.n_neighbors=2", "--set", "umap.init=spectral"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "run.json").read_text())["fit"]["init"] == "pca"


# the numeric range: any finite magnitude gives the same verdicts, or a clear refusal

def _verdicts(path: Path) -> tuple[set[int], np.ndarray]:
    config = load_config(SMOKE, {"input.path": str(path)})
    database = load_database(config.input)
    geometry = working_space(config, database)
    space = embedding_space(database, HostFaces(database.unit))
    plan = plan_fit(config, database, space)
    scores = judge(config, space, plan, shared_graph(config, space, plan, no_progress), geometry).scores
    return set(np.flatnonzero(scores.suspect).tolist()), scores.suggested_id


@pytest.mark.parametrize(("dtype", "scale"), [("<f4", 1e20), ("<f4", 1e-25), ("<f8", 1e-300), ("<f8", 1e30)])
def test_scaled_databases_give_the_same_verdicts(tmp_path: Path, dtype: str, scale: float) -> None:
    ids, vectors = RECORDS["id"].astype(np.int64), RECORDS["embedding"].astype(dtype)
    np.savez(tmp_path / "plain.npz", ids=ids, embeddings=vectors)
    with np.errstate(under="ignore"):
        np.savez(tmp_path / "scaled.npz", ids=ids, embeddings=(vectors * np.asarray(scale, dtype)).astype(dtype))
    plain, scaled = _verdicts(tmp_path / "plain.npz"), _verdicts(tmp_path / "scaled.npz")
    assert plain[0] and plain[0] == scaled[0]
    assert np.array_equal(plain[1], scaled[1])


@pytest.mark.parametrize(("scale", "fragment"), [(1e20, "NaN, inf or values beyond float32"),
                                                  (1e-25, "are all zeros")])
def test_float16_beyond_its_range_is_refused_clearly(tmp_path: Path, scale: float, fragment: str) -> None:
    with np.errstate(over="ignore", under="ignore"):
        scaled = (RECORDS["embedding"].astype(np.float32) * np.float32(scale)).astype(np.float16)
    np.savez(tmp_path / "db.npz", ids=RECORDS["id"].astype(np.int64), embeddings=scaled)
    with pytest.raises(InputError, match=fragment):
        load_database(InputConfig(path=str(tmp_path / "db.npz")))


def test_a_run_on_a_scaled_database_writes_no_nan(tmp_path: Path) -> None:
    np.savez(tmp_path / "db.npz", ids=RECORDS["id"].astype(np.int64),
             embeddings=RECORDS["embedding"].astype(np.float32) * np.float32(1e20))
    result = run(load_config(SMOKE, {"input.path": str(tmp_path / "db.npz"), "out": str(tmp_path / "out")}))
    text = (tmp_path / "out" / "run.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    # a sane map, not a NaN one (the smoke config's 50 epochs give trust 0.78-0.89 over seeds on this database)
    assert result.metrics.suspects > 0 and result.metrics.trustworthiness > 0.75


# the command line itself: what click cannot parse is one line too, not a framed usage panel

@pytest.mark.parametrize(("args", "fragment"), [
    (["nearest", ".", "--x", "abc", "--y", "0"], "Invalid value for '--x'"),
    (["demo-db", "x.npy", "--identities", "1"], "Invalid value for '--identities'"),
    (["run", "--bogus"], "No such option: --bogus"),
    (["nearest", "."], "Missing option '--x'"),
    (["no-such-command"], "No such command 'no-such-command'"),
])
def test_command_lines_that_do_not_parse_get_one_line(tmp_path: Path, args: list[str], fragment: str) -> None:
    done = subprocess.run([*FACEATLAS, *args], capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False)
    _one_error(done.stderr, 2, done.returncode, fragment)
    assert done.stdout == "" and list(tmp_path.iterdir()) == []


def test_an_unwritable_cache_folder_writes_no_kernel_into_the_package(tmp_path: Path) -> None:
    """With ``XDG_CACHE_HOME`` unwritable, numba would fall back to ``__pycache__`` folders inside the installed
    package; faceatlas gives it a private temporary folder instead, warns, and ``warm-up`` refuses."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # mkdir under a regular file fails even for root
    env = {key: value for key, value in os.environ.items() if key != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(blocker / "cache")
    package = ROOT / "job"

    def tree() -> dict[str, int]:
        return {str(p): p.stat().st_mtime_ns for p in package.rglob("*") if p.is_file()}

    before = tree()
    warm = subprocess.run([sys.executable, "-m", "job", "warm-up"], capture_output=True, text=True, env=env,
                          timeout=300, cwd=tmp_path, check=False)
    assert warm.returncode == 2, warm.stderr
    assert warm.stderr.strip().splitlines()[-1].startswith(f"faceatlas: error: warm-up: {blocker / 'cache'}/faceatlas/"
                                                           "numba cannot hold numba's compiled kernels")
    code = ("import numpy as np; from pathlib import Path; from job.knn.pairs import _pair_dots, pair_similarities; "
            "pair_similarities(np.ones((2, 3), np.float32), np.ones((2, 3), np.float32), np.zeros((2, 1), np.int64)); "
            "from job.caches import numba_cache; cache = numba_cache(); "
            "print(cache.folder, Path(_pair_dots._cache.cache_path).is_relative_to(cache.folder), "
            "len(list(cache.folder.rglob('*.nbi'))), cache.warning())")  # as a library: no CLI set the cache up
    compiled = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                              cwd=tmp_path, check=False)
    assert compiled.returncode == 0, compiled.stderr
    folder, confined, indexes, warning = compiled.stdout.split(" ", 3)
    assert confined == "True" and int(indexes) >= 1 and "they last this run only" in warning
    assert not Path(folder).exists()  # the temporary folder went with the process
    assert tree() == before  # nothing written into the package's own folders
