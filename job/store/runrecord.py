"""``run.json`` as one typed schema: what ``faceatlas run`` writes and what every command that opens a run reads.

:class:`RunRecord` is the contract between ``run`` and ``verify``, ``report``, ``render``, ``transform``,
``nearest``, ``invert`` and users' own scripts. Its parts are typed (:class:`Input`, :class:`Fit`,
:class:`Metrics`, :class:`GeometryFacts`, :class:`Gpu`, :class:`Cluster`, :class:`RecordedConfig`,
:class:`ReportFacts`), read strictly (a JSON string is no number, ``true`` no count) and frozen.

Versions (``schema_version``):

* 0: every run.json written before the field existed (faceatlas up to the geometry release). Any section
  may be missing (``geometry``, ``gpu``, ``cluster``, the verdict counts, the map-inversion metrics, ...):
  a reader takes an absent value as "not recorded".
* 1 (:data:`SCHEMA_VERSION`): this layout, written by every run now.

Reading is forward compatible: keys this version does not know (a later faceatlas's, a user's) are kept as
they are and written back unchanged when ``report``/``render`` rewrite the record; only the known ones are
typed. Values absent from a file stay absent when it is written back (no ``null`` is added to an old run).
A record that breaks the schema is refused in one line (:meth:`RunRecord.parse`), as every faceatlas error is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError
from pydantic_core import PydanticCustomError

from job.errors import InputError, InternalError
from job.io.files import shown

SCHEMA_VERSION = 1
EDITED = "the record was edited, rerun faceatlas run"
_INT64 = 2**63


def _number(value: object) -> int | float:
    """A JSON number kept as it was written (an integer stays an integer); never a bool."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    raise PydanticCustomError("run_record", "expected {expected}", {"expected": "a number"})


def _sha256(value: object) -> str:
    if isinstance(value, str) and len(value) == 64 and all(ch in "0123456789abcdef" for ch in value):
        return value
    raise PydanticCustomError("run_record_problem", "{problem}", {"problem": f"is {shown(value)}, not a SHA-256"})


Real = Annotated[int | float, PlainValidator(_number)]
"""A number of run.json: an integer or a float, as written (NaN is written as null)."""
Sha256 = Annotated[str, PlainValidator(_sha256)]


