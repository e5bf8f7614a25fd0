"""Evaluation: exact pooled metrics in bounded memory, per image / cluster / split, and a report.

    from sandwatch.evaluate import evaluate_predictions, write_report, EvalConfig, PRAccumulator
    result = evaluate_predictions("manifest.yaml", "maps/", split="val")   # or {obs_id: prob.tif}
    metrics = write_report([result], "report/")     # metrics.json, report.html, PNGs, CSVs

See :mod:`sandwatch.evaluate.metrics` (the accumulator), :mod:`sandwatch.evaluate.core` (pixels
that count: border crop, AOI, low-confidence labels) and :mod:`sandwatch.evaluate.report`.
"""

from sandwatch.evaluate.core import (
    SCOPES,
    EvalConfig,
    ImageResult,
    ModelResult,
    ProbabilityEncoding,
    border_mask,
    evaluate_predictions,
    evaluate_raster,
    find_predictions,
    predict_split,
)
from sandwatch.evaluate.metrics import PRAccumulator, PRMetrics, levels_to_probability
from sandwatch.evaluate.overlays import plot_overlay
from sandwatch.evaluate.people import area_rows, summary
from sandwatch.evaluate.report import plot_pr_curves, write_report

__all__ = [
    "SCOPES", "EvalConfig", "ImageResult", "ModelResult", "PRAccumulator", "PRMetrics",
    "ProbabilityEncoding", "border_mask", "evaluate_predictions", "evaluate_raster", "find_predictions",
    "levels_to_probability", "plot_overlay", "area_rows", "summary", "plot_pr_curves", "predict_split", "write_report",
]
