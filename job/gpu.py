"""The CUDA GPU a run computes on: what it is, its memory pool, a free-memory check before the work starts,
and a GPU out-of-memory turned into its own one-line error.

CuPy (and RMM, where RAPIDS is installed) are imported inside the functions: ``faceatlas --help`` and CPU
runs never load them. Probes catch any Exception, because CUDA libraries raise more than ImportError on a
machine without a driver (``../shared/FIELD_NOTES.md``, GPU probing).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from job.errors import GpuOutOfMemoryError, one_line

MemoryMode = Literal["pool", "managed", "default"]
GPU_OOM_FIX = ("set gpu.memory=managed (can exceed the GPU's memory, slower), raise gpu.knn_n_clusters (smaller "
               "NN-descent batches), lower umap.fit_sample, or run on CPU with --backend umap-learn")
_OOM_WORDS = ("out_of_memory", "bad_alloc", "out of memory", "cudaErrorMemoryAllocation", "CUDA_ERROR_OUT_OF_MEMORY")


@dataclass(frozen=True)
class GpuInfo:
    """Whether a CUDA GPU is usable, why (not), and what the first one is.

    ``name``, ``available``, ``reason`` and ``version`` (CuPy's) are the fields of a backend probe (the
    ``gpu`` object of ``faceatlas backends --json``); the rest describe device 0: ``device`` its name,
    ``count`` the visible GPUs, ``total_bytes``/``free_bytes`` its memory, ``compute_capability`` e.g. "9.0",
    ``driver_cuda`` the newest CUDA its driver runs, ``runtime_cuda`` the CUDA runtime CuPy uses.
    """

    name: str
    available: bool
    reason: str
    version: str | None = None
    device: str = ""
    count: int = 0
    total_bytes: int = 0
    free_bytes: int = 0
    compute_capability: str = ""
    driver_cuda: str = ""
    runtime_cuda: str = ""

    @property
    def capability(self) -> tuple[int, int]:
        major, _, minor = self.compute_capability.partition(".")
        return (int(major), int(minor)) if major.isdigit() and minor.isdigit() else (0, 0)

    def describe(self) -> str:
        """One line: "NVIDIA H200, 139.8 GiB (138.9 GiB free), compute capability 9.0, driver CUDA 13.0"."""
        if not self.available:
            return self.reason
        from job.io.memory import format_size

        return (f"{self.device}, {format_size(self.total_bytes)} ({format_size(self.free_bytes)} free), compute "
                f"capability {self.compute_capability}, driver CUDA {self.driver_cuda}, runtime CUDA "
                f"{self.runtime_cuda}" + (f", {self.count} GPUs" if self.count > 1 else ""))


def probe_gpu() -> GpuInfo:
    """Is a CUDA GPU usable? Asks CuPy, which guards driver errors; never raises."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return GpuInfo("gpu", False, "CUDA_VISIBLE_DEVICES is empty, so no GPU is visible")
    if importlib.util.find_spec("cupy") is None:
        return GpuInfo("gpu", False, "CuPy is not installed, so no CUDA GPU can be used")
    try:
        import cupy

        if not cupy.is_available():
            return GpuInfo("gpu", False, "no CUDA GPU or driver found by CuPy")
        runtime = cupy.cuda.runtime
        count = int(runtime.getDeviceCount())
        properties = runtime.getDeviceProperties(0)
        with cupy.cuda.Device(0):
            free, total = runtime.memGetInfo()
        name = properties["name"]
        device = name.decode() if isinstance(name, bytes) else str(name)
        return GpuInfo("gpu", True, f"{count} CUDA GPU(s), first: {device}", str(cupy.__version__), device, count,
                       int(total), int(free), f"{properties['major']}.{properties['minor']}",
                       _cuda_version(runtime.driverGetVersion()), _cuda_version(runtime.runtimeGetVersion()))
    except Exception as exc:  # noqa: BLE001 - see module docstring
        return GpuInfo("gpu", False, f"CUDA GPU probe failed ({type(exc).__name__}: {one_line(exc)})")


def _cuda_version(number: int) -> str:
    """CUDA's version integers: 13000 -> "13.0", 12080 -> "12.8"."""
    return f"{number // 1000}.{number % 1000 // 10}"


_MEMORY_SET_UP: dict[str, str] = {}  # the process's memory set-up, once: RMM's resource is per process


def use_memory(mode: MemoryMode) -> str:
    """Route CuPy's (and, with RAPIDS, cuML's) allocations through one pool, or through managed memory that
    can exceed the GPU's (pages move between host and GPU as touched, pooled). Returns what was set up.

    With RMM (RAPIDS), one RMM resource serves both CuPy and cuML; without it (CuPy alone), CuPy's own pool
    allocator, over ``malloc_managed`` for "managed". Set up once per process and mode (a second run in a
    notebook reuses it: arrays of an earlier resource must not outlive it).
    """
    if mode in _MEMORY_SET_UP:
        return _MEMORY_SET_UP[mode]
    import cupy

    if mode == "default":
        done = "default"
    elif importlib.util.find_spec("rmm") is not None:
        import rmm
        from rmm.allocators.cupy import rmm_cupy_allocator

        rmm.reinitialize(pool_allocator=True, managed_memory=mode == "managed")
        cupy.cuda.set_allocator(rmm_cupy_allocator)
        done = f"rmm {mode}"
    else:
        if mode == "managed":
            cupy.cuda.set_allocator(cupy.cuda.MemoryPool(cupy.cuda.malloc_managed).malloc)
        done = f"cupy {mode}"
    _MEMORY_SET_UP.clear()
    _MEMORY_SET_UP[mode] = done
    return done


def require_gpu_memory(needed: int, gpu: GpuInfo, mode: MemoryMode, what: str) -> None:
    """Raise :class:`GpuOutOfMemoryError` if ``needed`` bytes exceed the GPU's free memory (managed memory
    may exceed it: not checked then)."""
    if mode == "managed" or needed <= gpu.free_bytes:
        return
    from job.io.memory import format_size

    raise GpuOutOfMemoryError(f"{what} needs about {format_size(needed)} of GPU memory but {gpu.device} has "
                              f"{format_size(gpu.free_bytes)} free; {GPU_OOM_FIX}")


def is_gpu_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a GPU allocation failure (CuPy's OutOfMemoryError, or RMM's bad_alloc, which cuML
    raises as MemoryError), not the host's."""
    cupy = sys.modules.get("cupy")  # only if imported: an error from CuPy means CuPy is loaded
    if cupy is not None and isinstance(exc, cupy.cuda.memory.OutOfMemoryError):
        return True
    text = f"{type(exc).__name__} {exc}"
    return any(word.lower() in text.lower() for word in _OOM_WORDS) and type(exc).__name__ != "OSError"


@contextmanager
def gpu_memory_errors(what: str) -> Iterator[None]:
    """Turn a GPU out-of-memory inside the block into :class:`GpuOutOfMemoryError` naming the fix."""
    try:
        yield
    except Exception as exc:  # MemoryError (RMM's bad_alloc via cuML, CuPy's) or a library's own error type
        if isinstance(exc, GpuOutOfMemoryError) or not is_gpu_out_of_memory(exc):
            raise
        kind = "" if isinstance(exc, MemoryError) else f" ({type(exc).__name__})"
        raise GpuOutOfMemoryError(f"the GPU ran out of memory during {what}{kind}; {GPU_OOM_FIX}") from None
