"""Study areas from a list of mining sites (``sandwatch sites plan``).

Each site gets a square of ``2 * half_size`` metres in the UTM zone of the site, snapped
outwards to the ``res`` (10 m) grid. With river vectors and ``along_river_km``, the square is
stretched to cover the river for ``along_river_km / 2`` on each side of the river point nearest
to the site (the long sites of the published method). Sites whose rectangles overlap are
merged, repeatedly, until no two areas overlap (edges may touch); a merged area uses the UTM
zone of its centre. An area's id is a digest of its sites' coordinates: the same sites give the
same id whatever their order in the file or the other sites around them.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from shapely.geometry import box, mapping, shape
import shapely
from shapely.ops import substring

from sandwatch.errors import SandwatchError

DEFAULT_HALF_SIZE_M = 2500.0
DEFAULT_RES_M = 10.0
_LAT = ("lat", "latitude", "y")
_LON = ("lon", "lng", "long", "longitude", "x")


@dataclass(frozen=True)
class Site:
    name: str
    lat: float
    lon: float
    river: str = ""
    notes: str = ""


@dataclass
class Area:
    """A north-up rectangle in one UTM zone: ``bounds`` (xmin, ymin, xmax, ymax) in metres."""

    id: str
    epsg: int
    bounds: tuple[float, float, float, float]
    sites: list[Site] = field(default_factory=list)
    res: float = DEFAULT_RES_M

    @property
    def km2(self) -> float:
        x0, y0, x1, y1 = self.bounds
        return round((x1 - x0) * (y1 - y0) / 1e6, 6)

    @property
    def crs(self) -> str:
        return f"EPSG:{self.epsg}"

    def lonlat_polygon(self):
        """The rectangle in EPSG:4326 (edges densified so it follows the projected rectangle)."""
        return transform(_to_wgs84(self.epsg), box(*self.bounds).segmentize(max(self.res, 100.0)))

    def centre_lonlat(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.bounds
        lon, lat = _to_wgs84(self.epsg)((x0 + x1) / 2, (y0 + y1) / 2)
        return float(lon), float(lat)

    def to_feature(self) -> dict:
        lon, lat = self.centre_lonlat()
        return {"type": "Feature", "geometry": mapping(self.lonlat_polygon()),
                "properties": {"id": self.id, "epsg": self.epsg, "xmin": self.bounds[0], "ymin": self.bounds[1],
                               "xmax": self.bounds[2], "ymax": self.bounds[3], "res": self.res, "km2": self.km2,
                               "lon": round(lon, 6), "lat": round(lat, 6),
                               "sites": [s.name for s in self.sites],
                               "site_coords": [[s.lat, s.lon] for s in self.sites],
                               "rivers": sorted({s.river for s in self.sites if s.river})}}


def utm_epsg(lon: float, lat: float) -> int:
    """The WGS 84 / UTM zone EPSG code of a point (32601..32660 north, 32701..32760 south)."""
    zone = min(60, int(math.floor((lon + 180.0) / 6.0)) + 1)
    return (32600 if lat >= 0 else 32700) + zone


def transform(fn, geom):
    """``geom`` with its coordinates passed through ``fn(xs, ys) -> (xs, ys)``."""
    return shapely.transform(geom, lambda xy: np.column_stack(fn(xy[:, 0], xy[:, 1])))


def _transformer(src, dst):
    from pyproj import Transformer

    return Transformer.from_crs(src, dst, always_xy=True).transform


def _to_wgs84(epsg: int):
    return _transformer(f"EPSG:{epsg}", "EPSG:4326")


def _to_utm(epsg: int):
    return _transformer("EPSG:4326", f"EPSG:{epsg}")


# ---- reading sites ----------------------------------------------------------------------------
def _column(header: list[str], names: tuple[str, ...]) -> str | None:
    low = {h.strip().lower(): h for h in header}
    return next((low[n] for n in names if n in low), None)


def _checked(path, what: str, lat: float, lon: float) -> tuple[float, float]:
    if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
        raise SandwatchError.about(path, f"{what} has lat {lat}, lon {lon}, not a point on Earth",
                                   "give latitude in -90..90 and longitude in -180..180 (decimal degrees)")
    if abs(lat) > 84:
        raise SandwatchError.about(path, f"{what} lies at latitude {lat}, outside the UTM zones (84S..84N)",
                                   "remove the site: Sentinel-2 study areas are planned in UTM")
    return lat, lon


def _read_csv(path: Path) -> list[Site]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        header = [h for h in (reader.fieldnames or []) if h is not None]
    lat_c, lon_c = _column(header, _LAT), _column(header, _LON)
    if lat_c is None or lon_c is None:
        raise SandwatchError.about(path, f"has no lat/lon columns (columns: {', '.join(header) or 'none'})",
                                   "add columns named lat and lon (decimal degrees, EPSG:4326)")
    name_c, river_c, notes_c = _column(header, ("name", "site", "id")), _column(header, ("river",)), \
        _column(header, ("notes", "note"))
    sites = []
    for i, row in enumerate(rows, start=2):
        try:
            lat, lon = float(row[lat_c]), float(row[lon_c])
        except (TypeError, ValueError):
            raise SandwatchError.about(path, f"line {i}: lat {row[lat_c]!r}, lon {row[lon_c]!r} are not numbers",
                                       "write decimal degrees, e.g. 20.4431, 85.8512") from None
        lat, lon = _checked(path, f"line {i}", lat, lon)
        name = (row.get(name_c) or "").strip() if name_c else ""
        sites.append(Site(name or f"site{len(sites) + 1:03d}", lat, lon,
                          (row.get(river_c) or "").strip() if river_c else "",
                          (row.get(notes_c) or "").strip() if notes_c else ""))
    return sites


def _read_points(path: Path) -> list[Site]:
    from sandwatch.vectors import read_vector

    gdf = read_vector(path, "sites file")
    if gdf.crs is None:
        raise SandwatchError.about(path, "has coordinates that are not longitude/latitude",
                                   "write the points in EPSG:4326 (or declare the file's CRS)")
    gdf = gdf.to_crs("EPSG:4326")
    sites = []
    cols = {c.lower(): c for c in gdf.columns}
    for i, row in enumerate(gdf.itertuples(index=False)):
        geom = row.geometry
        if geom is None or geom.geom_type != "Point":
            raise SandwatchError.about(path, f"feature {i} is a {getattr(geom, 'geom_type', 'missing geometry')}, "
                                       "not a point", "give one point per site")
        lat, lon = _checked(path, f"feature {i}", geom.y, geom.x)

        def prop(name, row=row):
            value = getattr(row, cols[name]) if name in cols else None
            return "" if value is None or value != value else str(value).strip()

        sites.append(Site(prop("name") or prop("site") or f"site{i + 1:03d}", lat, lon, prop("river"), prop("notes")))
    return sites


def read_sites(path: str | os.PathLike) -> list[Site]:
    """Sites from a CSV (lat, lon, optional name, river, notes) or a point vector file."""
    path = Path(path)
    if not path.is_file():
        raise SandwatchError.about(path, "no such sites file", "check the path")
    sites = _read_csv(path) if path.suffix.lower() in (".csv", ".txt") else _read_points(path)
    if not sites:
        raise SandwatchError.about(path, "lists no sites", "add one row (lat, lon) per mining site")
    names = [s.name for s in sites]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SandwatchError.about(path, f"names site(s) {', '.join(dup[:5])} more than once",
                                   "give every site its own name")
    return sites


# ---- planning --------------------------------------------------------------------------------------
def _snap(bounds, res: float) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = bounds
    return (math.floor(round(x0 / res, 6)) * res, math.floor(round(y0 / res, 6)) * res,
            math.ceil(round(x1 / res, 6)) * res, math.ceil(round(y1 / res, 6)) * res)


class _Rivers:
    """River lines (polygons: their banks) in each UTM zone asked for, reprojected once per zone,
    and each site's bounds computed once per zone (the merge loop asks again and again)."""

    def __init__(self, rivers, half: float, along_m: float | None):
        self.rivers, self.half, self.along_m = rivers, half, along_m
        self._parts: dict[int, list] = {}
        self._bounds: dict[tuple[str, float, float, int], tuple[float, float, float, float]] = {}

    def parts(self, epsg: int) -> list:
        if epsg not in self._parts:
            out = []
            for geom in self.rivers.to_crs(f"EPSG:{epsg}").geometry:
                if geom is None or geom.is_empty:
                    continue
                if geom.geom_type in ("Polygon", "MultiPolygon"):
                    geom = geom.boundary           # a river polygon: follow its banks
                out += [part for part in getattr(geom, "geoms", [geom]) if part.length > 0]
            self._parts[epsg] = out
        return self._parts[epsg]

    def stretch(self, site: Site, epsg: int):
        """Bounds of the river stretch of ``along_m`` centred on the river point nearest the site
        (None when no river passes within ``half`` of it)."""
        from shapely.geometry import Point

        pt = Point(*_to_utm(epsg)(site.lon, site.lat))
        best = None
        for part in self.parts(epsg):
            d = part.distance(pt)
            if d <= self.half and (best is None or d < best[0]):
                best = (d, part)
        if best is None:
            return None
        line = best[1]
        at = line.project(pt)
        return substring(line, max(0.0, at - self.along_m / 2), min(line.length, at + self.along_m / 2)).bounds

    def site_bounds(self, site: Site, epsg: int) -> tuple[float, float, float, float]:
        key = (site.name, site.lat, site.lon, epsg)
        if key not in self._bounds:
            x, y = _to_utm(epsg)(site.lon, site.lat)
            half = self.half
            b = (x - half, y - half, x + half, y + half)
            if self.rivers is not None and self.along_m:
                stretch = self.stretch(site, epsg)
                if stretch is not None:
                    b = (min(b[0], stretch[0] - half), min(b[1], stretch[1] - half),
                         max(b[2], stretch[2] + half), max(b[3], stretch[3] + half))
            self._bounds[key] = b
        return self._bounds[key]


