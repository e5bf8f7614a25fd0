"""``PredictConfig``: how a scene is predicted, in one typed object beside ``TrainConfig``.

``predict_scene``, ``predict_scenes``, ``submit_scene_bands``, ``monitor`` and ``evaluate``
take it (or its fields as keywords, which override it); the CLI builds it from its options.
Defaults are the published method's (:mod:`sandwatch.published`). Loadable from YAML::

    edge: 30
    batch_size: 8
    tta: true

What a run predicts (the scene, its AOI, the output folder and name) is not configuration and
stays an argument.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from sandwatch.errors import SandwatchError
from sandwatch.io import read_yaml_mapping
from sandwatch.predict.tiling import BLENDS
from sandwatch.predict.writer import PROB_DTYPES
from sandwatch.published import AOI_BUFFER_M, EDGE_PX


@dataclass(frozen=True)
class PredictConfig:
    """How to predict. Each invalid field is a one-line error naming its CLI option.

    * ``edge``: pixels discarded at each side of a window (stride ``window - 2 edge``);
    * ``threshold``: mask threshold (None: the checkpoint's, fitted on validation);
    * ``batch_size``: windows per forward pass; ``blend``: ``none`` or ``cosine`` overlap;
    * ``dtype``: probability COG type, ``uint8`` (1 + 254 p, nodata 0) or ``float32`` (NaN);
    * ``overwrite``: recompute scenes whose outputs exist; ``wait``: wait for another run
      of the same scene (False: refuse in one line);
    * ``device``, ``bf16``: where and in which precision the model runs;
    * ``aoi_buffer_m``: buffer around river vectors passed as the AOI;
    * ``tta``: average the 8 rotations/flips of every batch (8x the forward time);
    * ``strip_windows``, ``gdal_cache_mb``: memory (rows of windows read at once; GDAL cache);
    * ``progress``: progress bars.
    """

    edge: int = EDGE_PX
    threshold: float | None = None
    batch_size: int = 8
    blend: str = "none"
    dtype: str = "uint8"
    overwrite: bool = False
    wait: bool = True
    device: str | None = None
    bf16: bool = False
    aoi_buffer_m: float = AOI_BUFFER_M
    tta: bool = False
    strip_windows: int = 8
    gdal_cache_mb: int | None = 32
    progress: bool = True

    def __post_init__(self):
        if self.dtype not in PROB_DTYPES:
            raise SandwatchError.about("--dtype", f"unknown probability type {self.dtype!r}",
                                       f"use one of {', '.join(PROB_DTYPES)}")
        if self.blend not in BLENDS:
            raise SandwatchError.about("--blend", f"unknown blend {self.blend!r}", f"use one of {', '.join(BLENDS)}")
        if self.batch_size < 1:
            raise SandwatchError.about("--batch-size", f"{self.batch_size} is not a batch size", "use 1 or more")
        if self.threshold is not None and not 0.0 <= float(self.threshold) <= 1.0:
            raise SandwatchError.about("--threshold", f"{self.threshold} is not a probability",
                                       "use a value between 0 and 1")
        if self.edge < 0:
            raise SandwatchError.about("--edge", f"{self.edge} is not a number of pixels", "use 0 or more")
        if self.aoi_buffer_m < 0:
            raise SandwatchError.about("--aoi-buffer", f"{self.aoi_buffer_m} is negative", "use 0 or more metres")
        if self.strip_windows < 1:
            raise SandwatchError.about("strip_windows", f"{self.strip_windows} must be at least 1", "use 1 or more")

    def replace(self, **changes) -> PredictConfig:
        """A copy with ``changes`` (unknown names are a one-line error)."""
        if not changes:
            return self
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise SandwatchError.about("predict", f"unknown setting {unknown[0]!r}", f"use one of {', '.join(sorted(known))}")
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, **changes) -> PredictConfig:
        """Settings from a YAML mapping, then ``changes``."""
        data = read_yaml_mapping(path, what="predict config")
        return cls().replace(**data).replace(**changes)

def predict_config(config: PredictConfig | None = None, **changes) -> PredictConfig:
    """``config`` (default: the published settings) with ``changes`` applied."""
    return (config or PredictConfig()).replace(**changes)
