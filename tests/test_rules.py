"""One owner per rule: the AOI resolver (predict and monitor) and the output naming (predict
writes, evaluate finds)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from shapely.geometry import Polygon, box

from conftest import make_utm_grid
from sandwatch.aoi import aoi_from_rivers, resolve_aoi
from sandwatch.errors import SandwatchError
from sandwatch.evaluate import find_predictions
from sandwatch.predict import OUTPUTS, output_paths, prediction_names, scene_name, unique_names
from sandwatch.published import AOI_BUFFER_M


@pytest.fixture
def rivers(tmp_path):
    """A river line across the middle of a 100 x 100 px UTM 45N grid, in a GeoJSON (WGS84)."""
    from pyproj import Transformer

    grid = make_utm_grid(100, 100)
    l, b, r, t = grid.bounds
    tr = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    line = [tr.transform(l, (b + t) / 2), tr.transform(r, (b + t) / 2)]
    path = tmp_path / "rivers.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "LineString", "coordinates": line}}]}))
    return path, grid


def test_resolve_aoi_sources(rivers):
    path, grid = rivers
    assert resolve_aoi(None, grid) is None and resolve_aoi("none", grid) is None
    geom = resolve_aoi(path, grid)
    assert geom.equals(aoi_from_rivers(path, grid, buffer_m=AOI_BUFFER_M))
    # the 1 km default buffer covers the whole 1 km x 1 km grid around a line through its middle
    assert geom.area == pytest.approx(1000 * 1000, rel=1e-6)
    thin = resolve_aoi(str(path), grid, buffer_m=100)
    assert thin.area == pytest.approx(1000 * 200, rel=0.02)
    square = box(*grid.bounds).buffer(-300)
    assert resolve_aoi(square, grid) is square
    obs = SimpleNamespace(id="o1", scene="s.tif", aoi=None, rivers=str(path))
    assert resolve_aoi(obs, grid, buffer_m=100).equals(thin)


def test_resolve_aoi_errors_are_one_line(rivers, tmp_path):
    path, grid = rivers
    with pytest.raises(SandwatchError, match="--aoi: is required"):
        resolve_aoi(None, grid, required=True)
    with pytest.raises(SandwatchError, match="no such AOI file.*'auto' or 'none'"):
        resolve_aoi(tmp_path / "missing.gpkg", grid)
    with pytest.raises(SandwatchError, match="no such AOI file") as err:
        resolve_aoi(tmp_path / "missing.gpkg", grid, required=True)
    assert "'none'" not in str(err.value)          # monitor needs an AOI: no "--aoi none" advice
    with pytest.raises(SandwatchError, match="the AOI is empty: the geometry passed has no area"):
        resolve_aoi(Polygon(), grid)
    far = make_utm_grid(100, 100)
    far = type(far)(far.crs, far.transform * far.transform.translation(0, 2000), 100, 100)  # 20 km south
    with pytest.raises(SandwatchError, match=f"no river within {AOI_BUFFER_M:g} m of the scene"):
        resolve_aoi(path, far)
    with pytest.raises(SandwatchError, match="cannot use int"):
        resolve_aoi(3, grid)


def test_monitor_and_predict_use_the_one_resolver():
    import sandwatch.monitor.run as monitor_run
    import sandwatch.predict.core as predict_core
    import sandwatch.predict.distributed as predict_distributed

    assert monitor_run.resolve_aoi is predict_core.resolve_aoi is predict_distributed.resolve_aoi is resolve_aoi


def test_output_names():
    assert scene_name("data/site1/2021-01-20.tif") == "2021-01-20"
    assert scene_name("S2A_MSIL2A_20210120.SAFE/") == "S2A_MSIL2A_20210120"
    assert scene_name("https://x.org/items/S2B_43QGA_20230515.json?sig=1") == "S2B_43QGA_20230515"
    assert unique_names(["a/rgb.tif", "b/rgb.tif", "a/other.tif"]) == ["a-rgb", "b-rgb", "other"]
    with pytest.raises(SandwatchError, match="same outputs"):
        unique_names(["a/rgb.tif", "a/rgb.tiff"])
    assert prediction_names("a/rgb.tif") == ["a-rgb.prob.tif", "rgb.prob.tif"]
    assert prediction_names("rgb.tif", "mask") == ["rgb.mask.tif"]
    assert {k: p.name for k, p in output_paths("out", "n").items()} == {k: "n" + s for k, s in OUTPUTS.items()}


def test_evaluate_finds_what_predict_names(tmp_path):
    scenes = ["sites/a/rgb.tif", "sites/b/rgb.tif", "sites/c/2021-05-25.tif"]
    for name in unique_names(scenes):
        output_paths(tmp_path, name)["probability"].write_bytes(b"")
    obs = [SimpleNamespace(id=f"o{i}", scene=s) for i, s in enumerate(scenes)]
    found = find_predictions(tmp_path, obs)
    assert {k: p.name for k, p in found.items()} == {"o0": "a-rgb.prob.tif", "o1": "b-rgb.prob.tif",
                                                     "o2": "2021-05-25.prob.tif"}


def test_find_outputs_of_masks_and_missing_ones(tmp_path):
    from sandwatch.predict.naming import find_outputs

    scenes = ["sites/a/rgb.tif", "sites/b/rgb.tif"]
    for name in unique_names(scenes):
        for key in ("probability", "mask"):
            output_paths(tmp_path, name)[key].write_bytes(b"")
    obs = [SimpleNamespace(id=f"o{i}", scene=s) for i, s in enumerate(scenes)]
    assert {k: p.name for k, p in find_outputs(tmp_path, obs, "mask").items()} == {"o0": "a-rgb.mask.tif",
                                                                                  "o1": "b-rgb.mask.tif"}
    with pytest.raises(SandwatchError, match="no mask raster for observation o2 .*NAME.mask.tif"):
        find_outputs(tmp_path, [SimpleNamespace(id="o2", scene="sites/c/x.tif")], "mask")
