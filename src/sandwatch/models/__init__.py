"""The model zoo: architectures, their bands and normalisations, pretrained weights, checkpoints.

::

    from sandwatch.models import MODELS, build_model, default_band_spec, set_trainable
    model = build_model("ssl4eo-resnet18", weights="B13_rn18_moco_0099_ckpt.pth")  # encoder frozen
    logits = model(x)                      # (N, 13, H, W) normalised -> (N, 1, H, W)
    feats = model.encoder(x)               # list of tensors (cacheable when frozen)
    logits = model.decoder_forward(feats, x.shape[-2:])

Registry names: ``unet``, ``ssl4eo-resnet18``, ``ssl4eo-resnet50``, ``satmae-base``,
``satmae-large``. See :mod:`sandwatch.models.registry` (specs, normalisations),
:mod:`sandwatch.models.weights` (file layouts, loading, inspection) and
:mod:`sandwatch.models.base` (encoder/decoder split, freezing).
"""

from sandwatch.models.base import SegmentationModel, count_parameters, set_trainable
from sandwatch.models.checkpoint import Checkpoint
from sandwatch.models.registry import (
    L2A_MEAN,
    L2A_STD,
    MODELS,
    ModelSpec,
    build_model,
    channelwise_normalization,
    check_window,
    default_band_spec,
    get_spec,
    parameter_table,
    prepare_input,
    select_bands,
)
from sandwatch.models.weights import (
    LoadReport,
    WeightsFile,
    detect_layout,
    inspect_weights,
    load_pretrained,
    read_weights,
    safe_load,
)

__all__ = [
    "Checkpoint", "L2A_MEAN", "L2A_STD", "LoadReport", "MODELS", "ModelSpec", "SegmentationModel", "WeightsFile",
    "build_model", "channelwise_normalization", "check_window", "count_parameters", "default_band_spec",
    "detect_layout", "get_spec", "inspect_weights", "load_pretrained", "parameter_table", "prepare_input",
    "read_weights", "safe_load", "select_bands", "set_trainable",
]