def _area_id(sites: list[Site]) -> str:
    key = json.dumps(sorted((round(s.lat, 6), round(s.lon, 6)) for s in sites))
    return "area-" + hashlib.sha1(key.encode()).hexdigest()[:8]


def _group_area(group: list[Site], res, rivers: _Rivers) -> Area:
    lon = sum(s.lon for s in group) / len(group)
    lat = sum(s.lat for s in group) / len(group)
    epsg = utm_epsg(lon, lat)
    parts = [rivers.site_bounds(s, epsg) for s in group]
    bounds = (min(p[0] for p in parts), min(p[1] for p in parts), max(p[2] for p in parts), max(p[3] for p in parts))
    return Area(_area_id(group), epsg, _snap(bounds, res), list(group), res)


def plan_areas(sites: list[Site], half_size: float = DEFAULT_HALF_SIZE_M, res: float = DEFAULT_RES_M,
               rivers=None, along_river_km: float | None = None) -> list[Area]:
    """Non-overlapping study areas for ``sites`` (see the module docstring). ``rivers``: a
    GeoDataFrame of river lines or polygons (any CRS)."""
    if half_size <= 0 or res <= 0:
        raise ValueError("half_size and res must be positive")
    along_m = along_river_km * 1000.0 if along_river_km else None
    groups = [[s] for s in sites]
    index = _Rivers(rivers, half_size, along_m)
    while True:
        areas = [_group_area(g, res, index) for g in groups]
        shapes = [a.lonlat_polygon() for a in areas]
        merged = False
        for i in range(len(groups)):
            for j in range(i + 1, len(groups)):
                if _overlap(areas[i], areas[j], shapes[i], shapes[j]):
                    groups[i] = groups[i] + groups[j]
                    del groups[j]
                    merged = True
                    break
            if merged:
                break
        if not merged:
            return areas


