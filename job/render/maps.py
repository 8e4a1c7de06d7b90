"""The PNG maps: datashader rasterises the faces, matplotlib adds axes, title and legend.

Every map aggregates into a fixed-size grid, so cost and memory depend on the image size, not on the
number of faces: the same code draws 5k and 10M faces. Per-identity colour is *not* a categorical
aggregate (W x H x n_identities would be ~2.5 GB at 800x800x1000, datashader #907); instead each face
carries its identity's RGB and the grid keeps per-pixel sums, which gives the same count-weighted colour
mix as datashader's categorical shading in W x H x 4.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from job.arrays import FloatArray, IdArray
from job.config import RenderConfig

MAP_FILES = {"identities": "map_identities.png", "highlight": "map_highlight.png", "density": "map_density.png",
             "suspect_map": "map_suspects.png", "cluster_map": "map_clusters.png"}
SUSPECT_COLOUR, LINK_COLOUR, FILED_COLOUR = "#d7191c", "#f07f00", "#4a90d9"
LOW_QUALITY_COLOUR = "#8e44ad"  # purple: apart from the suspects' red and the lines' orange and blue
NOISE_RGB = (0.8, 0.8, 0.8)
HIGHLIGHT_COLOURS = ["#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#a65628", "#f781bf", "#17becf",
                     "#bcbd22", "#1a1a1a"]
_DPI = 100
RENDER_BYTES_PER_PIXEL = 200
_MARGINS = (70, 20, 50, 45)  # left, right, top, bottom, in pixels
_FONTS = ["DejaVu Sans", "Noto Sans CJK JP", "IPAGothic", "Noto Sans"]  # fallbacks for non-Latin names


@dataclass(frozen=True)
class Frame:
    """Geometry shared by the maps: data ranges with equal units per pixel on both axes."""

    x_range: tuple[float, float]
    y_range: tuple[float, float]
    plot_width: int
    plot_height: int
    width: int
    height: int


def identity_palette(n_identities: int, seed: int = 0) -> FloatArray:
    """The seed's colours: hue U[0,1), saturation U[0.4,1), value U[0.3,0.9), HSV -> RGB.

    Returns ndarray of shape (n_identities, 3), float32 in [0, 1]; row i colours the i-th smallest id.
    """
    from matplotlib.colors import hsv_to_rgb

    rng = np.random.default_rng(seed)
    hsv = np.column_stack([rng.uniform(0.0, 1.0, n_identities), rng.uniform(0.4, 1.0, n_identities),
                           rng.uniform(0.3, 0.9, n_identities)])
    return hsv_to_rgb(hsv).astype(np.float32)


def make_frame(coords: FloatArray, config: RenderConfig) -> Frame:
    """Fit the map's x/y extent (2% padding) into the plot area without stretching either axis."""
    left, right, top, bottom = _MARGINS
    plot_w, plot_h = config.width - left - right, config.height - top - bottom
    lo, hi = _extent(coords[:, 0]), _extent(coords[:, 1])
    lo, hi = np.array([lo[0], hi[0]]), np.array([lo[1], hi[1]])
    centre, span = (lo + hi) / 2, np.maximum(hi - lo, 1e-6) * 1.04
    per_pixel = max(span[0] / plot_w, span[1] / plot_h)
    half_w, half_h = per_pixel * plot_w / 2, per_pixel * plot_h / 2
    return Frame((float(centre[0] - half_w), float(centre[0] + half_w)),
                 (float(centre[1] - half_h), float(centre[1] + half_h)), plot_w, plot_h, config.width, config.height)


def _extent(values: np.ndarray) -> tuple[float, float]:
    """Min and max of one coordinate column, ignoring NaN (without nanmin's full-size copy when none)."""
    lo, hi = float(values.min()), float(values.max())
    if np.isnan(lo) or np.isnan(hi):
        lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    return lo, hi


def face_frame(coords: FloatArray, palette: FloatArray | None = None, codes: IdArray | None = None) -> Any:
    """A DataFrame of x, y (and r, g, b: ``palette`` (n_colours, 3) row ``codes[i]`` for face i) over one
    (columns, n) float32 block, filled column by column, so pandas copies nothing more."""
    import pandas as pd

    names = ["x", "y"] + (["r", "g", "b"] if palette is not None else [])
    block = np.empty((len(names), len(coords)), dtype=np.float32)
    block[0], block[1] = coords[:, 0], coords[:, 1]
    if palette is not None:
        for channel in range(3):
            np.take(np.ascontiguousarray(palette[:, channel], dtype=np.float32), codes, out=block[2 + channel])
    return pd.DataFrame(block.T, columns=names, copy=False)


