"""``monitor_site``: one site's scenes at many dates -> history database, time series, alerts.

For every scene not yet in the history (in date order, merged with the dates already there):

1. ``predict_scene`` maps mining inside the AOI (outputs kept in ``DIR/predictions/``);
2. the pixels really observed are the AOI pixels with data and no cloud/shadow
   (:mod:`sandwatch.monitor.clouds`); they go to an *observation raster* of the AOI window,
   ``DIR/observations/DATE_HASH.tif`` (uint8: 1 mine, 0 not mine, 255 not observed);
3. the date's figures (valid fraction, mined km2, polygons) and polygons
   (``DIR/polygons/DATE.geojson``) are made;
4. the alert tracker (:mod:`sandwatch.monitor.series`) is fed the date; the observation, its
   detections and the alerts it raises are committed in ONE transaction.

Dates already in the history are not predicted again: their observation rasters are read to
bring the tracker up to date, and alerts already recorded are not recorded twice. So a re-run
with the same scenes adds nothing, and a new date adds one observation and its own alerts.
At the end ``timeseries.csv``, ``timeseries.png``, ``alerts.csv`` and ``alerts.geojson`` are
written for the site from the database (all its dates, not only this run's).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.features
import shapely
from affine import Affine
from rasterio.crs import CRS
from shapely.geometry import mapping

from sandwatch.aoi.resolve import resolve_aoi
from sandwatch.errors import SandwatchError
from sandwatch.grid import Grid, Window
from sandwatch.imagery.clouds import CLOUD_TESTS
from sandwatch.io import atomic_output
from sandwatch.monitor.clouds import L1CCloudTest, observed_mask
from sandwatch.monitor.history import History
from sandwatch.monitor.outputs import write_outputs
from sandwatch.monitor.series import AlertConfig, AlertEvent, AlertTracker, date_figures
from sandwatch.predict.config import PredictConfig
from sandwatch.predict.lock import RunLock, RunLockWarning
from sandwatch.vectors import area_m2, mask_polygons, to_wgs84, write_feature_collection

NOT_OBSERVED = 255
DB_NAME = "history.sqlite"


@dataclass(frozen=True)
class MonitorConfig:
    """Published defaults of ``sandwatch monitor``."""

    alerts: AlertConfig = AlertConfig()
    #: how each date is predicted (edge, threshold, batch size, TTA, AOI buffer around rivers...):
    #: the predict stage's own config, so monitor and predict cannot drift apart
    predict: PredictConfig = PredictConfig(progress=False)
    cloud_test: str = "auto"             #: auto | scl | l1c | none
    l1c_test: L1CCloudTest = L1CCloudTest()

    def __post_init__(self):
        if self.cloud_test not in CLOUD_TESTS:
            raise SandwatchError.about("--cloud-test", f"unknown test {self.cloud_test!r}",
                                       f"use one of {', '.join(CLOUD_TESTS)}")


@dataclass
class MonitorResult:
    site: str
    paths: dict[str, Path]
    added_observations: int = 0
    added_alerts: int = 0
    known_observations: int = 0
    series: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)


# ---- small helpers -----------------------------------------------------------------------------
def scene_fingerprint(source: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 (hex) identifying a scene's content cheaply: for a file its size and first and
    last MiB; for a folder the same over its files (sorted by name); a URL hashes as text."""
    text = str(source)
    h = hashlib.sha256()
    if "://" in text:
        h.update(text.encode())
        return h.hexdigest()
    path = Path(text)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        size = p.stat().st_size
        h.update(f"{p.name if path.is_dir() else ''}:{size}:".encode())
        with open(p, "rb") as f:
            h.update(f.read(chunk))
            if size > chunk:
                f.seek(max(chunk, size - chunk))
                h.update(f.read(chunk))
    return h.hexdigest()


