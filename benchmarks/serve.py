"""Tile latency of ``sandwatch serve``: 256 px probability tiles from a 10980 x 10980 COG (a
full Sentinel-2 tile) with 20 concurrent clients on loopback.

The server is the real app under uvicorn in its own process (127.0.0.1, a free port); the
clients are threads here, each with its own HTTP connection, every request bounded by a
timeout and every phase by a request count and a time limit. Phases, each on tiles no earlier
phase asked for (so "uncached" means rendered from the COG):

1. baseline: ONE client, uncached tiles, one after another;
2. 20 clients, uncached tiles (what 20 analysts panning at once cost);
3. 20 clients, the tiles of phase 2 again (the server's tile cache; with several workers
   every worker is first given them once).

The project is one `sandwatch serve` finds by itself: a manifest with a small scene inside
the COG's footprint and the COG as its prediction. ``--workers`` is ``sandwatch serve --workers``.

Zoom 14 (about 9 m per pixel at 21 N: the COG's own 10 m resolution). Prints p50/p95 per
phase and the ratio of phase 2 to the baseline. Goal: p95 < 250 ms in phase 2 on 2 cores.

    python benchmarks/serve.py [--requests 600] [--clients 20] [--seconds 120] [--workers 1]
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
import sys
from sandwatch.serve import ServeConfig, run
run(sys.argv[1], ServeConfig(port=int(sys.argv[2]), workers=int(sys.argv[3])))
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


def write_project(root: Path, cog: Path) -> None:
    """A project `sandwatch serve` finds by itself: a manifest with one small true-colour scene
    inside the COG's footprint, the COG as that scene's prediction (``predictions/scene.prob.tif``)."""
    import rasterio
    import yaml
    from affine import Affine

    (root / "predictions").mkdir(parents=True)
    with rasterio.open(root / "scene.tif", "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8",
                       crs="EPSG:32644", transform=Affine(10, 0, 350000, 0, -10, 2350000)) as ds:
        ds.write(np.random.default_rng(0).integers(30, 200, (3, 64, 64), dtype=np.uint8))
        for i, name in enumerate("RGB", 1):
            ds.set_band_description(i, name)
    (root / "manifest.yaml").write_text(yaml.safe_dump({"version": 1, "observations": [
        {"site": "bench", "date": "2021-01-01", "scene": "scene.tif"}]}))
    cog.rename(root / "predictions" / "scene.prob.tif")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children that were waited for (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its live children (uvicorn workers)."""
    total = cpu_seconds(pid)
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        total += tree_cpu(int(child))
    return total


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


def run_phase(base: str, tiles: list, clients: int, seconds: float, server_pid: int) -> dict:
    """Each client takes the next tile from a shared list; latencies in ms, CPU seconds of the
    server (all its processes) and of these clients."""
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
    cpu0, mine0 = tree_cpu(server_pid), time.process_time()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - start
    server_cpu, client_cpu = tree_cpu(server_pid) - cpu0, time.process_time() - mine0
    a = np.asarray(lat)
    return {"clients": clients, "requests": len(lat), "errors": len(errors), "wall_s": round(wall, 2),
            "tiles_per_s": round(len(lat) / wall, 1) if wall else 0.0,
            "p50_ms": round(float(np.percentile(a, 50)), 1) if len(a) else None,
            "p95_ms": round(float(np.percentile(a, 95)), 1) if len(a) else None,
            "max_ms": round(float(a.max()), 1) if len(a) else None,
            "server_cpu_s": round(server_cpu, 2), "client_cpu_s": round(client_cpu, 2),
            "first_error": errors[0] if errors else ""}


KEY = ""


def main() -> int:
    global KEY
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=600, help="tiles in the 20-client phases")
    ap.add_argument("--baseline", type=int, default=100, help="tiles in the one-client baseline")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=120.0, help="time limit of each phase")
    ap.add_argument("--workers", type=int, default=1, help="server processes (sandwatch serve --workers)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sandwatch-bench-serve-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        bounds = write_cog(tmp / "big.prob.tif")
        print(f"COG {SIZE}x{SIZE} written in {time.perf_counter() - t0:.1f} s "
              f"({(tmp / 'big.prob.tif').stat().st_size / 1e6:.0f} MB)")
        write_project(tmp / "project", tmp / "big.prob.tif")
        tiles = tiles_inside(bounds)
        random.Random(0).shuffle(tiles)
        need = args.baseline + args.requests
        if len(tiles) < need:
            raise SystemExit(f"only {len(tiles)} tiles at zoom {ZOOM}; ask for fewer requests")
        port = free_port()
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src") + os.pathsep
                   + os.environ.get("PYTHONPATH", ""))
        proc = subprocess.Popen([sys.executable, "-c", SERVER, str(tmp / "project"), str(port), str(args.workers)],
                                stdout=subprocess.DEVNULL, env=env)
        try:
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
            KEY = httpx.get(base + "/api/project").json()["sites"][0]["dates"][0]["probability"]
            baseline = run_phase(base, tiles[:args.baseline], 1, args.seconds, proc.pid)
            uncached = run_phase(base, tiles[args.baseline:need], args.clients, args.seconds, proc.pid)
            done = tiles[args.baseline:args.baseline + uncached["requests"]]
            for _ in range(args.workers - 1):   # each worker has its own cache: ask each tile once per worker
                run_phase(base, done, args.clients, args.seconds, proc.pid)
            cached = run_phase(base, done, args.clients, args.seconds, proc.pid)
        finally:
            proc.terminate()
            proc.wait(10)
    res = {"zoom": ZOOM, "workers": args.workers, "tiles_available": len(tiles), "baseline_1_client_uncached": baseline,
           f"{args.clients}_clients_uncached": uncached, f"{args.clients}_clients_cached": cached}
    res["ratio_p95_uncached_to_baseline"] = round(uncached["p95_ms"] / baseline["p95_ms"], 2)
    res["ratio_p50_uncached_to_baseline"] = round(uncached["p50_ms"] / baseline["p50_ms"], 2)
    res["goal_p95_ms"] = GOAL_P95_MS
    res["goal_met"] = uncached["p95_ms"] < GOAL_P95_MS
    print(json.dumps(res, indent=2))
    for name in ("baseline_1_client_uncached", f"{args.clients}_clients_uncached", f"{args.clients}_clients_cached"):
        r = res[name]
        print(f"{name:<28} {r['requests']:>4} tiles  p50 {r['p50_ms']:>7} ms  p95 {r['p95_ms']:>7} ms  "
              f"{r['tiles_per_s']:>6} tiles/s  CPU server {r['server_cpu_s']} s, clients {r['client_cpu_s']} s  "
              f"errors {r['errors']}")
    print(f"p95 with {args.clients} clients (uncached) / one client: {res['ratio_p95_uncached_to_baseline']}x; "
          f"goal p95 < {GOAL_P95_MS:.0f} ms: {'met' if res['goal_met'] else 'NOT met'}")
    return 0 if not (baseline["errors"] or uncached["errors"] or cached["errors"]) else 1


if __name__ == "__main__":
    sys.exit(main())
