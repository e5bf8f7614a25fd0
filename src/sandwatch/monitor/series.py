"""The arithmetic of monitoring, on arrays only: per-date figures and alerts over time.

Every date brings two boolean rasters over the site's AOI window: ``mine`` (predicted mine)
and ``observed`` (inside the AOI, with data, no cloud or shadow). :func:`date_figures` turns
them into the figures of the time series; :class:`AlertTracker` follows the site date by date
and raises alerts. Nothing here touches files, so all of it is tested on small arrays.

Alert rules (:class:`AlertConfig`, defaults in brackets):

* A date whose observed fraction of the AOI is below ``min_valid_fraction`` [0.5] is a **gap**:
  it changes nothing and raises nothing.
* Per pixel, on valid dates where the pixel is observed, the tracker counts consecutive
  "mine" and "not mine" observations (unobserved pixels keep their counts). A pixel becomes
  **active** after ``k`` [2] consecutive mine observations and stops being active after
  ``k`` consecutive not-mine observations.
* Active pixels are grouped into connected regions (the one rule of :mod:`sandwatch.vectors`:
  pixels sharing an edge, in the scene's grid), the regions ``predict`` draws as polygons.
  A region that contains no pixel of an earlier alert and covers at least ``min_area_m2``
  [5000 m2 = 0.5 ha] raises a **new** alert (its region id is fixed from then on); its
  ``first_seen`` date is the earliest start of the mine runs of its pixels. Smaller regions
  wait until they grow. A region touching an earlier alert's pixels belongs to that alert.
* Every alert's area is its active pixels. When it grows by at least ``growth_min_m2``
  [= ``min_area_m2``] since the previous valid date, a **growth** alert is raised; when it has
  no active pixel left (all its pixels were seen k times without mining) an **inactive** alert;
  when an inactive region becomes active again, a **resumed** alert.
* ``growth_m2`` of every alert is its area minus its area on the previous valid date (for a
  new alert its whole area, as it had none before).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from sandwatch.vectors import label_regions

ALERT_KINDS = ("new", "growth", "inactive", "resumed")


@dataclass(frozen=True)
class AlertConfig:
    """Alert rules; the defaults are the published ones (see the module docstring)."""

    k: int = 2
    min_area_m2: float = 5000.0
    min_valid_fraction: float = 0.5
    growth_min_m2: float | None = None

    def __post_init__(self):
        if not 1 <= self.k <= 250:
            raise ValueError(f"k must lie in [1, 250], got {self.k}")
        if not 0.0 <= self.min_valid_fraction <= 1.0:
            raise ValueError(f"min_valid_fraction must lie in [0, 1], got {self.min_valid_fraction}")
        if self.min_area_m2 < 0:
            raise ValueError(f"min_area_m2 must be >= 0, got {self.min_area_m2}")

    @property
    def growth_m2(self) -> float:
        return self.min_area_m2 if self.growth_min_m2 is None else float(self.growth_min_m2)


@dataclass(frozen=True)
class DateFigures:
    """Figures of one date over the AOI."""

    valid_fraction: float
    observed_pixels: int
    mine_pixels: int
    mined_km2: float
    n_polygons: int


def date_figures(mine: np.ndarray, observed: np.ndarray, aoi: np.ndarray, pixel_area_m2: float) -> DateFigures:
    """Observed fraction of the AOI, mined area (observed mine pixels) and number of mining
    regions (:func:`sandwatch.vectors.label_regions`) of one date. ``mine`` counts only where ``observed & aoi``."""
    aoi = np.asarray(aoi, bool)
    seen = np.asarray(observed, bool) & aoi
    m = np.asarray(mine, bool) & seen
    n_aoi = int(aoi.sum())
    _, n = label_regions(m)
    npx = int(m.sum())
    return DateFigures(valid_fraction=float(seen.sum() / n_aoi) if n_aoi else 0.0, observed_pixels=int(seen.sum()),
                       mine_pixels=npx, mined_km2=npx * pixel_area_m2 / 1e6, n_polygons=int(n))


@dataclass
class AlertEvent:
    """One alert: a region's event on a date. ``mask``: the region's pixels on the window
    (its active pixels; for "inactive", the pixels it ever covered)."""

    region: int
    kind: str
    date: dt.date
    first_seen: dt.date
    area_m2: float
    growth_m2: float
    mask: np.ndarray = field(repr=False)


@dataclass
class _Region:
    first_seen: dt.date
    area_px: int = 0
    active: bool = True


class AlertTracker:
    """Follows one site date by date (call :meth:`update` in date order) and returns the
    alerts each date raises. State: per-pixel run counters, the active mask and the id of the
    alert region owning each pixel (0: none)."""

    def __init__(self, shape: tuple[int, int], pixel_area_m2: float, config: AlertConfig = AlertConfig()):
        self.shape = tuple(shape)
        self.pixel_area_m2 = float(pixel_area_m2)
        self.config = config
        # counters saturate at 255 (k <= 250): 1 byte per pixel each
        self.run_mine = np.zeros(shape, np.uint8)
        self.run_clear = np.zeros(shape, np.uint8)
        self.run_start = np.zeros(shape, np.int32)   # index into self.dates of the current mine run's start
        self.active = np.zeros(shape, bool)
        self.owner = np.zeros(shape, np.int32)
        self.regions: dict[int, _Region] = {}
        self.dates: list[dt.date] = []               # valid dates seen so far
        self.min_px = int(np.ceil(config.min_area_m2 / self.pixel_area_m2 - 1e-9))
        self.growth_px = max(1, int(np.ceil(config.growth_m2 / self.pixel_area_m2 - 1e-9)))

    def is_gap(self, valid_fraction: float) -> bool:
        return valid_fraction < self.config.min_valid_fraction

    def update(self, date: dt.date, mine: np.ndarray, observed: np.ndarray,
               valid_fraction: float | None = None) -> list[AlertEvent]:
        """Feed one date. ``valid_fraction`` defaults to the observed fraction of the window;
        below ``min_valid_fraction`` the date is a gap: nothing changes, no alert."""
        observed = np.asarray(observed, bool)
        mine = np.asarray(mine, bool)
        if mine.shape != self.shape or observed.shape != self.shape:
            raise ValueError(f"arrays of shape {mine.shape}/{observed.shape}, tracker is {self.shape}")
        if valid_fraction is None:
            valid_fraction = float(observed.mean()) if observed.size else 0.0
        if self.is_gap(valid_fraction):
            return []
        idx = len(self.dates)
        self.dates.append(date)
        k = self.config.k
        m = mine & observed
        c = ~mine & observed
        self.run_start[m & (self.run_mine == 0)] = idx
        self.run_mine[m] = np.minimum(self.run_mine[m], 254) + 1
        self.run_mine[c] = 0
        self.run_clear[c] = np.minimum(self.run_clear[c], 254) + 1
        self.run_clear[m] = 0
        self.active |= self.run_mine >= k
        self.active &= ~(self.run_clear >= k)

        events: list[AlertEvent] = []
        new_ids: set[int] = set()
        labels, n = label_regions(self.active)
        for lab, sl in enumerate(ndimage.find_objects(labels), start=1):
            if sl is None:
                continue
            comp = labels[sl] == lab
            own = self.owner[sl][comp]
            owners = own[own > 0]
            if owners.size == 0:
                if comp.sum() < max(self.min_px, 1):
                    continue
                rid = len(self.regions) + 1
                first = self.dates[int(self.run_start[sl][comp].min())]
                self.regions[rid] = _Region(first_seen=first, area_px=0, active=True)
                new_ids.add(rid)
                self.owner[sl][comp] = rid
            else:
                ids, counts = np.unique(owners, return_counts=True)
                target = int(ids[np.argmax(counts)])
                sub = self.owner[sl]
                sub[comp & (sub == 0)] = target

        area = np.bincount(self.owner[self.active].ravel(), minlength=len(self.regions) + 1)
        for rid, reg in self.regions.items():
            a = int(area[rid])
            growth = a - reg.area_px
            kind = None
            if rid in new_ids:
                kind = "new"
            elif reg.active and a == 0:
                kind, reg.active = "inactive", False
            elif not reg.active and a > 0:
                kind, reg.active = "resumed", True
            elif reg.active and growth >= self.growth_px:
                kind = "growth"
            if kind is not None:
                mask = (self.owner == rid) & (self.active if kind != "inactive" else True)
                events.append(AlertEvent(rid, kind, date, reg.first_seen, a * self.pixel_area_m2,
                                         growth * self.pixel_area_m2, mask))
            reg.area_px = a
        return events

    def region_areas_m2(self) -> dict[int, float]:
        """Current active area of every alert region."""
        area = np.bincount(self.owner[self.active].ravel(), minlength=len(self.regions) + 1)
        return {rid: float(area[rid]) * self.pixel_area_m2 for rid in self.regions}


#: Days in a month for trends per month (365.25 / 12).
DAYS_PER_MONTH = 30.4375


@dataclass(frozen=True)
class Trend:
    """Least-squares slope of the mined area over every valid date of a site."""

    label: str                   #: "growing" | "shrinking" | "stable" | "unknown"
    ha_per_month: float          #: fitted slope, hectares per month (0 when unknown)
    se_ha_per_month: float | None  #: its standard error (None with fewer than 3 dates)
    dates: int                   #: valid dates fitted

    def text(self) -> str:
        if self.label == "unknown":
            return "unknown (fewer than 2 valid dates)"
        se = "" if self.se_ha_per_month is None else f" ± {self.se_ha_per_month:.2f}"
        return f"{self.label} ({self.ha_per_month:+.2f}{se} ha/month over {self.dates} dates)"


def trend(values: list[tuple[dt.date, float]], *, min_change_ha: float = 0.5, rel: float = 0.05) -> Trend:
    """The slope of mined area (``values``: date, km2) fitted over the whole series, in ha per
    month, with its standard error: "growing"/"shrinking" when the fitted change over the
    series is at least ``min_change_ha`` and ``rel`` of the mean area and (with 3 or more
    dates) the slope is at least twice its standard error, else "stable"; "unknown" with fewer
    than 2 valid dates."""
    vals = sorted((d, v) for d, v in values if v is not None and not np.isnan(v))
    if len(vals) < 2 or vals[0][0] == vals[-1][0]:
        return Trend("unknown", 0.0, None, len(vals))
    t = np.array([(d - vals[0][0]).days / DAYS_PER_MONTH for d, _ in vals])
    y = np.array([v * 100.0 for _, v in vals])                   # km2 -> ha
    tc = t - t.mean()
    slope = float((tc * (y - y.mean())).sum() / (tc ** 2).sum())
    se = None
    if len(vals) >= 3:
        resid = y - (y.mean() + slope * tc)
        se = float(np.sqrt((resid ** 2).sum() / (len(vals) - 2) / (tc ** 2).sum()))
    change = abs(slope) * (t[-1] - t[0])
    clear = change >= max(min_change_ha, rel * abs(float(y.mean()))) and (se is None or abs(slope) >= 2 * se)
    return Trend(("growing" if slope > 0 else "shrinking") if clear else "stable", slope, se, len(vals))
