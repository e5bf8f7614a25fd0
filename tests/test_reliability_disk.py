"""Full and read-only disks: every writer fails with ONE line naming the file and "disk full" /
"not writable", exit 2, and leaves no empty, partial or temporary file under any name.

The small disk is a real tmpfs mounted by the test (root only; skipped with the reason
otherwise), filled with a filler file so that only a chosen number of bytes is left: none (the
first write fails) or half of what the output needs (GDAL writes the header, then fails on the
tiles, sometimes only when the file is closed). The read-only folder is the same tmpfs
remounted ``ro`` (chmod 0o555 does not stop root).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml

from sandwatch.cli.main import main
from sandwatch.errors import SandwatchError
from sandwatch.grid import Grid

sys.path.insert(0, str(Path(__file__).parent))
from test_predict_e2e import tiny_checkpoint, write_scene  # noqa: E402


# ---- the small disk -----------------------------------------------------------------------------------
class SmallDisk:
    def __init__(self, root: Path):
        self.root = root

    def free(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def fill(self, leave: int = 0) -> None:
        """Fill the disk with a filler file so that ``leave`` bytes (rounded down to pages) stay free."""
        filler = self.root / f".filler-{uuid.uuid4().hex[:6]}"
        with open(filler, "wb") as fh:
            chunk = b"\0" * 4096
            while self.free() > leave:
                try:
                    fh.write(chunk)
                    fh.flush()
                except OSError:
                    break
        assert self.free() <= max(leave, 0) + 4096

    def readonly(self) -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(self.root)], check=True, capture_output=True)

    def leftovers(self) -> list[str]:
        """Files a failed write could have left: temporary names, or anything empty."""
        out = []
        for p in self.root.rglob("*"):
            if p.is_file() and not p.name.startswith(".filler-"):
                if ".partial" in p.name or "probe" in p.name or p.stat().st_size == 0 or p.name.startswith("tmp"):
                    out.append(p.name)
        return out

    def finals(self) -> list[Path]:
        return [p for p in self.root.rglob("*") if p.is_file() and not p.name.startswith(".filler-")]


@pytest.fixture
def disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("a small full filesystem needs a tmpfs mount, which needs root")
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    root = tmp_path / "disk"
    root.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(root)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip() or res.returncode}")
    try:
        yield SmallDisk(root)
    finally:
        if subprocess.run(["umount", str(root)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(root)], capture_output=True)


def run(capfd, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    out, err = capfd.readouterr()
    return code, err


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


def assert_refused(code: int, err: str, final: Path, kind: str, disk: SmallDisk) -> str:
    line = one_error_line(err)
    assert code == 2, err
    assert str(final) in line and kind in line, line
    assert not final.exists()
    assert disk.leftovers() == []
    return line


def every_final_reads_back(disk: SmallDisk) -> None:
    """Whatever a failed command left under a final name is a complete file."""
    from PIL import Image

    from sandwatch.io import verify_raster

    for p in disk.finals():
        if p.suffix == ".tif":
            verify_raster(p)
        elif p.suffix in (".geojson", ".json"):
            json.loads(p.read_text())
        elif p.suffix == ".yaml":
            yaml.safe_load(p.read_text())
        elif p.suffix == ".png":
            with Image.open(p) as im:
                im.load()


# ---- inputs ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A synthetic 13-band scene with mining polygons and a river, a tiny checkpoint, a demo site."""
    from shapely.geometry import LineString, box, mapping

    from sandwatch.synthetic import make_scene

    root = tmp_path_factory.mktemp("inputs")
    grid = Grid.from_bounds("EPSG:32644", 400000, 2200000, 405120, 2205120, 10)   # 512 x 512 px
    scene = root / "scene_20210115.tif"
    make_scene(scene, grid, seed=3)
    rng = np.random.default_rng(0)
    feats = []
    for _ in range(40):
        x, y = rng.uniform(400200, 404800), rng.uniform(2200200, 2204800)
        feats.append({"type": "Feature", "properties": {"Confidence": "High" if rng.random() < .5 else "Low"},
                      "geometry": mapping(box(x, y, x + rng.uniform(30, 300), y + rng.uniform(30, 300)))})
    polygons = root / "mining.geojson"
    polygons.write_text(json.dumps({"type": "FeatureCollection",
                                    "crs": {"type": "name", "properties": {"name": "EPSG:32644"}}, "features": feats}))
    rivers = root / "rivers.geojson"
    river = LineString([(400000, 2202000), (402000, 2202600), (405120, 2202100)])
    rivers.write_text(json.dumps({"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "EPSG:32644"}},
                                  "features": [{"type": "Feature", "properties": {}, "geometry": mapping(river)}]}))
    ckpt = root / "tiny.pt"
    tiny_checkpoint(ckpt, window=64)
    small = root / "small_20210115.tif"
    write_scene(small, 200, 180)
    assert main(["demo-data", str(root / "demo"), "--sites", "2", "--size", "64", "--dates",
                 "2021-01-10,2021-03-10"]) == 0
    return {"root": root, "scene": scene, "polygons": polygons, "rivers": rivers, "ckpt": ckpt, "small": small,
            "demo": root / "demo"}


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in (path.rglob("*") if path.is_dir() else [path]) if p.is_file())