class _Part(BaseModel):
    """A run.json object: known keys typed strictly, unknown ones kept as they are, immutable."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)


class Input(_Part):
    """``input``: the database the run read (``n_faces`` after any ``--drop-invalid``)."""

    path: str | None = None
    n_faces: int | None = None
    n_identities: int | None = None
    dim: int | None = None
    dtype: str | None = None
    sha256: str | None = None
    dropped: dict[str, int] | None = None  # reason -> rows left out ("nan_or_inf", "zero")
    duplicates: dict[str, int] | None = None  # "faces" repeating an earlier embedding, "other_id" of them
    unit_length: bool | None = None  # the embeddings came unit-length: their norms say nothing
    quality_known: bool | None = None  # projection's quality comes from the raw lengths
    store: dict[str, Any] | None = None  # a SQL store's read: kind, owner, faces read, left out, unassigned
    keys: list[str] | None = None  # the source's keys projection.parquet carries (face_key, photo_key, ...)


class Fit(_Part):
    """``fit``: how the map was made (the faces UMAP fitted, those placed on the fitted map, those held out)."""

    fitted: int | None = None
    placed: int | None = None
    held_out: int | None = None
    init: str | None = None
    min_dist: Real | None = None
    repulsion_strength: Real | None = None
    n_epochs: int | None = None
    engine: str | None = None
    method: str | None = None  # the rest only when faces were placed
    place_neighbors: int | None = None
    place_epochs: int | None = None
    kernel_scale: Real | None = None


class TaskSeconds(_Part):
    count: int | None = None
    seconds: Real | None = None


class Gpu(_Part):
    """``gpu``: the device a GPU-backend run computed on, its memory set-up, and what ran where."""

    device: str | None = None
    count: int | None = None
    total_bytes: int | None = None
    free_bytes: int | None = None
    compute_capability: str | None = None
    driver_cuda: str | None = None
    runtime_cuda: str | None = None
    memory: str | None = None
    on_gpu: list[str] | None = None
    on_cpu: list[str] | None = None


class Cluster(_Part):
    """``cluster``: the Dask cluster of a ``--dask`` run (its address without credentials) and what ran on it."""

    address: str | None = None
    kind: str | None = None
    workers: int | None = None
    threads: int | None = None
    chunk_faces: int | None = None
    worker_versions: dict[str, str | list[str]] | None = None
    stages: list[str] | None = None
    tasks: dict[str, TaskSeconds] | None = None
    device: str | None = None
    device_reason: str | None = None
    worker_gpus: list[str] | None = None


class PairQuantiles(_Part):
    """Quantiles of the sampled genuine and impostor pair cosines (``q05`` ... ``q95``; null: not measured)."""

    genuine: dict[str, Real | None] | None = None
    impostor: dict[str, Real | None] | None = None

    @property
    def genuine_median(self) -> float | None:
        value = (self.genuine or {}).get("q50")
        return None if value is None else float(value)

    @property
    def impostor_median(self) -> float | None:
        value = (self.impostor or {}).get("q50")
        return None if value is None else float(value)


class GeometryFacts(_Part):
    """``geometry``: what was measured of the database's similarity geometry and decided from it
    (:meth:`job.analysis.geometry.Geometry.record`)."""

    centred: bool | None = None
    reason: str | None = None
    raw: PairQuantiles = Field(default_factory=PairQuantiles)
    working: PairQuantiles = Field(default_factory=PairQuantiles)
    quality_from: str | None = None  # "norms" or "neighbours"
    norm_quality: Real | None = None
    duplicate_cos: Real | None = None
    temperature: Real | None = None
    pairs: dict[str, int] | None = None

    def own_cosine(self) -> float | None:
        """The cosine a typical face has to its own identity's centre, from the genuine median in the working
        space (sqrt of a face-pair cosine), or None when it was not measured."""
        genuine = self.working.genuine_median
        return genuine ** 0.5 if genuine is not None and 0 < genuine <= 1 else None


class ClusterAgreement(_Part):
    """``metrics.clusters``: HDBSCAN clusters of the map against the filed identities."""

    n: int | None = None
    ari: Real | None = None
    nmi: Real | None = None
    noise: Real | None = None


class InverseQuality(_Part):
    """``metrics.inverse``: map positions turned back into embeddings (held-out faces; map faces left out)."""

    mean_cos: Real | None = None
    id_at_1: Real | None = None
    map_mean_cos: Real | None = None
    map_id_at_1: Real | None = None


class TransformQuality(_Part):
    """``metrics.transform``: held-out faces placed without a refit."""

    id_at_1: Real | None = None


class Metrics(_Part):
    """``metrics``: how good the map and the answers are (null: not measured; absent: not recorded by the run
    that wrote the record, e.g. the truth scores without ``--truth``, ``supervised_disagreement`` unsupervised)."""

    trustworthiness: Real | None = None
    same_id_knn: Real | None = None
    suspects: int | None = None
    clusters: ClusterAgreement | None = None
    held_out: int | None = None
    inverse: InverseQuality | None = None
    transform: TransformQuality | None = None
    supervised_disagreement: int | None = None
    verdicts: dict[str, int] | None = None  # verdict name -> faces
    same_photo: int | None = None  # faces misfiled by the same-photo check (sources with photo keys)
    unassigned: int | None = None  # faces under no identity, placed and given a suggested one (unassigned.csv)
    suspect_precision: Real | None = None
    suspect_recall: Real | None = None
    lookalike_recall: Real | None = None
    twin_recall: Real | None = None
    low_quality_precision: Real | None = None
    low_quality_recall: Real | None = None

    def flat(self) -> list[tuple[str, Any]]:
        """``(dotted.name, value)`` for every recorded leaf, in the record's order (unknown metrics too)."""
        return _flat(self.model_dump(exclude_unset=True))


