"""The test catalogue: items like the real Earth Search item in ``../shared/data/s2-l2a-29RKH-cogs``
for more dates (clear, cloudy, changed landscape, another baseline, two half tiles, a reprocessed
copy, no SCL), their files derived from the real COGs, served by nginx; and the servers started
once per process (:func:`acquire_servers`) for the acquisition tests and benchmark."""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stacservers import FaultProxy, Nginx, Postgres, StacApi
# ---- a catalogue built from the real Earth Search item ------------------------------------------------
REAL_ITEM = "S2A_29RKH_20200219_0_L2A"


def write_like(src_path: Path, dst: Path, fn=None, cols: tuple[int, int] | None = None) -> Path:
    """A COG like ``src_path`` (same tiling, compression, overviews) whose pixels are
    ``fn(array)``; ``cols`` keeps only that column range (in the file's own pixels)."""
    import rasterio
    import rasterio.shutil
    from rasterio.io import MemoryFile
    from rasterio.windows import Window

    with rasterio.open(src_path) as src:
        window = Window(cols[0], 0, cols[1] - cols[0], src.height) if cols else Window(0, 0, src.width, src.height)
        data = src.read(1, window=window)
        profile = {**src.profile, "width": int(window.width), "height": int(window.height),
                   "transform": src.window_transform(window)}
        blocks = src.block_shapes[0][0]
    data = fn(data) if fn else data
    dst.parent.mkdir(parents=True, exist_ok=True)
    with MemoryFile() as mem:
        with mem.open(**{**profile, "driver": "GTiff"}) as ds:
            ds.write(data.astype(profile["dtype"]), 1)
        with mem.open() as ds:
            rasterio.shutil.copy(ds, dst, driver="COG", compress="DEFLATE", blocksize=blocks, overview_resampling="nearest")
    return dst


class Catalogue:
    """Items served by nginx at ``base_url`` from ``root``: the real item's files under
    ``real/``, derived files under one folder per item."""

    def __init__(self, root: Path, real_dir: Path, base_url: str, collection: str = "sentinel-2-l2a"):
        from sandwatch.bands import canonical_band

        self.root, self.real_dir, self.base_url, self.collection = Path(root), Path(real_dir), base_url, collection
        self.root.mkdir(parents=True, exist_ok=True)
        if not (self.root / "real").exists():
            (self.root / "real").symlink_to(self.real_dir.resolve())
        self.base = json.loads((self.real_dir / f"{REAL_ITEM}.json").read_text())
        #: asset key -> file name, for the band and SCL assets whose file is here
        self.files = {k: Path(a["href"]).name for k, a in self.base["assets"].items()
                      if canonical_band(k) and not k.endswith("-jp2") and (self.real_dir / Path(a["href"]).name).exists()}
        self.items: list[dict] = []

    def derive(self, folder: str, name: str, fn=None, cols=None) -> str:
        """A changed copy of a real file under ``folder``; returns its path relative to the root."""
        write_like(self.real_dir / name, self.root / folder / name, fn, cols)
        return f"{folder}/{name}"

    def item(self, item_id: str, when: str, files: dict[str, str] | None = None, *, drop=(), props=None,
             tile: str | None = None, bbox=None, prefix: str = "", collection: str | None = None) -> dict:
        """An item like the real one at ``when``; ``files``: file name -> path under the root
        (default: the real file); ``drop``: asset keys left out; ``prefix``: URL path prefix."""
        item = json.loads(json.dumps(self.base))
        item["id"], item["collection"] = item_id, collection or self.collection
        item["properties"].update({"datetime": when, **(props or {})})
        if tile:
            item["properties"]["grid:code"] = f"MGRS-{tile}"
        if bbox:
            item["bbox"] = list(bbox)
            w, s, e, n = bbox
            item["geometry"] = {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}
        assets = {}
        for key, name in self.files.items():
            if key in drop:
                continue
            rel = (files or {}).get(name, f"real/{name}")
            assets[key] = {**item["assets"][key], "href": f"{self.base_url}/{prefix}{rel}"}
        item["assets"] = assets
        item["links"] = []
        self.items.append(item)
        return item

    def collections_json(self) -> list[dict]:
        return [self.collection_json(c) for c in sorted({i["collection"] for i in self.items})]

    def collection_json(self, name: str | None = None) -> dict:
        return {"type": "Collection", "stac_version": "1.0.0", "id": name or self.collection, "description": "test",
                "license": "proprietary", "links": [],
                "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]},
                           "temporal": {"interval": [["2015-06-27T00:00:00Z", None]]}}}


