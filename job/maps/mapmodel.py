"""The fitted state that lets faceatlas answer questions about an existing map without refitting.

``map_model.npz`` holds plain numeric arrays only (read with ``allow_pickle=False``, after
:func:`job.store.runs.open_run` has checked its SHA-256 against ``run.json``), the same whichever backend drew
the map, so a CPU-only install can use a map fitted by cuML:

* ``identity`` (n_identities,) int64, ``centroid`` (n_identities, dim) float32 unit rows of the faces on
  the map that are not suspect, ``count`` faces behind each centroid, ``cohesion`` mean cosine of those
  faces to their centroid;
* ``anchor`` (n_identities, n_components) float32: where each identity sits on the map (its face nearest
  the mean position of its faces), NaN for an identity with no fitted face;
* ``coords`` (n_on_map, n_components) float32 and ``face_identity`` (n_on_map,) int32: the map position of
  every face on the map (fitted by UMAP or placed on the fitted map; not the held-out faces) and the index
  of the identity it belongs to (a suspect's suggested identity);
* ``radius`` (scalar): how far from the nearest face a map point still counts as on the populated map;
* ``centre`` (dim,) float32 and ``centre_scale`` (scalar): the database's mean direction the run subtracted
  before computing (:mod:`job.analysis.geometry`; an empty array when it did not) and a centred face's typical
  length, so new faces and inverted points move between the input's space and the run's; ``temperature``
  (scalar): the cosine scale of placement's identity weights in that space. Models written before these
  existed read as uncentred, with the old fixed temperature.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from job.analysis.geometry import Geometry, centre_rows
from job.arrays import FloatArray, IdArray
from job.atomic import atomic_write
from job.errors import InputError
from job.io.memory import require
from job.reduce.extend import DEFAULT_TEMPERATURE

MODEL_FILE = "map_model.npz"
_FIELDS = {"identity": "i", "centroid": "f", "count": "i", "cohesion": "f", "anchor": "f", "coords": "f",
           "face_identity": "i", "radius": "f"}
_GEOMETRY_FIELDS = {"centre": "f", "centre_scale": "f", "temperature": "f"}  # added in 0.7, optional on read

MAP_LIMIT = 1e6  # no map position beyond: UMAP layouts start within +-10 (umap-learn, cuML) and move a few units
RADIUS_NEIGHBOUR = 5  # the populated map: within RADIUS_FACTOR x (99th percentile of 5th-neighbour distance)
RADIUS_FACTOR = 2.0


@dataclass(frozen=True)
class MapModel:
    """Identity centroids in the embedding space tied to where faces and identities sit on the map."""

    identity: IdArray
    centroid: FloatArray
    count: IdArray
    cohesion: FloatArray
    anchor: FloatArray
    coords: FloatArray
    face_identity: np.ndarray
    radius: float
    centre: FloatArray | None = None
    centre_scale: float = 1.0
    temperature: float = DEFAULT_TEMPERATURE

    @property
    def dim(self) -> int:
        return int(self.centroid.shape[1])

    @property
    def n_components(self) -> int:
        return int(self.coords.shape[1])

    def working(self, unit: np.ndarray) -> np.ndarray:
        """Unit faces of the input's space (n, dim) in the space the run computed in (centred when it was)."""
        return unit if self.centre is None else centre_rows(np.asarray(unit), self.centre)

    def tree(self) -> Any:
        """A k-d tree over the map positions of the model's faces (built once, on first use, n log n)."""
        cached = self.__dict__.get("_tree")
        if cached is None:
            from scipy.spatial import cKDTree

            cached = cKDTree(self.coords)
            object.__setattr__(self, "_tree", cached)
        return cached


def build_model(identity: IdArray, centroid: FloatArray, count: IdArray, cohesion: FloatArray, coords: FloatArray, *,
                face_identity: np.ndarray, geometry: Geometry | None = None) -> MapModel:
    """Assemble a model from identity centroids (unit rows) and the map positions ``coords`` of the faces on the
    map (of identity index ``face_identity``), in the run's ``geometry`` (None: the input's own space, the legacy
    temperature)."""
    n_ids = len(identity)
    anchor = np.full((n_ids, coords.shape[1]), np.nan, dtype=np.float32)
    per_id = np.bincount(face_identity, minlength=n_ids)
    means = np.stack([np.bincount(face_identity, weights=coords[:, a], minlength=n_ids) for a in
                      range(coords.shape[1])], axis=1) / np.maximum(per_id, 1)[:, None]
    gap = np.linalg.norm(coords - means[face_identity], axis=1)
    order = np.lexsort((gap, face_identity))
    first = order[np.r_[True, np.diff(face_identity[order]) != 0]]
    anchor[face_identity[first]] = coords[first]
    from scipy.spatial import cKDTree

    coords = coords.astype(np.float32)
    tree = cKDTree(coords)  # built once: for the radius here and every query after
    k = min(RADIUS_NEIGHBOUR, len(coords) - 1)
    radius = float("inf")
    if k >= 1:
        kth, _ = tree.query(coords, k=k + 1, workers=-1)  # a face is its own first neighbour
        radius = max(float(RADIUS_FACTOR * np.quantile(np.asarray(kth)[:, -1], 0.99)), 1e-6)
    centre, scale, temperature = ((None, 1.0, DEFAULT_TEMPERATURE) if geometry is None  # MapModel's defaults
                                  else (geometry.centre, geometry.centre_scale, geometry.temperature))
    model = MapModel(np.asarray(identity, np.int64), np.asarray(centroid, np.float32), np.asarray(count, np.int64),
                     np.asarray(cohesion, np.float32), anchor, coords, face_identity.astype(np.int32), radius,
                     centre=centre, centre_scale=scale, temperature=temperature)
    object.__setattr__(model, "_tree", tree)
    return model


