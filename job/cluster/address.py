"""What ``--dask`` / ``dask.address`` accepts: nothing, ``local[:N]``, or a scheduler address."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from job.errors import UsageError

LOCAL_WORKERS = 2
MAX_LOCAL_WORKERS = 256
SCHEMES = ("tcp", "tls", "ucx", "ws", "wss", "inproc")
"""Dask's comm protocols (``distributed.comm``); ``host:port`` alone means tcp."""


@dataclass(frozen=True)
class ClusterAddress:
    """``kind`` "none" (no cluster), "local" (a LocalCluster of ``n_workers`` processes) or "remote" (the
    scheduler at ``address``)."""

    kind: Literal["none", "local", "remote"]
    n_workers: int = 0
    address: str = ""


def parse_address(text: str) -> ClusterAddress:
    """Read ``text``: "" -> none; "local" or "local:N" -> a LocalCluster; "tcp://host:port" (or another Dask
    protocol, or plain "host:port") -> the scheduler there. Anything else is a :class:`UsageError`."""
    text = text.strip()
    if not text:
        return ClusterAddress("none")
    if text == "local" or text.startswith("local:"):
        count = text.partition(":")[2] or str(LOCAL_WORKERS)
        if not count.isdigit() or not 1 <= int(count) <= MAX_LOCAL_WORKERS:
            raise UsageError(f"--dask {text!r}: local:N needs N between 1 and {MAX_LOCAL_WORKERS} worker processes, "
                             "e.g. local:2")
        return ClusterAddress("local", int(count))
    scheme, has_scheme, rest = text.partition("://")
    if not has_scheme:
        scheme, rest = "tcp", text
    host, _, port = rest.rpartition(":")
    if scheme not in SCHEMES or (scheme != "inproc" and not (host and port.isdigit())):
        raise UsageError(f"--dask {shown_address(text)!r}: expected local, local:N or a scheduler address such as "
                         f"tcp://host:8786 (protocols: {', '.join(SCHEMES)})")
    return ClusterAddress("remote", 0, text if has_scheme else f"tcp://{text}")


def shown_address(address: str) -> str:
    """``address`` fit for logs and run.json: no ``user:password@``, no query string."""
    try:
        parts = urlsplit(address)
        netloc = parts.netloc.rpartition("@")[2]
        return urlunsplit((parts.scheme, netloc, parts.path, "<redacted>" if parts.query else "", ""))
    except ValueError:
        return address.split("?", 1)[0].rpartition("@")[2]
