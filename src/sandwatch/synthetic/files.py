"""Writing synthetic data exactly like real inputs: GeoTIFF scenes, GeoJSON polygons and lines, PNG quicklooks.

These helpers are public so that other stages' tests can make small scenes with known content:

>>> grid = utm_grid(85.85, 20.30, size=128)                         # 1.28 km square, 10 m pixels
>>> truth = make_scene("scene.tif", grid, mine_mask=my_mask, seed=1)  # doctest: +SKIP
>>> write_polygons("mines.geojson", truth.mine_mask, grid)            # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import rasterio
import rasterio.features
import shapely
from affine import Affine
from pyproj import Transformer
from rasterio.crs import CRS
from scipy import ndimage
from shapely.geometry import LineString, MultiPolygon, Polygon, mapping

from sandwatch.bands import L1C_BANDS, S2_BANDS
from sandwatch.errors import SandwatchError
from sandwatch.grid import Grid
from sandwatch.imagery.display import stretch_true_colour
from sandwatch.io import atomic_output
from sandwatch.vectors import mask_polygons, to_wgs84, write_feature_collection

#: First date of Sentinel-2 processing baseline 04.00, from which DN carry an offset of 1000.
BASELINE_04_DATE = dt.date(2022, 1, 25)


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the WGS 84 / UTM zone of a point (326xx north, 327xx south)."""
    zone = int((lon + 180) // 6) % 60 + 1
    return (32600 if lat >= 0 else 32700) + zone


def utm_grid(lon: float, lat: float, size: int | tuple[int, int] = 512, res: float = 10.0) -> Grid:
    """A north-up grid of ``size`` pixels (int or (height, width)) of ``res`` metres centred on
    a point, in its UTM zone, with corners on whole multiples of ``res`` (as Sentinel-2 tiles)."""
    height, width = (size, size) if isinstance(size, int) else size
    crs = CRS.from_epsg(utm_epsg(lon, lat))
    x, y = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lon, lat)
    left = round((x - width * res / 2) / res) * res
    top = round((y + height * res / 2) / res) * res
    return Grid(crs, Affine(res, 0.0, left, 0.0, -res, top), width, height)


def dn_offset_for(date: dt.date | None) -> int:
    """The DN offset real L1C/L2A products of that date carry (1000 from baseline 04.00 on)."""
    return 1000 if date is not None and date >= BASELINE_04_DATE else 0


def reflectance_to_dn(refl: np.ndarray, offset: int = 0) -> np.ndarray:
    """uint16 digital numbers: reflectance x 10000 + offset, 0 kept for nodata (refl <= 0)."""
    dn = np.rint(np.asarray(refl, np.float32) * 10000.0) + offset
    dn = np.clip(dn, 1, 65535)
    return np.where(np.asarray(refl) > 0, dn, 0).astype(np.uint16)


