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
from sandwatch.models.registry import MODELS, build_model, check_window, get_spec
from sandwatch.published import WINDOW_PX

FORMAT = "sandwatch-checkpoint/1"


@dataclass
class Checkpoint:
    arch: str
    band_spec: BandSpec
    state_dict: dict[str, torch.Tensor]
    options: dict[str, Any] = field(default_factory=dict)
    window: int = WINDOW_PX
    threshold: float = 0.5
    temperature: float = 1.0   #: probability = sigmoid(logit / temperature), fitted on validation data
    metadata: dict[str, Any] = field(default_factory=dict)
    #: the file it was loaded from ("" when built in memory); not saved
    path: str = field(default="", compare=False)

    def __post_init__(self):
        self.temperature = check_temperature(self.temperature, "checkpoint")

    @property
    def n_parameters(self) -> int:
        """Number of parameter values in the weights (batch-norm running statistics left out)."""
        buffers = ("running_mean", "running_var", "num_batches_tracked")
        return int(sum(v.numel() for k, v in self.state_dict.items() if hasattr(v, "numel") and not k.endswith(buffers)))

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
        """A checkpoint from its stored dict, every field checked (see :func:`validate_fields`):
        a crafted or damaged file fails here with one line naming the file and the field, before
        any model is built or any memory allocated."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            fmt = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise SandwatchError.about(source, f"is not a sandwatch checkpoint (format {fmt!r})",
                                       "pass a file written by `sandwatch train` (use `sandwatch models inspect` for pretrained weights)")
        fields = validate_fields(d, source)
        ckpt = cls(**fields)
        check_weights(ckpt, source)
        return ckpt

    @classmethod
    def from_model(cls, model: torch.nn.Module, *, window: int | None = None, threshold: float = 0.5,
                   temperature: float = 1.0, band_spec: BandSpec | None = None,
                   metadata: dict[str, Any] | None = None) -> "Checkpoint":
        """A checkpoint describing ``model`` as built by :func:`sandwatch.models.build_model`
        (its ``arch``, ``options`` and ``band_spec``); ``band_spec`` overrides the normalisation
        (e.g. statistics measured on the training scenes), ``window`` defaults to the registry's."""
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
        """Read a sandwatch checkpoint or a Lightning checkpoint written by ``sandwatch train``,
        validated (:meth:`from_dict`)."""
        path = Path(path)
        d = read_checkpoint_file(path)
        if "sandwatch" in d and isinstance(d["sandwatch"], dict):  # Lightning checkpoint
            d = d["sandwatch"]
        ckpt = cls.from_dict(d, source=path)
        ckpt.path = str(path.resolve())
        return ckpt

    def build_model(self, device: str | torch.device = "cpu") -> torch.nn.Module:
        """The model with these weights, in eval mode, on ``device``."""
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


# ---- reading and validating ---------------------------------------------------------------------
#: Windows outside this range are refused on load: 32 is the smallest the models take, and a
#: window larger than 2048 px (20 km) is not a sliding window any more but a crafted number.
MIN_WINDOW, MAX_WINDOW = 32, 2048
_FIX = "pass a file written by `sandwatch train` (or re-export it)"


def read_checkpoint_file(path: Path) -> dict:
    """``torch.load(weights_only=True)`` of a checkpoint file, every failure one line: missing,
    empty, truncated, not a torch file, or holding Python objects (which could run code)."""
    import pickle
    import zipfile

    if not path.is_file():
        raise SandwatchError.about(path, "no such checkpoint file", "check the path")
    size = path.stat().st_size
    if size == 0:
        raise SandwatchError.about(path, "is empty (0 bytes): its writer was killed or the disk was full",
                                   "use another checkpoint (best.pt, last.pt) or train again")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as fh:
            head = fh.read(4)
        what = ("is truncated (a torch checkpoint whose end is missing)" if head.startswith(b"PK")
                else "is not a torch checkpoint (no zip archive inside)")
        raise SandwatchError.about(path, f"{what}, {size} bytes", "use another checkpoint or train again")
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        import re

        found = re.search(r"(?:unsupported GLOBAL|Unsupported global:\s*GLOBAL)\s+([\w.]+)", str(err), re.IGNORECASE)
        detail = f"it asks for {found.group(1)}" if found else "not tensors and plain data"
        raise SandwatchError.about(path, f"holds Python objects a checkpoint must not hold ({detail}); refused "
                                   "without running them", _FIX) from None
    except Exception as err:  # noqa: BLE001 - any other unpickling failure is a bad file for the user
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SandwatchError.about(path, f"cannot be read as a checkpoint ({first[:200]})", _FIX) from None
    if not isinstance(d, dict):
        raise SandwatchError.about(path, f"is not a sandwatch checkpoint (it holds a {type(d).__name__})", _FIX)
    return d


