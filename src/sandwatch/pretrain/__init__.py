"""Continued self-supervised pre-training on unlabelled river windows (``sandwatch pretrain``).

    from sandwatch.pretrain import load_pretrain_config, pretrain
    result = pretrain(load_pretrain_config("configs/pretrain-cpu.yaml", ["manifest=demo/manifest.yaml"]))
    result.weights   # RUN/checkpoints/pretrained.pth, the published layout: train's model.weights

Pieces: :mod:`.config` (typed config, published defaults), :mod:`.data` (windows inside the
river AOI, two views / seasonal pairs), :mod:`.moco` (MoCo v2/v3 for the SSL4EO-S12 ResNets),
:mod:`.mae` (masked autoencoding for the SatMAE group-channel ViT), :mod:`.mim` (SimMIM masked
image modelling for the ResNets), :mod:`.module` (shared
Lightning pieces, export of the published file), :mod:`.runner` (Trainer, resume, tracking).
"""

from sandwatch.pretrain.config import PretrainConfig, load_pretrain_config, pretrain_config


def pretrain(*args, **kwargs):
    """See :func:`sandwatch.pretrain.runner.pretrain` (imported lazily: it pulls in Lightning)."""
    from sandwatch.pretrain.runner import pretrain as _pretrain

    return _pretrain(*args, **kwargs)


__all__ = ["PretrainConfig", "load_pretrain_config", "pretrain", "pretrain_config"]
