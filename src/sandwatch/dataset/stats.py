"""Dataset statistics: sites, images, area and the share of mining pixels, inside and outside the AOI.

For each observation the scene is read block by block (``block`` x ``block`` pixels, one band:
enough for the valid mask), the mining polygons are rasterised on the same block (a pixel is
mine when its centre is inside a polygon) and so is the observation's AOI. Only valid pixels
count. The arithmetic is pure (:func:`count_block`, :func:`summarize`), the reading is around it
(:func:`observation_stats`, :func:`dataset_stats`).

Definitions (as in the published dataset table):

* ``sites``: distinct sites ("rectangles"); ``images``: observations;
* ``km2``: area of the valid pixels, each site counted once (its largest image), so two dates
  of one rectangle are not counted twice; ``images_km2`` adds every image;
* ``mine_fraction``: mine pixels / valid pixels over all images;
  ``mine_fraction_inside_aoi``: mine pixels in the AOI / valid AOI pixels;
  ``mine_fraction_outside_aoi``: mine pixels outside the AOI / valid pixels outside it;
  ``aoi_fraction``: valid AOI pixels / valid pixels.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field

import numpy as np

from sandwatch.dataset.manifest import Manifest, Observation
from sandwatch.errors import SandwatchError
from sandwatch.grid import Grid, Window
from sandwatch.published import AOI_BUFFER_M


@dataclass
class ObservationStats:
    """Pixel counts of one observation (valid pixels only)."""

    id: str
    site: str
    valid_pixels: int = 0
    mine_pixels: int = 0
    aoi_pixels: int = 0
    mine_in_aoi_pixels: int = 0
    pixel_area_m2: float = 100.0
    width: int = 0
    height: int = 0
    split: str | None = None

    @property
    def km2(self) -> float:
        return self.valid_pixels * self.pixel_area_m2 / 1e6

    @property
    def mine_fraction(self) -> float:
        return _ratio(self.mine_pixels, self.valid_pixels)

    @property
    def mine_fraction_inside_aoi(self) -> float:
        return _ratio(self.mine_in_aoi_pixels, self.aoi_pixels)

    @property
    def mine_fraction_outside_aoi(self) -> float:
        return _ratio(self.mine_pixels - self.mine_in_aoi_pixels, self.valid_pixels - self.aoi_pixels)

    def add(self, valid: int, mine: int, aoi: int, mine_in_aoi: int) -> None:
        self.valid_pixels += valid
        self.mine_pixels += mine
        self.aoi_pixels += aoi
        self.mine_in_aoi_pixels += mine_in_aoi

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(km2=self.km2, mine_fraction=self.mine_fraction,
                 mine_fraction_inside_aoi=self.mine_fraction_inside_aoi,
                 mine_fraction_outside_aoi=self.mine_fraction_outside_aoi)
        return d


@dataclass
class DatasetStats:
    """Totals over a manifest; ``observations`` holds the per-observation rows."""

    sites: int
    images: int
    km2: float
    images_km2: float
    valid_pixels: int
    mine_pixels: int
    aoi_pixels: int
    mine_in_aoi_pixels: int
    mine_fraction: float
    mine_fraction_inside_aoi: float
    mine_fraction_outside_aoi: float
    aoi_fraction: float
    observations: list[ObservationStats] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "observations"}
        d["observations"] = [o.to_dict() for o in self.observations]
        return d


def _ratio(a: float, b: float) -> float:
    return float(a) / float(b) if b else math.nan


def count_block(valid: np.ndarray, mine: np.ndarray | None, aoi: np.ndarray | None) -> tuple[int, int, int, int]:
    """(valid, mine, aoi, mine inside aoi) pixel counts of one block; only valid pixels count.

    ``mine`` and ``aoi`` are masks of the same shape as ``valid`` (nonzero = yes) or None (none).
    """
    valid = np.asarray(valid, dtype=bool)
    m = valid & (np.asarray(mine) != 0) if mine is not None else np.zeros_like(valid)
    a = valid & (np.asarray(aoi) != 0) if aoi is not None else np.zeros_like(valid)
    return int(valid.sum()), int(m.sum()), int(a.sum()), int((m & a).sum())


def summarize(rows: Iterable[ObservationStats]) -> DatasetStats:
    """Totals over per-observation counts (pure arithmetic; see the module docstring)."""
    rows = list(rows)
    valid = sum(r.valid_pixels for r in rows)
    mine = sum(r.mine_pixels for r in rows)
    aoi = sum(r.aoi_pixels for r in rows)
    mine_aoi = sum(r.mine_in_aoi_pixels for r in rows)
    site_km2: dict[str, float] = {}
    for r in rows:
        site_km2[r.site] = max(site_km2.get(r.site, 0.0), r.km2)
    return DatasetStats(
        sites=len(site_km2), images=len(rows), km2=sum(site_km2.values()), images_km2=sum(r.km2 for r in rows),
        valid_pixels=valid, mine_pixels=mine, aoi_pixels=aoi, mine_in_aoi_pixels=mine_aoi,
        mine_fraction=_ratio(mine, valid), mine_fraction_inside_aoi=_ratio(mine_aoi, aoi),
        mine_fraction_outside_aoi=_ratio(mine - mine_aoi, valid - aoi), aoi_fraction=_ratio(aoi, valid),
        observations=rows)


def blocks(grid: Grid, block: int = 1024) -> Iterator[Window]:
    """Windows of at most ``block`` x ``block`` pixels tiling the grid, row by row."""
    if block <= 0:
        raise SandwatchError.about(f"--block {block}", "must be a positive number of pixels", "use e.g. 1024")
    for row in range(0, grid.height, block):
        for col in range(0, grid.width, block):
            yield Window(row, col, min(block, grid.height - row), min(block, grid.width - col))


def _observation_aoi(obs: Observation, grid: Grid, buffer_m: float):
    """The AOI geometry of an observation on ``grid`` (None when it names no rivers and no AOI)."""
    if obs.aoi is None and obs.rivers is None:
        return None
    from sandwatch.aoi import aoi_for_observation

    return aoi_for_observation(obs, grid, buffer_m=buffer_m)


def observation_stats(obs: Observation, *, aoi_buffer_m: float = AOI_BUFFER_M, block: int = 1024,
                      progress=None) -> ObservationStats:
    """Count valid, mine and AOI pixels of one observation, reading ``block``-sized windows.

    ``progress``: an optional tqdm bar advanced by the number of pixels of each block.
    """
    from sandwatch.aoi import rasterize_aoi
    from sandwatch.labels import polygons_on_grid, rasterize_labels

    scene = obs.open_scene()
    grid = scene.grid
    # read and reproject the polygons once, then burn them block by block
    polygons = polygons_on_grid(obs.annotations, grid) if obs.annotations else None
    aoi_geom = _observation_aoi(obs, grid, aoi_buffer_m)
    first_band = [scene.bands[0]]
    row = ObservationStats(obs.id, obs.site, pixel_area_m2=grid.pixel_area_m2, width=grid.width,
                           height=grid.height, split=obs.split)
    for win in blocks(grid, block):
        _, valid = scene.read(win, bands=first_band)
        mine = None
        if polygons is not None and len(polygons):
            mine, _ = rasterize_labels(polygons, grid, window=win)
        aoi = rasterize_aoi(aoi_geom, grid, window=win) if aoi_geom is not None else None
        row.add(*count_block(valid, mine, aoi))
        if progress is not None:
            progress.update(win.size)
    return row


def dataset_stats(manifest: Manifest, progress: bool = True, *, block: int = 1024) -> DatasetStats:
    """Statistics of every observation of a manifest (see the module docstring)."""
    from tqdm.auto import tqdm

    rows = []
    with tqdm(total=len(manifest.observations), desc="dataset stats", unit="image", disable=not progress,
              leave=False) as bar:
        for obs in manifest.observations:
            bar.set_postfix_str(obs.id[-40:], refresh=False)
            rows.append(observation_stats(obs, aoi_buffer_m=manifest.aoi_buffer_m, block=block))
            bar.update(1)
    return summarize(rows)


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.2f} %"


def format_stats(stats: DatasetStats, per_observation: bool = False) -> str:
    """A table like the published one (rectangles, images, km2, mine share inside/outside AOI)."""
    lines = [
        f"{'sites (rectangles)':<28}{stats.sites:>12}",
        f"{'images':<28}{stats.images:>12}",
        f"{'area km2 (each site once)':<28}{stats.km2:>12.1f}",
        f"{'area km2 (all images)':<28}{stats.images_km2:>12.1f}",
        f"{'mine pixels':<28}{_pct(stats.mine_fraction):>12}",
        f"{'  inside AOI':<28}{_pct(stats.mine_fraction_inside_aoi):>12}",
        f"{'  outside AOI':<28}{_pct(stats.mine_fraction_outside_aoi):>12}",
        f"{'AOI share of pixels':<28}{_pct(stats.aoi_fraction):>12}",
    ]
    if per_observation:
        lines.append("")
        lines.append(f"{'observation':<48} {'km2':>8} {'mine':>8} {'in AOI':>8} {'out AOI':>8} split")
        for r in stats.observations:
            lines.append(f"{r.id[:48]:<48} {r.km2:>8.1f} {_pct(r.mine_fraction):>8} "
                         f"{_pct(r.mine_fraction_inside_aoi):>8} {_pct(r.mine_fraction_outside_aoi):>8} "
                         f"{r.split or '-'}")
    return "\n".join(lines)
