"""The job's configuration: one validated model, loaded from TOML and ``--set KEY=VALUE`` overrides.

Precedence, lowest first: defaults in this module, the ``--config`` file, command-line flags, ``--set``.
``configs/default.toml`` spells out every key with its default; a test keeps the two equal.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from job.errors import UsageError
from job.io.memory import parse_size

BackendName = Literal["auto", "cuml", "umap-learn"]
CONFIG_MAX_BYTES = 1 << 20  # a config file is a few hundred bytes
COUNT_MAX = 2**62  # every count and size setting: far beyond any database, and within int64 / JSON


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic reads true as 1: `--set umap.n_epochs=true` must not mean one epoch
        annotation = cls.model_fields[info.field_name].annotation if info.field_name else None
        items = value if isinstance(value, list) else [value]
        if annotation is not bool and any(isinstance(item, bool) for item in items):
            raise ValueError("a number or a word is expected here, not true/false")
        return value


class InputConfig(_Section):
    """Where the face database comes from and how its fields are named."""

    path: str = Field("", description='database file (.npy, .npz, .parquet); "" = built-in demo database')
    id_field: str = Field("id", description="identity id field (.npy) or column (Parquet)")
    embedding_field: str = Field("embedding", description="embedding field (.npy) or column (Parquet)")
    names: str = Field("", description='JSONL file, one object per id in id order; "" = no names')
    truth: str = Field("", description='planted answers of a faceatlas demo-db file (NAME.truth.json); "" = none')
    drop_invalid: bool = Field(False, description="drop faces with NaN/inf or all-zero embeddings instead of "
                                                  "refusing the database")
    sha256: str = Field("", pattern=r"^([0-9a-fA-F]{64})?$",
                        description="expected SHA-256 of the input file (verified before use); required to "
                                    "reuse a cached download")
    allow_http: bool = Field(False, description="accept plain http:// URLs (https only by default)")
    url_timeout: float = Field(30.0, gt=0.0, le=3600.0, description="seconds to connect and between reads")
    url_max_bytes: int = Field(64 * 2**30, ge=1, le=COUNT_MAX, description="largest download accepted, in bytes")
    query: str = Field("", description="with a database --input (sqlite:///PATH, postgresql://...): the SELECT "
                       "that returns the faces, with columns identity and embedding (and optionally face, photo, "
                       "name, image, box_x1..box_y2, and image_width, image_height: the size the box's pixels refer "
                       "to); \"\" = read an Immich database by its own tables")
    owner: str = Field("", description='an Immich database: only the faces of this user (its UUID); "" = all users')
    blob_dtype: str = Field("<f4", description="how a database's BLOB embeddings are stored (a numpy dtype: "
                            "<f4 little-endian float32, <f2, <f8)")
    photo_field: str = Field("", description='.npz/Parquet/.npy: the field holding each face\'s photo key, for the '
                             'same-photo check; "" = none')
    image_field: str = Field("image", description=".npz/Parquet/.npy: the field holding each face's photo path "
                             '(text), read when present (a name other than "image" must be there); "" = none')
    box_field: str = Field("box", description=".npz/Parquet/.npy: the field holding each face's box [x1, y1, x2, y2] "
                           "in pixels of the photo as displayed (after its EXIF orientation): Parquet list<float> of "
                           '4, .npz array (n, 4), .npy field of shape (4,); read when present (a name other than "box" '
                           'must be there); "" = none')
    image_root: str = Field("", description='where photo paths are read: "DIR" reads relative paths under DIR; '
                            '"PREFIX=DIR" puts DIR in place of a leading PREFIX (e.g. '
                            '/usr/src/app/upload=/mnt/immich); "" = the paths as they are')
    demo: Literal["standard", "hard", "wild", "uncentred"] = Field(
        "standard", description='built-in demo when path is "": "hard" = looser identities, 1-30 faces, look-alike '
        'misfiles; "wild" = raw norms, low-quality faces, near-twins, misfiles from twins; "uncentred" = the wild '
        'shape as dlib gives it (128-D, one mean direction shared by every face, lengths without quality)')


    @field_validator("path", "names", "truth", "image_root")
    @classmethod
    def _plain_paths(cls, value: str) -> str:
        return _path_text(value)

    @field_validator("image_root")
    @classmethod
    def _root_with_prefix(cls, value: str) -> str:
        prefix, separator, folder = value.partition("=")
        if separator and not (prefix and folder):
            raise ValueError('expected "DIR" or "PREFIX=DIR" with both parts, e.g. /usr/src/app/upload=/mnt/immich')
        return value


def _path_text(value: str) -> str:
    """A file or folder name the operating system can take (no NUL byte)."""
    if "\x00" in value:
        raise ValueError("a path cannot hold a NUL character")
    return value


def _curve_fits(spread: float, min_dist: float) -> bool:
    """UMAP's curve fitted to ``spread`` and ``min_dist`` has a finite positive ``a`` and ``b`` (not so for
    spreads far below 0.3 or min_dist near 10, where umap-learn's own fit also turns negative)."""
    import warnings

    import numpy as np

    from job.curve import ab_params

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            a, b = ab_params(spread, min_dist)
        except (ArithmeticError, ValueError, np.linalg.LinAlgError):
            return False
    return bool(np.isfinite(a) and np.isfinite(b) and a > 0 and b > 0)


