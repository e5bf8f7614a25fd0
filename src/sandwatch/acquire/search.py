"""Searching a STAC API for the Sentinel-2 items over each study area, and how clear each date
is *over the area* (``sandwatch acquire search``).

The clear fraction is measured from the SCL asset, read only over the area (GDAL range
requests on the COG, through a ``WarpedVRT`` onto the area at the SCL's own resolution,
nearest neighbour): the share of the area's pixels whose class is a clear view
(:data:`sandwatch.imagery.clouds.SCL_NOT_CLEAR` are not). Items without SCL (L1C) are measured
with the L1C spectral cloud test on B02/B03/B04 at the same coarse resolution. Items of one
date are mosaicked in the order "clearest over the area first": the same MGRS tile seen from two
orbits on one day (two datetimes, each item often a partial tile) becomes one date whose file
fills each pixel from the clearer item; the same tile at the same time in two items (a
reprocessed copy) is kept once, the newest processing baseline.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from sandwatch.acquire.sites import Area
from sandwatch.errors import SandwatchError, warn_once

EARTH_SEARCH_URL = "https://earth-search.aws.element84.com/v1"
DEFAULT_COLLECTION = "sentinel-2-l2a"
#: Columns of the candidates table, in order.
COLUMNS = ("area", "date", "clear_fraction", "covered_fraction", "clear_source", "items", "item_urls", "tiles",
           "baselines", "cloud_cover", "collection", "stac_url")


@dataclass(frozen=True)
class SearchConfig:
    """Where and what to search. ``sign``: a function applied to every asset href before it is
    read (catalogues that need signed URLs, e.g. ``planetary_computer.sign``)."""

    stac_url: str = EARTH_SEARCH_URL
    collection: str = DEFAULT_COLLECTION
    max_cloud: float | None = None          # scene-wide eo:cloud_cover prefilter, percent
    max_items: int = 1000                   # per area
    workers: int = 4
    timeout_s: float = 30.0
    sign: Callable[[str], str] | None = field(default=None, compare=False)


@dataclass
class Candidate:
    """One date of one area: the items that cover it, best first, and how clear it is there."""

    area: str
    date: dt.date
    clear_fraction: float
    covered_fraction: float
    clear_source: str
    items: list[str]
    item_urls: list[str]
    tiles: list[str]
    baselines: list[str]
    cloud_cover: float | None
    collection: str
    stac_url: str

    def row(self) -> dict:
        return {"area": self.area, "date": self.date.isoformat(), "clear_fraction": round(self.clear_fraction, 6),
                "covered_fraction": round(self.covered_fraction, 6), "clear_source": self.clear_source,
                "items": ";".join(self.items), "item_urls": ";".join(self.item_urls), "tiles": ";".join(self.tiles),
                "baselines": ";".join(self.baselines),
                "cloud_cover": "" if self.cloud_cover is None else round(self.cloud_cover, 3),
                "collection": self.collection, "stac_url": self.stac_url}


def gdal_env(timeout_s: float = 30.0) -> dict:
    """GDAL settings for reading COG windows over HTTP (range requests, no directory listing)."""
    from sandwatch.imagery.sources import REMOTE_GDAL_ENV

    return {**REMOTE_GDAL_ENV, "GDAL_HTTP_TIMEOUT": str(int(max(1, timeout_s))),
            "GDAL_HTTP_LOW_SPEED_TIME": str(int(max(1, timeout_s))), "GDAL_HTTP_LOW_SPEED_LIMIT": "1",
            "GDAL_HTTP_MAX_RETRY": "0", "VSI_CACHE": "FALSE"}


# ---- items ------------------------------------------------------------------------------------------
def band_href(item, band: str, sign: Callable[[str], str] | None = None) -> str | None:
    """The http(s) or local href of an item's asset for ``band`` (canonical name, or ``SCL``)."""
    from sandwatch.bands import canonical_band

    for key, asset in item.assets.items():
        eo = asset.extra_fields.get("eo:bands") or []
        aliases = [key] + ([eo[0].get("name", ""), eo[0].get("common_name", "")] if len(eo) == 1 else [])
        if band not in (canonical_band(a) for a in aliases) or "visual" in (asset.roles or []):
            continue
        if urlparse(asset.href).scheme in ("", "file", "http", "https"):
            return sign(asset.href) if sign else asset.href
    return None


