"""Vector layers of the map as GeoJSON in EPSG:4326: a date's polygons and a site's AOI.

The AOI is, in this order: the one the monitoring history recorded for the site (WKT in the
site's grid CRS), the manifest's AOI file, or the manifest's rivers buffered by its
``aoi_buffer_m`` on the first scene's grid (``sandwatch.aoi.aoi_from_rivers``, the rule every
stage uses). Computed once per site.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from shapely import wkt as shapely_wkt
from shapely.geometry import mapping

from sandwatch.errors import SandwatchError
from sandwatch.vectors import to_wgs84

EMPTY = {"type": "FeatureCollection", "features": []}


class Layers:
    def __init__(self, project):
        self.project = project
        self._aoi: dict[str, dict] = {}
        self._lock = threading.Lock()

    def vector_text(self, path: Path) -> str:
        """A registered GeoJSON, parsed and written again (what is sent is always JSON)."""
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise SandwatchError.about(path.name, f"cannot be read as GeoJSON ({type(err).__name__})",
                                       "re-run the command that wrote it") from None
        return json.dumps(data)

    def aoi(self, site) -> dict:
        with self._lock:
            hit = self._aoi.get(site.name)
        if hit is None:
            hit = self._compute(site)
            with self._lock:
                self._aoi[site.name] = hit
        return hit

    def _compute(self, site) -> dict:
        geom, crs = None, None
        if site.aoi_wkt and site.crs:
            geom, crs = shapely_wkt.loads(site.aoi_wkt), site.crs
        elif site.aoi_file is not None or site.rivers is not None:
            scene = next((self.project.file(e.scene) for e in site.dates if e.scene), None)
            if scene is None:
                return EMPTY
            from sandwatch.aoi import aoi_from_rivers
            from sandwatch.aoi.core import aoi_from_file
            from sandwatch.vectors import grid_like

            grid = grid_like(scene)
            geom = aoi_from_file(site.aoi_file, grid) if site.aoi_file is not None else \
                aoi_from_rivers(site.rivers, grid, site.buffer_m)
            crs = grid.crs
        if geom is None or geom.is_empty:
            return EMPTY
        return {"type": "FeatureCollection", "features": [
            {"type": "Feature", "geometry": mapping(to_wgs84(geom, crs)), "properties": {"site": site.name}}]}
