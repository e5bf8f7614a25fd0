"""A river landscape with (or without) sand mining, as maps of surface types per date.

:class:`SiteLandscape` builds the static geography of one site (a meandering or braided river
in a wide sandy bed, riparian vegetation, a patchwork of fields, villages with tanks, roads) and,
for each date, a :class:`SceneTruth`: the surface map (codes of
:class:`~sandwatch.synthetic.spectra.Surface`, with a secondary surface and mixing weight for
within-class variation), the mine mask and the mining clusters with their annotation confidence.

Everything is in *pixel space*: ``x = col + 0.5``, ``y = row + 0.5``; the site's grid maps it to
map coordinates. Mining follows the site's ``kind``:

* ``"growing"``: pits multiply and the disturbed area spreads; a new cluster appears later;
* ``"stable"``: the same active mining at every date;
* ``"stopping"``: active at first, then abandoned: pits settle and shrink, scars revert (Low);
* ``"never"``: natural sandbars only.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field

import numpy as np
import rasterio.features
from affine import Affine
from scipy import ndimage
from shapely.geometry import LineString, Point
from shapely.ops import nearest_points

from sandwatch.synthetic.mining import ClusterPlan, paint_cluster, plan_mining, progress
from sandwatch.synthetic.spectra import Surface, smooth_noise

SITE_KINDS = ("growing", "stopping", "never", "stable")


@dataclass(frozen=True)
class SiteSpec:
    """One demo site: where, how big, which mining story, which dates."""

    name: str
    lon: float
    lat: float
    kind: str
    dates: tuple[dt.date, ...]
    size: int = 512
    seed: tuple[int, ...] = (0,)
    group: int = 0

    def __post_init__(self):
        if self.kind not in SITE_KINDS:
            raise ValueError(f"site kind {self.kind!r} is not one of {SITE_KINDS}")


@dataclass
class MineCluster:
    """The state of one mining cluster at one date."""

    index: int
    mask: np.ndarray          #: bool (H, W): pits + disturbed sand + stockpiles
    active: bool
    confidence: str           #: "High" or "Low" (as an annotator would mark it)


@dataclass
class SceneTruth:
    """What a synthetic scene shows: surface map, mixing, texture and mining."""

    date: dt.date
    surface: np.ndarray       #: uint8 (H, W) Surface codes
    secondary: np.ndarray     #: uint8 (H, W) second surface mixed in
    weight: np.ndarray        #: float32 (H, W) weight of the second surface, 0..1
    brightness: np.ndarray    #: float32 (H, W) texture multiplier around 1
    mine_mask: np.ndarray     #: bool (H, W) pixels disturbed by mining (exact, not the annotation)
    clusters: list[MineCluster] = field(default_factory=list)
    water_level: float = 1.0

    @property
    def mine_fraction(self) -> float:
        return float(self.mine_mask.mean())


def _noise1d(rng: np.random.Generator, n: int, scale: float) -> np.ndarray:
    """Zero-mean, unit-std smooth 1-D noise of length n with features of ~scale samples."""
    k = max(2, int(n / max(scale, 1)) + 4)
    coarse = rng.standard_normal(k)
    x = np.linspace(1, k - 2, n)
    out = ndimage.gaussian_filter1d(np.interp(x, np.arange(k), coarse), max(scale / 6, 0.5))
    out -= out.mean()
    s = out.std()
    return (out / s if s > 0 else out).astype(np.float32)


def _seasonal_water(date: dt.date) -> float:
    """Monsoon rivers: high in Aug-Sep, low in Feb-Apr (a width factor around 1)."""
    return 1.0 + 0.3 * math.cos(2 * math.pi * (date.month - 8.5) / 12)


class SiteLandscape:
    """Static geography of one site plus its mining story; :meth:`scene` renders one date."""

    def __init__(self, spec: SiteSpec):
        self.spec = spec
        s = self.size = spec.size
        ss = np.random.SeedSequence(list(spec.seed))
        self._date_seeds = ss.spawn(1)[0]
        rng = np.random.default_rng(ss)
        self._rng_seed = int(rng.integers(2**31))
        # ---- river geometry along the axis u, across v -------------------------------------
        self.theta = float(rng.uniform(0, math.pi))
        self.c, self.sn = math.cos(self.theta), math.sin(self.theta)
        half = 0.75 * s
        self.u0, self.du = -half, 0.5
        self.ugrid = np.arange(-half, half + self.du, self.du, dtype=np.float64)
        n = self.ugrid.size
        f = np.zeros(n)
        for _ in range(3):
            wl = rng.uniform(300, 1000)
            amp = rng.uniform(0.15, 0.5) * wl / (2 * math.pi) * 0.6
            f += amp * np.sin(2 * math.pi * self.ugrid / wl + rng.uniform(0, 2 * math.pi))
        wl = rng.uniform(1500, 4000)
        f += rng.uniform(0.2, 0.8) * wl / (2 * math.pi) * 0.15 * np.sin(2 * math.pi * self.ugrid / wl + rng.uniform(0, 6.3))
        f -= np.interp(0.0, self.ugrid, f)  # river passes near the centre
        f += rng.uniform(-0.08, 0.08) * s
        self.f = f
        self.nrm = np.sqrt(1 + np.gradient(f, self.du) ** 2)
        self.b0 = float(rng.uniform(25, 55))
        self.bed_half = self.b0 * (1 + 0.2 * _noise1d(rng, n, 400))
        n_threads = int(rng.choice([1, 2, 3], p=[0.45, 0.35, 0.2]))
        self.braided = n_threads > 1
        self.threads = []
        for k in range(n_threads):
            off = _noise1d(rng, n, 300) * 0.45 + (rng.uniform(-0.4, 0.4) if self.braided else 0.0)
            centre = 0.55 * self.bed_half * np.clip(off, -1, 1)
            w0 = rng.uniform(5, 13) if not self.braided else rng.uniform(2.5, 7)
            width = w0 * (1 + 0.3 * _noise1d(rng, n, 250))
            self.threads.append((centre, np.maximum(width, 1.2)))
        self.riparian = np.maximum(rng.uniform(3, 14) * (1 + 0.5 * _noise1d(rng, n, 200)), 1.0)
        self.road_side = float(rng.choice([-1.0, 1.0]))
        self.road_dist = self.b0 * 1.25 + float(rng.uniform(20, 45))
        self.wet_width = float(rng.uniform(3, 8))
        # ---- per-pixel coordinates ---------------------------------------------------------
        x = (np.arange(s, dtype=np.float32) + 0.5 - s / 2)[None, :]   # broadcast: no full-size x, y
        y = (np.arange(s, dtype=np.float32) + 0.5 - s / 2)[:, None]
        u = x * np.float32(self.c) + y * np.float32(self.sn)
        self.idx = np.clip(np.rint((u - self.u0) / self.du), 0, n - 1).astype(np.int32)
        del u
        v = -x * np.float32(self.sn) + y * np.float32(self.c)
        v -= self.f.astype(np.float32)[self.idx]
        v /= self.nrm.astype(np.float32)[self.idx]
        self.dc = v  # signed distance across the river from its centre line, pixels
        del v
        self.bed_noise = 2.5 * smooth_noise(rng, (s, s), 10)
        self.water_noise = 1.2 * smooth_noise(rng, (s, s), 6)
        self.moist_noise = smooth_noise(rng, (s, s), 20)
        self.island_noise = smooth_noise(rng, (s, s), 25)
        self.grove_noise = smooth_noise(rng, (s, s), 7)
        self.rip_noise = smooth_noise(rng, (s, s), 5)
        self.fine_noise = smooth_noise(rng, (s, s), 3)
        self.bed_d = (np.abs(self.dc) - self.bed_half[self.idx] + self.bed_noise).astype(np.float32)
        self._puddles(rng)
        # ---- fields -------------------------------------------------------------------------
        self._fields(rng)
        # ---- villages, tanks, roads --------------------------------------------------------
        self._villages(rng)
        # ---- mining plan -------------------------------------------------------------------
        self.clusters: list[ClusterPlan] = []
        if spec.kind != "never":
            self.clusters = plan_mining(self, rng)

    # ------------------------------------------------------------------ geometry helpers ----
    def to_xy(self, u: np.ndarray, across: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel-space x, y of the point at axis position u and across-distance ``across``."""
        i = np.clip(np.rint((np.asarray(u) - self.u0) / self.du).astype(int), 0, self.ugrid.size - 1)
        v = self.f[i] + np.asarray(across) * self.nrm[i]
        s = self.size
        return u * self.c - v * self.sn + s / 2, u * self.sn + v * self.c + s / 2

    def u_of(self, x: float, y: float) -> float:
        s = self.size
        return (x - s / 2) * self.c + (y - s / 2) * self.sn

    def river_line(self, margin: float = 0.05) -> LineString:
        """The river's centre line in pixel space, reaching a little beyond the scene."""
        u = self.ugrid[::8]
        x, y = self.to_xy(u, np.zeros_like(u))
        s = self.size
        inside = (x > -margin * s) & (x < (1 + margin) * s) & (y > -margin * s) & (y < (1 + margin) * s)
        ids = np.flatnonzero(inside)
        if ids.size < 2:  # pragma: no cover - the river passes the centre by construction
            ids = np.arange(x.size)
        lo, hi = ids[0], ids[-1] + 1
        return LineString(np.column_stack([x[lo:hi], y[lo:hi]]))

    def water_distance(self, level: float) -> np.ndarray:
        out = None
        for centre, width in self.threads:
            d = np.abs(self.dc - centre[self.idx]) - width[self.idx] * level
            out = d if out is None else np.minimum(out, d)
        return (out + self.water_noise).astype(np.float32)

    def _puddles(self, rng: np.random.Generator) -> None:
        """Natural pools on the sandbars: small, elongated along the flow."""
        s = self.size
        self.puddles = np.zeros((s, s), bool)
        wd = self.water_distance(1.0)
        ii, jj = np.nonzero((self.bed_d[::4, ::4] < -6) & (wd[::4, ::4] > 6))
        n = min(ii.size, int(rng.poisson(4 * s / 512)))
        for k in rng.choice(ii.size, n, replace=False) if n else []:
            cy, cx = ii[k] * 4 + 0.5, jj[k] * 4 + 0.5
            a, b = rng.uniform(4, 14), rng.uniform(1.5, 3.5)
            pad = int(a) + 3
            r0, r1, c0, c1 = max(0, int(cy) - pad), min(s, int(cy) + pad), max(0, int(cx) - pad), min(s, int(cx) + pad)
            yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.float32) + 0.5
            du = (xx - cx) * self.c + (yy - cy) * self.sn
            dv = -(xx - cx) * self.sn + (yy - cy) * self.c
            self.puddles[r0:r1, c0:c1] |= ((du / a) ** 2 + (dv / b) ** 2 + 0.3 * self.water_noise[r0:r1, c0:c1]) < 1

    # ------------------------------------------------------------------ fields --------------
    def _fields(self, rng: np.random.Generator) -> None:
        s = self.size
        th = self.theta + rng.uniform(-0.4, 0.4) + (math.pi / 2 if rng.random() < 0.5 else 0)
        x = (np.arange(s, dtype=np.float32) + 0.5 - s / 2)[None, :]
        y = (np.arange(s, dtype=np.float32) + 0.5 - s / 2)[:, None]
        a = x * np.float32(math.cos(th)) + y * np.float32(math.sin(th))
        b = -x * np.float32(math.sin(th)) + y * np.float32(math.cos(th))
        n_rows = int(1.6 * s / 5) + 8
        bounds = -0.8 * s + np.cumsum(rng.integers(5, 15, n_rows))
        row = np.searchsorted(bounds, b).astype(np.int64)
        widths = rng.integers(6, 23, n_rows + 1).astype(np.float32)
        offsets = rng.uniform(0, 1, n_rows + 1).astype(np.float32) * widths
        col = np.floor((a + offsets[row]) / widths[row]).astype(np.int64)
        del a, b
        self.field_id = (((row * 73856093) ^ (col * 19349663)) & 0xFFFF).astype(np.int32)
        self.field_kind = rng.choice(3, size=65536, p=[0.45, 0.35, 0.20]).astype(np.uint8)
        self.field_vigour = rng.uniform(0.45, 1.0, 65536).astype(np.float32)
        self.field_bright = rng.uniform(0.85, 1.15, 65536).astype(np.float32)
        self.field_mix = rng.uniform(0.0, 0.35, 65536).astype(np.float32)

    # ------------------------------------------------------------------ villages ------------
    def _villages(self, rng: np.random.Generator) -> None:
        s = self.size
        self.built = np.zeros((s, s), bool)
        self.village_trees = np.zeros((s, s), bool)
        self.tanks = np.zeros((s, s), bool)
        # riverside road (embankment road) following the smoothed river at a distance
        u = self.ugrid[::16]
        rx, ry = self.to_xy(u, np.full(u.shape, self.road_side * self.road_dist))
        self.road_line = LineString(np.column_stack([rx, ry]))
        dirt: list[LineString] = []
        n_v = int(rng.poisson(3 * (s / 512) ** 2)) + 1
        centres = []
        for _ in range(40 * n_v):
            if len(centres) >= n_v:
                break
            cx, cy = rng.uniform(0.05 * s, 0.95 * s, 2)
            r = rng.uniform(8, 22)
            i, j = int(cy), int(cx)
            if self.bed_d[i, j] < 25 + r or any(math.hypot(cx - a, cy - b) < 4 * r for a, b, _ in centres):
                continue
            centres.append((cx, cy, r))
        self.village_centres = centres
        for cx, cy, r in centres:
            pad = int(r * 1.5) + 12
            r0, r1 = max(0, int(cy) - pad), min(s, int(cy) + pad)
            c0, c1 = max(0, int(cx) - pad), min(s, int(cx) + pad)
            yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.float32) + 0.5
            d = np.hypot(xx - cx, yy - cy) / r + 0.25 * self.grove_noise[r0:r1, c0:c1]
            inside = d < 1
            blocks = self.fine_noise[r0:r1, c0:c1] > -0.3
            self.built[r0:r1, c0:c1] |= inside & blocks
            self.village_trees[r0:r1, c0:c1] |= inside & ~blocks
            if rng.random() < 0.75:  # village tank
                ang = rng.uniform(0, 2 * math.pi)
                tr = rng.uniform(3, 7)
                tx, ty = cx + (r + tr + rng.uniform(2, 8)) * math.cos(ang), cy + (r + tr + rng.uniform(2, 8)) * math.sin(ang)
                dt_ = np.hypot(xx - tx, yy - ty) / tr + 0.2 * self.rip_noise[r0:r1, c0:c1]
                self.tanks[r0:r1, c0:c1] |= (dt_ < 1) & (self.bed_d[r0:r1, c0:c1] > 10)
            p1, _ = nearest_points(self.road_line, Point(cx, cy))
            mid = ((cx + p1.x) / 2 + rng.uniform(-15, 15), (cy + p1.y) / 2 + rng.uniform(-15, 15))
            dirt.append(LineString([(cx, cy), mid, (p1.x, p1.y)]))
            if rng.random() < 0.5:
                edge = [(cx, 0), (cx, s), (0, cy), (s, cy)][int(rng.integers(4))]
                dirt.append(LineString([(cx, cy), edge]))
        shape = (s, s)
        ident = Affine.identity()
        self.road = rasterio.features.rasterize([(self.road_line.buffer(0.7), 1)], out_shape=shape,
                                                transform=ident, dtype="uint8").astype(bool)
        self.dirt = np.zeros(shape, bool)
        if dirt:
            self.dirt = rasterio.features.rasterize([(g, 1) for g in dirt], out_shape=shape, transform=ident,
                                                    dtype="uint8").astype(bool)
        outside = self.bed_d > 0
        self.road &= outside
        self.dirt &= outside & ~self.road

    # ------------------------------------------------------------------ one date -------------
    def scene(self, k: int) -> SceneTruth:
        """The surface map and mining of date index ``k`` of the site's dates."""
        spec, s = self.spec, self.size
        date = spec.dates[k]
        nd = len(spec.dates)
        t = k / (nd - 1) if nd > 1 else 1.0
        d0 = spec.dates[0]
        span_days = max((spec.dates[-1] - d0).days, 1)
        rng = np.random.default_rng(np.random.SeedSequence(list(spec.seed) + [1000 + k]))
        level = _seasonal_water(date) * float(rng.uniform(0.92, 1.08))
        surf = np.empty((s, s), np.uint8)
        sec = np.empty((s, s), np.uint8)
        wt = np.zeros((s, s), np.float32)
        bright = np.ones((s, s), np.float32)

        # fields, with crops changing between dates
        flip = rng.random(65536) < 0.35
        kind_k = np.where(flip, rng.choice(3, 65536, p=[0.45, 0.35, 0.20]), self.field_kind).astype(np.uint8)
        fk = kind_k[self.field_id]
        codes = np.array([Surface.CROP, Surface.BARE_SOIL, Surface.GRASS], np.uint8)
        seconds = np.array([Surface.BARE_SOIL, Surface.GRASS, Surface.CROP], np.uint8)
        surf[:] = codes[fk]
        sec[:] = seconds[fk]
        wt[:] = np.where(fk == 0, 1 - self.field_vigour[self.field_id], self.field_mix[self.field_id])
        bright[:] = self.field_bright[self.field_id]
        del fk
        grove = self.grove_noise > 1.9
        surf[grove], sec[grove] = Surface.VEGETATION, Surface.GRASS
        wt[grove] = np.clip(2.4 - self.grove_noise[grove], 0.0, 0.5)
        # riparian belt along the bed
        rip = (self.bed_d > 0) & (self.bed_d < self.riparian[self.idx] * (1 + 0.4 * self.rip_noise))
        surf[rip], sec[rip] = Surface.VEGETATION, Surface.GRASS
        wt[rip] = np.clip(0.3 + 0.3 * self.rip_noise[rip], 0, 0.8)
        bright[rip] = 1.0
        # sandy bed: dry sand, wetter towards the water
        wd = self.water_distance(level)
        bed = self.bed_d <= 0
        # wetter near the water, plus natural damp hollows on the bars (a confuser for mining)
        moist = (np.clip(1 - wd / self.wet_width, 0, 1) ** 1.5 + 0.45 * np.clip(self.moist_noise - 0.7, 0, None)
                 + 0.08 + 0.05 * self.fine_noise)
        surf[bed], sec[bed] = Surface.DRY_SAND, Surface.WET_SAND
        wt[bed] = np.clip(moist[bed], 0, 1)
        bright[bed] = 1.0 + 0.02 * self.fine_noise[bed]
        wet = bed & (wd < 1.5)
        surf[wet], sec[wet], wt[wet] = Surface.WET_SAND, Surface.DRY_SAND, 0.1
        pud = bed & self.puddles & (wd > 2)  # natural pools left on the bars
        surf[pud], sec[pud] = Surface.CLEAR_WATER, Surface.TURBID_WATER
        wt[pud] = 0.6
        island = bed & (self.island_noise > 1.6) & (wd > 8)
        surf[island], sec[island] = Surface.GRASS, Surface.VEGETATION
        wt[island] = np.clip(self.island_noise[island] - 1.6, 0, 0.9)
        # water: clear to turbid
        water = wd < 0
        turb = np.clip(0.45 + 0.2 * self.moist_noise + 0.15 * (level - 1) * 3, 0, 1)
        for plan in self.clusters:
            p, active = progress(plan, spec.kind, t)
            if active and p > 0:  # turbid plume near active mining
                win, d2 = self._local_sq(plan.cx, plan.cy, 90)
                turb[win] += 0.5 * np.exp(-d2 / (2 * 30.0**2))
        surf[water], sec[water] = Surface.CLEAR_WATER, Surface.TURBID_WATER
        wt[water] = np.clip(turb[water], 0, 1)
        bright[water] = 1.0
        # villages, tanks, roads
        surf[self.village_trees], sec[self.village_trees], wt[self.village_trees] = Surface.VEGETATION, Surface.BUILT, 0.15
        surf[self.built], sec[self.built] = Surface.BUILT, Surface.BARE_SOIL
        wt[self.built] = np.clip(0.3 + 0.2 * self.fine_noise[self.built], 0, 0.7)
        bright[self.built | self.village_trees] = 1.0
        surf[self.tanks], sec[self.tanks], wt[self.tanks] = Surface.POND, Surface.CLEAR_WATER, 0.4
        surf[self.dirt], sec[self.dirt], wt[self.dirt] = Surface.TRACK, Surface.BARE_SOIL, 0.3
        surf[self.road], sec[self.road], wt[self.road] = Surface.ROAD, Surface.BARE_SOIL, 0.15
        bright[self.road | self.dirt | self.tanks] = 1.0

        # mining
        mine = np.zeros((s, s), bool)
        clusters: list[MineCluster] = []
        for plan in self.clusters:
            p, active = progress(plan, spec.kind, t)
            if p <= 0:
                continue
            months = 0.0
            if not active:
                stop_date = d0 + dt.timedelta(days=plan.stop * span_days)
                months = max(0.0, (date - stop_date).days / 30.0)
            cmask = paint_cluster(self, plan, p, active, months, surf, sec, wt, bright, wd)
            if cmask is None or not cmask.any():
                continue
            mine |= cmask
            conf = "Low" if (not active or plan.low or cmask.sum() < 80) else "High"
            clusters.append(MineCluster(plan.index, cmask, active, conf))
        return SceneTruth(date, surf, sec, wt, bright, mine, clusters, level)

    def _local_sq(self, cx: float, cy: float, half: int) -> tuple[tuple[slice, slice], np.ndarray]:
        """A window of +-half pixels around (cx, cy), clipped, and squared distances in it."""
        s = self.size
        r0, r1 = max(0, int(cy) - half), min(s, int(cy) + half)
        c0, c1 = max(0, int(cx) - half), min(s, int(cx) + half)
        yy = (np.arange(r0, r1, dtype=np.float32) + 0.5 - cy) ** 2
        xx = (np.arange(c0, c1, dtype=np.float32) + 0.5 - cx) ** 2
        return (slice(r0, r1), slice(c0, c1)), yy[:, None] + xx[None, :]
