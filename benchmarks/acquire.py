"""Benchmark of ``sandwatch acquire fetch`` on loopback: areas per minute, MB transferred per
km2, and the speed-up of parallel over serial fetching (the serial run is the baseline,
measured in the same run).

    .venv/bin/python benchmarks/acquire.py                       # 16 areas of 2 x 2 km, 4 threads
    .venv/bin/python benchmarks/acquire.py --areas 32 --workers 8 --half-size 2500

The real Earth Search COGs of ``../shared/data/s2-l2a-29RKH-cogs`` (all 12 bands and SCL) are
served by nginx on 127.0.0.1 (``tests/stacservers.py``; its access log counts the bytes) and
the areas are laid on a lattice over the tile. Each run starts with GDAL's HTTP cache cleared
and writes to a fresh folder. Those files are downsampled 10x (10 m bands stored at 100 m), so
an area covers 100x fewer pixels than on the real catalogue and the per-file overhead (header,
size probe: ~37 kB a file) weighs much more: MB per km2 here is an upper bound per pixel, not
the real catalogue's figure. Loopback has no latency: the speed-up shows the overlap of decoding
and writing; over the internet the waits add to it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from stacservers import FaultProxy, Nginx  # noqa: E402

from sandwatch.acquire.fetch import FetchConfig, clear_http_cache, fetch  # noqa: E402
from sandwatch.acquire.search import Candidate  # noqa: E402
from sandwatch.acquire.sites import Area, Site  # noqa: E402

REAL = ROOT.parent / "shared" / "data" / "s2-l2a-29RKH-cogs"
ITEM = "S2A_29RKH_20200219_0_L2A"
TILE = (199980.0, 2690220.0, 309780.0, 2800020.0)


def lattice(n: int, half: float) -> list[Area]:
    """``n`` square areas on a lattice over the southern half of the tile (clear on this date)."""
    side = max(1, int(n ** 0.5 + 0.999))
    x0, y0, x1, y1 = TILE[0] + 5000, TILE[1] + 5000, TILE[2] - 5000, TILE[1] + 50000
    areas = []
    for k in range(n):
        cx = x0 + (k % side + 0.5) * (x1 - x0) / side
        cy = y0 + (k // side + 0.5) * (y1 - y0) / side
        cx, cy = round(cx / 100) * 100 - 20, round(cy / 100) * 100 + 20   # on the tile's 100 m lattice
        areas.append(Area(f"a{k:03d}", 32629, (cx - half, cy - half, cx + half, cy + half), [Site(f"s{k}", 24.5, -11)]))
    return areas


def served_item(folder: Path, base_url: str) -> Path:
    item = json.loads((REAL / f"{ITEM}.json").read_text())
    keep = {"coastal", "blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08", "nir09",
            "swir16", "swir22", "scl"}
    item["assets"] = {k: {**a, "href": f"{base_url}/real/{Path(a['href']).name}"}
                      for k, a in item["assets"].items() if k in keep}
    item["links"] = []
    path = folder / f"{ITEM}.json"
    path.write_text(json.dumps(item))
    return path


def run(areas, item: Path, out: Path, workers: int, nginx: Nginx) -> dict:
    cands = [Candidate(a.id, dt.date(2020, 2, 19), 1.0, 1.0, "scl", [ITEM], [str(item)], ["29RKH"], ["02.14"],
                       None, "sentinel-2-l2a", "local") for a in areas]
    shutil.rmtree(out, ignore_errors=True)
    clear_http_cache()
    nginx.clear_log()
    t = time.perf_counter()
    done = fetch(areas, cands, out, FetchConfig(workers=workers, retries=0))
    seconds = time.perf_counter() - t
    assert all(d.status == "fetched" for d in done) and len(done) == len(areas)
    sent = nginx.bytes_sent("/real/")
    km2 = sum(a.km2 for a in areas)
    return {"seconds": seconds, "areas_per_min": 60 * len(areas) / seconds, "mb": sent / 1e6,
            "mb_per_km2": sent / 1e6 / km2, "requests": len(nginx.log_lines())}


def measure(areas, item: Path, tmp: Path, nginx: Nginx, args, file_mb: float, what: str) -> None:
    runs: dict[str, list[dict]] = {"serial": [], "parallel": []}
    for _ in range(args.repeat):          # alternated, so that a busy moment of the machine hits both
        runs["serial"].append(run(areas, item, tmp / "serial", 1, nginx))
        runs["parallel"].append(run(areas, item, tmp / "parallel", args.workers, nginx))
    serial, parallel = (sorted(runs[k], key=lambda r: r["seconds"])[len(runs[k]) // 2] for k in ("serial", "parallel"))
    times = {k: ", ".join(f"{r['seconds']:.2f}" for r in v) for k, v in runs.items()}
    print(f"{what}: medians of {args.repeat} alternating runs (seconds: serial {times['serial']}; "
          f"parallel {times['parallel']})")
    for name, r in (("serial (baseline)", serial), (f"parallel, {args.workers} threads", parallel)):
        print(f"  {name:24s} {r['seconds']:6.2f} s  {r['areas_per_min']:7.1f} areas/min  "
              f"{r['mb']:6.2f} MB ({r['mb'] / len(areas):.2f} MB an area of {file_mb:.1f} MB of files, "
              f"{r['mb_per_km2']:.3f} MB/km2)  {r['requests']} requests")
    print(f"  speed-up of parallel over serial: {parallel['areas_per_min'] / serial['areas_per_min']:.2f}x; "
          f"bytes ratio parallel/serial {parallel['mb'] / serial['mb']:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--areas", type=int, default=16)
    ap.add_argument("--half-size", type=float, default=1000.0, help="metres (1000: 2 x 2 km areas)")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3, help="alternating serial/parallel runs; medians are printed")
    ap.add_argument("--latency-ms", type=float, default=30.0,
                    help="also measure through a proxy that holds each request this long (0: loopback only)")
    args = ap.parse_args()
    if not REAL.exists():
        sys.exit(f"{REAL} is absent: the benchmark needs ../shared/data beside the project")
    tmp = Path(tempfile.mkdtemp(prefix="sandwatch-bench-acquire-"))
    (tmp / "www").mkdir()
    (tmp / "www" / "real").symlink_to(REAL)
    nginx = Nginx(tmp / "www").start()
    try:
        areas = lattice(args.areas, args.half_size)
        file_mb = sum((REAL / f"{b}.tif").stat().st_size for b in
                      ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12", "SCL")) / 1e6
        print(f"{len(areas)} areas of {areas[0].km2:g} km2, 12 bands + SCL each, one date; nginx on 127.0.0.1")
        measure(areas, served_item(tmp, nginx.url), tmp, nginx, args, file_mb, "loopback")
        if args.latency_ms > 0:
            proxy = FaultProxy(nginx.port, faults=0, delay_s=args.latency_ms / 1000).start()
            try:
                (tmp / "slow").mkdir()
                measure(areas, served_item(tmp / "slow", proxy.url), tmp, nginx, args, file_mb,
                        f"{args.latency_ms:g} ms per request (a proxy in front of nginx)")
            finally:
                proxy.stop()
    finally:
        nginx.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
