"""Alert accuracy on synthetic time series whose truth is known.

The demo sites of :mod:`sandwatch.synthetic` (mining that grows, stops, stays or never
starts) give, per date, the pixels of every *active* mining cluster. A simulated detector
(:class:`Detector`) turns them into what a good but imperfect model and cloud mask would
give: each mine pixel missed with ``miss_rate``, false-positive blobs (ellipses of
``blob_px`` pixels, ``blobs_per_mpx`` per million pixels, new places every date: bright
sandbars, wet patches, boats), fixed look-alikes (``confusers_per_mpx``, each detected on a
date with ``confuser_rate``: the false positives that can come back), salt noise, clouds over part of each date (the pixels are
then not observed) and now and then a nearly all-cloud date (a gap). The alert model runs
on these rasters exactly as on a monitored site, and :func:`score` compares its regions
with the truth, per event:

* **precision**: alert regions (raised provisional or confirmed; confirmed only) that
  overlap a pixel ever mined, over all such regions;
* **recall**: mining clusters with at least ``confirm_k + 1`` valid dates from their onset
  on (so that confirmation is possible) overlapped by such a region, over those clusters;
* **delay**: valid dates from a cluster's onset (its first valid date active) to the date
  of the first such region's event (0: the onset date itself); the median over clusters.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np

from sandwatch.alerts.model import AlertRules, PixelAlerts
from sandwatch.monitor.series import AlertConfig

#: a date observed on less than this share of the window is a gap (the monitor's own default)
GAP_FRACTION = AlertConfig().min_valid_fraction


@dataclass(frozen=True)
class Detector:
    """The imperfections of the simulated detector and cloud mask (per date)."""

    miss_rate: float = 0.15
    blobs_per_mpx: float = 60.0            #: false-positive blobs per million pixels per date, anywhere
    confusers_per_mpx: float = 30.0        #: fixed look-alikes per million pixels (damp hollows, brick kilns) ...
    confuser_rate: float = 0.3             #: ... each detected on a date with this chance
    blob_px: tuple[int, int] = (8, 90)     #: their size range, pixels
    salt: float = 0.002                    #: isolated false pixels
    cloud_cover: tuple[float, float] = (0.0, 0.3)
    gap_rate: float = 0.1                  #: dates mostly under cloud

    def draw_cover(self, rng: np.random.Generator) -> float:
        """One date's cloud cover: a gap date (0.95) with ``gap_rate``, else within ``cloud_cover``."""
        return 0.95 if rng.random() < self.gap_rate else float(rng.uniform(*self.cloud_cover))


@dataclass
class SiteSeries:
    name: str
    kind: str
    dates: list[dt.date]
    mine: list[np.ndarray]                 #: simulated detections per date
    observed: list[np.ndarray]
    prob: list[np.ndarray]
    clusters: dict[int, list[np.ndarray | None]] = field(default_factory=dict)  #: active mask per date, or None


def _ellipses(rng: np.random.Generator, shape: tuple[int, int], n: int, px: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape, bool)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    for _ in range(n):
        area = rng.uniform(*px)
        ratio = rng.uniform(0.4, 1.0)
        a = np.sqrt(area / np.pi / ratio)
        b = a * ratio
        th = rng.uniform(0, np.pi)
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        u = (xx - cx) * np.cos(th) + (yy - cy) * np.sin(th)
        v = -(xx - cx) * np.sin(th) + (yy - cy) * np.cos(th)
        out |= (u / a) ** 2 + (v / b) ** 2 <= 1
    return out


def add_clusters(clusters: dict[int, list[np.ndarray | None]], truth, k: int, n_dates: int,
                 window: tuple[slice, slice] = (slice(None), slice(None))) -> list[np.ndarray]:
    """Record date ``k`` of a site's truth (a :class:`~sandwatch.synthetic.SceneTruth`) in
    ``clusters`` (each cluster's active mask per date, cropped to ``window``; None: not active);
    returns the active masks of that date."""
    active = []
    for cl in truth.clusters:
        clusters.setdefault(cl.index, [None] * n_dates)
        if cl.active:
            clusters[cl.index][k] = cl.mask[window]
            active.append(clusters[cl.index][k])
    return active


def series_dates(dates: int) -> list[dt.date]:
    """The benchmark's dates: ``dates`` dates every 15 days from 2021-01-05."""
    day0 = dt.date(2021, 1, 5)
    return [day0 + dt.timedelta(days=15 * i) for i in range(dates)]