def render_maps(
    coords: FloatArray,
    ids: IdArray,
    highlight: list[int],
    labels: dict[int, str],
    config: RenderConfig,
    out_dir: Path,
    title: str,
    codes: IdArray | None = None,
) -> dict[str, Path]:
    """Draw the three maps into ``out_dir`` and return {map name: path}.

    Parameters
    ----------
    coords : ndarray of shape (n_faces, 2 or 3), float32; the first two columns are drawn
    ids : ndarray of shape (n_faces,), int64
    highlight : identity ids to draw in colour on the grey map
    labels : identity id -> legend text
    title : shown above every map, e.g. the input's name
    codes : ndarray of shape (n_faces,), int64 — each face's index into the sorted unique ids, when the caller
        has it (saves sorting the ids again)
    """
    import datashader as ds

    frame = make_frame(coords, config)
    canvas = ds.Canvas(plot_width=frame.plot_width, plot_height=frame.plot_height,
                       x_range=frame.x_range, y_range=frame.y_range)
    if codes is None:
        _, codes = np.unique(ids, return_inverse=True)
    n_identities = int(codes.max()) + 1 if len(codes) else 0
    faces = face_frame(coords, identity_palette(n_identities, config.palette_seed), codes)
    radius = point_radius(len(ids))
    sums = colour_sums(canvas, faces)
    counts = spread(sums["n"], radius)
    subtitle = f"{len(ids):,} faces, {n_identities:,} identities"
    images = {
        "identities": (_identity_image(sums, counts, radius),
                       f"{title}: faces coloured by identity\n{subtitle}"),
        "density": (_density_image(counts), f"{title}: face density (eq_hist)\n{subtitle}"),
        "highlight": (_highlight_image(canvas, faces, ids, highlight, counts, radius),
                      f"{title}: {len(highlight)} identities highlighted\n{subtitle}"),
    }
    paths: dict[str, Path] = {}
    for name, (image, map_title) in images.items():
        legend = _highlight_legend(ids, highlight, labels) if name == "highlight" else None
        paths[name] = _compose(image, frame, map_title, legend, out_dir / MAP_FILES[name])
    return paths


