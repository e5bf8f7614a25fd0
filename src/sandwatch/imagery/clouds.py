"""Clear-sky pixels of a scene, for stages that must not mistake clouds for something else (the
water-index AOI: cloud shadows and haze over dark land give water-like indices).

* **L2A** (a scene with an SCL band): the scene classification says it; not clear are the
  classes in :data:`SCL_NOT_CLEAR`: 0 no data, 1 saturated/defective, 3 cloud shadow,
  8/9 cloud (medium/high probability), 10 thin cirrus, 11 snow or ice (bright like water in
  MNDWI, and not water either).
* **L1C** (top-of-atmosphere reflectance, no SCL): a documented per-pixel test in the spirit
  of Fmask's first pass (Zhu & Woodcock 2012), implemented once here (:func:`l1c_cloud`; the
  monitor's :class:`sandwatch.monitor.clouds.L1CCloudTest` carries the same thresholds as
  options): cloud where a pixel is *bright*
  (B02 > 0.25), *hazy* (B02 - 0.5 B04 - 0.08 > 0) and *white* (mean absolute deviation of
  B02, B03, B04 below 0.7 of their mean), or **cirrus** where B10 > 0.012. Cloud shadows are
  not detected in L1C (a documented limitation; the water test's NDWI condition rejects most
  of them, whose NIR is not darker than their green).

Scenes without these bands (true colour, a few bands) get no cloud test.
"""

from __future__ import annotations

import numpy as np

#: SCL classes that are not a clear view of water or land.
SCL_NOT_CLEAR: tuple[int, ...] = (0, 1, 3, 8, 9, 10, 11)
#: Cloud tests a stage can ask for (``auto``: by the scene, see :func:`cloud_test_for`).
CLOUD_TESTS: tuple[str, ...] = ("auto", "scl", "l1c", "none")
#: Bands of the L1C spectral test (B10 optional).
L1C_CLOUD_BANDS: tuple[str, ...] = ("B02", "B03", "B04")

BLUE_MIN, HOT_OFFSET, WHITENESS_MAX, CIRRUS_MIN = 0.25, 0.08, 0.7, 0.012


def l1c_cloud(blue, green, red, cirrus=None, *, blue_min: float = BLUE_MIN, hot_offset: float = HOT_OFFSET,
              whiteness_max: float = WHITENESS_MAX, cirrus_min: float = CIRRUS_MIN) -> np.ndarray:
    """Boolean cloud mask from B02, B03, B04 (and optionally B10) top-of-atmosphere reflectance
    (the one implementation of the test; the monitor's :class:`L1CCloudTest` carries its thresholds)."""
    b, g, r = (np.asarray(x, np.float32) for x in (blue, green, red))
    mean = (b + g + r) / 3.0
    with np.errstate(invalid="ignore", divide="ignore"):
        white = (np.abs(b - mean) + np.abs(g - mean) + np.abs(r - mean)) / np.where(mean > 0, mean, np.inf)
    cloud = (b > blue_min) & (b - 0.5 * r - hot_offset > 0) & (white < whiteness_max)
    if cirrus is not None:
        cloud |= np.asarray(cirrus, np.float32) > cirrus_min
    return cloud


def scl_not_clear(scl: np.ndarray, classes: tuple[int, ...] = SCL_NOT_CLEAR) -> np.ndarray:
    return np.isin(np.asarray(scl), np.asarray(classes, dtype=np.asarray(scl).dtype))


def cloud_test_for(scene, requested: str = "auto") -> str:
    """``"scl"`` (the scene has SCL), ``"l1c"`` (an L1C scene with B02/B03/B04) or ``"none"``;
    ``requested`` other than ``"auto"`` is taken as it is."""
    if requested not in CLOUD_TESTS:
        raise ValueError(f"cloud test must be {', '.join(CLOUD_TESTS)}, not {requested!r}")
    if requested != "auto":
        return requested
    if getattr(scene, "has_scl", False):
        return "scl"
    if getattr(scene, "level", "") == "L1C" and set(L1C_CLOUD_BANDS) <= set(getattr(scene, "bands", ())):
        return "l1c"
    return "none"


__all__ = ["SCL_NOT_CLEAR", "L1C_CLOUD_BANDS", "l1c_cloud", "scl_not_clear", "cloud_test_for"]
