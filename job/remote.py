"""Fetching an input database from an explicit ``https://`` URL, the only network access faceatlas makes.

Downloads stream to a private cache folder (``$XDG_CACHE_HOME/faceatlas/downloads``, mode 0700: face
embeddings are biometric data) under a temporary name, with connect/read timeouts and a byte cap, and
are renamed into place only once complete and, given ``--sha256``, verified. A verified download is
reused by later runs with the same URL and hash; an unverified one is fetched again every time.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from job.errors import InputError, UsageError
from job.formats import file_sha256

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_BLOCK = 1 << 20


@dataclass(frozen=True)
class Download:
    """A fetched file: where it lies, its SHA-256, and whether it came from the cache."""

    path: Path
    sha256: str
    cached: bool


def is_url(text: str) -> bool:
    """True for ``scheme://...``; only http(s) is supported, other schemes are refused by :func:`fetch`."""
    return bool(_SCHEME.match(text))


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/faceatlas/downloads`` (default ``~/.cache/faceatlas/downloads``)."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "faceatlas" / "downloads"


def fetch(url: str, *, sha256: str = "", allow_http: bool = False, timeout: float = 30.0,
          max_bytes: int = 64 * 2**30, folder: Path | None = None) -> Download:
    """Download ``url`` into the cache (or reuse a verified copy) and return where it is.

    Raises
    ------
    UsageError
        A scheme other than https (or http with ``allow_http``).
    InputError
        Connection or TLS failure, timeout, HTTP error, a body over ``max_bytes``, or a SHA-256 mismatch.
    """
    _check_scheme(url, allow_http)
    folder = folder or cache_dir()
    expected = sha256.lower()
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    target = folder / f"{key}-{expected or 'unverified'}"
    if expected and target.is_file() and file_sha256(target) == expected:
        return Download(target, expected, cached=True)
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise UsageError(f"{folder}: cannot create the download cache ({exc.strerror}); set XDG_CACHE_HOME "
                         "to a writable folder") from None
    partial = folder / f".{key}.{os.getpid()}.partial"
    try:
        digest = _download(url, partial, allow_http, timeout, max_bytes, folder)
        if expected and digest != expected:
            raise InputError(f"{url}: downloaded file has sha256 {digest}, expected {expected}; check the URL "
                             "and --sha256 (the file was not used)")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return Download(target, digest, cached=False)


def _check_scheme(url: str, allow_http: bool) -> None:
    scheme = urlsplit(url).scheme.lower()
    if scheme == "https" or (scheme == "http" and allow_http):
        return
    if scheme == "http":
        raise UsageError(f"{url}: plain http can be read and altered on the way; use https, or pass "
                         "--allow-http (best with --sha256)")
    raise UsageError(f"{url}: unsupported URL scheme {scheme!r}; pass a local file or an https:// URL")


def _download(url: str, partial: Path, allow_http: bool, timeout: float, max_bytes: int, folder: Path) -> str:
    opener = urllib.request.build_opener(_SafeRedirects(allow_http),
                                         urllib.request.HTTPSHandler(context=ssl.create_default_context()))
    request = urllib.request.Request(url, headers={"User-Agent": "faceatlas", "Accept-Encoding": "identity"})
    digest = hashlib.sha256()
    try:
        with opener.open(request, timeout=timeout) as response:
            declared = int(response.headers.get("Content-Length") or -1)
            _check_room(url, declared, max_bytes, folder)
            received = 0
            with open(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as handle:
                while block := response.read(_BLOCK):
                    received += len(block)
                    if received > max_bytes:
                        raise InputError(f"{url}: the body exceeds input.url_max_bytes ({max_bytes:,} bytes); "
                                         "raise the cap with --set input.url_max_bytes=N if the file is right")
                    digest.update(block)
                    handle.write(block)
            if 0 <= declared != received:
                raise InputError(f"{url}: the server sent {received:,} of {declared:,} bytes; try again")
    except urllib.error.HTTPError as exc:
        raise InputError(f"{url}: the server answered {exc.code} {exc.reason}; check the URL") from None
    except http.client.HTTPException as exc:
        raise InputError(f"{url}: the download broke off ({type(exc).__name__}); try again") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            raise InputError(f"{url}: no answer for {timeout:g} s (input.url_timeout); try again or raise it "
                             "with --set input.url_timeout=SECONDS") from None
        raise InputError(f"{url}: download failed ({_reason(reason)}); check the URL, the network and, for "
                         "https, the server's certificate") from None
    return digest.hexdigest()


def _check_room(url: str, declared: int, max_bytes: int, folder: Path) -> None:
    if declared > max_bytes:
        raise InputError(f"{url}: the server announces {declared:,} bytes, over input.url_max_bytes "
                         f"({max_bytes:,}); raise the cap with --set input.url_max_bytes=N if the file is right")
    free = shutil.disk_usage(folder).free
    if declared > free:
        raise InputError(f"{url}: {declared:,} bytes do not fit in {folder} ({free:,} bytes free); free space "
                         "or set XDG_CACHE_HOME to a larger disk")


def _reason(reason: Any) -> str:
    text = " ".join(str(reason).split())
    return text[:160]


class _SafeRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but never from https down to plain http (unless http is allowed)."""

    def __init__(self, allow_http: bool) -> None:
        self.allow_http = allow_http

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        if urlsplit(newurl).scheme.lower() != "https" and not self.allow_http:
            raise InputError(f"{req.full_url}: redirects to {newurl}, which is not https; use the final https "
                             "URL, or pass --allow-http")
        return super().redirect_request(req, fp, code, msg, headers, newurl)
