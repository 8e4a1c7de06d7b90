"""A run's outputs are all-or-nothing: failures and SIGKILL leave the previous run intact, reruns heal,
--seed is byte-for-byte reproducible, and `faceatlas verify` catches any file changed after the run."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from job.cli import app
from job.config import Config, load_config
from job.errors import InputError
from job.io.demo import DemoSpec, make_demo
from job.pipeline import run
from job.store.outputs import staged_outputs
from job.store.runs import open_run

SMOKE = Path(__file__).parents[2] / "configs" / "smoke.toml"


def _config(small_db: Path, out: Path, **overrides: object) -> Config:
    return load_config(SMOKE, {"input.path": str(small_db), "out": str(out), **overrides})


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.rglob("*") if ".staging-" in p.name or p.name.endswith(".tmp")]


def test_a_run_that_fails_while_writing_leaves_the_previous_run(small_db: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    run(_config(small_db, out))
    before = _contents(out)

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(out / "projection.parquet"))

    monkeypatch.setattr("job.pipeline.write_projection", disk_full)
    result = CliRunner().invoke(app, ["run", "-c", str(SMOKE), "-i", str(small_db), "-o", str(out),
                                      "--highlight", "1,2"])
    assert result.exit_code == 2 and "No space left on device" in result.stderr.splitlines()[-1]
    assert _contents(out) == before and _leftovers(tmp_path) == []
    open_run(out)  # still verifies


def _staged(folder: Path) -> bool:
    """Whether a run is writing into a staging folder beside ``folder``'s --out (polled while the run renames
    it: a folder that vanishes between listing and reading counts as not yet)."""
    try:
        return any(folder.glob(".out.staging-*/*"))
    except FileNotFoundError:
        return False


@pytest.mark.slow  # the kill tier: a real process killed mid-run
def test_sigkill_mid_write_keeps_the_previous_run_and_a_rerun_completes(small_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(_config(small_db, out))
    before = _contents(out)
    command = [sys.executable, "-m", "job", "run", "-c", str(SMOKE), "-i", str(small_db), "-o", str(out),
               "--highlight", "7"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        if _staged(tmp_path):  # the new run has started writing its files: kill it now
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    assert process.wait(timeout=60) == -signal.SIGKILL, process.stderr.read().decode() if process.stderr else ""
    assert _contents(out) == before  # the previous run, whole
    assert open_run(out).record.highlight != [7]
    assert list(tmp_path.glob(".out.staging-*"))  # what the killed run left, beside --out, not in it
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert rerun.returncode == 0, rerun.stderr
    assert open_run(out).record.highlight == [7]
    assert _leftovers(tmp_path) == []  # the rerun removed the dead run's staging folder


@pytest.mark.slow  # the kill tier: a real process killed mid-run
def test_sigterm_mid_write_exits_130_and_cleans_up(small_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(_config(small_db, out))
    before = _contents(out)
    command = [sys.executable, "-m", "job", "run", "-c", str(SMOKE), "-i", str(small_db), "-o", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        if _staged(tmp_path):
            process.send_signal(signal.SIGTERM)
            break
        time.sleep(0.005)
    _, said = process.communicate(timeout=60)
    assert process.returncode == 130, said
    last = said.strip().splitlines()[-1]
    assert last == "faceatlas: error: interrupted; no half-written outputs were left (rerun to finish)"
    assert _contents(out) == before and _leftovers(tmp_path) == []


def test_seed_gives_byte_identical_projections(small_db: Path, tmp_path: Path) -> None:
    first = run(_config(small_db, tmp_path / "a", seed=11))
    second = run(_config(small_db, tmp_path / "b", seed=11))
    assert first.files["projection"].read_bytes() == second.files["projection"].read_bytes()


def test_drop_invalid_keeps_input_row_numbers_and_duplicates_are_counted(tmp_path: Path) -> None:
    records, _ = make_demo(DemoSpec(n_identities=40, faces_per_identity=4, dim=32, seed=4))
    ids = records["id"].astype(np.int64)
    vectors = records["embedding"].astype(np.float32)
    vectors[[2, 30]] = np.nan
    vectors[50] = 0.0
    vectors[60] = vectors[61]  # same face twice, same id or not
    vectors[70] = vectors[5]
    np.savez(tmp_path / "db.npz", ids=ids, embeddings=vectors)
    args = ["run", "-c", str(SMOKE), "-i", str(tmp_path / "db.npz"), "-o", str(tmp_path / "out")]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 3 and "rows 2, 30" in refused.stderr
    result = CliRunner().invoke(app, [*args, "--drop-invalid"])
    assert result.exit_code == 0, result.stderr
    assert "left out 3 faces (2 with NaN/inf, 1 all-zero)" in result.stderr
    assert "2 faces repeat an earlier face's embedding exactly" in result.stderr
    import pyarrow.parquet as pq

    rows = pq.read_table(tmp_path / "out" / "projection.parquet").column("row").to_numpy()
    assert len(rows) == len(ids) - 3 and not {2, 30, 50} & set(rows.tolist())
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["input"]["dropped"] == {"nan_or_inf": 2, "zero": 1}
    expected_other = int(ids[60] != ids[61]) + int(ids[70] != ids[5])
    assert record["input"]["duplicates"] == {"faces": 2, "other_id": expected_other}


def test_verify_accepts_a_run_and_catches_every_change(smoke_run: object, tmp_path: Path) -> None:
    source = smoke_run.out_dir  # type: ignore[attr-defined]
    ok = CliRunner().invoke(app, ["verify", str(source)])
    assert ok.exit_code == 0 and "match run.json" in ok.stdout
    tampers = {
        "a changed projection": lambda d: (d / "projection.parquet").write_bytes(
            (d / "projection.parquet").read_bytes() + b"\0"),
        "a swapped map": lambda d: (d / "map_density.png").write_bytes((d / "map_identities.png").read_bytes()),
        "a missing map": lambda d: (d / "map_highlight.png").unlink(),
        "a run.json pointing outside": lambda d: _edit_record(d, {"../../etc/passwd": "0" * 64}),
        "no run.json": lambda d: (d / "run.json").unlink(),
        "run.json not JSON": lambda d: (d / "run.json").write_text("{"),
    }
    for name, tamper in tampers.items():
        folder = tmp_path / name.replace(" ", "_")
        folder.mkdir()
        for path in source.iterdir():
            (folder / path.name).write_bytes(path.read_bytes())
        tamper(folder)
        result = CliRunner().invoke(app, ["verify", str(folder)])
        assert result.exit_code == 3, name
        assert len(result.stderr.strip().splitlines()) == 1 and str(folder) in result.stderr, name
        with pytest.raises(InputError):
            open_run(folder)


def _edit_record(folder: Path, checksums: dict[str, str]) -> None:
    record = json.loads((folder / "run.json").read_text())
    record["file_sha256"] = checksums
    (folder / "run.json").write_text(json.dumps(record))


def test_a_mount_point_output_is_replaced_file_by_file_with_run_json_last(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "truth.json").write_text("{}")
    (out / "map_density.png").write_bytes(b"old")
    (out / "run.json").write_text(_record({"truth": "truth.json", "density": "map_density.png"}))
    monkeypatch.setattr("job.store.outputs.os.path.ismount", lambda path: Path(path) == out)
    with staged_outputs(out) as staging:
        assert staging.parent == out  # cannot stage beside a mount point
        (staging / "map_density.png").write_bytes(b"new")
        (staging / "run.json").write_text("{}")
    assert _contents(out) == {"map_density.png": b"new", "run.json": b"{}"}  # old truth.json is gone


def test_a_new_output_folder_is_created_whole(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "out"

    def crash() -> None:
        with staged_outputs(out) as staging:
            (staging / "run.json").write_text("{}")
            raise RuntimeError("crash before the swap")

    with pytest.raises(RuntimeError):
        crash()
    assert not out.exists() and _leftovers(tmp_path) == []
    with staged_outputs(out) as staging:
        (staging / "run.json").write_text("{}")
    assert _contents(out) == {"run.json": b"{}"} and os.listdir(out.parent) == ["out"]


def test_out_dot_is_replaced_in_place_so_the_shell_keeps_its_folder(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    for content in (b"first", b"second"):
        with staged_outputs(Path(".")) as staging:
            assert staging.parent == here
            (staging / "map_density.png").write_bytes(content)
            (staging / "run.json").write_text(_record({"density": "map_density.png"}))
    assert (here / "map_density.png").read_bytes() == b"second" and Path.cwd() == here and here.is_dir()
    assert sorted(os.listdir(tmp_path)) == ["here"]


def test_an_edited_run_json_cannot_get_files_outside_the_folder_deleted(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    victim, neighbour = tmp_path / "victim.txt", tmp_path / "neighbour.txt"
    victim.write_text("keep")
    neighbour.write_text("keep")
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text(_record({"a": str(victim), "b": "../neighbour.txt"}))
    monkeypatch.chdir(out)  # file-by-file mode, the one that deletes names listed by the previous run
    with staged_outputs(Path(".")) as staging:
        (staging / "run.json").write_text("{}")
    assert victim.read_text() == "keep" and neighbour.read_text() == "keep"


def test_a_run_killed_while_replacing_file_by_file_does_not_lock_the_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "projection.parquet").write_bytes(b"new")  # what a kill between the moves leaves: no run.json
    (out / "map_density.png").write_bytes(b"old")
    (out / ".faceatlas-replacing.json").write_text(json.dumps({"names": ["map_density.png",
                                                                         "projection.parquet"]}))
    with staged_outputs(out) as staging:
        (staging / "projection.parquet").write_bytes(b"newer")
        (staging / "run.json").write_text(_record({"projection": "projection.parquet"}))
    assert sorted(os.listdir(out)) == ["projection.parquet", "run.json"]  # the half-replaced run is gone whole
    assert (out / "projection.parquet").read_bytes() == b"newer"


def test_the_swap_keeps_permissions_and_files_added_during_the_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with staged_outputs(out) as staging:
        (staging / "run.json").write_text(_record({}))
    out.chmod(0o700)
    with staged_outputs(out) as staging:
        (out / "notes.txt").write_text("written by someone while the run was rendering")
        (staging / "run.json").write_text(_record({}))
    assert oct(out.stat().st_mode & 0o777) == "0o700"
    assert (out / "notes.txt").read_text().startswith("written by someone")
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_a_failed_first_run_leaves_no_folders_it_created(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), staged_outputs(tmp_path / "a" / "b" / "out"):
        raise RuntimeError("crash")
    assert os.listdir(tmp_path) == []


def test_user_folders_that_only_look_like_staging_are_left_alone(tmp_path: Path) -> None:
    mine = tmp_path / ".out.staging-mine"
    mine.mkdir()
    (mine / "draft.txt").write_text("mine")
    with staged_outputs(tmp_path / "out") as staging:
        (staging / "run.json").write_text("{}")
    assert (mine / "draft.txt").read_text() == "mine"


def test_outputs_still_work_where_flock_does_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fcntl

    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.EBADF, "Bad file descriptor")  # what some NFS mounts answer

    out = tmp_path / "out"
    with staged_outputs(out) as staging:
        (staging / "run.json").write_text(_record({}))
    stale = tmp_path / ".out.staging-1-0123abcd"
    stale.mkdir()
    monkeypatch.setattr(fcntl, "flock", no_locks)
    with staged_outputs(out) as staging:
        (staging / "run.json").write_text(_record({"a": "a.txt"}))
        (staging / "a.txt").write_text("new")
    assert (out / "a.txt").read_text() == "new"
    assert stale.is_dir()  # without locks nobody can tell a dead run's folder from a live one: keep it


def _record(files: dict[str, str]) -> str:
    return json.dumps({"tool": "faceatlas", "files": files})


@pytest.mark.parametrize("mode", ["swap", "file-by-file"])
def test_a_file_dropped_in_under_a_name_the_run_writes_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               mode: str) -> None:
    out = tmp_path / "out"
    with staged_outputs(out) as staging:
        (staging / "run.json").write_text(_record({}))
    if mode == "file-by-file":
        monkeypatch.chdir(out)  # standing in the folder: it cannot be swapped, files are renamed in one by one
    said: list[str] = []
    with staged_outputs(out, said.append) as staging:
        (out / "notes.csv").write_text("mine")  # dropped in while the run writes a notes.csv of its own
        (staging / "notes.csv").write_text("the run's")
        (staging / "run.json").write_text(_record({"notes": "notes.csv"}))
    assert (out / "notes.csv").read_text() == "the run's"
    assert (out / "notes.csv.kept").read_text() == "mine"
    assert len(said) == 1 and "kept as notes.csv.kept" in said[0]


@pytest.mark.parametrize("mode", ["swap", "file-by-file"])
def test_a_run_file_edited_since_its_run_is_kept_on_rerun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          mode: str) -> None:
    """A rerun never silently replaces a file the user changed since the run wrote it (notes in suspects.csv,
    rows deleted from a corrections list): run.json's checksum tells the edit, and the file is kept."""
    import hashlib

    out = tmp_path / "out"

    def write_run(staging: Path, text: str) -> None:
        for name in ("notes.csv", "old.csv"):
            (staging / name).write_text(text)
        digest = hashlib.sha256(text.encode()).hexdigest()
        (staging / "run.json").write_text(json.dumps({"tool": "faceatlas", "files": {"a": "notes.csv", "b": "old.csv"},
                                                      "file_sha256": {"notes.csv": digest, "old.csv": digest}}))

    with staged_outputs(out) as staging:
        write_run(staging, "first run")
    (out / "notes.csv").write_text("first run, and my notes")
    (out / "old.csv").write_text("first run, edited; the next run writes no old.csv")
    if mode == "file-by-file":
        monkeypatch.chdir(out)
    said: list[str] = []
    with staged_outputs(out, said.append) as staging:
        write_run(staging, "second run")
        (staging / "old.csv").unlink()
    assert (out / "notes.csv").read_text() == "second run"
    assert (out / "notes.csv.kept").read_text() == "first run, and my notes"
    assert (out / "old.csv").read_text() == "first run, edited; the next run writes no old.csv"
    assert len(said) == 2 and all("move it out of out before the next run" in line for line in said)
    assert said[0 if "notes.csv" in said[0] else 1].startswith(
        f"warning: {out / 'notes.csv'} was changed since the run that wrote it; it is kept as notes.csv.kept")
    assert said[1 if "notes.csv" in said[0] else 0].startswith(
        f"warning: {out / 'old.csv'} was changed since the run that wrote it; it is left in place (the new run "
        "writes no such file)")


