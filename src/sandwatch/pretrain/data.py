"""Unlabelled windows for pre-training, inside the river AOI of every scene given.

Scenes come from a manifest (every observation, or the splits named; annotations are never
read, observations without them are fine) or from a folder of scene files (each its own site,
AOI from the scene's water index). Window centres are drawn uniformly inside each AOI polygon
by the train stage's sampler (:mod:`sandwatch.train.sampler`), ``data.epoch_windows`` per epoch
shared by AOI area; every window, crop and colour change is a pure function of
``(seed, epoch, scene, k)``, so ``--resume`` repeats exactly what a run without a kill does.

MoCo items hold two views of one window (``image``, ``image2``): each a random resized crop
(``moco.crop_scale`` of the area, aspect 3/4..4/3) resized back to the window, one of the 8
rotations/flips and the train stage's colour/haze jitter. With ``data.seasonal`` and a site
with several dates on the same grid, the second view is the same place on another date
(SSL4EO-S12's seasonal contrast). MAE and MIM items hold one window (``image``), rotated/flipped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from sandwatch.bands import Normalization
from sandwatch.errors import SandwatchError
from sandwatch.grid import Window
from sandwatch.imagery.sources import date_from_text
from sandwatch.train.data import dihedral
from sandwatch.train.sampler import SceneWindows

SCENE_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2")


def folder_observations(folder: str | Path) -> list:
    """One observation per scene file in ``folder`` (recursively): site = the file's stem,
    date = the acquisition date in its name (:func:`~sandwatch.imagery.sources.date_from_text`: 2021-01-15,
    T33UUU_20170216T102101, ...; else 1970-01-01); no rivers: the AOI comes from the water index."""
    from sandwatch.dataset.manifest import Observation

    folder = Path(folder)
    if not folder.is_dir():
        raise SandwatchError.about(folder, "is not a folder of scenes", "set scenes: to a folder, or use manifest:")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in SCENE_SUFFIXES and p.is_file())
    if not files:
        raise SandwatchError.about(folder, f"holds no scene file ({', '.join(SCENE_SUFFIXES)})",
                                   "point scenes: at the folder of your Sentinel-2 GeoTIFFs")
    out = []
    for i, path in enumerate(files):
        date = date_from_text(path.name) or dt.date(1970, 1, 1)
        out.append(Observation(id=f"{i:03d}-{path.stem}", site=str(path.relative_to(folder).with_suffix("")),
                               date=date, scene=str(path)))
    return out


def pretrain_observations(cfg) -> tuple[list, float]:
    """The observations to pre-train on and the AOI buffer (metres) around their rivers."""
    from sandwatch.published import AOI_BUFFER_M

    if cfg.manifest:
        from sandwatch.dataset.manifest import load_manifest

        manifest = load_manifest(cfg.manifest)
        obs = [o for o in manifest.observations if not cfg.data.splits or o.split in cfg.data.splits]
        buffer_m = manifest.aoi_buffer_m
        if not obs:
            raise SandwatchError.about(cfg.manifest, f"has no observation in splits {cfg.data.splits}",
                                       "set data.splits: null to use every observation")
    else:
        obs, buffer_m = folder_observations(cfg.scenes), AOI_BUFFER_M
    return obs, cfg.data.aoi_buffer_m if cfg.data.aoi_buffer_m is not None else buffer_m


def seasonal_partners(sources: Sequence) -> list[list[int]]:
    """For each source, the other sources of the same site on the same grid (other dates)."""
    out = []
    for i, a in enumerate(sources):
        site = getattr(getattr(a, "obs", None), "site", None)
        out.append([j for j, b in enumerate(sources) if j != i and site is not None
                    and getattr(b.obs, "site", None) == site and b.grid.same_as(a.grid)])
    return out


def resized_crop(x: np.ndarray, rng: np.random.Generator, scale: tuple[float, float]) -> np.ndarray:
    """A random crop of ``scale`` of the area (aspect 3/4..4/3) of ``x`` (C, S, S), resized to S x S."""
    c, h, w = x.shape
    area = rng.uniform(*scale) * h * w
    aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
    ch = int(min(h, max(4, round((area / aspect) ** 0.5))))
    cw = int(min(w, max(4, round((area * aspect) ** 0.5))))
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    crop = torch.from_numpy(np.ascontiguousarray(x[:, top:top + ch, left:left + cw]))[None]
    return F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)[0].numpy()


class PretrainWindows(Dataset):
    """``(epoch, scene, k)`` -> one view (``kind`` 'mae', 'mim') or two views (``'moco'``) of a window."""

    def __init__(self, sources: Sequence, plans: Sequence[SceneWindows | None], norms: Sequence[Normalization], *,
                 size: int, seed: int = 0, kind: str = "moco", partners: Sequence[Sequence[int]] | None = None,
                 crop_scale: tuple[float, float] = (0.2, 1.0), augment=None, bands: Sequence[str] = ()):
        self.sources, self.plans, self.norms = list(sources), list(plans), list(norms)
        self.size, self.seed, self.kind = int(size), int(seed), kind
        self.partners = [list(p) for p in partners] if partners else [[] for _ in self.sources]
        self.crop_scale = tuple(crop_scale)
        self.augment = augment if augment is not None and augment.photometric else None
        self.bands = tuple(bands)

    @property
    def counts(self) -> list[int]:
        return [p.n_windows if p is not None else 0 for p in self.plans]

    def __len__(self) -> int:
        return sum(self.counts)

    def read(self, s: int, window: Window, rng: np.random.Generator | None) -> np.ndarray:
        """Normalised (C, h, w) float32 of source ``s`` (nodata 0), colour-jittered when ``rng``."""
        x, valid = self.sources[s].read(window)
        x = np.nan_to_num(np.asarray(x, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        if self.augment is not None and rng is not None:
            from sandwatch.train.augment import photometric

            x = photometric(x, valid, rng, self.augment, self.bands)
        x = self.norms[s](x)
        x[:, ~valid] = 0.0
        return x

    def __getitem__(self, item):
        epoch, s, k = item
        window, d = self.plans[s].window(self.seed, epoch, s, k, self.size)
        key = torch.tensor([s, k, d], dtype=torch.int64)
        if self.kind != "moco":            # mae, mim: one view
            return {"image": torch.from_numpy(dihedral(self.read(s, window, None), d)), "key": key}
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, int(epoch), int(s), int(k), 69069])
        other = int(rng.choice(self.partners[s])) if self.partners[s] else s
        views = []
        for src in (s, other):
            x = resized_crop(self.read(src, window, rng), rng, self.crop_scale)
            views.append(torch.from_numpy(dihedral(x, int(rng.integers(0, 8)))))
        return {"image": views[0], "image2": views[1], "key": key}
