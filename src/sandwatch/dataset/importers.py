"""Import manifests written by other projects into a sandwatch :class:`Manifest`.

The original sand-mining research project (Böhnel et al., "sandmining-watch") keeps its dataset
as a JSON list, one dict per observation::

    {"name": "Kathajodi_Cuttack_85-85_20-44_2022-05-01", "date": "2022-05-01",
     "latitude": 20.44, "longitude": 85.85, "cluster_id": 0,
     "uri_to_s1": ".../s1/..._s1.tif", "uri_to_s2": ".../s2/..._s2.tif",
     "uri_to_s2_l1c": ".../s2_l1c/..._s2_l1c.tif", "uri_to_rgb": ".../rgb/..._rgb.tif",
     "uri_to_annotations": ".../annotations/..._annotations.geojson",
     "uri_to_rivers": ".../rivers/..._rivers_1000m.geojson"}

How it maps (:func:`import_original_manifest`):

* ``site`` is the name without its ``_YYYY-MM-DD`` suffix, ``id`` is the name;
* ``scene`` is ``uri_to_s2`` (L2A, 12 bands), ``uri_to_s2_l1c`` (L1C, 13 bands) or
  ``uri_to_rgb`` (true colour R, G, B) by ``imagery``; ``bands`` is set to the band order of
  the original exports (they carry no band descriptions);
* the river files are already buffered by 1000 m, so they go to ``aoi`` (used as is), not to
  ``rivers``;
* ``cluster_id`` is kept as ``cluster`` (note: in that file it is per observation, and some
  sites have their two dates in different clusters; ``sandwatch dataset split`` re-clusters by
  site);
* with ``base_dir``, ``gs://BUCKET/PATH`` and ``https://storage.googleapis.com/BUCKET/PATH``
  URLs (and any other http(s) URL) become local paths: the first of ``DIR/PATH``,
  ``DIR/BUCKET/PATH`` and ``DIR/<file name>`` that exists, else ``DIR/PATH``;
* with ``path_maps`` (:class:`PathMap`, ``--map PATTERN=TARGET``), a URL matching a pattern
  becomes its target first: local copies with other names or another folder layout.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from pydantic import ValidationError

from sandwatch.bands import L1C_BANDS, L2A_BANDS, RGB_BANDS
from sandwatch.dataset.manifest import Manifest, save_manifest
from sandwatch.errors import SandwatchError
from sandwatch.published import AOI_BUFFER_M

#: Which field of the original manifest each ``imagery`` choice reads, and its band order.
IMAGERY_CHOICES: dict[str, tuple[str, tuple[str, ...]]] = {
    "s2": ("uri_to_s2", L2A_BANDS),          # Earth Engine S2_SR_HARMONIZED export, no B10
    "s2_l1c": ("uri_to_s2_l1c", L1C_BANDS),  # Earth Engine S2_HARMONIZED export, 13 bands
    "rgb": ("uri_to_rgb", RGB_BANDS),        # 8-bit true colour
}

_REQUIRED = ("name", "date", "uri_to_annotations", "uri_to_rivers")
_DATE_SUFFIX = re.compile(r"_(\d{4}-\d{2}-\d{2})$")
_GCS_HOSTS = {"storage.googleapis.com", "storage.cloud.google.com"}


def site_of(name: str) -> str:
    """The site of an original observation name: the name without its ``_YYYY-MM-DD`` suffix."""
    return _DATE_SUFFIX.sub("", name)


def url_to_local(url: str | None, base_dir: str | os.PathLike) -> str | None:
    """Map a ``gs://`` or ``http(s)://`` URL to a local copy under ``base_dir`` (see module doc).

    Local paths and None are returned unchanged.
    """
    if url is None or "://" not in url or url.startswith("file://"):
        return url
    base = Path(base_dir)
    parsed = urlparse(url)
    parts = [p for p in parsed.path.split("/") if p]
    if parsed.scheme == "gs":
        bucket = parsed.netloc
    elif parsed.netloc in _GCS_HOSTS and parts:
        bucket, parts = parts[0], parts[1:]
    else:
        bucket = parsed.netloc
    if not parts:
        return str(base / bucket)
    rel = Path(*parts)
    candidates = [base / rel, base / bucket / rel, base / rel.name]
    for c in candidates:
        if c.exists():
            return str(c.resolve())
    return str(candidates[0].resolve())


@dataclass(frozen=True)
class PathMap:
    """``PATTERN=TARGET``: a URL (or path) matching PATTERN becomes TARGET.

    In PATTERN, ``*`` matches within one path segment and ``**`` across segments; TARGET
    uses ``{1}``, ``{2}`` ... for what they matched and ``{name}`` for the URL's file name.
    ``gs://sandmining/data/*/s2/*.tif=mirror/{1}/{2}_l2a.tif`` maps
    ``gs://sandmining/data/bhargavi/s2/2018-12-03.tif`` to ``mirror/bhargavi/2018-12-03_l2a.tif``.
    """

    pattern: str
    target: str

    @classmethod
    def parse(cls, text: str, what: str = "--map") -> "PathMap":
        pattern, sep, target = str(text).rpartition("=")
        if not sep or not pattern or not target:
            raise SandwatchError.about(what, f"{text!r} is not PATTERN=TARGET",
                                       "write e.g. --map 'gs://bucket/*/s2/*.tif=mirror/{1}/{2}.tif'")
        captures = len(re.findall(r"\*\*|\*", pattern))
        used = [int(i) for i in re.findall(r"\{(\d+)\}", target)]
        unknown = re.findall(r"\{([^}0-9][^}]*)\}", target)
        if any(i < 1 or i > captures for i in used) or any(u != "name" for u in unknown):
            raise SandwatchError.about(what, f"{text!r}: TARGET may use {{1}} to {{{captures}}} (PATTERN has "
                                       f"{captures} wildcard{'s' * (captures != 1)}) and {{name}}",
                                       "number the wildcards of PATTERN from 1, left to right")
        return cls(pattern, target)

    def regex(self) -> re.Pattern:
        parts = re.split(r"(\*\*|\*)", self.pattern)
        body = "".join("(.*)" if p == "**" else "([^/]*)" if p == "*" else re.escape(p) for p in parts)
        return re.compile(f"^{body}$")

    def apply(self, url: str) -> str | None:
        """The mapped path, or None when ``url`` does not match."""
        m = self.regex().match(url)
        if m is None:
            return None
        return self.target.format(m.group(0), *m.groups(), name=Path(urlparse(url).path).name)


def _parse_date(value, name: str, where: Path) -> dt.date:
    if isinstance(value, dt.date):
        return value
    text = str(value)[:10]
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        m = _DATE_SUFFIX.search(name)
        if m:
            return dt.date.fromisoformat(m.group(1))
        raise SandwatchError.about(where, f"observation {name!r} has an unreadable date {value!r}",
                                   "write dates as YYYY-MM-DD") from None


def import_original_manifest(json_path: str | os.PathLike, out_path: str | os.PathLike | None = None, *,
                             imagery: str = "s2", base_dir: str | os.PathLike | None = None,
                             name: str | None = None, path_maps: tuple[PathMap, ...] = ()) -> Manifest:
    """Convert the original project's JSON manifest to a sandwatch :class:`Manifest`.

    ``imagery`` picks the scene of each observation: ``"s2"`` (L2A), ``"s2_l1c"`` or ``"rgb"``.
    ``base_dir`` maps URLs to local copies (see :func:`url_to_local`); ``path_maps`` are tried
    first (:class:`PathMap`; a relative target is relative to ``base_dir`` when given, else to
    the current folder); without either, URLs are kept.
    With ``out_path`` the manifest is also written there (atomically; local paths relative).
    """
    json_path = Path(json_path)
    if imagery not in IMAGERY_CHOICES:
        raise SandwatchError.about(f"imagery={imagery!r}", "is not a known imagery choice",
                                   f"use one of {', '.join(IMAGERY_CHOICES)}")
    field, bands = IMAGERY_CHOICES[imagery]
    try:
        data = json.loads(json_path.read_text())
    except FileNotFoundError:
        raise SandwatchError.about(json_path, "no such file", "check the path") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SandwatchError.about(json_path, f"is not valid JSON ({str(err).splitlines()[0]})",
                                   "pass the original project's dataset_*.json") from None
    if isinstance(data, dict) and isinstance(data.get("observations"), list):
        raise SandwatchError.about(json_path, "is already a sandwatch manifest", "use it directly, no import needed")
    if not isinstance(data, list) or not data:
        raise SandwatchError.about(json_path, "is not an original sandmining-watch manifest (a JSON list of observations)",
                                   "pass the original project's dataset_*.json")

    def local(value):
        if not value:
            return value
        for pm in path_maps:
            mapped = pm.apply(value)
            if mapped is not None:
                path = Path(mapped)
                if not path.is_absolute() and base_dir is not None:
                    path = Path(base_dir) / path
                return str(path.resolve())
        return url_to_local(value, base_dir) if base_dir is not None else value

    observations = []
    for i, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise SandwatchError.about(json_path, f"entry {i} is not an object", "each entry must be a JSON object")
        missing = [k for k in (*_REQUIRED, field) if not entry.get(k)]
        if missing:
            raise SandwatchError.about(json_path, f"entry {i} ({entry.get('name', '?')}) lacks {', '.join(missing)}",
                                       "fill those fields or choose another --imagery")
        obs_name = str(entry["name"])
        cluster = entry.get("cluster_id")
        observations.append(dict(
            id=obs_name,
            site=site_of(obs_name),
            date=_parse_date(entry["date"], obs_name, json_path),
            scene=local(entry[field]),
            annotations=local(entry["uri_to_annotations"]),
            rivers=None,
            aoi=local(entry["uri_to_rivers"]),  # already buffered by 1000 m
            bands=list(bands),
            cluster=int(cluster) if cluster is not None else None,
            latitude=entry.get("latitude"),
            longitude=entry.get("longitude"),
        ))
    try:
        manifest = Manifest.model_validate(
            dict(name=name or json_path.stem, aoi_buffer_m=AOI_BUFFER_M, observations=observations))
    except ValidationError as err:
        e = err.errors()[0]
        where = ".".join(str(x) for x in e["loc"])
        raise SandwatchError.about(json_path, f"cannot be imported ({where}: {e['msg']})",
                                   "fix the entry named in the message") from None
    if out_path is not None:
        save_manifest(manifest, out_path)
    return manifest
