"""End to end: a real (tiny) U-Net checkpoint, scenes opened by sandwatch.imagery, the CLI,
a process-based Dask cluster, and the real Sentinel-2 / India samples (skipped when absent)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch
from shapely.geometry import LineString, mapping

from sandwatch.cli.main import main
from sandwatch.grid import Grid
from sandwatch.models.checkpoint import Checkpoint
from conftest import shared_path

L1C = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")


def tiny_checkpoint(path, bands=None, window=64, threshold=0.5, seed=0):
    from sandwatch.models.registry import build_model

    torch.manual_seed(seed)
    model = build_model("unet", bands, width=4)
    ckpt = Checkpoint("unet", model.band_spec, model.state_dict(), {"width": 4}, window, threshold)
    ckpt.save(path)
    return ckpt


def write_scene(path, height=300, width=260, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.integers(500, 3000, size=(13, height, width), dtype=np.uint16)
    data[:, :, :5] = 0                                    # nodata stripe on the left
    grid = Grid.from_bounds("EPSG:32644", 300000.0, 2200000.0 - height * 10, 300000.0 + width * 10, 2200000.0, 10)
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=13, dtype="uint16",
                       crs=grid.crs, transform=grid.transform, nodata=0) as ds:
        ds.write(data)
        for i, b in enumerate(L1C, 1):
            ds.set_band_description(i, b)
    return grid


def read_band(path):
    with rasterio.open(path) as ds:
        return ds.read(1), Grid.from_dataset(ds), ds.nodata


def test_cli_predicts_skips_and_follows_the_aoi(tmp_path, capsys):
    ckpt_path = tmp_path / "best.ckpt"
    tiny_checkpoint(ckpt_path, window=64, threshold=0.5)
    scene = tmp_path / "scene.tif"
    grid = write_scene(scene)
    out = tmp_path / "maps"
    assert main(["predict", str(ckpt_path), str(scene), "-o", str(out), "--edge", "12", "-q"]) == 0
    prob, pgrid, nodata = read_band(out / "scene.prob.tif")
    assert pgrid.same_as(grid, tol=0) and nodata == 0
    assert (prob[:, :5] == 0).all() and (prob[:, 5:] > 0).all()       # nodata follows the input
    assert "scene: " in capsys.readouterr().out
    assert main(["predict", str(ckpt_path), str(scene), "-o", str(out), "-q"]) == 0
    assert "skipped" in capsys.readouterr().out

    # AOI from river vectors: a river along the top; windows far from it stay nodata
    left, bottom, right, top = grid.bounds
    river = LineString([(left, top - 200), (right, top - 200)])
    rivers = tmp_path / "rivers.geojson"
    rivers.write_text(json.dumps({"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "EPSG:32644"}},
                                  "features": [{"type": "Feature", "properties": {}, "geometry": mapping(river)}]}))
    assert main(["predict", str(ckpt_path), str(scene), "-o", str(tmp_path / "aoi"), "--edge", "12",
                 "--rivers", str(rivers), "--aoi-buffer", "300", "-q"]) == 0
    aoi_prob, _, _ = read_band(tmp_path / "aoi" / "scene.prob.tif")
    # river at row 20 + 300 m (30 px) buffer -> rows < 50 are in the AOI; keep stride is 40 px
    assert (aoi_prob[:80, 5:] > 0).all() and (aoi_prob[80:] == 0).all()
    assert np.array_equal(aoi_prob[:80], prob[:80])   # same pixels where predicted


def test_cli_errors_are_one_line(tmp_path, capsys):
    ckpt_path = tmp_path / "best.ckpt"
    tiny_checkpoint(ckpt_path, window=64)
    scene = tmp_path / "scene.tif"
    write_scene(scene, 80, 80)
    assert main(["predict", str(ckpt_path), str(scene), "-o", str(tmp_path / "o"), "--edge", "40"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--edge" in err
    assert main(["predict", str(tmp_path / "nope.ckpt"), str(scene), "-o", str(tmp_path / "o")]) == 2


@pytest.mark.slow
def test_process_cluster_matches_in_process(tmp_path):
    distributed = pytest.importorskip("distributed")
    from sandwatch.predict import predict_scenes

    ckpt = tiny_checkpoint(tmp_path / "c.pt", window=64)
    scenes = []
    for i in range(2):
        write_scene(tmp_path / f"s{i}.tif", 150, 170, seed=i)
        scenes.append(str(tmp_path / f"s{i}.tif"))
    local = predict_scenes(ckpt, scenes, tmp_path / "local", edge=12, progress=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cl:
        remote = predict_scenes(ckpt, scenes, tmp_path / "dask", edge=12, scheduler=cl.scheduler_address)
        # and the CLI: row bands of each scene as tasks
        assert main(["predict", str(tmp_path / "c.pt"), *scenes, "-o", str(tmp_path / "cli"), "--edge", "12",
                     "--scheduler", cl.scheduler_address, "--band-rows", "60", "-q"]) == 0
    for a, b in zip(local, remote):
        pa, ga, _ = read_band(a.paths["probability"])
        pb, gb, _ = read_band(b.paths["probability"])
        pc, gc, _ = read_band(tmp_path / "cli" / a.paths["probability"].name)
        assert ga.same_as(gb, tol=0) and np.array_equal(pa, pb)
        assert gc.same_as(ga, tol=0) and np.array_equal(pc, pa)


@pytest.mark.slow
def test_real_l1c_band_folder(tmp_path):
    from sandwatch.imagery import open_scene
    from sandwatch.predict import predict_scene, validate_cog

    folder = shared_path("s2-l1c-33UUU-havel")
    tiny_checkpoint(tmp_path / "c.pt", window=160)
    scene = open_scene(folder)
    res = predict_scene(tmp_path / "c.pt", scene, tmp_path, edge=30, progress=False)
    for key in ("probability", "mask"):
        values, grid, _ = read_band(res.paths[key])
        assert grid.same_as(scene.grid, tol=0) and grid.shape == (768, 1536)
        assert validate_cog(res.paths[key])[0]
    assert res.stats["windows"] == 8 * 16


@pytest.mark.slow
@pytest.mark.parametrize("site", ["bhargavi-khordha-2018-12", "wainganga-gondiya-2023-05"])
def test_real_india_rgb_with_river_aoi(tmp_path, site):
    import geopandas as gpd

    from sandwatch.imagery import open_scene
    from sandwatch.predict import predict_scene

    folder = shared_path("india-sandmining", site)
    tiny_checkpoint(tmp_path / "c.pt", bands=("R", "G", "B"), window=160, threshold=0.0)
    scene = open_scene(folder / "rgb.tif")
    res = predict_scene(tmp_path / "c.pt", scene, tmp_path, edge=30, aoi=folder / "rivers.geojson", aoi_buffer_m=0,
                        progress=False)
    prob, grid, _ = read_band(res.paths["probability"])
    mask, _, _ = read_band(res.paths["mask"])
    assert grid.same_as(scene.grid, tol=0) and grid.crs.to_epsg() == 4326
    with rasterio.open(folder / "rivers_mask.tif") as ds:
        river = ds.read(1) > 0
    assert (prob[river] > 0).mean() > 0.99          # predicted inside the AOI
    assert res.stats["skipped_windows"] > 0
    # threshold 0: every predicted pixel is "mine"; polygons cover exactly the predicted pixels
    gdf = gpd.read_file(res.paths["polygons_gpkg"])
    assert gdf["pixels"].sum() == int((mask == 1).sum()) == int((prob > 0).sum())
    gj = gpd.read_file(res.paths["polygons_geojson"])
    np.testing.assert_allclose(gj["area_m2"].sum(), gdf["area_m2"].sum())
    assert abs(gdf["area_m2"].sum() / (gdf["pixels"].sum() * grid.pixel_area_m2) - 1) < 0.01
