"""``predict_scene``: a checkpoint and a scene in, a probability COG, a mask COG and mining
polygons out. The arithmetic lives in :mod:`~sandwatch.predict.windows` and
:mod:`~sandwatch.predict.tiling`, the model in :mod:`~sandwatch.predict.predictor`; this
module is the thin I/O around them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sandwatch.aoi.resolve import resolve_aoi
from sandwatch.grid import Grid, Window
from sandwatch.imagery import as_scene
from sandwatch.predict.config import PredictConfig, predict_config
from sandwatch.predict.lock import RunLock, RunLockWarning, describe
from sandwatch.predict.memory import release_free_memory
from sandwatch.predict.naming import POLYGON_OUTPUTS, lock_path, output_paths, scene_name
from sandwatch.predict.polygons import polygonize, write_polygons
from sandwatch.predict.predictor import Predictor, TorchForward, as_predictor, scene_normalized, with_tta
from sandwatch.predict.resume import (
    Progress, discard_progress, geometry_id, load_progress, normalization_id, progress_path,
    scene_id,
)
from sandwatch.predict.tiling import tiled_inference
from sandwatch.predict.windows import check_window_edge
from sandwatch.predict.writer import (
    MASK_NODATA, UINT8_SCALE, StreamingCOGWriter, encode_mask, encode_probability, probability_nodata,
    writing_together,
)

# ---- scenes and AOIs ------------------------------------------------------------------------------
def aoi_filter(geom, grid: Grid) -> Callable[[Window], bool] | None:
    """``include(keep)``: True when a window's interior touches ``geom`` (None: everything)."""
    if geom is None:
        return None
    import shapely
    from shapely.geometry import box

    shapely.prepare(geom)

    def include(keep: Window) -> bool:
        return bool(geom.intersects(box(*_window_bounds(grid, keep))))

    return include


def _window_bounds(grid: Grid, w: Window) -> tuple[float, float, float, float]:
    import rasterio.windows

    return tuple(rasterio.windows.bounds(w.to_rasterio(), grid.transform))


# ---- result ---------------------------------------------------------------------------------------
@dataclass
class PredictionResult:
    """Paths of the outputs (by key of :data:`OUTPUTS`) and figures of the run."""

    paths: dict[str, Path]
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def skipped(self) -> bool:
        return bool(self.stats.get("skipped"))


#: A killed run resumes from its last checkpoint: the first finished row block, the last, and
#: in between the first block finished at least this long after the previous checkpoint (each
#: costs two GeoTIFF closes and three fsyncs, ~10 ms: a fast model finishes many blocks a second).
CHECKPOINT_SECONDS = 1.0


def _remove_stale_partials(paths: dict[str, Path], keep: tuple[str, ...] = ()) -> None:
    """Temporary files left by a killed run of this scene (``.NAME.xxxxxxxx.partial.EXT``,
    stream files), except ``keep`` (the stream files a resumable progress file names).
    Called only by the run holding the scene's lock: no other run is writing them."""
    globs = [f".{p.stem}*.partial*" for p in paths.values()]
    globs.append(f".{progress_path(paths['probability']).stem}*.partial*")
    for pattern in globs:
        for stale in paths["probability"].parent.glob(pattern):
            if stale.name in keep:
                continue
            try:
                stale.unlink()
            except OSError:
                pass


def _warn(message: str) -> None:
    import warnings

    warnings.warn(message, RunLockWarning, stacklevel=2)


def resume_key(pred: "Predictor", scene, grid: Grid, geom, *, edge: int, threshold: float, blend: str, dtype: str,
               batch_size: int, tta: bool, region: Window | None = None) -> dict | None:
    """What a killed run's progress must match to be resumed (see :mod:`sandwatch.predict.resume`);
    None when the model has no fingerprint or its normalisation is not known (never resumed)."""
    norm = normalization_id(pred.normalize)
    if pred.fingerprint is None or norm is False:
        return None
    fwd = pred.forward
    precision = {"device": str(getattr(fwd, "device", "")), "bf16": bool(getattr(fwd, "bf16", False))}
    return {"model": pred.fingerprint, "name": pred.name, "bands": list(pred.bands), "window": int(pred.window),
            "normalization": norm, "threshold": float(threshold), "temperature": float(pred.temperature),
            "tta": bool(tta), "edge": int(edge), "blend": blend, "dtype": dtype, "batch_size": int(batch_size),
            "precision": precision, "scene": scene_id(scene),
            "grid": [grid.crs.to_wkt(), list(grid.transform)[:6], grid.width, grid.height],
            "aoi": geometry_id(geom), "region": None if region is None else list(region)}


