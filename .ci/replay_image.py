#!/usr/bin/env python3
"""Replay Dockerfile.cpu without Docker, and check that the image it describes would work.

What it does, in the Dockerfile's order:

* ``FROM python:X.Y-slim``: a fresh virtual environment (``python -m venv``) stands for the image's Python.
* ``ENV`` / ``ARG``: set for every later step, with the image paths ``/opt``, ``/data``, ``/tmp`` and
  ``/home`` moved under a temporary folder (``FS``, the image's file system; ``/tmp`` there is 1777).
* ``WORKDIR`` / ``COPY``: the copied files laid out under ``FS`` as in the image (``__pycache__`` left out).
* ``RUN``: each ``&&`` step is run with ``/bin/sh -c`` in the current ``WORKDIR``, as the current ``USER``.
  System steps are not replayed: ``useradd`` only records the user's uid/gid/home, ``apt-get`` and
  ``groupadd`` are skipped, and ``chown`` is applied to the mapped paths (when this runs as root).
* ``ENTRYPOINT`` + ``CMD``: run in the final ``WORKDIR`` (``/data`` mapped) as the final ``USER``; it must
  exit 0, write a run folder (``run.json``, ``projection.parquet``, PNG maps: every file ``run.json`` lists)
  that ``faceatlas verify`` accepts, and compile no numba kernel (the build-time warm-up covered them).

Run as root (CI is), every step after ``USER`` runs under that uid and the non-root user's access to the
caches and ``/data`` is really exercised; run as anyone else, everything runs as you and ownership is not
checked (the report says so). The Dockerfile parser here is also what ``tests/test_containers.py`` reads
the Dockerfiles with.

    python .ci/replay_image.py [--dockerfile Dockerfile.cpu] [--keep] [--json report.json] [--dry-run]

Exit status: 0 all checks passed, 1 a step or check failed, 2 the Dockerfile uses something this replay
cannot do (``RUN --mount``, heredocs, ``COPY --from``, a step that would change later steps' shell).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------------------
# Dockerfile parsing
# ---------------------------------------------------------------------------------------------------------

_CONTINUATION = re.compile(r"\\[ \t]*$")
_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9_-]*)\s*=\s*(.*?)\s*$")
_FLAG = re.compile(r"^--([a-z][a-z0-9-]*)(?:=(.*))?$")
_VAR = re.compile(r"\\\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-+])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


class Unsupported(ValueError):
    """The Dockerfile uses a construct this parser or replay does not handle."""


@dataclass(frozen=True)
class Instruction:
    """One instruction: its keyword (upper case), its arguments with continuation lines joined and comment
    lines inside them dropped, the line its keyword is on, and its leading ``--flag=value`` options."""

    keyword: str
    value: str
    line: int
    flags: dict[str, str] = field(default_factory=dict)

    @property
    def exec_form(self) -> list[str] | None:
        """The JSON-array (exec) form's words, or None for the shell form."""
        text = self.value.strip()
        if not text.startswith("["):
            return None
        try:
            words = json.loads(text)
        except json.JSONDecodeError:
            return None  # Docker, too, runs text that is not a valid JSON array in shell form
        if isinstance(words, list) and all(isinstance(word, str) for word in words):
            return words
        return None


def parse(text: str) -> list[Instruction]:
    """The instructions of a Dockerfile, in order (parser directives checked, comments dropped)."""
    lines = text.splitlines()
    index = 0
    while index < len(lines):  # parser directives: only at the very top, before any other line
        match = _DIRECTIVE.match(lines[index])
        if not match:
            break
        name, value = match.group(1).lower(), match.group(2)
        if name == "escape" and value != "\\":
            raise Unsupported(f"line {index + 1}: escape={value!r}: only the default backslash is supported")
        index += 1
    instructions: list[Instruction] = []
    parts: list[str] = []
    start = 0
    for number, line in enumerate(lines[index:], start=index + 1):
        stripped = line.strip()
        if not parts and (not stripped or stripped.startswith("#")):
            continue
        if parts and (not stripped or stripped.startswith("#")):
            continue  # comment and empty lines inside a continued instruction are dropped, as Docker does
        if not parts:
            start = number
        if _CONTINUATION.search(line):
            parts.append(_CONTINUATION.sub("", line))
            continue
        parts.append(line)
        instructions.append(_instruction("".join(parts), start))
        parts = []
    if parts:
        instructions.append(_instruction("".join(parts), start))
    return instructions