def simulate_site(spec, detector: Detector = Detector(), seed: int = 0) -> SiteSeries:
    """Truth and simulated detections of one demo site (a :class:`~sandwatch.synthetic.SiteSpec`)."""
    from sandwatch.synthetic import SiteLandscape, cloud_opacity

    land = SiteLandscape(spec)
    rng = np.random.default_rng(np.random.SeedSequence([seed, *spec.seed, 99]))
    shape = (spec.size, spec.size)
    series = SiteSeries(spec.name, spec.kind, list(spec.dates), [], [], [])
    n_blobs = detector.blobs_per_mpx * spec.size ** 2 / 1e6
    confusers = [_ellipses(rng, shape, 1, detector.blob_px)
                 for _ in range(int(rng.poisson(detector.confusers_per_mpx * spec.size ** 2 / 1e6)))]
    for k, _date in enumerate(spec.dates):
        active = np.zeros(shape, bool)
        for m in add_clusters(series.clusters, land.scene(k), k, len(spec.dates)):
            active |= m
        false = _ellipses(rng, shape, int(rng.poisson(n_blobs)), detector.blob_px)
        false |= rng.random(shape) < detector.salt
        for c in confusers:
            if rng.random() < detector.confuser_rate:
                false |= c
        hit = active & (rng.random(shape) >= detector.miss_rate)
        prob = np.where(hit, rng.uniform(0.55, 1.0, shape), np.where(false, rng.uniform(0.5, 0.85, shape),
                                                                      rng.uniform(0.0, 0.45, shape)))
        cover = detector.draw_cover(rng)
        observed = cloud_opacity(shape, cover, seed=int(rng.integers(2**31))) < 0.5 if cover > 0 \
            else np.ones(shape, bool)
        series.mine.append((prob >= 0.5) & observed)
        series.observed.append(observed)
        series.prob.append(prob.astype(np.float32))
    return series


def run_alerts(series: SiteSeries, rules: AlertRules = AlertRules(), pixel_area_m2: float = 100.0):
    """``(state, [(valid index, event)])``: the alert model over a simulated series (gaps skipped)."""
    state = PixelAlerts(series.mine[0].shape, pixel_area_m2, rules)
    out, vi = [], -1
    for date, mine, obs, prob in zip(series.dates, series.mine, series.observed, series.prob):
        if obs.mean() < GAP_FRACTION:
            continue
        vi += 1
        out += [(vi, e) for e in state.update(date, mine, obs, prob)]
    return state, out


@dataclass
class Scores:
    regions: int = 0
    true_regions: int = 0
    clusters: int = 0
    found: int = 0
    delays: list[int] = field(default_factory=list)

    @property
    def precision(self) -> float:
        return self.true_regions / self.regions if self.regions else float("nan")   # nothing raised: no precision

    @property
    def recall(self) -> float:
        return self.found / self.clusters if self.clusters else 1.0

    @property
    def median_delay(self) -> float:
        return float(np.median(self.delays)) if self.delays else float("nan")

    def add(self, other: "Scores") -> "Scores":
        return Scores(self.regions + other.regions, self.true_regions + other.true_regions,
                      self.clusters + other.clusters, self.found + other.found, self.delays + other.delays)


def score(series: SiteSeries, events, rules: AlertRules = AlertRules()) -> dict[str, Scores]:
    """Per-event precision, recall and delays of one simulated site's events (see the module doc)."""
    valid = [k for k, obs in enumerate(series.observed) if obs.mean() >= GAP_FRACTION]
    return score_events(series.clusters, valid, events, rules)


def score_events(clusters: dict[int, list[np.ndarray | None]], valid: list[int], events,
                 rules: AlertRules = AlertRules()) -> dict[str, Scores]:
    """Per-event precision, recall and delays (see the module doc), for ``provisional`` (any
    region raised) and ``confirmed`` alerts. ``clusters``: each mining cluster's active mask per
    date (None: not active); ``valid``: the date indices the alert model used (gaps left out);
    ``events``: ``[(valid index, RegionEvent)]`` on the clusters' grid."""
    shape = next((m.shape for masks in clusters.values() for m in masks if m is not None), None)
    if shape is None and events:
        shape = events[0][1].mask.shape
    ever = np.zeros(shape or (1, 1), bool)
    for masks in clusters.values():
        for m in masks:
            if m is not None:
                ever |= m
    out = {}
    for stage in ("provisional", "confirmed"):
        first: dict[str, tuple[int, np.ndarray]] = {}   # region key -> (valid index of its event, mask)
        for vi, e in events:
            if (stage == "confirmed" and e.status != "confirmed") or e.status == "expired" or e.key in first:
                continue
            first[e.key] = (vi, e.mask)
        s = Scores(regions=len(first), true_regions=sum(bool((m & ever).any()) for _, m in first.values()))
        for masks in clusters.values():
            active_valid = [i for i, k in enumerate(valid) if masks[k] is not None]
            if not active_valid or len(valid) - active_valid[0] < rules.confirm_k + 1:
                continue
            onset = active_valid[0]
            union = np.zeros_like(ever)
            for m in masks:
                if m is not None:
                    union |= m
            s.clusters += 1
            hits = [vi for vi, m in first.values() if (m & union).any()]
            if hits:
                s.found += 1
                s.delays.append(max(0, min(hits) - onset))
        out[stage] = s
    return out


