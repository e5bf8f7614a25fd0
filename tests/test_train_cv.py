"""Cross-validation over geographic clusters: the fold rule, its errors, and end to end through
`sandwatch train --folds` on synthetic demo sites (scores checked against scikit-learn)."""

from __future__ import annotations

import csv
import datetime as dt
import json
import statistics
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import yaml

from sandwatch.cli.main import main
from sandwatch.dataset.manifest import Manifest, Observation, load_manifest
from sandwatch.errors import SandwatchError
from sandwatch.train.cv import assign_folds, fold_manifest, plan_folds


def manifest_of(clusters: list[int]) -> Manifest:
    """One observation per entry, in the given cluster; sites repeat so several dates share one."""
    day = dt.date(2021, 1, 1)
    return Manifest(observations=[
        Observation(site=f"s{c}_{i % 3}", date=day + dt.timedelta(days=i), scene=f"/nowhere/{i}.tif", cluster=c)
        for i, c in enumerate(clusters)])


def test_folds_never_split_a_cluster_and_hold_out_everything_once():
    for seed in range(300):
        rng = np.random.default_rng(seed)
        n_clusters = int(rng.integers(2, 13))
        ids = rng.choice(1000, n_clusters, replace=False).tolist()       # cluster ids need not be 0..n-1
        sizes = rng.integers(1, 15, n_clusters)
        layout = [c for c, n in zip(ids, sizes) for _ in range(n)]
        rng.shuffle(layout)
        m = manifest_of(layout)
        folds = int(rng.integers(2, n_clusters + 1))
        assignment = plan_folds(m, folds, seed=seed)
        assert assignment == plan_folds(m, folds, seed=seed)             # deterministic for a seed
        # a cluster is in one fold
        fold_of_cluster = defaultdict(set)
        for o in m.observations:
            fold_of_cluster[o.cluster].add(assignment[o.id])
        assert all(len(f) == 1 for f in fold_of_cluster.values()), (seed, fold_of_cluster)
        # every observation held out exactly once over the K fold manifests, trained on otherwise
        held_out = Counter()
        for k in range(folds):
            fm = fold_manifest(m, assignment, k)
            val = {o.id for o in fm.split_of("val")}
            assert val and len(fm.split_of("train")) == len(m.observations) - len(val)
            assert val == {o.id for o in m.observations if assignment[o.id] == k}
            held_out.update(val)
        assert held_out == Counter({o.id: 1 for o in m.observations})
        assert {o.split for o in fold_manifest(m, assignment, None).observations} == {"train"}
        # as even as whole clusters allow: the largest fold exceeds the smallest by at most one cluster
        load = Counter(assignment.values())
        assert max(load.values()) - min(load.values()) <= max(sizes), (seed, load, sizes)
        assert m.observations[0].split is None                         # the input is not modified


def test_fold_rule_on_known_sizes():
    # largest first to the lightest fold: 7 | 5 + 1 | 4 + 3
    assert assign_folds({0: 7, 1: 5, 2: 4, 3: 3, 4: 1}, 3) == {0: 0, 1: 1, 2: 2, 3: 2, 4: 1}
    # equal sizes: the seed decides, each seed the same way every time
    seen = {tuple(sorted(assign_folds({c: 2 for c in range(6)}, 3, seed=s).items())) for s in range(20)}
    assert len(seen) > 1
    assert assign_folds({c: 2 for c in range(6)}, 3, seed=4) == assign_folds({c: 2 for c in range(6)}, 3, seed=4)


def test_too_many_folds_or_no_clusters_is_one_line():
    m = manifest_of([0, 0, 1, 2, 2])
    with pytest.raises(SandwatchError) as err:
        plan_folds(m, 4)
    msg = str(err.value)
    assert "\n" not in msg and "--folds 4" in msg and "3 geographic clusters" in msg and "at most --folds 3" in msg
    with pytest.raises(SandwatchError, match="at least 2 folds"):
        plan_folds(m, 1)
    m.observations[1].cluster = None
    with pytest.raises(SandwatchError) as err:
        plan_folds(m, 2)
    assert "\n" not in str(err.value) and "sandwatch dataset split" in str(err.value)