def _instruction(text: str, line: int) -> Instruction:
    keyword, _, rest = text.strip().partition(" ")
    keyword = keyword.upper()
    rest = rest.strip()
    if keyword in ("RUN", "COPY", "ADD") and re.search(r"<<-?[\"']?[A-Za-z_]", rest):
        raise Unsupported(f"line {line}: {keyword} with a heredoc is not supported by this parser")
    flags: dict[str, str] = {}
    if keyword in ("RUN", "COPY", "ADD", "FROM"):
        while rest.startswith("--"):
            word, _, tail = rest.partition(" ")
            match = _FLAG.match(word)
            if not match:
                break
            flags[match.group(1)] = match.group(2) if match.group(2) is not None else ""
            rest = tail.strip()
    return Instruction(keyword, rest, line, flags)


def expand(text: str, variables: dict[str, str]) -> str:
    """``$NAME``, ``${NAME}``, ``${NAME:-default}`` and ``${NAME:+alternative}`` as Docker substitutes them
    (in FROM, ENV, ARG, WORKDIR, USER, COPY); ``\\$`` is a literal dollar."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "\\$":
            return "$"
        name = match.group(1) or match.group(4)
        value = variables.get(name)
        operator, word = match.group(2), match.group(3)
        if operator in (":-", "-"):
            return value if value else (word or "")
        if operator in (":+", "+"):
            return (word or "") if value else ""
        return value or ""

    return _VAR.sub(one, text)


@dataclass(frozen=True)
class Step:
    """An instruction as the build meets it: the environment it sees (ARGs, then ENVs), the WORKDIR and
    USER in force, and for COPY/WORKDIR/USER/FROM its arguments after substitution."""

    instruction: Instruction
    env: dict[str, str]
    workdir: str
    user: str
    words: list[str]


@dataclass
class Stage:
    """One ``FROM`` and what follows it, with the state the stage ends in."""

    base: str
    alias: str | None
    steps: list[Step] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    args: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    user: str = ""
    shell: list[str] = field(default_factory=lambda: ["/bin/sh", "-c"])
    entrypoint: Instruction | None = None
    cmd: Instruction | None = None

    def runs(self) -> list[Step]:
        return [step for step in self.steps if step.instruction.keyword == "RUN"]

    def copies(self) -> list[Step]:
        return [step for step in self.steps if step.instruction.keyword in ("COPY", "ADD")]


def env_pairs(value: str, variables: dict[str, str]) -> list[tuple[str, str]]:
    """``ENV`` (or ``LABEL``) arguments as (key, value) pairs: ``k=v k2="v 2"``, or the legacy ``k v``."""
    words = shlex.split(value, posix=True)
    if not words:
        return []
    if "=" not in words[0]:  # legacy form: one key, the rest of the line its value
        key, _, rest = value.strip().partition(" ")
        return [(key, expand(" ".join(shlex.split(rest, posix=True)), variables))]
    pairs = []
    for word in words:
        key, sep, val = word.partition("=")
        if not sep:
            raise Unsupported(f"ENV {value!r}: {word!r} is not key=value")
        pairs.append((key, expand(val, variables)))
    return pairs


def stages(instructions: list[Instruction], build_args: dict[str, str] | None = None) -> list[Stage]:
    """Evaluate the instructions into stages: ARG scoping (global ARGs feed FROM and are re-declared inside
    a stage), ENV, WORKDIR (relative to the previous one), USER, SHELL, ENTRYPOINT and CMD."""
    build_args = dict(build_args or {})
    global_args: dict[str, str] = {}
    result: list[Stage] = []
    stage: Stage | None = None
    for ins in instructions:
        if ins.keyword == "ARG":
            name, sep, default = ins.value.strip().partition("=")
            name = name.strip()
            scope = global_args if stage is None else {**stage.args, **stage.env}
            if name in build_args:
                value = build_args[name]
            elif sep:
                value = expand(default.strip().strip('"'), scope)
            else:
                value = global_args.get(name, "") if stage is not None else ""
            if stage is None:
                global_args[name] = value
            else:
                stage.args[name] = value
            if stage is not None:
                stage.steps.append(Step(ins, {**stage.args, **stage.env}, stage.workdir, stage.user, [name, value]))
            continue
        if ins.keyword == "FROM":
            words = expand(ins.value, global_args).split()
            alias = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            parent = next((s for s in result if s.alias == words[0]), None)
            stage = Stage(base=words[0], alias=alias)
            if parent is not None:  # FROM an earlier stage inherits its state
                stage.env, stage.workdir, stage.user = dict(parent.env), parent.workdir, parent.user
            result.append(stage)
            stage.steps.append(Step(ins, {}, stage.workdir, stage.user, words))
            continue
        if stage is None:
            raise Unsupported(f"line {ins.line}: {ins.keyword} before the first FROM")
        scope = {**stage.args, **stage.env}
        words: list[str] = []
        if ins.keyword == "ENV":
            for key, value in env_pairs(ins.value, scope):
                stage.env[key] = value
                words += [key, value]
        elif ins.keyword == "WORKDIR":
            target = expand(ins.value.strip(), scope)
            stage.workdir = os.path.normpath(os.path.join(stage.workdir, target))
            words = [stage.workdir]
        elif ins.keyword == "USER":
            stage.user = expand(ins.value.strip(), scope)
            words = [stage.user]
        elif ins.keyword in ("COPY", "ADD"):
            words = ins.exec_form or shlex.split(ins.value, posix=True)
            words = [expand(word, scope) for word in words]
        elif ins.keyword == "SHELL":
            shell = ins.exec_form
            if not shell:
                raise Unsupported(f"line {ins.line}: SHELL must be a JSON array")
            stage.shell = shell
        elif ins.keyword == "ENTRYPOINT":
            stage.entrypoint = ins
            stage.cmd = None  # Docker resets an inherited CMD when ENTRYPOINT is set
        elif ins.keyword == "CMD":
            stage.cmd = ins
        stage.steps.append(Step(ins, {**stage.args, **stage.env}, stage.workdir, stage.user, words))
    return result


def load(path: Path, build_args: dict[str, str] | None = None) -> list[Stage]:
    return stages(parse(path.read_text(encoding="utf-8")), build_args)


def shell_steps(command: str) -> list[str]:
    """Split a shell-form RUN at its top-level ``&&`` (quotes and backslash escapes respected)."""
    steps: list[str] = []
    current: list[str] = []
    quote = ""
    i = 0
    while i < len(command):
        char = command[i]
        if quote:
            current.append(char)
            if char == "\\" and quote == '"' and i + 1 < len(command):
                current.append(command[i + 1])
                i += 1
            elif char == quote:
                quote = ""
        elif char == "\\" and i + 1 < len(command):
            current += [char, command[i + 1]]
            i += 1
        elif char in "'\"":
            quote = char
            current.append(char)
        elif command.startswith("&&", i):
            steps.append("".join(current).strip())
            current = []
            i += 1
        else:
            current.append(char)
        i += 1
    if quote:
        raise Unsupported(f"unbalanced quote in RUN {command!r}")
    steps.append("".join(current).strip())
    return [step for step in steps if step]


def command_word(step: str) -> tuple[str, list[str]]:
    """The command a shell step runs (leading ``NAME=value`` assignments skipped) and its words."""
    words = shlex.split(step, posix=True)
    rest = list(words)
    while rest and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", rest[0]):
        rest.pop(0)
    return (rest[0] if rest else ""), rest


SYSTEM_SKIPPED = {"apt-get", "apt", "dpkg", "groupadd", "addgroup", "usermod", "groupmod", "update-alternatives"}
CHANGES_THE_SHELL = {"cd", "export", "set", "source", ".", "unset", "alias", "umask"}


def classify(step: str) -> str:
    """How the replay treats one RUN step: "run", "useradd", "chown", "skip", or "unsupported"."""
    word, _ = command_word(step)
    if not word or word in CHANGES_THE_SHELL:
        return "unsupported"
    if word in ("useradd", "adduser"):
        return "useradd"
    if word == "chown":
        return "chown"
    if word in SYSTEM_SKIPPED:
        return "skip"
    return "run"


@dataclass
class User:
    uid: int
    gid: int
    home: str | None


def parse_useradd(step: str) -> tuple[str, User]:
    """The name, uid, gid and home that a ``useradd`` step creates (``--uid/-u``, ``--user-group/-U``,
    ``--gid/-g``, ``--create-home/-m``, ``--home-dir/-d``)."""
    _, words = command_word(step)
    uid = gid = None
    home = None
    create_home = False
    name = None
    args = iter(words[1:])
    for word in args:
        option, eq, inline = word.partition("=")
        if option in ("--uid", "-u"):
            uid = int(inline if eq else next(args))
        elif option in ("--gid", "-g"):
            value = inline if eq else next(args)
            gid = int(value) if value.isdigit() else None
        elif option in ("--home-dir", "-d"):
            home = inline if eq else next(args)
        elif option in ("--create-home", "-m"):
            create_home = True
        elif option in ("--user-group", "-U"):
            pass
        elif option in ("--shell", "-s", "--comment", "-c", "--groups", "-G", "--key", "-K"):
            if not eq:
                next(args)
        elif not word.startswith("-"):
            name = word
    if name is None or uid is None:
        raise Unsupported(f"{step!r}: the replay needs the user's name and a numeric --uid")
    if gid is None:  # --user-group, and Debian's default without it (USERGROUPS_ENAB): a group of the same id
        gid = uid
    if home is None and create_home:
        home = f"/home/{name}"
    return name, User(uid, gid, home)


# ---------------------------------------------------------------------------------------------------------
# The replay
# ---------------------------------------------------------------------------------------------------------

MAPPED = ("opt", "data", "tmp", "home")
CLEAN_ENV = ("VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "CONDA_PREFIX", "CONDA_DEFAULT_ENV",
             "NUMBA_CACHE_DIR", "MPLCONFIGDIR", "XDG_CACHE_HOME", "CUDA_VISIBLE_DEVICES")


@dataclass
class Record:
    line: int
    keyword: str
    text: str
    action: str
    seconds: float = 0.0
    rc: int | None = None
    user: str = ""
    note: str = ""
    output_tail: str = ""


@dataclass
class Report:
    dockerfile: str
    base: str
    python: str
    as_root: bool
    folder: str
    records: list[Record] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0
    ok: bool = False

    def as_json(self) -> dict[str, Any]:
        data = dict(vars(self))
        data["records"] = [vars(record) for record in self.records]
        return data


class Replay:
    def __init__(self, dockerfile: Path, folder: Path, python: str, log: Any = print) -> None:
        self.dockerfile = dockerfile
        self.folder = folder
        self.fs = folder / "fs"
        self.venv = folder / "venv"
        self.python = python
        self.log = log
        self.as_root = hasattr(os, "geteuid") and os.geteuid() == 0
        self.users: dict[str, User] = {"root": User(0, 0, "/root")}
        self.stage = load(dockerfile)[-1]
        self.report = Report(str(dockerfile), self.stage.base, python, self.as_root, str(folder))
        self.drop_privileges = self.as_root  # steps after a non-root USER run under that uid

    def known_users(self) -> dict[str, User]:
        """The users the Dockerfile's useradd steps create (read ahead, without running anything)."""
        users = dict(self.users)
        for step in self.stage.runs():
            if step.instruction.exec_form is None:
                for text in shell_steps(step.instruction.value):
                    if classify(text) == "useradd":
                        name, created = parse_useradd(text)
                        users[name] = created
        return users

    def choose_python(self, candidates: list[str]) -> None:
        """The first candidate of the FROM's Python version that can make a venv and that the image's final
        user can run (an interpreter under /root, as pyenv's, cannot be run by uid 1000); if none can, the
        first of the right version, with every step run as root and a note saying so."""
        wanted = re.match(r"^python:(\d+\.\d+)", self.stage.base)
        self.users = self.known_users()
        uid = self.resolve_user(self.stage.user) if self.stage.user else self.users["root"]
        seen: set[str] = set()
        fallback = None
        for candidate in candidates:
            real = os.path.realpath(candidate)
            if not os.path.exists(real) or real in seen:
                continue
            seen.add(real)
            probe = [candidate, "-c", "import sys, venv, ensurepip; print('%d.%d' % sys.version_info[:2])"]
            mine = subprocess.run(probe, capture_output=True, text=True)
            if mine.returncode != 0 or (wanted and mine.stdout.strip() != wanted.group(1)):
                continue
            fallback = fallback or candidate
            if not (self.as_root and uid.uid != 0):
                self.python = candidate
                break
            theirs = self.process(probe, dict(os.environ), Path("/"), uid)
            if theirs.returncode == 0:
                self.python = candidate
                break
        else:
            if fallback is None:
                raise Unsupported(f"no Python {wanted.group(1) if wanted else ''} with venv found "
                                  f"(tried {', '.join(candidates)}); pass --python")
            self.python = fallback
            self.drop_privileges = False
            self.report.notes.append(f"no Python that uid {uid.uid} can run: every step ran as root, so the "
                                     "non-root user's access to caches and /data was not exercised")
        self.report.python = self.python

    # -- paths and processes ----------------------------------------------------------------------------
    def map_text(self, text: str) -> str:
        """Image paths (``/opt/...``, ``/data``, ``/tmp/...``, ``/home/...``) moved under the replay's FS."""
        pattern = r"(?<![\w./-])/(" + "|".join(MAPPED) + r")(?=/|$|[\s\"';:])"
        return re.sub(pattern, lambda m: f"{self.fs}/{m.group(1)}", text)

    def map_path(self, path: str) -> Path:
        if os.path.normpath(path) == "/":
            return self.fs
        mapped = self.map_text(path)
        if mapped == path and path.startswith("/"):
            raise Unsupported(f"{path}: outside the folders the replay maps ({', '.join('/' + m for m in MAPPED)})")
        return Path(mapped)

    def resolve_user(self, user: str) -> User:
        name, _, group = (user or "root").partition(":")
        if name.isdigit():
            known = next((u for u in self.users.values() if u.uid == int(name)), None)
            found = User(int(name), known.gid if known else 0, known.home if known else None)
        elif name in self.users:
            found = self.users[name]
        else:
            raise Unsupported(f"USER {user}: no useradd step creates it")
        if group:
            found = User(found.uid, int(group) if group.isdigit() else self.users[group].gid, found.home)
        return found

    def environment(self, step_env: dict[str, str], user: User) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if key not in CLEAN_ENV}
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"
        env["LANG"] = "C.UTF-8"  # as the python images set it
        if user.uid != 0 and self.drop_privileges:
            env["HOME"] = str(self.map_path(user.home)) if user.home else str(self.fs)
        elif not self.as_root:
            env["HOME"] = str(self.fs / "home" / "replay")
        for key, value in step_env.items():
            env[key] = self.map_text(value)
        return env

    def process(self, argv: list[str], env: dict[str, str], cwd: Path, user: User,
                timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        extra: dict[str, Any] = {}
        if self.drop_privileges and user.uid != 0:
            extra = {"user": user.uid, "group": user.gid, "extra_groups": []}
        try:
            return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, **extra)
        except OSError as exc:  # e.g. the interpreter is where this uid cannot read: as a shell would say it
            return subprocess.CompletedProcess(argv, 126, "", f"{argv[0]}: {exc.strerror}")
        except subprocess.TimeoutExpired as exc:
            return subprocess.CompletedProcess(argv, 124, "", f"timed out after {exc.timeout:.0f} s")

    # -- instructions -----------------------------------------------------------------------------------
    def setup(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o755)
        for name in MAPPED:
            (self.fs / name).mkdir(parents=True, exist_ok=True)
            (self.fs / name).chmod(0o755)
        (self.fs / "tmp").chmod(0o1777)
        (self.fs / "home" / "replay").mkdir(exist_ok=True)

    def do_from(self, step: Step) -> Record:
        match = re.match(r"^python:(\d+\.\d+)", step.words[0])
        if not match:
            raise Unsupported(f"FROM {step.words[0]}: the replay stands in a virtual environment for python:X.Y only")
        started = time.perf_counter()
        done = subprocess.run([self.python, "-m", "venv", str(self.venv)], capture_output=True, text=True)
        version = subprocess.run([str(self.venv / "bin" / "python"), "-c",
                                  "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                                 capture_output=True, text=True).stdout.strip()
        note = f"venv on Python {version}"
        if not version.startswith(match.group(1) + "."):
            note += f" (the image has Python {match.group(1)}: results may differ)"
            self.report.notes.append(note)
        return Record(step.instruction.line, "FROM", step.words[0], "venv", time.perf_counter() - started,
                      done.returncode, note=note, output_tail=_tail(done.stdout + done.stderr))

    def do_workdir(self, step: Step) -> None:
        path = self.map_path(step.workdir)
        path.mkdir(parents=True, exist_ok=True)

    def do_copy(self, step: Step) -> Record:
        ins = step.instruction
        if "from" in ins.flags or ins.keyword == "ADD":
            raise Unsupported(f"line {ins.line}: {ins.keyword} is replayed only as a COPY from the build context")
        *sources, dest = step.words
        target = dest if dest.startswith("/") else os.path.join(step.workdir, dest)
        target_path = self.map_path(target)
        into_folder = dest.endswith("/") or len(sources) > 1
        owner = self.resolve_user(ins.flags["chown"]) if "chown" in ins.flags else None
        for source in sources:
            src = (ROOT / source).resolve()
            if not src.exists() or ROOT not in (src, *src.parents):
                raise FileNotFoundError(f"line {ins.line}: COPY {source}: not in the build context {ROOT}")
            if src.is_dir():  # Docker copies a folder's contents, not the folder itself
                shutil.copytree(src, target_path, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                final = target_path / src.name if into_folder or target_path.is_dir() else target_path
                final.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, final)
        if owner is not None and self.as_root:
            for path in [target_path, *target_path.rglob("*")]:
                os.chown(path, owner.uid, owner.gid)
        return Record(ins.line, "COPY", " ".join(step.words), "copied", note=f"-> {target_path}")

    def do_run(self, step: Step) -> list[Record]:
        ins = step.instruction
        if "mount" in ins.flags:
            raise Unsupported(f"line {ins.line}: RUN --mount is not replayed")
        user = self.resolve_user(step.user)
        env = self.environment(step.env, user)
        cwd = self.map_path(step.workdir)
        exec_form = ins.exec_form
        pieces = [json.dumps(exec_form)] if exec_form else shell_steps(ins.value)
        records = []
        for text in pieces:
            record = Record(ins.line, "RUN", text, "run", user=step.user or "root")
            records.append(record)
            action = "run" if exec_form else classify(text)
            record.action = action
            started = time.perf_counter()
            if action == "unsupported":
                raise Unsupported(f"line {ins.line}: {text!r} would change the shell of later steps; the replay "
                                  "runs each && step on its own")
            if action == "useradd":
                name, created = parse_useradd(text)
                self.users[name] = created
                if created.home:
                    home = self.map_path(created.home)
                    home.mkdir(parents=True, exist_ok=True)
                    if self.as_root:
                        os.chown(home, created.uid, created.gid)
                record.note = f"recorded {name}: uid {created.uid}, gid {created.gid}, home {created.home}"
                continue
            if action == "skip":
                record.note = "system step, not replayed"
                continue
            if action == "chown":
                record.note = self.chown(text)
                continue
            argv = exec_form if exec_form else [*self.stage.shell, self.map_text(text)]
            self.log(f"  RUN (line {ins.line}, as {record.user}): {text}")
            done = self.process(argv, env, cwd, user)
            record.seconds = time.perf_counter() - started
            record.rc = done.returncode
            record.output_tail = _tail(done.stdout + done.stderr)
            if done.returncode != 0:
                break
        return records

    def chown(self, step: str) -> str:
        _, words = command_word(step)
        args = [word for word in words[1:] if not word.startswith("-")]
        recursive = any(word in ("-R", "--recursive") for word in words[1:])
        owner, paths = args[0], args[1:]
        name, _, group = owner.partition(":")
        user = self.resolve_user(name)
        gid = (int(group) if group.isdigit() else self.users[group].gid) if group else -1
        if not self.as_root:
            return "not root: ownership not replayed"
        for path in paths:
            mapped = self.map_path(path)
            for item in [mapped, *(mapped.rglob("*") if recursive else [])]:
                os.chown(item, user.uid, gid)
        return f"chown {user.uid}:{gid if gid >= 0 else '-'} on {', '.join(paths)} (mapped)"

    # -- the container run --------------------------------------------------------------------------------
    def container_argv(self) -> list[str]:
        entry = self.stage.entrypoint
        cmd = self.stage.cmd
        if entry is None or entry.exec_form is None:
            raise Unsupported("the replay runs an exec-form ENTRYPOINT only")
        tail: list[str] = []
        if cmd is not None:
            tail = cmd.exec_form if cmd.exec_form is not None else [*self.stage.shell, cmd.value]
        return [*entry.exec_form, *tail]

    def run_container(self) -> None:
        argv = self.container_argv()
        user = self.resolve_user(self.stage.user)
        env = self.environment(self.stage.env, user)
        cwd = self.map_path(self.stage.workdir)
        out_image = argv[argv.index("--out") + 1] if "--out" in argv else os.path.join(self.stage.workdir,
                                                                                        "faceatlas-out")
        out = self.map_path(out_image if out_image.startswith("/") else os.path.join(self.stage.workdir, out_image))
        numba_dir = Path(env["NUMBA_CACHE_DIR"]) if "NUMBA_CACHE_DIR" in self.stage.env else None
        before = _files(numba_dir)
        mapped_argv = [self.map_text(word) for word in argv]
        self.log(f"  ENTRYPOINT + CMD (as {self.stage.user or 'root'}, in {self.stage.workdir}): {shlex.join(argv)}")
        started = time.perf_counter()
        done = self.process(mapped_argv, env, cwd, user)
        record = Record(self.stage.entrypoint.line, "ENTRYPOINT+CMD", shlex.join(argv), "container",
                        time.perf_counter() - started, done.returncode, user=self.stage.user or "root",
                        output_tail=_tail(done.stdout + done.stderr))
        self.report.records.append(record)
        checks = self.report.checks
        checks["container exits 0"] = done.returncode == 0
        run_json = out / "run.json"
        checks["run.json written"] = run_json.is_file()
        listed: list[str] = []
        if run_json.is_file():
            data = json.loads(run_json.read_text(encoding="utf-8"))
            listed = sorted(set(data.get("files", {}).values()) | set(data.get("file_sha256", {})))
            record.note = f"backend {data.get('backend')}; {len(listed)} files"
        checks["projection.parquet is Parquet"] = _magic(out / "projection.parquet", b"PAR1", tail=b"PAR1")
        pngs = sorted(out.glob("map_*.png")) if out.is_dir() else []
        checks["map PNGs written"] = len(pngs) >= 3 and all(_magic(png, b"\x89PNG\r\n\x1a\n") for png in pngs)
        checks["every file run.json lists exists"] = bool(listed) and all((out / name).is_file() for name in listed)
        if done.returncode == 0 and run_json.is_file():
            verify = self.process([*argv[:1], "verify", str(out)], env, cwd, user)
            checks["faceatlas verify accepts the run"] = verify.returncode == 0
            if verify.returncode != 0:
                record.note += f"; verify: {_tail(verify.stdout + verify.stderr, 400)}"
        if numba_dir is not None:
            compiled = sorted(str(path.relative_to(numba_dir)) for path in _files(numba_dir) - before)
            checks["the run compiles no numba kernel (build-time warm-up)"] = not compiled
            if compiled:
                self.report.notes.append(f"numba cache files the run added: {compiled[:10]}")
        if self.drop_privileges and user.uid != 0 and out.is_dir():
            checks["outputs owned by the image's user"] = all(path.stat().st_uid == user.uid for path in out.iterdir())
        elif not self.as_root:
            self.report.notes.append("not run as root: every step ran as the current user, so the non-root "
                                     "user's access to caches and /data was not exercised")

    # -- driver -------------------------------------------------------------------------------------------
    def plan(self) -> list[tuple[int, str, str, str]]:
        """(line, keyword, text, action) for every step, without running anything."""
        rows = []
        for step in self.stage.steps:
            ins = step.instruction
            if ins.keyword == "RUN":
                if "mount" in ins.flags:
                    raise Unsupported(f"line {ins.line}: RUN --mount is not replayed")
                for text in ([json.dumps(ins.exec_form)] if ins.exec_form else shell_steps(ins.value)):
                    action = "run" if ins.exec_form else classify(text)
                    if action == "unsupported":
                        raise Unsupported(f"line {ins.line}: {text!r} would change the shell of later steps")
                    rows.append((ins.line, "RUN", text, action))
            elif ins.keyword in ("COPY", "ADD"):
                if "from" in ins.flags or ins.keyword == "ADD":
                    raise Unsupported(f"line {ins.line}: {ins.keyword} is replayed only as a COPY from the context")
                rows.append((ins.line, ins.keyword, " ".join(step.words), "copy"))
            else:
                rows.append((ins.line, ins.keyword, ins.value, "state"))
        self.container_argv()
        return rows

    def run(self) -> Report:
        started = time.perf_counter()
        self.setup()
        try:
            for step in self.stage.steps:
                keyword = step.instruction.keyword
                if keyword == "FROM":
                    record = self.do_from(step)
                    self.report.records.append(record)
                    if record.rc != 0:
                        return self.report
                elif keyword == "WORKDIR":
                    self.do_workdir(step)
                elif keyword in ("COPY", "ADD"):
                    self.report.records.append(self.do_copy(step))
                elif keyword == "RUN":
                    records = self.do_run(step)
                    self.report.records += records
                    if any(record.rc not in (None, 0) for record in records):
                        self.report.checks[f"RUN at line {step.instruction.line} succeeds"] = False
                        return self.report
            self.report.checks["every RUN step succeeds"] = True
            self.run_container()
        finally:
            self.report.wall_seconds = time.perf_counter() - started
            self.report.ok = bool(self.report.checks) and all(self.report.checks.values())
        return self.report


def _files(folder: Path | None) -> set[Path]:
    if folder is None or not folder.is_dir():
        return set()
    return {path for path in folder.rglob("*") if path.is_file()}


def _magic(path: Path, head: bytes, tail: bytes = b"") -> bool:
    if not path.is_file():
        return False
    data = path.read_bytes()
    return data.startswith(head) and data.endswith(tail)


def _tail(text: str, limit: int = 3000) -> str:
    return text if len(text) <= limit else "..." + text[-limit:]


def python_candidates(base: str) -> list[str]:
    """Interpreters that may match the FROM line's ``python:X.Y``: this one, ``pythonX.Y`` on PATH, the
    system's."""
    match = re.match(r"^python:(\d+\.\d+)", base)
    version = match.group(1) if match else "%d.%d" % sys.version_info[:2]
    found = [sys.executable, getattr(sys, "_base_executable", sys.executable)]
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if folder and "shims" not in folder:
            found.append(os.path.join(folder, f"python{version}"))
    found += [f"/usr/local/bin/python{version}", f"/usr/bin/python{version}"]
    return found


def summary(report: Report) -> str:
    lines = [f"replay of {report.dockerfile} ({report.base}) in {report.folder}: "
             f"{'OK' if report.ok else 'FAILED'} in {report.wall_seconds:.1f} s"
             + ("" if report.as_root else " (not as root: ownership not checked)")]
    for record in report.records:
        took = f"{record.seconds:6.1f} s" if record.rc is not None else "       -"
        status = "" if record.rc in (None, 0) else f"  [exit {record.rc}]"
        note = f"  ({record.note})" if record.note else ""
        lines.append(f"  {took}  line {record.line:>3} {record.keyword:<14} {record.action:<9} "
                     f"{record.text[:90]}{note}{status}")
    for name, passed in report.checks.items():
        lines.append(f"  [{'ok' if passed else 'FAIL'}] {name}")
    lines += [f"  note: {note}" for note in report.notes]
    failed = [record for record in report.records if record.rc not in (None, 0)]
    if failed:
        lines.append(f"--- output of the failed step (line {failed[0].line}) ---\n{failed[0].output_tail}")
    elif not report.ok and report.records:
        lines.append(f"--- output of the last step ---\n{report.records[-1].output_tail}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dockerfile", type=Path, default=ROOT / "Dockerfile.cpu")
    parser.add_argument("--folder", type=Path, default=None, help="work here (default: a new temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the folder (it is always kept on failure)")
    parser.add_argument("--json", type=Path, default=None, help="write the report here as JSON")
    parser.add_argument("--python", default=None, help="interpreter for the venv (default: one of the FROM's "
                        "version that the image's user can run)")
    parser.add_argument("--dry-run", action="store_true", help="print what would be replayed and stop")
    args = parser.parse_args(argv)
    folder = args.folder or Path(tempfile.mkdtemp(prefix="faceatlas-replay-"))
    try:
        replay = Replay(args.dockerfile.resolve(), folder.resolve(), args.python or sys.executable)
        if args.dry_run:
            for line, keyword, text, action in replay.plan():
                print(f"line {line:>3} {keyword:<10} {action:<9} {text}")
            return 0
        replay.plan()  # refuse what cannot be replayed before installing anything
        replay.choose_python([args.python] if args.python else python_candidates(replay.stage.base))
        report = replay.run()
    except Unsupported as exc:
        print(f"replay_image: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:  # a COPY source missing from the build context
        print(f"replay_image: {exc}", file=sys.stderr)
        return 1
    print(summary(report))
    if args.json:
        args.json.write_text(json.dumps(report.as_json(), indent=2), encoding="utf-8")
    if report.ok and not args.keep and args.folder is None:
        shutil.rmtree(folder, ignore_errors=True)
    elif not report.ok:
        print(f"kept {folder} for a look", file=sys.stderr)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
