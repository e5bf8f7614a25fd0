"""Scene panels of the report: true colour with the labels outlined | probability | errors,
with the map furniture a reader needs to place them: centre coordinates and CRS, a scale bar,
grid north, and a locator of where the scene lies among the scenes of the report (lon/lat).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.warp import transform as warp_transform

from sandwatch.evaluate.core import ProbabilityEncoding
from sandwatch.grid import Grid
from sandwatch.io import atomic_output

# colours (RGB 0..1) of the error map
TP_COLOUR = (0.10, 0.75, 0.20)   # green
FP_COLOUR = (0.90, 0.10, 0.10)   # red
FN_COLOUR = (0.15, 0.45, 1.00)   # blue
GT_COLOUR = "#ffd400"            # yellow outline


def _decimated(grid: Grid, max_size: int) -> Grid:
    f = max(1, math.ceil(max(grid.width, grid.height) / max_size))
    w, h = math.ceil(grid.width / f), math.ceil(grid.height / f)
    t = grid.transform * Affine.scale(grid.width / w, grid.height / h)
    return Grid(grid.crs, t, w, h)


def _mpl():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def centre_lonlat(grid: Grid) -> tuple[float, float]:
    """Longitude and latitude of a grid's centre."""
    left, bottom, right, top = grid.bounds
    xs, ys = warp_transform(grid.crs, "EPSG:4326", [(left + right) / 2], [(bottom + top) / 2])
    return float(xs[0]), float(ys[0])


def _nice_length(span_m: float) -> float:
    """A round scale-bar length (1, 2 or 5 x 10^k m) of about a fifth of ``span_m``."""
    target = max(span_m / 5, 1.0)
    base = 10 ** math.floor(math.log10(target))
    return max((m * base for m in (1, 2, 5) if m * base <= target), default=base)


def add_map_furniture(ax, grid: Grid) -> None:
    """Scale bar (bottom left) and grid-north arrow (top right) on an image axis of ``grid``."""
    from matplotlib.patheffects import withStroke

    px = abs(grid.transform.a) if grid.crs is not None and grid.crs.is_projected else None
    halo = [withStroke(linewidth=2.5, foreground="black")]
    if px:
        length_m = _nice_length(grid.width * px)
        n = length_m / px
        x0, y0 = 0.05 * grid.width, 0.93 * grid.height
        ax.plot([x0, x0 + n], [y0, y0], color="white", lw=3, solid_capstyle="butt", path_effects=halo)
        label = f"{length_m / 1000:g} km" if length_m >= 1000 else f"{length_m:g} m"
        ax.text(x0 + n / 2, y0 - 0.025 * grid.height, label, color="white", ha="center", va="bottom",
                fontsize=8, path_effects=halo)
    ax.annotate("N", xy=(0.93, 0.95), xytext=(0.93, 0.80), xycoords="axes fraction", color="white", ha="center",
                fontsize=9, fontweight="bold", path_effects=halo,
                arrowprops=dict(arrowstyle="-|>", color="white", lw=1.5))


def add_locator(fig, here: tuple[float, float], others: Sequence[tuple[float, float]], rect=(0.035, 0.70, 0.08, 0.2)):
    """A small lon/lat panel: every scene of the report (grey) and this one (red)."""
    ax = fig.add_axes(rect)
    pts = np.asarray(list(others) or [here], float)
    ax.plot(pts[:, 0], pts[:, 1], "o", color="0.6", ms=3)
    ax.plot([here[0]], [here[1]], "o", color="red", ms=5, mec="black")
    pad = max(0.5, 0.15 * max(np.ptp(pts[:, 0]), np.ptp(pts[:, 1])))
    ax.set_xlim(pts[:, 0].min() - pad, pts[:, 0].max() + pad)
    ax.set_ylim(pts[:, 1].min() - pad, pts[:, 1].max() + pad)
    ax.set_aspect("equal", adjustable="box")
    ax.tick_params(labelsize=6, length=2, pad=1)
    ax.set_title("where (lon/lat)", fontsize=7, pad=2)
    ax.grid(alpha=0.3)


