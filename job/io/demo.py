"""The built-in demo database: synthetic ArcFace-like embeddings with planted answers.

Model (all vectors unit length, 512-D by default):

* Identity centres are random directions. A share of identities (``family_fraction``) come in look-alike
  families of 2-4 whose centres share a family direction with weight ``family_weight`` (centre cosine
  ~0.25, so their faces have cosine ~0.15, "resembles, but clearly someone else").
* ``n_lookalike_pairs`` planted look-alike pairs: identity b's centre is identity a's centre mixed with
  weight q ~ U(0.65, 0.8), so faces of a and b are nearly as alike as faces of one person.
* Each identity has a tightness t ~ U(``same_identity_cos``); a face is
  ``sqrt(t) * centre + sqrt(1 - t) * noise`` (noise a random direction), so two faces of one identity have
  cosine ~t (0.5-0.7, as ArcFace pairs do) and faces of unrelated identities ~0 +- 0.045.
* Most identities have ``faces_per_identity`` faces; ``uneven_fraction`` of them have
  ``uneven_min_faces``..2x ``faces_per_identity`` faces (2-10 by default).
* ``misfiled_fraction`` of faces (only in identities with 3+ faces) are drawn from another identity's centre
  but filed under this one: the planted "wrong person" answers. ``misfiled_from="any"`` picks that other
  identity at random; ``"lookalike"`` picks the identity whose centre is most like the filed one's (the
  hard case: the wrong person resembles the right one).

:data:`HARD` is the harder setting the analysis is also measured on: faces of one identity have cosine
0.35-0.55, identities have 1-30 faces, and misfiled faces come from look-alike identities.

Rows are in id order, like the seed's ``actor.npy``; stored as float16 in the seed's structured dtype.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from job.arrays import FloatArray, IdArray
from job.atomic import atomic_write, existing_ancestor, move_without_replacing

CHUNK_FACES = 1 << 16


@dataclass(frozen=True)
class DemoSpec:
    """Parameters of the demo generator; the defaults give the seed's 1,000 ids x ~5 faces."""

    n_identities: int = 1000
    faces_per_identity: int = 5
    dim: int = 512
    seed: int = 0
    same_identity_cos: tuple[float, float] = (0.5, 0.7)
    uneven_fraction: float = 0.15
    uneven_min_faces: int = 2
    latent_dim: int = 5
    latent_weight: float = 0.4
    family_fraction: float = 0.2
    family_weight: float = 0.25
    n_lookalike_pairs: int = 10
    lookalike_weight: tuple[float, float] = (0.65, 0.8)
    misfiled_fraction: float = 0.02
    misfiled_from: str = "any"
    raw_norms: bool = False
    norm_scale: float = 28.0
    face_quality: tuple[float, float] = (1.0, 1.0)
    low_quality_fraction: float = 0.0
    low_quality: tuple[float, float] = (0.15, 0.45)
    n_twin_pairs: int = 0
    twin_weight: tuple[float, float] = (0.8, 0.9)
    twin_misfiled: float = 0.0
    duplicate_fraction: float = 0.0
    shared_direction: float = 0.0
    norms_track_quality: bool = True


