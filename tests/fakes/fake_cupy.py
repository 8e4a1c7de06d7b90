"""A FAKE CuPy for CPU-only tests. It is not CuPy and runs nothing on a GPU.

Its arrays hold NumPy arrays and compute with NumPy, but behave like CuPy's where faceatlas could go wrong
without a GPU to tell:

* ``numpy.asarray(fake)`` raises TypeError, as CuPy's implicit conversion does: results reach the host only
  through ``asnumpy`` / ``.get()`` (in faceatlas, :func:`job.xp.to_host`);
* a NumPy array mixed into a device operation, index or assignment raises TypeError (CuPy: "Unsupported
  type"), so host arrays cannot leak into the GPU path;
* a NumPy function called on a fake array raises TypeError: the analysis must call ``xp.<name>``;
* only names CuPy really has are offered (the list recorded from CuPy's own namespace in
  ``tests/fixtures/cupy-namespace.json``), so code that would fail on CuPy with AttributeError fails here.

Tests install it as ``sys.modules["cupy"]`` (see ``tests/conftest.py``'s ``fake_cupy`` fixture).
"""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any

import numpy as _np  # noqa: ICN001 - private: this module is the fake cupy namespace, which has no `np`
from numpy.lib.mixins import NDArrayOperatorsMixin

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "cupy-namespace.json"
RECORDED: dict[str, Any] = json.loads(FIXTURE.read_text()) if FIXTURE.exists() else {}
IS_FAKE = True
__version__ = str(RECORDED.get("version", "0")) + "+fake"  # a PEP 440 local version: xarray parses it

_HOST = "Unsupported type <class 'numpy.ndarray'> (FAKE cupy: a host array was mixed into device code)"
_IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a NumPy "
             "array explicitly. (FAKE cupy)")


def _device(value: Any) -> Any:
    """Unwrap one argument of a device call: fake arrays to their NumPy array; NumPy arrays refused."""
    if isinstance(value, ndarray):
        return value._array
    if isinstance(value, _np.ndarray) and value.ndim > 0:
        raise TypeError(_HOST)
    if isinstance(value, (list, tuple)):
        return type(value)(_device(item) for item in value)
    if isinstance(value, slice):
        return slice(_device(value.start), _device(value.stop), _device(value.step))
    return value


def _wrap(value: Any) -> Any:
    if isinstance(value, _np.ndarray):
        return ndarray(value)
    if isinstance(value, _np.generic):  # CuPy reductions return 0-d device arrays, not scalars
        return ndarray(_np.asarray(value))
    if isinstance(value, tuple):
        return tuple(_wrap(item) for item in value)
    if isinstance(value, list):
        return [_wrap(item) for item in value]
    return value


# Keywords CuPy 14.2 refuses where NumPy takes them, and required arguments NumPy defaults (read from CuPy's
# sources: ``functions_with_limits`` in tests/fixtures/cupy-namespace.json)
REFUSED_KEYWORDS = {"argsort": {"stable", "order"}, "sort": {"stable", "order"},
                    "clip": {"min", "max", "dtype", "where"}, "einsum": {"out", "order", "casting"},
                    "unique": {"sorted"}, "count_nonzero": {"keepdims"},
                    "isin": {"kind"}, "argpartition": {"kind", "order"}, "partition": {"kind", "order"},
                    "lexsort": {"axis"}}
ALLOWED_VALUES = {("argsort", "kind"): {None, "stable"}, ("sort", "kind"): {None, "stable"},
                  ("quantile", "method"): {"linear", "lower", "higher", "midpoint", "nearest"},
                  ("pad", "mode"): {"constant", "edge", "linear_ramp", "maximum", "mean", "minimum", "reflect",
                                    "symmetric", "wrap", "empty"}}
MIN_POSITIONAL = {"take_along_axis": 3, "clip": 3}  # CuPy requires axis / a_min and a_max