def overlay_arrays(prob_path, obs, max_size: int = 768, threshold: float = 0.5, all_touched: bool = True):
    """Decimated arrays for a picture: (rgb uint8 or None, probability float (NaN nodata), truth bool,
    the decimated grid)."""
    from sandwatch.labels import rasterize_labels

    with rasterio.open(prob_path) as ds:
        grid = Grid.from_dataset(ds)
        small = _decimated(grid, max_size)
        enc = ProbabilityEncoding.of(ds)
        values = ds.read(1, out_shape=(small.height, small.width), resampling=Resampling.nearest)
        valid = ds.read_masks(1, out_shape=(small.height, small.width), resampling=Resampling.nearest) > 0
    prob = enc.probability(values)
    prob = np.where(valid & np.isfinite(prob), prob, np.nan)
    truth = np.zeros(small.shape, bool)
    if obs.annotations:
        truth = rasterize_labels(obs.annotations, small, all_touched=all_touched)[0].astype(bool)
    rgb = None
    try:
        scene = obs.open_scene()
        if scene.grid.same_as(grid):
            rgb = scene.quicklook(max_size=max(small.width, small.height))
            if rgb.shape[:2] != small.shape:
                rgb = _resize_nearest(rgb, small.shape)
    except Exception:  # noqa: BLE001 - a picture without its quicklook is still useful
        rgb = None
    return rgb, prob, truth, small


def _resize_nearest(img: np.ndarray, shape) -> np.ndarray:
    rows = (np.arange(shape[0]) * img.shape[0] / shape[0]).astype(int)
    cols = (np.arange(shape[1]) * img.shape[1] / shape[1]).astype(int)
    return img[rows][:, cols]


def error_map(prob: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """RGBA float image: TP green, FP red, FN blue, transparent elsewhere (and on nodata)."""
    pred = np.nan_to_num(prob, nan=-1.0) >= threshold
    valid = np.isfinite(prob)
    out = np.zeros(prob.shape + (4,), np.float32)
    for sel, colour in ((pred & truth, TP_COLOUR), (pred & ~truth, FP_COLOUR), (~pred & truth & valid, FN_COLOUR)):
        out[sel, :3] = colour
        out[sel, 3] = 0.85
    return out


def plot_overlay(prob_path, obs, path: str | os.PathLike, *, title: str = "", threshold: float = 0.5,
                 max_size: int = 768, all_touched: bool = True,
                 locator: Sequence[tuple[float, float]] | None = None) -> Path:
    """Three panels: true colour + ground-truth outline | probability | TP / FP / FN; the first
    with a scale bar and grid north, the title with the centre's lat/lon and the CRS;
    ``locator``: lon/lat of the report's scenes for a small "where" panel."""
    plt = _mpl()
    from matplotlib.patches import Patch

    rgb, prob, truth, grid = overlay_arrays(prob_path, obs, max_size, threshold, all_touched)
    h, w = prob.shape
    aspect = w / h
    fig_h = 4.6 if aspect >= 1 else min(9.0, 4.6 / max(aspect, 0.5))
    fig, axes = plt.subplots(1, 3, figsize=(min(15, max(7.5, 3 * (fig_h - 1) * aspect + 0.5)), fig_h), dpi=100)
    base = rgb if rgb is not None else np.dstack([np.nan_to_num(prob, nan=0.0)] * 3) * 0 + 0.35
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].imshow(base)
    axes[0].set_title("true colour + ground truth" if rgb is not None else "ground truth (no quicklook)", fontsize=9)
    im = axes[1].imshow(prob, cmap="magma", vmin=0, vmax=1, interpolation="nearest")
    axes[1].set_title("mining probability", fontsize=9)
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.02)
    faded = (base.astype(np.float32) / (255.0 if base.dtype == np.uint8 else 1.0)) * 0.5 + 0.25
    axes[2].imshow(faded)
    axes[2].imshow(error_map(prob, truth, threshold), interpolation="nearest")
    axes[2].set_title(f"errors at {threshold:g}", fontsize=9)
    if truth.any():
        for ax in axes:
            ax.contour(truth.astype(float), levels=[0.5], colors=[GT_COLOUR], linewidths=1.5)
    fig.legend(handles=[Patch(color=TP_COLOUR, label="found (true positive)"),
                        Patch(color=FP_COLOUR, label="false alarm (false positive)"),
                        Patch(color=FN_COLOUR, label="missed (false negative)"),
                        Patch(color=GT_COLOUR, label="labelled mining (outline)")],
               fontsize=8, loc="lower center", ncol=4, frameon=False)
    add_map_furniture(axes[0], grid)
    lon, lat = centre_lonlat(grid)
    where = (f"centre {abs(lat):.4f}°{'N' if lat >= 0 else 'S'} {abs(lon):.4f}°{'E' if lon >= 0 else 'W'} · "
             f"{grid.crs.to_string()}")
    fig.suptitle(f"{title or obs.id}\n{where}", fontsize=10)
    fig.tight_layout(rect=(0.1 if locator is not None else 0, 0.07, 1, 1))
    if locator is not None:
        add_locator(fig, (lon, lat), locator)
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
