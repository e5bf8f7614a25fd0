"""What ``sandwatch serve`` shows: the sites, dates and files of a project folder, found once.

A *project* is any folder sandwatch wrote into (``make demo``'s ``demo-out/``, a monitor
``-o`` folder, a folder holding several). It is searched (at most :data:`MAX_DEPTH` folders
deep, hidden folders skipped) for

* manifests (``manifest.yaml``/``.json``): per observation its site, date, scene,
  annotations (the label GeoJSON the annotate view edits), rivers or AOI;
* monitoring histories (``history.sqlite``, plus any ``--db`` URL): sites, dates, scenes,
  alerts; each date's outputs are where ``sandwatch monitor`` put them
  (``OUT/predictions/SITE_DATE_HASH.prob.tif``, ``OUT/polygons/...geojson``);
* prediction folders (any folder holding ``*.prob.tif``): a scene's outputs are found by
  ``sandwatch.predict.naming.prediction_names`` (then ``OBSERVATION_ID.prob.tif``, what
  ``evaluate --checkpoint`` writes) and kept only when they overlap the scene.

Every file the app may read is put in :attr:`Project.files` under an opaque key (``f12``);
URLs carry keys, never paths, so nothing outside what was found here can be served.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import rasterio
from rasterio.warp import transform_bounds

from sandwatch.errors import SandwatchError
from sandwatch.predict.naming import OUTPUTS, prediction_names

MAX_DEPTH = 4
MANIFEST_NAMES = ("manifest.yaml", "manifest.yml", "manifest.json")
HISTORY_NAME = "history.sqlite"


@dataclass
class DateEntry:
    """One date of a site: its files (keys into :attr:`Project.files`, None when absent)."""

    date: str
    scene: str | None = None
    probability: str | None = None
    mask: str | None = None
    polygons: str | None = None
    labels_path: Path | None = None      #: where the annotate view saves (may not exist yet)
    observation_id: str | None = None


@dataclass
class Site:
    name: str
    dates: list[DateEntry] = field(default_factory=list)
    rivers: Path | None = None
    aoi_file: Path | None = None
    aoi_wkt: str | None = None            #: from the history (grid CRS)
    crs: str | None = None
    buffer_m: float = 1000.0
    bounds: tuple[float, float, float, float] | None = None   #: lon/lat of the first scene
    history: str | None = None            #: URL of the history that knows the site

    def entry(self, date: str) -> DateEntry:
        for d in self.dates:
            if d.date == date:
                return d
        raise SandwatchError.about(f"site {self.name}", f"has no date {date}", "pick one of the dates listed")


def _walk(root: Path, depth: int = MAX_DEPTH):
    """(folder, file names) under root, ``depth`` levels at most, hidden folders skipped."""
    base = len(root.parts)
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if len(here.parts) - base < depth else []
        yield here, files


class Project:
    """Sites and dates of a project folder and the registry of files the app may serve."""

    def __init__(self, root: str | os.PathLike, db: str | None = None):
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise SandwatchError.about(root, "no such project folder",
                                       "pass a folder sandwatch wrote into, e.g. demo-out after `make demo`")
        self.files: dict[str, tuple[Path, str]] = {}      # key -> (path, kind)
        self._keys: dict[tuple[Path, str], str] = {}
        self._lock = threading.Lock()
        self.sites: dict[str, Site] = {}
        self.histories: list[str] = []
        manifests, pred_dirs = [], []
        for folder, names in _walk(self.root):
            manifests += [folder / n for n in names if n in MANIFEST_NAMES]
            if HISTORY_NAME in names:
                self.histories.append(f"sqlite:///{folder / HISTORY_NAME}")
            if any(n.endswith(OUTPUTS["probability"]) for n in names):
                pred_dirs.append(folder)
        if db:
            from sandwatch.monitor.history import database_url

            url = database_url(db)
            if url not in self.histories:
                self.histories.insert(0, url)
        for url in self.histories:
            self._add_history(url)
        for m in manifests:
            self._add_manifest(m)
        for site in self.sites.values():
            site.dates.sort(key=lambda d: d.date)
            for entry in site.dates:
                if entry.probability is None and entry.scene is not None:
                    self._find_predictions(entry, pred_dirs)
                if entry.labels_path is None:
                    entry.labels_path = self.root / "labels" / site.name / f"{entry.date}.geojson"
            self._describe(site)
        if not self.sites:
            raise SandwatchError.about(self.root, "holds no manifest, monitoring history or scenes sandwatch knows",
                                       "serve the folder of `sandwatch demo-data`, `predict` or `monitor` "
                                       "(e.g. demo-out after `make demo`)")

    # ---- the registry -----------------------------------------------------------------------
    def register(self, path: str | os.PathLike | None, kind: str) -> str | None:
        """The key of an existing file (registered once per kind), None when there is none."""
        if path is None or "://" in str(path):
            return None
        p = Path(path)
        if not p.is_absolute():      # relative to the project, else to where the command ran
            p = self.root / p if (self.root / p).is_file() else Path.cwd() / p
        if not p.is_file():
            return None
        p = p.resolve()
        with self._lock:
            key = self._keys.get((p, kind))
            if key is None:
                key = f"f{len(self.files)}"
                self.files[key] = (p, kind)
                self._keys[(p, kind)] = key
        return key

    def file(self, key: str, kind: str | None = None) -> Path:
        """The path behind a key; an unknown key (or another kind) is "not found"."""
        hit = self.files.get(key)
        if hit is None or (kind is not None and hit[1] != kind):
            raise FileNotFoundError(key)
        return hit[0]

    def kind(self, key: str) -> str:
        hit = self.files.get(key)
        if hit is None:
            raise FileNotFoundError(key)
        return hit[1]

    def site(self, name: str) -> Site:
        site = self.sites.get(name)
        if site is None:
            raise SandwatchError.about(f"site {name}", "is not in this project", "pick a site from the list")
        return site

    # ---- discovery --------------------------------------------------------------------------
    def _site(self, name: str) -> Site:
        return self.sites.setdefault(name, Site(name=name))

    def _entry(self, site: Site, date: str) -> DateEntry:
        for e in site.dates:
            if e.date == date:
                return e
        e = DateEntry(date=date)
        site.dates.append(e)
        return e

    def _add_manifest(self, path: Path) -> None:
        from sandwatch.dataset import load_manifest

        try:
            manifest = load_manifest(path)
        except SandwatchError:
            return            # a manifest of another tool's: not ours to show
        for obs in manifest.observations:
            site = self._site(obs.site)
            site.buffer_m = manifest.aoi_buffer_m
            site.rivers = site.rivers or (Path(obs.rivers) if obs.rivers else None)
            if obs.aoi and Path(obs.aoi).is_file():
                site.aoi_file = site.aoi_file or Path(obs.aoi)
            e = self._entry(site, obs.date.isoformat())
            e.scene = e.scene or self.register(obs.scene, "scene")
            e.observation_id = obs.id
            if obs.annotations:
                e.labels_path = Path(obs.annotations)

    def _add_history(self, url: str) -> None:
        from sandwatch.monitor.history import History

        history = History(url, must_exist=url.startswith("sqlite:///"))
        try:
            for rec in history.sites():
                site = self._site(rec.name)
                site.aoi_wkt, site.crs, site.history = rec.aoi_wkt, rec.crs, url
                for o in history.observations(rec.id):
                    e = self._entry(site, o["date"].isoformat())
                    e.scene = e.scene or self.register(o["scene"], "scene")
                    e.polygons = e.polygons or self.register(o["polygons"], "vector")
                    if o["observation_raster"] and e.probability is None:
                        out = Path(o["observation_raster"]).parent.parent / "predictions"
                        name = f"{rec.name}_{o['date']}_{o['scene_hash'][:8]}"
                        e.probability = self.register(out / f"{name}{OUTPUTS['probability']}", "probability")
                        e.mask = self.register(out / f"{name}{OUTPUTS['mask']}", "mask")
        finally:
            history.close()

    def _find_predictions(self, entry: DateEntry, folders: list[Path]) -> None:
        scene = self.file(entry.scene)
        names = prediction_names(str(scene))
        if entry.observation_id:      # what `evaluate --checkpoint` writes: ID.prob.tif
            names.append(f"{entry.observation_id}{OUTPUTS['probability']}")
        for folder in folders:
            for name in names:
                prob = folder / name
                if prob.is_file() and _overlaps(prob, scene):
                    stem = name[: -len(OUTPUTS["probability"])]
                    entry.probability = self.register(prob, "probability")
                    entry.mask = self.register(folder / f"{stem}{OUTPUTS['mask']}", "mask")
                    entry.polygons = entry.polygons or self.register(
                        folder / f"{stem}{OUTPUTS['polygons_geojson']}", "vector")
                    return

    def _describe(self, site: Site) -> None:
        for e in site.dates:
            if e.scene is None:
                continue
            try:
                with rasterio.open(self.file(e.scene)) as ds:
                    site.bounds = tuple(transform_bounds(ds.crs, "EPSG:4326", *ds.bounds, densify_pts=21))
                    site.crs = site.crs or ds.crs.to_string()
                return
            except rasterio.errors.RasterioIOError:
                continue

    # ---- what the page lists ----------------------------------------------------------------
    def summary(self) -> list[dict]:
        out = []
        for site in sorted(self.sites.values(), key=lambda s: s.name):
            out.append({"name": site.name, "bounds": site.bounds, "has_history": site.history is not None,
                        "dates": [{"date": e.date, "scene": e.scene, "probability": e.probability, "mask": e.mask,
                                   "polygons": e.polygons, "labels": e.labels_path is not None,
                                   "labels_exist": bool(e.labels_path and e.labels_path.is_file())}
                                  for e in site.dates]})
        return out


def _overlaps(a: Path, b: Path) -> bool:
    """Whether two rasters share a CRS and overlap: ``NAME.prob.tif`` belongs to that scene."""
    try:
        with rasterio.open(a) as ra, rasterio.open(b) as rb:
            if ra.crs != rb.crs:
                return False
            l1, b1, r1, t1 = ra.bounds
            l2, b2, r2, t2 = rb.bounds
            return l1 < r2 and l2 < r1 and b1 < t2 and b2 < t1
    except rasterio.errors.RasterioIOError:
        return False
