"""The alert model, on arrays only: per-pixel alert state over dates and alert regions.

Every valid date brings three rasters over the site's AOI window: ``mine`` (predicted mine),
``observed`` (inside the AOI, with data, no cloud or shadow) and the mine ``probability``.
:class:`PixelAlerts` follows one site date by date (in date order). Rules (:class:`AlertRules`,
defaults in brackets):

* **Pixel state.** A pixel detected (observed and mine) while it has no alert, or after its
  alert expired, starts a **provisional** alert: first-detection date = that date, count 1.
  Each later *clear* observation of it either agrees (detected again: count + 1, last
  detection date, probability added) or not (a miss). When ``confirm_k`` [2] clear
  observations in a row agree with the one before them (``confirm_k + 1`` detections with no
  miss between them: clouds in between do not count) the pixel has **agreed**; an agreed pixel
  is **confirmed** (final, unless a reviewer rejects it) once its region is confirmed (below),
  until then it stays provisional. After ``expire_n`` [3] misses in a row a provisional pixel
  **expires**. A miss only restarts the run of agreeing observations. Pixels not observed
  (clouds, shadows, nodata, outside the AOI) change nothing: they neither confirm nor expire.
* **Confidence** of a pixel (0..1): mean probability over its detections x agreement (its
  detections / its clear observations since the first) x min(1, count / (confirm_k + 1)): a
  single detection weighs a third of a confirmed one at the default k.
* **Alert regions.** Pixels with a live alert (provisional or confirmed) are grouped with the
  one rule of :mod:`sandwatch.vectors` (pixels sharing an edge). A group touching no pixel of
  an earlier region becomes a new region when it covers at least the minimum mapping unit
  ``min_area_m2`` [2000 m2 = 0.2 ha = 20 px of 10 m]; smaller groups wait until they grow. A
  group touching an earlier region's pixels joins that region (the one owning most of them).
* **Events** (each raised once per region): ``provisional`` when a region appears,
  ``confirmed`` when its agreed live pixels first cover the minimum mapping unit *and* the mean
  probability of its live pixels' detections reaches ``confirm_prob`` [0.85] (a region that
  appears already confirmed raises only that), ``expired`` when a region that was never
  confirmed has no live pixel left. A region whose key a reviewer rejected
  (``rejected`` keys) has its pixels set to **rejected** when it appears and raises nothing;
  later detections touching rejected pixels join it, rejected as well.
* A region's **key** (``FIRST-DATE:ROW:COL``: the earliest first-detection date of its pixels
  and its first pixel in row order when it appeared) names it across runs and databases.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from sandwatch.vectors import CONNECTIVITY, label_regions

NONE, PROVISIONAL, CONFIRMED, EXPIRED, REJECTED = 0, 1, 2, 3, 4
STATUS_NAMES = ("none", "provisional", "confirmed", "expired", "rejected")
#: Event statuses in the order of rank (a subscriber's ``min_status`` keeps this one and later ones).
EVENT_RANK = {"provisional": 0, "expired": 0, "confirmed": 1}
_FOUR = ndimage.generate_binary_structure(2, 1 if CONNECTIVITY == 4 else 2)   # the neighbours of vectors' rule


@dataclass(frozen=True)
class AlertRules:
    """The alert rules; defaults are the published ones (see the module docstring)."""

    confirm_k: int = 2              #: later clear observations that must agree (a pixel's agreement)
    expire_n: int = 3               #: misses in a row that end a provisional pixel
    min_area_m2: float = 2000.0     #: minimum mapping unit of an alert region (0.2 ha = 20 px of 10 m)
    #: mean probability of a region's detections needed to confirm it: the time rule alone cannot
    #: tell mining from a look-alike the model flags on every date (a sand bar at p ~ 0.7); chosen
    #: on development series, checked on others (benchmarks/alerts.py); 0 confirms by time alone
    confirm_prob: float = 0.85
    skip_gap_dates: bool = True     #: dates the monitor marked as gaps (< min-valid observed) are not used

    def __post_init__(self):
        if not 1 <= self.confirm_k <= 1000:
            raise ValueError(f"confirm_k must lie in [1, 1000], got {self.confirm_k}")
        if not 1 <= self.expire_n <= 1000:
            raise ValueError(f"expire_n must lie in [1, 1000], got {self.expire_n}")
        if not 0.0 <= self.confirm_prob < 1.0:
            raise ValueError(f"confirm_prob must lie in [0, 1), got {self.confirm_prob}")
        if not self.min_area_m2 >= 0:
            raise ValueError(f"min_area_m2 must be >= 0, got {self.min_area_m2}")


@dataclass
class RegionEvent:
    """One event of an alert region on a date; figures over the region's live pixels (for
    ``expired``, all the pixels it owned). ``mask``: those pixels on the window."""

    key: str
    region: int
    status: str
    date: dt.date
    first_date: dt.date
    last_date: dt.date
    count: int
    area_m2: float
    confirmed_m2: float
    mean_prob: float
    confidence: float
    mask: np.ndarray = field(repr=False)


@dataclass
class Region:
    key: str
    status: str                      #: provisional | confirmed | expired | rejected
    created: dt.date


class PixelAlerts:
    """Per-pixel alert state of one site (call :meth:`update` in date order); see the module doc."""

    def __init__(self, shape: tuple[int, int], pixel_area_m2: float, rules: AlertRules = AlertRules(),
                 rejected: frozenset[str] | set[str] = frozenset()):
        self.shape = tuple(shape)
        self.pixel_area_m2 = float(pixel_area_m2)
        self.rules = rules
        self.rejected = frozenset(rejected)
        self.status = np.zeros(shape, np.uint8)
        self.first = np.zeros(shape, np.int32)     # date ordinal of the first detection (0: none)
        self.last = np.zeros(shape, np.int32)      # date ordinal of the last detection
        self.count = np.zeros(shape, np.uint16)    # detections since the first
        self.clear = np.zeros(shape, np.uint16)    # clear observations since the first (detections included)
        self.misses = np.zeros(shape, np.uint16)   # clear non-detections in a row since the last detection
        self.streak = np.zeros(shape, np.uint16)   # detections in a row (clear observations only)
        self.psum = np.zeros(shape, np.float32)    # probability summed over the detections
        self.agreed = np.zeros(shape, bool)        # confirm_k clear observations in a row agreed (since the first)
        self.owner = np.zeros(shape, np.int32)     # alert region of the pixel (0: none)
        self.regions: dict[int, Region] = {}
        self.dates: list[dt.date] = []
        self.min_px = max(1, int(np.ceil(rules.min_area_m2 / self.pixel_area_m2 - 1e-9)))

    # ---- pixels ---------------------------------------------------------------------------------
    def live(self) -> np.ndarray:
        return (self.status == PROVISIONAL) | (self.status == CONFIRMED)

    def confidence(self, mask: np.ndarray | None = None) -> np.ndarray:
        """Pixel confidence 0..1 (0 where no alert was ever raised): of the whole window, or only
        of the pixels of ``mask`` (1-D, in row order)."""
        sel = slice(None) if mask is None else mask
        n = self.count[sel].astype(np.float32)
        clear = self.clear[sel]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_p = np.where(n > 0, self.psum[sel] / np.maximum(n, 1), 0.0)
            agree = np.where(clear > 0, n / np.maximum(clear, 1), 0.0)
        return (mean_p * agree * np.minimum(1.0, n / (self.rules.confirm_k + 1))).astype(np.float32)

    def update(self, date: dt.date, mine: np.ndarray, observed: np.ndarray,
               probability: np.ndarray | None = None) -> list[RegionEvent]:
        """Feed one date; returns the events it raises. ``probability`` (0..1) defaults to 1 on
        mine pixels."""
        mine = np.asarray(mine, bool)
        observed = np.asarray(observed, bool)
        if mine.shape != self.shape or observed.shape != self.shape:
            raise ValueError(f"arrays of shape {mine.shape}/{observed.shape}, the alert state is {self.shape}")
        prob = np.ones(self.shape, np.float32) if probability is None else np.asarray(probability, np.float32)
        if self.dates and date < self.dates[-1]:
            raise ValueError(f"dates must come in order: {date} after {self.dates[-1]}")
        self.dates.append(date)
        d = date.toordinal()
        det = mine & observed
        miss = ~mine & observed
        start = det & ((self.status == NONE) | (self.status == EXPIRED))
        for arr in (self.count, self.clear, self.misses, self.streak, self.psum, self.owner, self.agreed):
            arr[start] = 0
        self.status[start] = PROVISIONAL
        self.first[start] = d
        live = self.live()
        hit = det & live
        self.count[hit] = np.minimum(self.count[hit], 65534) + 1
        self.last[hit] = d
        self.misses[hit] = 0
        self.streak[hit] = np.minimum(self.streak[hit], 65534) + 1
        self.psum[hit] += prob[hit]
        missed = miss & live
        self.misses[missed] = np.minimum(self.misses[missed], 65534) + 1
        self.streak[missed] = 0
        seen = (hit | missed)
        self.clear[seen] = np.minimum(self.clear[seen], 65534) + 1
        prov = self.status == PROVISIONAL
        self.agreed |= prov & (self.streak >= self.rules.confirm_k + 1)
        self.status[prov & (self.misses >= self.rules.expire_n)] = EXPIRED
        return self._regions(date)

    # ---- regions --------------------------------------------------------------------------------
    def _regions(self, date: dt.date) -> list[RegionEvent]:
        live = self.live()
        new_ids: list[int] = []
        labels, _ = label_regions(live)
        for lab, sl in enumerate(ndimage.find_objects(labels), start=1):
            if sl is None:
                continue
            comp = labels[sl] == lab
            sub = self.owner[sl]
            owners = sub[comp]
            owners = owners[owners > 0]
            if owners.size:
                ids, counts = np.unique(owners, return_counts=True)
                sub[comp & (sub == 0)] = int(ids[np.argmax(counts)])
                continue
            if self._joins_rejected(labels, lab, sl):
                continue
            if comp.sum() < self.min_px:
                continue
            rid = len(self.regions) + 1
            rows, cols = np.nonzero(comp)
            first = dt.date.fromordinal(int(self.first[sl][comp].min()))
            key = f"{first.isoformat()}:{rows[0] + sl[0].start}:{cols[0] + sl[1].start}"
            sub[comp] = rid
            self.regions[rid] = Region(key=key, status="new", created=date)
            if key in self.rejected:
                self.status[sl][comp] = REJECTED
                self.regions[rid].status = "rejected"
            else:
                new_ids.append(rid)

        # per-region sums in one pass over the window (not one pass per region)
        live = self.live()
        own = self.owner.ravel()
        n = len(self.regions) + 1
        n_live = np.bincount(own, weights=live.ravel(), minlength=n)
        n_agreed = np.bincount(own, weights=(live & self.agreed).ravel(), minlength=n)
        detections = np.bincount(own, weights=np.where(live, self.count, 0).ravel(), minlength=n)
        psum = np.bincount(own, weights=np.where(live, self.psum, 0).ravel(), minlength=n)
        mean_prob = psum / np.maximum(detections, 1)
        events: list[RegionEvent] = []
        confirmed = np.zeros(n, bool)
        for rid, reg in self.regions.items():
            if reg.status in ("expired", "rejected"):
                continue
            if reg.status == "confirmed":
                confirmed[rid] = True
                continue
            status = None
            if n_agreed[rid] >= self.min_px and mean_prob[rid] >= self.rules.confirm_prob:
                status = "confirmed"
                confirmed[rid] = True
            elif rid in new_ids:
                status = "provisional"
            elif n_live[rid] == 0:
                status = "expired"
            if status is not None:
                reg.status = status
                events.append((rid, status))
        # agreeing pixels of confirmed regions are confirmed (final); the others stay provisional
        self.status[live & self.agreed & confirmed[self.owner]] = CONFIRMED
        live = self.live()
        out = []
        for rid, status in events:
            mine_px = self.owner == rid
            out.append(self._event(rid, status, date, mine_px & live if n_live[rid] else mine_px))
        return out

    def _mean_prob(self, mask: np.ndarray) -> float:
        """Mean probability over all detections of the pixels of ``mask``."""
        return float(self.psum[mask].sum() / max(float(self.count[mask].sum()), 1.0))

    def _joins_rejected(self, labels: np.ndarray, lab: int, sl: tuple[slice, slice]) -> bool:
        """A new group touching (or on) a rejected region's pixels is part of that region:
        rejected too, no event (the reviewer said this place is not mining)."""
        big = tuple(slice(max(0, s.start - 1), s.stop + 1) for s in sl)
        comp = labels[big] == lab
        ring = ndimage.binary_dilation(comp, structure=_FOUR)
        rej = self.owner[big][ring & (self.status[big] == REJECTED)]
        if rej.size == 0:
            return False
        ids, counts = np.unique(rej, return_counts=True)
        self.status[big][comp] = REJECTED
        self.owner[big][comp] = int(ids[np.argmax(counts)])
        return True

    def _event(self, rid: int, status: str, date: dt.date, mask: np.ndarray) -> RegionEvent:
        n = self.count[mask].astype(np.float64)
        conf_px = self.confidence(mask)        # the region's pixels only: not a whole-window pass per region
        return RegionEvent(
            key=self.regions[rid].key, region=rid, status=status, date=date,
            first_date=dt.date.fromordinal(int(self.first[mask].min())),
            last_date=dt.date.fromordinal(int(self.last[mask].max())), count=int(n.max()),
            area_m2=float(mask.sum()) * self.pixel_area_m2,
            confirmed_m2=float((mask & (self.status == CONFIRMED)).sum()) * self.pixel_area_m2,
            mean_prob=self._mean_prob(mask), confidence=float(conf_px.mean()),
            mask=mask.copy())

    def region_status(self) -> dict[int, str]:
        return {rid: reg.status for rid, reg in self.regions.items()}

    def region_mask(self, rid: int) -> np.ndarray:
        """The region's pixels: live ones while it has any, else all it owned."""
        own = self.owner == rid
        live = own & self.live()
        return live if live.any() else own

    def summary(self, rid: int) -> RegionEvent:
        """The region's current figures, as an event dated on the latest date."""
        return self._event(rid, self.regions[rid].status, self.dates[-1], self.region_mask(rid))
