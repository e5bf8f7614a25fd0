"""The dataset manifest: which scenes, which labels, where the rivers are.

A manifest is a YAML or JSON file::

    version: 1
    name: demo
    aoi_buffer_m: 1000          # AOI = within this distance of the rivers
    observations:
      - id: site00_2021-01-15    # unique; defaults to "<site>_<date>"
        site: site00             # one location; all its dates stay on one side of a split
        date: 2021-01-15
        scene: site00/2021-01-15.tif      # GeoTIFF/COG, band folder, STAC item JSON, or URL
        annotations: site00/2021-01-15_mining.geojson   # mining polygons (optional)
        rivers: site00/rivers.geojson      # river lines/polygons, buffered by aoi_buffer_m
        aoi: null                # or a ready-made AOI polygon file (used as is, no buffer)
        bands: null              # band names when the scene file does not carry them
        s1: null                 # a Sentinel-1 scene (VV, VH) of a nearby date, stacked on
                                 # the scene's 10 m grid as extra bands (optional)
        clear_fraction: null     # share of the site's area clear of cloud (from SCL; acquire fills it)
        cluster: null            # geographic cluster id (filled by `sandwatch dataset split`)
        split: null              # "train" or "val" (filled by `sandwatch dataset split`)
        latitude: 20.44          # site centre (optional; else read from the scene)
        longitude: 85.85

Relative paths are relative to the manifest file. :func:`load_manifest` resolves them, so
``Observation.scene`` etc. are absolute paths (or URLs) after loading.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sandwatch.errors import SandwatchError
from sandwatch.io import atomic_output
from sandwatch.published import AOI_BUFFER_M


def _is_url(text: str) -> bool:
    return "://" in text and not text.startswith("file://")


class Observation(BaseModel):
    """One scene of one site at one date, with its labels and river AOI."""

    model_config = ConfigDict(extra="forbid")

    id: str = ""
    site: str
    date: dt.date
    scene: str
    annotations: str | None = None
    rivers: str | None = None
    aoi: str | None = None
    bands: list[str] | None = None
    s1: str | None = None
    clear_fraction: float | None = Field(None, ge=0, le=1)
    cluster: int | None = None
    split: Literal["train", "val"] | None = None
    latitude: float | None = None
    longitude: float | None = None

    @model_validator(mode="after")
    def _default_id(self):
        if not self.id:
            self.id = f"{self.site}_{self.date.isoformat()}"
        return self

    def open_scene(self):
        """The observation's scene, with its Sentinel-1 scene stacked on it when ``s1`` is set
        (:func:`sandwatch.imagery.stack_scenes`): the one way every stage opens an observation."""
        from sandwatch.imagery import open_scene, stack_scenes

        scene = open_scene(self.scene, bands=self.bands)
        return stack_scenes(scene, open_scene(self.s1)) if self.s1 else scene

    @field_validator("latitude", "longitude")
    @classmethod
    def _degrees(cls, v, info):
        limit = 90 if info.field_name == "latitude" else 180
        if v is not None and not -limit <= v <= limit:
            raise ValueError(f"{info.field_name} must be within -{limit}..{limit}")
        return v


class Manifest(BaseModel):
    """A list of observations plus dataset-wide settings."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    name: str = "dataset"
    aoi_buffer_m: float = Field(AOI_BUFFER_M, ge=0)
    observations: list[Observation]

    @model_validator(mode="after")
    def _unique_ids(self):
        seen = set()
        for obs in self.observations:
            if obs.id in seen:
                raise ValueError(f"observation id {obs.id!r} appears twice")
            seen.add(obs.id)
        return self

    # ---- helpers ------------------------------------------------------------------------
    def sites(self) -> list[str]:
        return sorted({o.site for o in self.observations})

    def split_of(self, split: str) -> list[Observation]:
        return [o for o in self.observations if o.split == split]


_PATH_FIELDS = ("scene", "annotations", "rivers", "aoi", "s1")


def _resolve(value: str | None, base: Path) -> str | None:
    if value is None or _is_url(value):
        return value
    if value.startswith("file://"):
        value = value[len("file://"):]
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def _relativise(value: str | None, base: Path) -> str | None:
    if value is None or _is_url(value):
        return value
    try:
        return os.path.relpath(value, base)
    except ValueError:  # different drive on Windows
        return value


def load_manifest(path: str | os.PathLike) -> Manifest:
    """Read and validate a manifest (YAML or JSON); paths come back absolute."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SandwatchError.about(path, "no such manifest file", "check the path") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        first = str(err).splitlines()[0]
        raise SandwatchError.about(path, f"is not valid {'JSON' if path.suffix == '.json' else 'YAML'} ({first})",
                                   "fix the syntax") from None
    if isinstance(data, list):
        raise SandwatchError.about(path, "is a bare list, not a sandwatch manifest",
                                   "import it with `sandwatch dataset import`")
    if not isinstance(data, dict):
        raise SandwatchError.about(path, "is not a manifest (expected a mapping with 'observations')",
                                   "see `sandwatch dataset --help` for the format")
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as err:
        e = err.errors()[0]
        where = ".".join(str(x) for x in e["loc"])
        raise SandwatchError.about(path, f"invalid manifest at {where}: {e['msg']}",
                                   "see `sandwatch dataset --help` for the format") from None
    base = path.resolve().parent
    for obs in manifest.observations:
        for f in _PATH_FIELDS:
            setattr(obs, f, _resolve(getattr(obs, f), base))
    return manifest


def save_manifest(manifest: Manifest, path: str | os.PathLike) -> Path:
    """Write a manifest atomically; local paths are stored relative to the manifest's folder."""
    path = Path(path)
    base = path.resolve().parent
    data = manifest.model_dump(mode="json")
    for obs in data["observations"]:
        for f in _PATH_FIELDS:
            obs[f] = _relativise(obs[f], base)
    with atomic_output(path) as tmp:
        if path.suffix.lower() == ".json":
            tmp.write_text(json.dumps(data, indent=2) + "\n")
        else:
            tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