@dataclass(frozen=True)
class DemoTruth:
    """The planted answers of one demo database."""

    spec: DemoSpec
    misfiled_rows: list[int]
    misfiled_true_ids: list[int]
    lookalike_pairs: list[tuple[int, int]]
    families: list[list[int]] = field(default_factory=list)
    twin_pairs: list[tuple[int, int]] = field(default_factory=list)
    low_quality_rows: list[int] = field(default_factory=list)
    duplicate_rows: list[int] = field(default_factory=list)

    def true_ids(self, ids: np.ndarray) -> IdArray:
        """Each face's true identity (n_faces,) int64: the filed ``ids`` with the planted misfiles' true ids."""
        true: IdArray = np.asarray(ids, dtype=np.int64).copy()
        true[self.misfiled_rows] = self.misfiled_true_ids
        return true

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: ``misfiled`` rows with the id filed and the true id, pairs, families."""
        return {
            "generator": "faceatlas.demo",
            "spec": asdict(self.spec),
            "misfiled": [
                {"row": row, "true_id": true_id}
                for row, true_id in zip(self.misfiled_rows, self.misfiled_true_ids, strict=True)
            ],
            "lookalike_pairs": [list(pair) for pair in self.lookalike_pairs],
            "families": self.families,
            "twin_pairs": [list(pair) for pair in self.twin_pairs],
            "low_quality_rows": self.low_quality_rows,
            "duplicate_rows": self.duplicate_rows,
        }


HARD = DemoSpec(same_identity_cos=(0.35, 0.55), faces_per_identity=15, uneven_fraction=1.0, uneven_min_faces=1,
                misfiled_from="lookalike")
"""The harder demo setting: looser identities, 1-30 faces each, misfiled faces from look-alike identities."""

WILD = DemoSpec(same_identity_cos=(0.4, 0.65), faces_per_identity=15, uneven_fraction=1.0, uneven_min_faces=1,
                misfiled_from="mixed", raw_norms=True, face_quality=(0.7, 1.0), low_quality_fraction=0.04,
                n_twin_pairs=15, twin_misfiled=0.6, duplicate_fraction=0.005)
"""The second demo shape, as a recogniser's raw output: faces not unit length (their length tracks quality),
1-30 faces per identity, per-face noise that varies, 4% low-quality faces, near-twin identities, misfiled
faces from look-alikes, from twins and at random, and a few re-enrolled photos."""

UNCENTRED = DemoSpec(dim=128, same_identity_cos=(0.55, 0.8), faces_per_identity=15, uneven_fraction=1.0,
                     uneven_min_faces=1, misfiled_from="mixed", raw_norms=True, norm_scale=1.42,
                     face_quality=(0.7, 1.0), low_quality_fraction=0.04, n_twin_pairs=15, twin_misfiled=0.6,
                     duplicate_fraction=0.005, shared_direction=0.84, norms_track_quality=False)
"""The wild shape as dlib's ResNet gives it (measured on LFW, bench/bench_real.py): 128-D vectors that all
share one mean direction (two strangers' faces have cosine ~0.84, two photos of one person ~0.95), lengths
~1.42 that vary but say nothing of quality, so its low-quality faces have no norm signal."""


DEMO_SHAPES = {"standard": DemoSpec(), "hard": HARD, "wild": WILD, "uncentred": UNCENTRED}
"""The built-in demo shapes by name (``input.demo``, ``demo-db --shape``)."""


def truth_from_json(payload: Any) -> DemoTruth:
    """The inverse of :meth:`DemoTruth.to_json`; raises ValueError/TypeError/KeyError on anything else,
    including a row or id that is not a JSON integer (``true``, ``3.5``, ``"3"``) and a spec value of another
    type than the generator's."""
    if not isinstance(payload, dict) or payload.get("generator") != "faceatlas.demo":
        raise ValueError("not a faceatlas demo truth file")
    spec = payload["spec"]
    if not isinstance(spec, dict):
        raise TypeError("spec is not an object")
    defaults = asdict(DemoSpec())
    spec_fields = {key: _spec_value(value, defaults[key]) for key, value in spec.items() if key in defaults}
    misfiled = payload["misfiled"]
    rows = [_whole(item["row"]) for item in _listed(misfiled)]
    true_ids = [_whole(item["true_id"]) for item in misfiled]
    pairs = [_pair(pair) for pair in _listed(payload["lookalike_pairs"])]
    families = [[_whole(i) for i in _listed(family)] for family in _listed(payload.get("families", []))]
    twins = [_pair(pair) for pair in _listed(payload.get("twin_pairs", []))]
    low = [_whole(row) for row in _listed(payload.get("low_quality_rows", []))]
    duplicates = [_whole(row) for row in _listed(payload.get("duplicate_rows", []))]
    return DemoTruth(DemoSpec(**spec_fields), rows, true_ids, pairs, families, twins, low, duplicates)


def _whole(value: Any) -> int:
    """A JSON integer (not a bool, a float or text), else TypeError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{value!r:.40} is not an integer")
    return value


def _listed(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError("expected a list")
    return value


def _pair(value: Any) -> tuple[int, int]:
    first, second = _listed(value)
    return _whole(first), _whole(second)


def _spec_value(value: Any, default: Any) -> Any:
    """``value`` as the type of the generator's ``default`` (a list for a tuple; an int where a float is
    allowed), else TypeError."""
    if isinstance(default, tuple):
        return tuple(_spec_value(item, default[0]) for item in _listed(value))
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not type(default):
        raise TypeError(f"spec value {value!r:.40} is not a {type(default).__name__}")
    return value


def seed_dtype(n_identities: int, dim: int) -> np.dtype:
    """The seed's ``actor.npy`` dtype; ids widen to uint32 only when 65,536+ identities need it."""
    id_type = "<u2" if n_identities <= 2**16 else "<u4"
    return np.dtype([("id", id_type), ("embedding", "<f2", (dim,))])