def stack_fingerprint(scene, source: str | os.PathLike) -> str:
    """:func:`scene_fingerprint` of a scene, combined with those of the scenes stacked on it
    (``metadata["stack"]``, e.g. Sentinel-1 on Sentinel-2): the same S2 date with another S1
    scene is another observation."""
    h = scene_fingerprint(source)
    extra = [str(x["source"]) for x in (getattr(scene, "metadata", None) or {}).get("stack", [])]
    if not extra:
        return h
    return hashlib.sha256(":".join([h, *map(scene_fingerprint, extra)]).encode()).hexdigest()


def write_observation_raster(path: Path, mine: np.ndarray, observed: np.ndarray, grid: Grid, date: dt.date,
                             probability: np.ndarray | None = None) -> Path:
    """uint8 GeoTIFF on ``grid``: band 1 mine (1 mine, 0 not mine, 255 not observed); band 2
    (with ``probability``) the mine probability as round(254 p), 255 not observed."""
    data = np.where(observed, mine.astype(np.uint8), NOT_OBSERVED).astype(np.uint8)
    bands = [data]
    if probability is not None:
        p = np.clip(np.nan_to_num(np.asarray(probability, np.float32)), 0.0, 1.0)
        bands.append(np.where(observed, np.round(p * 254), NOT_OBSERVED).astype(np.uint8))
    with atomic_output(path) as tmp:
        with rasterio.open(tmp, "w", driver="GTiff", width=grid.width, height=grid.height, count=len(bands),
                           dtype="uint8", crs=grid.crs, transform=grid.transform, nodata=NOT_OBSERVED,
                           compress="deflate") as dst:
            dst.write(np.stack(bands))
            dst.update_tags(ACQUISITION_DATE=date.isoformat(), VALUES="1 mine, 0 not mine, 255 not observed")
            if probability is not None:
                dst.update_tags(2, VALUES="mine probability x 254, 255 not observed")
    return path


def read_observation_raster(path: Path, probability: bool = False):
    """``(mine, observed)``; with ``probability`` also the probability (0..1; 1 on mine pixels
    of a raster written without its probability band, 0 elsewhere)."""
    with rasterio.open(path) as src:
        data = src.read(1)
        prob = src.read(2) if probability and src.count >= 2 else None
    observed = data != NOT_OBSERVED
    mine = (data == 1) & observed
    if not probability:
        return mine, observed
    p = mine.astype(np.float32) if prob is None else np.where(observed, prob / 254.0, 0.0).astype(np.float32)
    return mine, observed, p


def read_probability(path: Path, window: Window) -> np.ndarray:
    """Mine probability (0..1, 0 on nodata) of a ``predict`` probability COG over ``window``
    (decoded by predict's own rule, :func:`~sandwatch.predict.writer.decode_probability`)."""
    from sandwatch.predict.writer import decode_probability

    with rasterio.open(path) as src:
        p = decode_probability(src.read(1, window=window.to_rasterio()))
    return np.nan_to_num(p, nan=0.0)


def _site_grid(rec) -> Grid:
    return Grid(CRS.from_user_input(rec.crs), Affine(*rec.transform[:6]), rec.width, rec.height)


