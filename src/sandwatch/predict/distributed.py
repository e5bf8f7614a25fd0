"""Many scenes: in this process by default, or fanned out over a Dask cluster.

``scheduler``:

* ``None`` / ``"local"``: one scene after the other in this process (the model is built once);
* ``"tcp://HOST:PORT"`` (any address a ``dask-scheduler`` prints): a
  :class:`distributed.Client` connects to it and each scene becomes one task;
* a :class:`distributed.Client` (e.g. on a ``LocalCluster``): used as is.

With ``band_rows`` set (and a cluster), a scene is also cut into row bands of about that many
rows (whole rows of windows): each band is one task that writes a tiled GeoTIFF part into
``out_dir/.NAME.parts/``, and one more task stitches the parts into the COGs and polygons.
The band windows are the whole scene's windows, so the pixels equal an in-process run;
finished parts survive a killed run and are reused.

On a cluster, each task builds its model from the checkpoint (pass a path or a
:class:`~sandwatch.models.checkpoint.Checkpoint`; both pickle) and opens its scene from its
path, so pass scenes as paths or URLs. Outputs go to ``out_dir`` exactly as with
:func:`~sandwatch.predict.predict_scene`, and finished scenes are skipped on a re-run, so a
killed batch resumes where it stopped.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from collections.abc import Sequence
from pathlib import Path

from sandwatch.aoi.resolve import resolve_aoi
from sandwatch.errors import SandwatchError
from sandwatch.grid import Grid, Window
from sandwatch.imagery import as_scene
from sandwatch.predict.config import PredictConfig, predict_config
from sandwatch.predict.core import (
    PredictionResult, Predictor, _predict_rasters, aoi_filter, as_predictor, gdal_cache, predict_scene,
)
from sandwatch.predict.naming import output_paths, scene_name, unique_names
from sandwatch.predict.polygons import polygonize, write_polygons
from sandwatch.predict.windows import check_window_edge
from sandwatch.predict.writer import MASK_NODATA, StreamingCOGWriter, writing_together


def _task(checkpoint, scene, out_dir, name, cfg: PredictConfig, aoi) -> PredictionResult:
    return predict_scene(checkpoint, scene, out_dir, cfg, aoi=aoi, name=name)


def predict_scenes(checkpoint, scenes: Sequence, out_dir: str | os.PathLike, config: PredictConfig | None = None, *,
                   aoi=None, scheduler=None, band_rows: int | None = None, names: Sequence[str] | None = None,
                   **settings) -> list[PredictionResult]:
    """Predict many scenes (see the module doc for ``scheduler`` and ``band_rows``) with
    ``config`` (:class:`~sandwatch.predict.config.PredictConfig`; keywords override its fields),
    each as :func:`~sandwatch.predict.predict_scene` does. Results come back in the order of
    ``scenes``. ``names``: the output names (default :func:`~sandwatch.predict.naming.unique_names`;
    :func:`manifest_scenes` gives observation ids)."""
    cfg = predict_config(config, **settings)
    scenes = list(scenes)
    names = list(names) if names is not None else unique_names(scenes)
    if len(names) != len(scenes) or len(set(names)) != len(names):
        raise ValueError("predict_scenes: names must be unique, one per scene")
    if scheduler is None or scheduler == "local":
        pred = as_predictor(checkpoint, device=cfg.device, bf16=cfg.bf16)
        return [predict_scene(pred, s, out_dir, cfg, aoi=aoi, name=n) for s, n in zip(scenes, names)]

    from distributed import Client

    own = False
    if isinstance(scheduler, Client):
        client = scheduler
    else:
        try:
            client = Client(str(scheduler), timeout="20s")
        except (OSError, TimeoutError) as err:
            raise SandwatchError.about("--scheduler", f"cannot reach a Dask scheduler at {scheduler} ({err})",
                                       "start one with `dask-scheduler` and `dask-worker ADDRESS`, or use --scheduler local") from None
        own = True
    try:
        cfg = cfg.replace(progress=False)
        if band_rows:
            futures = [submit_scene_bands(client, checkpoint, s, out_dir, cfg, aoi=aoi, name=n, band_rows=band_rows)
                       for s, n in zip(scenes, names)]
            return client.gather(futures)
        futures = [client.submit(_task, checkpoint, str(s) if isinstance(s, os.PathLike) else s, str(out_dir), n,
                                 cfg, aoi, pure=False, key=f"sandwatch-predict-{n}")
                   for s, n in zip(scenes, names)]
        return client.gather(futures)
    finally:
        if own:
            client.close()


def manifest_scenes(manifest, split: str | None = None) -> tuple[list, list[str]]:
    """The scenes of a dataset manifest (each with its ``s1`` scene stacked,
    :meth:`~sandwatch.dataset.manifest.Observation.open_scene`) and their output names: the
    observation ids (``SITE_DATE``), which :func:`~sandwatch.predict.naming.find_outputs` finds
    first. ``split``: ``"train"``/``"val"`` only those observations; None all."""
    from sandwatch.dataset.manifest import load_manifest

    m = load_manifest(manifest)
    observations = m.observations if split in (None, "all") else m.split_of(split)
    if not observations:
        raise SandwatchError.about(manifest, f"has no observations{f' in split {split!r}' if split not in (None, 'all') else ''}",
                                   "run `sandwatch dataset split` first, or choose another --split")
    return [o.open_scene() for o in observations], [o.id for o in observations]


# ---- one scene in row bands ----------------------------------------------------------------------
def band_regions(grid_shape: tuple[int, int], window: int, edge: int, band_rows: int) -> list[Window]:
    """Row bands of about ``band_rows`` rows made of whole rows of windows (stride multiples)."""
    stride = check_window_edge(window, edge)
    height, width = grid_shape
    step = max(1, round(band_rows / stride)) * stride
    return [Window(r, 0, min(step, height - r), width) for r in range(0, height, step)]


def _meta(checkpoint) -> tuple[int, float, float]:
    """(window, threshold, temperature) of a Predictor, Checkpoint or checkpoint path."""
    if isinstance(checkpoint, Predictor):
        return checkpoint.window, checkpoint.threshold, checkpoint.temperature
    from sandwatch.models.checkpoint import Checkpoint

    ck = checkpoint if isinstance(checkpoint, Checkpoint) else Checkpoint.load(checkpoint)
    return ck.window, ck.threshold, ck.temperature


@dataclass(frozen=True)
class _BandJob:
    """What every band task of one scene shares: the settings, and what was resolved once."""

    cfg: PredictConfig
    aoi: object            # geometry or None
    threshold: float
    temperature: float


def _band_task(checkpoint, scene, region: Window, part: dict, job: _BandJob) -> dict:
    t0 = time.perf_counter()
    with gdal_cache(job.cfg.gdal_cache_mb):
        stats = _band_task_inner(checkpoint, scene, region, part, job)
    stats["seconds"] = time.perf_counter() - t0
    return stats


def _band_task_inner(checkpoint, scene, region: Window, part: dict, job: _BandJob) -> dict:
    if all(Path(p).exists() for p in part.values()):
        return {"windows": 0, "skipped_windows": 0, "reused": 1}
    cfg = job.cfg
    scene_obj = as_scene(scene)
    pred = as_predictor(checkpoint, device=cfg.device, bf16=cfg.bf16)
    stats: dict = {}
    _predict_rasters(pred, scene_obj, scene_obj.grid, part, edge=cfg.edge,
                     include=aoi_filter(job.aoi, scene_obj.grid), threshold=job.threshold,
                     batch_size=cfg.batch_size, blend=cfg.blend, dtype=cfg.dtype, progress=False,
                     stats=stats, date=getattr(scene_obj, "date", None), strip_windows=cfg.strip_windows,
                     region=region, cog=False, tta=cfg.tta)
    return stats


def _assemble_task(grid: Grid, regions: list[Window], parts: list[dict], paths: dict, name: str, date, job: _BandJob,
                   *band_stats) -> PredictionResult:
    t0 = time.perf_counter()
    with gdal_cache(job.cfg.gdal_cache_mb):
        res = _assemble_inner(grid, regions, parts, paths, name, date, job, *band_stats)
    # summed time of all this scene's tasks (not wall time: bands run in parallel)
    res.stats["seconds"] = time.perf_counter() - t0 + sum(s.get("seconds", 0.0) for s in band_stats)
    return res


def _assemble_inner(grid: Grid, regions: list[Window], parts: list[dict], paths: dict, name: str, date, job: _BandJob,
                    *band_stats) -> PredictionResult:
    import rasterio

    dtype = job.cfg.dtype
    with rasterio.open(parts[0]["probability"]) as ds:
        tags, scale, offset, nodata = ds.tags(), ds.scales[0], ds.offsets[0], ds.nodata
    tags.pop("AREA_OR_POINT", None)
    extra = dict(scale=scale, offset=offset) if dtype == "uint8" else {}
    with writing_together(
            StreamingCOGWriter(paths["probability"], grid, dtype, nodata, resampling="average", tags=tags,
                               description="mining probability", **extra),
            StreamingCOGWriter(paths["mask"], grid, "uint8", MASK_NODATA, resampling="nearest", tags=tags,
                               description=f"mining (probability >= {job.threshold})")) as (pw, mw):
        for region, part in zip(regions, parts):
            for key, writer in (("probability", pw), ("mask", mw)):
                with rasterio.open(part[key]) as src:
                    for r in range(0, region.height, 512):
                        w = Window(r, 0, min(512, region.height - r), region.width)
                        writer.write(w.shift(region.row, region.col), src.read(1, window=w.to_rasterio()))
    gdf = polygonize(paths["mask"], paths["probability"], scene=name, date=date)
    write_polygons(gdf, paths)
    shutil.rmtree(Path(parts[0]["probability"]).parent, ignore_errors=True)
    stats = {"name": name, "bands": len(regions), "polygons": int(len(gdf)),
             "mine_area_m2": float(gdf["area_m2"].sum()) if len(gdf) else 0.0,
             "windows": sum(s.get("windows", 0) for s in band_stats),
             "skipped_windows": sum(s.get("skipped_windows", 0) for s in band_stats),
             "mine_pixels": sum(s.get("mine_pixels", 0) for s in band_stats),
             "reused_bands": sum(s.get("reused", 0) for s in band_stats),
             "pixels": grid.width * grid.height, "threshold": job.threshold,
             "temperature": job.temperature, "tta": job.cfg.tta}
    return PredictionResult({k: Path(v) for k, v in paths.items()}, stats)


def submit_scene_bands(client, checkpoint, scene, out_dir, config: PredictConfig | None = None, *,
                       aoi=None, name: str | None = None, band_rows: int = 2000, **settings):
    """Submit one scene as row-band tasks plus a stitching task; returns the future of its
    :class:`~sandwatch.predict.PredictionResult` (same outputs as :func:`predict_scene`).

    The AOI is resolved once here (``"auto"`` reads the scene's water index in this process)
    and shipped to the band tasks as a geometry.
    """
    cfg = predict_config(config, **settings)
    edge, threshold = cfg.edge, cfg.threshold
    scene_obj = as_scene(scene)
    name = name or scene_name(scene_obj)
    paths = output_paths(out_dir, name)
    if not cfg.overwrite and all(p.exists() for p in paths.values()):
        return client.submit(lambda: PredictionResult(paths, {"name": name, "skipped": True}), pure=False)
    window, ck_threshold, temperature = _meta(checkpoint)
    grid = scene_obj.grid
    regions = band_regions(grid.shape, window, edge, band_rows)
    part_dir = Path(out_dir) / f".{name}.parts"
    if cfg.overwrite:
        shutil.rmtree(part_dir, ignore_errors=True)
    part_dir.mkdir(parents=True, exist_ok=True)
    geom = resolve_aoi(aoi, scene_obj, buffer_m=cfg.aoi_buffer_m)
    job = _BandJob(cfg, geom, ck_threshold if threshold is None else float(threshold), float(temperature))
    parts = [{"probability": str(part_dir / f"rows{r.row:06d}-{r.row_stop:06d}.prob.tif"),
              "mask": str(part_dir / f"rows{r.row:06d}-{r.row_stop:06d}.mask.tif")} for r in regions]
    scene_arg = str(scene) if isinstance(scene, os.PathLike) else scene
    bands = [client.submit(_band_task, checkpoint, scene_arg, r, part, job, pure=False,
                           key=f"sandwatch-band-{name}-{r.row}") for r, part in zip(regions, parts)]
    str_paths = {k: str(v) for k, v in paths.items()}
    out = client.submit(_assemble_task, grid, regions, parts, str_paths, name, getattr(scene_obj, "date", None), job,
                        *bands, pure=False, key=f"sandwatch-assemble-{name}")
    return out