def make_demo(spec: DemoSpec = DemoSpec()) -> tuple[np.ndarray, DemoTruth]:
    """Generate a demo database in memory.

    Returns
    -------
    records : structured ndarray of shape (n_faces,), dtype ``seed_dtype`` (fields ``id``, ``embedding``)
    truth : the planted misfiled faces, look-alike pairs and families
    """
    plan = plan_demo(spec)
    chunks = list(demo_chunks(plan))
    records = np.concatenate(chunks) if chunks else np.empty(0, dtype=seed_dtype(spec.n_identities, spec.dim))
    return records, plan.truth


@dataclass
class DemoPlan:
    """Everything about a demo database but its faces: per identity centres and tightness, per face ids and
    source identities, the planted truth, and the generator whose next draws are the faces' noise.
    ``quality`` (per face, scales its tightness) and ``norms`` (per face raw length) are None for unit faces
    of even quality; ``copies`` (per face) is the row a face re-enrols (-1: none); ``shared`` (dim,) the
    direction every face shares (``spec.shared_direction`` of it; None: none)."""

    spec: DemoSpec
    centres: FloatArray
    tightness: np.ndarray
    ids: IdArray
    source: IdArray
    truth: DemoTruth
    rng: np.random.Generator
    quality: np.ndarray | None = None
    norms: np.ndarray | None = None
    copies: IdArray | None = None
    shared: FloatArray | None = None


def plan_demo(spec: DemoSpec) -> DemoPlan:
    """Draw the identities and the planted answers; memory n_identities x dim, not n_faces x dim.

    Features off by default (raw norms, face quality, twins, duplicates) draw nothing, so the standard and
    hard demos are the same numbers with or without them.
    """
    rng = np.random.default_rng(spec.seed)
    centres, families = _family_centres(rng, spec)
    centres, pairs = _plant_lookalikes(rng, centres, spec, taken={i for f in families for i in f})
    twins: list[tuple[int, int]] = []
    if spec.n_twin_pairs:
        taken = {i for f in families for i in f} | {i for p in pairs for i in p}
        centres, twins = _plant_twins(rng, centres, spec, taken)
    ids = _face_ids(rng, spec)
    tightness = rng.uniform(*spec.same_identity_cos, size=spec.n_identities)
    source = ids.copy()
    misfiled = _pick_misfiled(rng, ids, spec)
    if spec.misfiled_from == "lookalike":
        source[misfiled] = _most_alike(centres, ids[misfiled])
    elif spec.misfiled_from == "mixed":  # half from the most alike identity, half from anyone
        alike = rng.random(len(misfiled)) < 0.5
        source[misfiled[alike]] = _most_alike(centres, ids[misfiled[alike]])
        source[misfiled[~alike]] = _other_identities(rng, ids[misfiled[~alike]], spec.n_identities)
    else:
        source[misfiled] = _other_identities(rng, ids[misfiled], spec.n_identities)
    if twins and spec.twin_misfiled:
        misfiled = _misfile_twins(rng, ids, source, misfiled, twins, share=spec.twin_misfiled)
    quality = norms = copies = None
    low: IdArray = np.zeros(0, dtype=np.int64)
    duplicate: IdArray = np.zeros(0, dtype=np.int64)
    if spec.raw_norms or spec.low_quality_fraction or spec.face_quality != (1.0, 1.0):
        quality, low = _face_quality(rng, len(ids), misfiled, spec)
        if spec.raw_norms and spec.norms_track_quality:  # ArcFace-like: a face's length grows with its quality
            norms = (spec.norm_scale * (0.35 + 0.65 * quality) * np.exp(rng.normal(0, 0.12, len(ids))))
        elif spec.raw_norms:  # dlib-like: lengths vary by a few percent and say nothing of quality
            norms = spec.norm_scale * np.exp(rng.normal(0, 0.055, len(ids)))
    if spec.duplicate_fraction:
        copies, duplicate = _plant_duplicates(rng, ids, np.union1d(misfiled, low), spec.duplicate_fraction)
    truth = DemoTruth(spec=spec, misfiled_rows=misfiled.tolist(), misfiled_true_ids=source[misfiled].tolist(),
                      lookalike_pairs=pairs, families=families, twin_pairs=twins, low_quality_rows=low.tolist(),
                      duplicate_rows=duplicate.tolist())
    shared = _unit(rng, 1, spec.dim)[0] if spec.shared_direction else None
    return DemoPlan(spec, centres, tightness, ids, source, truth, rng, quality, norms, copies, shared)


