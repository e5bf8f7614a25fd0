"""Training: windows inside the river AOI, confidence-weighted loss, Lightning, exact resume.

    from sandwatch.train import load_config, train
    result = train(load_config("configs/default.yaml", ["optim.epochs=5"]))
    result.best   # RUN/checkpoints/best.pt, a sandwatch Checkpoint (predict needs nothing else)

Pieces (each usable alone): :mod:`.config` (typed config, published defaults, profiles),
:mod:`.sampler` (uniform window centres inside the AOI polygon, validation grids),
:mod:`.loss` (BCE pos_weight 6 + per-pixel weights, optional Dice), :mod:`.data` (torch
datasets over the imagery/labels/aoi contracts), :mod:`.cache` (frozen-encoder feature
cache), :mod:`.module` (LightningModule), :mod:`.runner` (Trainer, checkpoints, resume),
:mod:`.tracking` (MLflow/W&B/TensorBoard).
"""

from sandwatch.train.cache import FeatureCache
from sandwatch.train.config import (
    PROFILES,
    TrainConfig,
    apply_override,
    config_from_dict,
    default_config_yaml,
    load_config,
)
from sandwatch.train.data import (
    ArraySource,
    EpochSampler,
    ObservationSource,
    PoolWindows,
    TrainWindows,
    ValWindows,
    dihedral,
)
from sandwatch.train.loss import SegmentationLoss, soft_dice, weighted_bce
from sandwatch.train.sampler import PolygonSampler, epoch_items, grid_windows, plan_scenes, to_pixel_coords


def train(*args, **kwargs):
    """See :func:`sandwatch.train.runner.train` (imported lazily: it pulls in Lightning)."""
    from sandwatch.train.runner import train as _train

    return _train(*args, **kwargs)


__all__ = [
    "PROFILES", "EpochSampler", "FeatureCache", "ObservationSource", "PolygonSampler", "PoolWindows",
    "ArraySource", "SegmentationLoss", "TrainConfig", "TrainWindows", "ValWindows", "apply_override", "config_from_dict",
    "default_config_yaml", "dihedral", "epoch_items", "grid_windows", "load_config", "plan_scenes",
    "soft_dice", "to_pixel_coords", "train", "weighted_bce",
]
