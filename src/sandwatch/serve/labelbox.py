"""Labelbox NDJSON in and out, for teams that annotate there too.

Export (:func:`to_ndjson`): one line per polygon in Labelbox's annotation-import NDJSON for
geospatial (tiled, EPSG:4326) data rows::

    {"uuid": "...", "dataRow": {"globalKey": "2021-01-15.tif"}, "name": "mining",
     "polygon": [{"x": LON, "y": LAT}, ...],
     "classifications": [{"name": "Confidence", "answer": {"name": "High"}}]}

(a MultiPolygon gives one line per part; holes are dropped: Labelbox polygons have none;
the note travels as a text classification ``note``).

Import (:func:`from_ndjson`) reads those lines and Labelbox *export* rows (``data_row`` +
``projects.*.labels[].annotations.objects[]``), objects with ``polygon`` ({x, y} or
{lng, lat} points) or a GeoJSON ``geojson``/``geometry``; Confidence from the classification
named Confidence (``answer``/``radio_answer`` ``name``/``value``/``title``), High when absent.
Rows for another data row than the scene (``globalKey``/``external_id`` not its file name or
stem) are skipped and counted, unless the file holds one data row only.
"""

from __future__ import annotations

import json
import uuid

from shapely.geometry import mapping, shape

from sandwatch.errors import SandwatchError
from sandwatch.serve.annotate import CONFIDENCE, check_feature

MAX_LINES = 20000


def _confidence(classifications) -> str:
    for c in classifications or []:
        if not isinstance(c, dict) or str(c.get("name", c.get("title", ""))).lower() != "confidence":
            continue
        ans = c.get("answer", c.get("radio_answer")) or {}
        word = ans if isinstance(ans, str) else ans.get("name", ans.get("value", ans.get("title", "")))
        word = str(word).strip().capitalize()
        if word in CONFIDENCE:
            return word
    return "High"


def _note(classifications) -> str:
    for c in classifications or []:
        if isinstance(c, dict) and str(c.get("name", "")).lower() == "note":
            ans = c.get("answer", c.get("text_answer")) or ""
            return ans if isinstance(ans, str) else str(ans.get("content", ""))
    return ""


def _geometry(obj: dict) -> dict | None:
    if isinstance(obj.get("polygon"), list):
        pts = [[float(p.get("x", p.get("lng"))), float(p.get("y", p.get("lat")))] for p in obj["polygon"]]
        if pts and pts[0] != pts[-1]:
            pts.append(pts[0])
        return {"type": "Polygon", "coordinates": [pts]}
    for key in ("geojson", "geometry"):
        if isinstance(obj.get(key), dict):
            return obj[key]
    return None


def _objects(row: dict):
    """(data row key, object) pairs of one NDJSON line."""
    if "projects" in row and isinstance(row.get("data_row"), dict):
        dr = row["data_row"]
        key = dr.get("global_key") or dr.get("external_id") or dr.get("id")
        for project in (row["projects"] or {}).values():
            for label in project.get("labels", []):
                for obj in (label.get("annotations") or {}).get("objects", []):
                    yield key, obj
        return
    dr = row.get("dataRow") or {}
    yield dr.get("globalKey") or dr.get("externalId") or dr.get("id"), row


def from_ndjson(text: str, scene_name: str, source: str = "Labelbox file") -> tuple[dict, int]:
    """(FeatureCollection to add, rows skipped for other data rows)."""
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if len(rows) >= MAX_LINES:
            raise SandwatchError(f"{source}: more than {MAX_LINES} lines; split the export")
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise SandwatchError(f"{source}: line {n} is not JSON ({err.msg}); upload the NDJSON Labelbox "
                                 "exported, one JSON object a line") from None
    try:
        pairs = [(k, o) for r in rows if isinstance(r, dict) for k, o in _objects(r)]
    except (AttributeError, TypeError) as err:      # a project, label or object that is not an object
        raise SandwatchError(f"{source}: not the layout of a Labelbox export ({err}); upload the NDJSON "
                             "Labelbox exported") from None
    keys = {k for k, _ in pairs}
    stem = scene_name.rsplit(".", 1)[0]
    features, skipped = [], 0
    for i, (key, obj) in enumerate(pairs):
        if len(keys) > 1 and key not in (scene_name, stem):
            skipped += 1
            continue
        try:
            geom = _geometry(obj) if isinstance(obj, dict) else None
            if geom is None:
                skipped += 1
                continue
            cls = obj.get("classifications")
            feat = {"type": "Feature", "geometry": geom,
                    "properties": {"confidence_class": _confidence(cls), "note": _note(cls)}}
        except (AttributeError, TypeError, ValueError) as err:
            raise SandwatchError(f"{source}: object {i} is not a Labelbox polygon with its classifications ({err}); "
                                 "upload the NDJSON Labelbox exported") from None
        features.append(check_feature(feat, i, source))
    return {"type": "FeatureCollection", "features": features}, skipped


def to_ndjson(fc: dict, scene_name: str, tool: str = "mining") -> str:
    """NDJSON text of a label FeatureCollection (see the module docstring)."""
    lines = []
    for f in fc["features"]:
        geom = shape(f["geometry"])
        props = f.get("properties") or {}
        cls = props.get("confidence_class", "High")
        classifications = [{"name": "Confidence", "answer": {"name": cls}}]
        if props.get("note"):
            classifications.append({"name": "note", "answer": props["note"]})
        for part in getattr(geom, "geoms", [geom]):
            ring = mapping(part)["coordinates"][0]
            lines.append(json.dumps({"uuid": str(uuid.uuid4()), "dataRow": {"globalKey": scene_name}, "name": tool,
                                     "polygon": [{"x": x, "y": y} for x, y, *_ in ring],
                                     "classifications": classifications}))
    return "\n".join(lines) + ("\n" if lines else "")
