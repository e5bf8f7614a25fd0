"""The report directory: ``metrics.json``, ``report.html`` (self-contained), PNGs and CSV.

::

    REPORT_DIR/
      metrics.json          # every number: config, per model pooled / per cluster / per scene
      report.html           # one file, images embedded as base64 data URIs
      scenes.csv            # the per-scene table
      comparison.csv        # model, parameters, AP, F1 at 0.5, best F1 (one row per model)
      pr_curve.png          # PR curves, 0.5 point (circle) and best-F1 point (star) marked
      overlays/<model>/<observation id>.png   # quicklook | probability | errors
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import html
import json
import os
from pathlib import Path

import numpy as np

from sandwatch.evaluate.core import SCOPES, ModelResult
from sandwatch.evaluate.overlays import _mpl, centre_lonlat, plot_overlay
from sandwatch.evaluate.people import area_rows, glossary_html, summary_html
from sandwatch.io import atomic_output



def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "model"


# ---- PR curve ---------------------------------------------------------------------------------
def plot_pr_curves(results: list[ModelResult], path: str | os.PathLike, scopes=SCOPES) -> Path:
    """One figure: a PR curve per model and scope, 0.5 point (o) and best-F1 point (*) marked."""
    plt = _mpl()
    fig, ax = plt.subplots(figsize=(9.6, 5.2), dpi=110)
    styles = {"image": "-", "aoi": "--"}
    for k, res in enumerate(results):
        colour = f"C{k}"
        for scope in scopes:
            acc = res.pooled(scope)
            m = acc.metrics(res.config.threshold)
            if m.ap is None:
                continue
            pts = acc.curve_points(2000)
            # step-wise, as AP sums it: precision P_n holds over (R_{n-1}, R_n]
            ax.step([0.0] + pts["recall"], pts["precision"][:1] + pts["precision"], where="pre", color=colour, ls=styles.get(scope, "-"),
                    label=f"{res.name} [{scope}] AP {m.ap:.3f}")
            if m.precision is not None and m.recall is not None:
                ax.plot([m.recall], [m.precision], "o", color=colour, ms=8, mec="black",
                        label=f"  @{m.threshold:g}: P {m.precision:.2f} R {m.recall:.2f} F1 {m.f1:.2f}")
            ax.plot([m.best_recall], [m.best_precision], "*", color=colour, ms=14, mec="black",
                    label=f"  best F1 {m.best_f1:.2f} @ {m.best_threshold:.2f}")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("Precision-recall, pixels pooled over the split")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.tight_layout()
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


# ---- tables -----------------------------------------------------------------------------------
def _fmt(v, digits=3):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def comparison_rows(results: list[ModelResult], scope: str = "image") -> list[dict]:
    rows = []
    for r in results:
        m = r.pooled(scope).metrics(r.config.threshold)
        rows.append({"model": r.name, "parameters": r.parameters, "scope": scope, "ap": m.ap,
                     "precision_at_0.5": m.precision, "recall_at_0.5": m.recall, "f1_at_0.5": m.f1,
                     "best_f1": m.best_f1, "best_threshold": m.best_threshold, "exact": m.exact})
    return rows


def scene_rows(result: ModelResult) -> list[dict]:
    rows = []
    t = result.config.threshold
    for obs_id, r in result.images.items():
        obs = result.observations[obs_id]
        row = {"model": result.name, "id": obs_id, "site": obs.site, "date": obs.date.isoformat(),
               "cluster": obs.cluster, "mine_pixels": r.counts.get("positive"), "aoi_pixels": r.counts.get("aoi")}
        for scope, acc in r.accumulators.items():
            m = acc.metrics(t)
            row.update({f"{scope}_ap": m.ap, f"{scope}_precision": m.precision, f"{scope}_recall": m.recall,
                        f"{scope}_f1": m.f1, f"{scope}_best_f1": m.best_f1})
        rows.append(row)
    return rows


def _write_csv(rows: list[dict], path: Path) -> Path:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with atomic_output(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return path


def _html_table(rows: list[dict], cols: list[tuple[str, str]], digits: int = 3) -> str:
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(k), digits))}</td>" for k, _ in cols) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f0f0f0}
td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #ddd;margin:4px 0}
.note{color:#555;font-size:13px}.summary{font-size:16px;line-height:1.5;background:#f6f8f2;padding:0.8em 1em;
border-left:4px solid #5a8f29}dl.glossary dt{font-weight:bold;margin-top:0.4em}dl.glossary dd{margin-left:1.5em}"""


