"""The model as a batch function: ``TorchForward`` (a torch model, its calibration, D4 TTA on
the device), ``Predictor`` (bands, window, threshold, normalisation around a batch function),
``scene_normalized`` (per-scene statistics) and ``as_predictor`` (checkpoint -> Predictor)."""

from __future__ import annotations


import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sandwatch.predict.resume import checkpoint_fingerprint
from sandwatch.predict.tta import D4, tta_numpy


# ---- the model as a batch function ------------------------------------------------------------
class TorchForward:
    """Batch (N, C, H, W) -> probabilities ``sigmoid(logits / temperature)`` (N, H, W), timing
    the forward passes.

    The batch goes through ``normalize`` first when one is given (None: the batch is model
    input already, as :class:`Predictor` arranges it). ``temperature`` is the checkpoint's
    calibration (1.0: plain sigmoid). Calling the object predicts as is; :meth:`predict` with
    ``tta=True`` averages the 8 orientations of :data:`~sandwatch.predict.tta.D4`, all on the
    device (one model built once serves TTA and plain runs)."""

    def __init__(self, model, normalize: Callable[[np.ndarray], np.ndarray] | None = None, device=None,
                 bf16: bool = False, temperature: float = 1.0):
        import torch

        from sandwatch.models.checkpoint import check_temperature

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.normalize = normalize
        self.bf16 = bool(bf16)
        self.temperature = check_temperature(temperature, "temperature")
        self.seconds = 0.0
        self.calls = 0
        self.batch_sizes: list[int] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.predict(batch)

    def predict(self, batch: np.ndarray, *, tta: bool = False) -> np.ndarray:
        import torch

        if self.normalize is not None:
            batch = self.normalize(batch)
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        t0 = time.perf_counter()
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            if not tta:
                prob = self._prob(self.model(x))
            else:
                if x.shape[-1] != x.shape[-2]:
                    raise ValueError(f"test-time augmentation needs square windows, got {tuple(x.shape[-2:])}")
                prob = None
                # One orientation at a time: memory stays that of one batch. Same order and
                # float32 sum as tta_numpy, so both give the same mean.
                for k, flip in D4:
                    xt = x.flip(-1) if flip else x
                    p = self._prob(self.model(torch.rot90(xt, k, dims=(-2, -1)).contiguous()))
                    p = torch.rot90(p, -k, dims=(-2, -1))
                    p = p.flip(-1) if flip else p
                    prob = p if prob is None else prob + p
                prob = prob / float(len(D4))
        out = prob.cpu().numpy()
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        self.batch_sizes.append(int(x.shape[0]))
        return out

    def _prob(self, logits):
        """(N, 1, H, W) logits -> (N, H, W) float32 probabilities at the temperature."""
        import torch

        logits = logits.float()[:, 0]
        return torch.sigmoid(logits if self.temperature == 1.0 else logits / self.temperature)


def with_tta(forward: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """``forward`` averaged over the 8 rotations/flips of :data:`~sandwatch.predict.tta.D4`.

    A :class:`TorchForward` runs the 8 passes in torch on its device; any other batch function
    (hand-built :class:`Predictor`) is wrapped with :func:`~sandwatch.predict.tta.tta_numpy`."""
    if isinstance(forward, TorchForward):
        return lambda batch: forward.predict(batch, tta=True)
    return tta_numpy(forward)


@dataclass
class Predictor:
    """What prediction needs of a model: a batch function, the bands it reads, the window and
    the threshold. Built from a :class:`~sandwatch.models.checkpoint.Checkpoint`, or by hand
    (tests, custom models): ``forward`` maps (N, C, window, window) in ``bands`` order to
    probabilities (N, window, window). Its input is reflectance, passed through ``normalize``
    first when one is given; normalising happens in the thread that reads the scene, so it
    overlaps the model's work.

    ``temperature`` is the calibration ``forward`` already applies (probability =
    sigmoid(logit / temperature)); it is only recorded in the outputs' tags. ``from_checkpoint``
    takes it from the checkpoint and builds a ``forward`` that applies it.

    ``per_scene_k`` > 0: the model was trained with per-scene normalisation (each scene by its
    own ``[mean - k std, mean + k std]`` inside its AOI); :func:`predict_scene` measures every
    scene it predicts the same way (:func:`scene_normalized`) before the first window.

    ``fingerprint``: an identity of the model (``from_checkpoint``: a digest of the
    checkpoint's weights and settings). A killed prediction resumes only with the same
    fingerprint; None (a hand-built ``forward``) never resumes."""

    forward: Callable[[np.ndarray], np.ndarray]
    bands: tuple[str, ...]
    window: int
    threshold: float = 0.5
    name: str = "model"
    normalize: Callable[[np.ndarray], np.ndarray] | None = None
    temperature: float = 1.0
    per_scene_k: float = 0.0
    per_scene_region: str = "aoi"
    fingerprint: str | None = None
    #: where the model came from (the checkpoint file) and its size, recorded in the outputs' tags
    source: str = ""
    parameters: int | None = None

    @classmethod
    def from_checkpoint(cls, checkpoint, *, device=None, bf16: bool = False) -> "Predictor":
        from sandwatch.models.checkpoint import Checkpoint

        ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else Checkpoint.load(checkpoint)
        model = ckpt.build_model("cpu")
        fwd = TorchForward(model, device=device, bf16=bf16, temperature=ckpt.temperature)
        return cls(fwd, tuple(ckpt.bands), int(ckpt.window), float(ckpt.threshold), name=ckpt.arch,
                   normalize=ckpt.normalize, temperature=float(ckpt.temperature),
                   per_scene_k=float(ckpt.band_spec.normalization.per_scene_k),
                   per_scene_region=ckpt.band_spec.normalization.per_scene_region,
                   fingerprint=checkpoint_fingerprint(ckpt),
                   source=ckpt.path,
                   parameters=ckpt.n_parameters)


def scene_normalized(pred: Predictor, scene, geom, *, warn: bool = True) -> Predictor:
    """``pred`` with the normalisation of this scene, for a model trained with per-scene
    normalisation: the scene's own band statistics inside ``geom`` (its river AOI, the region
    training measured its scenes in; None: the whole scene, with a warning, because statistics
    of the whole scene differ from those of its river corridor)."""
    import dataclasses
    import warnings

    from sandwatch.scenestats import scene_normalization

    if pred.per_scene_region == "scene":
        geom = None          # the model measured its training scenes whole
    elif geom is None and warn:
        warnings.warn(f"{getattr(scene, 'source', 'scene')}: the model normalises each scene inside its river AOI; "
                      "no AOI given, so the whole scene is measured (pass --aoi FILE for the same statistics)",
                      stacklevel=3)
    bands = tuple(pred.bands)
    norm = scene_normalization(lambda w: scene.read(w, bands=bands), scene.grid, geom, k=pred.per_scene_k,
                               source=getattr(scene, "source", "scene"))
    return dataclasses.replace(pred, normalize=norm)


def as_predictor(checkpoint, *, device=None, bf16: bool = False) -> Predictor:
    if isinstance(checkpoint, Predictor):
        return checkpoint
    return Predictor.from_checkpoint(checkpoint, device=device, bf16=bf16)
