"""Evaluation of probability maps against the labels of a manifest split, block by block.

For each observation of the split: its probability raster (``predict``'s COG), the labels
rasterised on the raster's grid (:func:`sandwatch.labels.rasterize_labels`), the AOI
(:func:`sandwatch.aoi.aoi_for_observation`) and the valid mask (the raster's nodata). The
raster is read in blocks (``EvalConfig.block`` pixels square), so memory stays at one block
plus the metric tables whatever the scene size.

Pixels that count:

* valid pixels of the probability raster (nodata never counts);
* outside a border of ``border`` pixels of the whole image (default 30, as published: the
  outermost pixels of a stitched prediction have the least context);
* low-confidence labels (pixels whose label weight is below 1, i.e. inside ``Low`` polygons):
  ``low_confidence="count"`` (default: they count as mine, like every published figure),
  ``"exclude"`` (they do not count at all) or ``"weight"`` (sample weight = label weight);
* two scopes: ``"image"`` (the whole image) and ``"aoi"`` (only inside the river AOI).

Metrics are kept per image, merged per geographic cluster and pooled over the split (pooled
average precision is the published headline figure).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import rasterio
from tqdm import tqdm

from sandwatch.errors import SandwatchError
from sandwatch.evaluate.metrics import PRAccumulator
from sandwatch.grid import Grid, Window
from sandwatch.predict.naming import find_outputs
from sandwatch.published import BORDER_PX, EDGE_PX

SCOPES = ("image", "aoi")
LowConfidence = Literal["count", "exclude", "weight"]


@dataclass
class EvalConfig:
    """How pixels are counted. Defaults follow the published evaluation."""

    border: int = BORDER_PX                # pixels dropped at each edge of the whole image
    low_confidence: LowConfidence = "count"  # "count" | "exclude" | "weight"
    threshold: float = 0.5                 # the fixed decision threshold
    block: int = 1024                      # block size (pixels) for reading
    all_touched: bool = True               # label rasterisation rule (as sandwatch.labels: all touched)
    progress: bool = True

    def __post_init__(self):
        if self.border < 0:
            raise SandwatchError.about("--border", f"must be >= 0, got {self.border}", "pass 0 or a positive number")
        if self.low_confidence not in ("count", "exclude", "weight"):
            raise SandwatchError.about("--low-confidence", f"unknown mode {self.low_confidence!r}",
                                       "use count, exclude or weight")
        if not 0.0 <= self.threshold <= 1.0:
            raise SandwatchError.about("--threshold", f"must be within 0..1, got {self.threshold}", "pass e.g. 0.5")
        if self.block < 16:
            raise ValueError("block must be >= 16")

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("progress")
        return d


# ---- reading probability rasters ------------------------------------------------------------
@dataclass(frozen=True)
class ProbabilityEncoding:
    """How stored values map to probabilities: ``p = value * scale + offset`` for integers."""

    dtype: str
    scale: float = 1.0
    offset: float = 0.0
    nodata: float | None = None

    @classmethod
    def of(cls, ds) -> "ProbabilityEncoding":
        dtype = ds.dtypes[0]
        scale = float(ds.scales[0]) if ds.scales else 1.0
        offset = float(ds.offsets[0]) if ds.offsets else 0.0
        if np.issubdtype(np.dtype(dtype), np.integer) and scale == 1.0 and offset == 0.0:
            # no GDAL scale/offset: 0..255 (or 0..65535) over [0, 1]
            scale = 1.0 / float(np.iinfo(np.dtype(dtype)).max)
        return cls(dtype, scale, offset, ds.nodata)

    def probability(self, values: np.ndarray) -> np.ndarray:
        from sandwatch.evaluate.metrics import levels_to_probability

        if np.issubdtype(values.dtype, np.integer):
            return levels_to_probability(values, self.scale, self.offset).astype(np.float32)
        return values.astype(np.float32, copy=False)


def read_block(ds, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """Stored values and a valid mask (bool) of one window of band 1."""
    values = ds.read(1, window=window.to_rasterio())
    valid = ds.read_masks(1, window=window.to_rasterio()) > 0
    if np.issubdtype(values.dtype, np.floating):
        valid &= np.isfinite(values)
    return values, valid


def blocks(grid: Grid, block: int):
    """Windows of at most ``block`` x ``block`` pixels tiling the grid, row by row."""
    for r in range(0, grid.height, block):
        for c in range(0, grid.width, block):
            yield Window(r, c, min(block, grid.height - r), min(block, grid.width - c))


def border_mask(grid: Grid, window: Window, border: int) -> np.ndarray:
    """True for pixels of ``window`` within ``border`` pixels of the edge of the whole grid."""
    rows = np.arange(window.row, window.row_stop)
    cols = np.arange(window.col, window.col_stop)
    r_in = (rows >= border) & (rows < grid.height - border)
    c_in = (cols >= border) & (cols < grid.width - border)
    return ~(r_in[:, None] & c_in[None, :])


LabelsFn = Callable[[Grid, Window], tuple[np.ndarray, np.ndarray]]  # -> (mask uint8, weight float32)
AoiFn = Callable[[Grid, Window], np.ndarray]                         # -> bool


@dataclass
class ImageResult:
    """The accumulators of one probability raster, per scope, plus pixel bookkeeping."""

    accumulators: dict[str, PRAccumulator]
    grid: Grid
    counts: dict[str, int] = field(default_factory=dict)


def evaluate_raster(prob_path: str | os.PathLike, labels_fn: LabelsFn, aoi_fn: AoiFn | None,
                    config: EvalConfig = EvalConfig(), *, desc: str | None = None) -> ImageResult:
    """Accumulate one probability raster against its labels and AOI, block by block.

    ``labels_fn(grid, window)`` gives ``(mask, weight)`` for a window (as
    :func:`sandwatch.labels.rasterize_labels`); ``aoi_fn(grid, window)`` a bool AOI mask (None:
    no AOI scope). Returns accumulators for the scopes ``"image"`` and (with an AOI) ``"aoi"``.
    """
    prob_path = Path(prob_path)
    try:
        ds = rasterio.open(prob_path)
    except rasterio.errors.RasterioIOError:
        raise SandwatchError.about(prob_path, "cannot be opened as a probability raster",
                                   "pass a GeoTIFF written by `sandwatch predict`") from None
    with ds:
        if ds.count < 1:
            raise SandwatchError.about(prob_path, "has no band", "pass a probability raster")
        enc = ProbabilityEncoding.of(ds)
        integer = np.issubdtype(np.dtype(enc.dtype), np.integer)
        grid = Grid.from_dataset(ds)
        accs = {s: PRAccumulator() for s in (SCOPES if aoi_fn is not None else SCOPES[:1])}
        counts = dict(pixels=0, valid=0, border=0, low_confidence=0, aoi=0, positive=0, positive_in_aoi=0)
        wins = list(blocks(grid, config.block))
        for win in tqdm(wins, desc=desc or prob_path.name, unit="block", disable=not config.progress or len(wins) < 4,
                        leave=False):
            values, valid = read_block(ds, win)
            if not integer and valid.any():
                v = values[valid]
                if v.min() < 0 or v.max() > 1:
                    raise SandwatchError.about(prob_path, f"holds values outside 0..1 ({v.min():.3g}..{v.max():.3g})",
                                               "pass probabilities, not logits or a class mask")
            mask, weight = labels_fn(grid, win)
            mine = mask.astype(bool)
            exclude = ~valid
            edge = border_mask(grid, win, config.border) if config.border else np.zeros(win.shape, bool)
            exclude |= edge
            low = weight < 1.0
            weights = None
            if config.low_confidence == "exclude":
                exclude |= low
            elif config.low_confidence == "weight":
                weights = weight
            counts["pixels"] += win.size
            counts["valid"] += int(valid.sum())
            counts["border"] += int((edge & valid).sum())
            counts["low_confidence"] += int((low & valid & ~edge).sum())
            counts["positive"] += int((mine & ~exclude).sum())
            kw = dict(scale=enc.scale, offset=enc.offset) if integer else {}
            accs["image"].update(values, mine, weights=weights, exclude=exclude, **kw)
            if aoi_fn is not None:
                inside = aoi_fn(grid, win)
                counts["aoi"] += int((inside & ~exclude).sum())
                counts["positive_in_aoi"] += int((inside & mine & ~exclude).sum())
                accs["aoi"].update(values, mine, weights=weights, exclude=exclude | ~inside, **kw)
    return ImageResult(accs, grid, counts)


# ---- observations and prediction files ------------------------------------------------------
def find_predictions(pred_dir: str | os.PathLike, observations) -> dict[str, Path]:
    """Map observations (or bare ids) to probability rasters in ``pred_dir``, by the naming
    rule of ``predict`` (:func:`sandwatch.predict.naming.find_outputs`)."""
    return find_outputs(pred_dir, observations, "probability")


def labels_for(obs, config: EvalConfig) -> Callable[[Grid], LabelsFn]:
    """A factory: given the raster's grid, a window function for the observation's labels."""
    from sandwatch.labels import ConfidenceWeights, polygons_on_grid, rasterize_labels

    def make(grid: Grid) -> LabelsFn:
        if not obs.annotations:
            def empty(grid: Grid, win: Window):
                return np.zeros(win.shape, np.uint8), np.ones(win.shape, np.float32)
            return empty
        gdf = polygons_on_grid(obs.annotations, grid)

        def fn(grid: Grid, win: Window):
            return rasterize_labels(gdf, grid, win, ConfidenceWeights(), all_touched=config.all_touched)
        return fn
    return make


def aoi_for(obs, buffer_m: float) -> Callable[[Grid], AoiFn | None]:
    """A factory: the observation's AOI as a window function on the raster's grid.

    ``obs.aoi`` as is, else ``obs.rivers`` buffered by ``buffer_m``, else the scene's water
    index; when none of them is possible (e.g. a true-colour scene without rivers) the AOI
    scope is left out for that observation, with a warning (None).
    """
    from sandwatch.aoi import aoi_for_observation, rasterize_aoi

    def make(grid: Grid) -> AoiFn | None:
        if getattr(obs, "aoi", None) or getattr(obs, "rivers", None):
            geom = aoi_for_observation(obs, grid, buffer_m=buffer_m)
        else:
            scene = obs.open_scene()
            if not scene.grid.same_as(grid):
                warnings.warn(f"{obs.id}: no AOI or rivers and the prediction is not on the scene's grid; "
                              "the AOI scope is left out for it", stacklevel=2)
                return None
            try:
                geom = aoi_for_observation(obs, scene, buffer_m=buffer_m)  # the scene's water index
            except SandwatchError as err:
                warnings.warn(f"{obs.id}: the AOI scope is left out ({err})", stacklevel=2)
                return None

        def fn(grid: Grid, win: Window):
            return rasterize_aoi(geom, grid, win)
        return fn
    return make


@dataclass
class ModelResult:
    """Everything measured for one model (one predictions folder or checkpoint)."""

    name: str
    source: str
    parameters: int | None
    images: dict[str, ImageResult]            # observation id -> result
    observations: dict[str, object]           # observation id -> Observation
    predictions: dict[str, Path]
    config: EvalConfig
    #: what the probability rasters say about the model (their sandwatch_* tags): arch,
    #: checkpoint, parameters, window, threshold, tta, normalisation
    model: dict = field(default_factory=dict)

    def pooled(self, scope: str = "image") -> PRAccumulator:
        acc = PRAccumulator()
        for r in self.images.values():
            if scope in r.accumulators:
                acc.merge(r.accumulators[scope])
        return acc

    def clusters(self, scope: str = "image") -> dict[str, PRAccumulator]:
        out: dict[str, PRAccumulator] = {}
        for obs_id, r in self.images.items():
            c = self.observations[obs_id].cluster
            key = "none" if c is None else str(c)
            if scope in r.accumulators:
                out.setdefault(key, PRAccumulator()).merge(r.accumulators[scope])
        return dict(sorted(out.items()))

    def to_dict(self, max_curve_points: int = 512) -> dict:
        t = self.config.threshold
        scenes = []
        for obs_id, r in self.images.items():
            obs = self.observations[obs_id]
            scenes.append({
                "id": obs_id, "site": obs.site, "date": obs.date.isoformat(), "cluster": obs.cluster,
                "prediction": str(self.predictions[obs_id]), "grid": r.grid.to_dict(), "counts": r.counts,
                **{s: a.metrics(t).to_dict() for s, a in r.accumulators.items()},
            })
        scopes = [s for s in SCOPES if any(s in r.accumulators for r in self.images.values())]
        pooled = {s: self.pooled(s) for s in scopes}
        return {
            "name": self.name, "source": self.source, "parameters": self.parameters, "model": self.model,
            "pooled": {s: a.metrics(t).to_dict() for s, a in pooled.items()},
            "clusters": {s: {c: a.metrics(t).to_dict() for c, a in self.clusters(s).items()} for s in scopes},
            "scenes": scenes,
            "curves": {s: a.curve_points(max_curve_points) for s, a in pooled.items()},
        }


def evaluate_predictions(manifest, predictions: Mapping[str, str | os.PathLike] | str | os.PathLike, *,
                         split: str | None = "val", config: EvalConfig = EvalConfig(), name: str | None = None,
                         source: str | None = None, parameters: int | None = None) -> ModelResult:
    """Evaluate probability rasters of the observations of one split.

    ``manifest``: a :class:`~sandwatch.dataset.manifest.Manifest` or a path to one.
    ``predictions``: a mapping observation id -> probability raster, or a folder searched with
    :func:`find_predictions`. ``split``: ``"val"``, ``"train"`` or None for every observation.
    """
    from sandwatch.dataset.manifest import Manifest, load_manifest

    if not isinstance(manifest, Manifest):
        manifest = load_manifest(manifest)
    observations = manifest.observations if split is None else manifest.split_of(split)
    if not observations:
        raise SandwatchError.about(f"--split {split}", "no observation of the manifest is in this split",
                                   "run `sandwatch dataset split` first or choose another split")
    if isinstance(predictions, (str, os.PathLike)):
        src = str(predictions)
        predictions = find_predictions(predictions, observations)
    else:
        src = source or "mapping"
        missing = [o.id for o in observations if o.id not in predictions]
        if missing:
            raise SandwatchError.about(src, f"has no prediction for {', '.join(missing[:3])}",
                                       "predict every observation of the split")
        predictions = {o.id: Path(predictions[o.id]) for o in observations}
    model = model_tags(next(iter(predictions.values())))
    if parameters is None and str(model.get("parameters", "")).isdigit():
        parameters = int(model["parameters"])
    if name is None and model.get("checkpoint"):
        ckpt = Path(model["checkpoint"])
        name = f"{model.get('model', 'model')} ({'/'.join(ckpt.parts[-3:])})"
    images: dict[str, ImageResult] = {}
    for obs in tqdm(observations, desc=f"evaluate {name or ''}".strip(), unit="scene", disable=not config.progress):
        path = predictions[obs.id]
        with rasterio.open(path) as ds:
            grid = Grid.from_dataset(ds)
        labels_fn = labels_for(obs, config)(grid)
        aoi_fn = aoi_for(obs, manifest.aoi_buffer_m)(grid)
        images[obs.id] = evaluate_raster(path, labels_fn, aoi_fn, config, desc=obs.id)
    return ModelResult(name=name or Path(src).name, source=source or src, parameters=parameters, images=images,
                       observations={o.id: o for o in observations}, predictions=dict(predictions), config=config,
                       model=model)


def model_tags(prob_path) -> dict[str, str]:
    """The ``sandwatch_*`` tags ``predict`` writes into a probability raster, without the prefix
    (model, checkpoint, parameters, window, threshold, tta, normalization, ...); scene-specific
    ones (scene, date, valid pixels, status) left out."""
    with rasterio.open(prob_path) as ds:
        tags = ds.tags()
    scene_only = ("scene", "date", "valid_fraction", "valid_pixels", "status")
    return {k[len("sandwatch_"):]: v for k, v in tags.items()
            if k.startswith("sandwatch_") and k[len("sandwatch_"):] not in scene_only}


def predict_split(checkpoint, manifest, out_dir: str | os.PathLike, *, split: str | None = "val",
                  edge: int = EDGE_PX, aoi=None, progress: bool = True, tta: bool = False,
                  **predict_options) -> tuple[dict[str, Path], int | None, str]:
    """Run :func:`sandwatch.predict.predict_scene` for each observation of the split.

    The maps are the checkpoint's calibrated probabilities (its temperature) and the masks are
    at its threshold, as ``sandwatch predict`` makes them. ``tta``: average each window over
    the 8 rotations/flips (8x the forward time).

    ``checkpoint``: a path, a :class:`~sandwatch.models.checkpoint.Checkpoint` or a
    ``sandwatch.predict.Predictor``. Maps go to ``out_dir/<observation id>.prob.tif`` (the
    observation id is passed as the output name; existing maps are kept, as predict does).
    ``aoi``: passed to predict (default None: the whole scene, so the "image" scope is complete).
    Returns (id -> probability raster, number of model parameters or None, model name).
    """
    from sandwatch.dataset.manifest import Manifest, load_manifest
    from sandwatch.models.checkpoint import Checkpoint

    try:
        from sandwatch.predict import as_predictor, predict_scene
    except ImportError:
        raise SandwatchError.about("--checkpoint", "the predict stage is not installed in this version",
                                   "run `sandwatch predict` yourself and pass --predictions DIR") from None
    if not isinstance(manifest, Manifest):
        manifest = load_manifest(manifest)
    n_params, arch = None, "model"
    if isinstance(checkpoint, (str, os.PathLike)):
        checkpoint = Checkpoint.load(checkpoint)
    if isinstance(checkpoint, Checkpoint):
        n_params, arch = checkpoint.n_parameters, checkpoint.arch
    predictor = as_predictor(checkpoint)
    observations = manifest.observations if split is None else manifest.split_of(split)
    out_dir = Path(out_dir)
    found: dict[str, Path] = {}
    for obs in tqdm(observations, desc="predict", unit="scene", disable=not progress):
        scene = obs.open_scene()
        extra = {}
        if predictor.per_scene_k and aoi is None and (obs.aoi or obs.rivers):
            # whole scenes are predicted, but a per-scene model measures a scene in its river AOI
            from sandwatch.aoi import aoi_for_observation

            extra["stats_aoi"] = aoi_for_observation(obs, scene, buffer_m=manifest.aoi_buffer_m)
        result = predict_scene(predictor, scene, out_dir, edge=edge, aoi=aoi, name=obs.id, progress=progress,
                               tta=tta, **extra, **predict_options)
        found[obs.id] = Path(result.paths["probability"])
    return found, n_params, arch