def demo_chunks(plan: DemoPlan, rows: int = CHUNK_FACES) -> Iterator[np.ndarray]:
    """The faces of ``plan`` as structured records, ``rows`` at a time, in row order.

    The noise is drawn from the plan's generator chunk after chunk, which gives the same numbers as one
    draw of all of it: the chunks concatenated are exactly :func:`make_demo`'s records.
    """
    dtype = seed_dtype(plan.spec.n_identities, plan.spec.dim)
    previous = np.zeros(plan.spec.dim, dtype=np.float32)
    for start in range(0, len(plan.ids), rows):
        chunk = slice(start, start + rows)
        source = plan.source[chunk]
        records = np.empty(len(source), dtype=dtype)
        records["id"] = plan.ids[chunk]
        tightness = plan.tightness[source] * (1.0 if plan.quality is None else plan.quality[chunk])
        faces = _faces(plan.rng, plan.centres[source], tightness)
        if plan.copies is not None:  # a re-enrolled photo: the earlier face again, re-encoded (cosine ~0.999)
            for at in np.flatnonzero(plan.copies[chunk] >= 0).tolist():
                earlier = faces[at - 1] if at else previous
                jitter = _unit(plan.rng, 1, plan.spec.dim)[0]
                faces[at] = (earlier + 0.05 * jitter) / np.linalg.norm(earlier + 0.05 * jitter)
            previous = faces[-1].copy()
        if plan.shared is not None:  # every face leans on one direction: strangers' faces are alike too
            faces = _mix(np.broadcast_to(plan.shared, faces.shape), faces, plan.spec.shared_direction)
        if plan.norms is not None:
            faces *= plan.norms[chunk, None].astype(np.float32)
        records["embedding"] = faces.astype(np.float16)
        yield records


MAX_IDENTITIES = 2**32  # the seed's format stores ids as uint32 at most
MAX_FACES_PER_IDENTITY = 100_000


def check_demo_request(spec: DemoSpec, path: Path, truth_path: Path, *, force: bool = False) -> None:
    """Refuse, before generating anything, a demo that cannot be written: a folder as the file, an existing file
    (someone's database, perhaps the seed's real ``actor.npy``) unless ``force``, counts beyond the format, or a
    database larger than the memory its plan needs or the disk space left."""
    import shutil

    from job.errors import UsageError
    from job.io.memory import format_size, require

    for target in (path, truth_path):
        if target.is_dir():
            raise UsageError(f"{target}: is a folder; pass a file name such as {target / 'demo.npy'}")
        if os.path.lexists(target) and not force:
            raise UsageError(f"{target}: already exists, and demo-db replaces no file unasked; pick a new name, or "
                             "pass --force to replace it")
    if not 2 <= spec.n_identities <= MAX_IDENTITIES or not 1 <= spec.faces_per_identity <= MAX_FACES_PER_IDENTITY:
        raise UsageError(f"demo-db: {spec.n_identities} identities x {spec.faces_per_identity} faces; the demo "
                         f"format holds 2..{MAX_IDENTITIES:,} identities of 1..{MAX_FACES_PER_IDENTITY:,} faces, "
                         "pick smaller numbers")
    n_faces = spec.n_identities * (2 * spec.faces_per_identity if spec.uneven_fraction else spec.faces_per_identity)
    require(spec.n_identities * spec.dim * 4 * 2 + n_faces * 32, None,
            f"demo-db: planning {spec.n_identities:,} identities", "ask for fewer identities")
    need = n_faces * seed_dtype(spec.n_identities, spec.dim).itemsize
    existing = existing_ancestor(path.absolute().parent)
    free = shutil.disk_usage(existing).free
    if need > free:
        raise UsageError(f"{path}: up to {format_size(need)} of faces, but {existing} has {format_size(free)} free; "
                         "ask for fewer identities or write elsewhere")


