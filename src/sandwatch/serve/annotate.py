"""Label files the annotate view edits: the mining-polygon GeoJSON that ``sandwatch labels``,
``dataset`` and ``train`` read.

A saved file is a FeatureCollection in EPSG:4326; each feature a Polygon or MultiPolygon with

* ``Confidence``: ``"High"`` or ``"Low"`` (the words ``sandwatch.labels`` reads: weights 1.0
  and 0.5), or ``0.75`` for Medium (a number in 0..1, read as it is);
* ``confidence_class``: ``High`` | ``Medium`` | ``Low`` (what the page shows and Labelbox gets);
* ``note``: free text (at most :data:`MAX_NOTE` characters).

Saving (:func:`save_labels`) checks every feature first (nothing is written when one is bad:
one line naming it), moves the current file to ``.versions/STEM.YYYYMMDDTHHMMSSffffffZ.geojson``
beside it (earlier versions are kept, never overwritten) and writes the new one atomically
(``sandwatch.io.atomic_output``: whole or absent, read back before the rename).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import shutil
from pathlib import Path

from shapely.geometry import mapping, shape

from sandwatch.errors import SandwatchError
from sandwatch.io import atomic_output, updating
from sandwatch.vectors import write_feature_collection

CONFIDENCE = {"High": "High", "Medium": 0.75, "Low": "Low"}
MAX_NOTE = 1000
MAX_FEATURES = 5000
MAX_VERTICES = 20000
VERSIONS_DIR = ".versions"


def confidence_class(props: dict) -> str:
    """High/Medium/Low of a feature's properties (``confidence_class`` first, then ``Confidence``)."""
    cls = props.get("confidence_class")
    if cls in CONFIDENCE:
        return cls
    conf = props.get("Confidence", props.get("confidence"))
    if isinstance(conf, str):
        word = conf.strip().capitalize()
        return word if word in CONFIDENCE else "High"
    if isinstance(conf, (int, float)) and math.isfinite(conf):
        return "High" if conf >= 0.875 else "Medium" if conf >= 0.625 else "Low"
    return "High"


def load_labels(path: Path) -> dict:
    """The label file as a FeatureCollection in EPSG:4326 with ``confidence_class`` and ``note``
    on every feature; an absent file is an empty collection."""
    if not path.is_file():
        return {"type": "FeatureCollection", "features": []}
    from sandwatch.vectors import read_vector

    gdf = read_vector(path, what="label file")
    if gdf.crs is not None and not gdf.crs.equals("EPSG:4326"):
        gdf = gdf.to_crs("EPSG:4326")
    features = []
    for _, row in gdf.iterrows():
        geom = row.geometry
        if geom is None or geom.is_empty or geom.geom_type not in ("Polygon", "MultiPolygon"):
            continue
        props = {k: v for k, v in row.items() if k != gdf.geometry.name}
        note = props.get("note")
        features.append({"type": "Feature", "geometry": mapping(geom),
                         "properties": {"confidence_class": confidence_class(props),
                                        "note": note if isinstance(note, str) else ""}})
    return {"type": "FeatureCollection", "features": features}


def _ring_ok(ring) -> bool:
    return (isinstance(ring, (list, tuple)) and len(ring) >= 4 and all(
        isinstance(p, (list, tuple)) and len(p) >= 2 and all(isinstance(v, (int, float)) and math.isfinite(v) for v in p[:2])
        and -180 <= p[0] <= 180 and -90 <= p[1] <= 90 for p in ring))


def check_feature(feature, index: int, source: str = "labels") -> dict:
    """One feature as it will be saved, or a one-line error naming it."""
    where = f"{source}: feature {index}"
    if not isinstance(feature, dict) or not isinstance(feature.get("geometry"), dict):
        raise SandwatchError(f"{where} has no geometry; draw a polygon")
    geom = feature["geometry"]
    gtype = geom.get("type")
    coords = geom.get("coordinates")
    polys = [coords] if gtype == "Polygon" else coords if gtype == "MultiPolygon" else None
    if not isinstance(polys, (list, tuple)) or not polys or not all(
            isinstance(p, (list, tuple)) and p and all(_ring_ok(r) for r in p) for p in polys):
        raise SandwatchError(f"{where} is not a polygon in longitude/latitude (type {str(gtype)[:20]}); "
                             "draw polygons only")
    if sum(len(r) for p in polys for r in p) > MAX_VERTICES:
        raise SandwatchError(f"{where} has more than {MAX_VERTICES} vertices; simplify it")
    props = feature.get("properties") or {}
    if not isinstance(props, dict):
        raise SandwatchError(f"{where} has properties that are not an object; save from the page")
    cls = props.get("confidence_class")
    if cls not in CONFIDENCE:
        raise SandwatchError(f"{where} has confidence {str(cls)[:20]!r}; choose High, Medium or Low")
    note = props.get("note") or ""
    if not isinstance(note, str) or len(note) > MAX_NOTE:
        raise SandwatchError(f"{where} has a note that is not text or longer than {MAX_NOTE} characters; shorten it")
    shapely_geom = shape(geom)
    if shapely_geom.is_empty or shapely_geom.area == 0:
        raise SandwatchError(f"{where} has no area; draw at least three distinct points")
    return {"type": "Feature", "geometry": {"type": gtype, "coordinates": coords},
            "properties": {"Confidence": CONFIDENCE[cls], "confidence_class": cls, "note": note}}


def check_collection(fc, source: str = "labels") -> list[dict]:
    if not isinstance(fc, dict) or fc.get("type") != "FeatureCollection" or not isinstance(fc.get("features"), list):
        raise SandwatchError(f"{source}: is not a GeoJSON FeatureCollection; save from the page")
    if len(fc["features"]) > MAX_FEATURES:
        raise SandwatchError(f"{source}: more than {MAX_FEATURES} polygons in one file; split the work by date")
    return [check_feature(f, i, source) for i, f in enumerate(fc["features"])]


def versions_dir(path: Path) -> Path:
    return path.parent / VERSIONS_DIR


def list_versions(path: Path) -> list[str]:
    """Earlier versions of a label file, oldest first (file names in ``.versions/``)."""
    folder = versions_dir(path)
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.glob(f"{path.stem}.*{path.suffix}"))


def save_labels(path: Path, fc, source: str = "labels") -> dict:
    """Check, keep the current file as a version, write ``fc`` atomically. Returns
    ``{"path", "features", "version"}`` (the version the previous file became, or None)."""
    features = check_collection(fc, source)
    version = None
    with updating(path):          # two saves at once: each keeps the other's file as a version
        if path.is_file():
            stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
            version = versions_dir(path) / f"{path.stem}.{stamp}{path.suffix}"
            with atomic_output(version) as tmp:      # a copy, so the label file itself is never missing
                shutil.copyfile(path, tmp)
        write_feature_collection(path, features)
    return {"path": str(path), "features": len(features), "version": version.name if version else None}


def features_from_text(text: str, source: str) -> dict:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise SandwatchError(f"{source}: is not JSON ({err.msg} at line {err.lineno}); send a GeoJSON "
                             "FeatureCollection") from None
    return data


def atomic_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_output(path) as tmp:
        Path(tmp).write_text(text)
    return Path(path)
