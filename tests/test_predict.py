"""Prediction: window arithmetic, streaming stitching, COG/polygon outputs, AOI, resume, Dask.

Everything here runs on small synthetic rasters with a deterministic numpy "model" (a 5 x 5
mean of the first band), so the expected pixels are known exactly.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest
import rasterio
import scipy.ndimage as ndi
from shapely.geometry import box

from sandwatch.errors import SandwatchError
from sandwatch.grid import Grid, Window
from sandwatch.predict import (
    Predictor, blend_weights, decode_probability, predict_scene, predict_scenes, reflect_indices, reflect_read,
    tiled_inference, validate_cog, window_grid,
)

# ---------------------------------------------------------------------------------------------
# fakes


def mean5(batch: np.ndarray) -> np.ndarray:
    """A deterministic "model": 5 x 5 mean of band 0, per window (needs 2 px of context)."""
    return ndi.uniform_filter(batch[:, 0], size=(1, 5, 5), mode="nearest").astype(np.float32)


class FakeScene:
    """Same attributes and ``read`` contract as :class:`sandwatch.imagery.Scene`."""

    def __init__(self, data: np.ndarray, valid: np.ndarray, grid: Grid, source="fake.tif", date=dt.date(2021, 3, 4)):
        self.data, self.valid, self.grid, self.source, self.date = data, valid, grid, source, date
        self.bands = ("B02", "B03", "B04")
        self.level = "L2A"
        self.reads: list[Window] = []

    def read(self, window=None, bands=None, *, units="reflectance", fill_missing=False):
        window = window or self.grid.full_window()
        self.reads.append(window)
        data = np.zeros((self.data.shape[0], *window.shape), np.float32)
        valid = np.zeros(window.shape, bool)
        inside = window.clip(*self.grid.shape)
        if inside is not None:
            rs, cs = inside.relative_to(window).slices()
            data[:, rs, cs] = self.data[(slice(None), *inside.slices())]
            valid[rs, cs] = self.valid[inside.slices()]
        return data, valid


def make_scene(height=230, width=310, seed=0, crs="EPSG:32633", res=10.0, source="fake.tif"):
    rng = np.random.default_rng(seed)
    data = (rng.random((3, height, width)) * 0.2).astype(np.float32)
    # bright "mines": a few rectangles of high band-0 values, one across the middle row seam
    for r, c, h, w in [(20, 30, 12, 18), (100, 140, 30, 25), (180, 250, 15, 40), (60, 280, 8, 30)]:
        data[0, r:r + h, c:c + w] = 0.95
    valid = np.ones((height, width), bool)
    valid[:6, :] = False            # a nodata stripe along the top
    valid[150:160, 10:30] = False   # and a hole
    grid = Grid.from_bounds(crs, 600000.0, 5800000.0 - height * res, 600000.0 + width * res, 5800000.0, res)
    return FakeScene(data, valid, grid, source=source)


def array_reader(img, valid):
    def read(w: Window):
        assert w.clip(*valid.shape) == w, f"read outside the grid: {w}"
        return img[:, w.row:w.row_stop, w.col:w.col_stop], valid[w.row:w.row_stop, w.col:w.col_stop]
    return read


def run(img, valid, window=40, edge=8, **kw):
    blocks = list(tiled_inference(mean5, array_reader(img, valid), valid.shape, window, edge, **kw))
    return blocks, np.concatenate([p for _, p in blocks]) if blocks else None


PREDICTOR = Predictor(mean5, ("B02", "B03", "B04"), window=40, threshold=0.5, name="mean5")

# ---------------------------------------------------------------------------------------------
# pure arithmetic


@pytest.mark.parametrize("shape", [(230, 310), (100, 100), (7, 260), (1, 1)])
def test_window_grid_keeps_tile_the_grid_and_reads_have_full_context(shape):
    pairs = window_grid(shape, 160, 30)
    cover = np.zeros(shape, int)
    for read, keep in pairs:
        cover[keep.slices()] += 1
        assert read.shape == (160, 160)
        assert (read.row + 30, read.col + 30) == (keep.row, keep.col)
        assert keep.height <= 100 and keep.width <= 100
        assert keep.intersection(read.pad(-30)) == keep      # kept pixels are in the interior
    assert cover.min() == 1 and cover.max() == 1
    # stride 100 (the published 160 px windows with 30 px edges)
    assert sorted({k.col for _, k in pairs})[:3] == [0, 100, 200][: len({k.col for _, k in pairs})][:3]


def test_window_grid_rejects_an_edge_that_eats_the_window():
    with pytest.raises(SandwatchError, match="--edge"):
        window_grid((100, 100), 160, 80)
    assert len(window_grid((100, 100), 160, 79)) == 50 * 50  # stride 2 px


@pytest.mark.parametrize("n", [1, 2, 3, 17, 100])
def test_reflect_indices_match_numpy_reflect_padding(n):
    line = np.arange(n)
    pad = 3 * n + 5
    expected = np.pad(line, pad, mode="reflect") if n > 1 else np.zeros(n + 2 * pad, int)
    assert np.array_equal(line[reflect_indices(-pad, n + pad, n)], expected)


def test_reflect_read_is_one_mirrored_image_whatever_the_window():
    rng = np.random.default_rng(1)
    img = rng.random((2, 50, 60)).astype(np.float32)
    valid = np.ones((50, 60), bool)
    read = array_reader(img, valid)
    strip, _ = reflect_read(read, Window(-10, -10, 40, 80), (50, 60))
    single, _ = reflect_read(read, Window(-10, 20, 40, 40), (50, 60))
    assert np.array_equal(strip[:, :, 30:70], single)
    assert np.array_equal(strip[0, 10:, 10:70], img[0, :30, :60])
    assert np.array_equal(strip[0, 10:, 70], img[0, :30, 58])         # col 60 mirrors col 58
    assert np.array_equal(strip[0, 9, 10:70], img[0, 1, :60])        # row -1 mirrors row 1
    assert np.array_equal(strip[0, 10:, 0], img[0, :30, 10])          # col -10 mirrors col 10


@pytest.mark.parametrize("margin", [1, 5, 8])
def test_cosine_weights_are_a_partition_of_unity(margin):
    shape = (97, 130)
    total = np.zeros(shape)
    for _, keep in window_grid(shape, 40, 8):
        ext, w = blend_weights(keep, margin, shape)
        assert ext.intersection(keep) == keep
        total[ext.slices()] += w
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


@pytest.mark.parametrize("blend", ["none", "cosine"])
def test_stitched_equals_the_filter_on_the_mirrored_scene(blend):
    rng = np.random.default_rng(2)
    img = rng.random((2, 137, 251)).astype(np.float32)
    valid = np.ones(img.shape[1:], bool)
    valid[5:9, 100:120] = False
    blocks, out = run(img, valid, blend=blend, batch_size=3)
    expected = ndi.uniform_filter(img[0], size=5, mode="mirror")   # scipy "mirror" = numpy "reflect"
    expected[~valid] = np.nan
    assert out.shape == img.shape[1:]
    assert np.array_equal(np.isnan(out), ~valid)
    np.testing.assert_allclose(out, expected, atol=2e-6, equal_nan=True)
    # blocks tile the grid top to bottom with full width
    rows = [b.row for b, _ in blocks]
    assert rows[0] == 0 and all(b.width == 251 and b.col == 0 for b, _ in blocks)
    assert all(a.row_stop == b.row for (a, _), (b, _) in zip(blocks, blocks[1:]))


@pytest.mark.parametrize("blend", ["none", "cosine"])
def test_whole_equals_two_halves_bit_for_bit(blend):
    rng = np.random.default_rng(3)
    img = rng.random((1, 141, 203)).astype(np.float32)
    valid = np.ones(img.shape[1:], bool)
    _, whole = run(img, valid, blend=blend)
    for a, b in [(Window(0, 0, 70, 203), Window(70, 0, 71, 203)),      # top / bottom, not on a stride
                 (Window(0, 0, 141, 101), Window(0, 101, 141, 102))]:  # left / right
        _, pa = run(img, valid, blend=blend, region=a)
        _, pb = run(img, valid, blend=blend, region=b)
        halves = np.concatenate([pa, pb], axis=0 if a.width == 203 else 1)
        assert np.array_equal(halves, whole, equal_nan=True)


@pytest.mark.parametrize("batch_size, rows_read", [(4, 1), (8, 2)])
@pytest.mark.parametrize("ahead", [0, 2])
def test_streaming_yields_rows_before_reading_the_rest(batch_size, rows_read, ahead):
    img = np.zeros((1, 500, 90), np.float32)
    valid = np.ones((500, 90), bool)
    reads = []

    def read(w):
        reads.append(w)
        return img[:, w.row:w.row_stop, w.col:w.col_stop], valid[w.row:w.row_stop, w.col:w.col_stop]

    gen = tiled_inference(mean5, read, (500, 90), 40, 8, blend="cosine", strip_windows=2, batch_size=batch_size,
                          prefetch_strips=ahead)
    block, prob = next(gen)
    # 4 windows per row, 2 strips per row: the first block comes once the first batch is
    # done (one row of windows for batch 4, two rows for batch 8), and blocks stay small.
    # A reader thread runs at most `ahead` strips ahead (plus the one it is reading).
    needed = 2 * rows_read
    if ahead == 0:
        assert len(reads) == needed and {w.row for w in reads} == {max(0, 24 * i - 8) for i in range(rows_read)}
    else:
        assert needed <= len(reads) <= needed + ahead + 1
    assert block.row == 0 and 0 < block.height <= 24 * rows_read
    heights = [b.height for b, _ in gen]
    assert max(heights) <= 24 * rows_read and sum(heights) + block.height == 500


def test_prefetch_keeps_order_raises_errors_and_stops_early():
    import threading

    from sandwatch.predict.tiling import prefetch

    assert list(prefetch(range(50), 3)) == list(range(50))
    assert list(prefetch(range(5), 0)) == list(range(5))

    def broken():
        yield 1
        raise OSError("corrupt block")

    got = []
    with pytest.raises(OSError, match="corrupt block"):
        for v in prefetch(broken(), 2):
            got.append(v)
    assert got == [1]

    produced, closed_in = [], []

    def counting():
        try:
            for i in range(1000):
                produced.append(i)
                yield i
        finally:
            closed_in.append(threading.current_thread().name)

    it = prefetch(counting(), 2, name="sandwatch-prefetch")
    assert next(it) == 0
    it.close()                      # the consumer stops: so does the thread, soon
    assert len(produced) <= 4
    # the producer's clean-up ran in the producing thread (where per-thread handles live)
    assert closed_in == ["sandwatch-prefetch"]
    assert not any(t.name == "sandwatch-prefetch" for t in threading.enumerate())


def test_include_leaves_skipped_windows_nodata_and_counts_them():
    rng = np.random.default_rng(4)
    img = rng.random((1, 100, 100)).astype(np.float32)
    valid = np.ones((100, 100), bool)
    stats = {}
    _, out = run(img, valid, include=lambda keep: keep.row == 0 and keep.col == 0, stats=stats)
    assert stats == {"windows": 1, "skipped_windows": 24}
    assert not np.isnan(out[:24, :24]).any()
    assert np.isnan(out[24:, :]).all() and np.isnan(out[:, 24:]).all()


# ---------------------------------------------------------------------------------------------
# predict_scene: files


def test_predict_scene_writes_aligned_cogs_and_polygons(tmp_path):
    scene = make_scene()
    res = predict_scene(PREDICTOR, scene, tmp_path, edge=8, batch_size=4, progress=False)
    paths = res.paths
    assert {p.name for p in tmp_path.iterdir()} == {
        "fake.prob.tif", "fake.mask.tif", "fake.polygons.gpkg", "fake.polygons.geojson", "fake.polygons.parquet"}
    _, expected = run(scene.data, scene.valid)
    for key in ("probability", "mask"):
        assert validate_cog(paths[key])[0], validate_cog(paths[key])
        with rasterio.open(paths[key]) as ds:
            assert Grid.from_dataset(ds).same_as(scene.grid, tol=0)
            assert ds.transform == scene.grid.transform and ds.crs == scene.grid.crs
            assert ds.overviews(1)  # overviews present
            values = ds.read(1)
            nodata = ds.nodata
        if key == "probability":
            assert nodata == 0 and values.dtype == np.uint8
            prob = decode_probability(values)
            assert np.array_equal(np.isnan(prob), np.isnan(expected))
            assert np.nanmax(np.abs(prob - expected)) <= 0.5 / 254 + 1e-6
        else:
            assert nodata == 255
            assert np.array_equal(values == 255, ~scene.valid)
            assert np.array_equal(values == 1, np.nan_to_num(expected) >= 0.5)
    mine_px = int(np.sum(np.nan_to_num(expected) >= 0.5))
    assert res.stats["mine_pixels"] == mine_px and res.stats["windows"] == 10 * 13

    import geopandas as gpd

    gdf = gpd.read_file(paths["polygons_gpkg"])
    assert gdf.crs == scene.grid.crs
    assert len(gdf) == 4 == res.stats["polygons"]
    assert gdf["pixels"].sum() == mine_px
    np.testing.assert_allclose(gdf["area_m2"], gdf["pixels"] * 100.0)
    np.testing.assert_allclose(gdf.geometry.area, gdf["area_m2"])
    assert (gdf["date"] == "2021-03-04").all()
    assert ((gdf["mean_prob"] >= 0.5) & (gdf["max_prob"] <= 1) & (gdf["max_prob"] >= gdf["mean_prob"])).all()
    gj = json.loads(paths["polygons_geojson"].read_text())
    assert len(gj["features"]) == 4
    gpq = gpd.read_parquet(paths["polygons_parquet"])
    assert gpq.crs == scene.grid.crs and gpq.geometry.geom_equals(gdf.geometry).all()
    assert gpq["area_m2"].tolist() == gdf["area_m2"].tolist()
    lon, lat = gj["features"][0]["geometry"]["coordinates"][0][0]
    assert 10 < lon < 20 and 50 < lat < 54      # EPSG:4326 (UTM 33N near 52 N)


def test_polygons_merge_across_block_seams(tmp_path):
    from sandwatch.predict import polygonize

    scene = make_scene()
    res = predict_scene(PREDICTOR, scene, tmp_path, edge=8, progress=False)
    whole = polygonize(res.paths["mask"], res.paths["probability"], band_rows=10_000)
    banded = polygonize(res.paths["mask"], res.paths["probability"], band_rows=7)
    assert len(banded) == len(whole) == 4
    assert sorted(banded["pixels"]) == sorted(whole["pixels"])
    for a, b in zip(sorted(whole.geometry, key=lambda g: g.bounds), sorted(banded.geometry, key=lambda g: g.bounds)):
        assert a.symmetric_difference(b).area == 0


def test_no_mining_still_writes_empty_polygon_files(tmp_path):
    import geopandas as gpd

    res = predict_scene(PREDICTOR, make_scene(height=60, width=60), tmp_path, edge=8, threshold=1.0, progress=False)
    assert res.stats["polygons"] == 0 and res.stats["mine_pixels"] == 0
    gdf = gpd.read_file(res.paths["polygons_gpkg"])
    assert len(gdf) == 0 and "area_m2" in gdf.columns and gdf.crs == "EPSG:32633"
    assert len(gpd.read_file(res.paths["polygons_geojson"])) == 0


def test_float32_output_and_cosine_blend(tmp_path):
    scene = make_scene(height=90, width=120)
    res = predict_scene(PREDICTOR, scene, tmp_path, edge=8, dtype="float32", blend="cosine", progress=False)
    _, expected = run(scene.data, scene.valid, blend="cosine")
    with rasterio.open(res.paths["probability"]) as ds:
        assert ds.dtypes[0] == "float32" and np.isnan(ds.nodata)
        assert np.array_equal(ds.read(1), expected, equal_nan=True)
    assert validate_cog(res.paths["probability"])[0]


def test_aoi_only_leaves_nodata_outside(tmp_path):
    scene = make_scene()
    left, bottom, right, top = scene.grid.bounds
    aoi = box(left + 300, top - 700, left + 900, top - 300)       # a small block in the upper left
    res = predict_scene(PREDICTOR, scene, tmp_path, edge=8, aoi=aoi, progress=False)
    with rasterio.open(res.paths["probability"]) as ds:
        prob = ds.read(1)
    with rasterio.open(res.paths["mask"]) as ds:
        mask = ds.read(1)
    # windows whose interior (24 px stride) touches rows 30..70, cols 30..90 -> rows 24..72, cols 24..96
    predicted = np.zeros(prob.shape, bool)
    predicted[24:72, 24:96] = True
    assert np.array_equal(prob != 0, predicted & scene.valid)
    assert np.array_equal(mask != 255, predicted & scene.valid)
    assert res.stats["windows"] == 2 * 3 and res.stats["skipped_windows"] == 130 - 6
    assert 0 < res.stats["aoi_fraction"] < 0.1


class Boom(RuntimeError):
    pass


def test_a_killed_run_leaves_nothing_and_resumes(tmp_path):
    scenes = [make_scene(seed=1, source="a.tif"), make_scene(seed=2, source="b.tif")]
    calls = {"n": 0}

    def dying(batch):
        calls["n"] += 1
        if calls["n"] > 30:           # 20 batches per scene: dies part way through the second
            raise Boom("killed")
        return mean5(batch)

    pred = Predictor(dying, PREDICTOR.bands, 40, 0.5)
    with pytest.raises(Boom):
        predict_scenes(pred, scenes, tmp_path, edge=8, progress=False)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["a.mask.tif", "a.polygons.geojson", "a.polygons.gpkg", "a.polygons.parquet", "a.prob.tif"]   # no partial b
    before = (tmp_path / "a.prob.tif").stat().st_mtime_ns
    results = predict_scenes(PREDICTOR, scenes, tmp_path, edge=8, progress=False)
    assert [r.skipped for r in results] == [True, False]
    assert (tmp_path / "a.prob.tif").stat().st_mtime_ns == before
    assert len(list(tmp_path.iterdir())) == 10          # 5 outputs per scene
    # overwrite recomputes; a scene whose polygons are missing only gets its polygons back
    (tmp_path / "b.polygons.gpkg").unlink()
    again = predict_scene(Predictor(dying, PREDICTOR.bands, 40, 0.5), scenes[1], tmp_path, edge=8, progress=False)
    assert not again.skipped and "windows" not in again.stats and (tmp_path / "b.polygons.gpkg").exists()
    res = predict_scene(PREDICTOR, scenes[0], tmp_path, edge=8, overwrite=True, progress=False)
    assert not res.skipped and (tmp_path / "a.prob.tif").stat().st_mtime_ns != before


@pytest.mark.parametrize("where", ["read", "write"])
def test_a_failing_read_or_write_thread_raises_and_leaves_nothing(tmp_path, where, monkeypatch):
    """Reads and writes run in threads beside the model: their errors still reach the caller,
    and no output (nor temporary file) is left."""
    import threading

    scene = make_scene(seed=3, source="c.tif")
    if where == "read":
        real_read = scene.read

        def read(window=None, bands=None, **kw):
            if len(scene.reads) >= 5:
                raise OSError("c.tif: corrupt block")
            return real_read(window, bands, **kw)

        scene.read = read
    else:
        from sandwatch.predict import writer

        real_write, n = writer.StreamingCOGWriter.write, {"calls": 0}

        def write(self, window, block):
            n["calls"] += 1
            if n["calls"] > 3:
                raise OSError("disk full")
            real_write(self, window, block)

        monkeypatch.setattr(writer.StreamingCOGWriter, "write", write)
    with pytest.raises(OSError, match="corrupt block" if where == "read" else "disk full"):
        predict_scene(PREDICTOR, scene, tmp_path, edge=8, progress=False)
    assert list(tmp_path.iterdir()) == []
    assert not [t for t in threading.enumerate() if t.name.startswith(("sandwatch-read", "sandwatch-write"))]


def test_user_errors_are_one_line(tmp_path):
    scene = make_scene(height=50, width=50)
    with pytest.raises(SandwatchError, match="--edge"):
        predict_scene(PREDICTOR, scene, tmp_path, edge=20, progress=False)
    with pytest.raises(SandwatchError, match="--dtype"):
        predict_scene(PREDICTOR, scene, tmp_path, dtype="int16", progress=False)
    with pytest.raises(SandwatchError, match="--threshold"):
        predict_scene(PREDICTOR, scene, tmp_path, threshold=50, progress=False)
    with pytest.raises(SandwatchError, match="the AOI is empty"):
        predict_scene(PREDICTOR, scene, tmp_path, edge=8, aoi=box(0, 0, 1, 1).intersection(box(5, 5, 6, 6)),
                      progress=False)
    with pytest.raises(SandwatchError, match="no such AOI file"):
        predict_scene(PREDICTOR, scene, tmp_path, edge=8, aoi=tmp_path / "rivers.gpkg", progress=False)
    assert not list(tmp_path.iterdir())


def test_dask_local_cluster_gives_the_in_process_pixels(tmp_path):
    distributed = pytest.importorskip("distributed")
    scenes = [make_scene(seed=5, source="x/rgb.tif"), make_scene(seed=6, source="y/rgb.tif", height=120)]
    local = predict_scenes(PREDICTOR, scenes, tmp_path / "local", edge=8, progress=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cl, \
            distributed.Client(cl) as client:
        remote = predict_scenes(PREDICTOR, scenes, tmp_path / "dask", edge=8, scheduler=client)
    assert [r.paths["probability"].name for r in remote] == ["x-rgb.prob.tif", "y-rgb.prob.tif"]
    for a, b in zip(local, remote):
        for key in ("probability", "mask"):
            with rasterio.open(a.paths[key]) as da, rasterio.open(b.paths[key]) as db:
                assert np.array_equal(da.read(), db.read()) and da.transform == db.transform


@pytest.mark.parametrize("blend", ["none", "cosine"])
def test_row_bands_on_a_cluster_equal_the_whole_scene(tmp_path, blend):
    distributed = pytest.importorskip("distributed")
    from sandwatch.predict.distributed import band_regions

    scene = make_scene(height=200, width=150)
    whole = predict_scene(PREDICTOR, scene, tmp_path / "whole", edge=8, blend=blend, progress=False)
    assert [r.row for r in band_regions(scene.grid.shape, 40, 8, 50)] == [0, 48, 96, 144, 192]
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cl, \
            distributed.Client(cl) as client:
        [banded] = predict_scenes(PREDICTOR, [scene], tmp_path / "bands", edge=8, blend=blend, scheduler=client,
                                  band_rows=50)
    assert banded.stats["bands"] == 5
    # with cosine blending a band also predicts the window rows whose tapers reach into it
    extra = 0 if blend == "none" else 2 * 4 * 7        # 4 inner seams x 2 rows x 7 windows
    assert banded.stats["windows"] == whole.stats["windows"] + extra
    for key in ("probability", "mask"):
        with rasterio.open(whole.paths[key]) as a, rasterio.open(banded.paths[key]) as b:
            assert np.array_equal(a.read(), b.read()) and a.profile == b.profile
        assert validate_cog(banded.paths[key])[0]
    assert sorted(p.name for p in (tmp_path / "bands").iterdir()) == sorted(p.name for p in (tmp_path / "whole").iterdir())
