"""What the atlas page shows, computed from a run's files: the points it draws, the identities, the density
underlay, the answers to "who is near here?" over a grid of the map, the tables and the summary facts.

The page carries its arrays as one base64 block of little-endian typed arrays (:class:`Blob`), which the
browser reads without parsing a number at a time; everything else is JSON. Identity ids travel once, in the
identity table ``id`` (int32, or int64 read as a ``BigInt64Array`` when an id does not fit: a JSON number or a
float64 rounds ids above 2**53, so every id near 2**63 would read 9223372036854776000); every other mention of
an identity (a face's, a suggestion, a highlight, a look-alike pair) is its position in that table.

Above :data:`MAX_POINTS` faces the page draws a sample: every suspected misfiled face, every face of the
highlighted identities, and a seeded random draw of the rest, over a density image of *all* faces (so the
page of a 1M-face run stays ~20 MB). Clicking empty space answers from :data:`NEAREST_GRID` x ... cells:
the identities nearest each cell's centre, computed by :func:`job.maps.placement.nearest_points`, the
arithmetic of ``faceatlas nearest``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from job.analysis.suspects import VERDICTS
from job.io.files import display_text
from job.maps.placement import nearest_points
from job.render.maps import HIGHLIGHT_COLOURS
from job.report.faces import PageFaces, pack
from job.report.rundata import CORRECTION_COLUMNS, MAX_CELL_CHARS, RunData

MAX_POINTS = 200_000  # faces drawn as points; above, a sample over a density image of every face
NEAREST_GRID = 64  # cells across the map's longer side, each with its nearest identities precomputed
NEAREST_K = 10
UNDERLAY_WIDTH = 1024  # pixels across the density image under the sampled points
_UNDERLAY_LIGHT, _UNDERLAY_DARK, _UNDERLAY_ALPHA = (198, 219, 239), (8, 48, 107), 90
_SAMPLE_SEED = 0
_GRID_BLOCK = 512  # cells answered at once (the inversion holds cells x 15 x dim floats)
_PAD = 0.04


@dataclass
class Blob:
    """Typed arrays packed for the page: ``parts`` bytes, ``index`` name -> [dtype, offset, length]."""

    parts: list[bytes] = field(default_factory=list)
    index: dict[str, list[Any]] = field(default_factory=dict)
    size: int = 0

    def add(self, name: str, values: np.ndarray, width: int = 1) -> None:
        """Append ``values`` (1-D; ``width`` values per item) as little-endian bytes, 8-byte aligned (a typed
        array's view needs it); the index holds [dtype, byte offset, length, width]."""
        values = np.ascontiguousarray(values)
        dtype = values.dtype.newbyteorder("<")
        data = values.astype(dtype, copy=False).tobytes()
        self.index[name] = [dtype.str.lstrip("<|"), self.size, int(values.size), width]
        pad = (-len(data)) % 8
        self.parts.append(data + b"\0" * pad)
        self.size += len(data) + pad

    def encoded(self) -> str:
        return base64.b64encode(b"".join(self.parts)).decode("ascii")


@dataclass(frozen=True)
class PageContent:
    """Everything the page's map and tables are drawn from: ``meta`` (JSON-able), ``blob`` (the arrays) and
    ``underlay`` (the density image of every face, PNG bytes)."""

    meta: dict[str, Any]
    blob: Blob
    underlay: bytes


def page_content(run: RunData, highlight: list[int], color_by: str, palette_seed: int = 0, *,
                 faces: PageFaces | None = None) -> PageContent:
    """The page's data for ``run``, opening coloured by ``color_by`` with ``highlight`` ids highlighted (ids
    not in the run are left out), identities in the PNG maps' colours (``render.palette_seed``).

    ``meta["highlight"]`` and the two ids of each ``meta["lookalikes"]`` pair are positions in the identity
    table (blob ``id``), as are the blob's ``ident``, ``suggested``, ``sim_ident`` and ``grid_ident``."""
    columns, model = run.columns, run.model
    identity_ids = model.identity
    position = {i: code for code, i in enumerate(identity_ids.tolist())}  # identity id -> its code
    highlight = [int(i) for i in highlight if int(i) in position]
    codes = np.searchsorted(identity_ids, columns["id"])
    coords = run.coords
    frame = page_frame(coords)
    shown = pick_points(columns, codes, np.searchsorted(identity_ids, highlight), MAX_POINTS)
    sampled = len(shown) < run.n_faces
    blob = Blob()
    _add_points(blob, run, codes, shown, identity_ids)
    _add_identities(blob, run, codes, palette_seed)
    _add_cluster_colours(blob, np.asarray(columns["cluster"])[shown], np.unique(columns["cluster"]), palette_seed)
    grid = _add_nearest(blob, run, frame)
    underlay = density_png(coords, frame)
    verdict = columns["verdict"]
    meta = {
        "frame": frame, "n_faces": run.n_faces, "n_points": len(shown), "sampled": sampled,
        "max_points": MAX_POINTS, "color_by": color_by, "highlight": [position[i] for i in highlight],
        "verdicts": list(VERDICTS), "nearest": grid, "names": _names_list(run, identity_ids),
        "suspects": int(np.sum(columns["suspect"])),
        "suspects_drawn": int(np.sum(np.asarray(columns["suspect"], dtype=bool)[shown])),
        "highlight_colours": list(HIGHLIGHT_COLOURS),
        "verdict_counts": {name: int(np.sum(verdict == name)) for name in VERDICTS},
        "lookalikes": [[position[a], position[b], round(s, 4), same] for a, b, s, same in run.lookalikes
                       if a in position and b in position],
        "similar_known": run.similar() is not None, "review": review_meta(run),
        "thumbs": _add_thumbnails(blob, faces, run, codes), "blob": blob.index,
    }
    return PageContent(meta, blob, underlay)


def _add_thumbnails(blob: Blob, faces: PageFaces | None, run: RunData, codes: np.ndarray) -> dict[str, Any] | None:
    """The face crops (``--thumbnails``) as blob arrays :func:`job.report.faces.pack` makes, and what the page
    says of them; None without crops."""
    if faces is None:
        return None
    for name, values in pack(faces, _rows(np.asarray(run.columns["row"])), codes).items():
        blob.add(name, values)
    return {**faces.record(), "faces": run.n_faces}


def review_meta(run: RunData) -> dict[str, Any] | None:
    """What the page's review section lists, or None for a run without corrections.csv.

    ``header`` and ``rows``: the file's cells as it holds them, through :func:`clean_text`; ``columns``: each
    of :data:`CORRECTION_COLUMNS` -> its position in the header (-1: absent); ``total``, ``skipped``,
    ``problem``: as :class:`~job.report.rundata.Corrections`; ``digest``: SHA-256 of the header and rows
    listed; ``storage_key``: where the browser keeps the reviewer's choices, by the run's input and that digest
    (a choice is kept by its row's position in ``rows``: other rows, other choices)."""
    found = run.corrections
    if found is None:
        return None
    header = [clean_text(cell, MAX_CELL_CHARS) for cell in found.header]
    rows = [[clean_text(cell, MAX_CELL_CHARS) for cell in row] for row in found.rows]
    listed = json.dumps([header, rows], ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    digest = hashlib.sha256(listed).hexdigest()
    source = clean_text(run.record.input.sha256 or "unknown", 80)
    return {"header": header, "rows": rows, "total": found.total, "skipped": found.skipped,
            "problem": found.problem,
            "columns": {name: header.index(name) if name in header else -1 for name in CORRECTION_COLUMNS},
            "digest": digest, "storage_key": f"faceatlas-review:{source}:{digest}"}


def page_frame(coords: np.ndarray) -> dict[str, float]:
    """The map's x/y extent with a margin: ``x0, x1, y0, y1`` (the density image's edges)."""
    finite = coords[np.isfinite(coords).all(axis=1)]
    lo, hi = (finite.min(axis=0), finite.max(axis=0)) if len(finite) else (np.zeros(2), np.ones(2))
    span = np.maximum(hi - lo, 1e-6)
    lo, hi = lo - _PAD * span, hi + _PAD * span
    return {"x0": float(lo[0]), "x1": float(hi[0]), "y0": float(lo[1]), "y1": float(hi[1])}


def pick_points(columns: dict[str, np.ndarray], codes: np.ndarray, highlight_codes: np.ndarray,
                limit: int) -> np.ndarray:
    """Face positions (sorted) the page draws: all of them up to ``limit``, else every suspect and every
    face of a highlighted identity (the most certain suspects, should they alone exceed ``limit``), then a
    random draw of the others up to ``limit`` (seeded: the same files give the same page)."""
    on_map = np.isfinite(columns["x"]) & np.isfinite(columns["y"])
    if int(on_map.sum()) <= limit:
        return np.flatnonzero(on_map)
    must = on_map & (np.asarray(columns["suspect"], dtype=bool) | np.isin(codes, highlight_codes))
    chosen = np.flatnonzero(must)
    if len(chosen) > limit:  # more suspects than room: the most certain (highest score) first
        chosen = chosen[np.argsort(-np.asarray(columns["outlier_score"])[chosen], kind="stable")[:limit]]
    rest = np.flatnonzero(on_map & ~must)
    room = max(limit - len(chosen), 0)
    drawn = np.random.default_rng(_SAMPLE_SEED).choice(rest, size=min(room, len(rest)), replace=False)
    return np.sort(np.concatenate([chosen, drawn]))


def _add_points(blob: Blob, run: RunData, codes: np.ndarray, shown: np.ndarray, identity_ids: np.ndarray) -> None:
    columns = run.columns
    rows = columns["row"][shown]
    blob.add("px", columns["x"][shown].astype(np.float32))
    blob.add("py", columns["y"][shown].astype(np.float32))
    blob.add("row", _rows(rows))
    blob.add("ident", codes[shown].astype(np.int32))
    verdict = columns["verdict"][shown]
    blob.add("verdict", _verdict_codes(verdict))
    suggested = columns["suggested_id"][shown]
    known = np.isin(suggested, identity_ids)
    blob.add("suggested", np.where(known, np.searchsorted(identity_ids, suggested), -1).astype(np.int32))
    blob.add("score", columns["outlier_score"][shown].astype(np.float32))
    blob.add("cluster", columns["cluster"][shown].astype(np.int32))
    blob.add("held", np.asarray(columns.get("held_out", np.zeros(run.n_faces, bool)))[shown].astype(np.uint8))
    similar = run.similar()
    if similar is not None:
        ids, cosine = similar
        ids, cosine = ids[shown], cosine[shown]
        found = np.isin(ids, identity_ids)
        blob.add("sim_ident", np.where(found, np.searchsorted(identity_ids, ids), -1).astype(np.int32).ravel(),
                 ids.shape[1])
        blob.add("sim_cos", np.where(found, cosine, np.nan).astype(np.float32).ravel(), ids.shape[1])


def _fits_int32(values: np.ndarray) -> bool:
    return len(values) == 0 or (int(values.min()) >= -(2**31) and int(values.max()) < 2**31)


def _rows(rows: np.ndarray) -> np.ndarray:
    """Input rows as int32 when they fit, else float64: exact, as a row is a position in a file, far below 2**53
    (the page compares them with plain JavaScript numbers)."""
    return rows.astype(np.int32) if _fits_int32(rows) else rows.astype(np.float64)


def _identity_ids(ids: np.ndarray) -> np.ndarray:
    """Identity ids as int32 when they fit, else int64 (the page reads a ``BigInt64Array``: exact to 2**63)."""
    return ids.astype(np.int32) if _fits_int32(ids) else ids.astype(np.int64)


def _add_cluster_colours(blob: Blob, clusters: np.ndarray, labels: np.ndarray, palette_seed: int) -> None:
    """Each drawn face's colour index ``cluster_colour`` into ``cluster_palette``: map_clusters.png's colours
    (one per label present, by rank, noise light grey)."""
    from job.render.maps import NOISE_RGB, identity_palette

    palette = identity_palette(len(labels), palette_seed + 1)
    if len(labels) and labels[0] < 0:
        palette[0] = NOISE_RGB
    blob.add("cluster_palette", _bytes(palette), 3)
    rank = np.searchsorted(labels, clusters)
    blob.add("cluster_colour", rank.astype(np.uint16) if len(labels) <= 2**16 else rank.astype(np.int32))


def _bytes(rgb: np.ndarray) -> np.ndarray:
    """Colours (n, 3) in [0, 1] as flat bytes 0..255."""
    return (np.asarray(rgb) * 255).round().astype(np.uint8).ravel()


def _verdict_codes(verdict: np.ndarray) -> np.ndarray:
    """Each face's verdict as its index into :data:`VERDICTS`, uint8."""
    codes = np.zeros(len(verdict), dtype=np.uint8)
    for code, name in enumerate(VERDICTS):
        codes[verdict == name] = code
    return codes


def _add_identities(blob: Blob, run: RunData, codes: np.ndarray, palette_seed: int) -> None:
    from job.render.maps import identity_palette

    model = run.model
    # the colours of map_identities.png, so the page and the PNG agree
    blob.add("palette", _bytes(identity_palette(len(model.identity), palette_seed)), 3)
    blob.add("id", _identity_ids(model.identity))
    blob.add("anchor_x", model.anchor[:, 0].astype(np.float32))
    blob.add("anchor_y", model.anchor[:, 1].astype(np.float32))
    blob.add("faces", np.bincount(codes, minlength=len(model.identity)).astype(np.uint32))


def _add_nearest(blob: Blob, run: RunData, frame: dict[str, float]) -> dict[str, Any]:
    """The identities nearest each grid cell's centre: blob ``grid_ident`` (cells x k) int32 identity
    positions (-1: the cell is off the populated map) and ``grid_sim`` float32, row-major from the bottom."""
    span_x, span_y = frame["x1"] - frame["x0"], frame["y1"] - frame["y0"]
    scale = NEAREST_GRID / max(span_x, span_y)
    nx, ny = max(1, round(span_x * scale)), max(1, round(span_y * scale))
    cx = frame["x0"] + (np.arange(nx) + 0.5) * span_x / nx
    cy = frame["y0"] + (np.arange(ny) + 0.5) * span_y / ny
    points = np.column_stack([np.tile(cx, ny), np.repeat(cy, nx)])
    model = run.model
    if model.n_components == 3:  # a 3-D map's page shows x/y; its cells answer at the map's middle depth
        middle = float(np.median(model.coords[:, 2]))
        points = np.column_stack([points, np.full(len(points), middle)])
    k = min(NEAREST_K, len(model.identity))
    ident = np.full((len(points), k), -1, dtype=np.int32)
    similarity = np.full((len(points), k), np.nan, dtype=np.float32)
    distance = np.full((len(points), k), np.nan, dtype=np.float32)
    # cells whose centre no face is near are off the map: nearest_points would say so after all its work
    gap, _ = model.tree().query(points, k=1)
    on = np.flatnonzero(gap <= model.radius)
    for start in range(0, len(on), _GRID_BLOCK):
        cells = on[start:start + _GRID_BLOCK]
        answers = nearest_points(model, points[cells], k)
        found = answers.ids >= 0
        ident[cells] = np.where(found, np.searchsorted(model.identity, np.maximum(answers.ids, 0)), -1)
        similarity[cells], distance[cells] = answers.similarity, answers.map_distance
    blob.add("grid_ident", ident.ravel())
    blob.add("grid_sim", similarity.ravel())
    blob.add("grid_dist", distance.ravel())
    return {"nx": nx, "ny": ny, "k": k, "x": cx.tolist(), "y": cy.tolist(),
            "z": None if model.n_components == 2 else float(points[0, 2])}


def _names_list(run: RunData, identity_ids: np.ndarray) -> list[str | None] | None:
    """Each identity's display name in identity order (None: unnamed), or None without a names file."""
    if not run.names:
        return None
    return [clean_text(run.names[i]) if i in run.names else None for i in identity_ids.tolist()]


def clean_text(text: str, limit: int = 300) -> str:
    """A user-given string as the page shows it: lone surrogates as U+FFFD (they cannot be UTF-8), at most
    ``limit`` characters. Escaping is the page writer's (HTML) and the browser's (``textContent``)."""
    return display_text(text, limit, flatten=False)


def density_png(coords: np.ndarray, frame: dict[str, float], width: int = UNDERLAY_WIDTH) -> bytes:
    """Every face counted per pixel over ``frame`` as PNG bytes (row 0: the top of the map), light to dark blue
    by the rank of each pixel's count among the counts (histogram equalisation, as datashader's ``eq_hist``),
    transparent where no face is. In numpy: importing datashader alone takes seconds."""
    from PIL import Image

    from job.render.raster import Frame, rasterise

    span_x, span_y = frame["x1"] - frame["x0"], frame["y1"] - frame["y0"]
    height = int(np.clip(round(width * span_y / span_x), width // 4, 4 * width))  # the page stretches it to fit
    grid_frame = Frame((frame["x0"], frame["x1"]), (frame["y0"], frame["y1"]), width, height, width, height)
    counts = np.flipud(rasterise(coords, grid_frame).paint(0))
    filled = counts > 0
    values = counts[filled]
    levels = np.unique(values)
    rank = ((np.searchsorted(levels, values) + 1) / max(len(levels), 1))[:, None]  # only the pixels with faces
    light, dark = np.array(_UNDERLAY_LIGHT, dtype=np.float64), np.array(_UNDERLAY_DARK, dtype=np.float64)
    rgba = np.zeros((*counts.shape, 4), dtype=np.uint8)  # transparent where no face is
    rgba[filled, :3] = (light + (dark - light) * rank).round()
    rgba[filled, 3] = (_UNDERLAY_ALPHA + (255 - _UNDERLAY_ALPHA) * rank[:, 0]).round()
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()
