"""``Checkpoint``: everything ``predict``, ``evaluate`` and ``monitor`` need, in one file.

A checkpoint carries the weights *and* the description of the model: architecture name and
options, the bands it takes (by name, in order) with their normalisation, the window size,
the decision threshold and the temperature that calibrates the logits. It is stored with
:func:`torch.save` as a dict of plain Python types and tensors only, so it loads with
``torch.load(weights_only=True)``::

    {"format": "sandwatch-checkpoint/1", "arch": "unet", "options": {...},
     "bands": ["B02", ...], "normalization": {"low": [...], "high": [...], "clip": true},
     "window": 160, "threshold": 0.5, "temperature": 1.0, "state_dict": {...}, "metadata": {...}}

Probability is ``sigmoid(logit / temperature)``; the mask is ``probability >= threshold``.
Training fits both on validation data, so every stage that predicts with a checkpoint must
apply both. Files written before ``temperature`` existed load with 1.0 (plain sigmoid).

A Lightning training checkpoint (``*.ckpt``) written by ``sandwatch train`` holds the same
dict under the key ``"sandwatch"`` (with its ``state_dict`` taken from the Lightning module's
``model.`` entries), so :meth:`Checkpoint.load` reads both.
"""

from __future__ import annotations

import errno
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sandwatch.bands import BandSpec, Normalization
from sandwatch.errors import SandwatchError
from sandwatch.io import atomic_output

FORMAT = "sandwatch-checkpoint/1"


@dataclass
class Checkpoint:
    arch: str
    band_spec: BandSpec
    state_dict: dict[str, torch.Tensor]
    options: dict[str, Any] = field(default_factory=dict)
    window: int = 160
    threshold: float = 0.5
    temperature: float = 1.0   #: probability = sigmoid(logit / temperature), fitted on validation data
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.temperature = check_temperature(self.temperature, "checkpoint")

    @property
    def bands(self) -> tuple[str, ...]:
        return self.band_spec.bands

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "arch": self.arch,
            "options": dict(self.options),
            "bands": list(self.band_spec.bands),
            "normalization": self.band_spec.normalization.to_dict(),
            "window": int(self.window),
            "threshold": float(self.threshold),
            "temperature": float(self.temperature),
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict.items()},
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: object = "checkpoint") -> "Checkpoint":
        if d.get("format") != FORMAT:
            raise SandwatchError.about(source, f"is not a sandwatch checkpoint (format {d.get('format')!r})",
                                       "pass a file written by `sandwatch train` (use `sandwatch models inspect` for pretrained weights)")
        return cls(
            arch=d["arch"],
            band_spec=BandSpec(tuple(d["bands"]), Normalization.from_dict(d["normalization"])),
            state_dict=d["state_dict"],
            options=dict(d.get("options") or {}),
            window=int(d.get("window", 160)),
            threshold=float(d.get("threshold", 0.5)),
            # before the file-less check of __post_init__, so the message names the file
            temperature=check_temperature(d.get("temperature", 1.0), source),
            metadata=dict(d.get("metadata") or {}),
        )

    @classmethod
    def from_model(cls, model: torch.nn.Module, *, window: int | None = None, threshold: float = 0.5,
                   temperature: float = 1.0, band_spec: BandSpec | None = None,
                   metadata: dict[str, Any] | None = None) -> "Checkpoint":
        """A checkpoint describing ``model`` as built by :func:`sandwatch.models.build_model`
        (its ``arch``, ``options`` and ``band_spec``); ``band_spec`` overrides the normalisation
        (e.g. statistics measured on the training scenes), ``window`` defaults to the registry's."""
        from sandwatch.models.registry import check_window, get_spec

        arch = getattr(model, "arch", "")
        spec = get_spec(arch)
        band_spec = band_spec or model.band_spec
        if tuple(band_spec.bands) != tuple(model.band_spec.bands):
            raise ValueError(f"band_spec bands {band_spec.bands} differ from the model's {model.band_spec.bands}")
        return cls(arch=spec.name, band_spec=band_spec,
                   state_dict={k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                   options=dict(getattr(model, "options", {}) or {}),
                   window=check_window(spec.name, window or spec.default_window),
                   threshold=float(threshold), temperature=temperature, metadata=dict(metadata or {}))

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (temporary name, then rename)."""
        path = Path(path)
        with atomic_output(path) as tmp:
            try:
                torch.save(self.to_dict(), tmp)
            except RuntimeError as err:  # torch reports a failed write as "unexpected pos ..."
                first = (str(err).strip().splitlines() or ["RuntimeError"])[0]
                raise OSError(errno.EIO, f"torch.save could not write ({first[:120]})", str(tmp)) from err
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Checkpoint":
        """Read a sandwatch checkpoint or a Lightning checkpoint written by ``sandwatch train``."""
        path = Path(path)
        if not path.is_file():
            raise SandwatchError.about(path, "no such checkpoint file", "check the path")
        try:
            d = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file for the user
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise SandwatchError.about(path, f"cannot be read as a checkpoint ({first[:200]})",
                                       "pass a file written by `sandwatch train`") from None
        if not isinstance(d, dict):
            raise SandwatchError.about(path, "is not a sandwatch checkpoint", "pass a file written by `sandwatch train`")
        if "sandwatch" in d and isinstance(d["sandwatch"], dict):  # Lightning checkpoint
            d = d["sandwatch"]
        return cls.from_dict(d, source=path)

    def build_model(self, device: str | torch.device = "cpu") -> torch.nn.Module:
        """The model with these weights, in eval mode, on ``device``."""
        from sandwatch.models.registry import build_model

        model = build_model(self.arch, bands=self.bands, **self.options)
        missing, unexpected = model.load_state_dict(self.state_dict, strict=False)
        if missing or unexpected:
            raise SandwatchError(
                f"checkpoint for {self.arch} does not match the model: missing {list(missing)[:5]}, "
                f"unexpected {list(unexpected)[:5]}; the checkpoint was written by another version, retrain or convert it")
        return model.to(device).eval()

    def normalize(self, x):
        """Reflectance (C, H, W) or (N, C, H, W), bands in :attr:`bands` order -> model input."""
        return self.band_spec.normalization(x)


def check_temperature(value: Any, source: object = "checkpoint") -> float:
    """``value`` as a float when it is a usable temperature (finite, > 0), else a one-line
    :class:`SandwatchError` naming ``source``: logits are divided by it, so 0, a negative or
    a NaN would silently turn every probability into 0, 0.5 or 1."""
    try:
        t = float(value)
    except (TypeError, ValueError):
        t = math.nan
    if not math.isfinite(t) or t <= 0:
        raise SandwatchError.about(source, f"field 'temperature' is {value!r}, not a positive finite number",
                                   "re-export the checkpoint with a temperature > 0 (1.0 = no calibration)")
    return t
