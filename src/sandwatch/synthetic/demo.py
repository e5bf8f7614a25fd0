"""A demo dataset on disk, laid out exactly like real inputs, with a manifest.

::

    OUT/manifest.yaml                     sandwatch manifest (relative paths, lat/lon, rivers)
    OUT/sites.yaml                        what each site is meant to show (kind, CRS, dates)
    OUT/site00/2021-01-10.tif             13-band L1C-like uint16 GeoTIFF, UTM, 10 m
    OUT/site00/2021-01-12_s1.tif          Sentinel-1 VV, VH (dB, float32, EPSG:4326), 2 days later
    OUT/site00/2021-01-10.png             true-colour quicklook
    OUT/site00/2021-01-10_mining.geojson  mining polygons, EPSG:4326, property Confidence
    OUT/site00/rivers.geojson             river centre line, EPSG:4326
"""

from __future__ import annotations

import datetime as dt
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely.affinity
import yaml
from tqdm import tqdm

from sandwatch.bands import L1C_BANDS
from sandwatch.dataset.manifest import Manifest, Observation, save_manifest
from sandwatch.errors import SandwatchError
from sandwatch.grid import Grid
from sandwatch.imagery.display import stretch_true_colour
from sandwatch.io import atomic_output
from sandwatch.published import AOI_BUFFER_M
from sandwatch.synthetic.files import mask_to_polygons, utm_grid, write_lines, write_polygons, write_quicklook, write_scene
from sandwatch.synthetic.landscape import SceneTruth, SiteLandscape, SiteSpec
from sandwatch.synthetic.sar import S1_DAYS_AFTER, render_backscatter, write_backscatter
from sandwatch.synthetic.scenes import cloud_opacity, with_clouds
from sandwatch.synthetic.spectra import RenderOptions, render_bands

#: Geographic groups of demo sites: rivers known for sand mining, several hundred km apart.
SITE_GROUPS: tuple[tuple[str, float, float], ...] = (
    ("Wainganga, Maharashtra", 79.80, 21.10),   # UTM 44N
    ("Bhargavi, Odisha", 85.85, 20.30),         # UTM 45N
    ("Cauvery, Karnataka", 76.60, 12.40),       # UTM 43N
    ("Brahmaputra, Assam", 91.70, 26.20),       # UTM 46N
)
#: Mining story per site, cycled; each group of the default 6 sites gets a mining site.
KIND_CYCLE = ("growing", "stopping", "never", "stable", "never", "growing")
#: Default first date; the second is ``DEFAULT_GAP_DAYS`` later (both before the 2022 DN offset).
DEFAULT_FIRST_DATE = dt.date(2021, 1, 15)
DEFAULT_GAP_DAYS = 120


@dataclass(frozen=True)
class DemoConfig:
    """Published defaults of ``sandwatch demo-data``."""

    sites: int = 6
    size: int = 512
    seed: int = 0
    res: float = 10.0
    aoi_buffer_m: float = AOI_BUFFER_M
    quicklook_max: int = 1024
    render: RenderOptions = RenderOptions()
    #: a Sentinel-1 scene beside every Sentinel-2 scene (the observation's ``s1``)
    s1: bool = True


def _n_groups(sites: int) -> int:
    return 1 if sites <= 1 else 2 if sites == 2 else 3 if sites < 8 else 4


DatesArg = Sequence[dt.date | str] | Mapping[str, Sequence[dt.date | str]] | None


def _as_date(d: dt.date | str, what: str) -> dt.date:
    if isinstance(d, dt.datetime):
        return d.date()
    if isinstance(d, dt.date):
        return d
    try:
        return dt.date.fromisoformat(str(d))
    except ValueError:
        raise SandwatchError.about(what, f"{d!r} is not a date", "write dates as YYYY-MM-DD") from None