def save_model(model: MapModel, path: Path) -> Path:
    """Write ``model`` as an uncompressed ``.npz`` of plain arrays (atomically)."""
    arrays = {name: np.asarray(getattr(model, name)) for name in _FIELDS}
    arrays.update(centre=np.zeros(0, np.float32) if model.centre is None else np.asarray(model.centre, np.float32),
                  centre_scale=np.asarray(model.centre_scale, np.float64),
                  temperature=np.asarray(model.temperature, np.float64))
    with atomic_write(path) as tmp, tmp.open("wb") as handle:
        # numpy's stub reads a ** key as possibly its allow_pickle flag: these keys are the model's field names
        np.savez(handle, **arrays)  # type: ignore[arg-type, unused-ignore]  # numpy's stub reads a key as allow_pickle
    return path


def load_model(path: Path, max_bytes: int | None = None, max_memory: int | None = None) -> MapModel:
    """Read a model written by :func:`save_model`; its checksum must already be verified (``open_run``).

    Each array's size is read from its header and checked (against what the archive says it holds,
    ``max_bytes`` — the most a model of the run's size can hold — and the memory available) before any array
    is read, so a forged model that would decompress to gigabytes is refused unread. The arrays must then
    agree with each other: sorted unique identities, unit centroids, finite positions, a face index in range.
    """
    from job.io.formats import member_header

    fix = "rerun faceatlas run"
    try:
        with zipfile.ZipFile(path) as archive:
            members = {name.removesuffix(".npy"): archive.getinfo(name) for name in archive.namelist()}
            missing = [name for name in _FIELDS if name not in members]
            if missing:
                raise InputError(f"{path}: not a faceatlas map model (no array {missing[0]!r}); {fix}")
            present = [name for name in (*_FIELDS, *_GEOMETRY_FIELDS) if name in members]
            claimed = sum(member_header(archive, members[name], path).data_bytes for name in present)
            if max_bytes is not None and claimed > max_bytes:
                raise InputError(f"{path}: its arrays claim {claimed:,} bytes, more than a map of this run's "
                                 f"size holds ({max_bytes:,}); the model was replaced, {fix}")
            require(claimed, max_memory, f"{path}: reading the map model", "use a smaller map")
            with np.load(path, allow_pickle=False) as loaded:
                arrays = {name: loaded[name] for name in present}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError,
            RuntimeError) as exc:
        raise InputError(f"{path}: not a faceatlas map model ({type(exc).__name__}); {fix}") from None
    _check_arrays(arrays, path)
    centre, scale, temperature = _geometry_arrays(arrays, path)
    return MapModel(arrays["identity"].astype(np.int64), arrays["centroid"].astype(np.float32),
                    arrays["count"].astype(np.int64), arrays["cohesion"].astype(np.float32),
                    arrays["anchor"].astype(np.float32), arrays["coords"].astype(np.float32),
                    arrays["face_identity"].astype(np.int32), float(arrays["radius"]), centre, scale, temperature)


def _geometry_arrays(arrays: dict[str, np.ndarray], path: Path) -> tuple[FloatArray | None, float, float]:
    """The model's centre (None: not centred, or a model from before 0.7), centre scale and temperature, checked."""
    if "centre" not in arrays:
        return None, 1.0, DEFAULT_TEMPERATURE
    centre, dim = arrays["centre"], arrays["centroid"].shape[1]
    scalars = [arrays[name] for name in ("centre_scale", "temperature") if name in arrays]
    fine = (len(scalars) == 2 and all(value.shape == () and value.dtype.kind == "f" for value in scalars)
            and centre.dtype.kind == "f" and centre.shape in ((0,), (dim,)))
    with np.errstate(invalid="ignore", over="ignore"):
        fine = fine and bool(np.isfinite(centre).all() and np.linalg.norm(centre.astype(np.float64)) < 1.0)
        scale, temperature = (float(value) for value in scalars) if fine else (0.0, 0.0)
        fine = fine and 0.0 < scale <= 2.0 and 0.0 < temperature <= 1.0
    if not fine:
        raise InputError(f"{path}: a centre, centre_scale or temperature no faceatlas run writes; the model was "
                         "edited, rerun faceatlas run")
    return (centre.astype(np.float32) if len(centre) else None), scale, temperature


