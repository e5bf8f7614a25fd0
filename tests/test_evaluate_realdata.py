"""Evaluation on the two real Indian observations (skipped when ../shared/data is absent).

The "prediction" is the other pipeline's rasterised label mask (0/255) of the same polygons:
with the all-touched rule it must agree almost perfectly with our labels; with the pixel-centre
rule our mask is a subset of theirs (recall exactly 1, lower precision). This exercises
EPSG:4326 grids, real polygons with High/Low confidence and the real river AOI.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from sandwatch.dataset.manifest import Manifest, Observation, save_manifest
from sandwatch.evaluate import EvalConfig, evaluate_predictions, write_report

from conftest import shared_path

NAMES = ("bhargavi-khordha-2018-12", "wainganga-gondiya-2023-05")
pytestmark = pytest.mark.realdata


@pytest.fixture
def real(tmp_path):
    root = shared_path("india-sandmining")
    obs = []
    for i, name in enumerate(NAMES):
        with rasterio.open(root / name / "labels_mask.tif") as ds:
            profile, mask = ds.profile, ds.read(1)
        profile.update(dtype="float32", nodata=None, count=1)
        with rasterio.open(tmp_path / f"{name}_prob.tif", "w", **profile) as out:
            out.write((mask / 255.0).astype(np.float32), 1)
        obs.append(Observation(id=name, site=name, date="2020-01-01", scene=str(root / name / "rgb.tif"),
                               annotations=str(root / name / "annotations.geojson"),
                               aoi=str(root / name / "rivers.geojson"), cluster=i, split="val"))
    return save_manifest(Manifest(observations=obs), tmp_path / "manifest.yaml"), tmp_path


def test_other_pipeline_masks_agree(real):
    manifest, maps = real
    touched = evaluate_predictions(manifest, maps, config=EvalConfig(border=0, all_touched=True, progress=False))
    m = touched.pooled("image").metrics()
    assert m.n_pixels == 1231 * 459 + 409 * 1224
    assert m.ap > 0.999 and m.precision > 0.999 and m.recall > 0.999
    aoi = touched.pooled("aoi").metrics()
    assert aoi.n_positive == m.n_positive  # every mine pixel lies in the river AOI
    assert aoi.n_pixels < 0.7 * m.n_pixels
    centre = evaluate_predictions(manifest, maps, config=EvalConfig(border=0, all_touched=False, progress=False))
    c = centre.pooled("image").metrics()
    assert c.recall == 1.0 and 0.85 < c.precision < 0.95 and c.n_positive < m.n_positive
    excl = evaluate_predictions(manifest, maps, config=EvalConfig(border=0, low_confidence="exclude",
                                                                  all_touched=True, progress=False))
    e = excl.pooled("image").metrics()
    assert e.n_positive < 0.75 * m.n_positive  # Low-confidence polygons are a large share here


@pytest.mark.slow
def test_report_screenshot_in_headless_chromium(real, tmp_path):
    from sandwatch.evaluate.report import find_chromium, screenshot

    if find_chromium() is None:
        pytest.skip("no chromium installed (apt-get install -y chromium)")
    manifest, maps = real
    res = evaluate_predictions(manifest, maps, config=EvalConfig(progress=False), name="other-pipeline")
    write_report([res], tmp_path / "report", overlay_size=400)
    png = screenshot(tmp_path / "report" / "report.html", tmp_path / "shot.png", height=1800)
    from PIL import Image

    img = np.asarray(Image.open(png).convert("RGB"))
    assert img.shape[:2] == (1800, 1200)
    # the page is not blank: there is dark text and coloured pictures on it
    assert (img.sum(axis=2) < 150).mean() > 0.002
    assert img.std() > 20
    # the first screen is the plain-language summary: its pale green box (#f6f8f2, a 4 px
    # green rule on its left) is drawn within the top 300 px
    top = img[:300].reshape(-1, 3).astype(int)
    assert (np.abs(top - [0xf6, 0xf8, 0xf2]).sum(axis=1) < 6).mean() > 0.02
    assert (np.abs(top - [0x5a, 0x8f, 0x29]).sum(axis=1) < 30).sum() > 100
