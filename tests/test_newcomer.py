"""A newcomer's first hour: quiet runs, an instant model list, one checkpoint name, outputs
named by observation, a demo that does not delete other folders, path maps for imports, the
same --rivers/--aoi meaning everywhere, help examples that parse, a report in plain words."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from shapely.geometry import box, mapping

from sandwatch.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("newcomer")
    assert main(["demo-data", str(root / "data"), "--sites", "4", "--size", "128", "--no-s1"]) == 0
    assert main(["dataset", "split", str(root / "data" / "manifest.yaml"), "--clusters", "2"]) == 0
    return root


def _train_args(demo, run):
    return ["train", str(ROOT / "configs" / "demo.yaml"), "--set", f"manifest={demo / 'data' / 'manifest.yaml'}",
            "--set", f"run_dir={run}", "--set", "optim.epochs=1", "--set", "data.num_workers=0",
            "--set", "model.options.width=4", "--set", "data.window=64", "--set", "data.windows_factor=1",
            "--set", "trainer.progress_bar=false"]


CHATTER = ("GPU available", "TPU available", "Tip:", "litlogger", "INFO mlflow", "Creating it", "LeafSpec",
           "`Trainer.fit` stopped", "limit_val_batches")


@pytest.fixture(scope="module")
def trained(demo):
    """One quiet training run (its stdout, stderr and best checkpoint)."""
    proc = subprocess.run([sys.executable, "-m", "sandwatch", *_train_args(demo, demo / "run")],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, proc.stderr, demo / "run" / "checkpoints" / "best.pt"


# ---- 2. noise ------------------------------------------------------------------------------------
def test_a_training_run_prints_each_warning_once_and_no_library_chatter(demo, trained):
    _, err, _ = trained
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert not [ln for ln in lines if any(c in ln for c in CHATTER)], lines
    warnings = [ln for ln in lines if ln.startswith("warning: ")]
    assert len(warnings) == len(set(warnings))
    # the site without mining has empty label files: said once per file, not once per epoch or read
    empty = [p for p in (demo / "data").rglob("*_mining.geojson") if not json.loads(p.read_text())["features"]]
    assert len(empty) == 2
    assert sorted(w.split(": ")[1] for w in warnings if "has no features" in w) == sorted(map(str, empty))
    assert all(ln.startswith("warning: ") for ln in lines), lines


def test_verbose_shows_the_library_lines(demo):
    proc = subprocess.run([sys.executable, "-m", "sandwatch", "-v", *_train_args(demo, demo / "run-v")],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0
    assert "GPU available" in proc.stderr


# ---- 3. models list, one checkpoint name ---------------------------------------------------------
def test_models_lists_from_a_cache_without_importing_torch(tmp_path):
    env = {**os.environ, "SANDWATCH_CACHE": str(tmp_path / "cache")}
    code = ("import sys; from sandwatch.cli.main import main; main(['models']); "
            "print('TORCH', 'torch' in sys.modules)")
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    second = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert first.returncode == second.returncode == 0
    assert "TORCH True" in first.stdout and "TORCH False" in second.stdout
    assert first.stdout.replace("TORCH True", "") == second.stdout.replace("TORCH False", "")
    assert "satmae-large" in second.stdout and "303.87 M" in second.stdout
    assert len(list((tmp_path / "cache").glob("models-*.json"))) == 1


def _help_texts():
    import click

    from sandwatch.cli.main import cli
    from test_cli import _walk

    ctx = click.Context(cli, info_name="sandwatch")
    texts = {(): cli.get_help(ctx)}
    for path in _walk(cli, ctx):
        cmd, parent = cli, ctx
        for name in path:
            cmd = cmd.get_command(parent, name)
            parent = click.Context(cmd, info_name=name, parent=parent)
        texts[path] = cmd.get_help(parent)
    return texts


def _examples(text: str) -> list[list[str]]:
    """``sandwatch ...`` command lines in a text (continuation lines joined, comments dropped)."""
    text = re.sub(r"\\\n\s*", " ", text)
    out = []
    for line in text.splitlines():
        m = re.match(r"\s*(?:\$\s+)?sandwatch\s+([a-z-]+(?:\s[^#]*)?)", line)
        if m and not line.strip().startswith(("Usage:", "name ")):
            try:
                args = shlex.split(m.group(1))
            except ValueError:
                continue
            out.append([a for a in args if not a.startswith("$")])
    return out


def test_every_example_in_the_help_and_readme_parses():
    """Each example command line of every --help and of the README names commands and options
    that exist (parsed by click as the command would be; files need not exist)."""
    import click

    from sandwatch.cli.main import cli

    sources = {"README.md": (ROOT / "README.md").read_text()}
    sources.update({"help " + " ".join(p): t for p, t in _help_texts().items()})
    checked = 0
    for where, text in sources.items():
        for args in _examples(text):
            ctx = click.Context(cli, info_name="sandwatch")
            if cli.get_command(ctx, args[0]) is None:
                continue            # prose that wraps before "sandwatch", not a command line
            cmd, rest = cli, list(args)
            while isinstance(cmd, click.Group) and rest and not rest[0].startswith("-"):
                sub = cmd.get_command(ctx, rest[0])
                if sub is None:
                    break
                ctx, cmd, rest = click.Context(sub, info_name=rest[0], parent=ctx), sub, rest[1:]
            try:
                cmd.make_context(ctx.info_name, rest, parent=ctx.parent, resilient_parsing=True)
            except click.NoSuchOption as err:
                pytest.fail(f"{where}: {' '.join(args)}: {err}")
            checked += 1
    assert checked >= 40


def test_one_checkpoint_name_everywhere_and_train_says_what_predict_takes(trained):
    out, _, best = trained
    assert f"next: sandwatch predict {best} SCENE.tif -o maps/" in out
    texts = list(_help_texts().values()) + [(ROOT / "README.md").read_text(), (ROOT / "scripts" / "demo.sh").read_text()]
    assert not [t for t in texts if "best.ckpt" in t]


# ---- 4. outputs named by observation -------------------------------------------------------------
def test_predict_a_manifest_names_outputs_site_date_and_evaluate_finds_them(demo, trained, capsys):
    _, _, best = trained
    manifest = demo / "data" / "manifest.yaml"
    out = demo / "maps"
    assert main(["predict", str(best), "--manifest", str(manifest), "--split", "val", "-o", str(out), "-q"]) == 0
    m = yaml.safe_load(manifest.read_text())
    val = sorted(o["id"] for o in m["observations"] if o["split"] == "val")
    assert sorted(p.name[:-len(".prob.tif")] for p in out.glob("*.prob.tif")) == val
    assert all(re.fullmatch(r"site\d\d_\d{4}-\d\d-\d\d", v) for v in val)
    capsys.readouterr()
    assert main(["evaluate", "--predictions", str(out), str(manifest), "--split", "val", "-o", str(demo / "report")]) == 0
    report = json.loads((demo / "report" / "metrics.json").read_text())
    assert {s["id"] for s in report["models"][0]["scenes"]} == set(val)
    # the model is named after its checkpoint (from the maps' tags), not after the folder
    assert report["models"][0]["name"] == "unet (run/checkpoints/best.pt)"
    assert report["models"][0]["model"]["checkpoint"] == str(best.resolve())
    assert main(["predict", str(best), "scene.tif", "--manifest", str(manifest), "-o", str(out)]) == 2
    assert "--manifest" in capsys.readouterr().err


# ---- 5. make demo never deletes a folder it did not make -----------------------------------------
def test_demo_script_refuses_a_folder_it_did_not_make(tmp_path):
    mine = tmp_path / "my-results"
    mine.mkdir()
    (mine / "precious.txt").write_text("keep me")
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh"), str(mine)], capture_output=True, text=True,
                          env={**os.environ, "SANDWATCH": "false"})
    assert proc.returncode == 2 and "was not made by the demo" in proc.stderr
    assert (mine / "precious.txt").read_text() == "keep me"
    # a folder the demo made (its marker) is replaced, saying so; SANDWATCH=false stops at step 1
    made = tmp_path / "demo-out"
    made.mkdir()
    (made / ".sandwatch-demo").touch()
    (made / "old.txt").touch()
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh"), str(made)], capture_output=True, text=True,
                          env={**os.environ, "SANDWATCH": "false"})
    assert "removing the previous demo output" in proc.stdout
    assert not (made / "old.txt").exists() and (made / ".sandwatch-demo").exists()


# ---- 6. path maps; --rivers and --aoi -------------------------------------------------------------
def test_dataset_import_maps_urls_to_local_files_by_pattern(tmp_path, capsys):
    mirror = tmp_path / "mirror"
    for rel in ("bhargavi/2018-12-03_rgb.tif", "labels/bhargavi_2018-12-03.geojson", "rivers/bhargavi.geojson"):
        (mirror / rel).parent.mkdir(parents=True, exist_ok=True)
        (mirror / rel).write_text("x")
    original = [{"name": "bhargavi_2018-12-03", "date": "2018-12-03", "cluster_id": 1,
                 "uri_to_rgb": "gs://sandmining/data/bhargavi/rgb/2018-12-03.tif",
                 "uri_to_annotations": "https://storage.googleapis.com/sandmining/annotations/bhargavi_2018-12-03.geojson",
                 "uri_to_rivers": "gs://sandmining/rivers/bhargavi_river_1000m.geojson"}]
    src = tmp_path / "dataset.json"
    src.write_text(json.dumps(original))
    out = tmp_path / "manifest.yaml"
    assert main(["dataset", "import", str(src), "-o", str(out), "--imagery", "rgb", "--base-dir", str(mirror),
                 "--map", "gs://sandmining/data/*/rgb/*.tif={1}/{2}_rgb.tif",
                 "--map", "https://**/annotations/*={name}",
                 "--map", "gs://**/rivers/*_river_1000m.geojson=rivers/{2}.geojson"]) == 0
    obs = yaml.safe_load(out.read_text())["observations"][0]
    base = out.parent
    assert (base / obs["scene"]).resolve() == (mirror / "bhargavi" / "2018-12-03_rgb.tif").resolve()
    assert (base / obs["aoi"]).resolve() == (mirror / "rivers" / "bhargavi.geojson").resolve()
    # {name} with a relative target lands in --base-dir
    assert (base / obs["annotations"]).resolve() == (mirror / "bhargavi_2018-12-03.geojson").resolve()
    capsys.readouterr()
    assert main(["dataset", "import", str(src), "-o", str(out), "--map", "gs://a/*.tif=x/{2}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--map" in err and "{1} to {1}" in err


def test_predict_aoi_file_is_used_as_is_and_rivers_are_buffered(tmp_path):
    from test_predict_e2e import tiny_checkpoint, write_scene

    ckpt = tmp_path / "best.pt"
    tiny_checkpoint(ckpt, window=64)
    grid = write_scene(tmp_path / "scene.tif")
    left, bottom, right, top = grid.bounds
    poly = box(left + 1000, top - 1500, left + 1600, top - 1000)       # 60 x 50 px, ready AOI
    aoi = tmp_path / "aoi.geojson"
    aoi.write_text(json.dumps({"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "EPSG:32644"}},
                               "features": [{"type": "Feature", "properties": {}, "geometry": mapping(poly)}]}))
    for flag, folder in (("--aoi", "as_is"), ("--rivers", "buffered")):
        assert main(["predict", str(ckpt), str(tmp_path / "scene.tif"), "-o", str(tmp_path / folder), "--edge", "8",
                     flag, str(aoi), "--aoi-buffer", "500", "-q"]) == 0
    stats = {}
    for folder in ("as_is", "buffered"):
        with rasterio.open(tmp_path / folder / "scene.prob.tif") as ds:
            stats[folder] = float(ds.tags()["sandwatch_valid_pixels"])
    # windows touching the AOI are predicted: the 500 m buffer reaches many more of them
    assert stats["buffered"] > 1.5 * stats["as_is"] > 0
    assert main(["predict", str(ckpt), str(tmp_path / "scene.tif"), "-o", str(tmp_path / "x"), "--aoi", str(aoi),
                 "--rivers", str(aoi)]) == 2


def test_f1_is_zero_when_nothing_is_flagged_but_mining_exists():
    from sandwatch.evaluate.metrics import PRAccumulator

    acc = PRAccumulator()
    acc.update(np.array([0.1, 0.2, 0.3], np.float32), np.array([1, 0, 1], bool))
    m = acc.metrics(0.5)
    assert m.precision is None and m.recall == 0.0 and m.f1 == 0.0