def model_bytes(n_faces: int, n_identities: int, dim: int, n_components: int = 3) -> int:
    """The most bytes a :func:`save_model` archive of a run of this size holds (float64/int64 at worst)."""
    return 8 * (n_identities * (dim + 3 + n_components) + n_faces * (n_components + 1) + dim + 3)


def _check_arrays(arrays: dict[str, np.ndarray], path: Path) -> None:
    for name, kind in _FIELDS.items():
        if arrays[name].dtype.kind != kind:
            raise InputError(f"{path}: field {name} has dtype {arrays[name].dtype}; rerun faceatlas run")
    dims = {"identity": 1, "centroid": 2, "count": 1, "cohesion": 1, "anchor": 2, "coords": 2, "face_identity": 1,
            "radius": 0}
    if any(arrays[name].ndim != ndim for name, ndim in dims.items()) or arrays["coords"].shape[1] not in (2, 3):
        raise InputError(f"{path}: arrays of unexpected shapes; rerun faceatlas run")
    n_ids, n_faces = len(arrays["identity"]), len(arrays["coords"])
    shapes_ok = (arrays["centroid"].shape[0] == n_ids
                 and arrays["anchor"].shape == (n_ids, arrays["coords"].shape[1])
                 and len(arrays["count"]) == n_ids == len(arrays["cohesion"]) and arrays["radius"].shape == ()
                 and arrays["face_identity"].shape == (n_faces,) and n_faces > 0 and n_ids > 0
                 and int(arrays["face_identity"].max()) < n_ids and int(arrays["face_identity"].min()) >= 0)
    if not shapes_ok:
        raise InputError(f"{path}: arrays of inconsistent shapes; rerun faceatlas run")
    problem = _value_problem(arrays)
    if problem:
        raise InputError(f"{path}: {problem}, which no faceatlas run writes; the model was edited, rerun faceatlas run")


def _value_problem(arrays: dict[str, np.ndarray]) -> str:
    """What is wrong with the model's values, or "" (every answer it gives would rest on these)."""
    identity, anchor, count = arrays["identity"], arrays["anchor"].astype(np.float64), arrays["count"]
    placed = np.isfinite(anchor).all(axis=1)
    with np.errstate(invalid="ignore", over="ignore"):
        centroid = arrays["centroid"]  # squared lengths summed in float64 without a float64 copy of the table
        lengths = np.sqrt(np.einsum("ij,ij->i", centroid, centroid, dtype=np.float64))
        radius = float(arrays["radius"])
        coords = arrays["coords"].astype(np.float64)
        extent = coords.max(axis=0) - coords.min(axis=0)
        size = max(1.0, float(np.abs(coords).max()))
        checks = {
            "identities not sorted and unique": bool(np.any(np.diff(identity) <= 0)),
            "NaN or inf centroids or map positions": not (np.isfinite(arrays["centroid"]).all()
                                                           and np.isfinite(coords).all()),
            f"map positions beyond +-{MAP_LIMIT:g}": not (np.abs(coords).max() <= MAP_LIMIT and
                                                           np.all(np.isnan(anchor) | (np.abs(anchor) <= MAP_LIMIT))),
            # the page and the PNG maps scale the faces' x/y extent to their width: it cannot be a point
            "faces that all sit at one point": not float(extent[:2].max()) > 1e-4 * size,
            "centroids that are not unit vectors": bool(np.any(np.abs(lengths[count > 0] - 1.0) > 1e-3)),
            "negative face counts": bool(np.any(count < 0)),
            "cohesions outside -1..1": not bool(np.all(np.abs(arrays["cohesion"]) <= 1.0 + 1e-4)),
            "anchors partly NaN": bool(np.any(np.isnan(anchor).any(axis=1) & ~np.isnan(anchor).all(axis=1))),
            "no identity with a map position and faces": not bool(np.any(placed & (count > 0))),
            "a radius that is not a positive number": not (np.isfinite(radius) and radius > 0),
            # the radius is twice a neighbour distance, which the map's diagonal bounds
            "a radius larger than the map": not radius <= 2.0 * float(np.linalg.norm(extent)) * (1 + 1e-6) + 1e-6,
        }
    return next((what for what, failed in checks.items() if failed), "")
