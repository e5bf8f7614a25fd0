"""Pretrained encoder weights from local files, in the three published layouts.

=================  ==========================================================================
layout             what the file holds
=================  ==========================================================================
``ssl4eo-moco``    original SSL4EO-S12 MoCo checkpoint (``B13_rn50_moco_0099.pth``):
                   ``ckpt["state_dict"]`` with keys ``module.encoder_q.<torchvision key>``;
                   ``module.encoder_q.fc.*`` (projection head), ``module.encoder_k.*`` (momentum
                   encoder) and ``queue*`` are ignored.
``timm``           torchgeo / timm / torchvision plain ResNet state dict (``conv1.weight``,
                   ``bn1.*``, ``layer1.0.conv1.weight`` ...); ``fc.*`` is ignored.
``satmae``         Spectral SatMAE (``pretrain-vit-large-e199.pth``): ``ckpt["model"]`` with the
                   group-channel ViT keys; pretraining extras ``decoder_*``, ``mask_token`` (and
                   a fine-tuning ``head``/``fc_norm``) are ignored. The file's ``args`` is an
                   ``argparse.Namespace``: the only class allow-listed for unpickling.
``sandwatch``      a checkpoint written by ``sandwatch train`` (see :class:`Checkpoint`).
=================  ==========================================================================

Files are always read with ``torch.load(weights_only=True)``; a file that needs anything else
(arbitrary classes or functions) is refused before any of it runs.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sandwatch.bands import L1C_BANDS, L2A_BANDS
from sandwatch.errors import SandwatchError

LAYOUTS = ("ssl4eo-moco", "timm", "satmae", "sandwatch")
#: classes a published weight file may need besides tensors and plain containers
SAFE_GLOBALS = [argparse.Namespace]

_MOCO_PREFIX = "module.encoder_q."
_IGNORED = {
    "ssl4eo-moco": re.compile(r"^(module\.encoder_q\.fc\.|module\.encoder_k\.|(module\.)?queue)"),
    "timm": re.compile(r"^fc\."),
    "satmae": re.compile(r"^(decoder_|mask_token|head\.|fc_norm\.)"),
    "sandwatch": re.compile(r"^$a"),
}
#: band names of a ResNet file by its input channel count (torchgeo RGB weights are B04 B03 B02)
_RESNET_BANDS = {13: L1C_BANDS, 12: L2A_BANDS, 3: ("B04", "B03", "B02")}


@dataclass
class WeightsFile:
    """A weight file read safely and recognised."""

    path: Path
    layout: str
    arch: str | None                  # registry name that matches, None if unrecognised
    n_bands: int | None
    bands: tuple[str, ...] | None     # the band names the file implies, when known
    state_dict: dict[str, torch.Tensor]   # encoder keys (prefixes stripped, extras removed)
    ignored: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)  # architecture options the file implies
    info: dict[str, Any] = field(default_factory=dict)      # epoch, args ... for display


@dataclass
class LoadReport:
    """What happened when a state dict met a model."""

    loaded: list[str]
    missing: list[str]
    unexpected: list[str]
    mismatched: list[str]            # "key: file (shape) vs model (shape)"
    ignored: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def problem(self, limit: int = 6) -> str:
        def show(name, keys):
            if not keys:
                return None
            more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
            return f"{len(keys)} {name} [{', '.join(keys[:limit])}{more}]"
        parts = [p for p in (show("missing", self.missing), show("unexpected", self.unexpected),
                             show("wrong-shape", self.mismatched)) if p]
        return "; ".join(parts)


def safe_load(path: str | os.PathLike) -> Any:
    """``torch.load(weights_only=True)`` allowing only :data:`SAFE_GLOBALS`; a clear error
    (and nothing run) for a file that needs unsafe unpickling."""
    path = Path(path)
    if not path.is_file():
        raise SandwatchError.about(path, "no such weights file", "check the path")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        text = str(err)
        found = re.search(r"GLOBAL ([\w.]+)", text)
        if found or "Weights only load failed" in text:
            what = found.group(1) if found else "an object that is not a tensor"
            raise SandwatchError.about(
                path, f"needs unsafe unpickling ({what}); refused, nothing in it was run",
                "get the weights as a plain state dict (torch.save(model.state_dict())) from a source you trust") from None
        first = text.strip().splitlines()[0][:200] if text.strip() else type(err).__name__
        raise SandwatchError.about(path, f"is not a readable PyTorch file ({first})",
                                   "check that the download is complete") from None


def _is_tensor_dict(d: Any) -> bool:
    return isinstance(d, dict) and bool(d) and all(isinstance(k, str) for k in d) and \
        sum(isinstance(v, torch.Tensor) for v in d.values()) >= max(1, len(d) // 2)


def detect_layout(obj: Any) -> str | None:
    """Which of :data:`LAYOUTS` a loaded file follows, None if none."""
    if not isinstance(obj, dict):
        return None
    if obj.get("format", "").startswith("sandwatch-checkpoint") if isinstance(obj.get("format"), str) else False:
        return "sandwatch"
    if isinstance(obj.get("sandwatch"), dict):
        return "sandwatch"
    if _is_tensor_dict(obj.get("model")) and any(k.startswith("patch_embed.") for k in obj["model"]):
        return "satmae"
    if _is_tensor_dict(obj.get("state_dict")) and any(k.startswith(_MOCO_PREFIX) for k in obj["state_dict"]):
        return "ssl4eo-moco"
    if _is_tensor_dict(obj):
        if "conv1.weight" in obj:
            return "timm"
        if any(k.startswith("patch_embed.") for k in obj) and "channel_embed" in obj:
            return "satmae"  # a bare SatMAE state dict
    return None


def _split_ignored(sd: dict[str, torch.Tensor], layout: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    pattern = _IGNORED[layout]
    keep, ignored = {}, []
    for k, v in sd.items():
        (ignored.append(k) if pattern.search(k) else keep.__setitem__(k, v))
    return keep, ignored


def _resnet_arch(sd: dict[str, torch.Tensor]) -> str | None:
    blocks = {int(m.group(1)) for k in sd if (m := re.match(r"layer3\.(\d+)\.", k))}
    bottleneck = any(k.startswith("layer1.0.conv3.") for k in sd)
    if bottleneck and len(blocks) == 6:
        return "ssl4eo-resnet50"
    if not bottleneck and len(blocks) == 2:
        return "ssl4eo-resnet18"
    return None


def read_weights(path: str | os.PathLike) -> WeightsFile:
    """Read a weight file safely, recognise its layout, architecture and bands, and return the
    encoder state dict with the layout's prefixes stripped and its extras set aside."""
    path = Path(path)
    obj = safe_load(path)
    layout = detect_layout(obj)
    if layout is None:
        keys = list(obj)[:5] if isinstance(obj, dict) else type(obj).__name__
        raise SandwatchError.about(
            path, f"is not a known weights layout (top-level: {keys})",
            "use an SSL4EO-S12 MoCo checkpoint, a torchgeo/timm ResNet state dict or a Spectral SatMAE checkpoint")
    info: dict[str, Any] = {}
    options: dict[str, Any] = {}
    if layout == "sandwatch":
        d = obj["sandwatch"] if "sandwatch" in obj else obj
        bands = tuple(d.get("bands", ()))
        return WeightsFile(path, layout, d.get("arch"), len(bands), bands, dict(d.get("state_dict", {})),
                           options=dict(d.get("options") or {}),
                           info={k: d.get(k) for k in ("window", "threshold")})
    if layout == "ssl4eo-moco":
        raw = obj["state_dict"]
        sd, ignored = _split_ignored(raw, layout)
        sd = {k[len(_MOCO_PREFIX):] if k.startswith(_MOCO_PREFIX) else k: v for k, v in sd.items()}
        info = {k: obj[k] for k in ("epoch", "arch") if k in obj}
    elif layout == "timm":
        sd, ignored = _split_ignored(obj, layout)
    else:  # satmae
        raw = obj["model"] if "model" in obj else obj
        sd, ignored = _split_ignored(raw, layout)
        if "epoch" in obj:
            info["epoch"] = obj["epoch"]
        if isinstance(obj.get("args"), argparse.Namespace):
            args = vars(obj["args"])
            info["args"] = {k: args[k] for k in ("model", "input_size", "patch_size", "grouped_bands") if k in args}
    if layout in ("ssl4eo-moco", "timm"):
        arch = _resnet_arch(sd)
        n = sd["conv1.weight"].shape[1] if "conv1.weight" in sd and sd["conv1.weight"].ndim == 4 else None
        bands = _RESNET_BANDS.get(n) if n else None
    else:
        embeds = sorted(k for k in sd if re.fullmatch(r"patch_embed\.\d+\.proj\.weight", k))
        n = sum(int(sd[k].shape[1]) for k in embeds) or None
        bands = None
        arch = None
        if embeds:
            dim, _, patch, _ = sd[embeds[0]].shape
            depth = len({int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))})
            arch = "satmae-large" if dim >= 1024 else "satmae-base"
            from sandwatch.models.satmae import SATMAE_BANDS, SATMAE_SIZES

            size = SATMAE_SIZES["large" if arch == "satmae-large" else "base"]
            if (dim, depth) != (size["embed_dim"], size["depth"]):  # a non-standard size: say so in options
                heads = next(h for h in (size["num_heads"], 16, 12, 8, 4, 2, 1) if dim % h == 0)
                options.update(embed_dim=int(dim), depth=int(depth), num_heads=int(heads))
            if "channel_embed" in sd and sd["channel_embed"].shape[-1] != 256:
                options["channel_embed"] = int(sd["channel_embed"].shape[-1])
            if patch != 8:
                options["patch_size"] = int(patch)
            if "pos_embed" in sd:  # keep the file's grid: the model interpolates at run time
                grid = int(round((sd["pos_embed"].shape[1] - 1) ** 0.5))
                if grid * int(patch) != 96:
                    options["img_size"] = grid * int(patch)
            bands = SATMAE_BANDS if n == len(SATMAE_BANDS) else None
    return WeightsFile(path, layout, arch, int(n) if n else None, bands, sd, ignored, options, info)