# ---- the stage ---------------------------------------------------------------------------------------
def monitor_site(checkpoint, site: str, aoi, scenes: Sequence, out_dir: str | os.PathLike, *,
                 db: str | os.PathLike | None = None, config: MonitorConfig = MonitorConfig(),
                 progress: bool = True, device=None,
                 on_commit: Callable[[dt.date, str], None] | None = None, wait: bool = True) -> MonitorResult:
    """Monitor one site: see the module docstring.

    ``checkpoint``: a Checkpoint, its path, or a :class:`sandwatch.predict.Predictor` (built
    only when a scene needs predicting; a checkpoint's temperature and, unless
    ``config.predict.threshold`` is set, its threshold are applied). ``aoi``: river vectors (buffered by
    ``config.predict.aoi_buffer_m``; 0 takes the file's polygons as the AOI), an
    :class:`~sandwatch.aoi.AoiFile` (used as it is) or a shapely geometry in
    the scenes' CRS. ``scenes``: paths/URLs (or Scenes) of the site at any dates, any order,
    all on one grid. ``db``: SQLite path or SQLAlchemy URL (default ``out_dir/history.sqlite``).
    ``on_commit(date, scene)`` is called after each date's transaction.

    One run at a time per site and database: the run holds :func:`site_lock_path` (owner's PID
    and host). Another run of the same site on this host is waited for (``wait``; a
    :class:`~sandwatch.predict.lock.RunLockWarning` says so), then this one goes on from what
    that one recorded; ``wait=False``, or an owner on another host, is refused with one line;
    a dead owner's lock is taken over. Runs of other sites share the database.
    """
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    if not site or not str(site).strip():
        raise SandwatchError.about("--site", "is empty", "name the site, e.g. --site wainganga-01")
    if not scenes:
        raise SandwatchError.about("--scenes", "no scenes given", "pass one or more scenes of the site")
    db_path = db if db is not None else out_dir / DB_NAME
    lock = RunLock(site_lock_path(db_path, out_dir, site), f"monitoring site {site!r}", wait=wait, on_wait=_warn,
                   on_stale=_warn, fix="wait for that run to finish (a re-run then adds only what is new)",
                   target=_db_file(db_path) or out_dir)
    with lock:
        return _monitor_locked(checkpoint, site, aoi, scenes, out_dir, db=db, config=config, progress=progress,
                               device=device, on_commit=on_commit, wait=wait)


def site_lock_path(db, out_dir: str | os.PathLike, site: str) -> Path:
    """The lock of one site's history: ``.DB.SITE.lock`` beside an SQLite file, or
    ``OUT_DIR/.monitor.SITE.lock`` for a database URL (other names than the site's
    letters, digits and ``._-`` are replaced, with a digest to keep names apart)."""
    import re

    slug = re.sub(r"[^A-Za-z0-9._-]", "_", str(site))[:80]
    if slug != str(site):
        slug += "-" + hashlib.sha256(str(site).encode()).hexdigest()[:8]
    path = _db_file(db)
    if path is None:
        return Path(out_dir) / f".monitor.{slug}.lock"
    return path.with_name(f".{path.name}.{slug}.lock")


def _db_file(db) -> Path | None:
    """The SQLite file of a path or ``sqlite:///`` URL (None for a server database)."""
    text = str(db)
    if text.startswith("sqlite:///"):
        return Path(text[len("sqlite:///"):]).resolve()
    return None if "://" in text else Path(text).resolve()


def _warn(message: str) -> None:
    import warnings

    warnings.warn(message, RunLockWarning, stacklevel=2)


