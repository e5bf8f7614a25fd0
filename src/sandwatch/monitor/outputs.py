"""A site's outputs for people: ``timeseries.csv``, ``timeseries.png``, ``alerts.csv`` and
``alerts.geojson`` (all atomic), from the history the monitor stage keeps."""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import os
from pathlib import Path

from sandwatch.io import atomic_output
from sandwatch.monitor.series import AlertConfig
from sandwatch.vectors import write_feature_collection


# ---- outputs ----------------------------------------------------------------------------------
SERIES_COLUMNS = ["site", "date", "status", "valid_fraction", "mined_km2", "n_polygons", "alerts", "cloud_test",
                  "scene", "scene_hash", "polygons"]
ALERT_COLUMNS = ["site", "region", "kind", "date", "first_seen", "area_ha", "growth_ha", "latitude", "longitude",
                 "polygons"]


def _rel(path, base: Path) -> str:
    if not path:
        return ""
    try:
        return os.path.relpath(path, base)
    except ValueError:
        return str(path)


def write_outputs(out_dir: Path, site: str, series: list[dict], alert_rows: list[dict],
                  config: AlertConfig = AlertConfig()) -> dict[str, Path]:
    """timeseries.csv, timeseries.png, alerts.csv and alerts.geojson of one site."""
    kinds_by_date: dict[dt.date, list[str]] = {}
    for a in alert_rows:
        kinds_by_date.setdefault(a["date"], []).append(f"{a['kind']}#{a['region']}")
    paths = {"timeseries_csv": out_dir / "timeseries.csv", "timeseries_png": out_dir / "timeseries.png",
             "alerts_csv": out_dir / "alerts.csv", "alerts_geojson": out_dir / "alerts.geojson"}
    with atomic_output(paths["timeseries_csv"]) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(SERIES_COLUMNS)
            for o in series:
                w.writerow([site, o["date"].isoformat(), "gap" if o["gap"] else "valid", f"{o['valid_fraction']:.4f}",
                            "" if o["mined_km2"] is None else f"{o['mined_km2']:.6f}",
                            "" if o["n_polygons"] is None else o["n_polygons"],
                            ";".join(kinds_by_date.get(o["date"], [])), o.get("cloud_test") or "",
                            o["scene"], o["scene_hash"], _rel(o["polygons"], out_dir)])
    with atomic_output(paths["alerts_csv"]) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(ALERT_COLUMNS)
            for a in alert_rows:
                w.writerow([site, a["region"], a["kind"], a["date"].isoformat(), a["first_seen"].isoformat(),
                            f"{a['area_m2'] / 1e4:.4f}", f"{a['growth_m2'] / 1e4:.4f}",
                            "" if a["latitude"] is None else f"{a['latitude']:.6f}",
                            "" if a["longitude"] is None else f"{a['longitude']:.6f}", _rel(a["polygons"], out_dir)])
    features = []
    for a in alert_rows:
        features.append({"type": "Feature", "geometry": json.loads(a["geojson"]) if a["geojson"] else None,
                         "properties": {"site": site, "region": a["region"], "kind": a["kind"],
                                        "date": a["date"].isoformat(), "first_seen": a["first_seen"].isoformat(),
                                        "area_ha": round(a["area_m2"] / 1e4, 4),
                                        "growth_ha": round(a["growth_m2"] / 1e4, 4),
                                        "latitude": a["latitude"], "longitude": a["longitude"],
                                        "polygons": _rel(a["polygons"], out_dir)}})
    write_feature_collection(paths["alerts_geojson"], features)
    plot_series(paths["timeseries_png"], site, series, alert_rows, config)
    return paths


def plot_series(path: Path, site: str, series: list[dict], alert_rows: list[dict],
                config: AlertConfig = AlertConfig()) -> Path:
    """Mined area over time: a line over valid dates broken at gaps, gap dates marked at the
    bottom (grey x), alerts marked (new: red triangle, growth: orange, inactive: grey, resumed: purple)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    dates = [o["date"] for o in series]
    vals = [math.nan if o["gap"] or o["mined_km2"] is None else o["mined_km2"] for o in series]
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=110)
    try:
        if dates:
            ax.plot(dates, vals, "-o", color="#1f5fa8", ms=4, lw=1.5, label="mined area (valid dates)")
            gaps = [d for d, o in zip(dates, series) if o["gap"]]
            if gaps:
                ax.plot(gaps, [0] * len(gaps), "x", color="0.55", ms=7, ls="none",
                        label=f"gap (< {config.min_valid_fraction:.0%} observed)")
                for d in gaps:
                    ax.axvline(d, color="0.85", lw=4, zorder=0)
            by_date = {o["date"]: v for o, v in zip(series, vals)}
            style = {"new": ("^", "#d62728"), "growth": ("^", "#ff7f0e"), "inactive": ("v", "0.4"),
                     "resumed": ("^", "#9467bd")}
            for kind, (marker, colour) in style.items():
                pts = [(a["date"], by_date.get(a["date"], 0.0)) for a in alert_rows if a["kind"] == kind]
                pts = [(d, 0.0 if v is None or math.isnan(v) else v) for d, v in pts]
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker, color=colour, ms=10, ls="none",
                            label=f"alert: {kind}")
        ax.set_ylabel("mined area (km²)")
        ax.set_title(f"{site}: mined area in the AOI")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
        fig.autofmt_xdate()
        fig.tight_layout()
        with atomic_output(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return path