def compare_state_dict(module: torch.nn.Module, sd: dict[str, torch.Tensor], ignored: list[str] | None = None) -> LoadReport:
    """Keys and shapes of ``sd`` against ``module`` (no copying; works on meta modules)."""
    own = module.state_dict()
    loaded, mismatched = [], []
    for k, v in sd.items():
        if k in own:
            if tuple(own[k].shape) == tuple(v.shape):
                loaded.append(k)
            else:
                mismatched.append(f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}")
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    return LoadReport(loaded, missing, unexpected, mismatched, list(ignored or []))


def load_pretrained(model, weights: str | os.PathLike | WeightsFile, *, strict: bool = True,
                    assign: bool = False) -> LoadReport:
    """Load a pretrained weights file into ``model.encoder`` (a sandwatch checkpoint: into the
    whole model). Raises :class:`SandwatchError` listing missing, unexpected and wrong-shape
    keys when they do not match (``strict=False``: loads what matches and returns the report).
    The encoder is not frozen here: :func:`build_model` with ``weights=`` does that."""
    wf = weights if isinstance(weights, WeightsFile) else read_weights(weights)
    arch = getattr(model, "arch", "")
    if wf.layout == "sandwatch":
        target = model
    else:
        from sandwatch.models.registry import MODELS

        spec = MODELS.get(arch)
        if spec is not None and wf.layout not in spec.weight_layouts:
            raise SandwatchError.about(
                wf.path, f"holds {wf.layout} weights{f' for {wf.arch}' if wf.arch else ''}, which {arch} cannot take",
                f"use --arch {wf.arch}" if wf.arch else f"{arch} loads {', '.join(spec.weight_layouts) or 'no pretrained weights'}")
        target = model.encoder
    sd = wf.state_dict
    sd = _fit_pos_embed(target, sd)
    report = compare_state_dict(target, sd, wf.ignored)
    if strict and not report.ok:
        hint = f"this file looks like {wf.arch} ({wf.n_bands} bands)" if wf.arch else "check the architecture"
        raise SandwatchError.about(wf.path, f"does not fit {arch or 'the model'}: {report.problem()}",
                                   f"{hint}; run `sandwatch models inspect {wf.path}`")
    usable = {k: sd[k] for k in report.loaded}
    target.load_state_dict(usable, strict=False, assign=assign)
    return report