def _overlap(a: Area, b: Area, sa, sb) -> bool:
    if a.epsg == b.epsg:
        return box(*a.bounds).intersection(box(*b.bounds)).area > 0
    if not sa.intersects(sb):
        return False   # in two zones: compare in a's zone; edges that only touch do not count
    other = transform(_to_utm(a.epsg), sb)
    return box(*a.bounds).intersection(other).area > 1.0


# ---- the areas file ---------------------------------------------------------------------------------
def write_areas(areas: list[Area], path: str | os.PathLike) -> Path:
    from sandwatch.vectors import write_feature_collection

    return write_feature_collection(path, [a.to_feature() for a in areas])


def read_areas(path: str | os.PathLike) -> list[Area]:
    """The areas written by :func:`write_areas` (``sandwatch sites plan``)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SandwatchError.about(path, "no such areas file", "make one with `sandwatch sites plan`") from None
    except ValueError as err:
        raise SandwatchError.about(path, f"is not valid JSON ({err})", "make it with `sandwatch sites plan`") from None
    feats = data.get("features") if isinstance(data, dict) else None
    if not feats:
        raise SandwatchError.about(path, "holds no areas", "make it with `sandwatch sites plan SITES -o AREAS.geojson`")
    areas = []
    for i, f in enumerate(feats):
        p = f.get("properties") or {}
        try:
            sites = [Site(n, float(c[0]), float(c[1])) for n, c in zip(p["sites"], p["site_coords"])]
            areas.append(Area(str(p["id"]), int(p["epsg"]), (float(p["xmin"]), float(p["ymin"]), float(p["xmax"]),
                              float(p["ymax"])), sites, float(p.get("res", DEFAULT_RES_M))))
        except (KeyError, TypeError, ValueError):
            if f.get("geometry") and "id" in p:      # a hand-drawn rectangle: plan it from its shape
                geom = shape(f["geometry"])
                c = geom.centroid
                epsg = utm_epsg(c.x, c.y)
                b = transform(_to_utm(epsg), geom).bounds
                areas.append(Area(str(p["id"]), epsg, _snap(b, DEFAULT_RES_M), [Site(str(p["id"]), c.y, c.x)]))
                continue
            raise SandwatchError.about(path, f"feature {i} lacks the area properties (id, epsg, xmin..ymax, sites)",
                                       "make the file with `sandwatch sites plan`, or give each polygon an id") from None
    ids = [a.id for a in areas]
    if len(set(ids)) != len(ids):
        raise SandwatchError.about(path, "repeats an area id", "give every area its own id")
    return areas


__all__ = ["Site", "Area", "read_sites", "plan_areas", "write_areas", "read_areas", "utm_epsg",
           "DEFAULT_HALF_SIZE_M", "DEFAULT_RES_M"]
