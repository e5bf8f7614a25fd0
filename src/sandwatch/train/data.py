"""Torch datasets that read training and validation windows through the stage contracts.

* :class:`ObservationSource`: one manifest observation opened through ``sandwatch.imagery``
  (scene), ``sandwatch.labels`` (mask + confidence weights) and ``sandwatch.aoi`` (the river
  AOI). It pickles small (the scene is reopened lazily in each DataLoader worker) and reads
  only the windows asked for (rasterio windowed reads).
* :class:`EpochSampler`: yields ``(epoch, scene, k)`` items for the epoch Lightning sets;
  the window itself is a pure function of the item (see :mod:`sandwatch.train.sampler`).
* :class:`TrainWindows`: item -> normalised image, 0/1 target, per-pixel weight
  (confidence x valid: nodata weighs 0), with the item's dihedral augmentation.
* :class:`PoolWindows`: the same from a fixed pool of windows per scene, for the feature cache.
* :class:`ValWindows`: a fixed grid of windows over each validation AOI.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import rasterio.features
import torch
from torch.utils.data import Dataset, Sampler

from sandwatch.bands import Normalization
from sandwatch.grid import Grid, Window
from sandwatch.published import AOI_BUFFER_M, WINDOW_PX
from sandwatch.train.sampler import SceneWindows, epoch_items, grid_windows

POOL_EPOCH = 2**31 - 1  # the "epoch" the fixed pool of the feature cache is drawn with


class WindowSource(Protocol):
    """What the datasets need from one observation (the real one is :class:`ObservationSource`)."""

    name: str

    @property
    def grid(self) -> Grid: ...
    @property
    def aoi(self) -> Any: ...          # shapely geometry in grid CRS, or None (whole grid)
    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]: ...    # (C,h,w) reflectance, valid (h,w)
    def labels(self, window: Window) -> tuple[np.ndarray, np.ndarray]: ...  # mask uint8, weight float32


class ObservationSource:
    """A manifest observation read through ``imagery``, ``labels`` and ``aoi``."""

    def __init__(self, obs, bands: Sequence[str], *, buffer_m: float = AOI_BUFFER_M,
                 high_weight: float = 1.0, low_weight: float = 0.5, low_target: float = 1.0):
        self.obs = obs
        self.name = obs.id
        self.bands = tuple(bands)
        self.buffer_m = float(buffer_m)
        self.high_weight, self.low_weight = float(high_weight), float(low_weight)
        self.low_target = float(low_target)
        self._scene = None
        self._polygons = None
        self._aoi = None
        self._lock = threading.Lock()

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_scene"] = None      # reopened lazily in the worker process
        state["_polygons"] = None
        state["_lock"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def scene(self):
        if self._scene is None:
            self._scene = self.obs.open_scene()
        return self._scene

    @property
    def grid(self) -> Grid:
        return self.scene.grid

    @property
    def aoi(self):
        if self._aoi is None:
            from sandwatch.aoi import aoi_for_observation

            self._aoi = aoi_for_observation(self.obs, self.scene, self.buffer_m)
        return self._aoi

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        return self.scene.read(window, self.bands)

    def labels(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """``(target, weight)``: target uint8 0/1, or float32 with Low-confidence pixels at
        ``low_target`` (soft targets) when that is below 1; weight by confidence."""
        from sandwatch.labels import ConfidenceWeights, polygons_on_grid, rasterize_labels

        weights = ConfidenceWeights(high=self.high_weight, low=self.low_weight)
        if self.obs.annotations is None:
            return np.zeros(window.shape, np.uint8), np.ones(window.shape, np.float32)
        if self._polygons is None:
            self._polygons = polygons_on_grid(self.obs.annotations, self.grid)
        if self.low_target >= 1.0:
            return rasterize_labels(self._polygons, self.grid, window, weights)
        # one pass: the identity weights give each pixel its polygon's confidence (High 1, Low 0.5)
        mask, conf = rasterize_labels(self._polygons, self.grid, window, ConfidenceWeights())
        inside = mask > 0
        weight = np.where(inside, weights.weight(conf), weights.background).astype(np.float32)
        target = np.where(inside, ConfidenceWeights(high=1.0, low=self.low_target).weight(conf), 0.0)
        return target.astype(np.float32), weight


def aoi_mask(aoi, grid: Grid, window: Window) -> np.ndarray:
    """Boolean (h, w): pixel centre inside the AOI (all True when ``aoi`` is None)."""
    if aoi is None:
        return np.ones(window.shape, bool)
    if aoi.is_empty:
        return np.zeros(window.shape, bool)
    return rasterio.features.geometry_mask([aoi], out_shape=window.shape,
                                           transform=grid.window_transform(window), invert=True)


def dihedral(a: np.ndarray, d: int) -> np.ndarray:
    """One of the 8 rotations/flips of the last two axes: flip when ``d & 4``, then rot90 ``d & 3`` times."""
    if d & 4:
        a = np.flip(a, axis=-1)
    if d & 3:
        a = np.rot90(a, k=d & 3, axes=(-2, -1))
    return np.ascontiguousarray(a)


class EpochSampler(Sampler):
    """``(epoch, scene, k)`` items of one epoch, shuffled per (seed, epoch); DDP-aware.

    Lightning calls :meth:`set_epoch` before each epoch (also after a resume), so the order and
    the windows of epoch ``e`` are the same whatever happened before.
    """

    def __init__(self, counts: Sequence[int], seed: int = 0, shuffle: bool = True, epoch_source=None):
        self.counts = [int(c) for c in counts]
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0
        # Lightning creates the first iterator of a (resumed) fit before it calls set_epoch, and
        # worker prefetching pulls items at once: asking the trainer itself is always right.
        self.epoch_source = epoch_source

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _rank(self) -> tuple[int, int]:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def __iter__(self):
        if self.epoch_source is not None:
            self.epoch = int(self.epoch_source())
        rank, world = self._rank()
        for s, k in epoch_items(self.counts, self.seed, self.epoch, shuffle=self.shuffle, rank=rank, world_size=world):
            yield (self.epoch, int(s), int(k))

    def __len__(self) -> int:
        _, world = self._rank()
        return math.ceil(sum(self.counts) / world)


class _WindowReader:
    """Reads a window of a source: normalised image, target, weight, valid.

    ``normalization``: one :class:`Normalization` for every source, or one per source
    (per-scene normalisation). ``augment``: an ``AugmentConfig`` whose photometric changes are
    applied to training reads that pass a generator (``rng``), with the band names ``bands``.
    """

    def __init__(self, sources: Sequence[WindowSource], normalization: Normalization | Sequence[Normalization],
                 augment=None, bands: Sequence[str] = ()):
        self.sources = list(sources)
        if isinstance(normalization, Normalization):
            normalization = [normalization] * len(self.sources)
        self.normalizations = list(normalization)
        self.augment = augment if augment is not None and getattr(augment, "photometric", False) else None
        self.bands = tuple(bands)

    @property
    def normalization(self) -> Normalization:
        return self.normalizations[0]

    def read_item(self, s: int, window: Window, d: int, rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
        src = self.sources[s]
        x, valid = src.read(window)
        x = np.nan_to_num(np.asarray(x, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        if self.augment is not None and rng is not None:
            from sandwatch.train.augment import photometric

            x = photometric(x, valid, rng, self.augment, self.bands)
        x = self.normalizations[s](x)
        x[:, ~valid] = 0.0
        mask, weight = src.labels(window)
        weight = np.where(valid, weight, 0.0).astype(np.float32)
        return {"image": dihedral(x, d), "target": dihedral(mask[None].astype(np.float32), d),
                "weight": dihedral(weight[None], d), "valid": dihedral(valid[None].astype(np.float32), d)}


class TrainWindows(Dataset, _WindowReader):
    """Random windows with their centre inside the AOI; items come from :class:`EpochSampler`."""

    def __init__(self, sources: Sequence[WindowSource], plans: Sequence[SceneWindows | None],
                 normalization: Normalization | Sequence[Normalization], *, size: int = WINDOW_PX, seed: int = 0,
                 rot90: bool = True, flip: bool = True, augment=None, bands: Sequence[str] = ()):
        _WindowReader.__init__(self, sources, normalization, augment, bands)
        self.plans = list(plans)
        self.size, self.seed, self.rot90, self.flip = int(size), int(seed), rot90, flip

    @property
    def counts(self) -> list[int]:
        return [p.n_windows if p is not None else 0 for p in self.plans]

    def window_of(self, epoch: int, s: int, k: int) -> tuple[Window, int]:
        return self.plans[s].window(self.seed, epoch, s, k, self.size, rot90=self.rot90, flip=self.flip)

    def __len__(self) -> int:
        return sum(self.counts)

    def __getitem__(self, item):
        epoch, s, k = item
        window, d = self.window_of(epoch, s, k)
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, int(epoch), int(s), int(k), 48271]) \
            if self.augment is not None else None
        out = self.read_item(s, window, d, rng)
        del out["valid"]            # already in the weight (0 on nodata); only validation needs it
        out["key"] = np.array([s, k, d], np.int64)
        return {k2: torch.from_numpy(v) for k2, v in out.items()}


class PoolWindows(TrainWindows):
    """Training items drawn from a fixed pool of windows per scene and their 8 dihedral variants.

    Pool window ``j`` of scene ``s`` is drawn once (from the seed alone); an epoch of scene
    ``s`` is the first ``n`` keys of a per-epoch permutation of the pool's ``pool x 8``
    ``(j, d)`` keys. With the default pool size ``ceil(n / 8)`` one epoch uses every key once,
    so after the first epoch every item's encoder features are in the cache.

    Items whose key is in :attr:`cached_keys` (set by the trainer before each epoch) read
    nothing: the batch carries only their key, and the module takes the features, the target
    and the weight from the cache (pool windows and their labels never change in a run).
    """

    def __init__(self, *args, pool_sizes: Sequence[int], **kw):
        super().__init__(*args, **kw)
        self.pool_sizes = [int(p) for p in pool_sizes]
        self.cached_keys: frozenset = frozenset()
        self._perms: dict[tuple[int, int], np.ndarray] = {}

    def key_of(self, epoch: int, s: int, k: int) -> tuple[int, int]:
        perm = self._perms.get((epoch, s))
        if perm is None:
            n = self.pool_sizes[s] * 8
            perm = np.random.default_rng([self.seed & 0xFFFFFFFF, int(epoch), int(s), 104729]).permutation(n)
            if len(self._perms) > 256:
                self._perms.clear()
            self._perms[(epoch, s)] = perm
        key = int(perm[k % len(perm)])
        return key // 8, key % 8

    def pool_window(self, s: int, j: int) -> Window:
        return self.plans[s].window(self.seed, POOL_EPOCH, s, j, self.size)[0]

    def __getitem__(self, item):
        epoch, s, k = item
        j, d = self.key_of(epoch, s, k)
        if not self.rot90:
            d &= 4
        if not self.flip:
            d &= 3
        window = self.pool_window(s, j)
        key = (s, j, d)
        if key in self.cached_keys:
            res = {"target": None, "weight": None, "image": None}
        else:
            out = self.read_item(s, window, d)   # weight is already 0 on nodata
            res = {k2: torch.from_numpy(out[k2]) for k2 in ("image", "target", "weight")}
        res["key"] = torch.tensor([s, j, d], dtype=torch.int64)
        return res


def collate_pool(items: list[dict]) -> dict[str, torch.Tensor]:
    """Collate :class:`PoolWindows` items: ``key`` and ``miss`` for all, ``image``, ``target``
    and ``weight`` only for the items not in the cache (None when every item is cached)."""
    out = {"key": torch.stack([it["key"] for it in items]),
           "miss": torch.tensor([it["image"] is not None for it in items])}
    for k in ("image", "target", "weight"):
        got = [it[k] for it in items if it[k] is not None]
        out[k] = torch.stack(got) if got else None
    return out


class ValWindows(Dataset, _WindowReader):
    """A fixed grid of windows over each validation AOI; ``eval`` marks the pixels scored
    (valid and inside the AOI)."""

    def __init__(self, sources: Sequence[WindowSource], normalization: Normalization | Sequence[Normalization], *,
                 size: int = WINDOW_PX, stride: int | None = None):
        _WindowReader.__init__(self, sources, normalization)
        self.items: list[tuple[int, Window]] = []
        for s, src in enumerate(self.sources):
            self.items.extend((s, w) for w in grid_windows(src.aoi, src.grid, size, stride))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        s, window = self.items[i]
        src = self.sources[s]
        out = self.read_item(s, window, 0)
        in_aoi = aoi_mask(src.aoi, src.grid, window)
        out["eval"] = ((out["valid"][0] > 0) & in_aoi)[None]
        out["index"] = np.array([s, i], np.int64)
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in out.items()}


def band_statistics(sources: Sequence[WindowSource], plans: Sequence[SceneWindows | None], *, size: int = WINDOW_PX,
                    seed: int = 0, windows: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and std of reflectance over up to ``windows`` training windows (valid pixels)."""
    counts = [p.n_windows if p is not None else 0 for p in plans]
    live = [s for s, c in enumerate(counts) if c > 0]
    sums = sq = n = None
    for i in range(windows):
        s = live[i % len(live)]
        w, _ = plans[s].window(seed, POOL_EPOCH - 1, s, i, size)
        x, valid = sources[s].read(w)
        x = np.asarray(x, np.float64)[:, valid]
        if sums is None:
            sums, sq, n = np.zeros(x.shape[0]), np.zeros(x.shape[0]), 0
        sums += x.sum(1)
        sq += (x**2).sum(1)
        n += x.shape[1]
    n = max(n or 0, 1)
    mean = sums / n
    std = np.sqrt(np.maximum(sq / n - mean**2, 1e-12))
    return mean, std


