"""Finding the bands of a scene: multi-band GeoTIFFs, folders of per-band files, STAC items
(the STAC finder and its href rules are in :mod:`sandwatch.imagery.stac`).

Each finder returns a :class:`SceneParts`: the band files (path, band index inside the file,
canonical name, grid), the SCL file if any, and what the metadata says about level, date and
DN offset. No pixels are read here, only headers (and, for SAFE products, the small MTD XML).

Offset rules (``reflectance = (DN - offset) / 10000``), in order:

1. ``offset=`` given by the caller wins.
2. STAC: ``earthsearch:boa_offset_applied`` true means Earth Search already shifted the DNs
   back (the COGs hold harmonised values), so the offset is 0. Otherwise a
   ``s2:processing_baseline`` >= ``04.00`` means the +1000 shift is in the DNs: offset 1000.
   (Earth Search's ``raster:bands`` ``offset: -0.1`` is not used: it is documented as wrong
   on some items, while the flag is the maintainers' "truth".)
3. SAFE: ``RADIO_ADD_OFFSET`` (L1C) / ``BOA_ADD_OFFSET`` (L2A) in ``MTD_MSI*.xml``; failing
   that, the baseline in the product name (``_N0400_``) or XML ``PROCESSING_BASELINE``.
4. GeoTIFF: GDAL band scale/offset metadata (``scale=0.0001, offset=-0.1`` means 1000), or
   tags ``BOA_ADD_OFFSET`` / ``RADIO_ADD_OFFSET`` / ``PROCESSING_BASELINE``.
5. Otherwise 0. An acquisition date on or after 2022-01-25 is *not* taken as evidence on its
   own: Earth Engine's ``*_HARMONIZED`` exports (the usual source of GeoTIFFs) have the shift
   removed already. Pass ``offset=1000`` (``--offset 1000``) for raw baseline-04 DNs.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import rasterio
from rasterio.errors import RasterioIOError

from sandwatch.bands import BANDS, L1C_BANDS, L2A_BANDS, RGB_BANDS, S1_BANDS, band_order, canonical_band, parse_band_list
from sandwatch.errors import SandwatchError
from sandwatch.grid import Grid

#: GDAL configuration used whenever a scene touches http(s) files.
REMOTE_GDAL_ENV = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_HTTP_MAX_RETRY": "3",
    "GDAL_HTTP_RETRY_DELAY": "1",
    "CPL_VSIL_CURL_USE_HEAD": "NO",
}

RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt", ".img")


@dataclass(frozen=True)
class BandFile:
    """One band of a scene: which file, which band index (1-based) inside it, on what grid."""

    name: str
    path: str
    index: int
    grid: Grid
    nodata: float | None
    dtype: str
    resolution_m: float
    #: how a Sentinel-1 band's values are stored: "dB" or "linear" (power); "" for other bands
    stored: str = ""


@dataclass
class SceneParts:
    source: str
    bands: list[BandFile]
    scl: BandFile | None = None
    level: str | None = None
    date: dt.date | None = None
    offset: float | None = None
    offset_source: str = "default"
    scale: float | None = None
    remote: bool = False
    extra: dict = field(default_factory=dict)


# ---- small helpers ----------------------------------------------------------------------------
def is_url(source: str) -> bool:
    return urlparse(str(source)).scheme in ("http", "https")


def _resolution_m(grid: Grid) -> float:
    if grid.crs is None:
        return float(max(grid.res))
    return round(math.sqrt(grid.pixel_area_m2), 3)


def _open_header(path: str):
    """Open a raster for its header, turning GDAL failures into one-line errors."""
    if not is_url(path) and not os.path.exists(path):
        raise SandwatchError.about(path, "no such file", "check the path")
    try:
        if is_url(path):
            with rasterio.Env(**REMOTE_GDAL_ENV):
                return rasterio.open(path)
        return rasterio.open(path)
    except (RasterioIOError, rasterio.errors.RasterioError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        if is_url(path):
            raise SandwatchError.about(path, f"cannot be read over the network ({first})",
                                       "check the URL, that the server allows range requests, and your connection") from None
        raise SandwatchError.about(
            path, f"cannot be read as a raster ({first})",
            "check that it is a GeoTIFF/COG/JPEG2000 and not truncated (download it again)") from None


def _band_file(name: str, path: str, index: int, ds) -> BandFile:
    if ds.crs is None:
        raise SandwatchError.about(path, "has no coordinate reference system", "use a georeferenced GeoTIFF or JPEG2000")
    grid = Grid.from_dataset(ds)
    nodata = ds.nodatavals[index - 1]
    dtype = ds.dtypes[index - 1]
    if nodata is None and np.issubdtype(np.dtype(dtype), np.integer):
        nodata = 0.0
    stored = _backscatter_units(path, index, ds) if BANDS[name].units == "dB" else ""
    return BandFile(name, path, index, grid, None if nodata is None else float(nodata), dtype, _resolution_m(grid),
                    stored)


_DB_WORDS = ("DB", "DECIBEL", "DECIBELS")
_LINEAR_WORDS = ("LINEAR", "POWER", "INTENSITY", "AMPLITUDE^2", "NATURAL")


def _backscatter_units(path: str, index: int, ds) -> str:
    """``"dB"`` or ``"linear"`` for a Sentinel-1 band: the band's units metadata, or the tags
    ``S1_UNITS`` / ``UNITS``; without them, a small decimated read decides (backscatter in dB
    is negative over nearly every surface, linear power never is)."""
    declared = [ds.units[index - 1] if ds.units else "", ds.tags(index).get("UNITS", ""),
                ds.tags().get("S1_UNITS", ""), ds.tags().get("UNITS", "")]
    for text in declared:
        key = str(text or "").strip().upper()
        if key in _DB_WORDS:
            return "dB"
        if key in _LINEAR_WORDS:
            return "linear"
    side = max(1, min(64, ds.width, ds.height))
    sample = ds.read(index, out_shape=(side, side), out_dtype="float64")
    nodata = ds.nodatavals[index - 1]
    values = sample[np.isfinite(sample) & (sample != nodata if nodata is not None else True)]
    if values.size == 0:
        raise SandwatchError.about(path, f"band {index} holds no valid backscatter to tell dB from linear",
                                   "set the band's units metadata to dB or linear (gdal_edit.py -units dB)")
    return "dB" if (values < 0).mean() > 0.5 else "linear"


_DATE_PATTERNS = [
    (re.compile(r"(?<!\d)(\d{8})T\d{6}"), "%Y%m%d"),
    (re.compile(r"(?<!\d)(\d{4}-\d{2}-\d{2})(?!\d)"), "%Y-%m-%d"),
    (re.compile(r"(?<![\dA-Za-z])(\d{8})(?![\dA-Za-z])"), "%Y%m%d"),
]


def date_from_text(text: str) -> dt.date | None:
    """The first plausible acquisition date in a name (``T33UUU_20170216T102101``, ``2021-01-15``)."""
    for pattern, fmt in _DATE_PATTERNS:
        for match in pattern.finditer(str(text)):
            try:
                day = dt.datetime.strptime(match.group(1), fmt).date()
            except ValueError:
                continue
            if 2015 <= day.year <= 2100:
                return day
    return None


def _baseline_offset(baseline: str | None) -> float | None:
    if not baseline:
        return None
    try:
        return 1000.0 if float(str(baseline).replace("N", "")[:5].replace("_", ".")) >= 4.0 else 0.0
    except ValueError:
        return None


def _level_from_text(text: str | None) -> str | None:
    t = str(text or "").upper()
    if "L2A" in t or "MSI2A" in t or "S2_SR" in t:
        return "L2A"
    if "L1C" in t or "MSI1C" in t:
        return "L1C"
    return None


# ---- 1. one multi-band GeoTIFF/COG ------------------------------------------------------------
def parts_from_file(path: str, bands=None) -> SceneParts:
    ds = _open_header(path)
    with ds:
        count = ds.count
        if bands is not None:
            names = list(parse_band_list(bands))
            if len(names) != count:
                raise SandwatchError.about(
                    path, f"has {count} band{'s' * (count != 1)} but {len(names)} names were given",
                    f"pass --bands with {count} name{'s' * (count != 1)}")
        else:
            names = _names_from_descriptions(path, ds)
        files = [_band_file(n, path, i + 1, ds) for i, n in enumerate(names)]
        tags = {k.upper(): v for k, v in ds.tags().items()}
        scales, offsets = ds.scales, ds.offsets
    scl = next((f for f in files if f.name == "SCL"), None)
    files = [f for f in files if f.name != "SCL"]
    if not files:
        raise SandwatchError.about(path, "holds only an SCL band", "open the file with the reflectance bands")
    parts = SceneParts(source=str(path), bands=files, scl=scl, remote=is_url(path))
    names_set = {f.name for f in files}
    if names_set <= set(RGB_BANDS) and files[0].dtype == "uint8":
        parts.level = "RGB"
    elif names_set <= set(S1_BANDS):
        parts.level = "S1"
    else:
        parts.level = (
            _level_from_text(tags.get("PROCESSING_LEVEL") or tags.get("LEVEL") or tags.get("PRODUCT_TYPE"))
            or ("L1C" if "B10" in names_set else None)
            or ("L2A" if scl is not None else None)
            or ("L2A" if tuple(f.name for f in files) == L2A_BANDS else None)
            or _level_from_text(Path(str(path)).name)
        )
    for key in ("DATE", "DATETIME", "ACQUISITION_DATE", "DATE_ACQUIRED", "SENSING_TIME"):
        if key in tags and (day := date_from_text(tags[key].replace(":", "-"))):
            parts.date = day
            break
    if parts.date is None:
        parts.date = date_from_text(Path(urlparse(str(path)).path).name)
    # Offset from GDAL scale/offset metadata or tags.
    i0 = files[0].index - 1
    if scales and offsets and scales[i0] not in (None, 0, 1.0) and offsets[i0]:
        parts.offset, parts.offset_source = round(-offsets[i0] / scales[i0], 6), "GDAL band offset/scale"
    for key in ("BOA_ADD_OFFSET", "RADIO_ADD_OFFSET"):
        if parts.offset is None and key in tags:
            try:
                parts.offset, parts.offset_source = 0.0 - float(tags[key]) + 0.0, f"tag {key}"
            except ValueError:
                pass
    if parts.offset is None and (off := _baseline_offset(tags.get("PROCESSING_BASELINE"))) is not None:
        parts.offset, parts.offset_source = off, "tag PROCESSING_BASELINE"
    for key in ("QUANTIFICATION_VALUE", "BOA_QUANTIFICATION_VALUE"):
        try:
            if key in tags and float(tags[key]) > 0:
                parts.scale = float(tags[key])
                break
        except ValueError:
            pass
    return parts


def _names_from_descriptions(path: str, ds) -> list[str]:
    count = ds.count
    descriptions = list(ds.descriptions)
    if all(d for d in descriptions):
        names = [canonical_band(d) for d in descriptions]
        if all(names) and len(set(names)) == count:
            return names  # type: ignore[return-value]
        if all(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise SandwatchError.about(path, f"band descriptions repeat {','.join(dup)}",
                                       f"pass --bands with {count} distinct names")
    if count == 1 and (m := _BAND_FILE.search(Path(urlparse(str(path)).path).name)):
        return [canonical_band(m.group(1))]  # type: ignore[list-item]
    if count == 13:
        return list(L1C_BANDS)
    if count == 12:
        return list(L2A_BANDS)
    if count == 3 and ds.dtypes[0] == "uint8":
        return list(RGB_BANDS)
    known = [d for d in descriptions if d]
    hint = f" (descriptions: {', '.join(map(str, known))})" if known else ""
    raise SandwatchError.about(path, f"has {count} band{'s' * (count != 1)} without recognisable band names{hint}",
                               f"pass --bands with {count} name{'s' * (count != 1)}, e.g. --bands "
                               + ",".join((L1C_BANDS * 2)[1:count + 1]))


# ---- 2. a folder of per-band files (plain, or a SAFE product) ---------------------------------
_BAND_FILE = re.compile(r"(?:^|_)(B0?[1-9]|B1[0-2]|B8A|SCL|VV|VH)(?:_(\d+)m)?\.(?:jp2|tiff?|vrt)$", re.IGNORECASE)


def _candidate_files(folder: Path) -> tuple[list[Path], Path | None]:
    """Band-file candidates in a folder, and the SAFE root if the folder belongs to one."""
    safe_root = None
    img_dirs: list[Path] = []
    granules = sorted(folder.glob("GRANULE/*/IMG_DATA"))
    if granules:
        safe_root = folder
        img_dirs = granules
    elif folder.name == "IMG_DATA":
        img_dirs = [folder]
        if folder.parent.parent.name == "GRANULE":
            safe_root = folder.parent.parent.parent
    else:
        img_dirs = [folder]
    files: list[Path] = []
    for d in img_dirs:
        files += sorted(p for p in d.iterdir() if p.is_file())
        for sub in ("R10m", "R20m", "R60m"):
            if (d / sub).is_dir():
                files += sorted(p for p in (d / sub).iterdir() if p.is_file())
    files = [p for p in files if p.suffix.lower() in RASTER_SUFFIXES and not p.name.upper().startswith("MSK_")]
    return files, safe_root


def parts_from_folder(folder: Path) -> SceneParts:
    files, safe_root = _candidate_files(folder)
    found: dict[str, list[BandFile]] = {}
    for p in files:
        m = _BAND_FILE.search(p.name)
        if not m:
            continue
        name = canonical_band(m.group(1))
        if name is None:
            continue
        ds = _open_header(str(p))
        with ds:
            if ds.count != 1:
                continue
            found.setdefault(name, []).append(_band_file(name, str(p), 1, ds))
    if not [n for n in found if n != "SCL"]:
        raise SandwatchError.about(
            folder, "holds no recognisable Sentinel-2 band files",
            "name them like T33UUU_20170216T102101_B02.jp2 or B02.tif, or point at a SAFE product folder")
    chosen: dict[str, BandFile] = {}
    for name, options in found.items():
        options.sort(key=lambda f: f.resolution_m)
        if len(options) > 1 and math.isclose(options[0].resolution_m, options[1].resolution_m, rel_tol=1e-6):
            raise SandwatchError.about(
                folder, f"holds band {name} twice ({Path(options[0].path).name} and {Path(options[1].path).name})",
                "keep one file per band in the folder")
        chosen[name] = options[0]
    ordered = [chosen[n] for n in band_order([n for n in chosen if n != "SCL"])]
    parts = SceneParts(source=str(folder), bands=ordered, scl=chosen.get("SCL"))
    _check_same_extent(folder, ordered + ([parts.scl] if parts.scl else []))
    names = {f.name for f in ordered}
    parts.level = "L1C" if "B10" in names else ("L2A" if parts.scl is not None else None)
    if names <= set(S1_BANDS):
        parts.level = "S1"
    if safe_root is not None:
        _safe_metadata(safe_root, parts)
    if safe_root is None:
        from sandwatch.imagery.stac import folder_item_metadata

        folder_item_metadata(folder, parts)      # e.g. COGs downloaded with their STAC item
    if parts.level is None:
        parts.level = _level_from_text(folder.name)
    if parts.date is None:
        parts.date = date_from_text(Path(ordered[0].path).name) or date_from_text(folder.name)
    return parts


def _check_same_extent(what, files: list[BandFile]) -> None:
    ref = min(files, key=lambda f: f.resolution_m)
    tol = 0.5 * min(ref.grid.res)
    for f in files:
        if f.grid.crs != ref.grid.crs:
            raise SandwatchError.about(
                f.path, f"is in {f.grid.crs.to_string()} but {Path(ref.path).name} is in {ref.grid.crs.to_string()}",
                "all band files of a scene must share one CRS; reproject them first (gdalwarp -t_srs)")
        if any(abs(a - b) > tol for a, b in zip(f.grid.bounds, ref.grid.bounds)):
            raise SandwatchError.about(
                f.path, f"covers {tuple(round(v, 2) for v in f.grid.bounds)} but {Path(ref.path).name} covers "
                f"{tuple(round(v, 2) for v in ref.grid.bounds)}",
                "all band files of a scene must cover the same extent; use files of one product")


def _safe_metadata(root: Path, parts: SceneParts) -> None:
    name = root.name.upper()
    parts.level = parts.level if parts.level == "L1C" else (_level_from_text(name) or parts.level)
    parts.date = date_from_text(name) or parts.date
    m = re.search(r"_N(\d{2})(\d{2})_", name)
    if m:
        parts.extra["processing_baseline"] = f"{m.group(1)}.{m.group(2)}"
    for mtd in sorted(root.glob("MTD_MSI*.xml")):
        text = mtd.read_text(errors="replace")
        lev = _level_from_text(mtd.name)
        parts.level = lev or parts.level
        offsets = re.findall(r"<(?:RADIO|BOA)_ADD_OFFSET[^>]*>\s*(-?\d+(?:\.\d+)?)\s*<", text)
        if offsets:
            parts.offset, parts.offset_source = 0.0 - float(offsets[0]) + 0.0, f"{mtd.name} ADD_OFFSET"
        if (q := re.search(r"<(?:BOA_)?QUANTIFICATION_VALUE[^>]*>\s*(\d+(?:\.\d+)?)\s*<", text)):
            parts.scale = float(q.group(1)) or None
        if (b := re.search(r"<PROCESSING_BASELINE>\s*([\d.]+)\s*<", text)):
            parts.extra["processing_baseline"] = b.group(1)
        if (t := re.search(r"<PRODUCT_START_TIME>\s*(\d{4}-\d{2}-\d{2})", text)):
            parts.date = date_from_text(t.group(1)) or parts.date
        break
    if parts.offset is None and (off := _baseline_offset(parts.extra.get("processing_baseline"))) is not None:
        parts.offset, parts.offset_source = off, "processing baseline in the product name"


def find_parts(source, bands=None, access=None) -> SceneParts:
    """Dispatch on the kind of source; see the module docstring. ``access``: what a STAC
    item's hrefs may reach (:class:`~sandwatch.imagery.stac.StacAccess`; default:
    :func:`~sandwatch.imagery.stac.stac_access`)."""
    from sandwatch.imagery.stac import looks_like_stac, parts_from_stac

    src = str(source)
    if looks_like_stac(src):
        parts = parts_from_stac(src, access)
    elif not is_url(src) and os.path.isdir(src):
        parts = parts_from_folder(Path(src))
    else:
        return parts_from_file(src, bands)
    if bands is not None:
        wanted = parse_band_list(bands)
        have = [f.name for f in parts.bands]
        missing = [b for b in wanted if b not in have]
        if missing:
            raise SandwatchError.about(src, f"lacks band(s) {','.join(missing)} (it has {','.join(have)})",
                                       "pass --bands with bands the scene has")
        parts.bands = [next(f for f in parts.bands if f.name == b) for b in wanted]
    return parts


__all__ = ["BandFile", "SceneParts", "find_parts", "date_from_text", "is_url", "REMOTE_GDAL_ENV"]