class UmapConfig(_Section):
    """UMAP parameters, named as in umap-learn and cuML."""

    n_components: Literal[2, 3] = 2
    n_neighbors: int = Field(15, ge=2, le=200)
    min_dist: float | Literal["auto"] = Field("auto", description='"auto": 0.1 when every face is fitted, 0 when '
                                              "a sample is (job/reduce/params.py)")
    spread: float = Field(1.0, gt=0.0, le=10.0)
    metric: Literal["cosine", "euclidean"] = "cosine"
    n_epochs: int | Literal["auto"] = "auto"
    init: Literal["spectral", "pca", "random"] = "pca"
    repulsion_strength: float | Literal["auto"] = "auto"
    supervised: bool = False
    target_weight: float = Field(0.5, ge=0.0, le=1.0)
    fit_sample: int = Field(200_000, ge=100, le=COUNT_MAX, description="the most faces UMAP is fitted on; above "
                            "this many faces (or above sample_above) it is fitted on a sample drawn by identity and "
                            "the other faces are placed on the fitted map")
    sample_above: int = Field(50_000, ge=0, le=COUNT_MAX, description="above this many faces the map is fitted on "
                              "a sample even when fit_sample would hold them all (a map of every face crowds "
                              "identities)")
    place_epochs: int = Field(30, ge=0, le=1000, description="layout epochs refining each placed face against "
                              "the fitted map (0 = stay at the weighted mean of its nearest fitted faces)")

    @model_validator(mode="after")
    def _min_dist_within_spread(self) -> UmapConfig:
        if self.min_dist != "auto" and self.min_dist > self.spread:
            raise ValueError(f"min_dist ({self.min_dist}) must not exceed spread ({self.spread})")
        for min_dist in (0.0, 0.1) if self.min_dist == "auto" else (self.min_dist,):  # "auto" is one of these
            if not _curve_fits(self.spread, min(min_dist, self.spread)):
                raise ValueError(f"spread {self.spread:g} with min_dist {min_dist:g}: UMAP's curve 1 / (1 + a d^2b) "
                                 "has no positive a and b for them (a map would not form); use spread 0.3..5 "
                                 "and min_dist 0..spread")
        return self

    @field_validator("min_dist")
    @classmethod
    def _min_dist_range(cls, value: float | str) -> float | str:
        if not isinstance(value, str) and not 0.0 <= value <= 10.0:
            raise ValueError('expected "auto" or a number in 0..10')
        return value

    @field_validator("repulsion_strength")
    @classmethod
    def _repulsion_range(cls, value: float | str) -> float | str:
        if not isinstance(value, str) and not 0.0 < value <= 10.0:
            raise ValueError('expected "auto" or a number above 0, at most 10')
        return value

    @field_validator("n_epochs")
    @classmethod
    def _positive_epochs(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= 10_000:
            raise ValueError('expected "auto" or an integer in 1..10000')
        return value


class KnnConfig(_Section):
    """How the one k-nearest-neighbour graph is built: exact or faiss IVF on CPU; on a GPU run, cuVS brute force
    (or CuPy) or cuVS NN-descent (:mod:`job.knn.index`)."""

    method: Literal["auto", "exact", "approximate", "faiss-ivf", "cuvs-brute-force", "cupy-exact",
                    "cuvs-nn-descent"] = "auto"
    exact_max_faces: int = Field(50_000, ge=0, le=COUNT_MAX,
                                 description="auto: exact search up to this many reference faces")


class GpuConfig(_Section):
    """The GPU backend (cuML UMAP, cuVS kNN, CuPy analysis): its memory and its kNN graph."""

    memory: Literal["pool", "managed", "default"] = Field(
        "pool", description='"pool": one RMM/CuPy memory pool for the run; "managed": CUDA managed memory, which can '
        'exceed the GPU (slower; for databases larger than GPU memory); "default": the libraries\' own allocators')
    exact_max_faces: int = Field(1_000_000, ge=0, le=COUNT_MAX, description="auto on the GPU: exact kNN (cuVS brute "
                                 "force, reproducible) up to this many reference faces, NN-descent above")
    knn_n_clusters: int = Field(0, ge=0, le=4096, description="NN-descent batches (cuVS all_neighbors n_clusters; "
                                "each face in knn_overlap_factor of them); 0 = auto: 1 when the reference faces fit "
                                "in GPU memory, else enough to fit")
    knn_overlap_factor: int = Field(2, ge=1, le=64, description="batches each face joins in a batched NN-descent")
    device_ids: list[Annotated[int, Field(ge=0, le=1023)]] = Field(
        default_factory=list, max_length=64, description="GPUs a batched NN-descent build spreads over; [] = the "
        "current GPU")

    @model_validator(mode="after")
    def _overlap_below_clusters(self) -> GpuConfig:
        if self.knn_n_clusters > 1 and self.knn_overlap_factor >= self.knn_n_clusters:
            raise ValueError(f"knn_overlap_factor ({self.knn_overlap_factor}) must be below knn_n_clusters "
                             f"({self.knn_n_clusters}) (cuVS all_neighbors)")
        return self


class DaskConfig(_Section):
    """Running the face-parallel stages on a Dask cluster (:mod:`job.cluster`); "" = in this process."""

    address: str = Field("", max_length=2000, description='"" = no cluster; "local" or "local:N" = a LocalCluster of '
                         'N worker processes (default 2) started and closed by the run; else a scheduler address such '
                         'as tcp://host:8786')
    chunk_faces: int = Field(131_072, ge=1_024, le=COUNT_MAX, description="faces per task (each task reads its "
                             "faces from the input itself)")
    timeout: float = Field(30.0, gt=0, le=3600, description="seconds to reach the scheduler and find its workers")

    @field_validator("address")
    @classmethod
    def _known_address(cls, value: str) -> str:
        from job.address import parse_address

        try:
            parse_address(value)
        except UsageError as exc:
            raise ValueError(str(exc)) from None
        return value


class RenderConfig(_Section):
    """The PNG maps."""

    width: int = Field(1000, ge=200, le=10_000)
    height: int = Field(1000, ge=200, le=10_000)
    highlight: list[Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]] = Field(default_factory=list, max_length=10,
                                 description="[] = the first five identities; at most 10 (one colour each)")
    palette_seed: int = Field(0, ge=0, le=COUNT_MAX)
    thumbnails: bool = Field(False, description="crops of the faces in the atlas page, cut from each face's photo "
                             "(input.image_field/box_field, Immich's asset and box); off by default: face crops "
                             "are biometric data")
    thumbnail_size: int = Field(64, ge=24, le=256, description="pixels on a crop's longer side")
    thumbnail_bytes: int = Field(5 * 2**20, ge=0, le=2**30, description="all crops together at most this many "
                                 "bytes (the most useful faces first); 4 KiB per crop")


