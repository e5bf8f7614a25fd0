"""STAC items as scenes: an item's assets found by band name, its hrefs contained (relative
ones inside the item's folder, remote ones only from allowed hosts: :class:`StacAccess`), its
date and metadata taken over; an item saved beside a folder of downloaded COGs."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from sandwatch.bands import RGB_BANDS, band_order, canonical_band
from sandwatch.errors import SandwatchError
from sandwatch.imagery.sources import (
    BandFile,
    SceneParts,
    _band_file,
    _baseline_offset,
    _check_same_extent,
    _level_from_text,
    _open_header,
    date_from_text,
    is_url,
)


@dataclass(frozen=True)
class StacAccess:
    """What a STAC item's asset hrefs may reach.

    * Relative hrefs resolve inside the item's own folder (local) or below the item's URL
      (remote) only; ``../..`` escapes and absolute local paths are refused unless
      ``allow_outside``. A remote item never reaches local files unless ``allow_outside``.
    * http(s) hrefs: a file of the same name beside a *local* item is used first (an item
      downloaded with its assets reads offline); otherwise the network is used only when the
      item is remote itself (its own host) or the href's host is in ``allow_remote``
      (``"*"``: any host).
    """

    allow_outside: bool = False
    allow_remote: tuple[str, ...] = ()

    def host_allowed(self, url: str) -> bool:
        """Whether ``allow_remote`` names the URL's host (``HOST``, or ``HOST:PORT``), or is ``*``."""
        parsed = urlparse(url)
        allowed = {h.lower() for h in self.allow_remote}
        return "*" in allowed or (parsed.hostname or "").lower() in allowed or parsed.netloc.lower() in allowed


_default_access = StacAccess()


def set_stac_access(allow_outside: bool = False, allow_remote=()) -> StacAccess:
    """Set the process-wide :class:`StacAccess` that :func:`open_scene` uses when not told
    (the CLI's ``--allow-outside`` / ``--allow-remote``); returns the previous one."""
    global _default_access
    old = _default_access
    _default_access = StacAccess(bool(allow_outside), tuple(str(h) for h in (allow_remote or ())))
    return old


def stac_access(allow_outside: bool | None = None, allow_remote=None) -> StacAccess:
    base = _default_access
    return StacAccess(base.allow_outside if allow_outside is None else bool(allow_outside),
                      base.allow_remote if allow_remote is None else tuple(str(h) for h in allow_remote))


def _inside(path: str, folder: str) -> bool:
    return os.path.commonpath([path, folder]) == folder


def contained_href(location: str, key: str, href: str, access: StacAccess) -> str | None:
    """The path or URL an asset of the item at ``location`` may be read from (None: a scheme
    we do not read, e.g. ``s3://``); a one-line :class:`SandwatchError` when the href reaches
    outside what ``access`` allows."""
    from urllib.parse import urljoin

    parsed = urlparse(href)
    drive = re.match(r"^[A-Za-z]:[\\/]", href) is not None
    scheme = "" if drive else parsed.scheme
    if scheme not in ("", "file", "http", "https"):
        return None                   # s3:// and friends need credentials: use the http(s) twin asset
    item_remote = is_url(location)
    if scheme in ("http", "https"):
        host = parsed.netloc
        if not item_remote:
            beside = os.path.join(os.path.dirname(os.path.abspath(location)), os.path.basename(parsed.path))
            if parsed.path and os.path.isfile(beside):
                return beside         # the asset was downloaded with the item: no network
            if access.host_allowed(href):
                return href
            raise SandwatchError.about(
                location, f"asset '{key}' is on {host}, and a local item does not read from the network",
                f"put {os.path.basename(parsed.path) or 'the file'} beside the item, or pass --allow-remote {host}")
        item = urlparse(location)
        if (parsed.scheme, parsed.netloc) == (item.scheme, item.netloc) or access.host_allowed(href):
            return href
        raise SandwatchError.about(location, f"asset '{key}' is on another server ({host}) than the item "
                                   f"({item.netloc})", f"pass --allow-remote {host} if you trust it")
    if item_remote:
        if scheme == "file" or os.path.isabs(href) or drive:
            if access.allow_outside:
                return parsed.path if scheme == "file" else href
            raise SandwatchError.about(location, f"asset '{key}' of a remote item points at a local file ({href})",
                                       "refused; pass --allow-outside only if you trust this item")
        folder = location.split("?")[0].rsplit("/", 1)[0] + "/"
        url = urljoin(location, href)
        if not access.allow_outside and not url.startswith(folder):
            raise SandwatchError.about(location, f"asset '{key}' points outside the item's folder ({href})",
                                       "keep the assets beside the item, or pass --allow-outside if you trust it")
        return url
    folder = os.path.realpath(os.path.dirname(os.path.abspath(location)))
    path = parsed.path if scheme == "file" else href
    full = path if (os.path.isabs(path) or drive) else os.path.join(folder, path)
    if not access.allow_outside and not _inside(os.path.realpath(full), folder):
        raise SandwatchError.about(location, f"asset '{key}' points outside the item's folder ({href})",
                                   "keep the assets beside the item, or pass --allow-outside if you trust it")
    return os.path.normpath(full)


