"""``train(config)``: from a manifest and a config to checkpoints, with exact resume.

Run directory layout::

    RUN/config.yaml                 the resolved config of the run
    RUN/checkpoints/last.ckpt       Lightning checkpoint, every epoch (resume point)
    RUN/checkpoints/best.ckpt       Lightning checkpoint with the best validation AP
    RUN/checkpoints/best.pt         sandwatch Checkpoint (what predict/evaluate/monitor load)
    RUN/checkpoints/last.pt
    RUN/mlflow.db, RUN/mlartifacts  MLflow tracking (default backend)
    RUN/plots/                      PR curves and prediction overlays per epoch
    RUN/metrics.json                validation metrics per epoch, throughput

Both ``.ckpt`` files carry the sandwatch checkpoint dict under ``"sandwatch"``, so
``Checkpoint.load`` reads any of the four. Checkpoints are written to a temporary name and
renamed, so a SIGKILL at any moment loses at most the epoch in progress.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, TQDMProgressBar
from torch.utils.data import DataLoader

from sandwatch.bands import BandSpec, Normalization
from sandwatch.errors import SandwatchError
from sandwatch.io import atomic_output
from sandwatch.train.cache import FeatureCache
from sandwatch.train.config import TrainConfig
from sandwatch.train.data import (
    EpochSampler,
    ObservationSource,
    PoolWindows,
    TrainWindows,
    ValWindows,
    band_statistics,
    collate_pool,
)
from sandwatch.train.module import SegmentationTask
from sandwatch.train.sampler import plan_scenes


@dataclass
class TrainResult:
    run_dir: Path
    best: Path | None
    last: Path
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def best_ap(self) -> float | None:
        aps = [h["val_ap"] for h in self.history if "val_ap" in h]
        return max(aps) if aps else None


class ThroughputMonitor(Callback):
    """Windows per second and the share of step time spent waiting for data, per epoch."""

    def __init__(self):
        self.history: list[dict[str, float]] = []
        self._reset()

    def _reset(self):
        self.wait = self.busy = 0.0
        self.windows = 0
        self._t_end = None
        self._t_start = None

    def on_train_epoch_start(self, trainer, pl_module):
        self._reset()
        self._epoch_t0 = time.perf_counter()
        self._t_end = self._epoch_t0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        now = time.perf_counter()
        if self._t_end is not None:
            self.wait += now - self._t_end
        self._t_start = now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        now = time.perf_counter()
        self.busy += now - self._t_start
        self.windows += int((batch["key"] if "key" in batch else batch["target"]).shape[0])
        self._t_end = now

    def on_train_epoch_end(self, trainer, pl_module):
        total = self.wait + self.busy
        rec = {"epoch": trainer.current_epoch, "windows": self.windows, "train_seconds": total,
               "windows_per_s": self.windows / total if total else 0.0,
               "data_wait_share": self.wait / total if total else 0.0}
        self.history.append(rec)
        pl_module.log("windows_per_s", rec["windows_per_s"], on_epoch=True)
        pl_module.log("data_wait_share", rec["data_wait_share"], on_epoch=True)


class ExportCheckpoints(Callback):
    """Write RUN/checkpoints/{best,last}.pt (sandwatch Checkpoint) after each validation, and
    RUN/metrics.json. Runs before Lightning's ModelCheckpoint (Lightning orders those last), so
    the best score in the saved state is always current."""

    def __init__(self, run_dir: Path, has_val: bool, throughput: ThroughputMonitor):
        self.dir = Path(run_dir) / "checkpoints"
        self.run_dir = Path(run_dir)
        self.has_val = has_val
        self.best_ap = -1.0
        self.history: list[dict] = []
        self.throughput = throughput
        self._warned = False

    def state_dict(self):
        return {"best_ap": self.best_ap, "history": self.history}

    def load_state_dict(self, state):
        self.best_ap = float(state.get("best_ap", -1.0))
        self.history = list(state.get("history", []))

    def _export(self, trainer, pl_module):
        if not trainer.is_global_zero:
            return
        rec = {"epoch": int(trainer.current_epoch), "global_step": int(trainer.global_step)}
        rec.update({k: float(v) for k, v in pl_module.last_val.items()})
        self.history.append(rec)
        ckpt = pl_module.export()
        ckpt.save(self.dir / "last.pt")
        if self.is_better(rec):
            ckpt.metadata["best"] = True
            ckpt.save(self.dir / "best.pt")
        self._write_metrics()

    def is_better(self, rec: dict) -> bool:
        """The best-checkpoint rule: the best validation AP when validation has mine pixels;
        otherwise (no validation, or mine-free validation scenes whose AP is 0 whatever the
        model) the last checkpoint, so ``best.pt`` is never an early, untrained model."""
        if not self.has_val or rec.get("val_positives", 0) <= 0:
            if self.has_val and not self._warned:
                warnings.warn("the validation scenes have no mine pixels: AP cannot choose a model, "
                              "best.pt is the last checkpoint", stacklevel=2)
                self._warned = True
            return True
        ap = rec.get("val_ap", 0.0)
        if ap > self.best_ap or not (self.dir / "best.pt").exists():
            self.best_ap = max(ap, self.best_ap)
            return True
        return False

    def _write_metrics(self):
        with atomic_output(self.run_dir / "metrics.json") as tmp:
            tmp.write_text(json.dumps({"epochs": self.history, "throughput": self.throughput.history}, indent=1))

    def on_validation_end(self, trainer, pl_module):
        if self.has_val and not trainer.sanity_checking:
            self._export(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module):
        if not self.has_val:
            self._export(trainer, pl_module)
        elif trainer.is_global_zero:
            self._write_metrics()  # the throughput of the epoch just finished (measured after validation)


def _build_model(cfg: TrainConfig, bands: tuple[str, ...] | None = None):
    from sandwatch.models import build_model

    options = dict(cfg.model.options)
    if cfg.model.weights:
        options["weights"] = cfg.model.weights
    try:
        model = build_model(cfg.model.arch, bands=bands or cfg.model.bands, freeze_encoder=cfg.model.freeze_encoder,
                            **options)
    except TypeError as err:
        raise SandwatchError.about("model.options", f"not accepted by {cfg.model.arch}: {err}",
                                   "see `sandwatch models list` for the options") from None
    # the registry records the options it was built with (weights paths are not needed later)
    saved = {k: v for k, v in (getattr(model, "options", None) or options).items() if k != "weights"}
    return model, saved


def _loader_kwargs(num_workers: int) -> dict:
    kw: dict[str, Any] = {"num_workers": num_workers, "persistent_workers": False}
    if num_workers > 0:
        kw["multiprocessing_context"] = "fork" if os.name == "posix" else None
        kw["prefetch_factor"] = 4
    return kw


def scene_bands(cfg: TrainConfig, observations) -> tuple[str, ...] | None:
    """The bands to train on: ``model.bands``, or R,G,B when it is unset and the training scenes
    are true-colour images (detected from the files); None: the architecture's default."""
    if cfg.model.bands or not observations:
        return tuple(cfg.model.bands) if cfg.model.bands else None
    first = observations[0].open_scene()
    if first.level == "RGB":
        from sandwatch.bands import RGB_BANDS

        warnings.warn(f"{observations[0].scene}: true-colour images, training on bands R,G,B "
                      "(set model.bands to choose)", stacklevel=2)
        return RGB_BANDS
    return None