def _monitor_locked(checkpoint, site, aoi, scenes, out_dir: Path, *, db, config: MonitorConfig, progress: bool,
                    device, on_commit, wait: bool) -> MonitorResult:
    from tqdm.auto import tqdm

    from sandwatch.predict import as_predictor, predict_scene
    from sandwatch.imagery import as_scene

    history = History(db if db is not None else out_dir / DB_NAME)
    try:
        # ---- scenes: open, date, fingerprint ---------------------------------------------
        opened = []
        for s in scenes:
            src = str(getattr(s, "source", s))
            if "://" not in src and not Path(src).exists():
                raise SandwatchError.about(src, "no such scene", "check the path")
            scene = as_scene(s)
            if scene.date is None:
                raise SandwatchError.about(src, "has no acquisition date",
                                           "use a scene with its date in the metadata or the name (YYYYMMDD)")
            opened.append((scene.date, stack_fingerprint(scene, src), scene))
        grid0: Grid = opened[0][2].grid

        # ---- site record: grid, AOI, window --------------------------------------------------
        rec = history.site(site)
        geom = resolve_aoi(aoi, opened[0][2], buffer_m=config.predict.aoi_buffer_m, required=True)
        if rec is None:
            window = grid0.window_from_bounds(*geom.bounds).clip(grid0.height, grid0.width)
            if window is None:
                raise SandwatchError.about("--aoi", "does not overlap the scenes", "pass the AOI of this site")
            centre = to_wgs84(geom.centroid, grid0.crs)
            rec = history.add_site(site, crs=grid0.crs.to_wkt(), transform=list(grid0.transform)[:6],
                                   width=grid0.width, height=grid0.height,
                                   window=[window.row, window.col, window.height, window.width], aoi_wkt=geom.wkt,
                                   latitude=float(centre.y), longitude=float(centre.x))
        site_grid = _site_grid(rec)
        stored_aoi = shapely.from_wkt(rec.aoi_wkt)
        if not _same_aoi(geom, stored_aoi, site_grid):
            raise SandwatchError.about("--aoi", f"differs from the AOI site {site!r} was monitored with",
                                       "pass the same AOI, or a new --site name / database")
        geom = stored_aoi
        for _, _, scene in opened:
            if not scene.grid.same_as(site_grid):
                raise SandwatchError.about(scene.source, f"is not on the grid of site {site!r} "
                                           f"({scene.grid.width}x{scene.grid.height} {scene.grid.crs.to_string()})",
                                           "pass scenes of one tile, or warp them to the site's grid first")
        window = Window(*rec.window)
        wgrid = site_grid.window_grid(window)
        from sandwatch.aoi import rasterize_aoi

        aoi_mask = rasterize_aoi(geom, site_grid, window)
        if not aoi_mask.any():
            raise SandwatchError.about("--aoi", "covers no pixel centre of the scenes", "pass a larger AOI")
        px_area = site_grid.pixel_area_m2

        # ---- merge known dates and new scenes, in date order ---------------------------------------
        known = {(o["date"], o["scene_hash"]): o for o in history.observations(rec.id)}
        given = {}
        for date, h, scene in opened:
            given.setdefault((date, h), scene)
        keys = sorted(set(known) | set(given))
        tracker = AlertTracker(window.shape, px_area, config.alerts)
        predictor = None
        result = MonitorResult(site=site, paths={}, known_observations=len(known))
        dirs = {name: out_dir / name for name in ("predictions", "observations", "polygons")}

        bar = tqdm(keys, desc=f"monitor {site}", unit="date", disable=not progress)
        for key in bar:
            date, h = key
            obs_row = None
            polygons: list[dict] = []
            scene = given.get(key)
            old = known.get(key)
            raster = Path(old["observation_raster"]) if old else dirs["observations"] / f"{date}_{h[:8]}.tif"
            if old is not None and raster.is_file():
                mine, observed = read_observation_raster(raster)
                valid_fraction = float(old["valid_fraction"])
                poly_path = old["polygons"]
            else:
                if scene is None:
                    raise SandwatchError.about(raster, f"the observation raster of {date} is missing",
                                               "pass that date's scene again, or -o the folder of the earlier runs")
                if predictor is None:
                    predictor = as_predictor(checkpoint, device=device)
                name = f"{site}_{date}_{h[:8]}"
                pred = predict_scene(predictor, scene, dirs["predictions"], config.predict, aoi=geom,
                                     name=name, wait=wait)
                mine, observed, method = observe(scene, pred.paths["mask"], window, aoi_mask, config)
                write_observation_raster(raster, mine, observed, wgrid, date,
                                         read_probability(pred.paths["probability"], window))
                fig = date_figures(mine, observed, aoi_mask, px_area)
                valid_fraction = fig.valid_fraction
                gap = tracker.is_gap(valid_fraction)
                poly_path, polygons = _write_date_polygons(dirs["polygons"], site, date, h, mine, wgrid, len(
                    [k for k in keys if k[0] == date]) > 1)
                obs_row = {"date": date, "scene": str(scene.source), "scene_hash": h,
                           "valid_fraction": valid_fraction, "gap": gap,
                           "mined_km2": None if gap else fig.mined_km2, "n_polygons": None if gap else fig.n_polygons,
                           "cloud_test": method, "observation_raster": str(raster), "polygons": str(poly_path)}
            events = tracker.update(date, mine, observed, valid_fraction)
            alert_rows = [_alert_row(e, wgrid, poly_path) for e in events]
            n_obs, n_alerts = history.record_date(rec.id, obs_row, polygons, alert_rows)
            result.added_observations += n_obs
            result.added_alerts += n_alerts
            if on_commit is not None:
                on_commit(date, str(getattr(scene, "source", "")) if scene is not None else old["scene"])
        bar.close()

        result.series = history.observations(rec.id)
        result.alerts = history.alerts(rec.id)
        result.paths = write_outputs(out_dir, site, result.series, result.alerts, config.alerts)
        return result
    finally:
        history.close()