# ---- the stage ------------------------------------------------------------------------------------
def predict_scene(checkpoint, scene, out_dir: str | os.PathLike, config: PredictConfig | None = None, *,
                  aoi=None, stats_aoi=None, name: str | None = None, **settings) -> PredictionResult:
    """Map mining probability on one scene with a checkpoint.

    How is :class:`~sandwatch.predict.config.PredictConfig` (``config``; its fields may also be
    given as keywords, which override it: ``predict_scene(ck, scene, out, edge=8, tta=True)``).

    Windows of the checkpoint's size slide over the scene with ``edge`` pixels discarded on
    each side (stride ``window - 2 * edge``); the scene's borders are mirrored for context.
    Rows of windows are predicted and written one after the other (memory does not grow with
    the scene). Outputs in ``out_dir``, named after the scene (see :mod:`~sandwatch.predict.naming`), each
    written atomically: ``NAME.prob.tif`` (COG, uint8 ``1 + 254 p`` with nodata 0, or float32
    with nodata NaN), ``NAME.mask.tif`` (COG, 1 mine / 0 not / 255 nodata at ``threshold``) and
    the polygons in every format of :data:`sandwatch.vectors.VECTOR_FORMATS` (GeoPackage and
    GeoParquet in the scene CRS, GeoJSON in EPSG:4326).
    Probabilities are those of the checkpoint's temperature, and ``threshold`` (None) is the
    checkpoint's, both fitted on validation data; both are recorded in the COG tags.

    ``tta``: test-time augmentation, every batch of windows predicted in the 8 rotations/flips
    of :data:`~sandwatch.predict.tta.D4` and the 8 probabilities averaged (8x the forward
    time; see :func:`with_tta`).

    Existing outputs are kept and the scene skipped unless ``overwrite``; when only the
    polygons are missing (a run killed while polygonising) they are made from the rasters.
    A run killed while predicting resumes from its last finished row block
    (:mod:`sandwatch.predict.resume`), with the pixels of an uninterrupted run, when it is
    run again with the same checkpoint, scene and settings (``overwrite`` or not).

    One run at a time per scene and ``out_dir``: the scene's lock ``OUT/.NAME.lock`` (owner's
    PID and host, :class:`~sandwatch.predict.lock.RunLock`) is held while it is predicted.
    Another run of the same scene into the same folder on this host is waited for (``wait``;
    a :class:`~sandwatch.predict.lock.RunLockWarning` says so), after which its outputs are
    there and the scene is skipped; ``wait=False``, or an owner on another host, is refused
    with one line. A lock whose process is dead is taken over. Other scenes share the folder.

    ``checkpoint``: a :class:`~sandwatch.models.checkpoint.Checkpoint`, its path, or a
    :class:`Predictor`. ``scene``: a Scene or anything :func:`sandwatch.imagery.open_scene`
    takes. ``aoi``: see :func:`resolve_aoi`; windows whose interior misses the AOI are not
    predicted and stay nodata. ``stats_aoi`` (same forms as ``aoi``; default: ``aoi``): where a
    model trained with per-scene normalisation measures the scene's statistics, e.g. the river
    AOI when the whole scene is predicted. ``gdal_cache_mb`` caps GDAL's block cache while predicting
    (GDAL's own default is 5 % of RAM, which alone would let memory grow with the scene);
    None leaves GDAL's setting alone.
    """
    cfg = predict_config(config, **settings)
    with gdal_cache(cfg.gdal_cache_mb):
        return _predict_scene(checkpoint, scene, out_dir, cfg, aoi=aoi, stats_aoi=stats_aoi, name=name)