def baseline(item) -> str:
    p = item.properties
    return str(p.get("s2:processing_baseline") or p.get("sentinel:processing_baseline") or "")


def tile_of(item) -> str:
    p = item.properties
    if p.get("grid:code"):
        return str(p["grid:code"]).replace("MGRS-", "")
    if p.get("mgrs:utm_zone"):
        return f"{p['mgrs:utm_zone']}{p.get('mgrs:latitude_band', '')}{p.get('mgrs:grid_square', '')}"
    return str(p.get("s2:mgrs_tile") or p.get("sentinel:grid_square") or item.id)


def dedupe(items: list) -> list:
    """Items of the same tile at the same time (within a minute) kept once: the newest
    processing baseline (then the latest id, e.g. ``_1_L2A`` over ``_0_L2A``)."""
    def version(it):
        try:
            return (float(baseline(it) or 0), it.id)
        except ValueError:
            return (0.0, it.id)

    kept: dict[tuple, object] = {}
    for it in items:
        when = it.datetime or it.common_metadata.start_datetime
        key = (tile_of(it), int(when.timestamp() // 60) if when else it.id)
        if key not in kept or version(it) > version(kept[key]):
            kept[key] = it
    return list(kept.values())


def item_url(item, stac_url: str = "") -> str:
    """Where the item can be read again: its self link, else its path in the STAC API."""
    return item.get_self_href() or f"{stac_url.rstrip('/')}/collections/{item.collection_id}/items/{item.id}"


def open_client(cfg: SearchConfig):
    import pystac_client

    try:
        return pystac_client.Client.open(cfg.stac_url, timeout=cfg.timeout_s)
    except Exception as err:  # noqa: BLE001 - pystac-client raises many kinds for a bad endpoint
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise SandwatchError.about(cfg.stac_url, f"is not a reachable STAC API ({first})",
                                   "check --stac-url and your connection") from None


def search_items(client, area: Area, start: dt.date, end: dt.date, cfg: SearchConfig) -> list:
    """Items of ``cfg.collection`` intersecting the area between ``start`` and ``end`` (inclusive)."""
    kw = {}
    if cfg.max_cloud is not None:
        kw["query"] = {"eo:cloud_cover": {"lte": cfg.max_cloud}}
    try:
        search = client.search(collections=[cfg.collection], intersects=area.lonlat_polygon().__geo_interface__,
                               datetime=f"{start.isoformat()}T00:00:00Z/{end.isoformat()}T23:59:59Z",
                               max_items=cfg.max_items, **kw)
        return list(search.items())
    except Exception as err:  # noqa: BLE001
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise SandwatchError.about(cfg.stac_url, f"search of {cfg.collection} failed for area {area.id} ({first})",
                                   "check --collection and --stac-url") from None


# ---- reading an asset over the area -------------------------------------------------------------------
def read_over_area(href: str, area: Area, res: float | None, resampling, timeout_s: float = 30.0,
                   out_dtype=None) -> np.ndarray:
    """One band of a (remote) raster put on the area's rectangle at ``res`` (None: the file's
    own resolution): a ``WarpedVRT``, so only the blocks over the area are requested."""
    import rasterio
    from rasterio.vrt import WarpedVRT

    from sandwatch.grid import Grid

    with rasterio.Env(**gdal_env(timeout_s)), rasterio.open(href) as src:
        grid = Grid.from_bounds(area.crs, *area.bounds, res or max(src.res))
        with WarpedVRT(src, crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height,
                       resampling=resampling, src_nodata=src.nodata if src.nodata is not None else 0,
                       nodata=0) as vrt:
            return vrt.read(1, out_dtype=out_dtype)


def _failed_read(href: str, err: Exception) -> SandwatchError:
    first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
    return SandwatchError.about(href, f"could not be read ({first})",
                                "check that the server is reachable and allows range requests, then run again")


def _item_clear(item, area: Area, cfg: SearchConfig) -> tuple[np.ndarray, np.ndarray, str]:
    """(clear bool, covered bool, source) of one item over the area, on a coarse grid."""
    from rasterio.enums import Resampling

    from sandwatch.imagery.clouds import L1C_CLOUD_BANDS, l1c_cloud, scl_not_clear

    href = band_href(item, "SCL", cfg.sign)
    try:
        if href is not None:
            scl = read_over_area(href, area, None, Resampling.nearest, cfg.timeout_s)
            return ~scl_not_clear(scl), scl != 0, "scl"
        hrefs = [band_href(item, b, cfg.sign) for b in L1C_CLOUD_BANDS]
        if None in hrefs:
            raise SandwatchError.about(f"{cfg.stac_url} item {item.id}", "has neither an SCL asset nor B02/B03/B04",
                                       "search a Sentinel-2 L2A or L1C collection (--collection)")
        offset = item_offset(item)
        dn = [read_over_area(h, area, 60.0, Resampling.average, cfg.timeout_s, "float32") for h in hrefs]
    except SandwatchError:
        raise
    except Exception as err:  # noqa: BLE001 - GDAL/HTTP failures become one line naming the URL
        raise _failed_read(href or hrefs[0], err) from None
    covered = dn[0] > 0
    cloud = l1c_cloud(*[(d - offset) / 10000.0 for d in dn])
    return covered & ~cloud, covered, "spectral"


def item_offset(item) -> float:
    """The DN offset of an item's bands, by the imagery stage's rules (baseline, Earth Search flag)."""
    from sandwatch.imagery.sources import SceneParts
    from sandwatch.imagery.stac import _stac_metadata

    parts = SceneParts(source=item.id, bands=[])
    _stac_metadata(item.properties, item.collection_id, item.id, item.datetime, parts, set())
    return float(parts.offset or 0.0)


def _resize(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if mask.shape == shape:
        return mask
    rows = (np.arange(shape[0]) * mask.shape[0] // shape[0])
    cols = (np.arange(shape[1]) * mask.shape[1] // shape[1])
    return mask[np.ix_(rows, cols)]


def measure_date(area: Area, items: list, cfg: SearchConfig) -> Candidate:
    """The mosaic of one date's items over the area: clear and covered fractions, items best first."""
    measured = [(it, *_item_clear(it, area, cfg)) for it in items]
    measured.sort(key=lambda m: (-int(m[1].sum()), -int(m[2].sum()), m[0].id))
    shape = max((m[1].shape for m in measured), key=lambda s: s[0] * s[1])
    clear = np.zeros(shape, bool)
    covered = np.zeros(shape, bool)
    for _, c, v, _ in measured:
        c, v = _resize(c, shape), _resize(v, shape)
        new = v & ~covered
        clear |= c & new
        covered |= v
    used = [m for m in measured if m[2].any()] or measured[:1]
    first = used[0][0]
    cc = first.properties.get("eo:cloud_cover")
    return Candidate(area.id, (first.datetime or first.common_metadata.start_datetime).date(),
                     float(clear.mean()), float(covered.mean()), ",".join(sorted({m[3] for m in used})),
                     [m[0].id for m in used], [item_url(m[0], cfg.stac_url) for m in used], [tile_of(m[0]) for m in used],
                     [baseline(m[0]) for m in used], None if cc is None else float(cc), cfg.collection, cfg.stac_url)


def search(areas: list[Area], start: dt.date, end: dt.date, cfg: SearchConfig = SearchConfig(),
           progress: bool = False, allow_empty: bool = False) -> list[Candidate]:
    """Candidates (area x date) with their clear fraction over the area, sorted by area and date.
    No item over any area is one error line (``allow_empty``: an empty list)."""
    from tqdm import tqdm

    if end < start:
        raise SandwatchError.about("--end", f"{end} is before --start {start}", "give an end date after the start")
    client = open_client(cfg)
    jobs, empty = [], []
    for area in areas:
        items = dedupe(search_items(client, area, start, end, cfg))
        by_date: dict[dt.date, list] = {}
        for it in items:
            by_date.setdefault((it.datetime or it.common_metadata.start_datetime).date(), []).append(it)
        if not by_date:
            empty.append(area.id)
        jobs += [(area, its) for _, its in sorted(by_date.items(), key=lambda kv: kv[0])]
    if not jobs and allow_empty:
        return []
    for area_id in empty if jobs and not allow_empty else []:
        warn_once("acquire-empty", area_id, f"area {area_id}: no {cfg.collection} item between {start} and {end} "
                  "(a site at sea or outside every tile?)")
    if not jobs:
        raise SandwatchError.about(cfg.stac_url, f"no {cfg.collection} items between {start} and {end} over any of "
                                   f"the {len(areas)} areas", "check the dates and --collection, and that the sites "
                                   "lie on land inside Sentinel-2 tiles")
    with ThreadPoolExecutor(max(1, cfg.workers)) as pool:
        futures = [pool.submit(measure_date, a, its, cfg) for a, its in jobs]
        out = [f.result() for f in tqdm(futures, desc="clear fraction", unit="date", disable=not progress)]
    return sorted(out, key=lambda c: (c.area, c.date))


# ---- the table -------------------------------------------------------------------------------------------
def write_candidates(rows: list[Candidate], path: str | os.PathLike) -> Path:
    """The candidates as CSV or Parquet (by suffix), atomically."""
    import csv

    from sandwatch.io import atomic_output

    path = Path(path)
    records = [r.row() for r in rows]
    with atomic_output(path) as tmp:
        if path.suffix.lower() == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            cols = {c: [str(r[c]) if c == "cloud_cover" else r[c] for r in records] for c in COLUMNS}
            pq.write_table(pa.table(cols), tmp)
        else:
            with open(tmp, "w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=list(COLUMNS))
                w.writeheader()
                w.writerows(records)
    return path


def read_candidates(path: str | os.PathLike) -> list[Candidate]:
    import csv

    path = Path(path)
    if not path.is_file():
        raise SandwatchError.about(path, "no such candidates table", "make it with `sandwatch acquire search`")
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        records = pq.read_table(path).to_pylist()
    else:
        with open(path, newline="") as fh:
            records = list(csv.DictReader(fh))
    out = []
    for i, r in enumerate(records):
        try:
            split = [str(r[k]).split(";") if r[k] else [] for k in ("items", "item_urls", "tiles", "baselines")]
            cc = r.get("cloud_cover")
            out.append(Candidate(r["area"], dt.date.fromisoformat(r["date"]), float(r["clear_fraction"]),
                                 float(r["covered_fraction"]), r["clear_source"], *split,
                                 float(cc) if cc not in (None, "") else None, r["collection"], r["stac_url"]))
        except (KeyError, TypeError, ValueError):
            raise SandwatchError.about(path, f"row {i + 1} is not a candidate (columns {', '.join(COLUMNS)})",
                                       "make the table with `sandwatch acquire search`") from None
    return out


__all__ = ["SearchConfig", "Candidate", "search", "measure_date", "write_candidates", "read_candidates",
           "band_href", "dedupe", "item_offset", "read_over_area", "gdal_env", "EARTH_SEARCH_URL", "DEFAULT_COLLECTION"]
