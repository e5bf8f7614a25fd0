"""``pretrain(config)``: unlabelled river windows -> an encoder in its published layout, resumable.

Run directory layout::

    RUN/config.yaml                    the resolved config
    RUN/checkpoints/last.ckpt          Lightning checkpoint after every epoch (the resume point)
    RUN/checkpoints/pretrained.pth     the encoder in the published layout (what train takes)
    RUN/metrics.json                   mean loss (and MoCo top-1 accuracy) per epoch, throughput
    RUN/mlflow.db, RUN/mlartifacts     MLflow tracking (default backend)

The pieces are the train stage's: window sampler, observation sources, normalisations, epoch
sampler, loader settings, throughput monitor, loggers, LR schedule.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, TQDMProgressBar
from torch.utils.data import DataLoader

from sandwatch.errors import SandwatchError
from sandwatch.io import atomic_output
from sandwatch.pretrain.config import PretrainConfig
from sandwatch.pretrain.data import PretrainWindows, pretrain_observations, seasonal_partners
from sandwatch.pretrain.module import PRETRAIN_KEY, ExportPublished
from sandwatch.train.data import EpochSampler, ObservationSource
from sandwatch.train.runner import (
    ThroughputMonitor,
    _loader_kwargs,
    check_scene_bands,
    epochs_needed,
    scene_bands,
    source_normalizations,
)
from sandwatch.train.sampler import plan_scenes


@dataclass
class PretrainResult:
    run_dir: Path
    weights: Path                      # RUN/checkpoints/pretrained.pth
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def losses(self) -> list[float]:
        return [h["loss"] for h in self.history]


def _start_file(cfg: PretrainConfig) -> tuple[dict | None, object | None]:
    """The start file read once: the loaded object (the method continues its head, key encoder,
    queue or decoder from it) and its parsed encoder weights (the zoo loads them), or None, None."""
    if not cfg.model.weights:
        return None, None
    from sandwatch.models import weights as zoo_weights

    obj = zoo_weights.safe_load(cfg.model.weights)
    return obj, zoo_weights.parse_weights(obj, cfg.model.weights)


def build_task(cfg: PretrainConfig, bands, total_steps: int, metadata: dict):
    """The model of the zoo (from the start file, or random) wrapped in the method's task."""
    from sandwatch.models import build_model

    options = dict(cfg.model.options)
    start, weights = _start_file(cfg)
    try:
        model = build_model(cfg.model.arch, bands=bands or cfg.model.bands, weights=weights,
                            freeze_encoder=False, **options)
    except TypeError as err:
        raise SandwatchError.about("model.options", f"not accepted by {cfg.model.arch}: {err}",
                                   "see `sandwatch models list` for the options") from None
    kw = dict(arch=model.arch, bands=list(model.band_spec.bands), window=cfg.window, lr=cfg.lr,
              weight_decay=cfg.weight_decay, total_steps=total_steps, warmup=cfg.optim.warmup,
              seed=cfg.trainer.seed, metadata={**metadata, "options": dict(model.options)})
    if cfg.kind == "mae":
        from sandwatch.pretrain.mae import build_mae

        return model, build_mae(model, cfg, start, **kw)
    if cfg.kind == "mim":
        from sandwatch.pretrain.mim import build_mim

        return model, build_mim(model, cfg, start, **kw)
    from sandwatch.pretrain.moco import build_moco

    return model, build_moco(model, cfg, start, **kw)


