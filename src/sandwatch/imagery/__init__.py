"""Sentinel-2 scenes: bands by name on one 10 m grid, read window by window.

``open_scene(source)`` accepts

1. a multi-band GeoTIFF/COG. Band names come from the band descriptions (aliases such as
   ``vis-red`` or ``nir`` are understood) or from ``bands=``; without either, 13 bands are
   taken as the L1C order, 12 as the L2A order and 3 uint8 bands as true colour (R, G, B);
2. a folder with one file per band (``*_B02.jp2``, ``B02.tif``, or a SAFE product: its
   ``GRANULE/*/IMG_DATA``, with or without ``R10m/R20m/R60m``; the finest file of each band
   is used; ``SCL`` is exposed through :meth:`Scene.read_scl`, not in ``Scene.bands``);
3. a STAC item JSON, local or http(s); assets named ``B02``/``blue``/``coastal``/``scl`` ...,
   hrefs local or http(s) (read through GDAL's /vsicurl/ with range requests), relative hrefs
   resolved against the item's own location (not its ``self`` link). Hrefs are *contained*
   (:class:`~sandwatch.imagery.stac.StacAccess`): relative ones stay inside the item's
   folder, a local item reads its assets from beside it (an http href whose file lies beside
   the item is read there, offline) and uses the network only for hosts allowed with
   ``allow_remote``; a remote item reads from its own host only. A band folder with one STAC
   item beside its files takes date, level and offset from the item.

The scene grid is the grid of the finest band (10 m for Sentinel-2). Coarser bands are put
on it on the fly with a rasterio ``WarpedVRT`` read window by window:

* reflectance bands (20 m, 60 m) use **bilinear** resampling: smooth, no blocky 20/60 m
  steps at 10 m, and exact for linear gradients; nodata source pixels are left out of the
  kernel (GDAL renormalises the weights);
* the SCL class raster uses **nearest** neighbour, because classes must not be averaged.

Digital numbers convert as ``reflectance = (DN - offset) / scale``: Sentinel-2 scale 10000 and
offset 0 or 1000 (processing baseline 04.00 and later), true-colour images scale 255. How
the offset is decided is in :mod:`sandwatch.imagery.sources`; ``open_scene(offset=...)`` wins.
Nodata: the file's nodata value, else 0 for integer bands (NaN for float bands); a pixel is
valid only when all requested bands have data there. Windows may reach outside the grid.

Sentinel-1 backscatter (``VV``, ``VH``, read in dB; linear files are converted) is a scene of
its own, or extra bands on a Sentinel-2 scene's grid through :func:`stack_scenes` (an
observation's ``s1`` in the manifest). Units per band come from :mod:`sandwatch.bands`.

Scenes keep only paths and metadata; datasets open lazily per process and thread, so a scene
pickles cheaply to DataLoader and Dask workers.
"""

from sandwatch.imagery.scene import (
    BAND_RESAMPLING,
    DEFAULT_SAMPLE,
    LEVELS,
    SCL_RESAMPLING,
    Scene,
    as_scene,
    open_scene,
)
from sandwatch.imagery.sources import BandFile, date_from_text
from sandwatch.imagery.stack import STACK_MAX_DAYS, stack_each, stack_scenes
from sandwatch.imagery.stac import StacAccess, set_stac_access

__all__ = ["Scene", "as_scene", "open_scene", "stack_scenes", "stack_each", "STACK_MAX_DAYS", "BandFile", "StacAccess", "date_from_text", "set_stac_access", "LEVELS",
           "BAND_RESAMPLING", "SCL_RESAMPLING", "DEFAULT_SAMPLE"]
