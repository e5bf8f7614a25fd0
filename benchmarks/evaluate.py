"""Benchmark of the streaming metrics: 1e8 pixels in under 60 s and 2 GB, and the ratio
against scikit-learn measured in the same run on a 1e7-pixel subset.

    .venv/bin/python benchmarks/evaluate.py            # 1e8 pixels, uint8 and float32 scores
    .venv/bin/python benchmarks/evaluate.py --pixels 2e7 --subset 2e6
    .venv/bin/python benchmarks/evaluate.py --tile --kinds none   # + a whole 10980 x 10980 map, block by block

Pixels are generated chunk by chunk (4 Mi per chunk, like blocks of a probability map), with
~3 % mine pixels. Printed: wall time, peak RSS of the process, AP, and against sklearn
(``average_precision_score`` on the whole subset in memory): time ratio and |AP difference|.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from sandwatch.evaluate.metrics import PRAccumulator


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def chunks(n_pixels: int, chunk: int, kind: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    done = 0
    while done < n_pixels:
        n = min(chunk, n_pixels - done)
        y = rng.random(n, dtype=np.float32) < 0.03
        p = rng.beta(1.0, 6.0, n).astype(np.float32)
        p[y] = rng.beta(4.0, 2.0, int(y.sum())).astype(np.float32)
        if kind == "uint8":
            yield np.round(p * 255).astype(np.uint8), y
        else:
            yield p, y
        done += n


def run(n_pixels: int, kind: str, chunk: int = 1 << 22):
    acc = PRAccumulator()
    t0 = time.perf_counter()
    gen_time = 0.0
    it = chunks(n_pixels, chunk, kind)
    while True:
        g0 = time.perf_counter()
        try:
            s, y = next(it)
        except StopIteration:
            break
        gen_time += time.perf_counter() - g0
        acc.update(s, y)
    m = acc.metrics()
    total = time.perf_counter() - t0
    return acc, m, total, total - gen_time


def tile_benchmark(size: int = 10980, block: int = 1024):
    """`evaluate_predictions` on one synthetic uint8 probability map of a whole Sentinel-2 tile
    (written to a temporary folder outside the repo), with 400 label rectangles and an AOI."""
    import tempfile
    from pathlib import Path

    import geopandas as gpd
    import rasterio
    from affine import Affine
    from shapely.geometry import box

    from sandwatch.dataset.manifest import Manifest, Observation, save_manifest
    from sandwatch.evaluate import EvalConfig, evaluate_predictions

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="sandwatch-bench-") as tmp:
        tmp = Path(tmp)
        x0, y0, res = 300000.0, 2300000.0, 10.0
        rects = []
        for _ in range(400):
            r, c = rng.integers(0, size - 60, 2)
            h, w = rng.integers(5, 60, 2)
            rects.append((int(r), int(c), int(h), int(w)))
        geoms = [box(x0 + c * res, y0 - (r + h) * res, x0 + (c + w) * res, y0 - r * res) for r, c, h, w in rects]
        gpd.GeoDataFrame({"Confidence": ["High"] * len(geoms)}, geometry=geoms, crs="EPSG:32644").to_file(
            tmp / "mines.geojson", driver="GeoJSON")
        gpd.GeoDataFrame(geometry=[box(x0 + 2000 * res, y0 - size * res, x0 + 6000 * res, y0)], crs="EPSG:32644").to_file(
            tmp / "aoi.geojson", driver="GeoJSON")
        profile = dict(driver="GTiff", width=size, height=size, count=1, dtype="uint8", crs="EPSG:32644",
                       transform=Affine(res, 0, x0, 0, -res, y0), nodata=0, tiled=True, blockxsize=256,
                       blockysize=256, compress="deflate")
        t0 = time.perf_counter()
        with rasterio.open(tmp / "t_prob.tif", "w", **profile) as ds:
            ds.scales, ds.offsets = (1 / 254,), (-1 / 254,)
            for r in range(0, size, block):
                h = min(block, size - r)
                v = rng.integers(1, 120, (h, size), dtype=np.uint8)
                for rr, c, hh, ww in rects:
                    a, b = max(rr, r), min(rr + hh, r + h)
                    if a < b:
                        v[a - r:b - r, c:c + ww] = rng.integers(100, 256, (b - a, ww), dtype=np.uint8)
                ds.write(v, 1, window=rasterio.windows.Window(0, r, size, h))
        t_write = time.perf_counter() - t0
        manifest = save_manifest(Manifest(observations=[Observation(
            id="t", site="t", date="2021-01-01", scene=str(tmp / "t_prob.tif"), annotations=str(tmp / "mines.geojson"),
            aoi=str(tmp / "aoi.geojson"), split="val")]), tmp / "m.yaml")
        rss0 = peak_rss_mb()
        t0 = time.perf_counter()
        res = evaluate_predictions(manifest, tmp, config=EvalConfig(progress=False, block=block))
        m = res.pooled("image").metrics()
        t_eval = time.perf_counter() - t0
        print(f"[tile] {size}x{size} uint8 map ({size * size:.2e} px, written in {t_write:.1f} s): evaluated in "
              f"{t_eval:.1f} s, block {block}; AP {m.ap:.4f}, mine px {m.n_positive}; peak RSS {peak_rss_mb():.0f} MB "
              f"(before: {rss0:.0f} MB)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pixels", type=float, default=1e8)
    ap.add_argument("--subset", type=float, default=1e7)
    ap.add_argument("--kinds", default="uint8,float32", help="'none' to skip the accumulator runs")
    ap.add_argument("--tile", action="store_true", help="also evaluate a whole synthetic 10980 x 10980 map")
    args = ap.parse_args(argv)
    if args.tile:
        tile_benchmark()
    n, sub = int(args.pixels), int(args.subset)
    from sklearn.metrics import average_precision_score

    for kind in [k for k in args.kinds.split(",") if k and k != "none"]:
        acc, m, total, own = run(n, kind)
        print(f"[{kind}] {n:.0e} pixels: {total:.1f} s in all ({own:.1f} s accumulating, rest generating data); "
              f"peak RSS so far {peak_rss_mb():.0f} MB; AP {m.ap:.6f} exact={m.exact} "
              f"bound={m.ap_error_bound:.2e} distinct={acc.n_distinct}")
        # same-run baseline on a subset
        s_all, y_all = [], []
        for s, y in chunks(sub, 1 << 22, kind):
            s_all.append(s)
            y_all.append(y)
        s_all, y_all = np.concatenate(s_all), np.concatenate(y_all)
        t0 = time.perf_counter()
        acc_sub = PRAccumulator()
        for i in range(0, sub, 1 << 22):
            acc_sub.update(s_all[i:i + (1 << 22)], y_all[i:i + (1 << 22)])
        ours = acc_sub.metrics().ap
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        ref = average_precision_score(y_all, s_all.astype(np.float64) / (255.0 if kind == "uint8" else 1.0))
        t_ref = time.perf_counter() - t0
        print(f"[{kind}] {sub:.0e}-pixel subset: ours {t_ours:.2f} s, sklearn {t_ref:.2f} s "
              f"(sklearn/ours = {t_ref / t_ours:.1f}x); |AP diff| {abs(ours - ref):.1e}; "
              f"peak RSS {peak_rss_mb():.0f} MB")
        del s_all, y_all


if __name__ == "__main__":
    main()