def prepare(cfg: PretrainConfig, *, sources=None):
    """Task, loader and sampler of a run. ``sources``: ready window sources (tests)."""
    observations = None
    if sources is None:
        observations, buffer_m = pretrain_observations(cfg)
        bands = scene_bands(cfg, observations)
    else:
        bands = None
    from sandwatch.models import build_model

    with torch.device("meta"):
        spec_bands = build_model(cfg.model.arch, bands=bands or cfg.model.bands, **cfg.model.options).band_spec
    bands = tuple(spec_bands.bands)
    from sandwatch.models import check_window

    check_window(cfg.model.arch, cfg.window)
    if sources is None:
        sources = [ObservationSource(o, bands, buffer_m=buffer_m) for o in observations]
        check_scene_bands(sources, bands)
    plans = plan_scenes([s.aoi for s in sources], [s.grid for s in sources], lambda px: 1,
                        min_aoi_pixels=cfg.data.min_aoi_pixels, names=[s.name for s in sources],
                        epoch_windows=cfg.data.epoch_windows)
    if not any(p is not None for p in plans):
        raise SandwatchError.about(cfg.manifest or cfg.scenes, "no scene has an AOI large enough to sample windows",
                                   "check the rivers/AOI files or lower data.min_aoi_pixels")
    norms, spec = source_normalizations(cfg, sources, bands, spec_bands, plans)
    partners = seasonal_partners(sources) if cfg.kind == "moco" and cfg.data.seasonal else None
    ds = PretrainWindows(sources, plans, norms, size=cfg.window, seed=cfg.trainer.seed, kind=cfg.kind,
                         partners=partners, crop_scale=cfg.moco.crop_scale, augment=cfg.moco.augment, bands=bands)
    sampler = EpochSampler(ds.counts, seed=cfg.trainer.seed)
    loader = DataLoader(ds, batch_size=cfg.batch_size, sampler=sampler, drop_last=True,
                        **_loader_kwargs(cfg.data.num_workers))
    if len(loader) == 0:
        raise SandwatchError.about("data.epoch_windows", f"{cfg.data.epoch_windows} windows make no batch of "
                                   f"{cfg.batch_size}", "raise data.epoch_windows or lower optim.batch_size")
    steps = epochs_needed(cfg, len(loader)) * len(loader)
    meta = {"method": cfg.kind, "observations": [s.name for s in sources],
            "seasonal_pairs": sum(bool(p) for p in (partners or [])), "normalization": spec.normalization.to_dict()}
    _, task = build_task(cfg, bands, steps, meta)
    return task, loader, sampler


def check_resume(path: Path) -> None:
    """The ``last.ckpt`` a ``--resume`` continues, read safely and checked before Lightning loads it."""
    from sandwatch.models.checkpoint import read_checkpoint_file

    d = read_checkpoint_file(path)
    if not isinstance(d.get(PRETRAIN_KEY), dict) or "state_dict" not in d:
        raise SandwatchError.about(path, "is not a checkpoint written by `sandwatch pretrain`",
                                   "restore the run's own last.ckpt, or pre-train again in a new run_dir")


def pretrain(cfg: PretrainConfig, *, resume: bool = False, sources=None, max_epochs: int | None = None,
             callbacks: list[Callback] | None = None) -> PretrainResult:
    """Pre-train as ``cfg`` says; ``resume=True`` continues RUN/checkpoints/last.ckpt exactly.
    ``max_epochs`` stops earlier (tests simulate a killed run with it)."""
    run_dir = Path(cfg.run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    if resume:
        if not last.is_file():
            raise SandwatchError.about(last, "no checkpoint to resume from", "pre-train without --resume first")
        check_resume(last)
    elif last.is_file():
        raise SandwatchError.about(run_dir, "already holds a pre-training run",
                                   "pass --resume to continue it, or choose another run_dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    with atomic_output(run_dir / ("config.resumed.yaml" if resume else "config.yaml")) as tmp:
        tmp.write_text(cfg.to_yaml())
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    if cfg.trainer.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=False)
    task, loader, sampler = prepare(cfg, sources=sources)

    from sandwatch.train.tracking import finish_logger, log_config, make_logger

    logger = make_logger(cfg, run_dir, resume=resume)
    throughput = ThroughputMonitor()
    export = ExportPublished(run_dir, throughput)
    cbs: list[Callback] = [throughput, export,
                           ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", monitor=None, save_top_k=1,
                                           enable_version_counter=False, every_n_epochs=1)]
    if cfg.trainer.progress_bar:
        cbs.append(TQDMProgressBar(refresh_rate=1))
    cbs.extend(callbacks or [])
    epochs = epochs_needed(cfg, len(loader))
    trainer = L.Trainer(
        max_epochs=min(epochs, max_epochs) if max_epochs else epochs, accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices, strategy=cfg.trainer.strategy, precision=cfg.trainer.precision,
        deterministic=cfg.trainer.deterministic, logger=logger, callbacks=cbs, default_root_dir=str(run_dir),
        use_distributed_sampler=False, enable_progress_bar=cfg.trainer.progress_bar, log_every_n_steps=1,
        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0)
    sampler.epoch_source = lambda: trainer.current_epoch
    if not resume:
        log_config(logger, cfg)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        try:
            trainer.fit(task, loader, ckpt_path=str(last) if resume else None, weights_only=True)
        finally:
            if trainer.is_global_zero:
                finish_logger(logger)
    return PretrainResult(run_dir, export.path, export.history)
