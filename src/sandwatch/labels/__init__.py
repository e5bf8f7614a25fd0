"""Ground truth: mining polygons in, a 0/1 mask and loss weights out, on a scene's grid.

    from sandwatch.labels import read_polygons, rasterize_labels, ConfidenceWeights
    gdf = read_polygons("annotations.geojson")          # column "confidence" in [0, 1]
    mask, weight = rasterize_labels(gdf, scene.grid)     # pixel centre inside a polygon = mine

See :mod:`sandwatch.labels.rasterize` for the pixel rule and the confidence weights.
"""

from sandwatch.labels.rasterize import (
    HIGH_CONFIDENCE,
    LOW_CONFIDENCE,
    ConfidenceWeights,
    iou,
    overlaps_grid,
    polygons_on_grid,
    rasterize_labels,
    read_polygons,
    write_label_rasters,
)
from sandwatch.vectors import AssumedCRSWarning, EmptyVectorWarning, grid_like, read_vector

__all__ = [
    "HIGH_CONFIDENCE", "LOW_CONFIDENCE", "AssumedCRSWarning", "ConfidenceWeights", "EmptyVectorWarning", "grid_like",
    "iou",
    "overlaps_grid", "polygons_on_grid", "rasterize_labels", "read_polygons", "read_vector",
    "write_label_rasters",
]
