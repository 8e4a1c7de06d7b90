"""One code path for host and GPU arrays: the array namespace of a run (NumPy, or CuPy on a GPU backend).

The embedding-space analysis (identity sums, verdicts, candidates, look-alikes, trustworthiness) is written
once against ``xp``, the module of its input arrays: NumPy arrays give NumPy, CuPy arrays give CuPy. CuPy
mirrors NumPy's names; where it limits one (``lexsort`` takes one stacked key array, not a tuple;
``reduceat`` is CuPy's only for ``add`` and its handling of ``axis`` is compiled code we could not read), the
few primitives below do the same arithmetic in both (``tests/fixtures/cupy-namespace.json`` records CuPy's
names and limits; the FAKE CuPy of ``tests/fakes`` offers only those). Results go back to the host once, with
:func:`to_host`, where a stage hands them to host-only code (numba placement, k-d trees, the writers).

CuPy is never imported here: an array is a CuPy array only if CuPy was imported by the code that made it.
"""

from __future__ import annotations

import dataclasses
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


def namespace(*arrays: Any) -> ModuleType:
    """The module of ``arrays``: CuPy if any of them is a CuPy array, else NumPy."""
    cupy = sys.modules.get("cupy")
    if cupy is not None and any(isinstance(array, cupy.ndarray) for array in arrays):
        return cupy
    return np


def on_device(xp: ModuleType) -> bool:
    """Whether ``xp`` is a GPU namespace (not NumPy)."""
    return xp is not np


def to_host(array: Any) -> Any:
    """``array`` as a NumPy array (one copy from the GPU for a CuPy array; NumPy arrays as they are)."""
    xp = namespace(array)
    return xp.asnumpy(array) if on_device(xp) else array


def to_namespace(xp: ModuleType, array: Any) -> Any:
    """``array`` in the namespace ``xp``: copied to the GPU for CuPy, to the host for NumPy."""
    return xp.asarray(array) if on_device(xp) else to_host(array)


def fields_to_host(value: T) -> T:
    """A frozen dataclass with every array field moved to the host (other fields as they are)."""
    values = {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
    changes = {name: to_host(array) for name, array in values.items() if on_device(namespace(array))}
    return dataclasses.replace(value, **changes) if changes else value


def group_sums(values: Any, starts: Any) -> Any:
    """Sums of consecutive row groups of ``values`` (n, d) float64 starting at ``starts`` (sorted, first 0):
    ``np.add.reduceat`` on the host; on the GPU differences of the running float64 sum (only plain
    indexing and ``cumsum``)."""
    xp = namespace(values)
    if not on_device(xp):
        return np.add.reduceat(values, starts, axis=0)
    running = xp.cumsum(values, axis=0)
    ends = xp.concatenate([starts[1:], xp.asarray([len(values)], dtype=starts.dtype)]) - 1
    sums = running[ends]
    sums[1:] -= running[starts[1:] - 1]
    return sums


def run_starts(sorted_values: Any) -> Any:
    """Positions where a new run of equal values starts in ``sorted_values`` (n,), n >= 1: ``np.r_[True,
    diff != 0]`` as positions."""
    xp = namespace(sorted_values)
    change = xp.concatenate([xp.ones(1, dtype=bool), sorted_values[1:] != sorted_values[:-1]])
    return xp.flatnonzero(change)


def lexsort(keys: tuple[Any, ...]) -> Any:
    """``np.lexsort(keys)`` (last key primary) for 1-D keys of one length; CuPy takes them as one stacked
    array of one dtype, so they are stacked as float64 there (exact for the int and float32 keys used)."""
    xp = namespace(*keys)
    if not on_device(xp):
        return np.lexsort(keys)
    return xp.lexsort(xp.stack([xp.asarray(key, dtype=xp.float64) for key in keys]))