def _field_error(source, field_name: str, problem: str, fix: str = _FIX) -> SandwatchError:
    return SandwatchError.about(source, f"field '{field_name}' {problem}", fix)


def _finite(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)  # numpy / tensor scalars
        except (TypeError, ValueError):
            return None
    value = float(value)
    return value if math.isfinite(value) else None


def validate_fields(d: dict[str, Any], source: object = "checkpoint") -> dict[str, Any]:
    """The constructor arguments of a :class:`Checkpoint` from its stored dict, each field
    checked against what the architecture accepts; a one-line error naming ``source`` and the
    field otherwise. Shapes of the weights are checked by :func:`check_weights`."""
    from sandwatch.bands import canonical_band

    arch = d.get("arch")
    if not isinstance(arch, str) or arch.strip().lower() not in MODELS:
        raise _field_error(source, "arch", f"is {arch!r}, not a known architecture ({', '.join(MODELS)})")
    spec = MODELS[arch.strip().lower()]

    bands = d.get("bands")
    if not isinstance(bands, (list, tuple)) or not bands or not all(isinstance(b, str) for b in bands):
        raise _field_error(source, "bands", f"is {str(bands)[:80]}, not a list of band names")
    unknown = [b for b in bands if canonical_band(b) != b or b == "SCL"]
    if unknown:
        raise _field_error(source, "bands", f"holds unknown band name(s) {', '.join(map(repr, unknown[:3]))}")
    if len(set(bands)) != len(bands):
        raise _field_error(source, "bands", f"repeats a band ({','.join(bands)})")
    if spec.fixed_bands and tuple(bands) != spec.default_bands:
        raise _field_error(source, "bands", f"must be {','.join(spec.default_bands)} for {spec.name}")

    norm = d.get("normalization")
    if not isinstance(norm, dict):
        raise _field_error(source, "normalization", f"is {type(norm).__name__}, not a mapping with low and high")
    for key in ("low", "high"):
        vals = norm.get(key)
        if not isinstance(vals, (list, tuple)) or len(vals) != len(bands):
            n = len(vals) if isinstance(vals, (list, tuple)) else "no"
            raise _field_error(source, f"normalization.{key}", f"has {n} values for {len(bands)} bands")
        if any(_finite(v) is None for v in vals):
            raise _field_error(source, f"normalization.{key}", "holds a value that is not a finite number")
    k = _finite(norm.get("per_scene_k", 0.0))
    if k is None or k < 0:
        raise _field_error(source, "normalization.per_scene_k", f"is {norm.get('per_scene_k')!r}, not a number >= 0")
    normalization = Normalization(tuple(float(v) for v in norm["low"]), tuple(float(v) for v in norm["high"]),
                                  bool(norm.get("clip", True)), k)

    window = d.get("window", WINDOW_PX)
    if isinstance(window, bool) or not isinstance(window, (int, float)) or _finite(window) is None \
            or float(window) != int(window):
        raise _field_error(source, "window", f"is {window!r}, not a whole number of pixels")
    window = int(window)
    if not MIN_WINDOW <= window <= MAX_WINDOW:
        raise _field_error(source, "window", f"is {window} px, outside {MIN_WINDOW}..{MAX_WINDOW}")
    if window % spec.window_multiple:
        raise _field_error(source, "window", f"is {window} px, not a multiple of {spec.window_multiple} as "
                           f"{spec.name} needs")

    threshold = _finite(d.get("threshold", 0.5))
    if threshold is None or not 0.0 <= threshold <= 1.0:
        raise _field_error(source, "threshold", f"is {d.get('threshold')!r}, not a probability in 0..1")

    options = d.get("options") or {}
    if not isinstance(options, dict):
        raise _field_error(source, "options", f"is {type(options).__name__}, not a mapping")
    unknown_opts = sorted(set(map(str, options)) - set(spec.default_options))
    if unknown_opts:
        raise _field_error(source, "options", f"holds option(s) {', '.join(unknown_opts)} that {spec.name} does not "
                           f"take (it takes {', '.join(spec.default_options) or 'none'})")

    state = d.get("state_dict")
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise _field_error(source, "state_dict", "is missing or holds something other than tensors")
    metadata = d.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise _field_error(source, "metadata", f"is {type(metadata).__name__}, not a mapping")
    return {"arch": spec.name, "band_spec": BandSpec(tuple(bands), normalization), "state_dict": state,
            "options": dict(options), "window": window, "threshold": threshold,
            "temperature": check_temperature(d.get("temperature", 1.0), source), "metadata": dict(metadata)}


