"""The training configuration: one typed, validated YAML file with the published defaults.

Every field has the default of the published method (field guide section 2) unless said
otherwise; ``None`` for ``lr`` and ``batch_size`` means "the published value for the
architecture" (its ``ModelSpec.lr`` and ``.batch_size``: 5e-4 and 128; 1e-3 and 64 for
SatMAE). A YAML file sets any subset::

    manifest: data/manifest.yaml
    run_dir: runs/unet-rgb
    model: {arch: unet, bands: [B04, B03, B02]}
    optim: {epochs: 20}

``--set key=value`` on the command line overrides one dotted key (``--set optim.lr=1e-3``,
``--set data.window=64``); the value is parsed as YAML (numbers, booleans, lists).

``profile: cpu`` starts from the CPU profile (:data:`PROFILES`) instead of the published
defaults: smaller batches, fewer loader workers, float32 on the CPU; anything the file or
``--set`` gives still wins.
"""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sandwatch.errors import SandwatchError
from sandwatch.io import read_yaml_mapping
from sandwatch.published import WINDOW_PX


def _published(arch: str):
    """The architecture's :class:`~sandwatch.models.spec.ModelSpec`: it carries the published
    learning rate and batch size (imported on first use: reading a config does not load torch)."""
    from sandwatch.models.zoo import get_spec

    return get_spec(arch)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Where windows come from and how many per epoch."""

    window: int = Field(WINDOW_PX, ge=16, description="window size in pixels (square)")
    aoi_buffer_m: float | None = Field(
        None, ge=0, description="AOI buffer around rivers in metres; None: the manifest's aoi_buffer_m (1000 m)")
    windows_factor: float = Field(2.0, gt=0, description="windows per scene per epoch = ceil(AOI px / window^2) x factor")
    windows_per_scene: int | None = Field(None, ge=1, description="fixed number per scene (overrides the formula)")
    min_aoi_pixels: int = Field(1, ge=0, description="scenes whose AOI has fewer pixels are skipped with a warning")
    low_confidence_weight: float = Field(0.5, ge=0, le=1, description="loss weight of Low-confidence polygons (0 ignores them)")
    high_confidence_weight: float = Field(1.0, ge=0, le=1)
    rot90: bool = True
    flip: bool = True
    num_workers: int = Field(4, ge=0, description="DataLoader worker processes")
    val_stride: int | None = Field(None, ge=1, description="stride of the validation window grid; None: the window size")
    train_split: str = "train"
    val_split: str | None = Field("val", description="split validated on each epoch; null: no validation "
                                                     "(best.pt is then the last checkpoint)")
    epoch_windows: int | None = Field(
        None, ge=1, description="windows per epoch over all training scenes, shared by AOI area (overrides "
                                "windows_factor / windows_per_scene): an epoch of a fixed size, whatever the AOI")
    low_confidence_target: float = Field(
        1.0, ge=0, le=1, description="target value of Low-confidence pixels: 1 (published: mine), or a soft "
                                     "target such as 0.7")
    hard_negatives: float = Field(
        0.0, ge=0, lt=1, description="share of training windows centred outside the AOI (land the model "
                                     "must learn to ignore when it predicts whole scenes); 0: published")
    allow_empty_labels: bool = Field(
        False, description="a label file whose polygons all miss its scene trains as a negative (warning) "
                           "instead of stopping the run; a label file with no features always does")


class ModelConfig(_Section):
    arch: str = "unet"
    bands: list[str] | None = Field(None, description="band names; None: the architecture's default bands")
    options: dict[str, Any] = Field(default_factory=dict, description="extra keyword arguments of build_model")
    weights: str | None = Field(None, description="pretrained encoder weights file (passed as options['weights'])")
    freeze_encoder: bool = Field(False, description="true: the encoder is frozen (linear probing), only the decoder "
                                                    "trains; false: everything trains (set_trainable(model, frozen))")
    normalization: Literal["model", "stats", "scene"] = Field(
        "model", description="'model': the architecture's published normalisation; "
                             "'stats': mean +- 2 std measured on the training windows; "
                             "'scene': mean +- 2 std of each scene by itself (train and predict)")
    scene_stats: Literal["aoi", "scene"] = Field(
        "aoi", description="with normalization 'scene': statistics inside each scene's river AOI, or over the "
                           "whole scene (prediction then needs no AOI to normalise)")

    @field_validator("bands", mode="before")
    @classmethod
    def _split_bands(cls, v):
        return [b.strip() for b in v.split(",") if b.strip()] if isinstance(v, str) else v


class LossConfig(_Section):
    pos_weight: float = Field(6.0, gt=0)
    dice_weight: float = Field(0.0, ge=0, description="add dice_weight x soft Dice loss (0: BCE only)")
    focal_gamma: float = Field(0.0, ge=0, description="> 0: focal BCE (down-weights easy pixels); 0: plain BCE")
    lovasz_weight: float = Field(0.0, ge=0, description="add lovasz_weight x Lovasz hinge loss (0: none)")


class AugmentConfig(_Section):
    """Photometric augmentation that imitates season and atmosphere, on reflectance before
    normalisation. Off by default (published: rot90 and flips only)."""

    photometric: bool = False
    p: float = Field(0.8, ge=0, le=1, description="share of windows that get a photometric change")
    brightness: float = Field(0.1, ge=0, description="x -> x + b, b uniform in +-brightness x the window's mean")
    contrast: float = Field(0.25, ge=0, description="x -> mean + c (x - mean), log c uniform in +-contrast")
    gamma: float = Field(0.25, ge=0, description="x -> x^g (on [0, 1] reflectance), log g uniform in +-gamma")
    band_gain: float = Field(0.1, ge=0, description="per-band gain, log uniform in +-band_gain (colour shift)")
    haze: float = Field(0.3, ge=0, le=1, description="x -> (1 - a) x + a h, a uniform in [0, haze], "
                                                      "h a bright bluish airlight")


class OptimConfig(_Section):
    epochs: int = Field(20, ge=1)
    lr: float | None = Field(None, gt=0, description="None: the architecture's published LR (5e-4; 1e-3 for SatMAE)")
    batch_size: int | None = Field(None, ge=1, description="None: the architecture's published batch (128; 64 for SatMAE)")
    weight_decay: float = Field(0.01, ge=0)
    schedule: Literal["constant", "cosine"] = Field(
        "constant", description="learning rate: constant (published) or cosine decay to 0 over the run's steps")
    warmup: float = Field(0.0, ge=0, lt=1, description="share of the run's steps with a linear warm-up of the LR")
    steps: int | None = Field(
        None, ge=1, description="training budget in optimiser steps, whatever the AOI area (rounded up to "
                                "whole epochs; with data.epoch_windows the epoch size is fixed too); "
                                "None: optim.epochs epochs")
    early_stop: int | None = Field(
        None, ge=1, description="stop after this many validations without a better validation AP; None: never")
    val_batch_size: int | None = Field(None, ge=1, description="None: same as batch_size")


class TrainerConfig(_Section):
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: int | str = Field(1, description="number of devices, or 'auto'")
    strategy: Literal["auto", "ddp", "ddp_spawn", "ddp_fork", "ddp_find_unused_parameters_true"] = Field(
        "auto", description="ddp: one process per device (GPUs, or CPU processes with devices > 1); "
                            "ddp_fork: the same from notebooks and tests")
    precision: Literal["32", "32-true", "16-mixed", "bf16-mixed"] = "32-true"
    deterministic: bool = False
    seed: int = 0
    progress_bar: bool = True
    limit_val_batches: int | float = 1.0


class CacheConfig(_Section):
    """Frozen-encoder feature cache (see :mod:`sandwatch.train.cache` for the trade-off)."""

    enabled: bool | Literal["auto"] = Field(
        "auto", description="'auto': on when the encoder is frozen; true needs freeze_encoder")
    pool_per_scene: int | None = Field(
        None, ge=1, description="fixed windows drawn once per scene; None: the per-epoch count of the scene")
    storage: Literal["memory", "disk"] = "memory"
    max_gb: float = Field(4.0, gt=0, description="bound of the cache; beyond it least recently used entries go")
    dtype: Literal["bfloat16", "float16", "float32"] = Field(
        "bfloat16", description="stored feature type: bfloat16/float16 halve the memory, float32 is exact")
    dir: str | None = Field(None, description="disk cache folder; None: RUN/feature-cache")


class CalibrationConfig(_Section):
    """Decision threshold (and temperature) fitted on validation, stored in the checkpoint and
    used by predict and monitor. Off by default (published: threshold 0.5)."""

    enabled: bool = False
    temperature: bool = Field(True, description="also fit a temperature T (probability = sigmoid(logit / T))")
    min_positives: int = Field(50, ge=1, description="fewer mine pixels in validation: no calibration (0.5 kept)")


class TrackingConfig(_Section):
    backend: Literal["mlflow", "wandb", "tensorboard", "csv", "none"] = "mlflow"
    experiment: str = "sandwatch"
    run_name: str | None = None
    overlays: int = Field(4, ge=0, description="prediction overlays logged per validation")
    wandb_offline: bool = True


class TrainConfig(_Section):
    """All of a training run. ``manifest`` and ``run_dir`` are the only required choices."""

    manifest: str
    run_dir: str = "runs/train"
    profile: Literal["default", "cpu"] = "default"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @model_validator(mode="after")
    def _check(self):
        if self.cache.enabled is True and not self.model.freeze_encoder:
            raise ValueError("cache.enabled=true needs model.freeze_encoder=true (features of a training encoder change)")
        if self.use_cache and (self.augment.photometric or self.data.low_confidence_target < 1):
            raise ValueError("the feature cache keeps fixed windows: it cannot be combined with photometric "
                             "augmentation or soft targets (set cache.enabled=false)")
        return self

    # ---- resolved values --------------------------------------------------------------
    @property
    def lr(self) -> float:
        return self.optim.lr if self.optim.lr is not None else _published(self.model.arch).lr

    @property
    def batch_size(self) -> int:
        return self.optim.batch_size if self.optim.batch_size is not None else _published(self.model.arch).batch_size

    @property
    def val_batch_size(self) -> int:
        return self.optim.val_batch_size or self.batch_size

    @property
    def use_cache(self) -> bool:
        return self.model.freeze_encoder and self.cache.enabled in (True, "auto")

    def windows_for(self, aoi_pixels: float) -> int:
        """Windows per scene per epoch: ceil(AOI pixels / window^2) x factor (published: x 2)."""
        if self.data.windows_per_scene is not None:
            return self.data.windows_per_scene
        return max(1, math.ceil(math.ceil(aoi_pixels / self.data.window**2) * self.data.windows_factor))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


#: Built-in profiles: overrides applied under the user's file. ``cpu``: a laptop or CI box.
PROFILES: dict[str, dict[str, Any]] = {
    "default": {},
    "cpu": {
        "optim": {"batch_size": 16, "val_batch_size": 16},
        "data": {"num_workers": 2},
        "trainer": {"accelerator": "cpu", "devices": 1, "strategy": "auto", "precision": "32-true"},
        "cache": {"storage": "memory", "max_gb": 2.0},
    },
}


def _deep_merge(base: dict, top: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def apply_override(data: dict, item: str, source: str = "--set") -> dict:
    """Apply one ``key.sub=value`` override (value parsed as YAML) to a nested dict, in place."""
    if "=" not in item:
        raise SandwatchError.about(source, f"{item!r} is not key=value", "write e.g. --set optim.lr=1e-3")
    key, _, text = item.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise SandwatchError.about(source, f"{item!r} has no key", "write e.g. --set optim.lr=1e-3")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    node = data
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise SandwatchError.about(source, f"{key} goes below {p!r}, which is not a section", "check the key")
        node = nxt
    node[parts[-1]] = value
    return data


def _null_keys(over: dict, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Dotted keys that an override sets to null (``--set model.options.width=null``)."""
    out = []
    for k, v in over.items():
        if isinstance(v, dict):
            out.extend(_null_keys(v, prefix + (k,)))
        elif v is None:
            out.append(prefix + (k,))
    return out