@pytest.mark.parametrize("mode", ["swap", "file-by-file"])
def test_a_folder_put_under_a_run_file_name_is_kept_on_rerun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             mode: str) -> None:
    import hashlib

    out = tmp_path / "out"
    digest = hashlib.sha256(b"first").hexdigest()
    with staged_outputs(out) as staging:
        (staging / "notes.csv").write_text("first")
        (staging / "run.json").write_text(json.dumps({"tool": "faceatlas", "files": {"a": "notes.csv"},
                                                      "file_sha256": {"notes.csv": digest}}))
    (out / "notes.csv").unlink()
    (out / "notes.csv").mkdir()
    (out / "notes.csv" / "mine.txt").write_text("my work")
    if mode == "file-by-file":
        monkeypatch.chdir(out)
    with staged_outputs(out) as staging:
        (staging / "notes.csv").write_text("second")
        (staging / "run.json").write_text(_record({"a": "notes.csv"}))
    assert (out / "notes.csv").read_text() == "second"
    assert (out / "notes.csv.kept" / "mine.txt").read_text() == "my work"


def test_a_ctrl_c_swallowed_by_a_c_callback_still_stops_the_run(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from job import stop

    out = tmp_path / "out"
    monkeypatch.setattr(stop, "_requested", [])

    def swallowed() -> None:
        with staged_outputs(out) as staging:
            (staging / "run.json").write_text(_record({}))
            with contextlib.suppress(KeyboardInterrupt):  # as numba's ctypes cache callback: prints it, carries on
                stop.request(signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        swallowed()
    assert os.listdir(tmp_path) == []  # the outputs were not put in place


def test_a_file_dropped_into_out_during_a_run_is_kept_and_the_run_lands(small_db: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import job.pipeline as pipeline

    out = tmp_path / "out"
    run(_config(small_db, out))
    render = pipeline.render

    def render_while_someone_writes(*args: object, **kwargs: object) -> object:
        (out / "notes.txt").write_text("mine")  # after the up-front check of --out, before the swap
        (out / "suspects.csv").write_text("my edited copy")  # edited since its run: kept, not replaced
        return render(*args, **kwargs)

    monkeypatch.setattr(pipeline, "render", render_while_someone_writes)
    run(_config(small_db, out))
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "suspects.csv.kept").read_text() == "my edited copy"
    open_run(out)


def test_a_file_changed_after_the_edit_check_still_counts_as_edited(tmp_path: Path) -> None:
    """The files are hashed before the swap; one changed between that and the swap is caught by its stat."""
    import hashlib

    from job.store.outputs import edited_files

    (tmp_path / "notes.csv").write_text("run")
    (tmp_path / "run.json").write_text(json.dumps({"tool": "faceatlas", "files": {"a": "notes.csv"}, "file_sha256": {
        "notes.csv": hashlib.sha256(b"run").hexdigest()}}))
    edits = edited_files(tmp_path)
    assert not edits.names and edits.since(tmp_path) == set()
    (tmp_path / "notes.csv").write_text("run, and a late note")
    assert edits.since(tmp_path) == {"notes.csv"}