def _fit_pos_embed(target, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A SatMAE ``pos_embed`` for another grid is resampled to the model's stored grid."""
    own = getattr(target, "pos_embed", None)
    pe = sd.get("pos_embed")
    if own is None or pe is None or pe.ndim != 3 or own.shape == pe.shape or own.shape[-1] != pe.shape[-1]:
        return sd
    from timm.layers import resample_abs_pos_embed

    old = int(round((pe.shape[1] - 1) ** 0.5))
    new = int(round((own.shape[1] - 1) ** 0.5))
    if old * old + 1 != pe.shape[1] or new * new + 1 != own.shape[1]:
        return sd
    out = dict(sd)
    out["pos_embed"] = resample_abs_pos_embed(pe.float(), [new, new], [old, old], num_prefix_tokens=1)
    return out


@dataclass
class Inspection:
    weights: WeightsFile
    arch: str
    bands: tuple[str, ...]
    report: LoadReport

    def to_dict(self) -> dict[str, Any]:
        r = self.report
        return {"path": str(self.weights.path), "layout": self.weights.layout, "arch": self.arch,
                "detected_arch": self.weights.arch, "n_bands": self.weights.n_bands, "bands": list(self.bands),
                "options": self.weights.options, "info": {k: str(v) for k, v in self.weights.info.items()},
                "ok": r.ok, "loaded": r.loaded, "missing": r.missing, "unexpected": r.unexpected,
                "mismatched": r.mismatched, "ignored": r.ignored}


def inspect_weights(path: str | os.PathLike, arch: str | None = None, bands=None) -> Inspection:
    """Recognise a weights file, build the matching model (on the meta device, so even
    ViT-large costs nothing) and load the file into it. Never raises for a key mismatch:
    the returned report says what would not load (``report.ok``)."""
    from sandwatch.models.registry import build_model, get_spec

    wf = read_weights(path)
    name = get_spec(arch).name if arch else wf.arch
    if name is None:
        raise SandwatchError.about(wf.path, f"is a {wf.layout} file of an architecture sandwatch does not know",
                                   "pass --arch NAME to try it against a model of the zoo")
    spec = get_spec(name)
    if bands is None:
        bands = wf.bands if (wf.bands and not spec.fixed_bands) else None
        if bands is None and wf.n_bands and wf.layout != "sandwatch" and not spec.fixed_bands \
                and wf.n_bands != len(spec.default_bands):
            bands = None  # unknown names for this count: the report shows the shape mismatch
    options = dict(wf.options) if (wf.arch == name) else {}
    options = {k: v for k, v in options.items() if k in spec.default_options}
    with torch.device("meta"):
        model = build_model(name, bands=bands, **options)
    report = load_pretrained(model, wf, strict=False, assign=True) if (wf.layout == "sandwatch" or wf.layout in spec.weight_layouts) \
        else compare_state_dict(model.encoder, wf.state_dict, wf.ignored)
    return Inspection(wf, name, tuple(model.band_spec.bands), report)
