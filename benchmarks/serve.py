"""Tile latency of ``sandwatch serve``: 256 px probability tiles from a 10980 x 10980 COG (a
full Sentinel-2 tile) with 20 concurrent clients on loopback.

The server is the real app under uvicorn in its own process (127.0.0.1, a free port); the
clients are threads here, each with its own HTTP connection, every request bounded by a
timeout and every phase by a request count and a time limit. Phases, each on tiles no earlier
phase asked for (so "uncached" means rendered from the COG):

1. baseline: ONE client, uncached tiles, one after another;
2. 20 clients, uncached tiles (what 20 analysts panning at once cost);
3. 20 clients, the tiles of phase 2 again (the server's tile cache).

Zoom 14 (about 9 m per pixel at 21 N: the COG's own 10 m resolution). Prints p50/p95 per
phase and the ratio of phase 2 to the baseline. Goal: p95 < 250 ms in phase 2 on 2 cores.

    python benchmarks/serve.py [--requests 600] [--clients 20] [--seconds 120]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

SIZE = 10980
ZOOM = 14
GOAL_P95_MS = 250.0

SERVER = r"""
import sys, uvicorn
from sandwatch.serve import ServeConfig, create_app
from sandwatch.serve.project import Project
root, cog, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
project = Project(root)
key = project.register(cog, "probability")
print(key, flush=True)
app = create_app(project, ServeConfig(port=port))
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
"""


def write_cog(path: Path) -> tuple:
    """A 10980 x 10980 uint8 probability COG (UTM 44N, 10 m; predict's encoding, nodata 0)."""
    import rasterio
    import rasterio.shutil
    from affine import Affine

    transform = Affine(10, 0, 300000, 0, -10, 2400000)
    staging = path.with_suffix(".staging.tif")
    profile = {"driver": "GTiff", "width": SIZE, "height": SIZE, "count": 1, "dtype": "uint8", "nodata": 0,
               "crs": "EPSG:32644", "transform": transform, "tiled": True, "blockxsize": 512, "blockysize": 512,
               "compress": "deflate"}
    rng = np.random.default_rng(0)
    with rasterio.open(staging, "w", **profile) as dst:
        for r in range(0, SIZE, 1024):
            h = min(1024, SIZE - r)
            rows = np.arange(r, r + h)[:, None]
            cols = np.arange(SIZE)[None, :]
            p = 0.5 + 0.25 * np.sin(rows / 97.0) * np.cos(cols / 131.0) + 0.2 * np.sin((rows + cols) / 23.0)
            p += rng.normal(0, 0.05, p.shape)
            dst.write((1 + np.rint(np.clip(p, 0, 1) * 254)).astype(np.uint8)[None], window=((r, r + h), (0, SIZE)))
    rasterio.shutil.copy(staging, path, driver="COG", compress="DEFLATE", blocksize=512, overview_resampling="nearest")
    staging.unlink()
    from rasterio.warp import transform_bounds

    with rasterio.open(path) as ds:
        return transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)


def tiles_inside(bounds) -> list[tuple[int, int, int]]:
    import morecantile

    tms = morecantile.tms.get("WebMercatorQuad")
    w, s, e, n = bounds
    out = []
    for t in tms.tiles(w, s, e, n, [ZOOM]):
        b = tms.bounds(t)
        if b.left >= w and b.right <= e and b.bottom >= s and b.top <= n:    # whole tiles of data
            out.append((t.z, t.x, t.y))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_phase(base: str, tiles: list, clients: int, seconds: float) -> dict:
    """Each client takes the next tile from a shared list; latencies in ms."""
    import httpx

    lat: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    it = iter(tiles)
    deadline = time.monotonic() + seconds

    def client():
        with httpx.Client(base_url=base, timeout=30.0) as http:
            while time.monotonic() < deadline:
                with lock:
                    t = next(it, None)
                if t is None:
                    return
                t0 = time.perf_counter()
                r = http.get(f"/tiles/{KEY}/{t[0]}/{t[1]}/{t[2]}.png")
                ms = (time.perf_counter() - t0) * 1000
                with lock:
                    if r.status_code == 200 and r.content[:4] == b"\x89PNG":
                        lat.append(ms)
                    else:
                        errors.append(f"{r.status_code} {r.text[:80]}")

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - start
    a = np.asarray(lat)
    return {"clients": clients, "requests": len(lat), "errors": len(errors), "wall_s": round(wall, 2),
            "tiles_per_s": round(len(lat) / wall, 1) if wall else 0.0,
            "p50_ms": round(float(np.percentile(a, 50)), 1) if len(a) else None,
            "p95_ms": round(float(np.percentile(a, 95)), 1) if len(a) else None,
            "max_ms": round(float(a.max()), 1) if len(a) else None, "first_error": errors[0] if errors else ""}


