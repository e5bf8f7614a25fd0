"""Bad input through the CLI: one line naming the file and the fix, exit 2, no output file.

The cases of the foundation issue: wrong band count, unknown band name, CRS mismatch,
polygons that miss the scene, a corrupt file, an empty AOI.
"""

from __future__ import annotations

import json

import numpy as np
import rasterio
from affine import Affine

from sandwatch.cli.main import main


def run(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    return code, err


def error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def write_geojson(path, polygons, props=None):
    feats = [{"type": "Feature", "geometry": p, "properties": props or {"Confidence": "High"}} for p in polygons]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return path


def lonlat_box(x0, y0, x1, y1):
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


def test_wrong_band_count(capsys, scene):
    path, _ = scene
    code, err = run(capsys, "info", path, "--bands", "B02,B03,B04")
    line = error_line(err)
    assert code == 2 and str(path) in line and "--bands" in line


def test_unknown_band_name(capsys, scene):
    path, _ = scene
    code, err = run(capsys, "info", path, "--bands", "B02,B99")
    line = error_line(err)
    assert code == 2 and "B99" in line


def test_corrupt_file(capsys, tmp_path):
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00" + b"\x17" * 300)  # a TIFF header and garbage
    out = tmp_path / "mask.tif"
    code, err = run(capsys, "labels", "rasterize", write_geojson(tmp_path / "p.geojson", [lonlat_box(0, 0, 1, 1)]),
                    "--like", bad, "-o", out)
    line = error_line(err)
    assert code == 2 and str(bad) in line
    assert not out.exists() and not list(tmp_path.glob("*partial*"))


def test_polygons_that_miss_the_scene(capsys, scene, tmp_path):
    path, _ = scene
    far = write_geojson(tmp_path / "far.geojson", [lonlat_box(10.0, 50.0, 10.01, 50.01)])  # Germany, scene in India
    out = tmp_path / "mask.tif"
    code, err = run(capsys, "labels", "rasterize", far, "--like", path, "-o", out)
    line = error_line(err)
    assert code == 2 and str(far) in line and "CRS" in line
    assert not out.exists() and not list(tmp_path.glob("*partial*"))


def test_crs_mismatch_is_reprojected_not_misread(capsys, scene, tmp_path):
    """Polygons in EPSG:4326 on a UTM scene: reprojected, so the mask lands where they are."""
    path, grid = scene
    import geopandas as gpd
    import shapely

    box = shapely.box(400300, 2200300, 400600, 2200600)  # 30 x 30 px, UTM
    wgs = gpd.GeoSeries([box], crs="EPSG:32644").to_crs("EPSG:4326").iloc[0]
    poly = write_geojson(tmp_path / "p.geojson", [shapely.geometry.mapping(wgs)])
    out = tmp_path / "mask.tif"
    assert run(capsys, "labels", "rasterize", poly, "--like", path, "-o", out)[0] == 0
    with rasterio.open(out) as ds:
        mask = ds.read(1)
        assert ds.crs == grid.crs and ds.transform == grid.transform
    rows, cols = np.nonzero(mask)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) in [(68, 97, 30, 59), (67, 98, 29, 60)]
    assert 900 <= mask.sum() <= 32 * 32


def test_crs_mismatch_between_band_files(capsys, tmp_path):
    folder = tmp_path / "bands"
    folder.mkdir()
    for name, crs in (("B02", "EPSG:32644"), ("B03", "EPSG:32643")):
        with rasterio.open(folder / f"{name}.tif", "w", driver="GTiff", width=8, height=8, count=1, dtype="uint16",
                           crs=crs, transform=Affine(10, 0, 400000, 0, -10, 2200000)) as ds:
            ds.write(np.full((1, 8, 8), 1000, np.uint16))
    code, err = run(capsys, "info", folder)
    line = error_line(err)
    assert code == 2 and "B03" in line and "CRS" in line.upper()


def test_empty_aoi(capsys, scene, tmp_path):
    path, _ = scene
    rivers = tmp_path / "rivers.geojson"
    rivers.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "LineString", "coordinates": [[10, 50], [10.1, 50.1]]}}]}))
    out = tmp_path / "aoi.geojson"
    code, err = run(capsys, "aoi", "--like", path, "--rivers", rivers, "--buffer", "100", "-o", out)
    line = error_line(err)
    assert code == 2 and "AOI is empty" in line and "--rivers" in line
    assert not out.exists() and not list(tmp_path.glob("*partial*"))