class MetricsConfig(_Section):
    """Map quality measures written to run.json."""

    trustworthiness_k: int = Field(15, ge=1, le=100)
    trustworthiness_sample: int = Field(5000, ge=100, le=50_000)
    same_id_k: int = Field(4, ge=1, le=100)


class AnalysisConfig(_Section):
    """Misfiled faces, look-alikes, clusters and the held-out check of transform/invert (all in 512-D)."""

    centre: Literal["auto", "on", "off"] = Field("auto", description='subtract the database\'s mean direction '
                                                 'before anything is compared: "auto" when impostor pairs are not '
                                                 'centred (run.json geometry says why), "on", "off"')
    neighbours: int = Field(10, ge=1, le=100, description="nearest faces whose identities are suspect candidates")
    suspect_margin: float = Field(0.0, ge=0.0, le=2.0, description="misfiled needs the face's mean cosine to the "
                                  "other identity, over sqrt(that identity's own), to beat its own by this much")
    misfiled_score: float = Field(3.0, ge=0.0, le=100.0, description="misfiled when the log odds of the other "
                                  "identity over the filed one exceed this (3 = about 20 to 1)")
    lookalike_k: int = Field(10, ge=1, le=100, description="nearest identities checked per identity")
    lookalike_top: int = Field(100, ge=0, le=COUNT_MAX, description="pairs always listed in lookalikes.csv")
    lookalike_threshold: float = Field(0.6, ge=-1.0, le=10.0, description="also list every pair above this")
    holdout: float = Field(0.02, ge=0.0, le=0.5, description="share of faces left out of the fit to measure "
                           "transform/invert (placed on the map afterwards); 0 = fit every face")
    holdout_max: int = Field(1000, ge=0, le=COUNT_MAX, description="at most this many held-out faces")
    cluster_min_size: int = Field(5, ge=2, le=COUNT_MAX, description="HDBSCAN min_cluster_size on the map")
    cluster_sample: int = Field(20_000, ge=100, le=COUNT_MAX, description="CPU: HDBSCAN on at most this many faces "
                                "(its tree is quadratic); the others take the cluster of their nearest sampled face")
    disagreement_k: int = Field(5, ge=1, le=100, description="--supervised: neighbours compared map vs 512-D")