def measure(sites: int = 6, size: int = 128, dates: int = 10, seeds=(0,), detector: Detector = Detector(),
            rules: AlertRules = AlertRules(), progress: bool = False) -> dict[str, Scores]:
    """Pooled scores over the demo sites of several seeds (dates every 15 days from 2021-01-05)."""
    from tqdm.auto import tqdm

    from sandwatch.synthetic import plan_sites

    ds = series_dates(dates)
    total = {"provisional": Scores(), "confirmed": Scores()}
    jobs = [(seed, spec) for seed in seeds for spec in plan_sites(sites, size, seed, ds)]
    for seed, spec in tqdm(jobs, desc="alert accuracy", unit="site", disable=not progress):
        series = simulate_site(spec, detector, seed)
        _, events = run_alerts(series, rules)
        for stage, s in score(series, events, rules).items():
            total[stage] = total[stage].add(s)
    return total


def measure_model(checkpoint, work_dir, sites: int = 6, size: int = 512, dates: int = 10, seeds=(1,),
                  clouds: Detector = Detector(), rules: AlertRules = AlertRules(),
                  progress: bool = False) -> dict[str, Scores]:
    """Pooled scores of the *whole* pipeline: demo sites written as scenes (clouds over part of
    each date and, now and then, a nearly all-cloud gap date, drawn as ``clouds``' cloud
    fields), each site monitored date by date by the model of ``checkpoint`` exactly as
    ``sandwatch monitor`` does (AOI from the rivers, cloud test, gap dates), then the alert
    state replayed from the history as ``sandwatch alerts update`` does, and its events scored
    against the sites' truth on the monitored window. Use seeds the checkpoint was not trained
    on (the demo trains on seed 0)."""
    from pathlib import Path

    from tqdm.auto import tqdm

    from sandwatch.alerts.stage import site_state
    from sandwatch.monitor.history import History
    from sandwatch.monitor.run import monitor_site
    from sandwatch.synthetic import SiteLandscape, plan_sites
    from sandwatch.synthetic.demo import DemoConfig, write_demo_data

    work_dir = Path(work_dir)
    ds = series_dates(dates)
    total = {"provisional": Scores(), "confirmed": Scores()}
    jobs = []
    for seed in seeds:
        specs = plan_sites(sites, size, seed, ds)
        cover = {}
        for spec in specs:
            rng = np.random.default_rng(np.random.SeedSequence([seed, *spec.seed, 98]))
            cover[spec.name] = {d: clouds.draw_cover(rng) for d in ds}
        data = work_dir / f"seed{seed}"
        if not (data / "manifest.yaml").is_file():
            write_demo_data(data, config=DemoConfig(sites=sites, size=size, seed=seed, s1=False), dates=ds,
                            clouds=cover)
        jobs += [(seed, spec, data / spec.name) for spec in specs]
    for seed, spec, site_dir in tqdm(jobs, desc="alert accuracy (model)", unit="site", disable=not progress):
        mon = work_dir / "monitor" / f"seed{seed}"
        db = mon / "history.sqlite"
        monitor_site(checkpoint, spec.name, site_dir / "rivers.geojson",
                     [site_dir / f"{d.isoformat()}.tif" for d in ds], mon, db=db, progress=False)
        history = History(db, must_exist=True)
        try:
            rec, _, _, _, events = site_state(history, spec.name, rules)
            obs = history.observations(rec.id)
        finally:
            history.close()
        used = [ds.index(o["date"]) for o in obs if not (o["gap"] and rules.skip_gap_dates)]
        vi = {ds[k]: i for i, k in enumerate(used)}
        r0, c0, h, w = rec.window
        land = SiteLandscape(spec)
        clusters: dict[int, list[np.ndarray | None]] = {}
        for k in range(len(ds)):
            add_clusters(clusters, land.scene(k), k, len(ds), (slice(r0, r0 + h), slice(c0, c0 + w)))
        for stage, s in score_events(clusters, used, [(vi[e.date], e) for e in events], rules).items():
            total[stage] = total[stage].add(s)
    return total