def check_resume_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """The Lightning ``last.ckpt`` a ``train --resume`` continues, read safely
    (``weights_only=True``) and validated before Lightning touches it: a damaged, crafted or
    foreign file is one line naming it, not a traceback from inside the trainer."""
    path = Path(path)
    d = read_checkpoint_file(path)
    if not isinstance(d.get("sandwatch"), dict) or not isinstance(d.get("state_dict"), dict) or "epoch" not in d:
        raise SandwatchError.about(path, "is not a Lightning checkpoint written by `sandwatch train`",
                                   "restore the run's own last.ckpt, or train again without --resume in a new run_dir")
    return Checkpoint.from_dict(d["sandwatch"], source=path)


def physical_memory_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def _meta_model(ckpt: "Checkpoint", source):
    try:
        with torch.device("meta"):
            return build_model(ckpt.arch, bands=ckpt.bands, **ckpt.options)
    except SandwatchError as err:
        raise _field_error(source, "options", f"are refused by {ckpt.arch} ({str(err).split(': ', 1)[-1][:160]})") from None
    except Exception as err:  # noqa: BLE001 - absurd option values
        raise _field_error(source, "options", f"cannot build {ckpt.arch} ({str(err).splitlines()[0][:160]})") from None


def activation_bytes(model: torch.nn.Module, n_bands: int, window: int, batch: int = 1) -> int:
    """Bytes of every layer output of one forward pass over ``batch`` windows, measured on the
    meta device (nothing allocated): what training keeps for the backward pass, an upper bound
    of what prediction needs at once."""
    total = 0

    def hook(_module, _inputs, output):
        nonlocal total
        for t in (output if isinstance(output, (tuple, list)) else [output]):
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            model.eval()(torch.empty(batch, n_bands, window, window, device="meta"))
    finally:
        for h in handles:
            h.remove()
    return total


def check_weights(ckpt: "Checkpoint", source: object = "checkpoint", *, memory_limit: int | None = None) -> None:
    """The weights fit the model that ``arch``, ``bands`` and ``options`` describe (built on the
    meta device: no memory, no time), and one window's forward pass fits in memory
    (``memory_limit``, default the machine's physical RAM). One line naming the field otherwise."""
    model = _meta_model(ckpt, source)
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in ckpt.state_dict.items()}
    missing = [k for k in want if k not in have]
    unexpected = [k for k in have if k not in want]
    if missing or unexpected:
        raise _field_error(source, "state_dict", f"does not hold the weights of {ckpt.arch} with these options "
                           f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    for key, shape in want.items():
        if have[key] != shape:
            first_weight = key
            n = len(ckpt.bands)
            if len(shape) > 1 and len(have[key]) == len(shape) and shape[1] == n and have[key][1] != n \
                    and have[key][0] == shape[0]:   # the input layer takes another number of bands
                hint = f"'bands' ({n} bands)"
            else:
                hint = f"'options' ({', '.join(f'{k}={v}' for k, v in ckpt.options.items()) or 'defaults'})"
            raise SandwatchError.about(
                source, f"field {hint} does not match the weights: {first_weight} is {list(have[key])} in the file, "
                f"{list(shape)} for these settings", _FIX)
    need = activation_bytes(model, len(ckpt.bands), ckpt.window)
    limit = memory_limit if memory_limit is not None else physical_memory_bytes()
    if limit and need > limit:
        raise _field_error(source, "window", f"is {ckpt.window} px: one window of {ckpt.arch} needs about "
                           f"{need / 2**30:.1f} GiB, more than this machine's {limit / 2**30:.1f} GiB",
                           "use a checkpoint with a smaller window")


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