def write_demo(path: Path, spec: DemoSpec, rows: int = CHUNK_FACES, *, force: bool = False
               ) -> tuple[int, DemoTruth]:
    """Stream a demo database to ``path`` (.npy) chunk by chunk, never holding its faces in memory.

    Writes a temporary sibling and moves it into place, replacing an existing ``path`` only with ``force``
    (else a file that appeared meanwhile raises :class:`FileExistsError`); returns the number of faces and
    the truth.
    """
    plan = plan_demo(spec)
    dtype = seed_dtype(spec.n_identities, spec.dim)
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (len(plan.ids),)}
    install = os.replace if force else move_without_replacing
    with atomic_write(path, install=install) as tmp, tmp.open("wb") as handle:
        np.lib.format.write_array_header_2_0(handle, header)
        for records in demo_chunks(plan, rows):
            handle.write(records.tobytes())
    return len(plan.ids), plan.truth


def _unit(rng: np.random.Generator, n: int, dim: int) -> FloatArray:
    vectors = rng.standard_normal((n, dim), dtype=np.float32)
    unit: FloatArray = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return unit


def _mix(base: FloatArray, other: FloatArray, weight: np.ndarray | float) -> FloatArray:
    # sqrt weights keep the result's cosine to `base` at ~sqrt(weight) and pairwise cosines at ~weight
    w = np.asarray(weight, dtype=np.float32).reshape(-1, 1) if np.ndim(weight) else np.float32(weight)
    mixed = np.sqrt(w) * base + np.sqrt(1 - w) * other
    unit: FloatArray = mixed / np.linalg.norm(mixed, axis=1, keepdims=True)
    return unit


def _family_centres(rng: np.random.Generator, spec: DemoSpec) -> tuple[FloatArray, list[list[int]]]:
    centres = np.empty((spec.n_identities, spec.dim), dtype=np.float32)
    for start in range(0, spec.n_identities, CHUNK_FACES):  # same draws as one call, one copy in memory
        centres[start:start + CHUNK_FACES] = _unit(rng, min(CHUNK_FACES, spec.n_identities - start), spec.dim)
    if spec.latent_dim > 0:
        # a few shared "attribute" directions (think age, sex, ancestry) give identities a smooth layout
        basis = np.linalg.qr(rng.standard_normal((spec.dim, spec.latent_dim)))[0].astype(np.float32)
        latent = _unit(rng, spec.n_identities, spec.latent_dim)
        for start in range(0, spec.n_identities, CHUNK_FACES):
            block = slice(start, start + CHUNK_FACES)
            centres[block] = _mix(latent[block] @ basis.T, centres[block], spec.latent_weight)
    members = rng.permutation(spec.n_identities)[: int(spec.family_fraction * spec.n_identities)]
    families: list[list[int]] = []
    start = 0
    while start + 2 <= len(members):
        size = int(rng.integers(2, 5))
        family = sorted(members[start : start + size].tolist())
        start += size
        if len(family) < 2:
            break
        direction = _unit(rng, 1, spec.dim)
        centres[family] = _mix(np.repeat(direction, len(family), 0), centres[family], spec.family_weight)
        families.append(family)
    return centres, families


