"""Monitoring arithmetic on arrays: per-date figures, alert rules, trend (no files)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from sandwatch.monitor import AlertConfig, AlertTracker, date_figures, trend

PX = 100.0  # m2 of a 10 m pixel
SHAPE = (40, 40)
D = [dt.date(2021, 1, 1) + dt.timedelta(days=10 * i) for i in range(10)]


def box(r0, c0, h, w, shape=SHAPE):
    m = np.zeros(shape, bool)
    m[r0:r0 + h, c0:c0 + w] = True
    return m


ALL = np.ones(SHAPE, bool)
NONE = np.zeros(SHAPE, bool)


def run(tracker, frames):
    """frames: (mine, observed) per date; returns {date index: [(kind, region, first_seen index, area, growth)]}."""
    out = {}
    for i, (mine, obs) in enumerate(frames):
        ev = tracker.update(D[i], mine, obs)
        if ev:
            out[i] = [(e.kind, e.region, D.index(e.first_seen), e.area_m2, e.growth_m2) for e in ev]
    return out


def test_date_figures_counts_only_observed_aoi_pixels():
    aoi = box(0, 0, 40, 20)                     # 800 px
    obs = box(0, 0, 40, 40) & ~box(0, 0, 10, 20)  # 200 AOI px unobserved
    mine = box(20, 0, 5, 5) | box(30, 10, 2, 3) | box(0, 0, 4, 4) | box(20, 30, 5, 5)  # 2nd..: in AOI; last outside
    f = date_figures(mine, obs, aoi, PX)
    assert f.valid_fraction == pytest.approx(600 / 800)
    assert f.mine_pixels == 25 + 6              # the 4x4 under the unobserved part and the one outside do not count
    assert f.mined_km2 == pytest.approx(31 * PX / 1e6)
    assert f.n_polygons == 2
    diag = np.zeros(SHAPE, bool)
    diag[5, 5] = diag[6, 6] = True              # corner-to-corner: two regions, as predict draws them
    assert date_figures(diag, ALL, ALL, PX).n_polygons == 2


def test_new_mining_alerts_on_kth_consecutive_valid_date_with_first_seen():
    a = box(10, 10, 10, 10)                     # 100 px = 1 ha
    t = AlertTracker(SHAPE, PX, AlertConfig(k=2, min_area_m2=5000))
    ev = run(t, [(NONE, ALL), (a, ALL), (a, ALL), (a, ALL)])
    assert ev == {2: [("new", 1, 1, 10000.0, 10000.0)]}


def test_k3_needs_three_dates_and_single_date_false_positive_never_alerts():
    a = box(10, 10, 10, 10)
    t = AlertTracker(SHAPE, PX, AlertConfig(k=3))
    ev = run(t, [(a, ALL), (NONE, ALL), (a, ALL), (a, ALL), (a, ALL)])
    assert ev == {4: [("new", 1, 2, 10000.0, 10000.0)]}


def test_small_region_waits_then_alerts_as_new_when_big_enough():
    small = box(10, 10, 5, 5)                   # 0.25 ha < 0.5 ha
    big = box(10, 10, 8, 8)                     # 0.64 ha
    t = AlertTracker(SHAPE, PX)
    ev = run(t, [(small, ALL), (small, ALL), (small, ALL), (big, ALL), (big, ALL)])
    # pixels of the small region were active since date 1; the added ring since date 3
    assert ev == {4: [("new", 1, 0, 6400.0, 6400.0)]}


def test_growth_and_inactive_and_resumed():
    a, a2 = box(5, 5, 10, 10), box(5, 5, 10, 20)  # 1 ha, then 2 ha
    t = AlertTracker(SHAPE, PX)
    frames = [(a, ALL), (a, ALL), (a2, ALL), (a2, ALL), (a2, ALL), (NONE, ALL), (NONE, ALL), (a2, ALL), (a2, ALL)]
    ev = run(t, frames)
    assert ev[1] == [("new", 1, 0, 10000.0, 10000.0)]
    assert ev[3] == [("growth", 1, 0, 20000.0, 10000.0)]   # the new half needs k=2 dates too
    assert ev[6] == [("inactive", 1, 0, 0.0, -20000.0)]
    assert ev[8] == [("resumed", 1, 0, 20000.0, 20000.0)]   # same region: not new mining
    assert set(ev) == {1, 3, 6, 8}


def test_growth_below_threshold_is_silent():
    a, a_plus = box(5, 5, 10, 10), box(5, 5, 10, 12)  # +20 px = 0.2 ha < 0.5 ha
    t = AlertTracker(SHAPE, PX)
    ev = run(t, [(a, ALL), (a, ALL), (a_plus, ALL), (a_plus, ALL)])
    assert set(ev) == {1}
    assert t.region_areas_m2() == {1: 12000.0}


def test_gap_date_changes_nothing_and_raises_nothing():
    a = box(10, 10, 10, 10)
    cloudy = box(0, 0, 40, 15)                  # 37.5 % observed: a gap at the default 0.5
    t = AlertTracker(SHAPE, PX)
    # mine on date 0, a gap on date 1 showing mine everywhere it sees, mine on date 2
    ev = run(t, [(a, ALL), (ALL, cloudy), (a, ALL)])
    assert ev == {2: [("new", 1, 0, 10000.0, 10000.0)]}
    assert t.dates == [D[0], D[2]]
    # a gap full of "mine" alone never alerts
    t2 = AlertTracker(SHAPE, PX)
    assert run(t2, [(ALL, cloudy), (ALL, cloudy), (ALL, cloudy)]) == {}


def test_unobserved_pixels_keep_their_counts_within_a_valid_date():
    a = box(10, 10, 10, 10)
    half = ~box(0, 0, 40, 16)                   # 60 % observed, the region's left part hidden
    t = AlertTracker(SHAPE, PX)
    ev = run(t, [(a, ALL), (NONE, half), (a, ALL)])
    # the hidden columns (10..15) were mine on dates 0 and 2 with no clear view between: active;
    # the seen columns (16..19) were seen clear on date 1: their run restarted (not active yet)
    assert ev == {2: [("new", 1, 0, 6000.0, 6000.0)]}


def test_two_separate_sites_get_two_regions_and_a_touching_patch_is_growth():
    a, b = box(2, 2, 8, 8), box(25, 25, 8, 8)
    touch = box(2, 10, 8, 8)                    # adjacent to a
    t = AlertTracker(SHAPE, PX)
    ev = run(t, [(a | b, ALL), (a | b, ALL), (a | b | touch, ALL), (a | b | touch, ALL)])
    assert [e[:2] for e in ev[1]] == [("new", 1), ("new", 2)]
    assert ev[3] == [("growth", 1, 0, 12800.0, 6400.0)]


def test_never_mined_raises_nothing():
    t = AlertTracker(SHAPE, PX)
    assert run(t, [(NONE, ALL)] * 6) == {}


def test_config_validation_and_trend():
    with pytest.raises(ValueError):
        AlertConfig(k=0)
    with pytest.raises(ValueError):
        AlertConfig(min_valid_fraction=1.5)
    # the slope fitted over the series, in hectares per month (0.10 km2 = 10 ha more)
    months = (D[1] - D[0]).days / 30.4375
    t = trend([(D[0], 0.10), (D[1], 0.20)])
    assert t.label == "growing" and t.ha_per_month == pytest.approx(10 / months) and t.se_ha_per_month is None
    assert trend([(D[0], 0.20), (D[1], None), (D[2], 0.05)]).label == "shrinking"
    assert trend([(D[0], 0.200), (D[1], 0.201)]).label == "stable"
    assert trend([(D[0], 0.2)]).label == "unknown" and "fewer than 2" in trend([(D[0], 0.2)]).text()
    # grows over the series, then dips at the last date: still growing (the last step alone said shrinking)
    grows = [(D[i], v) for i, v in enumerate([0.00, 0.05, 0.10, 0.16, 0.21, 0.19])]
    g = trend(grows)
    assert g.label == "growing" and g.se_ha_per_month is not None and g.ha_per_month > 2 * g.se_ha_per_month
    assert g.text().startswith("growing (+") and "ha/month over 6 dates" in g.text()
    # noise around a flat line: stable, whatever its last step
    assert trend([(D[i], v) for i, v in enumerate([0.10, 0.14, 0.09, 0.13, 0.10, 0.14])]).label == "stable"
