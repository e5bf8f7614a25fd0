"""Prediction: sliding windows with discarded edges, streaming stitching, COG and polygons.

::

    from sandwatch.predict import predict_scene
    result = predict_scene("run/checkpoints/best.pt", "scene.tif", "maps/", edge=30, aoi="auto")
    result.paths["probability"]   # maps/scene.prob.tif (COG)

See :func:`predict_scene` for the outputs, :func:`tiled_inference` for the stitching and
:func:`window_grid` for the window arithmetic; ``tta=True`` averages over the 8
rotations/flips (:mod:`sandwatch.predict.tta`); a killed scene resumes from its last finished
row block (:mod:`sandwatch.predict.resume`) and one run at a time predicts a scene into a
folder (:mod:`sandwatch.predict.lock`).
"""

from sandwatch.predict.core import PredictionResult, aoi_filter, predict_scene
from sandwatch.predict.predictor import Predictor, TorchForward, as_predictor, scene_normalized, with_tta
from sandwatch.predict.config import PredictConfig, predict_config
from sandwatch.predict.distributed import band_regions, manifest_scenes, predict_scenes, submit_scene_bands
from sandwatch.predict.naming import OUTPUTS, output_paths, prediction_names, scene_name, unique_names
from sandwatch.predict.lock import RunLock, RunLockWarning
from sandwatch.predict.polygons import polygonize, write_polygons
from sandwatch.predict.tiling import select_windows, tiled_inference
from sandwatch.predict.tta import D4, d4_apply, d4_invert, tta_numpy
from sandwatch.predict.windows import (
    blend_weights, check_window_edge, default_margin, reflect_indices, reflect_read, taper_1d, window_grid,
    window_rows,
)
from sandwatch.predict.writer import (
    StreamingCOGWriter, decode_probability, encode_mask, encode_probability, validate_cog, write_cog,
)

__all__ = [
    "D4", "d4_apply", "d4_invert", "tta_numpy", "with_tta",
    "RunLock", "RunLockWarning",
    "OUTPUTS", "PredictConfig", "PredictionResult", "predict_config", "Predictor", "StreamingCOGWriter", "TorchForward", "aoi_filter", "as_predictor",
    "band_regions", "manifest_scenes", "submit_scene_bands",
    "blend_weights", "check_window_edge", "decode_probability", "default_margin", "encode_mask",
    "encode_probability", "output_paths", "polygonize", "predict_scene", "predict_scenes", "scene_normalized", "reflect_indices",
    "prediction_names", "reflect_read", "scene_name", "select_windows", "taper_1d", "tiled_inference", "unique_names",
    "validate_cog", "window_grid", "window_rows", "write_cog", "write_polygons",
]