def render_analysis_maps(
    coords: FloatArray,
    suspect: np.ndarray,
    targets: FloatArray,
    filed: FloatArray,
    clusters: IdArray,
    config: RenderConfig,
    out_dir: Path,
    title: str,
    low_quality: np.ndarray | None = None,
) -> dict[str, Path]:
    """Draw ``map_suspects.png`` and ``map_clusters.png`` into ``out_dir``.

    Parameters
    ----------
    coords : ndarray of shape (n_faces, 2 or 3), float32
    suspect : ndarray of shape (n_faces,), bool — faces drawn as red dots on the grey map
    targets : ndarray of shape (n_suspects, 2 or 3), float32 — where each suspect's suggested identity sits
        (NaN: nowhere on the map); a line joins each suspect to its target
    filed : ndarray of shape (n_suspects, 2 or 3), float32 — where the identity it is filed under sits (a
        thin blue line: on an unsupervised map a misfiled face sits with its real identity, far from this)
    clusters : ndarray of shape (n_faces,), int64 — HDBSCAN labels, -1 = noise (light grey)
    low_quality : ndarray of shape (n_faces,), bool — faces of low quality, drawn under the suspects in their
        own colour (filed under the right person, but too weak to say much)
    """
    import datashader as ds
    import datashader.transfer_functions as tf
    import pandas as pd

    frame = make_frame(coords, config)
    canvas = ds.Canvas(plot_width=frame.plot_width, plot_height=frame.plot_height,
                       x_range=frame.x_range, y_range=frame.y_range)
    radius = point_radius(len(coords))
    counts = spread(canvas.points(face_frame(coords), "x", "y", agg=ds.count()), radius)
    image = over(tf.shade(counts, cmap=["#d0d0d0", "#808080"], how="eq_hist", min_alpha=120),
                 _solid(counts.shape, (255, 255, 255)))
    flagged = coords[suspect]
    image = image.copy()
    for ends, colour, weight in ((filed, FILED_COLOUR, 0.5), (targets, LINK_COLOUR, 0.8)):
        linked = np.isfinite(ends[:, 0]) if len(ends) else np.zeros(0, dtype=bool)
        if linked.any():  # in numpy: datashader's line glyph compiles for ~6 s on every start
            mask = segment_mask(frame, flagged[linked, :2], ends[linked, :2])
            image[mask] = ((1 - weight) * image[mask] + weight * np.array(_rgb(colour))).round().astype(np.uint8)
    weak = coords[low_quality] if low_quality is not None else coords[:0]
    size = max(radius + 1, 3)
    for points, colour in ((weak, LOW_QUALITY_COLOUR), (flagged, SUSPECT_COLOUR)):  # suspects on top
        if len(points):
            dots = canvas.points(pd.DataFrame({"x": points[:, 0], "y": points[:, 1]}), "x", "y", agg=ds.count())
            image = over(tf.shade(spread(dots, size + 1), cmap=["#202020", "#202020"], min_alpha=255), image)
            image = over(tf.shade(spread(dots, size), cmap=[colour, colour], min_alpha=255), image)
    legend = [(SUSPECT_COLOUR, f"suspect: filed under the wrong identity? ({len(flagged):,})"),
              (LINK_COLOUR, "orange line: to where its suggested identity sits"),
              (FILED_COLOUR, "blue line: to where the identity it is filed under sits"),
              (LOW_QUALITY_COLOUR, f"low quality: weak face, filed right as far as it shows ({len(weak):,})"),
              ("#a0a0a0", "all other faces")]
    paths = {"suspect_map": _compose(image, frame, f"{title}: {len(flagged):,} suspected misfiled faces\n"
                                  f"{len(coords):,} faces", legend, out_dir / MAP_FILES["suspect_map"])}

    labels_present = np.bincount(clusters + 1) > 0 if len(clusters) else np.zeros(0, dtype=bool)  # -1 = noise
    unique = np.flatnonzero(labels_present) - 1
    index = (np.cumsum(labels_present) - 1)[clusters + 1]  # the rank of each face's label: np.unique's inverse
    palette = identity_palette(len(unique), config.palette_seed + 1)
    if len(unique) and unique[0] < 0:
        palette[0] = NOISE_RGB
    n_clusters = int((unique >= 0).sum())
    noise = float((clusters < 0).mean()) if len(clusters) else 0.0
    clustered = _identity_image(colour_sums(canvas, face_frame(coords, palette, index)), counts, radius)
    paths["cluster_map"] = _compose(clustered, frame,
                                 f"{title}: {n_clusters:,} HDBSCAN clusters (grey: noise, {noise:.0%})\n"
                                 f"{len(coords):,} faces", None, out_dir / MAP_FILES["cluster_map"])
    return paths


def segment_mask(frame: Frame, starts: FloatArray, ends: FloatArray) -> np.ndarray:
    """Pixels crossed by straight segments from ``starts`` to ``ends`` (n, 2) in map units, as an image-
    oriented (plot_height, plot_width) bool mask (row 0 at the top)."""
    width, height = frame.plot_width, frame.plot_height
    scale = np.array([width / (frame.x_range[1] - frame.x_range[0]), height / (frame.y_range[1] - frame.y_range[0])])
    origin = np.array([frame.x_range[0], frame.y_range[0]])
    a, b = (starts - origin) * scale, (ends - origin) * scale
    steps = np.minimum(np.ceil(np.abs(b - a).max(axis=1)), width + height).astype(np.int64) + 1
    segment = np.repeat(np.arange(len(a)), steps)
    first = np.cumsum(steps) - steps
    t = (np.arange(int(steps.sum())) - first[segment]) / np.maximum(steps[segment] - 1, 1)
    points = a[segment] + t[:, None] * (b[segment] - a[segment])
    col, row = np.floor(points[:, 0]).astype(np.int64), np.floor(points[:, 1]).astype(np.int64)
    inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
    mask = np.zeros((height, width), dtype=bool)
    mask[height - 1 - row[inside], col[inside]] = True
    return mask


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def point_radius(n_faces: int) -> int:
    """Pixels each face covers around its own: big enough to see 5k faces, none at millions."""
    return 3 if n_faces <= 20_000 else 2 if n_faces <= 200_000 else 1 if n_faces <= 2_000_000 else 0