def gdal_cache(mb: int | None):
    """GDAL's block cache capped at ``mb`` MB while predicting (None: GDAL's own setting)."""
    if mb is None:
        return contextlib.nullcontext()
    import rasterio

    return rasterio.Env(GDAL_CACHEMAX=int(mb) * 1024 * 1024)


def _predict_scene(checkpoint, scene, out_dir, cfg: PredictConfig, *, aoi, stats_aoi, name) -> PredictionResult:
    t_start = time.perf_counter()
    scene_obj = as_scene(scene)
    name = name or scene_name(scene_obj)
    paths = output_paths(out_dir, name)
    stats: dict[str, Any] = {"scene": str(getattr(scene_obj, "source", scene)), "name": name}

    def done() -> tuple[bool, bool]:
        return (paths["probability"].exists() and paths["mask"].exists(),
                all(paths[k].exists() for k in POLYGON_OUTPUTS))

    rasters_done, polys_done = done()
    if not cfg.overwrite and rasters_done and polys_done:
        stats["skipped"] = True
        return PredictionResult(paths, stats)
    lock = RunLock(lock_path(out_dir, name), f"predicting {name}", wait=cfg.wait, on_wait=_warn, on_stale=_warn,
                   fix="wait for that run to finish, or predict into another output folder",
                   target=paths["probability"])
    with lock:
        if lock.waited_for is not None:
            stats["waited_for"] = describe(lock.waited_for)
        # again: another run may have finished the scene between the check above and the lock
        rasters_done, polys_done = done()
        if rasters_done and polys_done and (not cfg.overwrite or lock.waited_for is not None):
            stats["skipped"] = True           # (after waiting: that run made them just now)
            return PredictionResult(paths, stats)
        return _predict_locked(checkpoint, scene_obj, paths, stats, t_start, cfg, rasters_done=rasters_done,
                               aoi=aoi, stats_aoi=stats_aoi, name=name)


def _predict_locked(checkpoint, scene_obj, paths, stats, t_start, cfg: PredictConfig, *, rasters_done, aoi,
                    stats_aoi, name) -> PredictionResult:
    grid: Grid = scene_obj.grid
    date = getattr(scene_obj, "date", None)
    edge, tta = cfg.edge, cfg.tta
    if not cfg.overwrite and rasters_done:
        discard_progress(progress_path(paths["probability"]))   # a run killed after its COGs
        _remove_stale_partials(paths)
    else:
        pred = as_predictor(checkpoint, device=cfg.device, bf16=cfg.bf16)
        thr = pred.threshold if cfg.threshold is None else float(cfg.threshold)
        check_window_edge(pred.window, edge)
        geom = resolve_aoi(aoi, scene_obj, buffer_m=cfg.aoi_buffer_m)
        if geom is not None:
            stats["aoi_fraction"] = _aoi_fraction(geom, grid)
        if pred.per_scene_k:
            pred = scene_normalized(pred, scene_obj, geom if stats_aoi is None else
                                    resolve_aoi(stats_aoi, scene_obj, buffer_m=cfg.aoi_buffer_m))
        key = resume_key(pred, scene_obj, grid, geom, edge=edge, threshold=thr, blend=cfg.blend, dtype=cfg.dtype,
                         batch_size=cfg.batch_size, tta=tta)
        if key is None:              # nothing to resume with: clear what killed runs left
            discard_progress(progress_path(paths["probability"]))
            _remove_stale_partials(paths)
        _predict_rasters(pred, scene_obj, grid, paths, edge=edge, include=aoi_filter(geom, grid), threshold=thr,
                         batch_size=cfg.batch_size, blend=cfg.blend, dtype=cfg.dtype, progress=cfg.progress,
                         stats=stats, date=date, strip_windows=cfg.strip_windows, tta=tta, resume=key)
        stats["threshold"] = thr
        stats["temperature"] = float(pred.temperature)
        stats["tta"] = bool(tta)
        fwd = pred.forward
        if isinstance(fwd, TorchForward):
            stats["forward_seconds"] = fwd.seconds
    gdf = polygonize(paths["mask"], paths["probability"], scene=name, date=date)
    write_polygons(gdf, paths)
    stats["polygons"] = int(len(gdf))
    stats["mine_area_m2"] = float(gdf["area_m2"].sum()) if len(gdf) else 0.0
    stats["seconds"] = time.perf_counter() - t_start
    stats["pixels"] = grid.width * grid.height
    return PredictionResult(paths, stats)


