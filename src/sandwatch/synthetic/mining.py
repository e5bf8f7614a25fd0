"""Sand mining in a synthetic river landscape: where clusters go, how far they have progressed
at a date, and how a cluster is painted into the surface maps (pits, churned sand, stockpiles,
the access track; abandoned pits settling and regrowing).

The functions take the :class:`~sandwatch.synthetic.landscape.SiteLandscape` they work on
(``land``) and read its static geography; they are kept apart from it to keep each module small.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import rasterio.features
from affine import Affine
from scipy import ndimage
from shapely.geometry import LineString

from sandwatch.synthetic.spectra import Surface, smooth_noise


@dataclass
class ClusterPlan:
    """One mining cluster of a site: where its pits go, its track, when it starts and stops."""

    index: int
    cx: float
    cy: float
    radius: float
    seeds: np.ndarray         # (n, 2) x, y in order of excavation
    pit_r: np.ndarray         # (n,)
    disturb: float
    spot: tuple[float, float]  # stockpile spot on the bank
    track: LineString
    low: bool
    onset: float              # time fraction (0..1) at which mining starts
    stop: float               # time fraction after which it is abandoned (>1: never)
    p0: float                 # progress at onset
    turbid: float
    seed: int


def plan_mining(land, rng: np.random.Generator) -> list[ClusterPlan]:
    """Where the site's mining clusters are and when they start and stop (its ``kind``)."""
    plans: list[ClusterPlan] = []
    s = land.size
    kind = land.spec.kind
    wd = land.water_distance(1.0)
    step = 3
    sub = (slice(step // 2, None, step), slice(step // 2, None, step))
    cand = (land.bed_d[sub] < -4) & (wd[sub] > 3) & (wd[sub] < 28)
    ii, jj = np.nonzero(cand)
    ys, xs = ii * step + step // 2 + 0.5, jj * step + step // 2 + 0.5
    border = 30
    ok = (xs > border) & (xs < s - border) & (ys > border) & (ys < s - border)
    xs, ys = xs[ok], ys[ok]
    n_main = max(1, int(round(rng.uniform(2.5, 4.0) * s / 512)))
    n_total = n_main + (1 if kind == "growing" else 0)
    chosen: list[tuple[float, float]] = []
    order = rng.permutation(xs.size)
    for k in order:
        if len(chosen) >= n_total:
            break
        x, y = float(xs[k]), float(ys[k])
        if all(math.hypot(x - a, y - b) > 110 for a, b in chosen):
            chosen.append((x, y))
    for i, (cx, cy) in enumerate(chosen):
        late = kind == "growing" and i == len(chosen) - 1 and len(chosen) > 1
        radius = float(rng.uniform(20, 36))
        n = int(rng.integers(8, 16))
        along = np.array([land.c, land.sn])
        across = np.array([-land.sn, land.c])
        off = (rng.uniform(-1.5, 1.5, (n, 1)) * along + rng.uniform(-0.6, 0.6, (n, 1)) * across) * radius
        off[0] = 0
        seeds = np.array([cx, cy]) + off
        seeds = seeds[np.argsort(np.hypot(*(seeds - seeds[0]).T), kind="stable")]
        pit_r = rng.uniform(2.2, 6.0, n)
        u = land.u_of(cx, cy)
        iu = int(np.clip(round((u - land.u0) / land.du), 0, land.ugrid.size - 1))
        side = 1.0 if land.dc[min(int(cy), s - 1), min(int(cx), s - 1)] >= 0 else -1.0
        sx, sy = land.to_xy(np.array([u]), np.array([side * (land.bed_half[iu] + 3)]))
        spot = (float(sx[0]), float(sy[0]))
        end_d = land.road_dist if side == land.road_side else land.bed_half[iu] + rng.uniform(40, 90)
        ex, ey = land.to_xy(np.array([u + rng.uniform(-20, 20)]), np.array([side * end_d]))
        track = LineString([(cx, cy), spot, (float(ex[0]), float(ey[0]))])
        if kind == "growing":
            onset, stop, p0 = (0.5, 9.0, 0.6) if late else (0.0, 9.0, 0.35)
        elif kind == "stable":
            onset, stop, p0 = 0.0, 9.0, 0.8
        else:  # stopping
            onset, stop, p0 = 0.0, 0.5, 1.0
        plans.append(ClusterPlan(
            index=i, cx=cx, cy=cy, radius=radius, seeds=seeds, pit_r=pit_r,
            disturb=float(rng.uniform(6, 12)), spot=spot, track=track, low=bool(rng.random() < 0.2),
            onset=onset, stop=stop, p0=p0, turbid=float(rng.uniform(0.2, 0.8)),
            seed=int(rng.integers(2**31))))
    return plans


def progress(plan: ClusterPlan, kind: str, t: float) -> tuple[float, bool]:
    """(progress 0..1, active) of a cluster at time fraction t."""
    if t < plan.onset:
        return 0.0, False
    if plan.stop <= 1.0:
        return plan.p0, t < plan.stop
    span = max(1.0 - plan.onset, 1e-6)
    if kind == "growing":
        return plan.p0 + (1 - plan.p0) * (t - plan.onset) / span, True
    return plan.p0, True


def paint_cluster(land, plan: ClusterPlan, p: float, active: bool, months: float, surf, sec, wt, bright,
                  wd) -> np.ndarray | None:
    """Paint one cluster at progress ``p`` into the surface maps (in place); its mine mask."""
    s = land.size
    pts = np.vstack([plan.seeds, [plan.spot]])
    pad = int(plan.disturb + 20)
    c0 = max(0, int(pts[:, 0].min()) - pad)
    c1 = min(s, int(pts[:, 0].max()) + pad)
    r0 = max(0, int(pts[:, 1].min()) - pad)
    r1 = min(s, int(pts[:, 1].max()) + pad)
    if r1 <= r0 or c1 <= c0:
        return None
    win = (slice(r0, r1), slice(c0, c1))
    shape = (r1 - r0, c1 - c0)
    crng = np.random.default_rng(plan.seed)  # static per cluster: pits persist across dates
    n1 = smooth_noise(crng, shape, 2.5)
    n2 = smooth_noise(crng, shape, 4)
    hf = np.clip(0.55 + 0.4 * smooth_noise(crng, shape, 1.6), 0, 1)
    puddle_noise = smooth_noise(crng, shape, 1.5)
    yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.float32) + 0.5
    n_dug = int(math.ceil(p * len(plan.seeds)))
    shrink = max(0.55, 1 - months / 24) if not active else 1.0
    pits = np.zeros(shape, bool)
    for (sx, sy), r in zip(plan.seeds[:n_dug], plan.pit_r[:n_dug]):
        pits |= (np.hypot(xx - sx, yy - sy) / (r * shrink) + 0.35 * n1) < 1
    on_land = (wd[win] >= 0) & (land.bed_d[win] < 5)
    pits &= on_land
    dist = ndimage.distance_transform_edt(~pits) if pits.any() else np.full(shape, 1e9)
    reach = plan.disturb * (0.6 + 0.4 * p)
    if not active:
        reach *= max(0.3, 1 - months / 12)
    disturbed = (dist < reach + 2 * n2) & ~pits & on_land
    piles = np.zeros(shape, bool)
    if active:
        prng = np.random.default_rng(plan.seed + 1)
        for _ in range(int(prng.integers(2, 6))):
            along = prng.uniform(-12, 12)
            px = plan.spot[0] + along * land.c + prng.uniform(-3, 3) * -land.sn
            py = plan.spot[1] + along * land.sn + prng.uniform(-3, 3) * land.c
            piles |= (np.hypot(xx - px, yy - py) / prng.uniform(1.5, 3.0) + 0.2 * n2) < 1
        piles &= wd[win] >= 0
        # access track from the bank to the road, through vegetation and fields (drawn in its bbox)
        x0, y0, x1, y1 = plan.track.bounds
        tr0, tr1 = max(0, int(y0) - 1), min(s, int(y1) + 2)
        tc0, tc1 = max(0, int(x0) - 1), min(s, int(x1) + 2)
        if tr1 > tr0 and tc1 > tc0:
            tw = (slice(tr0, tr1), slice(tc0, tc1))
            track = rasterio.features.rasterize(
                [(plan.track, 1)], out_shape=(tr1 - tr0, tc1 - tc0), transform=Affine.translation(tc0, tr0),
                dtype="uint8").astype(bool) & (wd[tw] >= 0) & ~land.built[tw]
            surf[tw][track], sec[tw][track], wt[tw][track] = Surface.TRACK, Surface.DRY_SAND, 0.3
            bright[tw][track] = 1.0
    S, SE, W, B = surf[win], sec[win], wt[win], bright[win]
    if active:
        # churned sand: a mottle of wet and dry, darker where freshly dug
        S[disturbed], SE[disturbed] = Surface.DRY_SAND, Surface.WET_SAND
        W[disturbed] = hf[disturbed]
        fresh = disturbed & (dist < 0.5 * reach)
        S[fresh] = Surface.DISTURBED_SAND
        B[disturbed] = 1.0 + 0.12 * (hf[disturbed] - 0.5)
        puddles = disturbed & (puddle_noise > 1.8)
        S[puddles], SE[puddles], W[puddles] = Surface.PIT_WATER, Surface.WET_SAND, 0.3
        S[pits], SE[pits], W[pits] = Surface.PIT_WATER, Surface.TURBID_WATER, plan.turbid
        S[piles], SE[piles], W[piles] = Surface.STOCKPILE, Surface.DRY_SAND, 0.2
        B[piles] = 1.0 + 0.08 * n2[piles]
    else:
        regrow = min(0.6, months / 12)
        S[disturbed], SE[disturbed] = Surface.WET_SAND, Surface.GRASS if regrow > 0.2 else Surface.DRY_SAND
        W[disturbed] = np.clip(0.45 + 0.25 * (hf[disturbed] - 0.5) * (1 - regrow), 0, 1) if regrow <= 0.2 \
            else regrow
        B[disturbed] = 1.0
        S[pits], SE[pits], W[pits] = Surface.CLEAR_WATER, Surface.POND, 0.4
    B[pits] = 1.0
    out = np.zeros((s, s), bool)
    out[win] = pits | disturbed | piles
    return out
