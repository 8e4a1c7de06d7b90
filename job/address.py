"""What ``--dask`` / ``dask.address`` accepts: nothing, ``local[:N]``, or a scheduler address.

Every Dask protocol is either supported or refused here, before anything runs: ``tcp`` (also ``host:port``
alone), ``ws``, and ``tls``/``wss`` and ``ucx`` when this machine can speak them (:func:`require_transport`);
``inproc`` names a scheduler inside one Python process, which no command line can share. An address carries no
user name or password (Dask authenticates with TLS certificates), so one that holds an ``@`` is refused without
repeating any of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from job.errors import ClusterError, UsageError, one_line

LOCAL_WORKERS = 2
MAX_LOCAL_WORKERS = 256
SCHEMES = ("tcp", "tls", "ws", "wss", "ucx")
"""The Dask comm protocols (``distributed.comm``) a scheduler address may use; ``host:port`` alone means tcp."""
TLS_FIX = ("set Dask's TLS certificates: distributed.comm.tls.ca-file, distributed.comm.tls.client.cert and "
           "distributed.comm.tls.client.key in a Dask config file, or the environment variables "
           "DASK_DISTRIBUTED__COMM__TLS__CA_FILE, DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT and "
           "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY")


@dataclass(frozen=True)
class ClusterAddress:
    """``kind`` "none" (no cluster), "local" (a LocalCluster of ``n_workers`` processes) or "remote" (the
    scheduler at ``address``)."""

    kind: Literal["none", "local", "remote"]
    n_workers: int = 0
    address: str = ""


def parse_address(text: str) -> ClusterAddress:
    """Read ``text``: "" -> none; "local" or "local:N" -> a LocalCluster; "tcp://host:port" (or another Dask
    protocol, or plain "host:port") -> the scheduler there. Anything else is a :class:`UsageError`, whose message
    never repeats an address that holds an ``@`` (credentials), nor a query string."""
    text = text.strip()
    if not text:
        return ClusterAddress("none")
    if "@" in text:  # not repeated, not even in part: what surrounds the '@' may be the password
        raise UsageError("--dask: the address holds '@', i.e. a user name or password (not repeated here), but a Dask "
                         "address carries no credentials; give the scheduler as tcp://host:8786 (a scheduler that "
                         "needs authentication uses tls:// with Dask's TLS certificates)")
    if text == "local" or text.startswith("local:"):
        count = text.partition(":")[2] or str(LOCAL_WORKERS)
        if not _is_number(count) or not 1 <= int(count) <= MAX_LOCAL_WORKERS:
            raise UsageError(f"--dask {text!r}: local:N needs N between 1 and {MAX_LOCAL_WORKERS} "
                             "worker processes, e.g. local:2")
        return ClusterAddress("local", int(count))
    scheme, has_scheme, rest = text.partition("://")
    if not has_scheme:
        scheme, rest = "tcp", text
    if scheme == "inproc":
        raise UsageError(f"--dask {shown_address(text)!r}: an inproc:// scheduler lives inside one Python process, "
                         "which a faceatlas command cannot share; use --dask local:N for a cluster on this machine, "
                         "or a scheduler's tcp://host:8786")
    host, _, port = rest.rpartition(":")
    if scheme not in SCHEMES or not host or not (_is_number(port) and 0 < int(port) < 65536):
        raise UsageError(f"--dask {shown_address(text)!r}: expected local, local:N or a scheduler address such as "
                         f"tcp://host:8786 (protocols: {', '.join(SCHEMES)})")
    return ClusterAddress("remote", 0, text if has_scheme else f"tcp://{text}")


def shown_address(address: str) -> str:
    """``address`` fit for messages, logs and run.json: nothing before an ``@`` (a user name, a password), no
    query string or fragment.

    >>> shown_address("tls://alice:s3cret@scheduler:8786?token=abc")
    'tls://scheduler:8786?<redacted>'
    """
    scheme, has_scheme, rest = address.partition("://")
    if not has_scheme:
        scheme, rest = "", address
    rest = rest.rpartition("@")[2]  # a password may hold '?', '#' or '/': cut at the last '@' first
    rest, query, _ = rest.partition("?")
    rest = rest.partition("#")[0]
    return (f"{scheme}://" if has_scheme else "") + rest + ("?<redacted>" if query else "")


def require_transport(address: str) -> None:
    """Refuse, with :class:`ClusterError` and the fix, a protocol this machine cannot speak: ``tls``/``wss``
    without Dask's TLS certificates configured, ``ucx`` without the UCX comm package, ``tcp``/``ws`` where Dask's
    config demands encryption."""
    from importlib.util import find_spec

    scheme, shown = address.partition("://")[0], shown_address(address)
    if scheme == "ucx" and find_spec("distributed_ucxx") is None:
        raise ClusterError(f"--dask {shown}: the ucx protocol needs Dask's UCX comm package, which is not installed: "
                           "pip install distributed-ucxx-cu12 (CUDA 12; -cu13 for CUDA 13), or use the scheduler's "
                           "tcp:// address")
    if scheme in ("tls", "wss"):
        _require_certificates(scheme, shown)
    elif _encryption_required():
        raise ClusterError(f"--dask {shown}: Dask's config requires encryption (distributed.comm.require-encryption) "
                           f"and {scheme}:// is not encrypted; use the scheduler's tls:// address")


def _require_certificates(scheme: str, shown: str) -> None:
    import dask
    from distributed.security import Security

    if dask.config.get("distributed.client.security-loader", None):
        return  # the configured loader hands the Client its certificates
    try:
        context = Security().get_connection_args("client").get("ssl_context")
    except Exception as exc:  # noqa: BLE001 - a configured certificate missing or unreadable (OSError, SSLError...)
        raise ClusterError(f"--dask {shown}: Dask's TLS configuration cannot be used ({type(exc).__name__}: "
                           f"{one_line(exc, 200)}); {TLS_FIX}") from None
    if context is None:
        raise ClusterError(f"--dask {shown}: a {scheme}:// scheduler needs TLS certificates and Dask has none "
                           f"configured; {TLS_FIX}; or use the scheduler's tcp:// address")


def _encryption_required() -> bool:
    import dask

    return bool(dask.config.get("distributed.comm.require-encryption", False))


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 6