def _aoi_fraction(geom, grid: Grid) -> float:
    from shapely.geometry import box

    frame = box(*grid.bounds)
    return float(geom.intersection(frame).area / frame.area) if frame.area else 0.0


def _predict_rasters(pred: Predictor, scene, grid: Grid, paths: dict[str, Path], *, edge: int, include,
                     threshold: float, batch_size: int, blend: str, dtype: str, progress: bool, stats: dict,
                     date: dt.date | None, strip_windows: int, region: Window | None = None,
                     cog: bool = True, tta: bool = False, resume: dict | None = None) -> None:
    """Predict ``region`` (default: all) of the scene into ``paths["probability"]`` and
    ``paths["mask"]``: COGs of the whole grid, or (``cog=False``) tiled GeoTIFFs of the region.
    ``tta``: average each batch over D4 (:func:`with_tta`).

    ``resume``: the run's key (:func:`resume_key`): both stream files are put on disk after
    finished row blocks (the first, the last, and at most one a :data:`CHECKPOINT_SECONDS`
    in between) and ``.NAME.progress.json`` says how far they go; a progress file of a
    killed run with this key is continued from its last such block. None: no progress is kept
    (and any progress file of the scene is left alone). The caller holds the scene's lock."""
    bands = tuple(pred.bands)
    out_grid = grid if region is None else grid.window_grid(region)
    r0, c0 = (0, 0) if region is None else (region.row, region.col)

    normalize = pred.normalize
    model = with_tta(pred.forward) if tta else pred.forward

    def forward(batch: np.ndarray) -> np.ndarray:   # the model thread, between two batches
        release_free_memory(share=0.02)
        return model(batch)

    def read(w: Window):   # runs in tiled_inference's reading thread
        data, valid = scene.read(w, bands=bands)
        return (data if normalize is None else normalize(data)), valid

    tags = {"sandwatch_model": pred.name, "sandwatch_edge": edge, "sandwatch_blend": blend,
            "sandwatch_threshold": threshold, "sandwatch_temperature": float(pred.temperature),
            "sandwatch_tta": "d4" if tta else "none", "sandwatch_window": pred.window,
            "sandwatch_normalization": f"per scene, mean +- {pred.per_scene_k:g} std" if pred.per_scene_k else "fixed",
            "sandwatch_scene": str(getattr(scene, "source", "")), "sandwatch_date": date.isoformat() if date else "",
            "sandwatch_checkpoint": pred.source, "sandwatch_parameters": pred.parameters or ""}
    prob_kw = dict(scale=UINT8_SCALE, offset=-UINT8_SCALE) if dtype == "uint8" else {}
    from tqdm.auto import tqdm

    bar = None
    if progress:
        from sandwatch.predict.tiling import select_windows
        from sandwatch.predict.windows import default_margin

        m = default_margin(pred.window, edge) if blend == "cosine" else 0
        rows, _ = select_windows(grid.shape, pred.window, edge, region=region, margin=m, include=include)
        bar = tqdm(total=sum(len(r) for r in rows), unit="win", desc=f"predict {stats.get('name', '')}", leave=False)

    def advance(n: int) -> None:
        if bar.n == 0 and stats.get("resumed_windows"):
            bar.update(stats["resumed_windows"])      # done by the run this one resumes
        bar.update(n)
    state = _resume_state(resume, paths, out_grid, dtype)
    start_row = None
    if state is not None and state.rows:
        start_row = r0 + state.rows
        stats["resumed_rows"] = state.rows
    counters = state.counters if state is not None else {}
    streams = state.stream_paths() if state is not None else {}
    stats["mine_pixels"] = counters.get("mine_pixels", 0)   # counted by the writing thread
    stats["predicted_pixels"] = counters.get("predicted_pixels", 0)
    try:
        with writing_together(
                StreamingCOGWriter(paths["probability"], out_grid, dtype, probability_nodata(dtype),
                                   resampling="average", tags=tags, description="mining probability", cog=cog,
                                   stream=streams.get("probability"), valid_pixels=counters.get("valid_probability", 0),
                                   resumable=state is not None, **prob_kw),
                StreamingCOGWriter(paths["mask"], out_grid, "uint8", MASK_NODATA, resampling="nearest",
                                   tags=tags, description=f"mining (probability >= {threshold})", cog=cog,
                                   stream=streams.get("mask"), valid_pixels=counters.get("valid_mask", 0),
                                   resumable=state is not None)) as (pw, mw):

            saved = [0.0]

            def write(block: Window, prob: np.ndarray) -> None:
                pw.write(block, encode_probability(prob, dtype))
                mask = encode_mask(prob, threshold)
                mw.write(block, mask)
                stats["mine_pixels"] += int((mask == 1).sum())
                stats["predicted_pixels"] += int((mask != MASK_NODATA).sum())
                now = time.monotonic()
                if state is not None and (not saved[0] or now - saved[0] >= CHECKPOINT_SECONDS
                                          or block.row_stop >= out_grid.height):
                    saved[0] = now           # this block is on disk: a killed run resumes after it
                    pw.checkpoint()
                    mw.checkpoint()
                    state.rows = block.row_stop
                    state.streams = {"probability": pw.stream_path.name, "mask": mw.stream_path.name}
                    state.counters = {"mine_pixels": stats["mine_pixels"], "predicted_pixels": stats["predicted_pixels"],
                                      "valid_probability": pw.valid_pixels, "valid_mask": mw.valid_pixels}
                    state.save()

            # Finished blocks are encoded, compressed and written by one thread while the model
            # predicts the next rows; at most two blocks wait (bounded memory), in order.
            with ThreadPoolExecutor(1, thread_name_prefix="sandwatch-write") as pool:
                waiting: deque = deque()
                for block, prob in tiled_inference(forward, read, grid.shape, pred.window, edge, region=region,
                                                   blend=blend, batch_size=batch_size, include=include,
                                                   strip_windows=strip_windows, stats=stats,
                                                   progress=advance if bar is not None else None,
                                                   read_done=getattr(scene, "close_thread", None),
                                                   start_row=start_row):
                    waiting.append(pool.submit(write, block.shift(-r0, -c0), prob))
                    while len(waiting) > 2:
                        waiting.popleft().result()
                while waiting:
                    waiting.popleft().result()
    except BaseException as err:
        if state is not None and not isinstance(err, KeyboardInterrupt):
            discard_progress(state.path)     # its stream files are gone with the failed writers
        raise
    finally:
        if bar is not None:
            bar.close()
    if state is not None:
        discard_progress(state.path, streams=False)   # the outputs are published


