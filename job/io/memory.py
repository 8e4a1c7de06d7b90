"""How much memory this process may use, and refusing work that would not fit before allocating it.

The limit is the smallest of: the configured ``max_memory``, the kernel's ``MemAvailable``, and the
cgroup (container) limit minus current use. A job that would not fit stops with
:class:`~job.errors.OutOfMemoryError` (exit 5) and the fix, instead of being killed half-way by the kernel.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from job.errors import OutOfMemoryError, UsageError

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_CGROUP_FILES = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                 ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"))


def parse_size(text: str | int) -> int | None:
    """``"auto"`` -> None; ``8589934592``, ``"8GiB"``, ``"500 MB"`` -> bytes.

    >>> parse_size("1.5 KiB")
    1536
    """
    if isinstance(text, int):
        return text
    if text.strip().lower() == "auto":
        return None
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise UsageError(f"size {text!r}: expected \"auto\", a number of bytes or e.g. \"8GiB\", \"500MB\"")
    size = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if not size < 2**63:
        raise UsageError(f"size {text!r}: more bytes than any machine has; write e.g. \"64GiB\"")
    return int(size)


def available_bytes() -> int | None:
    """Bytes this process can still allocate without swapping or the OOM killer, or None if unknown."""
    limits = [limit for limit in (_meminfo_available(), _cgroup_headroom()) if limit is not None]
    return min(limits) if limits else None


def require(n_bytes: int, max_memory: int | None, what: str, fix: str, *, held: int = 0) -> None:
    """Raise :class:`OutOfMemoryError` if ``n_bytes`` (+ ``held``) exceed ``max_memory`` or ``n_bytes`` the memory
    available now.

    Parameters
    ----------
    n_bytes : the allocation about to happen
    max_memory : the configured cap in bytes, or None for "what the machine has"
    what : "<file>: <step>", the start of the message
    fix : what the user can do instead
    held : bytes already allocated for the same work: they count against the cap, not against what is
        available now (they are gone from it already)
    """
    limits = {"the configured max_memory": (max_memory, n_bytes + held), "available memory": (available_bytes(),
                                                                                            n_bytes)}
    for name, (limit, needed) in limits.items():
        if limit is not None and needed > limit:
            raise OutOfMemoryError(f"{what} needs {format_size(needed)} but {name} is {format_size(limit)}; "
                                   f"{fix}, or use a machine with more memory")


def format_size(n_bytes: int) -> str:
    """``1.50 GiB`` from 64 MiB up, ``12.0 MiB`` below."""
    return f"{n_bytes / 2**30:.2f} GiB" if n_bytes >= 2**26 else f"{n_bytes / 2**20:.1f} MiB"


def _meminfo_available() -> int | None:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return _sysconf_available()
    match = re.search(r"^MemAvailable:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else _sysconf_available()


def _sysconf_available() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_headroom() -> int | None:
    """The cgroup limit minus what it holds, not counting page cache the kernel can drop (inactive_file)."""
    for limit_file, usage_file in _CGROUP_FILES:
        try:
            limit_text = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
            if limit_text == "max" or int(limit_text) >= 2**60:
                return None
            limit = int(limit_text)
        except (OSError, ValueError):
            continue
        stat_text = _read_or_empty(Path(limit_file).with_name("memory.stat"))
        match = re.search(r"^(?:total_)?inactive_file (\d+)$", stat_text, re.MULTILINE)
        reclaimable = int(match.group(1)) if match else 0
        return max(limit - usage + reclaimable, 0)
    return None


def _read_or_empty(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
