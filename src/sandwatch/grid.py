"""The two types everything that touches pixels speaks in: ``Grid`` and ``Window``.

* :class:`Grid` is a raster's georeferencing: CRS, affine transform, width and height.
* :class:`Window` is a rectangle of pixels on a grid: row, col, height, width. It may reach
  outside the grid (boundless reads pad it); :meth:`Window.clip` cuts it to the grid.

Rows grow downwards and columns to the right, as in rasterio; a window's pixel ``(r, c)`` is
pixel ``(row + r, col + c)`` of the grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import rasterio.windows
from affine import Affine
from rasterio.crs import CRS


@dataclass(frozen=True)
class Window:
    """A rectangle of pixels: top row, left column, height and width (all integers)."""

    row: int
    col: int
    height: int
    width: int

    def __post_init__(self):
        if self.height < 0 or self.width < 0:
            raise ValueError(f"window with negative size: {self}")

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def row_stop(self) -> int:
        return self.row + self.height

    @property
    def col_stop(self) -> int:
        return self.col + self.width

    @property
    def size(self) -> int:
        return self.height * self.width

    def slices(self) -> tuple[slice, slice]:
        """Row and column slices, for indexing an array that covers the whole grid."""
        return slice(self.row, self.row_stop), slice(self.col, self.col_stop)

    def to_rasterio(self) -> rasterio.windows.Window:
        return rasterio.windows.Window(self.col, self.row, self.width, self.height)

    @classmethod
    def from_rasterio(cls, w: rasterio.windows.Window) -> "Window":
        return cls(int(round(w.row_off)), int(round(w.col_off)), int(round(w.height)), int(round(w.width)))

    def intersection(self, other: "Window") -> "Window | None":
        r0, c0 = max(self.row, other.row), max(self.col, other.col)
        r1, c1 = min(self.row_stop, other.row_stop), min(self.col_stop, other.col_stop)
        if r1 <= r0 or c1 <= c0:
            return None
        return Window(r0, c0, r1 - r0, c1 - c0)

    def clip(self, height: int, width: int) -> "Window | None":
        """This window cut to a grid of ``height`` x ``width`` pixels (None when disjoint)."""
        return self.intersection(Window(0, 0, height, width))

    def pad(self, pixels: int) -> "Window":
        return Window(self.row - pixels, self.col - pixels, self.height + 2 * pixels, self.width + 2 * pixels)

    def shift(self, drow: int, dcol: int) -> "Window":
        return Window(self.row + drow, self.col + dcol, self.height, self.width)

    def relative_to(self, outer: "Window") -> "Window":
        """This window in the pixel coordinates of ``outer`` (for slicing an array read for ``outer``)."""
        return Window(self.row - outer.row, self.col - outer.col, self.height, self.width)


@dataclass(frozen=True)
class Grid:
    """Georeferencing of a raster: CRS, affine transform (pixel corner based), width, height."""

    crs: CRS
    transform: Affine
    width: int
    height: int

    def __post_init__(self):
        if not isinstance(self.crs, CRS):
            object.__setattr__(self, "crs", CRS.from_user_input(self.crs))
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"grid with no pixels: {self.width}x{self.height}")

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_dataset(cls, ds: Any) -> "Grid":
        """The grid of an open rasterio dataset."""
        return cls(ds.crs, ds.transform, ds.width, ds.height)

    @classmethod
    def from_bounds(cls, crs: Any, left: float, bottom: float, right: float, top: float, res: float) -> "Grid":
        """A north-up grid with square pixels of ``res`` covering the bounds (rounded outwards)."""
        width = max(1, math.ceil(round((right - left) / res, 6)))
        height = max(1, math.ceil(round((top - bottom) / res, 6)))
        return cls(CRS.from_user_input(crs), Affine(res, 0.0, left, 0.0, -res, top), width, height)

    # ---- properties ---------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size (x, y) as positive numbers, in CRS units."""
        return (math.hypot(self.transform.a, self.transform.d), math.hypot(self.transform.b, self.transform.e))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in CRS units."""
        xs, ys = zip(*(self.transform @ (c, r) for c in (0, self.width) for r in (0, self.height)))
        return (min(xs), min(ys), max(xs), max(ys))

    @property
    def pixel_area_m2(self) -> float:
        """Area of one pixel in square metres (for a geographic CRS: at the grid's centre latitude)."""
        if self.crs.is_geographic:
            left, bottom, right, top = self.bounds
            lat = math.radians((bottom + top) / 2)
            m_per_deg = 111_320.0
            return abs(self.transform.a * self.transform.e) * m_per_deg**2 * math.cos(lat)
        factor = self.crs.linear_units_factor[1] if self.crs.linear_units_factor else 1.0
        return abs(self.transform.determinant) * factor**2

    def full_window(self) -> Window:
        return Window(0, 0, self.height, self.width)

    def window_transform(self, window: Window) -> Affine:
        return rasterio.windows.transform(window.to_rasterio(), self.transform)

    def window_grid(self, window: Window) -> "Grid":
        """The grid of a window of this grid (same CRS, shifted transform)."""
        return Grid(self.crs, self.window_transform(window), window.width, window.height)

    def window_from_bounds(self, left: float, bottom: float, right: float, top: float) -> Window:
        """The smallest window of whole pixels that covers the bounds (may reach outside the grid)."""
        w = rasterio.windows.from_bounds(left, bottom, right, top, self.transform)
        r0, c0 = math.floor(round(w.row_off, 6)), math.floor(round(w.col_off, 6))
        r1 = math.ceil(round(w.row_off + w.height, 6))
        c1 = math.ceil(round(w.col_off + w.width, 6))
        return Window(r0, c0, r1 - r0, c1 - c0)

    def same_as(self, other: "Grid", tol: float = 1e-6) -> bool:
        """True when both grids have the same CRS, shape and (within ``tol`` pixels) transform."""
        if self.shape != other.shape or self.crs != other.crs:
            return False
        a, b = self.transform, other.transform
        px = max(self.res)
        return all(abs(x - y) <= tol * (px if i in (2, 5) else 1) for i, (x, y) in enumerate(zip(a[:6], b[:6])))

    def to_dict(self) -> dict:
        return {
            "crs": self.crs.to_string(),
            "transform": list(self.transform)[:6],
            "width": self.width,
            "height": self.height,
            "res": list(self.res),
        }