class Config(_Section):
    """Everything one ``faceatlas run`` needs besides its data."""

    backend: BackendName = "auto"
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    out: str = "faceatlas-out"
    max_memory: int | str = Field("auto", description='"auto" (what the machine has) or a cap like "8GiB"')
    input: InputConfig = InputConfig()
    umap: UmapConfig = UmapConfig()
    knn: KnnConfig = KnnConfig()
    gpu: GpuConfig = GpuConfig()
    dask: DaskConfig = DaskConfig()
    render: RenderConfig = RenderConfig()
    metrics: MetricsConfig = MetricsConfig()
    analysis: AnalysisConfig = AnalysisConfig()

    @field_validator("out")
    @classmethod
    def _plain_out(cls, value: str) -> str:
        return _path_text(value)

    @field_validator("seed", mode="before")
    @classmethod
    def _none_seed(cls, value: Any) -> Any:
        # TOML has no null: the string "none" stands for "no seed".
        return None if isinstance(value, str) and value.lower() == "none" else value


    @field_validator("max_memory")
    @classmethod
    def _size(cls, value: int | str) -> int | str:
        try:
            bytes_ = parse_size(value)
        except UsageError as exc:
            raise ValueError(str(exc)) from None
        if bytes_ is not None and not 1 <= bytes_ < 2**63:
            raise ValueError("expected a positive size below 8 EiB")
        return value

    @property
    def max_memory_bytes(self) -> int | None:
        """``max_memory`` in bytes, None for "auto"."""
        return parse_size(self.max_memory)


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Build the run's config from an optional TOML file and dotted-key overrides.

    Parameters
    ----------
    path : TOML file, or None for the defaults alone.
    overrides : {"umap.n_neighbors": 30, ...}; applied after the file.

    Raises
    ------
    UsageError
        Unreadable file, bad TOML, unknown key, wrong type or out-of-range value.
    """
    data: dict[str, Any] = _read_toml(path) if path is not None else {}
    for key, value in (overrides or {}).items():
        _set_dotted(data, key, value)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        key = ".".join(str(part) for part in exc.errors()[0]["loc"] if isinstance(part, str))
        given = next((k for k in overrides or {} if key == k or key.startswith(k + ".")), None)
        source = "command line" if given else str(path) if path else "config"
        raise UsageError(_describe(exc, source)) from None


def parse_assignment(text: str) -> tuple[str, Any]:
    """Split ``KEY=VALUE`` and read VALUE as a TOML value (bare words stay strings).

    >>> parse_assignment("umap.n_neighbors=30")
    ('umap.n_neighbors', 30)
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UsageError(f"--set {text!r}: expected KEY=VALUE, e.g. --set umap.n_neighbors=30")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    except (RecursionError, ValueError, MemoryError) as exc:  # 100k-deep [[[...]]], a 5,000-digit integer
        from job.io.files import describe_parse_error

        raise UsageError(f"--set {key}: the value cannot be read ({describe_parse_error(exc)}); give a plain "
                         "number, word or short list") from None
    return key, value


def known_keys(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    """Every dotted key the config accepts, e.g. ``umap.n_neighbors``."""
    keys: list[str] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += known_keys(annotation, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def _read_toml(path: Path) -> dict[str, Any]:
    from job.io.files import parse_toml, read_text

    text = read_text(path, "the config", "check the --config path", CONFIG_MAX_BYTES, error=UsageError)
    return parse_toml(text, str(path), "fix the file or start from configs/default.toml", UsageError)


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    *sections, leaf = key.split(".")
    node = data
    for i, part in enumerate(sections):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UsageError(f"--set {key}: '{'.'.join(sections[: i + 1])}' is a value, not a section")
        node = child
    node[leaf] = value


def _describe(exc: ValidationError, source: str) -> str:
    error = exc.errors()[0]
    parts = [str(part) for part in error["loc"] if isinstance(part, str)]
    key = ".".join(parts)
    if error["type"] == "extra_forbidden":
        section = key.rpartition(".")[0]
        siblings = [k for k in known_keys() if k.rpartition(".")[0] == section]
        return f"{source}: unknown key '{key}'; known keys here: {', '.join(siblings)}"
    known = set(known_keys())
    while len(parts) > 1 and ".".join(parts) not in known:
        parts.pop()  # pydantic appends union-branch names such as 'int' or 'literal[...]'
    key = ".".join(parts)
    from job.io.files import shown

    found = error.get("input")
    # an address's own message shows it without credentials: never echo one that may hold them (user:pw@...)
    secret = key == "dask.address" or (isinstance(found, str) and "@" in found)
    got = "" if isinstance(found, dict) or secret else f", got {shown(found)}"
    return f"{source}: key '{key}' is invalid ({error['msg']}{got}); see configs/default.toml"