def spread(agg: Any, radius: int) -> Any:
    """Sum an aggregate over a disc of ``radius`` pixels, so each face paints a small dot.

    Spreading the aggregate (not the shaded image, as ``tf.spread`` does) keeps counts and colour sums
    consistent and avoids compiling datashader's compositing kernels (~7 s on every start).
    """
    from scipy.ndimage import convolve

    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    disc = (xx**2 + yy**2 <= radius**2 + radius).astype(np.float64)
    data = convolve(np.nan_to_num(np.asarray(agg.data, dtype=np.float64)), disc, mode="constant")
    return agg.copy(data=np.where(data > 0, data, np.nan))  # NaN marks empty pixels, as in datashader


def over(top: Any, background: np.ndarray) -> np.ndarray:
    """Alpha-composite a shaded datashader image over an RGB (H, W, 3) uint8 background, in numpy."""
    rgba = np.flipud(np.asarray(top.data, dtype=np.uint32).view(np.uint8).reshape(*top.shape, 4)).astype(np.float32)
    alpha = rgba[..., 3:4] / 255.0
    return (rgba[..., :3] * alpha + background.astype(np.float32) * (1 - alpha)).round().astype(np.uint8)


def _solid(shape: tuple[int, ...], colour: tuple[int, int, int]) -> np.ndarray:
    return np.broadcast_to(np.array(colour, dtype=np.uint8), (*shape, 3))


def colour_sums(canvas: Any, faces: Any) -> Any:
    """One datashader pass over ``faces`` (x, y, r, g, b): per-pixel face count ``n`` and colour sums."""
    import datashader as ds

    return canvas.points(faces, "x", "y", agg=ds.summary(n=ds.count(), r=ds.sum("r"), g=ds.sum("g"),
                                                         b=ds.sum("b")))


def _identity_image(sums: Any, counts: Any, radius: int) -> np.ndarray:
    """``sums``: datashader's one-pass summary of the faces (count ``n`` and colour sums ``r``, ``g``, ``b``)."""
    import datashader.transfer_functions as tf

    n = np.nan_to_num(counts.data, nan=1.0)
    channels = [spread(sums[c], radius).data / n * 255 for c in "rgb"]
    channels = [np.clip(np.nan_to_num(c), 0, 255) for c in channels]
    # opacity from the eq_hist-shaded count, as datashader does for categorical colour mixing
    alpha = tf.shade(counts, cmap=["black", "black"], how="eq_hist", min_alpha=140).data >> 24
    packed = sum(c.astype(np.uint32) << (8 * i) for i, c in enumerate(channels)) | alpha.astype(np.uint32) << 24
    image = counts.copy(data=np.where(np.isnan(counts.data), 0, packed).astype(np.uint32))
    return over(image, _solid(counts.shape, (255, 255, 255)))


def _density_image(counts: Any) -> np.ndarray:
    import datashader.transfer_functions as tf
    from datashader.colors import inferno

    image = tf.shade(counts, cmap=inferno[64:], how="eq_hist")  # the darkest blues vanish on black
    return over(image, _solid(counts.shape, (0, 0, 0)))


def _highlight_image(
    canvas: Any, faces: Any, ids: IdArray, highlight: list[int], counts: Any, radius: int
) -> np.ndarray:
    import datashader as ds
    import datashader.transfer_functions as tf
    import xarray as xr

    grey = over(tf.shade(counts, cmap=["#d0d0d0", "#808080"], how="eq_hist", min_alpha=120),
                _solid(counts.shape, (255, 255, 255)))
    # highlighted faces stay visible at any scale: at least a 3-pixel disc with a dark rim
    if not highlight:
        return grey
    chosen = np.flatnonzero(np.isin(ids, highlight))  # one pass over all faces, then only the chosen ones
    few, few_ids = faces.iloc[chosen], ids[chosen]
    raw = [canvas.points(few[few_ids == identity], "x", "y", agg=ds.count()) for identity in highlight]
    size = max(radius + 1, 3)
    labels = [str(i) for i in highlight]
    stacked = xr.concat([spread(layer, size) for layer in raw],
                        dim=xr.DataArray(labels, dims="label", name="label")).transpose(..., "label").fillna(0)
    present = (stacked.data > 0).any(axis=-1)
    if not present.any():
        return grey
    rim = spread(sum(layer.fillna(0) for layer in raw), size + 1)
    grey = over(tf.shade(rim, cmap=["#202020", "#202020"], min_alpha=255), grey)
    key = {label: HIGHLIGHT_COLOURS[i % len(HIGHLIGHT_COLOURS)] for i, label in enumerate(labels)}
    shaded = tf.shade(stacked, color_key=key, how="eq_hist", min_alpha=255)
    return over(shaded.copy(data=np.where(present, shaded.data, 0).astype(np.uint32)), grey)