class RecordedInput(_Part):
    """``config.input``: how the database was read (its path with any secret left out)."""

    path: str | None = None
    id_field: str | None = None
    embedding_field: str | None = None
    names: str | None = None
    truth: str | None = None
    drop_invalid: bool | None = None
    sha256: str | None = None
    allow_http: bool | None = None
    url_timeout: Real | None = None
    url_max_bytes: int | None = None
    demo: str | None = None
    query: str | None = None
    owner: str | None = None
    blob_dtype: str | None = None
    photo_field: str | None = None
    image_field: str | None = None
    box_field: str | None = None
    image_root: str | None = None


class RecordedConfig(_Part):
    """``config``: the resolved config as the run used it (:class:`job.config.Config` dumped, secrets left out).
    Kept as recorded, so a run of any version opens: ``input`` is typed (the queries read a new database as
    the run read its own); ``render`` is checked as a :class:`job.config.RenderConfig` where maps are redrawn;
    the other sections are the JSON objects the run wrote."""

    backend: str | None = None
    seed: int | None = None
    out: str | None = None
    max_memory: int | str | None = None
    input: RecordedInput = Field(default_factory=RecordedInput)
    umap: dict[str, Any] | None = None
    knn: dict[str, Any] | None = None
    gpu: dict[str, Any] | None = None
    dask: dict[str, Any] | None = None
    render: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    analysis: dict[str, Any] | None = None


class ReportFacts(_Part):
    """``report``: how the page opens, and which faceatlas command remade it (absent until ``report``/``render``)."""

    color_by: str | None = None
    written_by: str | None = None
    thumbnails: dict[str, int] | None = None  # the page's face crops: made, missing, unreadable, no_photo, ...
    image_root: str | None = None  # where report --image-root said the photos are (None: config.input.image_root)


class RunRecord(_Part):
    """``run.json``: what a run did, with what, how well, and the SHA-256 of every other file it wrote."""

    schema_version: int = Field(0, ge=0)  # absent: 0, a record written before the schema had a version
    tool: str | None = None
    version: str | None = None
    backend: str | None = None
    backend_reason: str | None = None
    knn_method: str | None = None
    knn_reason: str | None = None
    fit: Fit = Field(default_factory=Fit)
    gpu: Gpu | None = None
    cluster: Cluster | None = None
    config: RecordedConfig = Field(default_factory=RecordedConfig)
    input: Input = Field(default_factory=Input)
    geometry: GeometryFacts | None = None
    highlight: list[int] = Field(default_factory=list)
    timings: dict[str, Real] = Field(default_factory=dict)
    metrics: Metrics = Field(default_factory=Metrics)
    files: dict[str, str] = Field(default_factory=dict)  # role -> file name
    file_sha256: dict[str, Sha256] = Field(default_factory=dict)  # file name -> SHA-256
    versions: dict[str, str] = Field(default_factory=dict)
    report: ReportFacts | None = None

    @classmethod
    def parse(cls, raw: object, path: Path) -> RunRecord:
        """The record in ``raw`` (``json.loads`` of ``path``), read as untrusted input.

        Raises
        ------
        InputError
            A number JSON gives back other than as written (beyond int64, or inf), or a known field of the
            wrong type: one line naming ``path``, the field, what it is and what was expected.
        """
        if not isinstance(raw, dict):
            raise InputError(f"{path}: not a JSON object; rerun faceatlas run")
        _check_numbers(raw, path)
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            written = raw.get("schema_version")
            if isinstance(written, int) and not isinstance(written, bool) and written > SCHEMA_VERSION:
                raise InputError(f"{path}: {_problem(exc, raw)}; its run.json schema {written} is newer than this "
                                 f"faceatlas reads ({SCHEMA_VERSION}): upgrade faceatlas") from None
            raise InputError(f"{path}: {_problem(exc, raw)}; {EDITED}") from None

    @classmethod
    def of(cls, record: RunRecord | Mapping[str, Any]) -> RunRecord:
        """``record`` as a :class:`RunRecord` (a mapping the code itself built is validated; a bug if it fails)."""
        if isinstance(record, RunRecord):
            return record
        try:
            return cls.model_validate(dict(record))
        except ValidationError as exc:
            raise InternalError(f"run.json: {_problem(exc, record)}") from None

    def to_json(self) -> dict[str, Any]:
        """The JSON object of ``run.json``: the keys the record was given (or read with), in the schema's order,
        unknown ones after them; NaN as null."""
        from job.store.outputs import finite

        dumped: dict[str, Any] = finite(self.model_dump(mode="python", exclude_unset=True))
        return dumped

    def write(self, path: Path) -> Path:
        """Write the record to ``path`` atomically (indented JSON, as every faceatlas JSON file)."""
        from job.store.outputs import write_json

        return write_json(path, self.to_json())


