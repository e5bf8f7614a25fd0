"""Shared types: Grid, Window, bands, Normalization, atomic outputs, the CLI error path."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS

from sandwatch.bands import (
    L1C_BANDS, L2A_BANDS, BandSpec, Normalization, canonical_band, match_bands, parse_band_list,
)
from sandwatch.errors import SandwatchError
from sandwatch.grid import Grid, Window
from sandwatch.io import atomic_output


def test_window_geometry():
    w = Window(10, 20, 30, 40)
    assert w.shape == (30, 40) and w.row_stop == 40 and w.col_stop == 60 and w.size == 1200
    assert w.intersection(Window(35, 55, 100, 100)) == Window(35, 55, 5, 5)
    assert w.intersection(Window(100, 100, 5, 5)) is None
    assert Window(-5, -5, 20, 20).clip(10, 12) == Window(0, 0, 10, 12)
    assert w.pad(3) == Window(7, 17, 36, 46)
    assert Window(12, 25, 2, 2).relative_to(w) == Window(2, 5, 2, 2)
    assert Window.from_rasterio(w.to_rasterio()) == w
    with pytest.raises(ValueError):
        Window(0, 0, -1, 3)


def test_grid_georeferencing():
    g = Grid.from_bounds("EPSG:32644", 500000, 2000000, 501000, 2000500, 10)
    assert g.shape == (50, 100)
    assert g.res == (10.0, 10.0)
    assert g.bounds == (500000, 2000000, 501000, 2000500)
    assert g.pixel_area_m2 == pytest.approx(100.0)
    sub = g.window_grid(Window(10, 20, 5, 5))
    assert sub.transform == Affine(10, 0, 500200, 0, -10, 2000400)
    assert g.window_from_bounds(500205, 2000395, 500255, 2000405) == Window(9, 20, 2, 6)
    assert g.same_as(Grid(CRS.from_epsg(32644), g.transform, 100, 50))
    assert not g.same_as(Grid(CRS.from_epsg(32643), g.transform, 100, 50))
    assert g.to_dict()["crs"] == "EPSG:32644"


def test_geographic_pixel_area_is_about_10m():
    d = 8.983152841195215e-05  # the India samples' pixel size in degrees
    g = Grid(CRS.from_epsg(4326), Affine(d, 0, 85.85, 0, -d, 20.3), 100, 100)
    assert g.pixel_area_m2 == pytest.approx(100.0 * np.cos(np.radians(20.3 - 50 * d)), rel=1e-3)


def test_band_names_and_matching():
    assert len(L1C_BANDS) == 13 and len(L2A_BANDS) == 12 and "B10" not in L2A_BANDS
    assert L1C_BANDS[8] == "B8A"
    assert canonical_band("b8") == "B08" and canonical_band("nir08") == "B8A"
    assert canonical_band("vis-red") == "R" and canonical_band("foo") is None
    assert parse_band_list("B2, b03 ,B8a") == ("B02", "B03", "B8A")
    with pytest.raises(SandwatchError, match="unknown band name 'B13'"):
        parse_band_list("B02,B13")
    with pytest.raises(SandwatchError, match="repeat"):
        parse_band_list("B02,B02")
    assert match_bands(["B02", "B03", "B04"], ["B04", "B02"]) == [2, 0]
    # true colour and Sentinel-2 reflectance are different kinds: refused, naming the fix
    with pytest.raises(SandwatchError, match="rgb.tif: is a true-colour.*B04,B03,B02.*model.bands=\\[R,G,B\\]"):
        match_bands(["R", "G", "B"], ["B04", "B03", "B02"], source="rgb.tif")
    with pytest.raises(SandwatchError, match="s2.tif: has Sentinel-2 bands.*true-colour R"):
        match_bands(["B02", "B03", "B04"], ["R", "G", "B"], source="s2.tif")
    with pytest.raises(SandwatchError, match="scene.tif: lacks band\\(s\\) B11"):
        match_bands(["B02"], ["B02", "B11"], source="scene.tif")
    assert match_bands(["B02"], ["B02", "B11"], fill_missing=True) == [0, None]


def test_normalization_maps_range_and_clips():
    n = Normalization.mean_std([1000.0, 2000.0], [100.0, 500.0], scale=1e-4)
    assert n.low == pytest.approx((0.08, 0.1)) and n.high == pytest.approx((0.12, 0.3))
    x = np.array([[[0.08, 0.10, 0.2]], [[0.2, 0.3, 0.0]]], np.float32)  # (2, 1, 3)
    y = n(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y[0, 0], [0.0, 0.5, 1.0], atol=1e-6)
    np.testing.assert_allclose(y[1, 0], [0.5, 1.0, 0.0], atol=1e-6)
    batch = n(np.stack([x, x]))
    np.testing.assert_array_equal(batch[1], y)
    spec = BandSpec(("B02", "B03"), n)
    assert BandSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError):
        n(np.zeros((3, 2, 2)))


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out" / "map.tif"
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert not target.exists() and list(target.parent.iterdir()) == []
    with atomic_output(target, verify=False) as tmp:   # text, not a GeoTIFF: skip the read-back check
        assert tmp.parent == target.parent and tmp.suffix == ".tif"
        tmp.write_text("whole")
    assert target.read_text() == "whole" and len(list(target.parent.iterdir())) == 1


def test_error_is_one_line():
    err = SandwatchError.about("a.tif", "has 4 bands\n but 13 names", "pass --bands")
    assert str(err) == "a.tif: has 4 bands but 13 names; pass --bands"
