"""Which pixels of a scene were really observed: nodata, clouds, cirrus and cloud shadows.

Two tests, chosen by the scene's level:

* **L2A** (a scene with an SCL band): the scene classification says it. Not observed are the
  classes in :data:`SCL_NOT_OBSERVED`: 0 no data, 1 saturated/defective, 3 cloud shadow,
  8 cloud (medium probability), 9 cloud (high probability), 10 thin cirrus.
* **L1C** (top-of-atmosphere reflectance, no SCL): a documented per-pixel test in the spirit
  of Fmask's first pass (Zhu & Woodcock 2012), see :class:`L1CCloudTest`. A pixel is cloud when
  it is *bright* (B02 > 0.25: above dry river sand, whose top-of-atmosphere blue reaches about
  0.22), *hazy* (haze-optimised transform B02 - 0.5 B04 - 0.08 > 0; bright
  sand and soil are redder than blue and fail it) and *white* (mean absolute deviation of
  B02, B03, B04 from their mean below 0.7 of the mean), or **cirrus** when B10 > 0.012
  (where the scene has B10). Cloud shadows are *not* detected in L1C: their pixels count as
  observed (a documented limitation; use L2A scenes where shadows matter).

Other scenes (true-colour images, scenes without the needed bands) get no cloud test; only
their nodata is masked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sandwatch.grid import Window
from sandwatch.imagery.clouds import (BLUE_MIN, CIRRUS_MIN, HOT_OFFSET, WHITENESS_MAX, cloud_test_for, l1c_cloud,
                                      scl_not_clear)

#: SCL classes that are not a clear view of the ground.
SCL_NOT_OBSERVED: tuple[int, ...] = (0, 1, 3, 8, 9, 10)


@dataclass(frozen=True)
class L1CCloudTest:
    """Thresholds of the L1C cloud test (top-of-atmosphere reflectance); published defaults."""

    blue_min: float = BLUE_MIN          #: B02 brighter than this (bright dry sand reaches ~0.22) ...
    hot_offset: float = HOT_OFFSET      #: ... and B02 - 0.5 * B04 - hot_offset > 0 ...
    whiteness_max: float = WHITENESS_MAX  #: ... and whiteness below this: cloud
    cirrus_min: float = CIRRUS_MIN      #: B10 above this: cirrus

    def __call__(self, blue: np.ndarray, green: np.ndarray, red: np.ndarray,
                 cirrus: np.ndarray | None = None) -> np.ndarray:
        """Boolean cloud mask from B02, B03, B04 (and optionally B10) reflectance arrays."""
        return l1c_cloud(blue, green, red, cirrus, blue_min=self.blue_min, hot_offset=self.hot_offset,
                         whiteness_max=self.whiteness_max, cirrus_min=self.cirrus_min)


def scl_not_observed(scl: np.ndarray, classes: tuple[int, ...] = SCL_NOT_OBSERVED) -> np.ndarray:
    """Boolean mask of SCL pixels that are not a clear view (see :data:`SCL_NOT_OBSERVED`)."""
    return scl_not_clear(scl, classes)


def cloud_method(scene, requested: str = "auto") -> str:
    """The test used for a scene: "scl" (L2A with SCL), "l1c" (has B02/B03/B04), or "none"
    (:func:`sandwatch.imagery.clouds.cloud_test_for`, the one rule)."""
    return cloud_test_for(scene, requested)


def observed_mask(scene, window: Window, *, method: str = "auto",
                  l1c_test: L1CCloudTest = L1CCloudTest()) -> tuple[np.ndarray, str]:
    """``(observed, method)``: True where the scene holds data and sees the ground clearly
    over ``window`` of its grid; ``method`` says which cloud test was applied."""
    method = cloud_method(scene, method)
    if method == "scl":
        scl = scene.read_scl(window)
        if scl is None:
            from sandwatch.errors import SandwatchError

            raise SandwatchError.about(scene.source, "has no SCL band for the L2A cloud test",
                                       "use --cloud-test l1c or none, or a scene with its SCL")
        _, valid = scene.read(window, bands=[scene.bands[0]])
        return valid & ~scl_not_observed(scl), method
    if method == "l1c":
        names = ["B02", "B03", "B04"] + (["B10"] if "B10" in scene.bands else [])
        data, valid = scene.read(window, bands=names)
        cloud = l1c_test(data[0], data[1], data[2], data[3] if len(names) == 4 else None)
        return valid & ~cloud, method
    _, valid = scene.read(window, bands=[scene.bands[0]])
    return valid, "none"