def _resume_state(key: dict | None, paths: dict[str, Path], out_grid: Grid, dtype: str) -> Progress | None:
    """The progress of a killed run to continue (its stream files kept), or a fresh one (rows
    0; every leftover of earlier runs of this scene removed); None when ``key`` is None."""
    if key is None:
        return None
    ppath = progress_path(paths["probability"])
    state = load_progress(ppath, key, target=paths["probability"])
    if state is not None and not _streams_fit(state, out_grid, dtype):
        state = None
    if state is None:
        discard_progress(ppath)
        state = Progress(ppath, key, target=paths["probability"])
    _remove_stale_partials(paths, keep=tuple(state.streams.values()))
    return state


def _streams_fit(state: Progress, out_grid: Grid, dtype: str) -> bool:
    """Both stream files open, on this grid, with the outputs' types."""
    import rasterio

    want = {"probability": dtype, "mask": "uint8"}
    if set(state.streams) != set(want):
        return False
    for key, path in state.stream_paths().items():
        try:
            with rasterio.open(path) as ds:
                ok = (ds.width, ds.height, ds.count, ds.dtypes[0]) == (out_grid.width, out_grid.height, 1, want[key]) \
                    and ds.crs == out_grid.crs and ds.transform.almost_equals(out_grid.transform)
        except Exception:  # noqa: BLE001 - unreadable: start afresh
            return False
        if not ok:
            return False
    return True
