"""Stacking scenes: the bands of one scene put on another's 10 m grid (Sentinel-1 VV/VH of a
nearby date beside a Sentinel-2 scene), read through the Scene's own window reader."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence

from rasterio.warp import transform_bounds

from sandwatch.errors import SandwatchError
from sandwatch.imagery.scene import Scene, as_scene, open_scene


#: Days between a stacked scene and the primary beyond which :func:`stack_scenes` warns
#: (Sentinel-1 revisits every 12 days with one satellite).
STACK_MAX_DAYS = 12


def stack_scenes(primary, *others, max_days: int | None = STACK_MAX_DAYS) -> Scene:
    """``primary`` with the bands of ``others`` beside its own, on its grid.

    The usual use is Sentinel-1 backscatter (``VV``, ``VH``) of a nearby date stacked on a
    Sentinel-2 scene: each added band is read through the same window reader as the primary's
    coarser bands, resampled (bilinear) onto the primary's 10 m grid from whatever grid and CRS
    it has; pixels outside its footprint are nodata. Units, nodata and DN offsets stay each
    band's own. The result keeps the primary's source (so outputs are named after it), date,
    level and SCL; ``metadata["stack"]`` lists what was added. Bands that repeat a band of the
    primary, and scenes that do not overlap it, are errors; a date gap over ``max_days`` warns.
    """
    base = as_scene(primary)
    out = copy.copy(base)
    out._handles = {}
    files, convs = list(base._files), list(base._conv)
    resolution = dict(base.band_resolution)
    added = list(base.metadata.get("stack", []))
    for other in map(as_scene, others):
        clash = [b for b in other.bands if b in {f.name for f in files}]
        if clash:
            raise SandwatchError.about(other.source, f"repeats band(s) {','.join(clash)} of {base.source}",
                                       "stack scenes with other bands (Sentinel-1 VV,VH on Sentinel-2)")
        left, bottom, right, top = transform_bounds(other.grid.crs, base.grid.crs, *other.grid.bounds)
        bl, bb, br, bt = base.grid.bounds
        if left >= br or right <= bl or bottom >= bt or top <= bb:
            raise SandwatchError.about(other.source, f"does not overlap {base.source}",
                                       "stack a scene of the same place")
        if max_days is not None and other.date and base.date and abs((other.date - base.date).days) > max_days:
            warnings.warn(f"{other.source}: acquired {abs((other.date - base.date).days)} days from "
                          f"{base.source} (more than {max_days}); the stack mixes two states of the river",
                          stacklevel=2)
        files += other._files
        convs += other._conv
        resolution.update(other.band_resolution)
        out._remote = out._remote or other._remote
        added.append({"source": other.source, "date": other.date.isoformat() if other.date else None,
                      "bands": list(other.bands)})
    out._files, out._conv = tuple(files), tuple(convs)
    out.bands = tuple(f.name for f in files)
    out.band_resolution = resolution
    out.metadata = {**base.metadata, "stack": added}
    return out


def stack_each(scenes: Sequence, extras: Sequence, *, what: str = "--s1") -> list:
    """``scenes`` with ``extras[i]`` stacked on scene ``i`` (:func:`stack_scenes`); the two lists
    must be as long as each other (one line naming ``what`` otherwise). No extras: the scenes as given."""
    if not extras:
        return list(scenes)
    if len(extras) != len(scenes):
        raise SandwatchError.about(what, f"{len(extras)} scene(s) for {len(scenes)} scene(s) to stack them on",
                                   f"give {what} once per scene, in the same order")
    return [stack_scenes(open_scene(s), open_scene(e)) for s, e in zip(scenes, extras)]
