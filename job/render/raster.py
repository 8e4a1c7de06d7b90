"""The grid every map is drawn on: one frame, each face's pixel found once, aggregates summed in numpy.

A face falls in the pixel datashader's ``Canvas.points`` puts it in (same scale and translation, points on
the far edges in the last row or column, NaN and out-of-frame faces dropped), and ``paint`` gives what
``Canvas.points`` with ``ds.count()`` / ``ds.sum()`` then a disc convolution gives (``tests/render/test_render.py``
checks both against datashader). Doing it here, not with datashader's glyph pipeline, is what makes a warm
run compile nothing: datashader builds its aggregation kernels from generated source on every call, which
numba cannot cache (~2 s of compiling per process, and ~2.7 s on a fresh machine). Shading (``eq_hist``,
colour keys) stays datashader's.

Grids are (plot_height, plot_width) in datashader's orientation: row 0 is the bottom of the map.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from job.arrays import FloatArray
from job.config import RenderConfig

MARGINS = (70, 20, 50, 45)  # left, right, top, bottom, in pixels
CHUNK = 1 << 20  # faces per block while rasterising and painting (bounds the int64 temporaries)


@dataclass(frozen=True)
class Frame:
    """Geometry shared by the maps: data ranges with equal units per pixel on both axes."""

    x_range: tuple[float, float]
    y_range: tuple[float, float]
    plot_width: int
    plot_height: int
    width: int
    height: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.plot_height, self.plot_width


@dataclass(frozen=True)
class Raster:
    """Where each face falls: ``pixel`` (n_faces,) int64, the flat index into the frame's grid (-1: off the
    map), computed once for every map."""

    frame: Frame
    pixel: np.ndarray

    def paint(self, radius: int, weights: np.ndarray | None = None, rows: np.ndarray | None = None) -> np.ndarray:
        """Per pixel, the sum of ``weights`` (1 per face when None) of the faces (all, or ``rows``: a bool mask
        or row numbers) whose disc of ``radius`` pixels covers it: (plot_height, plot_width) float64, 0 where
        no face is. The same as datashader's count / sum aggregate convolved with the disc.

        Few faces (fewer disc pixels than grid pixels): each face's disc is summed straight into the grid;
        many: faces are summed per pixel first, then the grid is spread by shifted adds (the work then grows
        with the pixels, not with the faces)."""
        pixel = self.pixel if rows is None else self.pixel[rows]
        values = None if weights is None else (weights if rows is None else weights[rows])
        height, width = self.frame.shape
        offsets = disc(radius)
        if len(pixel) * len(offsets) > height * width:
            on = pixel >= 0
            grid = np.bincount(pixel[on], None if values is None else np.asarray(values, np.float64)[on],
                               minlength=height * width).astype(np.float64).reshape(height, width)
            return spread(grid, radius)
        total = np.zeros(height * width)
        shifts = np.array(offsets, dtype=np.int64)
        step = max(1, CHUNK // len(offsets))  # faces x offsets per block stays at CHUNK
        for start in range(0, len(pixel), step):
            block = pixel[start:start + step]
            on = block >= 0
            row = (block[on] // width)[:, None] + shifts[:, 0]  # (faces, offsets): one bincount for the block
            col = (block[on] % width)[:, None] + shifts[:, 1]
            inside = (row >= 0) & (row < height) & (col >= 0) & (col < width)
            target = row[inside] * width + col[inside]
            weight = None
            if values is not None:
                weight = np.broadcast_to(np.asarray(values[start:start + step], np.float64)[on][:, None],
                                         inside.shape)[inside]
            total += np.bincount(target, weight, minlength=height * width)
        return total.reshape(height, width)


def spread(grid: np.ndarray, radius: int) -> np.ndarray:
    """A per-pixel aggregate (plot_height, plot_width) convolved with the disc of ``radius`` pixels (float64):
    what every face's dot adds to the pixels it covers. By shifted adds, so the work grows with the pixels."""
    grid = np.asarray(grid, dtype=np.float64)
    if radius == 0:
        return grid
    height, width = grid.shape
    total = np.zeros((height, width))
    for dy, dx in disc(radius):
        total[max(dy, 0):height + min(dy, 0), max(dx, 0):width + min(dx, 0)] += \
            grid[max(-dy, 0):height - max(dy, 0), max(-dx, 0):width - max(dx, 0)]
    return total