class ArraySource:
    """An in-memory :class:`WindowSource` (arrays on a grid): for tests, benchmarks, notebooks.

    ``image`` (C, H, W) reflectance, ``mask`` (H, W) 0/1, ``weight`` (H, W) confidence weights,
    ``valid`` (H, W) bool; reads outside the grid are padded (data 0, valid False).
    """

    def __init__(self, name: str, grid: Grid, image: np.ndarray, mask: np.ndarray, weight: np.ndarray | None = None,
                 valid: np.ndarray | None = None, aoi=None):
        self.name, self._grid, self._aoi = name, grid, aoi
        self.image = np.asarray(image, np.float32)
        self.mask = np.asarray(mask, np.uint8)
        self.weight = np.ones(self.mask.shape, np.float32) if weight is None else np.asarray(weight, np.float32)
        self.valid = np.ones(self.mask.shape, bool) if valid is None else np.asarray(valid, bool)

    @property
    def grid(self) -> Grid:
        return self._grid

    @property
    def aoi(self):
        return self._aoi

    def _cut(self, a: np.ndarray, window: Window, fill) -> np.ndarray:
        out = np.full(a.shape[:-2] + window.shape, fill, dtype=a.dtype)
        inner = window.clip(self._grid.height, self._grid.width)
        if inner is not None:
            rel = inner.relative_to(window)
            out[(...,) + rel.slices()] = a[(...,) + inner.slices()]
        return out

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        return self._cut(self.image, window, 0), self._cut(self.valid, window, False)

    def labels(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        return self._cut(self.mask, window, 0), self._cut(self.weight, window, 1.0)