def write_scene(path: str | os.PathLike, data: np.ndarray | Iterable[np.ndarray], grid: Grid, *,
                bands: Sequence[str] = L1C_BANDS, date: dt.date | str | None = None,
                units: str = "reflectance", offset: int | None = None, level: str = "L1C",
                block: int = 256) -> Path:
    """Write a Sentinel-2-like uint16 GeoTIFF: one band per name in ``bands``, descriptions set
    to the names, nodata 0, tiled, DEFLATE, band-interleaved, through ``atomic_output``.

    ``data``: a (C, H, W) array or an iterable of (H, W) arrays in band order (one band in memory
    at a time). ``units="reflectance"`` converts with :func:`reflectance_to_dn` (pixels <= 0 become
    nodata); ``units="dn"`` writes the values as they are. ``offset`` defaults to the real one for
    ``date`` (0 before 2022-01-25, 1000 after). Tags: ``ACQUISITION_DATE``, ``PROCESSING_LEVEL``,
    ``QUANTIFICATION_VALUE`` (10000), ``RADIO_ADD_OFFSET`` (-offset), ``PROCESSING_BASELINE``.
    """
    path = Path(path)
    if isinstance(date, str):
        date = dt.date.fromisoformat(date)
    if offset is None:
        offset = dn_offset_for(date)
    bands = tuple(bands)
    small = min(grid.width, grid.height)
    if small <= block:  # keep several tiles per band, so the file reads as tiled everywhere
        block = max(16, 16 * ((small // 2) // 16))
    profile = {
        "driver": "GTiff", "width": grid.width, "height": grid.height, "count": len(bands),
        "dtype": "uint16", "crs": grid.crs, "transform": grid.transform, "nodata": 0,
        "compress": "deflate", "predictor": 2, "interleave": "band", "tiled": True,
        "blockxsize": block, "blockysize": block,
    }
    tags = {"PROCESSING_LEVEL": level, "QUANTIFICATION_VALUE": "10000", "RADIO_ADD_OFFSET": str(-offset),
            "PROCESSING_BASELINE": "04.00" if offset else "02.09", "SPACECRAFT_NAME": "Sentinel-2 (synthetic)",
            "SOURCE": "sandwatch.synthetic"}
    if date is not None:
        tags["ACQUISITION_DATE"] = date.isoformat()
    arrays = iter(data)  # a (C, H, W) array iterates over its bands, a generator over its arrays
    n = 0
    with atomic_output(path) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.update_tags(**tags)
            for i, arr in enumerate(arrays):
                if i >= len(bands):
                    raise ValueError(f"write_scene: more arrays than the {len(bands)} band names")
                arr = np.asarray(arr)
                if arr.shape != grid.shape:
                    raise ValueError(f"write_scene: band {bands[i]} has shape {arr.shape}, grid is {grid.shape}")
                dn = reflectance_to_dn(arr, offset) if units == "reflectance" else arr.astype(np.uint16)
                dst.write(dn, i + 1)
                dst.set_band_description(i + 1, bands[i])
                if bands[i] in S2_BANDS:
                    dst.update_tags(i + 1, BANDNAME=bands[i], WAVELENGTH=str(S2_BANDS[bands[i]].centre_nm),
                                    WAVELENGTH_UNIT="nm", RESOLUTION=str(S2_BANDS[bands[i]].resolution_m))
                n += 1
        if n != len(bands):
            raise ValueError(f"write_scene: got {n} arrays for {len(bands)} band names")
    return path


# ---- vectors ------------------------------------------------------------------------------

def _round_coords(geom, digits: int = 7):
    return shapely.set_precision(geom, 10.0 ** -digits) if digits else geom


def mask_to_polygons(mask: np.ndarray, grid: Grid, *, generous_px: float = 1.5, simplify_px: float = 1.0,
                     min_pixels: int = 6, close_px: int = 0, fill_holes: bool = True) -> list[Polygon]:
    """Outline a boolean mask the way a human annotator would: nearby parts joined (closing by
    ``close_px``), holes filled, outline a little generous (grown by ``generous_px``) and
    simplified (``simplify_px``); polygons in the grid's CRS. Works on the mask's bounding box."""
    mask = np.asarray(mask, bool)
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return []
    cols = np.flatnonzero(mask.any(axis=0))
    pad = close_px + 2
    r0, r1 = max(0, rows[0] - pad), min(mask.shape[0], rows[-1] + 1 + pad)
    c0, c1 = max(0, cols[0] - pad), min(mask.shape[1], cols[-1] + 1 + pad)
    sub = mask[r0:r1, c0:c1]
    transform = grid.transform * Affine.translation(c0, r0)
    if close_px > 0:
        disk = np.hypot(*np.mgrid[-close_px:close_px + 1, -close_px:close_px + 1]) <= close_px
        sub = ndimage.binary_closing(np.pad(sub, pad), structure=disk)[pad:-pad, pad:-pad] | sub
    if fill_holes:
        sub = ndimage.binary_fill_holes(sub)
    labels, n = ndimage.label(sub)
    if n == 0:
        return []
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_pixels
    keep[0] = False
    sub = keep[labels]
    res = max(grid.res)
    out: list[Polygon] = []
    for poly in mask_polygons(sub, transform):
        poly = poly.buffer(generous_px * res, join_style="round", quad_segs=4).simplify(simplify_px * res)
        parts = list(poly.geoms) if isinstance(poly, MultiPolygon) else [poly]
        out.extend(p for p in parts if not p.is_empty and p.area > 0)
    if not out:
        return []
    # Outlines that touch after growing are drawn as one polygon, as an annotator would.
    merged = shapely.unary_union(out)
    parts = list(merged.geoms) if isinstance(merged, MultiPolygon) else [merged]
    return [Polygon(p.exterior) if fill_holes else p for p in parts if not p.is_empty]


def write_polygons(path: str | os.PathLike, polygons: np.ndarray | Sequence, grid: Grid | None = None, *,
                   confidence: str | Sequence[str] = "High", crs: CRS | str | None = None, **outline) -> Path:
    """Mining polygons as GeoJSON in EPSG:4326 with the property ``Confidence`` (like Labelbox exports).

    ``polygons``: a boolean mask on ``grid`` (outlined with :func:`mask_to_polygons`, ``**outline``
    passed on), or shapely polygons in ``crs`` (default: the grid's CRS). ``confidence``: one value
    for all or one per polygon ("High" / "Low"). An empty list writes an empty FeatureCollection.
    """
    path = Path(path)
    if isinstance(polygons, np.ndarray):
        if grid is None:
            raise ValueError("write_polygons: a mask needs its grid")
        geoms = mask_to_polygons(polygons, grid, **outline)
        src_crs = grid.crs
    else:
        geoms = list(polygons)
        src_crs = CRS.from_user_input(crs) if crs is not None else (grid.crs if grid is not None else None)
        if src_crs is None and geoms:
            raise ValueError("write_polygons: give the polygons' crs or a grid")
    conf = [confidence] * len(geoms) if isinstance(confidence, str) else list(confidence)
    if len(conf) != len(geoms):
        raise ValueError(f"write_polygons: {len(conf)} confidence values for {len(geoms)} polygons")
    features = []
    for g, c in zip(geoms, conf):
        g84 = _round_coords(to_wgs84(g, src_crs)) if src_crs and not src_crs.is_geographic else g
        features.append({"type": "Feature", "properties": {"Confidence": c}, "geometry": mapping(g84)})
    return write_feature_collection(path, features)


def write_lines(path: str | os.PathLike, lines: Sequence[LineString], crs: CRS | str, *,
                names: Sequence[str] | None = None) -> Path:
    """River centre lines (LineStrings in ``crs``) as GeoJSON in EPSG:4326 (CRS84 member, like OSM
    exports), with a ``name`` and ``waterway`` property."""
    crs = CRS.from_user_input(crs)
    features = []
    for i, line in enumerate(lines):
        g84 = _round_coords(to_wgs84(line, crs)) if not crs.is_geographic else line
        props = {"name": names[i] if names else f"river {i}", "waterway": "river"}
        features.append({"type": "Feature", "properties": props, "geometry": mapping(g84)})
    return write_feature_collection(path, features, crs84=True)


# ---- quicklooks ---------------------------------------------------------------------------

def write_quicklook(path: str | os.PathLike, rgb: np.ndarray, max_size: int = 1024) -> Path:
    """Write a uint8 (H, W, 3) image as PNG (downsampled by striding to at most ``max_size``)."""
    from PIL import Image  # comes with matplotlib

    step = max(1, int(np.ceil(max(rgb.shape[:2]) / max_size)))
    with atomic_output(Path(path)) as tmp:
        Image.fromarray(np.ascontiguousarray(rgb[::step, ::step]), mode="RGB").save(tmp, format="PNG",
                                                                                     compress_level=4)
    return Path(path)


def scene_quicklook(path: str | os.PathLike, out: str | os.PathLike, max_size: int = 1024) -> Path:
    """PNG quicklook (B04/B03/B02) of a written scene, read decimated so big scenes stay cheap."""
    with rasterio.open(path) as src:
        names = [d or "" for d in src.descriptions]
        try:
            idx = [names.index(b) + 1 for b in ("B04", "B03", "B02")]
        except ValueError:
            raise SandwatchError.about(path, "has no bands named B04, B03, B02",
                                       "write the scene with band descriptions") from None
        step = max(1, int(np.ceil(max(src.height, src.width) / max_size)))
        shape = (3, max(1, src.height // step), max(1, src.width // step))
        data = src.read(idx, out_shape=shape, resampling=rasterio.enums.Resampling.average).astype(np.float32)
        off = -float(src.tags().get("RADIO_ADD_OFFSET", 0) or 0)
    valid = (data > 0).all(axis=0)
    refl = (data - off) / 10000.0
    return write_quicklook(out, stretch_true_colour(*refl, valid=valid), max_size=max_size)