# ---- the test catalogue -------------------------------------------------------------------------------
TILE_X0, TILE_Y0 = 199980.0, 2800020.0          # the real tile's corner (EPSG:32629)
EPSG = 32629
#: A 2 x 2 km area on the 200 m SCL lattice, clear on the real date, in the last (small) block of
#: every file, so that what travels is mostly what the area needs.
AREA_A = (303180.0, 2693020.0, 305180.0, 2695020.0)
#: A 4 x 4 km area across the seam of the two half tiles of 2020-09-16.
AREA_B = (252180.0, 2700020.0, 256180.0, 2704020.0)
WEST_END_X, EAST_START_X = 255180.0, 253380.0    # both on the 600 m lattice of the 60 m bands
L2A_FILES = ("B01.tif", "B02.tif", "B03.tif", "B04.tif", "B05.tif", "B06.tif", "B07.tif", "B08.tif", "B8A.tif",
             "B09.tif", "B11.tif", "B12.tif")
OTHER = {"s2:processing_baseline": "04.00", "earthsearch:boa_offset_applied": False}


def _cols(name: str, x0: float, x1: float | None, real_dir: Path) -> tuple[int, int]:
    import rasterio

    with rasterio.open(real_dir / name) as ds:
        res = ds.transform.a
        return int(round((x0 - TILE_X0) / res)), ds.width if x1 is None else int(round((x1 - TILE_X0) / res))


def _in_area(arr: np.ndarray, bounds, res: float, value) -> np.ndarray:
    out = arr.copy()
    r0, r1 = int((TILE_Y0 - bounds[3]) / res), int((TILE_Y0 - bounds[1]) / res)
    c0, c1 = int((bounds[0] - TILE_X0) / res), int((bounds[2] - TILE_X0) / res)
    out[r0:r1, c0:c1] = value
    return out


def _res(name: str) -> float:
    return 100.0 if name in ("B02.tif", "B03.tif", "B04.tif", "B08.tif") else (600.0 if name in ("B01.tif", "B09.tif")
                                                                               else 200.0)


def build_test_catalogue(cat: Catalogue) -> dict:
    """The items (see the module docstring); returns facts the tests check against."""
    real = cat.real_dir
    cat.item(REAL_ITEM, "2020-02-19T11:34:25Z")
    cat.item("S2A_29RKH_20200310_0_L2A", "2020-03-10T11:34:25Z")
    cloudy = {"SCL.tif": cat.derive("d0419", "SCL.tif", lambda a: np.where(a > 0, 9, 0))}
    cat.item("S2A_29RKH_20200419_0_L2A", "2020-04-19T11:34:25Z", cloudy)
    west_half = (AREA_A[0], AREA_A[1], (AREA_A[0] + AREA_A[2]) / 2, AREA_A[3])
    half = {"SCL.tif": cat.derive("d0429", "SCL.tif", lambda a: _in_area(a, west_half, 200.0, 9))}
    cat.item("S2A_29RKH_20200429_0_L2A", "2020-04-29T11:34:25Z", half)
    water = {"B03.tif": 1500, "B08.tif": 300, "B11.tif": 100, "B12.tif": 80, "SCL.tif": 6}
    changed = {n: cat.derive("d0608", n, lambda a, n=n, v=v: _in_area(a, AREA_A, _res(n), v)) for n, v in water.items()}
    cat.item("S2A_29RKH_20200608_0_L2A", "2020-06-08T11:34:25Z", changed)
    cat.item("S2A_29RKH_20200703_0_L2A", "2020-07-03T11:34:25Z")
    shifted = {n: cat.derive("b0400", n, lambda a: np.where(a > 0, a + 1000, 0)) for n in L2A_FILES}
    cat.item("S2B_29RKH_20200812_0_L2A", "2020-08-12T11:34:25Z", shifted, props=OTHER)
    west = {n: cat.derive("w0916", n, None, _cols(n, TILE_X0, WEST_END_X, real)) for n in (*L2A_FILES, "SCL.tif")}
    for n in L2A_FILES:      # the west half in baseline 04.00 (+1000), the east half in 02.14
        write_like(cat.root / shifted[n], cat.root / west[n], None, _cols(n, TILE_X0, WEST_END_X, real))
    east = {n: cat.derive("e0916", n, None, _cols(n, EAST_START_X, None, real)) for n in (*L2A_FILES, "SCL.tif")}
    cat.item("S2A_29RKH_20200916_0_L2A", "2020-09-16T11:34:25Z", west, props=OTHER, tile="29RKH")
    cat.item("S2A_29RKJ_20200916_0_L2A", "2020-09-16T11:34:26Z", east, tile="29RKJ")
    cat.item("S2A_29RKH_20201011_0_L2A", "2020-10-11T11:34:25Z")
    cat.item("S2A_29RKH_20201011_1_L2A", "2020-10-11T11:34:25Z", shifted, props=OTHER)
    cat.item("S2A_29RKH_20201105_0_L2A", "2020-11-05T11:34:25Z", drop=("scl",))
    # an L1C-like item (the real bands under an L1C product type; baseline 04.00, so offset 1000)
    cat.item("S2A_29RKH_20201105_0_L1C", "2020-11-05T11:34:25Z", shifted, drop=("scl",), collection="sentinel-2-l1c",
             props={**OTHER, "s2:product_type": "S2MSI1C"})
    return {"clear": {"2020-04-19": 0.0, "2020-04-29": 0.5}, "changed": "2020-06-08", "shifted": "2020-08-12",
            "mosaic": "2020-09-16", "reprocessed": "2020-10-11", "no_scl": "2020-11-05", "n_dates": 10}