def test_cli_refuses_more_folds_than_clusters_before_training(tmp_path, capsys):
    m = manifest_of([0, 0, 1, 1])
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(m.model_dump(mode="json")))
    (tmp_path / "c.yaml").write_text("manifest: m.yaml\nrun_dir: run\n")
    assert main(["train", str(tmp_path / "c.yaml"), "--folds", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "2 geographic clusters" in err
    assert not (tmp_path / "run").exists()


def test_help_explains_cross_validation(capsys):
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--folds" in out and "K + 1 trainings" in out and "cv.json" in out and "final/checkpoints/best.pt" in out


def test_summary_skips_undefined_metrics():
    """A fold without mine pixels has no AP; mean and std are over the folds that have one."""
    from sandwatch.train.cv import FoldResult, summarise

    def fold(k, ap, f1):
        return FoldResult(k, [k], [f"o{k}"], [], Path("."), Path("."), {"image": {
            "ap": ap, "f1": f1, "best_f1": ap, "precision": None, "recall": None}})

    s = summarise([fold(0, 0.5, 0.4), fold(1, None, None), fold(2, 0.7, 0.1)])["image"]
    assert s["ap"] == {"mean": pytest.approx(0.6), "std": pytest.approx(statistics.stdev([0.5, 0.7])), "n": 2}
    assert s["f1"]["mean"] == pytest.approx(0.25) and s["precision"] == {"mean": None, "std": None, "n": 0}
    assert summarise([fold(0, 0.5, 0.4)])["image"]["ap"] == {"mean": 0.5, "std": None, "n": 1}


# ---- end to end -------------------------------------------------------------------------------
TINY = {
    "profile": "cpu",
    "model": {"arch": "unet", "options": {"width": 4}},
    "data": {"window": 64, "windows_per_scene": 2, "num_workers": 0},
    "optim": {"epochs": 1, "batch_size": 4},
    "trainer": {"progress_bar": False, "seed": 0},
    "tracking": {"backend": "none", "overlays": 0},
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Three 128 px demo sites, two dates each, one geographic cluster per site."""
    from sandwatch.synthetic import write_demo_data

    root = tmp_path_factory.mktemp("cvdemo")
    path = write_demo_data(root, sites=3, size=128, seed=0, progress=False)
    assert main(["dataset", "split", str(path), "--clusters", "3", "--val-fraction", "0.34"]) == 0
    return path


def sklearn_ap(manifest: Manifest, maps: dict[str, Path], border: int = 30) -> float:
    """Pooled AP of probability maps, from the pixels, as the published evaluation counts them."""
    import rasterio
    from sklearn.metrics import average_precision_score

    from sandwatch.evaluate.core import ProbabilityEncoding
    from sandwatch.grid import Grid
    from sandwatch.labels import rasterize_labels

    scores, labels = [], []
    for o in manifest.observations:
        with rasterio.open(maps[o.id]) as ds:
            values, valid = ds.read(1), ds.read_masks(1) > 0
            prob = ProbabilityEncoding.of(ds).probability(values)
            grid = Grid.from_dataset(ds)
        mask, _ = rasterize_labels(o.annotations, grid)
        keep = valid.copy()
        keep[:border], keep[-border:], keep[:, :border], keep[:, -border:] = False, False, False, False
        scores.append(prob[keep])
        labels.append(mask[keep] > 0)
    return float(average_precision_score(np.concatenate(labels), np.concatenate(scores)))


@pytest.mark.slow
def test_cross_validation_end_to_end(demo, tmp_path, capsys):
    from sandwatch.models.checkpoint import Checkpoint

    data = json.loads(json.dumps(TINY))
    data.update({"manifest": str(demo), "run_dir": str(tmp_path / "cv")})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    original = load_manifest(demo)
    # site02 never has mines: take a fold seed that pairs its cluster with another, so both folds
    # have mine pixels and every metric is defined (a mine-free fold: test_summary_skips_undefined)
    def mixed(seed: int) -> bool:
        fold = plan_folds(original, 2, seed=seed)
        clean = {fold[o.id] for o in original.observations if o.site == "site02"}
        return len({o.site for o in original.observations if fold[o.id] in clean}) > 1

    seed = next(s for s in range(50) if mixed(s))
    cmd = ["train", str(tmp_path / "c.yaml"), "--folds", "2", "--fold-seed", str(seed)]
    assert main(cmd) == 0
    out = capsys.readouterr().out
    run = tmp_path / "cv"
    assert "final model (use this one)" in out and str(run / "final" / "checkpoints" / "best.pt") in out
    assert "pooled" in out and "mean" in out

    cluster_of = {o.id: o.cluster for o in original.observations}
    cv = json.loads((run / "cv.json").read_text())
    assert cv["folds"] == 2 and len(cv["fold_results"]) == 2
    held = []
    for f in cv["fold_results"]:
        k = f["fold"]
        val = set(f["val_observations"])
        # the held-out observations are exactly those of the fold's clusters, and nothing else
        assert val == {i for i, c in cluster_of.items() if c in f["clusters"]}
        assert set(f["train_observations"]) == set(cluster_of) - val
        held += f["val_observations"]
        fm = load_manifest(run / "folds" / f"fold{k}" / "manifest.yaml")
        assert {o.id for o in fm.split_of("val")} == val
        best = Checkpoint.load(run / "folds" / f"fold{k}" / "checkpoints" / "best.pt")
        assert best.metadata["val_observations"] == []                   # nothing held out reached training
        assert set(best.metadata["train_observations"]) == set(cluster_of) - val
        for scope in ("image", "aoi"):
            m = f["metrics"][scope]
            assert 0 <= m["ap"] <= 1 and 0 <= m["best_f1"] <= 1 and m["n_positive"] > 0
            assert m["f1"] is None or 0 <= m["f1"] <= 1
        # the fold's AP is the AP of its own held-out pixels (recomputed from the maps by sklearn)
        maps = {i: run / "folds" / f"fold{k}" / "predictions" / f"{i}.prob.tif" for i in val}
        held_out = Manifest(observations=[o for o in original.observations if o.id in val])
        assert f["metrics"]["image"]["ap"] == pytest.approx(sklearn_ap(held_out, maps), abs=1e-9)
    assert sorted(held) == sorted(cluster_of)                         # each observation held out once

    # mean +- std over the folds, and the out-of-fold pool is the sum of the folds' pixels
    aps = [f["metrics"]["image"]["ap"] for f in cv["fold_results"]]
    assert cv["summary"]["image"]["ap"]["mean"] == pytest.approx(statistics.fmean(aps))
    assert cv["summary"]["image"]["ap"]["std"] == pytest.approx(statistics.stdev(aps))
    for key in ("n_pixels", "n_positive"):
        assert cv["pooled"]["image"][key] == sum(f["metrics"]["image"][key] for f in cv["fold_results"])
    all_maps = {i: run / "folds" / f"fold{f['fold']}" / "predictions" / f"{i}.prob.tif"
                for f in cv["fold_results"] for i in f["val_observations"]}
    assert cv["pooled"]["image"]["ap"] == pytest.approx(sklearn_ap(original, all_maps), abs=1e-9)

    with open(run / "cv.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["fold"] for r in rows] == ["0", "1", "mean", "std", "pooled"]
    assert float(rows[0]["image_ap"]) == pytest.approx(aps[0])
    assert float(rows[4]["aoi_ap"]) == pytest.approx(cv["pooled"]["aoi"]["ap"])

    final = Checkpoint.load(run / "final" / "checkpoints" / "best.pt")
    assert sorted(final.metadata["train_observations"]) == sorted(cluster_of)
    assert final.metadata["val_observations"] == []

    # a re-run continues: nothing is trained again, the scores are the same
    stamp = {p: p.stat().st_mtime_ns for p in run.rglob("*.pt")}
    # fold 1 looks half-finished (killed after its last epoch, before cv noted it): it is resumed
    (run / "folds" / "fold1" / "trained.json").unlink()
    (run / "folds" / "fold1" / "scores.json").unlink()
    assert main(cmd) == 0
    capsys.readouterr()
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*.pt")} == stamp
    assert (run / "folds" / "fold1" / "config.resumed.yaml").is_file()
    again = json.loads((run / "cv.json").read_text())
    assert again["fold_results"] == cv["fold_results"] and again["pooled"] == cv["pooled"]

    # other folds in the same run directory: refused in one line, before any training
    assert main(["train", str(tmp_path / "c.yaml"), "--folds", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "other folds or settings" in err and "folds" in err
