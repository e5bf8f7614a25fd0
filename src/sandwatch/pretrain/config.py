"""The pre-training configuration: one typed YAML file, defaults = the published methods.

``method: moco`` (the SSL4EO-S12 ResNet18/50: MoCo v2, Chen et al. 2020, as SSL4EO-S12 used
it: 128-d projection from a 2-layer MLP, a queue of 65536 keys, momentum 0.999, temperature
0.2, SGD 0.03 x batch / 256, cosine; ``moco.version: v3``: symmetric loss with in-batch
negatives and a predictor, no queue, AdamW as MoCo v3 trains with it: base LR 1.5e-4 x batch /
256, weight decay 0.1); ``method: mae`` (the Spectral SatMAE ViT: mask ratio
0.75, masking independent per band group, decoder 512 wide, 8 blocks, 16 heads, group
embedding 128, AdamW base LR 1e-4 x batch / 256, weight decay 0.05). ``method: auto`` picks
from the architecture. Sections ``trainer`` and ``tracking`` are those of ``sandwatch train``.

    manifest: demo/data/manifest.yaml    # or scenes: a folder of scene files
    run_dir: runs/pretrain
    model: {arch: ssl4eo-resnet18, weights: B13_rn18_moco_0099_ckpt.pth}
    optim: {steps: 2000}
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from sandwatch.train.config import (
    AugmentConfig,
    TrackingConfig,
    TrainerConfig,
    _Section,
    load_config,
)


class PretrainDataConfig(_Section):
    """Unlabelled windows: centre uniform inside each scene's river AOI."""

    window: int | None = Field(None, ge=32, description="window in pixels; None: 224 (MoCo, SSL4EO-S12 crops), "
                                                        "96 (MAE, SatMAE input)")
    epoch_windows: int = Field(4096, ge=1, description="windows per epoch over all scenes, shared by AOI area; "
                                                       "a checkpoint (the resume point) is written every epoch")
    aoi_buffer_m: float | None = Field(None, ge=0, description="AOI buffer around rivers; None: the manifest's")
    min_aoi_pixels: int = Field(1, ge=0)
    splits: list[str] | None = Field(None, description="manifest splits to use; None: every observation "
                                                       "(labels are never read)")
    seasonal: bool = Field(True, description="MoCo: the second view of a window is the same place on another "
                                             "date of the site when the manifest has one (SSL4EO-S12 seasonal "
                                             "contrast)")
    num_workers: int = Field(4, ge=0)


class PretrainModelConfig(_Section):
    arch: str = "ssl4eo-resnet50"
    bands: list[str] | None = Field(None, description="band names; None: the architecture's (R,G,B on true-colour scenes)")
    options: dict[str, Any] = Field(default_factory=dict, description="architecture options (e.g. a narrow ViT)")
    weights: str | None = Field(None, description="published checkpoint to continue (layouts `sandwatch models` "
                                                  "reads); None: from scratch")
    normalization: Literal["model", "stats", "scene"] = Field(
        "model", description="as in `sandwatch train`: use the one the later training will use")
    scene_stats: Literal["aoi", "scene"] = "aoi"

    @field_validator("bands", mode="before")
    @classmethod
    def _split_bands(cls, v):
        return [b.strip() for b in v.split(",") if b.strip()] if isinstance(v, str) else v


class MocoConfig(_Section):
    version: Literal["v2", "v3"] = "v2"
    dim: int = Field(128, ge=8, description="projection size")
    hidden: int = Field(2048, ge=8, description="projection MLP hidden size")
    queue: int = Field(65536, ge=16, description="v2: negative keys kept")
    momentum: float = Field(0.999, ge=0, lt=1, description="key encoder EMA")
    temperature: float = Field(0.2, gt=0)
    crop_scale: tuple[float, float] = Field((0.2, 1.0), description="random resized crop: share of the window area")
    augment: AugmentConfig = Field(default_factory=lambda: AugmentConfig(photometric=True),
                                   description="colour / haze jitter of each view (train's augmentation)")


class MaeConfig(_Section):
    mask_ratio: float = Field(0.75, gt=0, lt=1)
    spatial_mask: bool = Field(False, description="true: the same patches masked in every band group; "
                                                  "false (published): each group masked independently")
    decoder_dim: int = Field(512, ge=16)
    decoder_depth: int = Field(8, ge=1)
    decoder_heads: int = Field(16, ge=1)
    decoder_channel_embed: int = Field(128, ge=4)
    norm_pix_loss: bool = False


class MimConfig(_Section):
    """``method: mim`` for the SSL4EO ResNets: SimMIM (masked squares, L1 on the masked pixels)."""

    patch: int = Field(16, ge=2, description="side of the masked squares in pixels")
    mask_ratio: float = Field(0.6, gt=0, lt=1, description="share of the squares masked")
    decoder_channels: list[int] = Field(default_factory=lambda: [32, 64, 128, 256],
                                        description="reconstruction U-Net decoder, finest first (not kept)")

    @field_validator("decoder_channels")
    @classmethod
    def _four_levels(cls, v):
        if len(v) != 4 or min(v) < 1:
            raise ValueError("mim.decoder_channels needs 4 positive widths, finest first (the ResNet's 4 up steps)")
        return v


