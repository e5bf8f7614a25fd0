"""The river area of interest: river vectors or the scene's water index -> AOI on a scene's grid.

    from sandwatch.aoi import aoi_from_rivers, aoi_from_water, aoi_for_observation, rasterize_aoi
    geom = aoi_from_rivers("rivers.geojson", scene.grid, buffer_m=1000)   # grid CRS, clipped
    geom = aoi_from_water(scene, buffer_m=1000)     # clouds masked, MNDWI > Otsu threshold, NDWI > 0
    mask = rasterize_aoi(geom, scene.grid, window)                       # bool, pixel-centre rule
"""

from sandwatch.aoi.core import (
    aoi_area_m2,
    aoi_for_observation,
    aoi_from_file,
    aoi_from_rivers,
    buffer_on_grid,
    rasterize_aoi,
    require_aoi,
    write_aoi,
)
from sandwatch.aoi.resolve import AoiFile, aoi_choice, resolve_aoi
from sandwatch.aoi.water import (
    WaterOptions,
    WaterReport,
    aoi_from_water,
    clean_water_mask,
    otsu_threshold,
    vectorize_mask,
    water_index,
    water_mask_from_scene,
)

__all__ = [
    "WaterOptions", "WaterReport", "otsu_threshold", "aoi_area_m2", "aoi_for_observation", "aoi_from_file", "aoi_from_rivers", "aoi_from_water",
    "buffer_on_grid", "clean_water_mask", "rasterize_aoi", "require_aoi", "resolve_aoi", "AoiFile", "aoi_choice", "vectorize_mask", "water_index",
    "water_mask_from_scene", "write_aoi",
]