def check_scene_bands(sources, bands: tuple[str, ...]) -> None:
    """Every scene offers the bands the model takes, or one line naming the scene and
    ``model.bands`` (before any DataLoader worker starts, where it would be a traceback)."""
    from sandwatch.bands import match_bands

    for src in sources:
        scene = getattr(src, "scene", None)
        if scene is not None:
            match_bands(scene.bands, bands, source=scene.source, what="model.bands")


def source_normalizations(cfg: TrainConfig, sources, bands, spec: BandSpec, plans=None) -> tuple[list, BandSpec]:
    """Per-source normalisations and the BandSpec the checkpoint records.

    ``model``: the architecture's; ``stats``: mean +- 2 std of the training windows;
    ``scene``: each scene's own mean +- 2 std inside its AOI (:mod:`sandwatch.scenestats`),
    recorded as per-scene in the checkpoint so predict measures every new scene the same way.
    """
    mode = cfg.model.normalization
    if mode == "model":
        return [spec.normalization] * len(sources), spec
    if mode == "stats":
        mean, std = band_statistics(sources, plans, size=cfg.data.window, seed=cfg.trainer.seed)
        norm = Normalization.mean_std(mean, std)
        return [norm] * len(sources), BandSpec(bands, norm)
    from sandwatch.scenestats import scene_statistics

    k = 2.0
    if not sources:
        return [], spec
    region = cfg.model.scene_stats
    stats = [scene_statistics(src.read, src.grid, src.aoi if region == "aoi" else None, source=src.name)
             for src in sources]
    norms = [Normalization.mean_std(m, s, k=k) for m, s in stats]
    mean = np.mean([m for m, _ in stats], axis=0)
    std = np.mean([s for _, s in stats], axis=0)
    fallback = Normalization.mean_std(mean, std, k=k)
    return norms, BandSpec(bands, Normalization(fallback.low, fallback.high, True, per_scene_k=k,
                                                per_scene_region=region))