def _highlight_legend(ids: IdArray, highlight: list[int], labels: dict[int, str]) -> list[tuple[str, str]]:
    counts = {int(i): int(c) for i, c in zip(*np.unique(ids[np.isin(ids, highlight)], return_counts=True))}
    entries = [(HIGHLIGHT_COLOURS[i % len(HIGHLIGHT_COLOURS)],
                f"{labels.get(identity, f'id {identity}')} ({counts.get(identity, 0)} faces)")
               for i, identity in enumerate(highlight)]
    return entries + [("#a0a0a0", "all other faces")]


def emptiest_corner(image: np.ndarray) -> str:
    """The matplotlib legend location whose corner of ``image`` (H, W, 3) hides the least.

    matplotlib's ``loc="best"`` cannot see inside an image, so the legend could hide the faces it names;
    coloured (highlighted) pixels weigh 100 times more than grey ones.
    """
    height, width = image.shape[0] * 2 // 5, image.shape[1] * 2 // 5
    pixels = image.astype(np.int16)
    colourful = (pixels.max(axis=-1) - pixels.min(axis=-1)) > 40
    busy = np.any(image != image[0, 0], axis=-1) + 100 * colourful
    corners = {"upper right": busy[:height, -width:], "upper left": busy[:height, :width],
               "lower left": busy[-height:, :width], "lower right": busy[-height:, -width:]}
    return min(corners, key=lambda name: int(corners[name].sum()))


def require_render_memory(config: RenderConfig, max_memory: int | None) -> None:
    """Refuse an image size whose rendering would not fit in memory (it grows with the pixels, not the faces)."""
    from job.io.memory import require

    require(render_bytes(config), max_memory, f"rendering {config.width} x {config.height} maps",
            "lower render.width / render.height")


def render_bytes(config: RenderConfig) -> int:
    """Peak memory of drawing the maps: measured ~185 bytes per pixel (datashader aggregates and spreads in
    float64, RGBA images in float32, the matplotlib canvas), plus 64 MiB."""
    return RENDER_BYTES_PER_PIXEL * config.width * config.height + (64 << 20)


def _compose(image: np.ndarray, frame: Frame, title: str, legend: list[tuple[str, str]] | None, path: Path) -> Path:
    from matplotlib import rc_context
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    left, _, top, bottom = _MARGINS
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
    from job.io.files import display_text

    title = "\n".join(display_text(line, 160) for line in title.split("\n"))
    legend = [(colour, display_text(text, 80)) for colour, text in legend] if legend else None
    # parse_math off: a "$" in a file or identity name is text, not a mathtext formula that fails to parse
    with rc_context({"font.family": _FONTS, "font.size": 10, "text.parse_math": False}):
        figure = Figure(figsize=(frame.width / _DPI, frame.height / _DPI), dpi=_DPI)
        FigureCanvasAgg(figure)
        axes = figure.add_axes((left / frame.width, bottom / frame.height,
                                frame.plot_width / frame.width, frame.plot_height / frame.height))
        axes.imshow(image, extent=(*frame.x_range, *frame.y_range), interpolation="nearest",
                    aspect="auto")
        axes.set(xlim=frame.x_range, ylim=frame.y_range, xlabel="UMAP 1", ylabel="UMAP 2")
        small = frame.width < 800
        axes.set_title(title, fontsize=8 if small else 11, loc="left")
        if legend:
            handles = [Line2D([], [], marker="o", linestyle="", color=colour, label=text) for colour, text in legend]
            axes.legend(handles=handles, loc=emptiest_corner(image), fontsize=6 if small else 9, framealpha=0.9)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        figure.savefig(tmp, dpi=_DPI, format="png")
    os.replace(tmp, path)
    return path
