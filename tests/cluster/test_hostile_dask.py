"""``--dask`` at hostile addresses (issue 25, third round): each ends quickly with its exit code and one line, writes
nothing, and never repeats a password.

The servers here are real sockets on 127.0.0.1: one that accepts and never answers, one that answers in HTTP, one
that answers garbage, and a real Dask scheduler's HTTP (dashboard) port, which distributed serves even without
bokeh (``/health`` answers "ok"). Runs use the built-in 600-face demo; every refusal comes before it is read.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from job.address import parse_address, shown_address
from job.cli import app
from job.cluster.session import HANDSHAKE_GRACE
from job.errors import UsageError

pytestmark = pytest.mark.slow  # the cluster tier: schedulers and LocalClusters (pytest -m 'not slow' leaves it out)

ROOT = Path(__file__).parents[2]
SMOKE = str(ROOT / "configs" / "smoke.toml")
USER, SECRET = "alice-the-user", "hunter2-pa55"
SLACK = 3.0  # seconds past the handshake deadline for the run around it (a correctness bound, not a benchmark)
Answer = Callable[[socket.socket], None]


def _silent(conn: socket.socket) -> None:
    """Accept and never answer (the connection stays open until the test ends)."""


def _http(conn: socket.socket) -> None:
    conn.settimeout(5)
    conn.recv(65536)  # Dask's handshake, taken for a request
    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nBad Request")


def _garbage(conn: socket.socket) -> None:
    conn.sendall(bytes(range(256)) * 4)


def _zeros(conn: socket.socket) -> None:
    conn.sendall(bytes(64))  # a zero-length Dask frame, then nonsense


def _hang_up(conn: socket.socket) -> None:
    conn.close()


@contextmanager
def _listener(answer: Answer) -> Iterator[int]:
    """A TCP server on 127.0.0.1 that treats every connection with ``answer``; its port. Closed on the way out."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    done, conns = threading.Event(), []

    def accept() -> None:
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conns.append(conn)
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        done.set()
        thread.join(timeout=5)
        server.close()
        for conn in conns:
            conn.close()


@pytest.fixture
def scheduler_http_port() -> Iterator[int]:
    """A real Dask scheduler (no workers) with its HTTP server on 127.0.0.1; the port of that HTTP server."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=0, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0",
                      silence_logs=logging.ERROR) as cluster:
        port = cluster.scheduler.http_server.port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as reply:
            assert reply.read() == b"ok"  # an HTTP port of the scheduler, bokeh or not
        yield port


def _run(tmp_path: Path, *args: str) -> tuple[Result, float]:
    """``faceatlas run`` on the built-in demo with ``args``; the result and its seconds."""
    started = time.monotonic()
    result = CliRunner().invoke(app, ["run", "--config", SMOKE, "--out", str(tmp_path / "out"), *args])
    return result, time.monotonic() - started


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"" for p in sorted(root.rglob("*"))}


def _refused(result: Result, exit_code: int, message: str, caplog: pytest.LogCaptureFixture | None = None) -> str:
    """Assert: ``exit_code``, exactly one error line and the last thing said, ``message`` in it, no traceback, no
    credential anywhere (output, error, logs); the error line."""
    said = result.output + result.stderr
    assert result.exit_code == exit_code, said
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("faceatlas: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert "Traceback" not in said and "Exception ignored" not in said
    assert message in errors[0], errors[0]
    assert ";" in errors[0]  # problem; fix
    logged = caplog.text if caplog is not None else ""
    for secret in (SECRET, USER):
        assert secret not in said and secret not in logged
    return errors[0]


def _no_loop_left() -> bool:
    return not any(thread.name == "faceatlas-dask-loop" for thread in threading.enumerate())


# 1. a deadline on the whole handshake
def test_a_silent_listener_ends_within_the_timeout(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    before = _snapshot(tmp_path)
    with _listener(_silent) as port:
        result, seconds = _run(tmp_path, "--dask", f"tcp://127.0.0.1:{port}", "--set", "dask.timeout=3")
    _refused(result, 7, "did not answer Dask's handshake within 3 s", caplog)
    assert seconds < 3 + HANDSHAKE_GRACE + SLACK, seconds
    assert _snapshot(tmp_path) == before and _no_loop_left()


def test_a_silent_listener_does_not_hold_the_process_at_exit(tmp_path: Path) -> None:
    """The command itself, in a process of its own: it exits (no thread or loop left holding it) in time."""
    with _listener(_silent) as port:
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-c", "from job.cli import main; main()", "run", "--config", SMOKE,
                               "--out", str(tmp_path / "out"), "--dask", f"127.0.0.1:{port}", "--set",
                               "dask.timeout=2"], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
        seconds = time.monotonic() - started
    assert done.returncode == 7, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("faceatlas: error: ") and "Traceback" not in done.stderr
    assert seconds < 2 + HANDSHAKE_GRACE + SLACK + 5, seconds  # + the interpreter's start and imports
    assert not (tmp_path / "out").exists()


def test_a_schedulers_dashboard_port_is_not_the_scheduler(scheduler_http_port: int, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """8787 for 8786: Tornado waits for the rest of an HTTP request that never comes, so to Dask it is silent."""
    caplog.set_level(logging.DEBUG)
    before = _snapshot(tmp_path)
    result, seconds = _run(tmp_path, "--dask", f"tcp://127.0.0.1:{scheduler_http_port}", "--set", "dask.timeout=2")
    error = _refused(result, 7, "is not a Dask scheduler", caplog)
    assert "8786" in error and "8787" in error
    assert seconds < 2 + HANDSHAKE_GRACE + SLACK, seconds
    assert _snapshot(tmp_path) == before


def test_a_silent_ws_listener_ends_within_the_timeout(tmp_path: Path) -> None:
    """ws:// is supported (Tornado's websockets, always installed with distributed), with the same deadline."""
    with _listener(_silent) as port:
        result, seconds = _run(tmp_path, "--dask", f"ws://127.0.0.1:{port}", "--set", "dask.timeout=2")
    _refused(result, 7, f"--dask ws://127.0.0.1:{port}: ")
    assert seconds < 2 + HANDSHAKE_GRACE + SLACK, seconds
    assert not (tmp_path / "out").exists()


