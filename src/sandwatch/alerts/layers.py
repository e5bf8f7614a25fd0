"""The alert layers of one site and run: four COGs and the alert polygons, all atomic.

On the site's AOI window (the grid of its observation rasters), in ``DIR``:

=========================  =======  ===========================================================
``DATE.status.tif``        uint8    0 none, 1 provisional, 2 confirmed, 3 expired, 4 rejected;
                                    255 outside the AOI
``DATE.first_date.tif``    int16    first-detection date in days since :data:`DATE_EPOCH`
                                    (2020-12-31, as OPERA DIST-ALERT); -32768 where no alert
``DATE.confidence.tif``    uint8    pixel confidence x 100 (0..100); 255 outside the AOI
``DATE.count.tif``         uint16   detections since the first; 65535 outside the AOI
``DATE.alerts.geojson``    EPSG:4326 one feature per alert region: key, region, status, first and
                                    last detection dates, count, area, confirmed area, mean
                                    probability, confidence, centroid
=========================  =======  ===========================================================

``DATE`` is the latest date the state was computed with (the state as of that date).
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from pathlib import Path

import numpy as np
import rasterio
import shapely
from shapely.geometry import mapping

from sandwatch.alerts.model import PixelAlerts, RegionEvent
from sandwatch.grid import Grid
from sandwatch.io import make_dirs
from sandwatch.vectors import mask_polygons, to_wgs84, write_feature_collection

#: Day 0 of the first-detection layer (OPERA DIST-ALERT's epoch).
DATE_EPOCH = dt.date(2020, 12, 31)
FIRST_DATE_NODATA = -32768
LAYERS = ("status", "first_date", "confidence", "count")


def days_since_epoch(ordinals: np.ndarray) -> np.ndarray:
    """Date ordinals (0: none) as int16 days since :data:`DATE_EPOCH` (nodata where 0)."""
    days = np.where(ordinals > 0, ordinals.astype(np.int64) - DATE_EPOCH.toordinal(), FIRST_DATE_NODATA)
    return np.clip(days, FIRST_DATE_NODATA, 32767).astype(np.int16)


def layer_arrays(state: PixelAlerts, aoi: np.ndarray) -> dict[str, tuple[np.ndarray, int]]:
    """``{layer: (array, nodata)}`` of a state over its window."""
    out = ~np.asarray(aoi, bool)
    status = np.where(out, 255, state.status).astype(np.uint8)
    first = days_since_epoch(np.where(out | (state.status == 0), 0, state.first))
    conf = np.where(out, 255, np.round(state.confidence() * 100)).astype(np.uint8)
    count = np.where(out, 65535, state.count).astype(np.uint16)
    return {"status": (status, 255), "first_date": (first, FIRST_DATE_NODATA), "confidence": (conf, 255),
            "count": (count, 65535)}


def write_layers(folder: Path, state: PixelAlerts, grid: Grid, aoi: np.ndarray, site: str) -> dict[str, Path]:
    """The four COGs and the polygons of ``state`` (see the module doc); returns their paths."""
    from sandwatch.predict.writer import write_cog

    folder = make_dirs(folder)
    date = state.dates[-1].isoformat()
    paths: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="sandwatch-alert-layers.") as tmpdir:
        for name, (arr, nodata) in layer_arrays(state, aoi).items():
            plain = Path(tmpdir) / f"{name}.tif"
            with rasterio.open(plain, "w", driver="GTiff", width=grid.width, height=grid.height, count=1,
                               dtype=arr.dtype.name, crs=grid.crs, transform=grid.transform, nodata=nodata) as dst:
                dst.write(arr, 1)
                dst.update_tags(SITE=site, DATE=date, LAYER=name, DATE_EPOCH=DATE_EPOCH.isoformat())
            paths[name] = write_cog(plain, folder / f"{date}.{name}.tif", resampling="nearest")
    features = [region_feature(state.summary(rid), grid, site) for rid in sorted(state.regions)]
    paths["geojson"] = write_feature_collection(folder / f"{date}.alerts.geojson", features)
    return paths


def region_geometry(mask: np.ndarray, grid: Grid):
    """The outline of a region's pixels (grid CRS), or None."""
    polys = mask_polygons(mask, grid)
    return shapely.unary_union(polys) if polys else None


def event_row(e: RegionEvent, grid: Grid) -> dict:
    """An event as a row of ``alert_events`` (outline in the grid CRS and in WGS84)."""
    geom = region_geometry(e.mask, grid)
    lat = lon = wkt = gj = None
    if geom is not None and not geom.is_empty:
        c = to_wgs84(geom.centroid, grid.crs)
        lat, lon, wkt = float(c.y), float(c.x), geom.wkt
        gj = json.dumps(mapping(to_wgs84(geom, grid.crs)))
    return {"key": e.key, "region": e.region, "status": e.status, "date": e.date, "first_date": e.first_date,
            "last_date": e.last_date, "count": e.count, "area_m2": e.area_m2, "confirmed_m2": e.confirmed_m2,
            "mean_prob": e.mean_prob, "confidence": e.confidence, "latitude": lat, "longitude": lon, "wkt": wkt,
            "geojson": gj}


def event_properties(row: dict, site: str) -> dict:
    """The properties every output shows of an event (GeoJSON layers, feeds, webhooks)."""
    return {"site": site, "key": row["key"], "region": row["region"], "status": row["status"],
            "date": str(row["date"]), "first_date": str(row["first_date"]), "last_date": str(row["last_date"]),
            "count": row["count"], "area_ha": round(row["area_m2"] / 1e4, 4),
            "confirmed_ha": round(row["confirmed_m2"] / 1e4, 4), "mean_prob": round(row["mean_prob"], 4),
            "confidence": round(row["confidence"], 4), "latitude": row["latitude"], "longitude": row["longitude"]}


def event_feature(row: dict, site: str) -> dict:
    """An event row (``alert_events`` or :func:`event_row`) as a GeoJSON feature in WGS84."""
    return {"type": "Feature", "geometry": json.loads(row["geojson"]) if row["geojson"] else None,
            "properties": event_properties(row, site)}


def region_feature(e: RegionEvent, grid: Grid, site: str) -> dict:
    return event_feature(event_row(e, grid), site)