# ---- labels rasterize ---------------------------------------------------------------------------------
@pytest.mark.parametrize("share", [0.0, 0.5])
def test_labels_mask_on_a_full_disk(disk, inputs, tmp_path, capfd, share):
    ref = tmp_path / "ref.tif"
    assert run(capfd, "labels", "rasterize", inputs["polygons"], "--like", inputs["scene"], "-o", ref)[0] == 0
    disk.fill(int(size_of(ref) * share))
    out = disk.root / "mask.tif"
    code, err = run(capfd, "labels", "rasterize", inputs["polygons"], "--like", inputs["scene"], "-o", out)
    assert_refused(code, err, out, "disk full", disk)


def test_labels_weights_on_a_full_disk(disk, inputs, tmp_path, capfd):
    ref = tmp_path / "w.tif"
    assert run(capfd, "labels", "rasterize", inputs["polygons"], "--like", inputs["scene"], "-o", tmp_path / "m.tif",
               "--weights", ref)[0] == 0
    disk.fill(size_of(ref) // 2)
    out = disk.root / "weights.tif"
    code, err = run(capfd, "labels", "rasterize", inputs["polygons"], "--like", inputs["scene"],
                    "-o", tmp_path / "mask2.tif", "--weights", out)
    assert_refused(code, err, out, "disk full", disk)


# ---- aoi ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".tif", ".geojson", ".gpkg"])
@pytest.mark.parametrize("share", [0.0, 0.5])
def test_aoi_on_a_full_disk(disk, inputs, tmp_path, capfd, suffix, share):
    ref = tmp_path / f"ref{suffix}"
    args = ["aoi", "--like", inputs["scene"], "--rivers", inputs["rivers"], "--buffer", "300"]
    assert run(capfd, *args, "-o", ref)[0] == 0
    disk.fill(int(size_of(ref) * share))
    out = disk.root / f"aoi{suffix}"
    code, err = run(capfd, *args, "-o", out)
    assert_refused(code, err, out, "disk full", disk)


# ---- demo-data ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("share", [0.0, 0.3, 0.8])
def test_demo_data_on_a_full_disk(disk, tmp_path, capfd, share):
    args = ["--sites", "1", "--size", "96"]
    assert run(capfd, "demo-data", tmp_path / "ref", *args)[0] == 0
    disk.fill(int(size_of(tmp_path / "ref") * share))
    code, err = run(capfd, "demo-data", disk.root / "demo", *args)
    line = one_error_line(err)
    assert code == 2 and "disk full" in line and str(disk.root / "demo") in line
    named = Path(line.split(": ")[1])
    assert not named.exists()
    assert not (disk.root / "demo" / "manifest.yaml").exists()
    assert disk.leftovers() == []
    every_final_reads_back(disk)       # what was written before the disk filled is whole


# ---- predict -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("share", [0.0, 0.5])
def test_predict_rasters_on_a_full_disk(disk, inputs, tmp_path, capfd, share):
    args = [inputs["ckpt"], inputs["small"], "--edge", "12", "-q"]
    assert run(capfd, "predict", *args, "-o", tmp_path / "ref")[0] == 0
    disk.fill(int(size_of(tmp_path / "ref" / "small_20210115.prob.tif") * share))
    code, err = run(capfd, "predict", *args, "-o", disk.root / "maps")
    line = assert_refused(code, err, disk.root / "maps" / "small_20210115.prob.tif", "disk full", disk)
    assert line.startswith("error: ")
    assert not any(p.name.startswith("small_20210115") for p in disk.finals())


def test_predict_polygons_on_a_full_disk(disk, inputs, tmp_path, capfd):
    """Rasters done, polygons missing (a run killed while polygonising): the re-run writes
    only the polygons, and the disk is full by then."""
    args = [inputs["ckpt"], inputs["small"], "--edge", "12", "--threshold", "0.3", "-q"]
    ref = tmp_path / "ref"
    assert run(capfd, "predict", *args, "-o", ref)[0] == 0
    maps = disk.root / "maps"
    maps.mkdir()
    for key in (".prob.tif", ".mask.tif"):
        shutil.copy(ref / f"small_20210115{key}", maps)
    disk.fill(size_of(ref / "small_20210115.polygons.gpkg") // 3)
    code, err = run(capfd, "predict", *args, "-o", maps)
    assert_refused(code, err, maps / "small_20210115.polygons.gpkg", "disk full", disk)
    every_final_reads_back(disk)


@pytest.mark.parametrize("fmt", ["geojson", "parquet"])
@pytest.mark.parametrize("share", [0.0, 0.5])
def test_polygon_vectors_on_a_full_disk(disk, tmp_path, share, fmt):
    import geopandas as gpd
    from shapely.geometry import box

    from sandwatch.predict.polygons import write_polygons

    rng = np.random.default_rng(1)
    xs, ys = rng.uniform(3e5, 4e5, 3000), rng.uniform(2.1e6, 2.2e6, 3000)
    gdf = gpd.GeoDataFrame({"id": np.arange(3000), "area_m2": rng.uniform(1, 9, 3000)},
                           geometry=[box(x, y, x + 50, y + 80) for x, y in zip(xs, ys)], crs="EPSG:32644")
    key = f"polygons_{fmt}"
    write_polygons(gdf, {key: tmp_path / f"ref.{fmt}"})
    disk.fill(int(size_of(tmp_path / f"ref.{fmt}") * share))
    out = disk.root / f"p.{fmt}"
    with pytest.raises(SandwatchError) as err:
        write_polygons(gdf, {key: out})
    assert "disk full" in str(err.value) and str(out) in str(err.value)
    assert not out.exists() and disk.leftovers() == []


# ---- monitor history ---------------------------------------------------------------------------------
def monitor_args(inputs, out, *extra):
    site = inputs["demo"] / "site00"
    return ["monitor", "--checkpoint", inputs["ckpt"], "--site", "s0", "--rivers", site / "rivers.geojson",
            "--scenes", *sorted(site.glob("*.tif")), "-o", out, "--edge", "12", "-q", *extra]


def test_monitor_new_history_on_a_full_disk(disk, inputs, tmp_path, capfd):
    disk.fill(0)
    db = disk.root / "history.sqlite"
    code, err = run(capfd, *monitor_args(inputs, tmp_path / "mon", "--db", db))
    assert_refused(code, err, db, "disk full", disk)


def test_monitor_history_fills_the_disk_midway(disk, inputs, tmp_path, capfd):
    """An existing history on a disk that fills up: one line, the database intact and as it was."""
    db = disk.root / "history.sqlite"
    site = inputs["demo"] / "site00"
    scenes = sorted(site.glob("*.tif"))
    base = ["monitor", "--checkpoint", inputs["ckpt"], "--site", "s0", "--rivers", site / "rivers.geojson"]
    tail = ["-o", tmp_path / "mon", "--edge", "12", "-q", "--db", db]
    code, err = run(capfd, *base, "--scenes", scenes[0], *tail)
    assert code == 0, err
    before = db.read_bytes()
    disk.fill(0)
    code, err = run(capfd, *base, "--scenes", *scenes, *tail)
    line = one_error_line(err)
    assert code == 2 and str(db) in line and "disk full" in line
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert con.execute("SELECT count(*) FROM observations").fetchone()[0] == 1
    finally:
        con.close()
    assert len(db.read_bytes()) == len(before)


# ---- dataset split -o ---------------------------------------------------------------------------------
@pytest.mark.parametrize("leave", [0, 300])
def test_dataset_split_on_a_full_disk(disk, inputs, capfd, leave):
    disk.fill(leave)
    out = disk.root / "manifest.yaml"
    code, err = run(capfd, "dataset", "split", inputs["demo"] / "manifest.yaml", "--clusters", "2", "-o", out)
    assert_refused(code, err, out, "disk full", disk)


# ---- checkpoints ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("share", [0.0, 0.5])
def test_checkpoint_save_on_a_full_disk(disk, inputs, share):
    from sandwatch.models.checkpoint import Checkpoint

    ckpt = Checkpoint.load(inputs["ckpt"])
    disk.fill(int(inputs["ckpt"].stat().st_size * share))
    out = disk.root / "best.pt"
    with pytest.raises(SandwatchError) as err:
        ckpt.save(out)
    assert "disk full" in str(err.value) and str(out) in str(err.value) and "\n" not in str(err.value)
    assert not out.exists() and disk.leftovers() == []


# ---- read-only folders -------------------------------------------------------------------------------
READ_ONLY_CASES = {
    "labels mask": lambda i, d: (["labels", "rasterize", i["polygons"], "--like", i["scene"], "-o", d / "m.tif"],
                                 d / "m.tif"),
    "labels weights": lambda i, d: (["labels", "rasterize", i["polygons"], "--like", i["scene"],
                                     "-o", i["root"] / f"m{uuid.uuid4().hex[:4]}.tif", "--weights", d / "w.tif"],
                                    d / "w.tif"),
    "aoi tif": lambda i, d: (["aoi", "--like", i["scene"], "--rivers", i["rivers"], "-o", d / "a.tif"], d / "a.tif"),
    "aoi geojson": lambda i, d: (["aoi", "--like", i["scene"], "--rivers", i["rivers"], "-o", d / "sub" / "a.geojson"],
                                 d / "sub" / "a.geojson"),
    "predict": lambda i, d: (["predict", i["ckpt"], i["small"], "-o", d / "maps", "--edge", "12", "-q"], d / "maps"),
    "demo-data": lambda i, d: (["demo-data", d / "demo", "--sites", "1", "--size", "64"], d / "demo"),
    "monitor out": lambda i, d: (monitor_args(i, d / "mon"), d / "mon"),
    "monitor db": lambda i, d: (monitor_args(i, i["root"] / f"mon{uuid.uuid4().hex[:4]}", "--db", d / "h.sqlite"),
                                d / "h.sqlite"),
    "dataset split": lambda i, d: (["dataset", "split", i["demo"] / "manifest.yaml", "--clusters", "2",
                                    "-o", d / "m.yaml"], d / "m.yaml"),
}


@pytest.mark.parametrize("case", list(READ_ONLY_CASES))
def test_read_only_folder(disk, inputs, capfd, case):
    argv, named = READ_ONLY_CASES[case](inputs, disk.root)
    disk.readonly()
    code, err = run(capfd, *argv)
    line = one_error_line(err)
    assert code == 2 and str(named) in line and "not writable (read-only file system)" in line, line
    assert disk.finals() == []


def test_existing_history_on_a_read_only_disk(disk, inputs, tmp_path, capfd):
    db = disk.root / "history.sqlite"
    site = inputs["demo"] / "site00"
    scenes = sorted(site.glob("*.tif"))
    base = ["monitor", "--checkpoint", inputs["ckpt"], "--site", "s0", "--rivers", site / "rivers.geojson"]
    tail = ["-o", tmp_path / "mon", "--edge", "12", "-q", "--db", db]
    assert run(capfd, *base, "--scenes", scenes[0], *tail)[0] == 0
    disk.readonly()
    code, err = run(capfd, *base, "--scenes", *scenes, *tail)
    line = one_error_line(err)
    assert code == 2 and str(db) in line and "not writable" in line


def test_checkpoint_save_into_a_read_only_folder(disk, inputs):
    from sandwatch.models.checkpoint import Checkpoint

    disk.readonly()
    with pytest.raises(SandwatchError, match="not writable"):
        Checkpoint.load(inputs["ckpt"]).save(disk.root / "x" / "best.pt")


# ---- atomic_output itself (no mount needed) -------------------------------------------------------------
def test_atomic_output_never_renames_an_empty_file(tmp_path):
    from sandwatch.io import atomic_output

    out = tmp_path / "out.tif"
    with pytest.raises(SandwatchError, match="could not be written"):
        with atomic_output(out) as tmp:
            tmp.write_bytes(b"")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(SandwatchError, match="could not be written"):
        with atomic_output(out):
            pass        # the writer wrote nothing at all
    assert list(tmp_path.iterdir()) == []
    with atomic_output(tmp_path / "empty.txt", allow_empty=True) as tmp:
        tmp.write_bytes(b"")
    assert (tmp_path / "empty.txt").read_bytes() == b""


def test_atomic_output_refuses_a_truncated_geotiff(tmp_path):
    from sandwatch.io import atomic_output

    grid = Grid.from_bounds("EPSG:32644", 0, 0, 5120, 5120, 10)
    ref = tmp_path / "ref.tif"
    with rasterio.open(ref, "w", driver="GTiff", width=512, height=512, count=1, dtype="uint16", crs=grid.crs,
                       transform=grid.transform, tiled=True, compress="deflate") as ds:
        ds.write(np.random.default_rng(0).integers(0, 9999, (1, 512, 512), dtype=np.uint16))
    data = ref.read_bytes()
    out = tmp_path / "out.tif"
    with pytest.raises(SandwatchError, match="could not be written .*does not read back"):
        with atomic_output(out) as tmp:
            tmp.write_bytes(data[: len(data) * 2 // 3])   # header fine, last tiles cut short
    assert not out.exists()


def test_cleanup_error_does_not_hide_the_real_one(tmp_path, monkeypatch):
    """On a read-only disk the temporary file cannot be removed either: the user must still
    hear about the disk, not about the cleanup."""
    import errno

    from sandwatch.io import atomic_output

    real_unlink = Path.unlink

    def unlink(self, missing_ok=False):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.raises(SandwatchError) as err:
        with atomic_output(tmp_path / "x.json") as tmp:
            tmp.write_text("{")
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp))
    assert "disk full" in str(err.value) and str(tmp_path / "x.json") in str(err.value)
    monkeypatch.setattr(Path, "unlink", real_unlink)


def test_other_errors_pass_through_unchanged(tmp_path):
    from sandwatch.io import atomic_output

    with pytest.raises(ValueError, match="a bug"):
        with atomic_output(tmp_path / "x.json") as tmp:
            tmp.write_text("{}")
            raise ValueError("a bug")
    assert list(tmp_path.iterdir()) == []
