"""Fetching an input database from an explicit ``https://`` URL, the only network access faceatlas makes.

Downloads stream to a private cache folder (``$XDG_CACHE_HOME/faceatlas/downloads``, mode 0700: face
embeddings are biometric data) under a temporary name, with connect/read timeouts and a byte cap, and
are renamed into place only once complete and, given ``--sha256``, verified. A verified download is
reused by later runs with the same URL and hash; an unverified one is fetched again every time.
"""

from __future__ import annotations

import base64
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
from urllib.parse import unquote, urlsplit, urlunsplit

from job.atomic import atomic_write
from job.errors import InputError, UsageError, one_line
from job.io.formats import file_sha256

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


def redact(text: str) -> str:
    """A URL fit for logs and run.json: no user:password, no query string (signed URLs carry tokens there)."""
    if not is_url(text):
        return text
    try:
        parts = urlsplit(text)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return text.split("?", 1)[0].split("@")[-1]
    netloc = f"[{host}]" if ":" in host else host
    return urlunsplit((parts.scheme, netloc + port, parts.path, "<redacted>" if parts.query else "", ""))


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/faceatlas/downloads`` (default ``~/.cache/faceatlas/downloads``)."""
    from job.caches import user_cache_dir

    return user_cache_dir() / "downloads"


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
    shown = redact(url)
    _check_scheme(url, shown, allow_http)
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
    with atomic_write(target) as partial:  # a mismatch raises before the file takes its name
        digest = _download(url, shown, partial, allow_http=allow_http, timeout=timeout, max_bytes=max_bytes,
                           folder=folder)
        if expected and digest != expected:
            raise InputError(f"{shown}: downloaded file has sha256 {digest}, expected {expected}; check the URL "
                             "and --sha256 (the file was not used)")
    return Download(target, digest, cached=False)


def _check_scheme(url: str, shown: str, allow_http: bool) -> None:
    try:
        parts = urlsplit(url)
        url.encode("ascii")
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except (ValueError, UnicodeError):
        raise UsageError(f"{shown}: not a valid URL; percent-encode spaces and non-ASCII characters") from None
    scheme = parts.scheme.lower()
    if not parts.hostname:
        raise UsageError(f"{shown}: no host in the URL; write it as https://host/path")
    if scheme == "https" or (scheme == "http" and allow_http):
        return
    if scheme == "http":
        raise UsageError(f"{shown}: plain http can be read and altered on the way; use https, or pass "
                         "--allow-http (best with --sha256)")
    raise UsageError(f"{shown}: unsupported URL scheme {scheme!r}; pass a local file or an https:// URL")


def _download(url: str, shown: str, partial: Path, *, allow_http: bool, timeout: float, max_bytes: int,
              folder: Path) -> str:
    opener = urllib.request.build_opener(_SafeRedirects(allow_http),
                                         urllib.request.HTTPSHandler(context=ssl.create_default_context()))
    request = _request(url)
    digest = hashlib.sha256()
    try:
        with opener.open(request, timeout=timeout) as response:
            declared = _content_length(response.headers.get("Content-Length"))
            _check_room(shown, declared, max_bytes, folder)
            received = 0
            with open(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as handle:
                while block := response.read(_BLOCK):
                    received += len(block)
                    if received > max_bytes:
                        raise InputError(f"{shown}: the body exceeds input.url_max_bytes ({max_bytes:,} bytes); "
                                         "raise the cap with --set input.url_max_bytes=N if the file is right")
                    digest.update(block)
                    handle.write(block)
            if 0 <= declared != received:
                raise InputError(f"{shown}: the server sent {received:,} of {declared:,} bytes; try again")
    except urllib.error.HTTPError as exc:
        raise InputError(f"{shown}: the server answered {exc.code} {_reason(exc.reason)}; check the URL") from None
    except http.client.InvalidURL:
        raise UsageError(f"{shown}: not a valid URL; percent-encode spaces and non-ASCII characters") from None
    except ValueError:  # urllib parses a redirect's Location before asking the redirect handler
        raise InputError(f"{shown}: the server redirects to a malformed URL; ask its owner or use the final "
                         "URL") from None
    except http.client.HTTPException as exc:
        raise InputError(f"{shown}: the download broke off ({type(exc).__name__}); try again") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            raise InputError(f"{shown}: no answer for {timeout:g} s (input.url_timeout); try again or raise it "
                             "with --set input.url_timeout=SECONDS") from None
        raise InputError(f"{shown}: download failed ({_reason(reason)}); check the URL, the network and, for "
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


def _request(url: str) -> urllib.request.Request:
    """A GET for ``url``; user:password in the URL becomes a Basic Authorization header (urllib drops it)."""
    headers = {"User-Agent": "faceatlas", "Accept-Encoding": "identity"}
    parts = urlsplit(url)
    if parts.username is not None:
        secret = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(secret).decode()
        host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname or ""
        url = urlunsplit((parts.scheme, host + (f":{parts.port}" if parts.port else ""), parts.path, parts.query,
                          ""))
    return urllib.request.Request(url, headers=headers)


def _content_length(value: str | None) -> int:
    """The announced body size, or -1 when absent or not a number (the stream is still capped)."""
    try:
        return int(value) if value is not None and value.strip().isdigit() else -1
    except ValueError:
        return -1


def _reason(reason: Any) -> str:
    return one_line(reason, 160)


class _SafeRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but never from https down to plain http (unless http is allowed)."""

    def __init__(self, allow_http: bool) -> None:
        self.allow_http = allow_http

    def redirect_request(  # noqa: PLR0917 - urllib's HTTPRedirectHandler signature, called positionally by urllib
        self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> Any:
        try:
            target, origin = urlsplit(newurl), urlsplit(req.full_url)
            same_origin = (target.scheme, target.hostname, target.port) == (origin.scheme, origin.hostname,
                                                                          origin.port)
        except ValueError:
            raise InputError(f"{redact(req.full_url)}: the server redirects to a malformed URL; ask its owner or "
                             "use the final URL") from None
        scheme = target.scheme.lower()
        if scheme != "https" and not (scheme == "http" and self.allow_http):
            raise InputError(f"{redact(req.full_url)}: redirects to {redact(newurl)}, which is not https; use "
                             "the final https URL, or pass --allow-http")
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and not same_origin:  # credentials are for the host they were given for
            new.headers.pop("Authorization", None)
            new.unredirected_hdrs.pop("Authorization", None)
        return new