def plan_sites(sites: int = 6, size: int = 512, seed: int = 0, dates: DatesArg = None) -> list[SiteSpec]:
    """The sites of a demo dataset: name, location, mining story, dates (deterministic per seed).

    ``dates``: None (two dates 120 days apart, staggered per site), one list of dates for every
    site, or a mapping site name -> list of dates (sites not named get the default).
    """
    if sites < 1:
        raise SandwatchError.about("--sites", f"must be at least 1 (got {sites})", "ask for one or more sites")
    if size < 64:
        raise SandwatchError.about("--size", f"must be at least 64 pixels (got {size})", "use --size 64 or more")
    if isinstance(dates, str):
        dates = [d for d in dates.split(",") if d.strip()]
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    ng = _n_groups(sites)
    out = []
    for i in range(sites):
        name = f"site{i:02d}"
        g = i % ng
        _, glon, glat = SITE_GROUPS[g]
        k = i // ng
        ang = rng.uniform(0, 2 * math.pi)
        dist = 0.12 + 0.18 * k + rng.uniform(0, 0.1) if k else rng.uniform(0, 0.08)  # degrees
        lon = round(glon + dist * math.cos(ang), 5)
        lat = round(glat + dist * math.sin(ang), 5)
        if dates is None:
            first = DEFAULT_FIRST_DATE + dt.timedelta(days=5 * i)
            site_dates = (first, first + dt.timedelta(days=DEFAULT_GAP_DAYS))
        else:
            raw = dates.get(name) if isinstance(dates, Mapping) else dates
            if raw is None:
                first = DEFAULT_FIRST_DATE + dt.timedelta(days=5 * i)
                raw = (first, first + dt.timedelta(days=DEFAULT_GAP_DAYS))
            site_dates = tuple(sorted({_as_date(d, "dates") for d in raw}))
            if not site_dates:
                raise SandwatchError.about("dates", f"no dates for {name}", "give at least one date per site")
        out.append(SiteSpec(name=name, lon=lon, lat=lat, kind=KIND_CYCLE[i % len(KIND_CYCLE)], dates=site_dates,
                            size=size, seed=(seed, i), group=g))
    return out


def site_grid(spec: SiteSpec, res: float = 10.0) -> Grid:
    """The 10 m UTM grid of a site, centred on its longitude/latitude."""
    return utm_grid(spec.lon, spec.lat, spec.size, res)


def scene_polygons(truth: SceneTruth, grid: Grid) -> tuple[list, list[str]]:
    """Annotation polygons (grid CRS) and their Confidence for one scene, one or more per cluster."""
    geoms, conf = [], []
    for cl in truth.clusters:
        for g in mask_to_polygons(cl.mask, grid, generous_px=1.5, simplify_px=1.0, min_pixels=12, close_px=4):
            geoms.append(g)
            conf.append(cl.confidence)
    return geoms, conf


CloudsArg = Mapping[str, Mapping[dt.date | str, float]] | None


def _site_clouds(clouds: CloudsArg, name: str) -> dict[dt.date, float]:
    """Cloud cover per date of one site from ``{site: {date: cover}}`` (dates as dates or ISO text)."""
    if not clouds or name not in clouds:
        return {}
    return {_as_date(d, "clouds"): float(c) for d, c in clouds[name].items()}


