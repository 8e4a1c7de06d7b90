"""The PNG maps: faces rasterised once (:mod:`job.render.raster`), shaded by datashader, framed by matplotlib.

Every map aggregates into a fixed-size grid, so cost and memory depend on the image size, not on the
number of faces: the same code draws 5k and 10M faces. Per-identity colour is *not* a categorical
aggregate (W x H x n_identities would be ~2.5 GB at 800x800x1000, datashader #907); instead each face
carries its identity's RGB and the grid keeps per-pixel sums, which gives the same count-weighted colour
mix as datashader's categorical shading in W x H x 4. All five maps share one frame, one pixel per face
and one count grid (:class:`MapGrid`), and one matplotlib figure frames them in turn.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import numpy as np

from job.arrays import FloatArray, IdArray
from job.atomic import atomic_write
from job.config import RenderConfig
from job.render.raster import MARGINS, Frame, Raster, as_agg, make_frame, over, rasterise, solid, spread

MAP_FILES = {"identities": "map_identities.png", "highlight": "map_highlight.png", "density": "map_density.png",
             "suspect_map": "map_suspects.png", "cluster_map": "map_clusters.png"}
SUSPECT_COLOUR, LINK_COLOUR, FILED_COLOUR = "#d7191c", "#f07f00", "#4a90d9"
LOW_QUALITY_COLOUR = "#8e44ad"  # purple: apart from the suspects' red and the lines' orange and blue
NOISE_RGB = (0.8, 0.8, 0.8)
HIGHLIGHT_COLOURS = ["#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#a65628", "#f781bf", "#17becf",
                     "#bcbd22", "#1a1a1a"]
_DPI = 100
RENDER_BYTES_PER_PIXEL = 200
PNG_LEVEL = 3  # zlib level: measured on the 5k maps, 22 ms a map instead of 35 ms at 6, files ~15% larger
_MARGINS = MARGINS
Corner = Literal["upper right", "upper left", "lower left", "lower right"]  # where a legend goes
_FONTS = ["DejaVu Sans", "Noto Sans CJK JP", "IPAGothic", "Noto Sans"]  # fallbacks for non-Latin names
__all__ = ["Frame", "Framer", "MapGrid", "MapIdentities", "MapVerdicts", "draw_all_maps", "make_frame", "map_grid",
           "render_analysis_maps", "render_maps"]


@dataclass(frozen=True)
class MapGrid:
    """What every map of one run shares: each face's pixel, the dot ``radius`` and the count of faces whose
    dot covers each pixel, ``counts`` (plot_height, plot_width) float64, NaN where none (datashader's empty)."""

    raster: Raster
    radius: int
    counts: np.ndarray

    @property
    def frame(self) -> Frame:
        return self.raster.frame

    @cached_property
    def agg(self) -> Any:
        """``counts`` as the xarray datashader's transfer functions take."""
        return as_agg(self.counts, self.frame)

    @cached_property
    def grey(self) -> np.ndarray:
        """Every face in grey (darker where denser) on white: the ground of the highlight and suspect maps,
        (plot_height, plot_width, 3) uint8, read-only (copy before drawing on it)."""
        import datashader.transfer_functions as tf

        shaded = tf.shade(self.agg, cmap=["#d0d0d0", "#808080"], how="eq_hist", min_alpha=120)
        image = over(shaded.data, solid(self.frame.shape, (255, 255, 255)))
        image.flags.writeable = False
        return image

    @cached_property
    def opacity(self) -> np.ndarray:
        """Each pixel's opacity 0..255 from the eq_hist-shaded count (uint32), as datashader gives categorical
        colour mixes: shared by the identity and cluster maps."""
        import datashader.transfer_functions as tf

        opacity: np.ndarray = tf.shade(self.agg, cmap=["black", "black"], how="eq_hist", min_alpha=140).data >> 24
        return opacity


def map_grid(coords: FloatArray, config: RenderConfig,
             density: Callable[[Frame], np.ndarray] | None = None) -> MapGrid:
    """Frame the map, find each face's pixel and count the faces per pixel: once for all five maps.

    ``density``: faces per pixel of a frame, computed elsewhere (datashader on a Dask cluster's workers,
    :func:`job.cluster.faces.density_on_cluster`); the count grid is then that, spread over each dot."""
    raster = rasterise(coords, make_frame(coords, config))
    radius = point_radius(len(coords))
    counts = raster.paint(radius) if density is None else spread(density(raster.frame), radius)
    return MapGrid(raster, radius, np.where(counts > 0, counts, np.nan))


def identity_palette(n_identities: int, seed: int = 0) -> FloatArray:
    """The seed's colours: hue U[0,1), saturation U[0.4,1), value U[0.3,0.9), HSV -> RGB.

    Returns ndarray of shape (n_identities, 3), float32 in [0, 1]; row i colours the i-th smallest id.
    """
    from matplotlib.colors import hsv_to_rgb

    rng = np.random.default_rng(seed)
    hsv = np.column_stack([rng.uniform(0.0, 1.0, n_identities), rng.uniform(0.4, 1.0, n_identities),
                           rng.uniform(0.3, 0.9, n_identities)])
    return hsv_to_rgb(hsv).astype(np.float32)


@dataclass(frozen=True)
class MapIdentities:
    """What the identity, density and highlight maps draw: each face's identity ``ids`` (n_faces,) int64, the
    ``highlight`` identities drawn in colour on the grey map with their legend ``labels`` (identity id -> text),
    and ``codes`` (n_faces,) int64, each face's index into the sorted unique ids, when the caller has it (saves
    sorting the ids again)."""

    ids: IdArray
    highlight: list[int]
    labels: dict[int, str]
    codes: IdArray | None = None


@dataclass(frozen=True)
class MapVerdicts:
    """What the suspect and cluster maps draw: ``suspect`` and ``low_quality`` (n_faces,) bool, ``targets`` and
    ``filed`` (n_suspects, n_components) float32 (where each suspect's suggested and filed identities sit),
    ``clusters`` (n_faces,) int64."""

    suspect: np.ndarray
    low_quality: np.ndarray
    targets: FloatArray
    filed: FloatArray
    clusters: IdArray

    @classmethod
    def of(cls, suspect: np.ndarray, low_quality: np.ndarray, suggested_id: IdArray, ids: IdArray,
           clusters: IdArray, *, identity: IdArray, anchor: FloatArray) -> MapVerdicts:
        """From per-face verdicts and the map model's ``identity`` ids and their ``anchor`` positions."""
        wanted = suggested_id[suspect]
        suggested = np.searchsorted(identity, np.maximum(wanted, 0))
        filed = anchor[np.searchsorted(identity, ids[suspect])]
        targets = anchor[np.minimum(suggested, len(identity) - 1)].astype(np.float32)
        targets[wanted < 0] = np.nan  # no identity claims it (the same-photo check): no line to draw
        return cls(suspect, low_quality, targets, filed, clusters)


def render_maps(coords: FloatArray, faces: MapIdentities, config: RenderConfig, out_dir: Path, title: str, *,
                grid: MapGrid | None = None, framer: Framer | None = None) -> dict[str, Path]:
    """Draw the three maps into ``out_dir`` and return {map name: path}.

    Parameters
    ----------
    coords : ndarray of shape (n_faces, 2 or 3), float32; the first two columns are drawn
    faces : each face's identity, the identities highlighted and their legend text
    title : shown above every map, e.g. the input's name
    grid : the run's :func:`map_grid` of ``coords``, shared with :func:`render_analysis_maps`
    framer : an open :class:`Framer` of ``grid.frame`` to reuse (one is opened for these maps otherwise)
    """
    grid = grid or map_grid(coords, config)
    ids, highlight, codes = faces.ids, faces.highlight, faces.codes
    if codes is None:
        _, codes = np.unique(ids, return_inverse=True)
    n_identities = int(codes.max()) + 1 if len(codes) else 0
    subtitle = f"{len(ids):,} faces, {n_identities:,} identities"
    images = {
        "identities": (_colour_image(grid, identity_palette(n_identities, config.palette_seed), codes),
                       f"{title}: faces coloured by identity\n{subtitle}", None),
        "density": (_density_image(grid), f"{title}: face density (eq_hist)\n{subtitle}", None),
        "highlight": (_highlight_image(grid, ids, highlight),
                      f"{title}: {len(highlight)} identities highlighted\n{subtitle}",
                      _highlight_legend(ids, highlight, faces.labels)),
    }
    with _framing(grid, framer) as framed:
        return {name: framed.save(image, map_title, legend, out_dir / MAP_FILES[name])
                for name, (image, map_title, legend) in images.items()}


def render_analysis_maps(coords: FloatArray, verdicts: MapVerdicts, config: RenderConfig, out_dir: Path, title: str,
                         *, grid: MapGrid | None = None, framer: Framer | None = None) -> dict[str, Path]:
    """Draw ``map_suspects.png`` and ``map_clusters.png`` into ``out_dir``.

    Parameters
    ----------
    coords : ndarray of shape (n_faces, 2 or 3), float32
    verdicts : what is drawn —
        ``suspect``: faces drawn as red dots on the grey map;
        ``targets``: where each suspect's suggested identity sits (NaN: nowhere on the map); a line joins each
        suspect to its target;
        ``filed``: where the identity it is filed under sits (a thin blue line: on an unsupervised map a
        misfiled face sits with its real identity, far from this);
        ``clusters``: HDBSCAN labels, -1 = noise (light grey);
        ``low_quality``: faces of low quality, drawn under the suspects in their own colour (filed under the
        right person, but too weak to say much)
    grid : the run's :func:`map_grid` of ``coords``
    framer : an open :class:`Framer` of ``grid.frame`` to reuse
    """
    grid = grid or map_grid(coords, config)
    suspect, clusters, weak = verdicts.suspect, verdicts.clusters, verdicts.low_quality
    frame = grid.frame
    image = grid.grey.copy()
    flagged = coords[suspect]
    for ends, colour, weight in ((verdicts.filed, FILED_COLOUR, 0.5), (verdicts.targets, LINK_COLOUR, 0.8)):
        linked = np.isfinite(ends[:, 0]) if len(ends) else np.zeros(0, dtype=bool)
        if linked.any():  # in numpy: datashader's line glyph compiles for ~6 s on every start
            mask = segment_mask(frame, flagged[linked, :2], ends[linked, :2])
            image[mask] = ((1 - weight) * image[mask] + weight * np.array(_rgb(colour))).round().astype(np.uint8)
    for rows, colour in ((weak, LOW_QUALITY_COLOUR), (suspect, SUSPECT_COLOUR)):  # suspects on top
        if rows.any():
            image = _dots(grid, rows, colour, image)
    legend = [(SUSPECT_COLOUR, f"suspect: filed under the wrong identity? ({len(flagged):,})"),
              (LINK_COLOUR, "orange line: to where its suggested identity sits"),
              (FILED_COLOUR, "blue line: to where the identity it is filed under sits"),
              (LOW_QUALITY_COLOUR, f"low quality: weak face, filed right as far as it shows ({int(weak.sum()):,})"),
              ("#a0a0a0", "all other faces")]
    labels_present = np.bincount(clusters + 1) > 0 if len(clusters) else np.zeros(0, dtype=bool)  # -1 = noise
    unique = np.flatnonzero(labels_present) - 1
    index = (np.cumsum(labels_present) - 1)[clusters + 1]  # the rank of each face's label: np.unique's inverse
    palette = identity_palette(len(unique), config.palette_seed + 1)
    if len(unique) and unique[0] < 0:
        palette[0] = NOISE_RGB
    n_clusters = int((unique >= 0).sum())
    noise = float((clusters < 0).mean()) if len(clusters) else 0.0
    with _framing(grid, framer) as framed:
        return {
            "suspect_map": framed.save(image, f"{title}: {len(flagged):,} suspected misfiled faces\n"
                                       f"{len(coords):,} faces", legend, out_dir / MAP_FILES["suspect_map"]),
            "cluster_map": framed.save(_colour_image(grid, palette, index),
                                       f"{title}: {n_clusters:,} HDBSCAN clusters (grey: noise, {noise:.0%})\n"
                                       f"{len(coords):,} faces", None, out_dir / MAP_FILES["cluster_map"]),
        }


def draw_all_maps(coords: FloatArray, faces: MapIdentities, verdicts: MapVerdicts, config: RenderConfig,
                  out_dir: Path, *, title: str, density: Callable[[Frame], np.ndarray] | None = None
                  ) -> dict[str, Path]:
    """The five PNG maps of a run into ``out_dir`` (the run draws them, and ``faceatlas render`` again from its
    files): one grid and one figure for all five. ``density``: as for :func:`map_grid`."""
    grid = map_grid(coords, config, density)
    with Framer(grid.frame) as framer:
        files = render_maps(coords, faces, config, out_dir, title, grid=grid, framer=framer)
        files.update(render_analysis_maps(coords, verdicts, config, out_dir, title, grid=grid, framer=framer))
    return files


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


@contextmanager
def _framing(grid: MapGrid, framer: Framer | None) -> Iterator[Framer]:
    if framer is not None:
        yield framer
        return
    with Framer(grid.frame) as opened:
        yield opened


def _dots(grid: MapGrid, rows: np.ndarray, colour: str, image: np.ndarray) -> np.ndarray:
    """The faces ``rows`` as solid dots of ``colour`` with a dark rim (at least 3 pixels: visible at any
    scale), over ``image``."""
    size = max(grid.radius + 1, 3)
    rim = grid.raster.paint(size + 1, rows=rows) > 0
    dot = grid.raster.paint(size, rows=rows) > 0
    image = np.where(np.flipud(rim)[..., None], np.array(_rgb("#202020"), dtype=np.uint8), image)
    return np.where(np.flipud(dot)[..., None], np.array(_rgb(colour), dtype=np.uint8), image)


def _colour_image(grid: MapGrid, palette: FloatArray, codes: IdArray) -> np.ndarray:
    """Each pixel in the mean colour of the faces covering it (face i in ``palette[codes[i]]``), opacity
    from the eq_hist-shaded count, as datashader does for categorical colour mixing; on white."""
    n = np.nan_to_num(grid.counts, nan=1.0)
    channels = []
    for channel in range(3):
        weights = np.take(np.ascontiguousarray(palette[:, channel], dtype=np.float64), codes)
        channels.append(np.clip(grid.raster.paint(grid.radius, weights) / n * 255, 0, 255))
    packed = sum(c.astype(np.uint32) << (8 * i) for i, c in enumerate(channels)) | grid.opacity.astype(np.uint32) << 24
    image = np.where(np.isnan(grid.counts), 0, packed).astype(np.uint32)
    return over(image, solid(grid.frame.shape, (255, 255, 255)))


def _density_image(grid: MapGrid) -> np.ndarray:
    import datashader.transfer_functions as tf
    from datashader.colors import inferno

    image = tf.shade(grid.agg, cmap=inferno[64:], how="eq_hist")  # the darkest blues would vanish on black
    return over(image.data, solid(grid.frame.shape, (0, 0, 0)))


def _highlight_image(grid: MapGrid, ids: IdArray, highlight: list[int]) -> np.ndarray:
    """The grey map with each highlighted identity's faces as dots in its colour (at least 3 pixels, dark
    rim); where identities overlap, colours mix by face count, as datashader's categorical shading does."""
    grey = grid.grey
    chosen = np.flatnonzero(np.isin(ids, highlight)) if highlight else np.zeros(0, dtype=np.int64)
    if not len(chosen) or not (grid.raster.pixel[chosen] >= 0).any():
        return grey
    size = max(grid.radius + 1, 3)
    mixed = np.zeros((*grid.frame.shape, 3))
    total = np.zeros(grid.frame.shape)
    for i, identity in enumerate(highlight):
        layer = grid.raster.paint(size, rows=chosen[ids[chosen] == identity])
        mixed += layer[..., None] * np.array(_rgb(HIGHLIGHT_COLOURS[i % len(HIGHLIGHT_COLOURS)]), dtype=np.float64)
        total += layer
    present = np.flipud(total > 0)
    rim = np.flipud(grid.raster.paint(size + 1, rows=chosen) > 0)
    image = np.where(rim[..., None], np.array(_rgb("#202020"), dtype=np.uint8), grey)
    colours = np.flipud(mixed / np.maximum(total, 1)[..., None])
    return np.where(present[..., None], colours.astype(np.uint8), image)


def _highlight_legend(ids: IdArray, highlight: list[int], labels: dict[int, str]) -> list[tuple[str, str]]:
    counts = {int(i): int(c) for i, c in zip(*np.unique(ids[np.isin(ids, highlight)], return_counts=True),
                                                strict=True)}
    entries = [(HIGHLIGHT_COLOURS[i % len(HIGHLIGHT_COLOURS)],
                f"{labels.get(identity, f'id {identity}')} ({counts.get(identity, 0)} faces)")
               for i, identity in enumerate(highlight)]
    return [*entries, ("#a0a0a0", "all other faces")]


def emptiest_corner(image: np.ndarray) -> Corner:
    """The matplotlib legend location whose corner of ``image`` (H, W, 3) hides the least.

    matplotlib's ``loc="best"`` cannot see inside an image, so the legend could hide the faces it names;
    coloured (highlighted) pixels weigh 100 times more than grey ones.
    """
    image = image[::2, ::2]  # every other pixel each way tells the same, at a quarter of the cost
    height, width = image.shape[0] * 2 // 5, image.shape[1] * 2 // 5
    pixels = image.astype(np.int16)
    colourful = (pixels.max(axis=-1) - pixels.min(axis=-1)) > 40
    busy = np.any(image != image[0, 0], axis=-1) + 100 * colourful
    corners: dict[Corner, np.ndarray] = {
        "upper right": busy[:height, -width:], "upper left": busy[:height, :width],
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


class Framer:
    """Frames each map with one matplotlib figure laid out and drawn once (axes, ticks, labels): per map the
    image is pasted into the plot area pixel for pixel (the plot area is exactly the image's size), then only
    the axes' edges, the title and the legend are drawn over it, and the pixels go to a PNG."""

    def __init__(self, frame: Frame) -> None:
        self.frame = frame

    def __enter__(self) -> Framer:
        from matplotlib import rc_context
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
        frame = self.frame
        left, _, top, bottom = _MARGINS
        # parse_math off: a "$" in a file or identity name is text, not a mathtext formula that fails to parse
        self._style = rc_context({"font.family": _FONTS, "font.size": 10, "text.parse_math": False})
        self._style.__enter__()
        self.figure = Figure(figsize=(frame.width / _DPI, frame.height / _DPI), dpi=_DPI)
        self.canvas = FigureCanvasAgg(self.figure)
        self.axes = self.figure.add_axes((left / frame.width, bottom / frame.height,
                                          frame.plot_width / frame.width, frame.plot_height / frame.height))
        self.axes.set(xlim=frame.x_range, ylim=frame.y_range, xlabel="UMAP 1", ylabel="UMAP 2")
        self.title = self.axes.set_title("", fontsize=8 if frame.width < 800 else 11, loc="left")
        self.canvas.draw()
        self.renderer = self.canvas.get_renderer()
        self.background = np.array(self.canvas.buffer_rgba())
        self.plot = (slice(top, top + frame.plot_height), slice(left, left + frame.plot_width))
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._style.__exit__(kind, error, traceback)

    def save(self, image: np.ndarray, title: str, legend: list[tuple[str, str]] | None, path: Path) -> Path:
        """Write ``image`` (plot_height, plot_width, 3) uint8 framed, titled and with ``legend`` (colour, text)
        entries to ``path`` as a PNG (written to a temporary name, then moved into place)."""
        from matplotlib.lines import Line2D
        from PIL import Image

        from job.io.files import display_text

        pixels = np.asarray(self.canvas.buffer_rgba())
        pixels[...] = self.background
        pixels[self.plot[0], self.plot[1], :3] = image
        pixels[self.plot[0], self.plot[1], 3] = 255
        for spine in self.axes.spines.values():
            spine.draw(self.renderer)
        self.title.set_text("\n".join(display_text(line, 160) for line in title.split("\n")))
        self.title.draw(self.renderer)
        if legend:
            handles = [Line2D([], [], marker="o", linestyle="", color=colour, label=display_text(text, 80))
                       for colour, text in legend]
            drawn = self.axes.legend(handles=handles, loc=emptiest_corner(image),
                                     fontsize=6 if self.frame.width < 800 else 9, framealpha=0.9)
            drawn.draw(self.renderer)
            drawn.remove()
        with atomic_write(path) as tmp:
            Image.fromarray(np.ascontiguousarray(pixels[..., :3])).save(tmp, format="PNG", compress_level=PNG_LEVEL)
        return path