def make_frame(coords: FloatArray, config: RenderConfig) -> Frame:
    """Fit the map's x/y extent (2% padding) into the plot area without stretching either axis."""
    left, right, top, bottom = MARGINS
    plot_w, plot_h = config.width - left - right, config.height - top - bottom
    (x_lo, x_hi), (y_lo, y_hi) = _extent(coords[:, 0]), _extent(coords[:, 1])
    lo, hi = np.array([x_lo, y_lo]), np.array([x_hi, y_hi])
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


def rasterise(coords: FloatArray, frame: Frame) -> Raster:
    """Each face's pixel in ``frame`` (the first two columns of ``coords``)."""
    pixel = np.empty(len(coords), dtype=np.int64)
    for start in range(0, len(coords), CHUNK):
        block = coords[start:start + CHUNK]
        col = _bins(block[:, 0], frame.x_range, frame.plot_width)
        row = _bins(block[:, 1], frame.y_range, frame.plot_height)
        pixel[start:start + CHUNK] = np.where((col >= 0) & (row >= 0), row * frame.plot_width + col, -1)
    return Raster(frame, pixel)


def _bins(values: np.ndarray, span: tuple[float, float], n: int) -> np.ndarray:
    """datashader's linear axis: bin int(x * n / (end - start) - start * s), x in [start, end], the end in the
    last bin; -1 outside or NaN."""
    scale = n / (span[1] - span[0])
    translate = -span[0] * scale
    values = values.astype(np.float64)  # compared in float64, as datashader does (not in the input's float32)
    inside = (values >= span[0]) & (values <= span[1])
    index = np.trunc(np.where(inside, values, span[0]) * scale + translate).astype(np.int64)
    return np.where(inside, np.minimum(index, n - 1), -1)


def disc(radius: int) -> list[tuple[int, int]]:
    """The (dy, dx) offsets of a disc of ``radius`` pixels (x^2 + y^2 <= r^2 + r: round, not diamond)."""
    return [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)
            if dx * dx + dy * dy <= radius * radius + radius]


def as_agg(grid: np.ndarray, frame: Frame) -> Any:
    """A grid as the xarray datashader's transfer functions take, with datashader's pixel-centre coords."""
    import xarray as xr

    xs = _centres(frame.x_range, frame.plot_width)
    ys = _centres(frame.y_range, frame.plot_height)
    return xr.DataArray(grid, coords=[("y", ys), ("x", xs)])


def _centres(span: tuple[float, float], n: int) -> np.ndarray:
    scale = n / (span[1] - span[0])
    return (np.arange(n) + 0.5 + span[0] * scale) / scale


def over(top: Any, background: np.ndarray) -> np.ndarray:
    """Alpha-composite a shaded datashader image over an RGB (H, W, 3) uint8 background, in numpy."""
    rgba = np.flipud(np.asarray(top.data, dtype=np.uint32).view(np.uint8).reshape(*top.shape, 4)).astype(np.float32)
    alpha = rgba[..., 3:4] / 255.0
    return (rgba[..., :3] * alpha + background.astype(np.float32) * (1 - alpha)).round().astype(np.uint8)


def solid(shape: tuple[int, ...], colour: tuple[int, int, int]) -> np.ndarray:
    """An RGB image of one colour, (H, W, 3) uint8 (a read-only broadcast view)."""
    return np.broadcast_to(np.array(colour, dtype=np.uint8), (*shape, 3))