def _plant_lookalikes(
    rng: np.random.Generator, centres: FloatArray, spec: DemoSpec, taken: set[int]
) -> tuple[FloatArray, list[tuple[int, int]]]:
    free = np.array([i for i in rng.permutation(spec.n_identities).tolist() if i not in taken], dtype=np.int64)
    n_pairs = min(spec.n_lookalike_pairs, len(free) // 2)
    a, b = free[:n_pairs], free[n_pairs : 2 * n_pairs]
    weight = rng.uniform(*spec.lookalike_weight, size=n_pairs)
    centres[b] = _mix(centres[a], centres[b], weight)
    return centres, sorted((int(min(x, y)), int(max(x, y))) for x, y in zip(a, b, strict=True))


def _plant_twins(rng: np.random.Generator, centres: FloatArray, spec: DemoSpec, taken: set[int]
                 ) -> tuple[FloatArray, list[tuple[int, int]]]:
    # near-twins: centre cosine ~sqrt(weight), 0.89-0.95 by default, above the look-alike pairs' 0.8-0.9
    free = np.array([i for i in rng.permutation(spec.n_identities).tolist() if i not in taken], dtype=np.int64)
    n_pairs = min(spec.n_twin_pairs, len(free) // 2)
    a, b = free[:n_pairs], free[n_pairs : 2 * n_pairs]
    centres[b] = _mix(centres[a], centres[b], rng.uniform(*spec.twin_weight, size=n_pairs))
    return centres, sorted((int(min(x, y)), int(max(x, y))) for x, y in zip(a, b, strict=True))


def _misfile_twins(rng: np.random.Generator, ids: IdArray, source: IdArray, misfiled: IdArray,
                   twins: list[tuple[int, int]], *, share: float) -> IdArray:
    """File one face of a twin under the other twin, in ``share`` of the twin pairs (identities of 3+ faces
    with no misfiled face yet); returns all misfiled rows, sorted."""
    counts = np.bincount(ids)
    starts = np.searchsorted(ids, np.arange(len(counts)))
    busy = set(ids[misfiled].tolist())
    chosen = []
    for a, b in twins:
        filed, true = (a, b) if rng.random() < 0.5 else (b, a)
        if rng.random() >= share or counts[filed] < 3 or filed in busy:
            continue
        row = int(starts[filed] + rng.integers(counts[filed]))
        source[row] = true
        chosen.append(row)
    return np.sort(np.concatenate([misfiled, np.array(chosen, dtype=np.int64)]))


def _face_quality(rng: np.random.Generator, n_faces: int, misfiled: IdArray, spec: DemoSpec
                  ) -> tuple[np.ndarray, IdArray]:
    """Per-face quality (the share of its identity's tightness it keeps) and the low-quality rows (blurred or
    occluded: weakly like everyone, their own identity included), never a misfiled face."""
    quality = rng.uniform(*spec.face_quality, size=n_faces)
    eligible = np.setdiff1d(np.arange(n_faces), misfiled)
    n_low = min(round(spec.low_quality_fraction * n_faces), len(eligible))
    low = np.sort(rng.choice(eligible, size=n_low, replace=False))
    quality[low] = rng.uniform(*spec.low_quality, size=n_low)
    return quality, low


def _plant_duplicates(rng: np.random.Generator, ids: IdArray, busy: IdArray, share: float
                      ) -> tuple[IdArray, IdArray]:
    """Faces that re-enrol the face before them (same identity, neither misfiled nor low quality)."""
    rows = np.arange(1, len(ids))
    eligible = rows[(ids[rows] == ids[rows - 1]) & ~np.isin(rows, busy) & ~np.isin(rows - 1, busy)]
    chosen = rng.choice(eligible, size=min(round(share * len(ids)), len(eligible)), replace=False)
    chosen = np.sort(chosen[~np.isin(chosen - 1, chosen)])  # a copy of a copy would name the wrong original
    copies = np.full(len(ids), -1, dtype=np.int64)
    copies[chosen] = chosen - 1
    return copies, chosen


def _face_ids(rng: np.random.Generator, spec: DemoSpec) -> IdArray:
    counts = np.full(spec.n_identities, spec.faces_per_identity, dtype=np.int64)
    uneven = rng.random(spec.n_identities) < spec.uneven_fraction
    counts[uneven] = rng.integers(spec.uneven_min_faces, 2 * spec.faces_per_identity + 1, size=int(uneven.sum()))
    return np.repeat(np.arange(spec.n_identities, dtype=np.int64), counts)


def _pick_misfiled(rng: np.random.Generator, ids: IdArray, spec: DemoSpec) -> IdArray:
    counts = np.bincount(ids, minlength=spec.n_identities)
    eligible = np.flatnonzero(counts[ids] >= 3)
    n_misfiled = min(round(spec.misfiled_fraction * len(ids)), len(eligible))
    chosen = rng.choice(eligible, size=n_misfiled, replace=False)
    # at most one misfiled face per identity, so every identity keeps a clear majority of its own faces
    _, first = np.unique(ids[chosen], return_index=True)
    return np.sort(chosen[first])


def _other_identities(rng: np.random.Generator, filed: IdArray, n_identities: int) -> IdArray:
    other = rng.integers(0, n_identities - 1, size=len(filed))
    return other + (other >= filed)  # skip the identity the face is filed under


def _most_alike(centres: FloatArray, filed: IdArray) -> IdArray:
    found = np.empty(len(filed), dtype=np.int64)
    for start in range(0, len(filed), 1024):
        sims = centres[filed[start : start + 1024]] @ centres.T
        sims[np.arange(len(sims)), filed[start : start + 1024]] = -np.inf
        found[start : start + 1024] = sims.argmax(axis=1)
    return found


def _faces(rng: np.random.Generator, centres: FloatArray, tightness: np.ndarray) -> FloatArray:
    noise = _unit(rng, len(centres), centres.shape[1])
    return _mix(centres, noise, tightness)


def truth_json(truth: DemoTruth) -> str:
    """The truth as indented JSON text."""
    return json.dumps(truth.to_json(), indent=1)