def model_rows(results: list[ModelResult]) -> list[dict]:
    """What each model is: its name, checkpoint, architecture, size and the settings it predicted with."""
    rows = []
    for r in results:
        m = r.model
        rows.append({"model": r.name, "architecture": m.get("model", "–"),
                     "checkpoint": m.get("checkpoint") or (r.source if r.source != "mapping" else "–"),
                     "parameters": f"{r.parameters / 1e6:.2f} M" if r.parameters else "–",
                     "threshold": m.get("threshold", f"{r.config.threshold:g}"), "window": m.get("window", "–"),
                     "normalisation": m.get("normalization", "–"), "tta": m.get("tta", "–")})
    return rows


def write_report(results: list[ModelResult], out_dir: str | os.PathLike, *, split: str | None = "val",
                 overlays: bool = True, overlay_size: int = 768, headline_scope: str = "image") -> dict:
    """Write the report directory for one or several models; returns the metrics dict."""
    from sandwatch.evaluate.people import summary

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not results:
        raise ValueError("no results to report")
    config = results[0].config
    area_by_model = {r.name: area_rows(r, headline_scope) for r in results}
    models = model_rows(results)
    metrics = {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "split": split,
        "config": config.to_dict(),
        "headline_scope": headline_scope,
        "summary": {r.name: summary(r, headline_scope, area_by_model[r.name]) for r in results},
        "comparison": comparison_rows(results, headline_scope),
        "comparison_aoi": comparison_rows(results, "aoi"),
        "models": [r.to_dict() for r in results],
    }
    with atomic_output(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=1, default=_json_default) + "\n")
    _write_csv(metrics["comparison"] + metrics["comparison_aoi"], out / "comparison.csv")
    all_scene_rows = [row for r in results for row in scene_rows(r)]
    _write_csv(all_scene_rows, out / "scenes.csv")
    areas = [row for r in results for row in area_by_model[r.name]]
    _write_csv(areas, out / "areas.csv")
    pr = plot_pr_curves(results, out / "pr_curve.png")

    overlay_paths: dict[tuple[str, str], Path] = {}
    if overlays:
        for r in results:
            where = [centre_lonlat(img.grid) for img in r.images.values()]
            for obs_id, obs in r.observations.items():
                p = out / "overlays" / _safe(r.name) / f"{_safe(obs_id)}.png"
                ap = r.images[obs_id].accumulators["image"].metrics(config.threshold)
                title = f"{r.name} · {obs_id} · cluster {obs.cluster} · AP {_fmt(ap.ap)} · F1@{config.threshold:g} {_fmt(ap.f1)}"
                overlay_paths[(r.name, obs_id)] = plot_overlay(r.predictions[obs_id], obs, p, title=title,
                                                               threshold=config.threshold, max_size=overlay_size,
                                                               all_touched=config.all_touched, locator=where)

    # ---- HTML: first for people, then for the people who train models
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>sandwatch evaluation</title>"
             f"<style>{_CSS}</style></head><body>",
             "<h1>sandwatch evaluation</h1>",
             "<h2>In plain words</h2>"]
    parts += [summary_html(r.name, metrics["summary"][r.name], headline_scope) for r in results]
    acols = [("model", "model"), ("id", "scene"), ("mining_ha", "mining labelled (ha)"), ("flagged_ha", "flagged (ha)"),
             ("found_ha", "found (ha)"), ("missed_ha", "missed (ha)"), ("false_alarm_ha", "false alarm (ha)")]
    parts += ["<h2>Areas per scene</h2>", _html_table(areas, acols, digits=2),
              "<p class='note'>Scenes without labelled mining are listed too: everything flagged there is a "
              "false alarm. Terms are explained at the end.</p>",
              "<h2>The model</h2>", _html_table(models, [(k, k) for k in models[0]]),
              f"<p class='note'>split <b>{html.escape(str(split))}</b>; border crop {config.border} px; "
              f"low-confidence labels: <b>{html.escape(str(config.low_confidence))}</b>; threshold "
              f"{config.threshold:g}; created {metrics['created']}. Average precision is scikit-learn's "
              "step-wise definition on pixels pooled over the split. Scope <i>image</i>: the whole image; "
              "<i>aoi</i>: inside the river AOI.</p>"]
    cols = [("model", "model"), ("parameters", "parameters"), ("ap", "AP"), ("precision_at_0.5", "P@0.5"),
            ("recall_at_0.5", "R@0.5"), ("f1_at_0.5", "F1@0.5"), ("best_f1", "best F1"),
            ("best_threshold", "best thr.")]
    def sized(rows):
        return [{**r, "parameters": f"{r['parameters'] / 1e6:.2f} M" if r.get("parameters") else None} for r in rows]

    parts += ["<h2>Scores (whole image)</h2>", _html_table(sized(metrics["comparison"]), cols),
              "<h2>Scores (inside the AOI)</h2>", _html_table(sized(metrics["comparison_aoi"]), cols),
              "<h2>Precision-recall curve</h2>", _img(pr, "PR curve")]
    mcols = [("group", "group"), ("scope", "scope"), ("n_positive", "mine px"), ("n_pixels", "pixels"),
             ("ap", "AP"), ("precision", "P@0.5"), ("recall", "R@0.5"), ("f1", "F1@0.5"), ("best_f1", "best F1"),
             ("best_threshold", "best thr.")]
    for r, md in zip(results, metrics["models"]):
        parts.append(f"<h2>{html.escape(r.name)}: per cluster</h2>")
        rows = []
        for scope, clusters in md["clusters"].items():
            for c, m in clusters.items():
                rows.append({"group": f"cluster {c}", "scope": scope, **m})
        for scope, m in md["pooled"].items():
            rows.append({"group": "pooled", "scope": scope, **m})
        parts.append(_html_table(rows, mcols))
        parts.append(f"<h2>{html.escape(r.name)}: per scene</h2>")
        scols = [("id", "observation"), ("cluster", "cluster"), ("mine_pixels", "mine px"),
                 ("image_ap", "AP"), ("image_precision", "P@0.5"), ("image_recall", "R@0.5"), ("image_f1", "F1@0.5"),
                 ("aoi_ap", "AP (AOI)"), ("aoi_f1", "F1@0.5 (AOI)")]
        parts.append(_html_table(scene_rows(r), scols))
        parts.append("<p class='note'>AP is left out (–) for scenes without mine pixels, P@0.5 where nothing is "
                     "flagged. Panels: true colour with the labelled mining outlined in yellow (scale bar, grid "
                     "north; the small panel shows where the scene lies among the report's scenes); probability; "
                     "found green, false alarm red, missed blue.</p>")
        for obs_id in r.observations:
            if (r.name, obs_id) in overlay_paths:
                parts.append(_img(overlay_paths[(r.name, obs_id)], f"{r.name} {obs_id}"))
    parts += ["<h2>What the words mean</h2>", glossary_html(), "</body></html>"]
    with atomic_output(out / "report.html") as tmp:
        tmp.write_text("\n".join(parts))
    return metrics


def find_chromium() -> str | None:
    """A headless-capable Chromium/Chrome on PATH, or None."""
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(html_path: str | os.PathLike, png_path: str | os.PathLike, *, width: int = 1200,
               height: int = 2400, timeout: float = 120) -> Path:
    """Render ``report.html`` in headless Chromium to a PNG (to look at the report as a person
    would). Raises :class:`SandwatchError` when no Chromium is installed
    (``apt-get install -y chromium``)."""
    import subprocess

    from sandwatch.errors import SandwatchError

    exe = find_chromium()
    if exe is None:
        raise SandwatchError.about("chromium", "is not installed", "apt-get install -y chromium")
    png_path = Path(png_path)
    with atomic_output(png_path) as tmp:
        subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--screenshot={tmp}", f"--window-size={width},{height}",
                        Path(html_path).resolve().as_uri()],
                       check=True, timeout=timeout, capture_output=True)
        if not tmp.exists():
            raise SandwatchError.about(html_path, "was not rendered by Chromium", "open it in a browser instead")
    return png_path


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)