@dataclass
class AcquireServers:
    nginx: Nginx
    stac: StacApi | None
    postgres: Postgres | None
    catalogue: Catalogue
    facts: dict
    root: Path

    def stop(self) -> None:
        for s in (self.stac, self.postgres, self.nginx):
            if s is not None:
                s.stop()
        shutil.rmtree(self.root, ignore_errors=True)


_SERVERS: dict[str, AcquireServers] = {}


def acquire_servers(real_dir: Path, with_stac: bool = True) -> AcquireServers:
    """nginx over the test catalogue's files, and (``with_stac``) PostgreSQL + pgstac +
    stac-fastapi loaded with its items; started once per process, stopped at exit.
    Raises :class:`stacservers.Unavailable` when a server is not installed."""
    key = "stac" if with_stac else "files"
    if key in _SERVERS:
        return _SERVERS[key]
    if with_stac and "files" in _SERVERS:
        base = _SERVERS["files"]
    else:
        root = Path(tempfile.mkdtemp(prefix="sandwatch-catalogue-"))
        nginx = Nginx(root / "www")
        cat = Catalogue(root / "www", real_dir, nginx.url)
        facts = build_test_catalogue(cat)
        nginx.start()
        base = AcquireServers(nginx, None, None, cat, facts, root)
        atexit.register(base.stop)
        _SERVERS["files"] = base
    if with_stac:
        pg = Postgres()
        atexit.register(pg.stop)
        pg.start()
        api = StacApi(pg)
        api.load(base.catalogue.collections_json(), base.catalogue.items)
        atexit.register(api.stop)
        api.start()
        base.stac, base.postgres = api, pg
        _SERVERS["stac"] = base
    return base


def servers_or_skip() -> AcquireServers:
    """The servers with the STAC API, or skip the test with the reason (not installed here)."""
    import pytest
    from conftest import shared_path
    from stacservers import Unavailable

    try:
        return acquire_servers(shared_path("s2-l2a-29RKH-cogs"))
    except Unavailable as err:
        pytest.skip(str(err))


def fast_fetch():
    """Fetch settings for tests: two threads, one retry, quick back-off, short timeouts."""
    from sandwatch.acquire.fetch import FetchConfig

    return FetchConfig(workers=2, retries=1, backoff_s=0.05, timeout_s=5)


def fault_proxy(upstream_port: int, **kw) -> FaultProxy:
    return FaultProxy(upstream_port, **kw).start()
