"""The model zoo: architectures, their bands and normalisations, pretrained weights, checkpoints.

::

    from sandwatch.models import MODELS, build_model, default_band_spec, set_trainable
    model = build_model("ssl4eo-resnet18", weights="B13_rn18_moco_0099_ckpt.pth")  # encoder frozen
    logits = model(x)                      # (N, 13, H, W) normalised -> (N, 1, H, W)
    feats = model.encoder(x)               # list of tensors (cacheable when frozen)
    logits = model.decoder_forward(feats, x.shape[-2:])
    set_trainable(model, frozen=False)     # fine-tune the encoder too

The architectures are listed by ``sandwatch models`` (:data:`MODELS`). Each family module
(:mod:`~sandwatch.models.unet`, :mod:`~sandwatch.models.resnet_unet`,
:mod:`~sandwatch.models.satmae`) declares its own :class:`ModelSpec` and weight layouts
(:mod:`sandwatch.models.spec`); :mod:`sandwatch.models.zoo` collects them with one
:func:`register` line per family. See :mod:`sandwatch.models.registry` (building by name),
:mod:`sandwatch.models.weights` (reading weight files) and :mod:`sandwatch.models.base`
(encoder/decoder split, freezing).

Imports within the package go one way: base, spec -> families -> zoo -> weights -> registry
-> checkpoint.
"""

import importlib

# Exports resolve on first use (PEP 562), so a light submodule (``listing``) can be imported
# without torch; ``from sandwatch.models import build_model`` works as before.
_EXPORTS = {
    "base": ("SegmentationModel", "count_parameters", "set_trainable"),
    "checkpoint": ("Checkpoint",),
    "registry": ("Inspection", "build_model", "check_window", "default_band_spec", "inspect_weights",
                 "parameter_table", "prepare_input", "select_bands"),
    "spec": ("FileFacts", "ModelSpec", "WeightLayout", "channelwise_normalization", "native_range"),
    "weights": ("LoadReport", "WeightsFile", "detect_layout", "load_pretrained", "read_weights", "safe_load"),
    "zoo": ("LAYOUTS", "MODELS", "get_spec", "register", "unregister"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"sandwatch.models.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'sandwatch.models' has no attribute {name!r}")


__all__ = [
    "LAYOUTS",
    "MODELS",
    "Checkpoint",
    "FileFacts",
    "Inspection",
    "LoadReport",
    "ModelSpec",
    "SegmentationModel",
    "WeightLayout",
    "WeightsFile",
    "build_model",
    "channelwise_normalization",
    "check_window",
    "count_parameters",
    "default_band_spec",
    "detect_layout",
    "get_spec",
    "inspect_weights",
    "load_pretrained",
    "parameter_table",
    "prepare_input",
    "read_weights",
    "native_range",
    "register",
    "safe_load",
    "select_bands",
    "set_trainable",
    "unregister",
]