class PretrainOptimConfig(_Section):
    steps: int | None = Field(None, ge=1, description="budget in optimiser steps (rounded up to whole epochs)")
    epochs: int = Field(100, ge=1, description="used when steps is None")
    batch_size: int | None = Field(None, ge=2, description="None: 256 (MoCo), 64 (MAE, MIM)")
    lr: float | None = Field(None, gt=0, description="None: the method's base LR x batch / 256 (MoCo v2 SGD 0.03, "
                                                     "MoCo v3 AdamW 1.5e-4, MAE and MIM AdamW 1e-4)")
    weight_decay: float | None = Field(None, ge=0, description="None: 1e-4 (MoCo v2), 0.1 (MoCo v3), 0.05 (MAE, MIM)")
    warmup: float = Field(0.0, ge=0, lt=1, description="share of steps with a linear warm-up")


class PretrainConfig(_Section):
    """All of a pre-training run: ``manifest`` or ``scenes``, and ``run_dir``."""

    manifest: str | None = None
    scenes: str | None = Field(None, description="a folder of scenes (AOI from each scene's water index)")
    run_dir: str = "runs/pretrain"
    profile: Literal["default", "cpu"] = "default"
    method: Literal["auto", "moco", "mim", "mae"] = Field(
        "auto", description="auto: moco for the SSL4EO ResNets, mae for SatMAE; mim: SimMIM for the ResNets")
    data: PretrainDataConfig = Field(default_factory=PretrainDataConfig)
    model: PretrainModelConfig = Field(default_factory=PretrainModelConfig)
    moco: MocoConfig = Field(default_factory=MocoConfig)
    mae: MaeConfig = Field(default_factory=MaeConfig)
    mim: MimConfig = Field(default_factory=MimConfig)
    optim: PretrainOptimConfig = Field(default_factory=PretrainOptimConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    tracking: TrackingConfig = Field(default_factory=lambda: TrackingConfig(experiment="sandwatch-pretrain"))

    @model_validator(mode="after")
    def _check(self):
        if not self.manifest and not self.scenes:
            raise ValueError("give manifest (a dataset manifest) or scenes (a folder of scenes)")
        if not self.model.arch.startswith(("ssl4eo-resnet", "satmae-")):
            raise ValueError(f"{self.model.arch} has no self-supervised method here: use ssl4eo-resnet18/50 (MoCo) "
                             "or satmae-base/large (MAE)")
        vit = self.model.arch.startswith("satmae")
        if self.method != "auto" and (self.method == "mae") != vit:
            raise ValueError(f"method {self.method} does not suit {self.model.arch} "
                             f"(use {'mae' if vit else 'moco or mim'})")
        lo, hi = self.moco.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError("moco.crop_scale must be two shares 0 < low <= high <= 1")
        if self.data.window is None:   # resolved here, so the run's config.yaml says what was used
            self.data.window = self.window
        return self

    # ---- resolved values ------------------------------------------------------------------
    @property
    def kind(self) -> str:
        """The method: ``mae`` (SatMAE), ``mim`` or ``moco`` (SSL4EO ResNets; auto: moco)."""
        if self.model.arch.startswith("satmae"):
            return "mae"
        return "mim" if self.method == "mim" else "moco"

    @property
    def window(self) -> int:
        return int(self.data.window or (224 if self.kind == "moco" else 96))

    @property
    def batch_size(self) -> int:
        return self.optim.batch_size or (256 if self.kind == "moco" else 64)

    @property
    def recipe(self) -> str:
        """Whose optimiser defaults apply: ``mae``, ``mim``, ``moco-v2`` (SGD) or ``moco-v3`` (AdamW)."""
        return f"moco-{self.moco.version}" if self.kind == "moco" else self.kind

    @property
    def lr(self) -> float:
        return self.optim.lr or BASE_LR[self.recipe] * self.batch_size / 256

    @property
    def weight_decay(self) -> float:
        wd = self.optim.weight_decay
        return wd if wd is not None else WEIGHT_DECAY[self.recipe]

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


#: the published base learning rate (x batch / 256) and weight decay of each recipe: MoCo v2 with
#: SGD (SSL4EO-S12), MoCo v3 with AdamW (Chen et al. 2021), MAE with AdamW (SatMAE), SimMIM with
#: AdamW (8e-4 at batch 2048)
BASE_LR: dict[str, float] = {"moco-v2": 0.03, "moco-v3": 1.5e-4, "mae": 1e-4, "mim": 1e-4}
WEIGHT_DECAY: dict[str, float] = {"moco-v2": 1e-4, "moco-v3": 0.1, "mae": 0.05, "mim": 0.05}

#: ``profile: cpu``: a laptop (small batches, 2 workers, float32 on the CPU)
PROFILES: dict[str, dict[str, Any]] = {
    "default": {},
    "cpu": {"optim": {"batch_size": 32}, "data": {"num_workers": 2},
            "trainer": {"accelerator": "cpu", "devices": 1, "strategy": "auto", "precision": "32-true"}},
}
_PATH_KEYS = (("manifest",), ("scenes",), ("run_dir",), ("model", "weights"))


def pretrain_config(data: dict, overrides: list[str] | tuple[str, ...] = (), source: object = "config",
                    base_dir: str | os.PathLike | None = None) -> PretrainConfig:
    """Validate a pre-training config dict (+ ``--set`` overrides)."""
    from sandwatch.train.config import config_from_dict

    return config_from_dict(data, overrides, source, base_dir, schema=PretrainConfig, profiles=PROFILES,
                            path_keys=_PATH_KEYS, command="pretrain")


def load_pretrain_config(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> PretrainConfig:
    """Read a YAML pre-training config, apply ``--set`` overrides, validate."""
    return load_config(path, overrides, example="configs/pretrain.yaml", schema=PretrainConfig, profiles=PROFILES,
                       path_keys=_PATH_KEYS, command="pretrain")