def _remove_option(data: dict, parts: tuple[str, ...], schema: type[BaseModel] | None = None) -> None:
    """``key=null`` inside a free-form mapping (``model.options``) removes the key, so the
    architecture's default applies again; on a typed setting null stays null (its "default"
    meaning, e.g. ``optim.lr=null`` is the published LR)."""
    section: Any = schema or TrainConfig
    for p in parts[:-1]:
        field = getattr(section, "model_fields", {}).get(p)
        if field is None:
            return
        section = field.annotation
    if isinstance(section, type) and issubclass(section, BaseModel):
        return  # a typed section: null is a value
    node = data
    for p in parts[:-1]:
        node = node.get(p) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(parts[-1], None)


_PATH_KEYS = (("manifest",), ("run_dir",), ("model", "weights"), ("cache", "dir"))


def _resolve_paths(data: dict, base: Path, path_keys=_PATH_KEYS) -> None:
    """Relative paths of ``data`` (at ``path_keys``) taken relative to ``base`` (in place)."""
    for keys in path_keys:
        node = data
        for k in keys[:-1]:
            node = node.get(k) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(keys[-1]), str) and "://" not in node[keys[-1]]:
            p = Path(node[keys[-1]]).expanduser()
            node[keys[-1]] = str(p if p.is_absolute() else (base / p).resolve())