def _stac_metadata(props: dict, collection: str | None, item_id: str, when, parts: SceneParts, names) -> None:
    """Level, date, processing baseline and DN offset from a STAC item's properties."""
    parts.level = (_level_from_text(props.get("s2:product_type")) or _level_from_text(collection)
                   or ("L1C" if "B10" in names else ("L2A" if "SCL" in names else None)) or parts.level)
    parts.date = when.date() if when else (date_from_text(item_id) or parts.date)
    baseline = props.get("s2:processing_baseline") or props.get("sentinel:processing_baseline")
    parts.extra["processing_baseline"] = baseline
    parts.extra["stac_item"] = item_id
    applied = props.get("earthsearch:boa_offset_applied", props.get("sentinel:boa_offset_applied"))
    if applied is True:
        parts.offset, parts.offset_source = 0.0, "STAC earthsearch:boa_offset_applied=true"
    elif (off := _baseline_offset(baseline)) is not None:
        parts.offset, parts.offset_source = off, f"STAC s2:processing_baseline={baseline}"


def parts_from_stac(location: str, access: StacAccess | None = None) -> SceneParts:
    import pystac

    access = access or stac_access()
    if not is_url(location) and not os.path.exists(location):
        raise SandwatchError.about(location, "no such file", "check the path")
    try:
        item = pystac.Item.from_file(location)
    except Exception as err:  # noqa: BLE001 - pystac raises many types for bad JSON
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise SandwatchError.about(location, f"is not a readable STAC item ({first})",
                                   "pass a STAC Item JSON (type: Feature) with band assets") from None
    found: dict[str, tuple[str, str]] = {}
    for key, asset in item.assets.items():
        name = canonical_band(key)
        if name is None:
            eo = asset.extra_fields.get("eo:bands") or []
            if len(eo) == 1:
                name = canonical_band(eo[0].get("name", "")) or canonical_band(eo[0].get("common_name", ""))
        if name is None or name in RGB_BANDS or "visual" in (asset.roles or []):
            continue
        # the raw href, resolved here (not by pystac) and kept inside what ``access`` allows
        raw = asset.to_dict().get("href", asset.href)
        href = contained_href(location, key, raw, access)
        if href is None:
            continue
        if name in found and found[name][1] != href:
            raise SandwatchError.about(location, f"has two assets for band {name} ({found[name][0]}, {key})",
                                       "remove one of them from the item")
        found[name] = (key, href)
    if not [n for n in found if n != "SCL"]:
        raise SandwatchError.about(location, "has no Sentinel-2 band assets with http(s) or local hrefs",
                                   "use an item whose assets are named B02/blue/... and reachable")
    files: dict[str, BandFile] = {}
    for name, (_key, href) in found.items():
        ds = _open_header(href)
        with ds:
            files[name] = _band_file(name, href, 1, ds)
    ordered = [files[n] for n in band_order([n for n in files if n != "SCL"])]
    parts = SceneParts(source=str(location), bands=ordered, scl=files.get("SCL"),
                       remote=any(is_url(f.path) for f in files.values()))
    _check_same_extent(location, list(files.values()))
    _stac_metadata(item.properties, item.collection_id, item.id, item.datetime or item.common_metadata.start_datetime,
                   parts, set(files))
    return parts


def stac_item_beside(folder: Path) -> Path | None:
    """The one STAC item JSON (type Feature, with assets) in a band folder, if there is one."""
    import json

    found = []
    for p in sorted(folder.glob("*.json")):
        try:
            if p.stat().st_size > 5_000_000:
                continue
            d = json.loads(p.read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        if isinstance(d, dict) and d.get("type") == "Feature" and isinstance(d.get("assets"), dict) \
                and isinstance(d.get("properties"), dict):
            found.append(p)
    return found[0] if len(found) == 1 else None


def folder_item_metadata(folder: Path, parts: SceneParts) -> None:
    """Date, level, baseline and offset of a band folder from the STAC item beside its files."""
    path = stac_item_beside(folder)
    if path is None:
        return
    import pystac

    try:
        item = pystac.Item.from_file(str(path))
    except Exception:  # noqa: BLE001 - a JSON that is not a valid item says nothing
        return
    _stac_metadata(item.properties, item.collection_id, item.id,
                   item.datetime or item.common_metadata.start_datetime, parts, {f.name for f in parts.bands}
                   | ({"SCL"} if parts.scl else set()))
    parts.extra["stac_item"] = str(path)


def looks_like_stac(source: str) -> bool:
    path = urlparse(str(source)).path if is_url(source) else str(source)
    return path.lower().endswith(".json")


__all__ = ["StacAccess", "contained_href", "folder_item_metadata", "looks_like_stac", "parts_from_stac",
           "set_stac_access", "stac_access", "stac_item_beside"]