def prepare(cfg: TrainConfig, *, sources=None, model=None):
    """Build everything a run needs (model, datasets, loaders, module) without training.

    ``sources``: ``(train_sources, val_sources)`` to bypass the manifest (tests, benchmarks);
    ``model``: a ready model (else built from ``cfg.model``).
    """
    run_dir = Path(cfg.run_dir)
    manifest = train_obs = val_obs = None
    if sources is None:
        from sandwatch.dataset.manifest import load_manifest

        manifest = load_manifest(cfg.manifest)
        train_obs = manifest.split_of(cfg.data.train_split)
        val_obs = manifest.split_of(cfg.data.val_split) if cfg.data.val_split else []
        if not train_obs:
            raise SandwatchError.about(cfg.manifest, f"has no observation with split '{cfg.data.train_split}'",
                                       "run `sandwatch dataset split` first (or set split: train in the manifest)")
    if model is None:
        model, options = _build_model(cfg, scene_bands(cfg, train_obs) if sources is None else None)
    else:
        from sandwatch.models import set_trainable

        options = dict(getattr(model, "options", {}) or cfg.model.options)
        set_trainable(model, cfg.model.freeze_encoder)
    arch = getattr(model, "arch", "") or cfg.model.arch
    from sandwatch.models import MODELS, check_window

    if arch in MODELS:
        check_window(arch, cfg.data.window)
    spec: BandSpec | None = getattr(model, "band_spec", None)
    bands = tuple(spec.bands if spec is not None else (cfg.model.bands or ()))
    if not bands:
        raise SandwatchError.about("model.bands", f"{arch} has no default bands", "list the bands in model.bands")
    if spec is None or tuple(spec.bands) != bands:
        spec = BandSpec(bands)

    if sources is None:
        buffer_m = cfg.data.aoi_buffer_m if cfg.data.aoi_buffer_m is not None else manifest.aoi_buffer_m
        mk = lambda o: ObservationSource(o, bands, buffer_m=buffer_m, high_weight=cfg.data.high_confidence_weight,  # noqa: E731
                                         low_weight=cfg.data.low_confidence_weight,
                                         low_target=cfg.data.low_confidence_target)
        train_sources, val_sources = [mk(o) for o in train_obs], [mk(o) for o in val_obs]
        check_scene_bands(train_sources + val_sources, bands)
        from sandwatch.dataset.validate import check_labels   # labels that miss their scene: one line

        check_labels([s.obs for s in train_sources + val_sources], [s.grid for s in train_sources + val_sources],
                     allow_empty=cfg.data.allow_empty_labels, allow_hint="set data.allow_empty_labels: true")
    else:
        train_sources, val_sources = list(sources[0]), list(sources[1])

    plans = plan_scenes([s.aoi for s in train_sources], [s.grid for s in train_sources], cfg.windows_for,
                        min_aoi_pixels=cfg.data.min_aoi_pixels, names=[s.name for s in train_sources],
                        hard_negatives=cfg.data.hard_negatives, epoch_windows=cfg.data.epoch_windows)
    if not any(p is not None for p in plans):
        raise SandwatchError.about(cfg.manifest, "no training scene has an AOI large enough to sample windows",
                                   "check the rivers/AOI files or lower data.min_aoi_pixels")
    train_norms, spec = source_normalizations(cfg, train_sources, bands, spec, plans)
    val_norms = (source_normalizations(cfg, val_sources, bands, spec)[0]
                 if cfg.model.normalization == "scene" else spec.normalization)

    size, seed = cfg.data.window, cfg.trainer.seed
    cache = None
    if cfg.use_cache:
        pools = [0 if p is None else (cfg.cache.pool_per_scene or math.ceil(p.n_windows / 8)) for p in plans]
        train_ds = PoolWindows(train_sources, plans, train_norms, size=size, seed=seed,
                               rot90=cfg.data.rot90, flip=cfg.data.flip, pool_sizes=pools)
        cache = FeatureCache(int(cfg.cache.max_gb * 1e9), cfg.cache.storage,
                             cfg.cache.dir or run_dir / "feature-cache",
                             getattr(torch, cfg.cache.dtype))
        train_ds.cached_keys = cache.keys()
        collate = collate_pool
    else:
        train_ds = TrainWindows(train_sources, plans, train_norms, size=size, seed=seed,
                                rot90=cfg.data.rot90, flip=cfg.data.flip, augment=cfg.augment, bands=bands)
        collate = None
    sampler = EpochSampler(train_ds.counts, seed=seed)
    train_loader = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler, collate_fn=collate,
                              drop_last=False, **_loader_kwargs(cfg.data.num_workers))
    val_loader = None
    if val_sources:
        val_ds = ValWindows(val_sources, val_norms, size=size, stride=cfg.data.val_stride)
        if len(val_ds):
            val_loader = DataLoader(val_ds, batch_size=cfg.val_batch_size, shuffle=False,
                                    **_loader_kwargs(cfg.data.num_workers))
    else:
        warnings.warn("no validation observations: the best checkpoint is the last one", stacklevel=2)

    module = SegmentationTask(
        model, arch=arch, band_spec=spec, options=options, window=size, lr=cfg.lr,
        weight_decay=cfg.optim.weight_decay, pos_weight=cfg.loss.pos_weight, dice_weight=cfg.loss.dice_weight,
        focal_gamma=cfg.loss.focal_gamma, lovasz_weight=cfg.loss.lovasz_weight,
        seed=seed, cache=cache, overlays=cfg.tracking.overlays, plots_dir=str(run_dir / "plots"),
        schedule=cfg.optim.schedule, total_steps=total_steps(cfg, len(train_loader)), warmup=cfg.optim.warmup,
        calibrate=cfg.calibration.enabled, fit_temperature=cfg.calibration.temperature,
        min_calibration_positives=cfg.calibration.min_positives,
        metadata={"config": json.loads(json.dumps(cfg.model_dump(mode="json"))),
                  "train_observations": [s.name for s in train_sources],
                  "val_observations": [s.name for s in val_sources]})
    if cache is not None:
        module.pool_dataset = train_ds
    return module, train_loader, val_loader, sampler