def _check_call(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    refused = REFUSED_KEYWORDS.get(name, set()) & set(kwargs)
    if refused:
        raise TypeError(f"cupy.{name}() got unexpected keyword arguments {sorted(refused)} (FAKE cupy, recorded)")
    for (function, key), allowed in ALLOWED_VALUES.items():
        if function == name and key in kwargs and kwargs[key] not in allowed:
            raise ValueError(f"cupy.{name}({key}={kwargs[key]!r}) is not supported (FAKE cupy, recorded)")
    given = len(args) + sum(1 for key in ("axis", "a_min", "a_max") if key in kwargs)
    if given < MIN_POSITIONAL.get(name, 0):
        raise TypeError(f"cupy.{name}() is missing a required argument (FAKE cupy, recorded)")
    if name == "lexsort" and not isinstance(args[0] if args else kwargs.get("keys"), ndarray):
        raise AttributeError("cupy.lexsort takes one stacked (k, N) array of keys, not a tuple (FAKE cupy, recorded)")


def _call(function: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return _wrap(function(*_device(args), **{key: _device(value) for key, value in kwargs.items()}))


class ndarray(NDArrayOperatorsMixin):  # noqa: N801 - CuPy's name
    """A device array (FAKE): a NumPy array that refuses to meet host arrays."""

    __slots__ = ("__weakref__", "_array")

    def __init__(self, array: _np.ndarray) -> None:
        self._array = array

    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(_IMPLICIT)

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        return _call(getattr(ufunc, method), inputs, kwargs)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        raise TypeError(f"numpy.{func.__name__} was called on a FAKE cupy array: use the array namespace xp")

    def __getattr__(self, name: str) -> Any:
        allowed = RECORDED.get("ndarray_attributes")
        if name.startswith("_") or (allowed is not None and name not in allowed):
            raise AttributeError(f"cupy.ndarray has no attribute {name!r} (FAKE cupy, recorded names)")
        value = getattr(self._array, name)
        if callable(value):
            return lambda *args, **kwargs: _call(value, args, kwargs)
        return _wrap(value)

    def get(self) -> _np.ndarray:
        return self._array.copy()

    def item(self) -> Any:
        return self._array.item()

    def tolist(self) -> Any:
        return self._array.tolist()

    @property
    def T(self) -> ndarray:  # noqa: N802
        return ndarray(self._array.T)

    @property
    def shape(self) -> tuple[int, ...]:
        return self._array.shape

    @property
    def dtype(self) -> Any:
        return self._array.dtype

    @property
    def ndim(self) -> int:
        return self._array.ndim

    @property
    def size(self) -> int:
        return self._array.size

    def __len__(self) -> int:
        return len(self._array)

    def __iter__(self) -> Any:
        return (ndarray(_np.asarray(row)) for row in self._array)

    def __getitem__(self, key: Any) -> Any:
        return _wrap(self._array[_device(key)])

    def __setitem__(self, key: Any, value: Any) -> None:
        self._array[_device(key)] = _device(value)

    def __bool__(self) -> bool:
        return bool(self._array)

    def __int__(self) -> int:
        return int(self._array)

    def __float__(self) -> float:
        return float(self._array)

    def __index__(self) -> int:
        return int(self._array.__index__())

    def __repr__(self) -> str:
        return f"fake_cupy.ndarray({self._array!r})"


class _Ufunc:
    """A ufunc whose methods are the ones CuPy implements (``ufunc_methods`` in the fixture)."""

    def __init__(self, ufunc: Any) -> None:
        self._ufunc = ufunc

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _call(self._ufunc, args, kwargs)

    def __getattr__(self, name: str) -> Any:
        methods = RECORDED.get("ufunc_methods", {}).get(self._ufunc.__name__)
        if methods is not None and name not in methods:
            raise AttributeError(f"cupy.{self._ufunc.__name__} has no method {name!r} (FAKE cupy, recorded)")
        method = getattr(self._ufunc, name)
        if name == "at":  # in place on the first argument
            return lambda target, *args: method(_device(target), *_device(args))
        return lambda *args, **kwargs: _call(method, args, kwargs)


def _namespace(source: Any, recorded: list[str] | None, name: str) -> types.ModuleType:
    module = types.ModuleType(name, f"FAKE {name}")

    def lookup(attr: str) -> Any:
        if recorded is not None and attr not in recorded:
            raise AttributeError(f"module {name!r} has no attribute {attr!r} (FAKE cupy, recorded names)")
        value = getattr(source, attr)
        if isinstance(value, _np.ufunc):
            return _Ufunc(value)
        if isinstance(value, type) or not callable(value):
            return value  # dtypes, constants

        def call(*args: Any, **kwargs: Any) -> Any:
            _check_call(attr, args, kwargs)
            return _call(value, args, kwargs)

        return call

    module.__getattr__ = lookup  # type: ignore[method-assign]
    return module


def asarray(value: Any, dtype: Any = None) -> ndarray:
    """Host to device (an explicit copy, as ``cupy.asarray``)."""
    if isinstance(value, ndarray):
        return ndarray(value._array if dtype is None else value._array.astype(dtype, copy=False))
    return ndarray(_np.array(value, dtype=dtype))


def asnumpy(value: Any) -> _np.ndarray:
    """Device to host (``cupy.asnumpy``)."""
    return value._array.copy() if isinstance(value, ndarray) else _np.asarray(value)


def ascontiguousarray(value: Any, dtype: Any = None) -> ndarray:
    return ndarray(_np.ascontiguousarray(_device(value), dtype=dtype))


GPU: dict[str, Any] = {"name": b"FAKE GPU (not a GPU)", "major": 9, "minor": 0, "free": 100 << 30,
                       "total": 140 << 30, "count": 1, "driver": 13000, "runtime": 12080, "raises": None}
"""The pretend device the fake CUDA runtime reports; tests change it (e.g. ``raises`` an exception to throw)."""


class _OutOfMemoryError(MemoryError):
    """CuPy's cupy.cuda.memory.OutOfMemoryError (a MemoryError)."""


class _Device:
    def __init__(self, index: int = 0) -> None:
        self.id = index

    def __enter__(self) -> _Device:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


def _runtime_call(value: Any) -> Any:
    def call(*args: Any) -> Any:
        if GPU["raises"] is not None:
            raise GPU["raises"]
        return value() if callable(value) else value

    return call


def is_available() -> bool:
    if GPU["raises"] is not None:
        raise GPU["raises"]
    return GPU["count"] > 0


cuda = types.SimpleNamespace(
    runtime=types.SimpleNamespace(
        getDeviceCount=_runtime_call(lambda: GPU["count"]),
        getDeviceProperties=_runtime_call(lambda: {"name": GPU["name"], "major": GPU["major"], "minor": GPU["minor"]}),
        memGetInfo=_runtime_call(lambda: (GPU["free"], GPU["total"])),
        driverGetVersion=_runtime_call(lambda: GPU["driver"]),
        runtimeGetVersion=_runtime_call(lambda: GPU["runtime"])),
    Device=_Device,
    memory=types.SimpleNamespace(OutOfMemoryError=_OutOfMemoryError),
    MemoryPool=lambda allocator=None: types.SimpleNamespace(malloc=allocator),
    malloc_managed=lambda size: None,
    set_allocator=lambda allocator=None: None,
)

linalg = _namespace(_np.linalg, RECORDED.get("cupy.linalg"), "cupy.linalg")
_top = _namespace(_np, RECORDED.get("cupy"), "cupy")


def __getattr__(name: str) -> Any:
    return _top.__getattr__(name)
