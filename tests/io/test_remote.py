"""URL input against a real local server (127.0.0.1 only): https with a test CA, timeouts, byte caps,
hash checks, the download cache, and redirects that would downgrade to http."""

from __future__ import annotations

import hashlib
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from typer.testing import CliRunner

from job.cli import app
from job.config import InputConfig
from job.io.database import load_database
from job.io.demo import DemoSpec, make_demo

SMOKE = str(Path(__file__).parents[2] / "configs" / "smoke.toml")
RECORDS, _ = make_demo(DemoSpec(n_identities=40, faces_per_identity=4, dim=32, seed=5))


def _npy_bytes() -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, RECORDS, allow_pickle=False)
    return buffer.getvalue()


BODY = _npy_bytes()
DIGEST = hashlib.sha256(BODY).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    requests: ClassVar[list[str]] = []
    authorizations: ClassVar[list[str]] = []
    redirect_to = ""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        type(self).authorizations.append(self.headers.get("Authorization", ""))
        if self.path.split("?")[0] == "/db.npy":
            self._send(BODY)
        elif self.path == "/slow-start":
            time.sleep(2)
            self._send(BODY)
        elif self.path == "/slow-body":
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY[:100])
            self.wfile.flush()
            time.sleep(2)
        elif self.path == "/announced-too-big":
            self.send_response(200)
            self.send_header("Content-Length", str(10**12))
            self.end_headers()
        elif self.path == "/unannounced-too-big":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            for _ in range(64):
                self.wfile.write(b"\0" * 65536)
        elif self.path == "/short":
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY[:1000])
        elif self.path == "/bad-redirect":
            self.send_response(302)
            self.send_header("Location", "http://[::1/x")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", type(self).redirect_to)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.send_error(404, "Not Found")

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _serve(context: ssl.SSLContext | None) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.handle_error = lambda request, address: None  # clients that hang up on purpose are not news
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    scheme = "https" if context else "http"
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture(scope="module")
def https_url(certificate: tuple[Path, Path]) -> Iterator[str]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    yield from _serve(context)


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    yield from _serve(None)


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    _Handler.requests = []
    _Handler.authorizations = []
    return cache / "faceatlas" / "downloads"


@pytest.fixture
def trusted(certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))


def _run(tmp_path: Path, url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["run", "-c", SMOKE, "--input", url, "--out", str(tmp_path / "out"), *args])
    return result.exit_code, result.stderr


def test_https_run_with_sha256_then_reused_from_the_cache(tmp_path: Path, https_url: str, trusted: None,
                                                          private_cache: Path) -> None:
    code, said = _run(tmp_path, f"{https_url}/db.npy", "--sha256", DIGEST)
    assert code == 0, said
    assert "downloaded" in said and (tmp_path / "out" / "run.json").is_file()
    cached = list(private_cache.iterdir())
    assert len(cached) == 1 and cached[0].read_bytes() == BODY
    assert oct(private_cache.stat().st_mode & 0o777) == "0o700"  # biometric data: private cache
    assert oct(cached[0].stat().st_mode & 0o777) == "0o600"
    served = len(_Handler.requests)
    database = load_database(InputConfig(path=f"{https_url}/db.npy", sha256=DIGEST))
    assert len(_Handler.requests) == served  # verified copy reused, no second download
    assert database.sha256 == DIGEST and database.n_faces == len(RECORDS)


def test_a_cached_copy_that_no_longer_matches_is_fetched_again(https_url: str, trusted: None,
                                                               private_cache: Path) -> None:
    load_database(InputConfig(path=f"{https_url}/db.npy", sha256=DIGEST))
    cached = next(private_cache.iterdir())
    cached.write_bytes(b"tampered")
    database = load_database(InputConfig(path=f"{https_url}/db.npy", sha256=DIGEST))
    assert database.sha256 == DIGEST and cached.read_bytes() == BODY and len(_Handler.requests) == 2