def _flat(values: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in values.items():
        if isinstance(value, Mapping):
            out += _flat(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


def _check_numbers(record: dict[str, Any], path: Path) -> None:
    """Every number anywhere in ``record`` is one JSON gives faceatlas back as it wrote it: an integer within
    int64 (``json`` reads 10**400 as an int no float holds) and a finite float (``json`` reads 1e400 as inf)."""
    stack: list[tuple[str, Any]] = [("", record)]
    while stack:  # a loop, not recursion: a record nested a few hundred deep still parses
        key, value = stack.pop()
        if isinstance(value, dict):
            stack += [(f"{key}.{name}" if key else str(name), item) for name, item in value.items()]
        elif isinstance(value, list):
            stack += [(f"{key}[{index}]", item) for index, item in enumerate(value)]
        elif ((isinstance(value, int) and not isinstance(value, bool) and not -_INT64 <= value < _INT64)
              or (isinstance(value, float) and not math.isfinite(value))):
            what = f"an integer of {len(str(abs(value))):,} digits" if isinstance(value, int) else shown(value)
            raise InputError(f"{path}: field {key!r} is {what}, but a run writes only integers within int64 and "
                             f"finite numbers; {EDITED}")


_EXPECTED = {"int_type": "an integer", "string_type": "a str", "bool_type": "true or false", "float_type": "a number",
             "dict_type": "a dict", "model_type": "a dict", "model_attributes_type": "a dict", "list_type": "a list",
             "greater_than_equal": "a number from {ge}"}


def _problem(exc: ValidationError, raw: object) -> str:
    """The first schema error as ``field 'a.b' is VALUE, expected KIND`` (the dotted key as it is in ``raw``)."""
    error = exc.errors()[0]
    key, value = _located(raw, error["loc"])
    context = error.get("ctx") or {}
    if error["type"] == "run_record_problem":
        return f"field {key!r} {context['problem']}"
    expected = context.get("expected") or _EXPECTED.get(error["type"], "").format(**context) or error["msg"]
    return f"field {key!r} is {shown(value)}, expected {expected}"


def _located(raw: object, loc: tuple[int | str, ...]) -> tuple[str, object]:
    """The dotted key and the value at pydantic's ``loc`` in ``raw`` (the tags of a union's members, which are
    not keys of the record, left out)."""
    parts: list[str] = []
    value = raw
    for part in loc:
        if isinstance(value, Mapping) and part in value:
            value = value[part]
            parts.append(str(part))
        elif isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value):
            value = value[part]
            parts[-1:] = [f"{parts[-1]}[{part}]"] if parts else [f"[{part}]"]
    return ".".join(parts) or "run.json", value
