from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from job.config import RenderConfig
from job.render.maps import HIGHLIGHT_COLOURS, MapIdentities, identity_palette, make_frame, render_maps


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _has_colour(pixels: np.ndarray, hex_colour: str, tolerance: int = 8) -> bool:
    target = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
    return bool((np.abs(pixels.astype(int) - target).max(axis=-1) <= tolerance).any())


def test_maps_have_the_configured_size_and_are_not_blank(smoke_run, smoke_config) -> None:
    for name in ("identities", "highlight", "density"):
        path = smoke_run.files[name]
        assert path.name == f"map_{name}.png"
        pixels = _pixels(path)
        assert pixels.shape == (smoke_config.render.height, smoke_config.render.width, 3)
        plot = pixels[60:-60, 80:-30]  # inside the axes
        background = plot[0, 0]
        assert np.any(plot != background, axis=-1).mean() > 0.01  # faces drawn, not an empty frame
        assert len(np.unique(plot.reshape(-1, 3), axis=0)) >= 5


def test_highlighted_identities_are_drawn_where_they_lie(smoke_run, smoke_config) -> None:
    import pyarrow.parquet as pq

    from job.render.maps import _MARGINS

    table = pq.read_table(smoke_run.files["projection"]).to_pandas()
    coords = table[["x", "y"]].to_numpy()
    frame = make_frame(coords, smoke_config.render)
    pixels = _pixels(smoke_run.files["highlight"])
    left, _, top, _ = _MARGINS
    for colour, identity in zip(HIGHLIGHT_COLOURS, range(5), strict=False):
        x, y = np.median(coords[table["id"].to_numpy() == identity], axis=0)
        col = int(left + (x - frame.x_range[0]) / (frame.x_range[1] - frame.x_range[0]) * frame.plot_width)
        row = int(top + (frame.y_range[1] - y) / (frame.y_range[1] - frame.y_range[0]) * frame.plot_height)
        assert _has_colour(pixels[row - 6 : row + 7, col - 6 : col + 7], colour), identity


def test_legend_goes_to_the_emptiest_corner() -> None:
    from job.render.maps import emptiest_corner

    image = np.full((100, 100, 3), 255, np.uint8)
    image[:50, 50:] = 0  # the upper right is full
    image[50:, :] = 0  # and so is the whole lower half
    assert emptiest_corner(image) == "upper left"


def test_highlight_colours_mark_only_the_chosen_faces(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    coords = rng.uniform(0, 10, (2000, 2)).astype(np.float32)
    ids = np.repeat(np.arange(400), 5)
    coords[ids == 7] = [[2.0, 2.0]]  # one tight spot
    paths = render_maps(coords, MapIdentities(ids, [7], {7: "id 7 Ada"}), RenderConfig(width=400, height=400), tmp_path,
                        "t")
    pixels = _pixels(paths["highlight"])
    red = (np.abs(pixels.astype(int) - [0xE4, 0x1A, 0x1C]).max(axis=-1) <= 8)
    red[:200, 200:] = False  # the legend sits in the upper right
    rows, cols = np.nonzero(red)
    assert len(rows) > 0 and np.ptp(rows) < 20 and np.ptp(cols) < 20
    assert rows.mean() > 200 and cols.mean() < 200  # lower left, where (2, 2) lies


def test_a_million_faces_render_into_a_filled_frame(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 1_000_000
    coords = rng.normal(0, 1, (n, 2)).astype(np.float32)
    ids = rng.integers(0, 50_000, n)
    paths = render_maps(coords, MapIdentities(ids, [int(ids[0])], {}), RenderConfig(width=300, height=300), tmp_path,
                        "big")
    density = _pixels(paths["density"])[50:-45, 70:-20]
    assert (density.sum(-1) > 0).mean() > 0.3  # the dense core fills the frame


def test_frame_keeps_equal_units_per_pixel() -> None:
    coords = np.array([[0, 0], [10, 1]], dtype=np.float32)
    frame = make_frame(coords, RenderConfig(width=600, height=400))
    x_per_px = (frame.x_range[1] - frame.x_range[0]) / frame.plot_width
    y_per_px = (frame.y_range[1] - frame.y_range[0]) / frame.plot_height
    assert x_per_px == pytest.approx(y_per_px)
    flat = make_frame(np.zeros((5, 2), np.float32), RenderConfig())
    assert flat.x_range[0] < flat.x_range[1] and flat.y_range[0] < flat.y_range[1]


def test_palette_follows_the_seed_recipe() -> None:
    from matplotlib.colors import rgb_to_hsv

    palette = identity_palette(1000, seed=0)
    hsv = rgb_to_hsv(palette)
    assert palette.shape == (1000, 3)
    assert hsv[:, 1].min() >= 0.4 - 1e-6 and hsv[:, 1].max() < 1.0
    assert hsv[:, 2].min() >= 0.3 - 1e-6 and hsv[:, 2].max() < 0.9 + 1e-6
    assert np.array_equal(palette, identity_palette(1000, seed=0))


@pytest.mark.parametrize(("n_faces", "radius"), [(500, 3), (3000, 3), (20_000, 0), (20_000, 1)])
def test_face_pixels_and_sums_are_datashaders(n_faces: int, radius: int) -> None:
    """The one rasterisation all maps share gives datashader's count and sum aggregates, spread over a disc
    (both ways: each face's disc for few faces, the per-pixel grid spread for many)."""
    import datashader as ds
    import pandas as pd
    from scipy.ndimage import convolve

    from job.render.raster import disc, rasterise

    rng = np.random.default_rng(n_faces + radius)
    coords = rng.normal(0, 3, (n_faces, 2)).astype(np.float32)
    coords[:5] = [[np.nan, 0.0], [0.0, np.nan], [100.0, 0.0], [0.0, -100.0], [0.0, 0.0]]  # dropped, off, edge
    frame = make_frame(coords[5:], RenderConfig(width=300, height=260))
    coords[4] = [frame.x_range[1], frame.y_range[1]]  # the far corner: datashader's last pixel
    weight = rng.uniform(0, 1, len(coords)).astype(np.float32)
    canvas = ds.Canvas(plot_width=frame.plot_width, plot_height=frame.plot_height, x_range=frame.x_range,
                       y_range=frame.y_range)
    faces = pd.DataFrame({"x": coords[:, 0], "y": coords[:, 1], "w": weight})
    kernel = np.zeros((2 * radius + 1, 2 * radius + 1))
    for dy, dx in disc(radius):
        kernel[dy + radius, dx + radius] = 1
    raster = rasterise(coords, frame)
    for ours, agg in ((raster.paint(radius), ds.count()), (raster.paint(radius, weight), ds.sum("w"))):
        theirs = convolve(np.nan_to_num(canvas.points(faces, "x", "y", agg=agg).data.astype(np.float64)), kernel,
                          mode="constant")
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-9)
    assert (raster.paint(radius) == 0).any() and (raster.paint(radius) > 0).any()