def epochs_needed(cfg: TrainConfig, steps_per_epoch: int) -> int:
    """Epochs of the run: ``optim.epochs``, or with a budget in steps (``optim.steps``) the
    whole epochs that hold it (every epoch ends with a validation and a checkpoint)."""
    if cfg.optim.steps:
        return max(1, math.ceil(cfg.optim.steps / max(1, steps_per_epoch)))
    return cfg.optim.epochs


def total_steps(cfg: TrainConfig, steps_per_epoch: int) -> int:
    """Optimiser steps of the whole run (what the LR schedule spans)."""
    return epochs_needed(cfg, steps_per_epoch) * max(1, steps_per_epoch)


def train(cfg: TrainConfig, *, resume: bool = False, sources=None, model=None,
          callbacks: list[Callback] | None = None, max_epochs: int | None = None) -> TrainResult:
    """Train as ``cfg`` says; ``resume=True`` continues RUN/checkpoints/last.ckpt exactly.

    ``max_epochs`` stops earlier than ``cfg.optim.epochs`` (tests simulate a killed run with it).
    """
    run_dir = Path(cfg.run_dir)
    ckpt_dir = run_dir / "checkpoints"
    last_ckpt = ckpt_dir / "last.ckpt"
    if resume and not last_ckpt.is_file():
        raise SandwatchError.about(last_ckpt, "no checkpoint to resume from", "train without --resume first")
    if resume:   # read safely and validated before Lightning loads it: one line, not a traceback
        from sandwatch.models.checkpoint import check_resume_checkpoint

        check_resume_checkpoint(last_ckpt)
    if not resume and last_ckpt.is_file():
        raise SandwatchError.about(run_dir, "already holds a training run",
                                   "pass --resume to continue it, or choose another run_dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    with atomic_output(run_dir / ("config.yaml" if not resume else "config.resumed.yaml")) as tmp:
        tmp.write_text(cfg.to_yaml())

    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    if cfg.trainer.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=False)

    module, train_loader, val_loader, sampler = prepare(cfg, sources=sources, model=model)
    from sandwatch.train.tracking import finish_logger, log_config, make_logger

    logger = make_logger(cfg, run_dir, resume=resume)
    throughput = ThroughputMonitor()
    has_val = val_loader is not None
    cbs: list[Callback] = [throughput, ExportCheckpoints(run_dir, has_val, throughput)]
    # two checkpoint callbacks (this Lightning writes save_last only when the top-k one saved):
    # best by validation AP, and last every epoch. Lightning runs them after every other callback.
    if has_val:
        cbs.append(ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val_select", mode="max", save_top_k=1,
                                   enable_version_counter=False, every_n_epochs=1))
    cbs.append(ModelCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1,
                               enable_version_counter=False, every_n_epochs=1))
    if cfg.trainer.progress_bar:
        cbs.append(TQDMProgressBar(refresh_rate=1))
    cbs.extend(callbacks or [])
    if has_val and cfg.optim.early_stop:
        cbs.append(EarlyStopping(monitor="val_select", mode="max", patience=cfg.optim.early_stop, check_finite=False))
    epochs = epochs_needed(cfg, len(train_loader))
    trainer = L.Trainer(
        max_epochs=min(epochs, max_epochs) if max_epochs else epochs,
        accelerator=cfg.trainer.accelerator, devices=cfg.trainer.devices, strategy=cfg.trainer.strategy,
        precision=cfg.trainer.precision, deterministic=cfg.trainer.deterministic, logger=logger,
        callbacks=cbs, default_root_dir=str(run_dir), num_sanity_val_steps=0, use_distributed_sampler=False,
        enable_progress_bar=cfg.trainer.progress_bar, limit_val_batches=cfg.trainer.limit_val_batches,
        log_every_n_steps=1, enable_model_summary=False)
    sampler.epoch_source = lambda: trainer.current_epoch
    if not resume:
        log_config(logger, cfg)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*on_train_epoch_end.*")
        try:
            trainer.fit(module, train_loader, val_loader, ckpt_path=str(last_ckpt) if resume else None,
                        weights_only=True)
        finally:
            if trainer.is_global_zero:
                finish_logger(logger)
    export = next(c for c in cbs if isinstance(c, ExportCheckpoints))
    best = ckpt_dir / "best.pt"
    return TrainResult(run_dir=run_dir, best=best if best.exists() else None, last=ckpt_dir / "last.pt",
                       history=export.history)