def write_site(spec: SiteSpec, out_dir: str | os.PathLike, *, res: float = 10.0,
               render: RenderOptions = RenderOptions(), quicklook_max: int = 1024,
               clouds: Mapping[dt.date, float] | None = None, s1: bool = True) -> list[Observation]:
    """Write all dates of one site (scenes, quicklooks, polygons, river line); return its observations.
    ``clouds``: cloud cover (0..1) per date, blended in with :func:`sandwatch.synthetic.with_clouds`
    (the polygons still show the mining under the clouds; radar sees through them). ``s1``: also
    a Sentinel-1 scene per date, :data:`~sandwatch.synthetic.sar.S1_DAYS_AFTER` days later."""
    out_dir = Path(out_dir)
    site_dir = out_dir / spec.name
    site_dir.mkdir(parents=True, exist_ok=True)
    grid = site_grid(spec, res)
    land = SiteLandscape(spec)
    line_px = land.river_line()
    line_map = shapely.affinity.affine_transform(line_px, grid.transform.to_shapely())
    rivers = write_lines(site_dir / "rivers.geojson", [line_map], grid.crs, names=[f"{spec.name} river"])
    observations = []
    for k, date in enumerate(spec.dates):
        truth = land.scene(k)
        stem = date.isoformat()
        scene_path = site_dir / f"{stem}.tif"
        rgb_bands: dict[str, np.ndarray] = {}
        step = max(1, int(np.ceil(spec.size / quicklook_max)))

        cover = (clouds or {}).get(date, 0.0)

        def bands():
            gen = render_bands(truth.surface, truth.secondary, truth.weight, brightness=truth.brightness,
                               seed=np.random.SeedSequence(list(spec.seed) + [2000 + k]), options=render)
            if cover > 0:
                gen = with_clouds(gen, cloud_opacity(grid.shape, cover, seed=int(spec.seed[-1]) * 1000 + k))
            for name, arr in zip(L1C_BANDS, gen):
                if name in ("B02", "B03", "B04"):  # kept (decimated) for the quicklook
                    rgb_bands[name] = arr[::step, ::step].copy() if step > 1 else arr
                yield arr

        write_scene(scene_path, bands(), grid, date=date)
        rgb = stretch_true_colour(rgb_bands["B04"], rgb_bands["B03"], rgb_bands["B02"])
        write_quicklook(site_dir / f"{stem}.png", rgb, max_size=quicklook_max)
        geoms, conf = scene_polygons(truth, grid)
        ann = write_polygons(site_dir / f"{stem}_mining.geojson", geoms, grid, confidence=conf)
        s1_path = None
        if s1:
            s1_date = date + dt.timedelta(days=S1_DAYS_AFTER)
            db = render_backscatter(truth, seed=np.random.SeedSequence(list(spec.seed) + [3000 + k]))
            s1_path = str(write_backscatter(site_dir / f"{s1_date.isoformat()}_s1.tif", db, grid, date=s1_date))
        observations.append(Observation(site=spec.name, date=date, scene=str(scene_path), annotations=str(ann),
                                        rivers=str(rivers), latitude=spec.lat, longitude=spec.lon, s1=s1_path))
    return observations


def write_demo_data(out_dir: str | os.PathLike, sites: int = 6, size: int = 512, seed: int = 0,
                    dates: DatesArg = None, *, config: DemoConfig | None = None,
                    progress: bool | None = None, clouds: CloudsArg = None) -> Path:
    """Write a synthetic demo dataset to ``out_dir`` and return the path of its ``manifest.yaml``.

    Per site: one 13-band L1C-like GeoTIFF per date (two by default, see :func:`plan_sites` for
    ``dates``) with a Sentinel-1 VV/VH scene two days later (``config.s1``), mining polygons per date, the river centre line, PNG quicklooks. Sites lie in a
    few geographic groups across India (UTM zones 43-46) so a geographic split makes sense.
    Deterministic for a given seed. A 6-site, 512 px dataset takes a few seconds.
    ``clouds``: ``{site name: {date: cover 0..1}}`` puts clouds over those scenes.
    """
    cfg = config or DemoConfig(sites=sites, size=size, seed=seed)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise SandwatchError.about(out_dir, "exists and is not a folder", "choose another output folder")
    specs = plan_sites(cfg.sites, cfg.size, cfg.seed, dates)
    out_dir.mkdir(parents=True, exist_ok=True)
    if progress is None:
        progress = cfg.sites * cfg.size**2 > 4 * 512**2
    observations: list[Observation] = []
    for spec in tqdm(specs, desc="demo sites", unit="site", disable=not progress):
        observations += write_site(spec, out_dir, res=cfg.res, render=cfg.render, quicklook_max=cfg.quicklook_max,
                                   clouds=_site_clouds(clouds, spec.name), s1=cfg.s1)
    manifest = Manifest(name="sandwatch-demo", aoi_buffer_m=cfg.aoi_buffer_m, observations=observations)
    info = {"seed": cfg.seed, "size": cfg.size, "sites": [
        {"name": s.name, "kind": s.kind, "group": SITE_GROUPS[s.group][0], "longitude": s.lon, "latitude": s.lat,
         "crs": site_grid(s, cfg.res).crs.to_string(), "dates": [d.isoformat() for d in s.dates]} for s in specs]}
    with atomic_output(out_dir / "sites.yaml") as tmp:
        tmp.write_text("# What each synthetic site is meant to show (not an input of the pipeline).\n"
                       + yaml.safe_dump(info, sort_keys=False))
    return save_manifest(manifest, out_dir / "manifest.yaml")
