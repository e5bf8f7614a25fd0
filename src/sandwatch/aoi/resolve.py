"""The one rule that turns what a user passes as an area of interest into a geometry.

``predict``, ``monitor`` and ``evaluate`` (through manifest observations) all call
:func:`resolve_aoi`, so ``--rivers FILE`` (river vectors, buffered) and ``--aoi FILE`` (a ready
AOI, :class:`AoiFile`, used as it is) mean the same in every command, in ``sandwatch aoi`` and in
the manifest (``rivers:`` / ``aoi:``), and an empty AOI is the same one-line error everywhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from shapely.geometry.base import BaseGeometry

from sandwatch.errors import SandwatchError
from sandwatch.published import AOI_BUFFER_M


@dataclass(frozen=True)
class AoiFile:
    """A ready AOI polygon file, used as it is (no buffer): ``--aoi FILE``, the manifest's ``aoi:``."""

    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))


def aoi_choice(rivers=None, aoi=None):
    """What a command's ``--rivers`` / ``--aoi`` say, as :func:`resolve_aoi` takes it: river
    vectors (a path, buffered), :class:`AoiFile` (used as it is), ``"auto"``/``"none"``, or None
    when neither is given. Both at once is a one-line error."""
    ready = aoi is not None and str(aoi).lower() not in ("none", "auto")
    if rivers is not None and aoi is not None and str(aoi).lower() != "none":
        raise SandwatchError.about("--rivers", "given with --aoi", "use one: --rivers FILE (buffered) or --aoi FILE (as is)")
    if rivers is not None:
        return Path(rivers)
    return AoiFile(aoi) if ready else (None if aoi is None else str(aoi).lower())


def resolve_aoi(aoi, scene, *, buffer_m: float = AOI_BUFFER_M, required: bool = False,
                what: str = "--aoi") -> BaseGeometry | None:
    """The AOI as a shapely geometry in the scene's CRS, or None for the whole scene.

    ``aoi``:

    * None or ``"none"``: the whole scene (None); with ``required`` a one-line error instead;
    * ``"auto"``: the scene's water index (:func:`~sandwatch.aoi.aoi_from_water`), buffered;
    * a path: river vectors buffered by ``buffer_m`` (polygons as they are with 0), reprojected
      and clipped to the scene (:func:`~sandwatch.aoi.aoi_from_rivers`);
    * an :class:`AoiFile`: its polygons as they are, reprojected and clipped to the scene;
    * a manifest observation (``.aoi``, ``.rivers``): :func:`~sandwatch.aoi.aoi_for_observation`;
    * a shapely geometry, taken as already in the scene's CRS.

    ``scene`` is a Scene (a :class:`~sandwatch.grid.Grid` is enough unless the water index is
    needed). An empty result is a :class:`SandwatchError` naming the source and the fix.
    """
    from sandwatch.aoi.core import aoi_for_observation, aoi_from_rivers, require_aoi
    from sandwatch.aoi.water import aoi_from_water

    grid = getattr(scene, "grid", scene)
    other = "" if required else ", or --aoi none"
    if aoi is None or (isinstance(aoi, str) and aoi.lower() == "none"):
        if required:
            raise SandwatchError.about(what, "is required", "pass river vectors or an AOI polygon file")
        return None
    if isinstance(aoi, str) and aoi.lower() == "auto":
        return require_aoi(aoi_from_water(scene, buffer_m=buffer_m), getattr(scene, "source", "scene"),
                         "no water found in the scene", f"pass river vectors with {what} FILE{other}")
    if isinstance(aoi, AoiFile):
        if not aoi.path.exists():
            raise SandwatchError.about(aoi.path, "no such AOI file", "pass an AOI polygon file (GeoJSON/GeoPackage)")
        return require_aoi(aoi_from_rivers(aoi.path, grid, buffer_m=0.0), aoi.path, "no AOI polygon on the scene",
                           f"check the file covers the scene (river lines go to --rivers, which buffers them){other}")
    if isinstance(aoi, (str, os.PathLike)):
        path = Path(aoi)
        if not path.exists():
            raise SandwatchError.about(path, "no such AOI file",
                                       "pass river vectors or an AOI polygon file (GeoJSON/GeoPackage)"
                                       + ("" if required else ", 'auto' or 'none'"))
        near = f"no river within {buffer_m:g} m of the scene" if buffer_m > 0 else "no polygon on the scene"
        return require_aoi(aoi_from_rivers(path, grid, buffer_m=buffer_m), path, near,
                         f"check the file covers the scene (lines need a buffer > 0){other}")
    if hasattr(aoi, "geom_type"):
        return require_aoi(aoi, what, "the geometry passed has no area", "pass a polygon in the scene's CRS")
    if hasattr(aoi, "scene") and (hasattr(aoi, "rivers") or hasattr(aoi, "aoi")):
        return require_aoi(aoi_for_observation(aoi, scene, buffer_m=buffer_m), getattr(aoi, "id", what),
                         "the observation's AOI misses its scene", "check its aoi:/rivers: file in the manifest")
    raise SandwatchError.about(what, f"cannot use {type(aoi).__name__} as an area of interest",
                               "pass 'auto', 'none', a vector file or a shapely geometry")

