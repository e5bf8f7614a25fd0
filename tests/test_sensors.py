"""The band table (Sentinel-2 L1C/L2A, true colour, Sentinel-1) and Sentinel-1 as extra bands:
units, normalisation, stacking on the 10 m grid, the demo's backscatter, and a U-Net trained
and run on S2+S1."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import rasterio
import yaml
from rasterio.enums import Resampling
from rasterio.warp import reproject

from sandwatch.bands import (BANDS, L1C_BANDS, L2A_BANDS, RGB_BANDS, S1_BANDS, SENSORS, band_order, canonical_band,
                             parse_band_list)
from sandwatch.dataset.manifest import load_manifest, save_manifest
from sandwatch.errors import SandwatchError
from sandwatch.grid import Grid
from sandwatch.imagery import open_scene, stack_each, stack_scenes
from sandwatch.models.spec import channelwise_normalization, native_range
from conftest import make_utm_grid, write_tif


# ---- the table --------------------------------------------------------------------------------
def test_sensors_list_their_bands_in_canonical_order():
    assert L1C_BANDS == ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
    assert L2A_BANDS == tuple(b for b in L1C_BANDS if b != "B10")
    assert RGB_BANDS == ("R", "G", "B") and S1_BANDS == ("VV", "VH")
    assert set(SENSORS) == {"S2-L1C", "S2-L2A", "RGB", "S1"}
    assert band_order(["VH", "B12", "R", "B02", "VV"]) == ["B02", "B12", "R", "VV", "VH"]
    assert [canonical_band(n) for n in ("vv", "Sigma0_VH", "b8", "nir08", "red", "TCI_R", "cirrus", "hh")] == \
        ["VV", "VH", "B08", "B8A", "B04", "R", "B10", None]
    assert {BANDS[b].units for b in S1_BANDS} == {"dB"} and BANDS["SCL"].model_input is False


def test_unknown_band_names_are_an_error_naming_the_table():
    with pytest.raises(SandwatchError) as err:
        parse_band_list("B02,HH", what="model.bands")
    msg = str(err.value)
    assert "model.bands" in msg and "'HH'" in msg and "S1: VV,VH" in msg and "\n" not in msg


def test_every_band_has_its_own_normalisation():
    norm = channelwise_normalization(["B04", "VV", "VH", "R", "B10"])
    # B04: L2A statistics in DN -> reflectance; VV/VH: SSL4EO-S12 dB statistics; R and B10 declared 0..1
    assert norm.low[0] == pytest.approx((1136.26 - 2 * 965.23) * 1e-4) and norm.high[0] == pytest.approx(
        (1136.26 + 2 * 965.23) * 1e-4)
    assert norm.low[1:3] == pytest.approx((-12.59 - 2 * 5.26, -20.26 - 2 * 5.91))
    assert norm.high[1:3] == pytest.approx((-12.59 + 2 * 5.26, -20.26 + 2 * 5.91))
    assert norm.low[3:] == (0.0, 0.0) and norm.high[3:] == (1.0, 1.0)
    # -15 dB VV maps inside (0, 1), not clipped to 1 as a reflectance would be
    x = np.full((5, 1, 1), -15.0, np.float32)
    assert 0.2 < norm(x)[1, 0, 0] < 0.5
    native = native_range(["B02", "VV"])
    assert native.low == (0.0, -25.0) and native.high == (1.0, 5.0)


# ---- Sentinel-1 files -------------------------------------------------------------------------
def _s1_file(path, grid: Grid, vv, vh, units: str | None, descriptions=("VV", "VH")):
    with rasterio.open(path, "w", driver="GTiff", width=grid.width, height=grid.height, count=2, dtype="float32",
                       crs=grid.crs, transform=grid.transform) as ds:
        ds.write(np.stack([vv, vh]).astype(np.float32))
        for i, d in enumerate(descriptions, 1):
            ds.set_band_description(i, d)
            if units:
                ds.set_band_unit(i, units)
    return path


@pytest.mark.parametrize("units", ["linear", None])
def test_linear_backscatter_reads_as_db(tmp_path, units):
    grid = make_utm_grid(40, 30)
    vv = np.full(grid.shape, 0.1, np.float32)      # -10 dB
    vh = np.full(grid.shape, 0.01, np.float32)     # -20 dB
    vh[0, 0] = np.nan                              # float nodata
    scene = open_scene(_s1_file(tmp_path / "s1_linear.tif", grid, vv, vh, units))
    assert scene.level == "S1" and scene.bands == ("VV", "VH")
    data, valid = scene.read()
    assert np.allclose(data[0], -10.0, atol=1e-4) and np.allclose(data[1][valid], -20.0, atol=1e-4)
    assert not valid[0, 0] and data[1, 0, 0] == 0
    raw, _ = scene.read(units="dn")
    assert np.allclose(raw[0], 0.1)


def test_db_backscatter_reads_as_stored(tmp_path):
    grid = make_utm_grid(40, 30)
    vv = np.linspace(-25, -5, grid.width * grid.height, dtype=np.float32).reshape(grid.shape)
    scene = open_scene(_s1_file(tmp_path / "s1.tif", grid, vv, vv - 7, None))   # negative: dB
    data, _ = scene.read(bands=["VH", "VV"])
    assert np.array_equal(data[1], vv) and np.allclose(data[0], vv - 7)


def test_a_folder_of_polarisations_is_a_sentinel1_scene(tmp_path):
    grid = make_utm_grid(20, 20)
    folder = tmp_path / "S1A_IW_GRDH_20210117"
    folder.mkdir()
    for name, value in (("VV", -9.0), ("VH", -16.0)):
        with rasterio.open(folder / f"{name.lower()}.tif", "w", driver="GTiff", width=20, height=20, count=1,
                           dtype="float32", crs=grid.crs, transform=grid.transform) as ds:
            ds.write(np.full((1, 20, 20), value, np.float32))
            ds.set_band_unit(1, "dB")
    scene = open_scene(folder)
    assert scene.bands == ("VV", "VH") and scene.level == "S1" and str(scene.date) == "2021-01-17"
    assert scene.read()[0][:, 5, 5].tolist() == [-9.0, -16.0]


# ---- stacking ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from sandwatch.synthetic import write_demo_data

    return write_demo_data(tmp_path_factory.mktemp("s2s1") / "demo", sites=2, size=128, seed=3)


def test_stacked_bands_equal_a_reprojection_onto_the_s2_grid(demo):
    obs = load_manifest(demo).observations[0]
    s2 = open_scene(obs.scene)
    stacked = obs.open_scene()
    assert stacked.bands == (*L1C_BANDS, "VV", "VH") and stacked.source == s2.source
    assert stacked.grid.same_as(s2.grid, tol=0) and stacked.date == s2.date
    assert stacked.metadata["stack"][0]["bands"] == ["VV", "VH"]
    assert stacked.metadata["stack"][0]["date"] == str(s2.date.fromordinal(s2.date.toordinal() + 2))
    data, valid = stacked.read(bands=["B04", "VV", "VH"])
    with rasterio.open(obs.s1) as src:
        assert src.crs.to_epsg() == 4326 and src.units == ("dB", "dB")
        expected = np.full((2, *s2.grid.shape), np.nan, np.float32)
        for k in range(2):
            reproject(src.read(k + 1), expected[k], src_transform=src.transform, src_crs=src.crs, src_nodata=np.nan,
                      dst_transform=s2.grid.transform, dst_crs=s2.grid.crs, dst_nodata=np.nan,
                      resampling=Resampling.bilinear)
    both = valid & np.isfinite(expected).all(axis=0)
    assert both.mean() > 0.97
    assert np.allclose(data[1:][:, both], expected[:, both], atol=0.05)
    # S2 bands unchanged by the stack
    alone, _ = s2.read(bands=["B04"])
    assert np.array_equal(alone[0], data[0])


def test_stacking_refuses_repeats_and_other_places_and_warns_on_far_dates(tmp_path, demo):
    obs = load_manifest(demo).observations
    s2 = open_scene(obs[0].scene)
    with pytest.raises(SandwatchError, match="repeats band"):
        stack_scenes(s2, open_scene(obs[1].scene))
    far = make_utm_grid(30, 30)              # UTM 45N, far from the demo site
    other = _s1_file(tmp_path / "elsewhere_2021-01-16.tif", far, np.full(far.shape, -10.0), np.full(far.shape, -17.0),
                     "dB")
    with pytest.raises(SandwatchError, match="does not overlap"):
        stack_scenes(s2, open_scene(other))
    late = open_scene(obs[0].s1)
    late.date = late.date.replace(year=late.date.year + 1)
    with pytest.warns(UserWarning, match="days from"):
        stack_scenes(s2, late)
    with pytest.raises(SandwatchError, match="--s1"):
        stack_each([obs[0].scene, obs[1].scene], [obs[0].s1])


def test_manifest_keeps_s1_relative(tmp_path, demo):
    manifest = load_manifest(demo)
    copy = save_manifest(manifest, demo.parent / "copy.yaml")
    raw = yaml.safe_load(copy.read_text())
    assert raw["observations"][0]["s1"].endswith("_s1.tif") and not raw["observations"][0]["s1"].startswith("/")
    assert load_manifest(copy).observations[0].s1 == manifest.observations[0].s1


def test_demo_backscatter_shows_water_dark_and_churned_sand_bright(demo):
    from sandwatch.synthetic.demo import plan_sites
    from sandwatch.synthetic.landscape import SiteLandscape
    from sandwatch.synthetic.spectra import Surface

    spec = plan_sites(2, 128, 3)[0]
    truth = SiteLandscape(spec).scene(0)
    data, valid = load_manifest(demo).observations[0].open_scene().read(bands=["VV", "VH"])
    water = np.isin(truth.surface, [Surface.CLEAR_WATER, Surface.TURBID_WATER]) & (truth.weight < 0.9) & valid
    sand = np.isin(truth.surface, [Surface.DRY_SAND, Surface.DISTURBED_SAND, Surface.STOCKPILE]) & valid
    assert water.sum() > 50 and sand.sum() > 50
    vv_water, vv_sand = float(np.median(data[0][water])), float(np.median(data[0][sand]))
    assert vv_water < -18 and vv_sand > -13 and vv_sand - vv_water > 7
    assert float(np.median(data[1][water])) < float(np.median(data[1][sand])) - 7


def test_photometric_augmentation_leaves_backscatter_alone():
    from sandwatch.train.augment import photometric
    from sandwatch.train.config import AugmentConfig

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(0.05, 0.3, (2, 16, 16)), rng.uniform(-20, -5, (2, 16, 16))]).astype(np.float32)
    cfg = AugmentConfig(p=1.0)
    y = photometric(x, np.ones((16, 16), bool), rng, cfg, ["B03", "B04", "VV", "VH"])
    assert np.array_equal(y[2:], x[2:]) and not np.allclose(y[:2], x[:2])


# ---- a U-Net on S2 + S1 -----------------------------------------------------------------------
def test_unet_trains_and_predicts_on_s2_plus_s1(tmp_path, demo, capsys):
    from sandwatch.cli.main import main
    from sandwatch.models.checkpoint import Checkpoint

    manifest = load_manifest(demo)
    for o in manifest.observations:
        o.split = "train" if o.site == "site00" else "val"
    split = save_manifest(manifest, demo.parent / "split.yaml")
    bands = ["B03", "B04", "B08", "B11", "VV", "VH"]
    cfg = {"manifest": str(split), "run_dir": str(tmp_path / "run"),
           "model": {"arch": "unet", "bands": bands, "options": {"width": 4}, "normalization": "model"},
           "data": {"window": 64, "windows_per_scene": 4, "num_workers": 0},
           "optim": {"epochs": 1, "batch_size": 4},
           "trainer": {"accelerator": "cpu", "seed": 0, "progress_bar": False},
           "tracking": {"backend": "csv", "overlays": 0}}
    (tmp_path / "s2s1.yaml").write_text(yaml.safe_dump(cfg))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["train", str(tmp_path / "s2s1.yaml")]) == 0
    best = Checkpoint.load(tmp_path / "run" / "checkpoints" / "best.ckpt")
    assert best.bands == tuple(bands)
    norm = best.band_spec.normalization
    assert norm.low[4] == pytest.approx(-12.59 - 2 * 5.26) and norm.high[5] == pytest.approx(-20.26 + 2 * 5.91)

    obs = load_manifest(demo).observations[0]
    out = tmp_path / "maps"
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "run" / "checkpoints" / "best.ckpt"), obs.scene, "--s1", obs.s1,
                 "-o", str(out), "--edge", "8", "-q"]) == 0
    stem = obs.scene.rsplit("/", 1)[-1][:-4]
    with rasterio.open(out / f"{stem}.prob.tif") as ds:
        prob = ds.read(1)
        assert Grid.from_dataset(ds).same_as(open_scene(obs.scene).grid, tol=0)
    assert (prob > 0).mean() > 0.97            # predicted (1 + 254 p) nearly everywhere

    # without its Sentinel-1 scene the model cannot run: one line naming the missing bands
    assert main(["predict", str(tmp_path / "run" / "checkpoints" / "best.ckpt"), obs.scene, "-o",
                 str(tmp_path / "none"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "VV,VH" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "none" / f"{stem}.prob.tif").exists()

    # monitor stacks them the same way, pairwise; another S1 scene on the same S2 date is another observation
    site = [o for o in load_manifest(demo).observations if o.site == obs.site]
    ckpt = str(tmp_path / "run" / "checkpoints" / "best.ckpt")
    mon = ["monitor", "--checkpoint", ckpt, "--site", obs.site, "--rivers", site[0].rivers, "--edge", "8", "-q",
           "-o", str(tmp_path / "mon"), "--scenes", *[o.scene for o in site]]
    capsys.readouterr()
    assert main([*mon, "--s1", *[o.s1 for o in site]]) == 0
    assert f"{obs.site}: {len(site)} new date(s), 0 already known" in capsys.readouterr().out
    assert main([*mon, "--s1", *[o.s1 for o in site]]) == 0
    assert f"{obs.site}: 0 new date(s), {len(site)} already known" in capsys.readouterr().out
    assert main([*mon, "--s1", *[o.s1 for o in reversed(site)]]) == 0      # the S1 scenes swapped
    assert f"{obs.site}: {len(site)} new date(s), {len(site)} already known" in capsys.readouterr().out
    assert main([*mon[:-len(site)], site[0].scene, "--s1", *[o.s1 for o in site]]) == 2   # 2 S1 for 1 scene
    assert "--s1" in capsys.readouterr().err