def observe(scene, mask_path: Path, window: Window, aoi_mask: np.ndarray, config: MonitorConfig,
            strip_rows: int = 1024) -> tuple[np.ndarray, np.ndarray, str]:
    """``(mine, observed, cloud test)`` over ``window``: observed = predicted (mask not nodata),
    inside the AOI and clear; mine = mask 1 and observed. Read in strips of ``strip_rows`` rows,
    so only boolean rasters of the window are held."""
    mine = np.zeros(window.shape, bool)
    observed = np.zeros(window.shape, bool)
    method = "none"
    with rasterio.open(mask_path) as src:
        for r in range(0, window.height, strip_rows):
            part = Window(window.row + r, window.col, min(strip_rows, window.height - r), window.width)
            m = src.read(1, window=part.to_rasterio())
            clear, method = observed_mask(scene, part, method=config.cloud_test, l1c_test=config.l1c_test)
            rows = slice(r, r + part.height)
            observed[rows] = (m != NOT_OBSERVED) & clear & aoi_mask[rows]
            mine[rows] = (m == 1) & observed[rows]
    return mine, observed, method


def _same_aoi(a, b, grid: Grid) -> bool:
    tol = grid.pixel_area_m2 / abs(grid.transform.determinant) * 4  # a few pixels, in CRS units^2
    return a.symmetric_difference(b).area <= max(tol, 0.001 * b.area)


def _write_date_polygons(folder: Path, site: str, date: dt.date, h: str, mine: np.ndarray, wgrid: Grid,
                         several: bool) -> tuple[Path, list[dict]]:
    path = folder / (f"{date}_{h[:8]}.geojson" if several else f"{date}.geojson")
    rows, features = [], []
    for i, poly in enumerate(mask_polygons(mine, wgrid), start=1):
        g84 = to_wgs84(poly, wgrid.crs)
        area = area_m2(poly, wgrid.crs)
        gj = mapping(g84)
        rows.append({"polygon": i, "area_m2": area, "wkt": poly.wkt, "geojson": json.dumps(gj)})
        features.append({"type": "Feature", "geometry": gj,
                         "properties": {"site": site, "date": date.isoformat(), "polygon": i, "area_m2": round(area, 1)}})
    write_feature_collection(path, features)
    return path, rows


def _alert_row(e: AlertEvent, wgrid: Grid, poly_path) -> dict[str, Any]:
    polys = mask_polygons(e.mask, wgrid)
    geom = shapely.unary_union(polys) if polys else None
    lat = lon = None
    wkt = gj = None
    if geom is not None and not geom.is_empty:
        c = to_wgs84(geom.centroid, wgrid.crs)
        lat, lon = float(c.y), float(c.x)
        wkt = geom.wkt
        gj = json.dumps(mapping(to_wgs84(geom, wgrid.crs)))
    return {"region": e.region, "kind": e.kind, "date": e.date, "first_seen": e.first_seen,
            "area_m2": float(e.area_m2), "growth_m2": float(e.growth_m2), "latitude": lat, "longitude": lon,
            "wkt": wkt, "geojson": gj, "polygons": str(poly_path) if poly_path else None}