KEY = ""


def main() -> int:
    global KEY
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=600, help="tiles in the 20-client phases")
    ap.add_argument("--baseline", type=int, default=100, help="tiles in the one-client baseline")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=120.0, help="time limit of each phase")
    args = ap.parse_args()
    from sandwatch.synthetic import write_demo_data

    with tempfile.TemporaryDirectory(prefix="sandwatch-bench-serve-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        bounds = write_cog(tmp / "big.prob.tif")
        print(f"COG {SIZE}x{SIZE} written in {time.perf_counter() - t0:.1f} s "
              f"({(tmp / 'big.prob.tif').stat().st_size / 1e6:.0f} MB)")
        write_demo_data(tmp / "project", sites=1, size=64, seed=0, progress=False)
        tiles = tiles_inside(bounds)
        random.Random(0).shuffle(tiles)
        need = args.baseline + args.requests
        if len(tiles) < need:
            raise SystemExit(f"only {len(tiles)} tiles at zoom {ZOOM}; ask for fewer requests")
        port = free_port()
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src") + os.pathsep
                   + os.environ.get("PYTHONPATH", ""))
        proc = subprocess.Popen([sys.executable, "-c", SERVER, str(tmp / "project"), str(tmp / "big.prob.tif"),
                                 str(port)], stdout=subprocess.PIPE, text=True, env=env)
        try:
            KEY = proc.stdout.readline().strip()
            base = f"http://127.0.0.1:{port}"
            import httpx

            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(base + "/api/project", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("the server did not start")
                time.sleep(0.2)
            baseline = run_phase(base, tiles[:args.baseline], 1, args.seconds)
            uncached = run_phase(base, tiles[args.baseline:need], args.clients, args.seconds)
            done = tiles[args.baseline:args.baseline + uncached["requests"]]
            cached = run_phase(base, done, args.clients, args.seconds)
        finally:
            proc.terminate()
            proc.wait(10)
    res = {"zoom": ZOOM, "tiles_available": len(tiles), "baseline_1_client_uncached": baseline,
           f"{args.clients}_clients_uncached": uncached, f"{args.clients}_clients_cached": cached}
    res["ratio_p95_uncached_to_baseline"] = round(uncached["p95_ms"] / baseline["p95_ms"], 2)
    res["ratio_p50_uncached_to_baseline"] = round(uncached["p50_ms"] / baseline["p50_ms"], 2)
    res["goal_p95_ms"] = GOAL_P95_MS
    res["goal_met"] = uncached["p95_ms"] < GOAL_P95_MS
    print(json.dumps(res, indent=2))
    for name in ("baseline_1_client_uncached", f"{args.clients}_clients_uncached", f"{args.clients}_clients_cached"):
        r = res[name]
        print(f"{name:<28} {r['requests']:>4} tiles  p50 {r['p50_ms']:>7} ms  p95 {r['p95_ms']:>7} ms  "
              f"{r['tiles_per_s']:>6} tiles/s  errors {r['errors']}")
    print(f"p95 with {args.clients} clients (uncached) / one client: {res['ratio_p95_uncached_to_baseline']}x; "
          f"goal p95 < {GOAL_P95_MS:.0f} ms: {'met' if res['goal_met'] else 'NOT met'}")
    return 0 if not (baseline["errors"] or uncached["errors"] or cached["errors"]) else 1


if __name__ == "__main__":
    sys.exit(main())
