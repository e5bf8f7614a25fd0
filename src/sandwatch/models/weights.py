"""Pretrained encoder weights from local files, in the layouts the model families declare.

Each family module declares the layouts it reads (:class:`sandwatch.models.spec.WeightLayout`:
how to recognise the file, which keys to set aside, which prefix to strip, what the file
implies); :data:`sandwatch.models.zoo.LAYOUTS` collects them and ``sandwatch models`` lists
them. One layout is the reader's own: ``sandwatch``, a checkpoint written by ``sandwatch train``
(see :class:`sandwatch.models.checkpoint.Checkpoint`), loaded into the whole model.

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

from sandwatch.errors import SandwatchError
from sandwatch.models.zoo import LAYOUTS, MODELS, SANDWATCH

SANDWATCH_DESCRIPTION = "sandwatch checkpoint (written by sandwatch train)"
#: classes a published weight file may need besides tensors and plain containers
SAFE_GLOBALS = [argparse.Namespace]


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


def describe_layout(name: str) -> str:
    """One line saying what a file of layout ``name`` holds."""
    return SANDWATCH_DESCRIPTION if name == SANDWATCH else (LAYOUTS[name].description if name in LAYOUTS else "")


def detect_layout(obj: Any) -> str | None:
    """Which layout a loaded file follows (``sandwatch`` or one of
    :data:`sandwatch.models.zoo.LAYOUTS`, first match in registration order), None if none."""
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("format"), str) and obj["format"].startswith("sandwatch-checkpoint"):
        return SANDWATCH
    if isinstance(obj.get("sandwatch"), dict):
        return SANDWATCH
    return next((name for name, layout in LAYOUTS.items() if layout.recognise(obj)), None)


def read_weights(path: str | os.PathLike) -> WeightsFile:
    """Read a weight file safely, recognise its layout, architecture and bands, and return the
    encoder state dict with the layout's prefixes stripped and its extras set aside."""
    return parse_weights(safe_load(path), path)


def parse_weights(obj: Any, path: str | os.PathLike) -> WeightsFile:
    """:func:`read_weights` of a file already read by :func:`safe_load` (``path`` names it in
    messages), for a caller that needs the loaded object too (``sandwatch pretrain``)."""
    path = Path(path)
    layout = detect_layout(obj)
    if layout is None:
        keys = list(obj)[:5] if isinstance(obj, dict) else type(obj).__name__
        known = "; ".join(f"{lay.name}: {lay.description}" for lay in LAYOUTS.values())
        raise SandwatchError.about(path, f"is not a known weights layout (top-level: {keys})",
                                   f"use a file of a layout the zoo reads ({known})")
    if layout == SANDWATCH:
        d = obj.get("sandwatch", obj)
        bands = tuple(d.get("bands", ()))
        return WeightsFile(path, layout, d.get("arch"), len(bands), bands, dict(d.get("state_dict", {})),
                           options=dict(d.get("options") or {}),
                           info={k: d.get(k) for k in ("window", "threshold")})
    reader = LAYOUTS[layout]
    sd, ignored = reader.encoder_state(obj)
    facts = reader.facts(sd)
    return WeightsFile(path, layout, facts.arch, facts.n_bands, facts.bands, sd, ignored, dict(facts.options),
                       reader.info(obj))


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
    if wf.layout == SANDWATCH:
        target = model
    else:
        spec = MODELS.get(arch)
        if spec is not None and wf.layout not in spec.weight_layouts:
            raise SandwatchError.about(
                wf.path, f"holds {wf.layout} weights{f' for {wf.arch}' if wf.arch else ''}, which {arch} cannot take",
                f"use --arch {wf.arch}" if wf.arch else f"{arch} loads {', '.join(spec.weight_layouts) or 'no pretrained weights'}")
        target = model.encoder
    sd = LAYOUTS[wf.layout].fit(target, wf.state_dict) if wf.layout in LAYOUTS else wf.state_dict
    report = compare_state_dict(target, sd, wf.ignored)
    if strict and not report.ok:
        hint = f"this file looks like {wf.arch} ({wf.n_bands} bands)" if wf.arch else "check the architecture"
        raise SandwatchError.about(wf.path, f"does not fit {arch or 'the model'}: {report.problem()}",
                                   f"{hint}; run `sandwatch models inspect {wf.path}`")
    usable = {k: sd[k] for k in report.loaded}
    target.load_state_dict(usable, strict=False, assign=assign)
    return report