def config_from_dict(data: dict, overrides: list[str] | tuple[str, ...] = (), source: object = "config",
                     base_dir: str | os.PathLike | None = None, *, schema: type[BaseModel] | None = None,
                     profiles: dict[str, dict] | None = None, path_keys=_PATH_KEYS, command: str = "train") -> Any:
    """Validate a config dict (+ ``--set`` overrides).

    Relative paths in ``data`` are taken relative to ``base_dir`` (the config file's folder);
    paths given in ``overrides`` relative to the current directory, like any command-line path.
    ``schema``, ``profiles``, ``path_keys`` and ``command``: another stage's typed config
    (``sandwatch pretrain`` reads its own with this function); by default :class:`TrainConfig`.
    """
    schema, profiles = schema or TrainConfig, PROFILES if profiles is None else profiles
    data = copy.deepcopy(data or {})
    if base_dir is not None:
        _resolve_paths(data, Path(base_dir), path_keys)
    over: dict = {}
    for item in overrides:
        apply_override(over, item)
    if base_dir is not None:
        _resolve_paths(over, Path.cwd(), path_keys)
    data = _deep_merge(data, over)
    for parts in _null_keys(over):
        _remove_option(data, parts, schema)
    profile = data.get("profile", "default")
    if profile not in profiles:
        raise SandwatchError.about(source, f"unknown profile {profile!r}", f"use one of {', '.join(profiles)}")
    data = _deep_merge(profiles[profile], data)
    try:
        cfg = schema.model_validate(data)
    except ValidationError as err:
        e = err.errors()[0]
        where = ".".join(str(x) for x in e["loc"]) or "config"
        raise SandwatchError.about(source, f"invalid value at {where}: {e['msg']}",
                                   f"fix it in the file or with --set (see `sandwatch {command} --help`)") from None
    return cfg


def load_config(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = (), *,
                example: str = "configs/default.yaml", **kinds) -> Any:
    """Read a YAML config, apply ``--set`` overrides, validate; paths relative to the file.
    ``kinds``: see :func:`config_from_dict` (default: a :class:`TrainConfig`)."""
    path = Path(path)
    data = read_yaml_mapping(path, what="config file", missing_fix="check the path (examples in configs/)",
                             format_fix=f"see {example} for the format")
    return config_from_dict(data, overrides, source=path, base_dir=path.resolve().parent, **kinds)


def default_config_yaml(manifest: str = "data/manifest.yaml", run_dir: str = "runs/train") -> str:
    """The published-defaults config as YAML (what configs/default.yaml holds)."""
    return TrainConfig(manifest=manifest, run_dir=run_dir).to_yaml()