# 2. a server that answers, but not in Dask's protocol
@pytest.mark.parametrize(("answer", "message"), [
    (_http, ("is not a Dask scheduler (it answered in another protocol, e.g. HTTP: reading its reply as a Dask "
             "message failed with MemoryError)")),
    (_garbage, "is not a Dask scheduler"),
    (_zeros, "is not a Dask scheduler"),
    (_hang_up, "closed the connection during Dask's handshake"),
], ids=["HTTP reply", "garbage", "zeros", "hangs up"])
def test_a_server_that_is_not_dask_is_exit_7(answer: Answer, message: str, tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    before = _snapshot(tmp_path)
    with _listener(answer) as port:
        result, seconds = _run(tmp_path, "--dask", f"tcp://127.0.0.1:{port}", "--set", "dask.timeout=3")
    error = _refused(result, 7, message, caplog)
    assert "check the port (a Dask scheduler listens on 8786, its dashboard on 8787)" in error
    assert seconds < 3 + HANDSHAKE_GRACE + SLACK, seconds
    assert _snapshot(tmp_path) == before and _no_loop_left()


# 3. credentials: refused up front, never repeated
@pytest.mark.parametrize("address", [
    f"tcp://{USER}:{SECRET}@127.0.0.1:8786",
    f"{USER}:{SECRET}@127.0.0.1:8786",
    f"tls://{USER}:{SECRET}@scheduler.internal:8786?token={SECRET}",
    f"tcp://{USER}:{SECRET}?#/x@127.0.0.1:8786",  # '?', '#' and '/' in the password
    f"tcp://{USER}:pa@{SECRET}@127.0.0.1:8786",  # '@' in the password
    f"tcp://{SECRET}@127.0.0.1:8786",  # a token as the user name
    f"local:2@{USER}:{SECRET}",
])
@pytest.mark.parametrize("how", ["--dask", "--debug", "config file"])
def test_credentials_are_refused_and_never_shown(address: str, how: str, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    before = _snapshot(tmp_path)
    if how == "config file":
        config = tmp_path / "cluster.toml"
        config.write_text(f'[dask]\naddress = "{address}"\n')
        before = _snapshot(tmp_path)
        result = CliRunner().invoke(app, ["run", "--config", str(config), "--out", str(tmp_path / "out")])
    else:
        result = CliRunner().invoke(app, [*(["--debug"] if how == "--debug" else []), "run", "--config", SMOKE,
                                          "--out", str(tmp_path / "out"), "--dask", address])
    if how == "--debug":  # the traceback is asked for; the password is still not in it
        assert result.exit_code == 2 and SECRET not in result.output + result.stderr and USER not in result.stderr
    else:
        _refused(result, 2, "dask.address", caplog)
    if not address.startswith("local:"):
        assert "carries no credentials" in result.stderr
    assert _snapshot(tmp_path) == before


# 4. every protocol supported or refused up front
def test_inproc_is_a_usage_error(tmp_path: Path) -> None:
    result, _ = _run(tmp_path, "--dask", "inproc://127.0.0.1/4242/1")
    _refused(result, 2, "an inproc:// scheduler lives inside one Python process")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("scheme", ["tls", "wss"])
def test_tls_without_certificates_is_exit_7(scheme: str, tmp_path: Path) -> None:
    result, seconds = _run(tmp_path, "--dask", f"{scheme}://127.0.0.1:8786")
    error = _refused(result, 7, f"a {scheme}:// scheduler needs TLS certificates and Dask has none configured")
    assert "distributed.comm.tls.ca-file" in error and "DASK_DISTRIBUTED__COMM__TLS__CA_FILE" in error
    assert seconds < 5 and not (tmp_path / "out").exists()


def test_tls_with_a_missing_certificate_is_exit_7(tmp_path: Path) -> None:
    import dask

    missing = str(tmp_path / "no-ca.pem")
    with dask.config.set({"distributed.comm.tls.ca-file": missing, "distributed.comm.tls.client.cert": missing}):
        result, _ = _run(tmp_path, "--dask", "tls://127.0.0.1:8786")
    _refused(result, 7, "Dask's TLS configuration cannot be used (FileNotFoundError")
    assert not (tmp_path / "out").exists()


def test_tcp_where_dask_requires_encryption_is_exit_7(tmp_path: Path) -> None:
    import dask

    with dask.config.set({"distributed.comm.require-encryption": True}):
        result, _ = _run(tmp_path, "--dask", "tcp://127.0.0.1:8786")
    _refused(result, 7, "use the scheduler's tls:// address")


@pytest.mark.skipif(find_spec("distributed_ucxx") is not None, reason="distributed-ucxx is installed here")
def test_ucx_without_its_package_is_exit_7(tmp_path: Path) -> None:
    result, _ = _run(tmp_path, "--dask", "ucx://127.0.0.1:8786")
    _refused(result, 7, "pip install distributed-ucxx-cu12")
    assert not (tmp_path / "out").exists()


# 5. local:N against the memory there is
@pytest.mark.parametrize(("available", "fix"), [(2**30, "use --dask local:7 (at most 7 fit)"),
                                                 (120 * 2**20, "run without --dask")])
def test_local_workers_beyond_memory_are_exit_5(available: int, fix: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Exit 5 (OutOfMemoryError), as every "would not fit" is: the same local:N runs on a machine with more."""
    monkeypatch.setattr("job.io.memory.available_bytes", lambda: available)
    result, seconds = _run(tmp_path, "--dask", "local:256")
    error = _refused(result, 5, "--dask local:256: starting 256 worker processes (about 140 MiB each) needs")
    assert fix in error and seconds < 10
    assert not (tmp_path / "out").exists()


# the address rules themselves
@pytest.mark.parametrize("text", ["tcp://h:８７８６", "tcp://h:0", "tcp://h:70000", "tcp://:8786", "inproc://x",
                                  "tcp://a:b@h:8786", "udp://h:8786"])
def test_bad_addresses_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError) as refused:
        parse_address(text)
    assert "a:b" not in str(refused.value)


@pytest.mark.parametrize(("address", "shown"), [
    ("tls://alice:s3cret@scheduler:8786?token=abc", "tls://scheduler:8786?<redacted>"),
    ("tcp://alice:pa?ss#w/rd@h:8786", "tcp://h:8786"),
    ("alice:s3cret@h:8786", "h:8786"),
    ("tcp://h:8786#frag", "tcp://h:8786"),
    ("ws://[::1]:8786", "ws://[::1]:8786"),
])
def test_shown_addresses_hold_no_credentials(address: str, shown: str) -> None:
    assert shown_address(address) == shown
