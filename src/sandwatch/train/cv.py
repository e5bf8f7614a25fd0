"""Cross-validation over geographic clusters: K trainings, each scored on the clusters it never saw.

With a handful of labelled images one train/val split measures mostly which images landed in
validation. :func:`cross_validate` holds out every observation exactly once instead, always
together with its whole geographic cluster (``Observation.cluster``, set by ``sandwatch dataset
split``): neighbouring reaches look alike, so a fold that split a cluster would score the model on
near-copies of its training images.

Run directory layout (``RUN`` = ``cfg.run_dir``)::

    RUN/cv-plan.json                 folds, seed, observation -> fold, the settings (checked on a re-run)
    RUN/folds/foldK/manifest.yaml    the manifest with split=val for fold K, split=train for the others
    RUN/folds/foldK/...              an ordinary training run (checkpoints/best.pt, metrics.json, ...)
    RUN/folds/foldK/trained.json     written once the fold's training has returned
    RUN/folds/foldK/predictions/     probability maps of the held-out observations (ID.prob.tif)
    RUN/folds/foldK/scores.json      the fold's exact metrics on its held-out observations
    RUN/final/                       the model trained on every observation (no validation)
    RUN/cv.json, RUN/cv.csv          per-fold metrics, mean and standard deviation, pooled

Folds (:func:`assign_folds`): clusters are dealt largest first (by number of observations, ties
in an order shuffled by ``seed``) to the fold with the fewest observations so far (then the
fewest clusters, then the lowest number), so folds are as even as whole clusters allow and every
fold has at least one cluster. Same clusters + same seed -> same folds.

Scores: each fold's checkpoint (``best.pt``) predicts the fold's held-out scenes
(:func:`sandwatch.evaluate.core.predict_split`, whole scenes) and
:func:`sandwatch.evaluate.core.evaluate_predictions` scores them: pooled AP, precision, recall
and F1 at 0.5, best F1, over the whole image and inside the AOI. ``mean`` and ``std`` (sample
standard deviation, ddof=1) are over the folds that have a value (AP is undefined on a fold
without mine pixels); ``pooled`` pools the pixels of every held-out observation of every fold
(one out-of-fold score, the steadiest figure when folds are small).

A fold trains **without validation** (``data.val_split: null``): nothing of its held-out clusters
reaches training, neither the choice of the best checkpoint, nor a calibrated threshold, nor early
stopping, so the fold scores are honest out-of-fold figures. Its ``best.pt`` is then its last
epoch, the same rule as the final model's. (A recipe that relies on validation, e.g. for its
threshold, is scored here without it; the final model is trained the same way.)

Resuming: a second call with the same arguments continues. A fold with ``trained.json`` is not
trained again; a fold with a ``last.ckpt`` but no ``trained.json`` is resumed (``resume=True``);
existing probability maps are kept; a fold with ``scores.json`` is neither trained nor predicted
(its maps are read again, to pool them). Different folds, seed or training settings in the same
``RUN`` are refused.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import sys
import warnings
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sandwatch.dataset.manifest import Manifest, load_manifest, save_manifest
from sandwatch.errors import SandwatchError
from sandwatch.io import atomic_output
from sandwatch.train.config import TrainConfig

#: Metrics of a scope reported per fold, in table order (keys of ``PRMetrics``).
METRICS = ("ap", "f1", "best_f1", "precision", "recall")
SCOPES = ("image", "aoi")

#: Settings that do not change what a fold learns; a re-run may change them.
_FREE_SETTINGS = (("run_dir",), ("manifest",), ("trainer", "progress_bar"), ("data", "num_workers"), ("tracking",))


# ---- folds ------------------------------------------------------------------------------------
def assign_folds(cluster_sizes: Mapping[int, int], folds: int, seed: int = 0) -> dict[int, int]:
    """Cluster id -> fold (0..folds-1); pure and deterministic (the rule in the module docstring).

    ``cluster_sizes``: observations per cluster. A cluster always goes whole to one fold.
    """
    if folds < 2:
        raise SandwatchError.about(f"--folds {folds}", "cross-validation needs at least 2 folds",
                                   "use --folds 2 or more")
    if folds > len(cluster_sizes):
        raise SandwatchError.about(
            f"--folds {folds}", f"is more than the {len(cluster_sizes)} geographic clusters of the manifest "
            "(a fold never splits a cluster)",
            f"use at most --folds {len(cluster_sizes)}, or re-split with more clusters "
            "(`sandwatch dataset split --clusters N`)")
    ids = sorted(cluster_sizes)
    shuffled = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    order = sorted(shuffled, key=lambda c: -cluster_sizes[c])  # stable: equal sizes keep the seeded order
    load = [0] * folds
    count = [0] * folds
    out: dict[int, int] = {}
    for cid in order:
        k = min(range(folds), key=lambda f: (load[f], count[f], f))
        out[cid] = k
        load[k] += cluster_sizes[cid]
        count[k] += 1
    return out


def plan_folds(manifest: Manifest, folds: int, seed: int = 0, *, source: object = "manifest") -> dict[str, int]:
    """Observation id -> fold for every observation of ``manifest``, whatever its split.

    Refuses (one line) observations without a cluster: clustering needs a choice of the number of
    clusters, which belongs to ``sandwatch dataset split``, not to training.
    """
    if not manifest.observations:
        raise SandwatchError.about(source, "has no observations", "add observations before cross-validating")
    missing = [o.id for o in manifest.observations if o.cluster is None]
    if missing:
        raise SandwatchError.about(
            source, f"{len(missing)} of {len(manifest.observations)} observations have no geographic cluster "
            f"(e.g. {missing[0]})", "run `sandwatch dataset split MANIFEST --clusters N` first")
    sizes: dict[int, int] = defaultdict(int)
    for o in manifest.observations:
        sizes[int(o.cluster)] += 1
    by_cluster = assign_folds(dict(sizes), folds, seed)
    return {o.id: by_cluster[int(o.cluster)] for o in manifest.observations}


def fold_manifest(manifest: Manifest, assignment: Mapping[str, int], fold: int | None) -> Manifest:
    """A copy with split=val for the observations of ``fold`` and split=train for the others
    (``fold=None``: every observation in training, for the final model)."""
    out = manifest.model_copy(deep=True)
    for o in out.observations:
        o.split = "val" if fold is not None and assignment[o.id] == fold else "train"
    return out


# ---- results ----------------------------------------------------------------------------------
@dataclass
class FoldResult:
    """One fold: what it held out, its checkpoint and its metrics per scope (``PRMetrics`` dicts)."""

    fold: int
    clusters: list[int]
    val_observations: list[str]
    train_observations: list[str]
    run_dir: Path
    checkpoint: Path
    metrics: dict[str, dict[str, Any]]
    reused: bool = False  # True when a previous call had already scored it

    def to_dict(self) -> dict:
        return {"fold": self.fold, "clusters": self.clusters, "val_observations": self.val_observations,
                "train_observations": self.train_observations, "run_dir": str(self.run_dir),
                "checkpoint": str(self.checkpoint), "metrics": self.metrics}


@dataclass
class CVResult:
    """All folds, their mean and standard deviation, the out-of-fold pooled score, the final model."""

    run_dir: Path
    folds: list[FoldResult]
    summary: dict[str, dict[str, dict[str, float | int | None]]]  # scope -> metric -> mean, std, n
    pooled: dict[str, dict[str, Any]]                              # scope -> PRMetrics dict
    final: Path | None
    seed: int = 0
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"folds": len(self.folds), "seed": self.seed, "config": self.config,
                "fold_results": [f.to_dict() for f in self.folds], "summary": self.summary, "pooled": self.pooled,
                "final_checkpoint": None if self.final is None else str(self.final)}


def summarise(folds: list[FoldResult]) -> dict[str, dict[str, dict[str, float | int | None]]]:
    """Mean and sample standard deviation (ddof=1) of each metric over the folds that have it."""
    out: dict[str, dict[str, dict[str, float | int | None]]] = {}
    for scope in SCOPES:
        if not any(scope in f.metrics for f in folds):
            continue
        out[scope] = {}
        for m in METRICS:
            vals = [float(f.metrics[scope][m]) for f in folds
                    if scope in f.metrics and f.metrics[scope].get(m) is not None]
            out[scope][m] = {"mean": statistics.fmean(vals) if vals else None,
                             "std": statistics.stdev(vals) if len(vals) >= 2 else None, "n": len(vals)}
    return out


def _fmt(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def format_cv_table(result: CVResult) -> str:
    """The per-fold table, the mean and standard deviation over folds and the pooled line, as text."""
    scopes = [s for s in SCOPES if s in result.summary]

    def line(first: str, clusters: str, n_val: str, values: Callable[[str, str], Any]) -> str:
        row = f"{first:>6}  {clusters:<10} {n_val:>7}"
        for s in scopes:
            row += f"  {_fmt(values(s, 'ap')):>9} {_fmt(values(s, 'f1')):>7} {_fmt(values(s, 'best_f1')):>7}"
        return row

    head = f"{'fold':>6}  {'clusters':<10} {'val obs':>7}" + "".join(
        f"  {s + ' AP':>9} {'F1@0.5':>7} {'best F1':>7}" for s in scopes)
    lines = [head]
    for f in result.folds:
        lines.append(line(str(f.fold), " ".join(map(str, f.clusters)), str(len(f.val_observations)),
                          lambda s, m, f=f: f.metrics.get(s, {}).get(m)))
    for stat in ("mean", "std"):
        lines.append(line(stat, "", "", lambda s, m, stat=stat: result.summary[s][m][stat]))
    lines.append(line("pooled", "all", str(sum(len(f.val_observations) for f in result.folds)),
                      lambda s, m: result.pooled.get(s, {}).get(m)))
    return "\n".join(lines)


def write_cv_outputs(result: CVResult) -> tuple[Path, Path]:
    """``RUN/cv.json`` (everything) and ``RUN/cv.csv`` (one row per fold, then mean, std, pooled)."""
    run_dir = Path(result.run_dir)
    with atomic_output(run_dir / "cv.json") as tmp:
        tmp.write_text(json.dumps(result.to_dict(), indent=1))
    scopes = [s for s in SCOPES if s in result.summary]
    columns = ["fold", "clusters", "val_observations", "train_observations", "positive_pixels"]
    columns += [f"{s}_{m}" for s in scopes for m in METRICS]
    rows: list[dict[str, Any]] = []
    for f in result.folds:
        row = {"fold": f.fold, "clusters": " ".join(map(str, f.clusters)), "val_observations": len(f.val_observations),
               "train_observations": len(f.train_observations),
               "positive_pixels": f.metrics.get("image", {}).get("n_positive")}
        row.update({f"{s}_{m}": f.metrics.get(s, {}).get(m) for s in scopes for m in METRICS})
        rows.append(row)
    for stat in ("mean", "std"):
        rows.append({"fold": stat, **{f"{s}_{m}": result.summary[s][m][stat] for s in scopes for m in METRICS}})
    rows.append({"fold": "pooled", "val_observations": sum(len(f.val_observations) for f in result.folds),
                 "positive_pixels": result.pooled.get("image", {}).get("n_positive"),
                 **{f"{s}_{m}": result.pooled.get(s, {}).get(m) for s in scopes for m in METRICS}})
    with atomic_output(run_dir / "cv.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return run_dir / "cv.json", run_dir / "cv.csv"


# ---- the run ----------------------------------------------------------------------------------
def _settings(cfg: TrainConfig) -> dict:
    """The config without the settings a re-run may change (paths, progress, workers, tracking)."""
    data = cfg.model_dump(mode="json")
    for keys in _FREE_SETTINGS:
        node = data
        for k in keys[:-1]:
            node = node.get(k, {})
        node.pop(keys[-1], None)
    return data


def _first_difference(a: Any, b: Any, prefix: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            d = _first_difference(a.get(k), b.get(k), f"{prefix}{k}.")
            if d:
                return d
        return None
    return None if a == b else prefix.rstrip(".") or "value"


def _check_plan(run_dir: Path, plan: dict) -> None:
    """Write ``RUN/cv-plan.json``, or check that a previous call planned the same folds."""
    path = run_dir / "cv-plan.json"
    if path.is_file():
        old = json.loads(path.read_text())
        diff = _first_difference(old, plan)
        if diff:
            raise SandwatchError.about(run_dir, f"holds a cross-validation with other folds or settings (first "
                                       f"difference: {diff})", "choose another run_dir, or delete it to start over")
        return
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(plan, indent=1))


def _sub_config(cfg: TrainConfig, run_dir: Path, manifest: Path, suffix: str) -> TrainConfig:
    """``cfg`` with its own run_dir and manifest, training on split=train without validation;
    every training setting kept."""
    data = cfg.model_dump(mode="json")
    data["run_dir"], data["manifest"] = str(run_dir), str(manifest)
    # no validation: the held-out fold must not choose, calibrate or stop the training
    data["data"]["train_split"], data["data"]["val_split"] = "train", None
    if data["tracking"].get("run_name"):  # several runs under one name would mix in a shared tracker
        data["tracking"]["run_name"] = f"{data['tracking']['run_name']}-{suffix}"
    return TrainConfig.model_validate(data)


def _train_once(cfg: TrainConfig, log: Callable[[str], None], what: str) -> None:
    """Train ``cfg.run_dir`` unless ``trained.json`` says it is done; resume a half-finished run."""
    from sandwatch.train.runner import train

    run_dir = Path(cfg.run_dir)
    done = run_dir / "trained.json"
    if done.is_file():
        log(f"{what}: already trained ({run_dir})")
        return
    resume = (run_dir / "checkpoints" / "last.ckpt").is_file()
    log(f"{what}: {'resuming' if resume else 'training'} in {run_dir}")
    with warnings.catch_warnings():
        # the final model has no validation on purpose; the summary says which checkpoint to use
        warnings.filterwarnings("ignore", message="no validation observations")
        warnings.filterwarnings("ignore", message=".*no `val_dataloader`")
        result = train(cfg, resume=resume)
    with atomic_output(done) as tmp:
        tmp.write_text(json.dumps({"best": None if result.best is None else str(result.best),
                                   "last": str(result.last), "best_val_ap": result.best_ap}, indent=1))


def _pr_metrics(acc, threshold: float) -> dict[str, Any]:
    return acc.metrics(threshold).to_dict()


def cross_validate(cfg: TrainConfig, folds: int, *, seed: int = 0, final: bool = True, progress: bool = True,
                   edge: int | None = None, eval_config=None,
                   log: Callable[[str], None] | None = None) -> CVResult:
    """K-fold cross-validation over the geographic clusters of ``cfg.manifest``, then (``final``)
    the model trained on every observation. See the module docstring for the rules and the files.

    ``cfg.run_dir`` is the cross-validation's folder; each fold trains with ``cfg``'s settings.
    ``seed``: the fold assignment's (the trainings keep ``cfg.trainer.seed``). ``edge``: pixels
    discarded at each window edge when predicting
    the held-out scenes (None: the published 30, at most a quarter of the window). ``eval_config``:
    an :class:`~sandwatch.evaluate.core.EvalConfig` (None: the published evaluation). ``log``: where
    progress lines go (None: standard error when ``progress``, else nowhere).

    Takes K + 1 trainings (K without ``final``) plus predicting every observation once.
    """
    from sandwatch.evaluate.core import EvalConfig, evaluate_predictions, predict_split
    from sandwatch.evaluate.metrics import PRAccumulator

    if log is None:
        log = (lambda text: print(text, file=sys.stderr, flush=True)) if progress else (lambda text: None)
    eval_config = eval_config or EvalConfig(progress=progress)
    edge = min(30, cfg.data.window // 4) if edge is None else int(edge)
    run_dir = Path(cfg.run_dir)
    manifest = load_manifest(cfg.manifest)
    assignment = plan_folds(manifest, folds, seed, source=cfg.manifest)
    clusters_of = {k: sorted({int(o.cluster) for o in manifest.observations if assignment[o.id] == k})
                   for k in range(folds)}
    _check_plan(run_dir, {"folds": folds, "seed": seed, "edge": edge,
                          "evaluation": eval_config.to_dict(), "observations": dict(sorted(assignment.items())),
                          "settings": _settings(cfg)})
    log(f"cross-validation: {len(manifest.observations)} observations in "
        f"{len({o.cluster for o in manifest.observations})} clusters -> {folds} folds: "
        + "; ".join(f"fold{k} clusters {' '.join(map(str, c))}" for k, c in clusters_of.items()))

    fold_results: list[FoldResult] = []
    pooled = {s: PRAccumulator() for s in SCOPES}
    for k in range(folds):
        fold_dir = run_dir / "folds" / f"fold{k}"
        fm = fold_manifest(manifest, assignment, k)
        manifest_path = fold_dir / "manifest.yaml"
        save_manifest(fm, manifest_path)
        fold_cfg = _sub_config(cfg, fold_dir, manifest_path, f"fold{k}")
        ckpt = fold_dir / "checkpoints" / "best.pt"
        scores_path = fold_dir / "scores.json"
        reused = scores_path.is_file() and ckpt.is_file()
        if not reused:
            _train_once(fold_cfg, log, f"fold {k + 1}/{folds}")
        if not ckpt.is_file():
            raise SandwatchError.about(fold_dir, "training ended without checkpoints/best.pt",
                                       "check the fold's log and metrics.json, then run again")
        # predict_split keeps maps that exist, so a re-run only reads them again (to pool them)
        maps, n_params, _ = predict_split(ckpt, fm, fold_dir / "predictions", split="val", edge=edge,
                                          progress=progress)
        scored = evaluate_predictions(fm, maps, split="val", config=eval_config, name=f"fold{k}",
                                      source=str(ckpt), parameters=n_params)
        metrics = {s: _pr_metrics(scored.pooled(s), eval_config.threshold) for s in SCOPES
                   if any(s in r.accumulators for r in scored.images.values())}
        for s in metrics:
            pooled[s].merge(scored.pooled(s))
        result = FoldResult(fold=k, clusters=clusters_of[k], val_observations=[o.id for o in fm.split_of("val")],
                            train_observations=[o.id for o in fm.split_of("train")], run_dir=fold_dir,
                            checkpoint=ckpt, metrics=metrics, reused=reused)
        if not reused:
            body = scored.to_dict()
            body.pop("curves", None)
            with atomic_output(scores_path) as tmp:
                tmp.write_text(json.dumps({**result.to_dict(), "evaluation": body}, indent=1))
        img = metrics.get("image", {})
        scores = (f"AP {_fmt(img.get('ap'))}, F1@0.5 {_fmt(img.get('f1'))}, best F1 {_fmt(img.get('best_f1'))}"
                  if img.get("n_positive") else "no mine pixels, AP and recall undefined")
        log(f"fold {k + 1}/{folds}: held out {len(result.val_observations)} observations (clusters "
            f"{' '.join(map(str, result.clusters))}): {scores}")
        fold_results.append(result)

    final_ckpt = None
    if final:
        final_dir = run_dir / "final"
        manifest_path = final_dir / "manifest.yaml"
        save_manifest(fold_manifest(manifest, assignment, None), manifest_path)
        _train_once(_sub_config(cfg, final_dir, manifest_path, "final"), log, "final model (all observations)")
        final_ckpt = final_dir / "checkpoints" / "best.pt"

    threshold = eval_config.threshold
    pooled_metrics = {s: _pr_metrics(a, threshold) for s, a in pooled.items()
                      if any(s in f.metrics for f in fold_results)}
    out = CVResult(run_dir=run_dir, folds=fold_results, summary=summarise(fold_results), pooled=pooled_metrics,
                   final=final_ckpt, seed=seed, config=cfg.model_dump(mode="json"))
    write_cv_outputs(out)
    return out