def test_without_sha256_every_run_downloads_and_the_digest_is_reported(https_url: str, trusted: None) -> None:
    said: list[str] = []
    for _ in range(2):
        load_database(InputConfig(path=f"{https_url}/db.npy"), log=said.append)
    assert len(_Handler.requests) == 2 and DIGEST in said[-1]


def test_tokens_in_the_url_stay_out_of_logs_and_run_json(tmp_path: Path, https_url: str, trusted: None) -> None:
    host = https_url.removeprefix("https://")
    url = f"https://ada:s3cret@{host}/db.npy?signature=t0ken"
    code, said = _run(tmp_path, url)
    assert code == 0, said
    record = (tmp_path / "out" / "run.json").read_text()
    assert "s3cret" not in said + record and "t0ken" not in said + record
    assert f"https://{host}/db.npy?<redacted>" in record
    assert _Handler.requests[-1] == "/db.npy?signature=t0ken"  # the server still gets the full URL
    assert _Handler.authorizations[-1] == "Basic YWRhOnMzY3JldA=="  # ada:s3cret


def test_redirect_to_another_scheme_is_refused_even_with_allow_http(tmp_path: Path, https_url: str,
                                                                    trusted: None) -> None:
    _Handler.redirect_to = "ftp://127.0.0.1/db.npy"
    code, said = _run(tmp_path, f"{https_url}/redirect", "--allow-http")
    assert code == 3 and "which is not https" in said and not (tmp_path / "out").exists()


def test_credentials_do_not_follow_a_redirect_to_another_origin(tmp_path: Path, https_url: str, http_url: str,
                                                                trusted: None) -> None:
    _Handler.redirect_to = f"{http_url}/db.npy"  # another port: another origin
    host = https_url.removeprefix("https://")
    code, said = _run(tmp_path, f"https://ada:s3cret@{host}/redirect", "--allow-http")
    assert code == 0, said
    assert _Handler.requests[-2:] == ["/redirect", "/db.npy"]
    assert _Handler.authorizations[-2:] == ["Basic YWRhOnMzY3JldA==", ""]


def test_plain_http_only_with_allow_http(http_url: str) -> None:
    database = load_database(InputConfig(path=f"{http_url}/db.npy", allow_http=True, sha256=DIGEST))
    assert database.n_faces == len(RECORDS)


@pytest.mark.parametrize(("path", "args", "message"), [
    ("/slow-start", ["--set", "input.url_timeout=0.5"], "no answer for 0.5 s"),
    ("/slow-body", ["--set", "input.url_timeout=0.5"], "no answer for 0.5 s"),
    ("/announced-too-big", [], "announces 1,000,000,000,000 bytes, over input.url_max_bytes"),
    ("/unannounced-too-big", ["--set", "input.url_max_bytes=1000000"], "exceeds input.url_max_bytes"),
    ("/short", [], "the server sent 1,000 of"),
    ("/db.npy", ["--sha256", "1" * 64], "expected " + "1" * 64),
    ("/missing.npy", [], "answered 404"),
    ("/redirect", [], "which is not https"),
    ("/bad-redirect", [], "redirects to a malformed URL"),
])
def test_faults_exit_3_and_leave_nothing(tmp_path: Path, https_url: str, http_url: str, trusted: None,
                                         private_cache: Path, *, path: str, args: list[str], message: str) -> None:
    _Handler.redirect_to = f"{http_url}/db.npy"
    code, said = _run(tmp_path, https_url + path, *args)
    errors = [line for line in said.splitlines() if line.startswith("faceatlas: error: ")]
    assert code == 3, said
    assert len(errors) == 1 and message in errors[0] and https_url + path in errors[0]
    assert not (tmp_path / "out").exists()
    assert not private_cache.exists() or list(private_cache.iterdir()) == []  # no partial or unverified file


def test_an_untrusted_certificate_is_refused(tmp_path: Path, https_url: str) -> None:
    code, said = _run(tmp_path, f"{https_url}/db.npy")
    assert code == 3 and "CERTIFICATE_VERIFY_FAILED" in said and not (tmp_path / "out").exists()
