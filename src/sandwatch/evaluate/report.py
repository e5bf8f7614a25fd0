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
import math
import os
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling

from sandwatch.evaluate.core import SCOPES, ModelResult, ProbabilityEncoding
from sandwatch.grid import Grid
from sandwatch.io import atomic_output

# colours (RGB 0..1) of the error map
TP_COLOUR = (0.10, 0.75, 0.20)   # green
FP_COLOUR = (0.90, 0.10, 0.10)   # red
FN_COLOUR = (0.15, 0.45, 1.00)   # blue
GT_COLOUR = "#ffd400"            # yellow outline


def _mpl():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


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


# ---- overlays ---------------------------------------------------------------------------------
def _decimated(grid: Grid, max_size: int) -> Grid:
    f = max(1, math.ceil(max(grid.width, grid.height) / max_size))
    w, h = math.ceil(grid.width / f), math.ceil(grid.height / f)
    t = grid.transform * Affine.scale(grid.width / w, grid.height / h)
    return Grid(grid.crs, t, w, h)


def overlay_arrays(prob_path, obs, max_size: int = 768, threshold: float = 0.5, all_touched: bool = True):
    """Decimated arrays for a picture: (rgb uint8 or None, probability float (NaN nodata), truth bool)."""
    from sandwatch.labels import rasterize_labels

    with rasterio.open(prob_path) as ds:
        grid = Grid.from_dataset(ds)
        small = _decimated(grid, max_size)
        enc = ProbabilityEncoding.of(ds)
        values = ds.read(1, out_shape=(small.height, small.width), resampling=Resampling.nearest)
        valid = ds.read_masks(1, out_shape=(small.height, small.width), resampling=Resampling.nearest) > 0
    prob = enc.probability(values)
    prob = np.where(valid & np.isfinite(prob), prob, np.nan)
    truth = np.zeros(small.shape, bool)
    if obs.annotations:
        truth = rasterize_labels(obs.annotations, small, all_touched=all_touched)[0].astype(bool)
    rgb = None
    try:
        scene = obs.open_scene()
        if scene.grid.same_as(grid):
            rgb = scene.quicklook(max_size=max(small.width, small.height))
            if rgb.shape[:2] != small.shape:
                rgb = _resize_nearest(rgb, small.shape)
    except Exception:  # noqa: BLE001 - a picture without its quicklook is still useful
        rgb = None
    return rgb, prob, truth


def _resize_nearest(img: np.ndarray, shape) -> np.ndarray:
    rows = (np.arange(shape[0]) * img.shape[0] / shape[0]).astype(int)
    cols = (np.arange(shape[1]) * img.shape[1] / shape[1]).astype(int)
    return img[rows][:, cols]


def error_map(prob: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """RGBA float image: TP green, FP red, FN blue, transparent elsewhere (and on nodata)."""
    pred = np.nan_to_num(prob, nan=-1.0) >= threshold
    valid = np.isfinite(prob)
    out = np.zeros(prob.shape + (4,), np.float32)
    for sel, colour in ((pred & truth, TP_COLOUR), (pred & ~truth, FP_COLOUR), (~pred & truth & valid, FN_COLOUR)):
        out[sel, :3] = colour
        out[sel, 3] = 0.85
    return out


def plot_overlay(prob_path, obs, path: str | os.PathLike, *, title: str = "", threshold: float = 0.5,
                 max_size: int = 768, all_touched: bool = True) -> Path:
    """Three panels: true colour + ground-truth outline | probability | TP / FP / FN."""
    plt = _mpl()
    from matplotlib.patches import Patch

    rgb, prob, truth = overlay_arrays(prob_path, obs, max_size, threshold, all_touched)
    h, w = prob.shape
    aspect = w / h
    fig_h = 4.6 if aspect >= 1 else min(9.0, 4.6 / max(aspect, 0.5))
    fig, axes = plt.subplots(1, 3, figsize=(min(15, max(7.5, 3 * (fig_h - 1) * aspect + 0.5)), fig_h), dpi=100)
    base = rgb if rgb is not None else np.dstack([np.nan_to_num(prob, nan=0.0)] * 3) * 0 + 0.35
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].imshow(base)
    axes[0].set_title("true colour + ground truth" if rgb is not None else "ground truth (no quicklook)", fontsize=9)
    im = axes[1].imshow(prob, cmap="magma", vmin=0, vmax=1, interpolation="nearest")
    axes[1].set_title("mining probability", fontsize=9)
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.02)
    faded = (base.astype(np.float32) / (255.0 if base.dtype == np.uint8 else 1.0)) * 0.5 + 0.25
    axes[2].imshow(faded)
    axes[2].imshow(error_map(prob, truth, threshold), interpolation="nearest")
    axes[2].set_title(f"errors at {threshold:g}", fontsize=9)
    if truth.any():
        for ax in axes:
            ax.contour(truth.astype(float), levels=[0.5], colors=[GT_COLOUR], linewidths=1.5)
    fig.legend(handles=[Patch(color=TP_COLOUR, label="true positive"), Patch(color=FP_COLOUR, label="false positive"),
                        Patch(color=FN_COLOUR, label="false negative"), Patch(color=GT_COLOUR, label="ground truth outline")],
               fontsize=8, loc="lower center", ncol=4, frameon=False)
    fig.suptitle(title or obs.id, fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
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


def _html_table(rows: list[dict], cols: list[tuple[str, str]]) -> str:
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(k)))}</td>" for k, _ in cols) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f0f0f0}
td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #ddd;margin:4px 0}
.note{color:#555;font-size:13px}"""


def write_report(results: list[ModelResult], out_dir: str | os.PathLike, *, split: str | None = "val",
                 overlays: bool = True, overlay_size: int = 768, headline_scope: str = "image") -> dict:
    """Write the report directory for one or several models; returns the metrics dict."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not results:
        raise ValueError("no results to report")
    config = results[0].config
    metrics = {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "split": split,
        "config": config.to_dict(),
        "headline_scope": headline_scope,
        "comparison": comparison_rows(results, headline_scope),
        "comparison_aoi": comparison_rows(results, "aoi"),
        "models": [r.to_dict() for r in results],
    }
    with atomic_output(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=1, default=_json_default) + "\n")
    _write_csv(metrics["comparison"] + metrics["comparison_aoi"], out / "comparison.csv")
    all_scene_rows = [row for r in results for row in scene_rows(r)]
    _write_csv(all_scene_rows, out / "scenes.csv")
    pr = plot_pr_curves(results, out / "pr_curve.png")

    overlay_paths: dict[tuple[str, str], Path] = {}
    if overlays:
        for r in results:
            for obs_id, obs in r.observations.items():
                p = out / "overlays" / _safe(r.name) / f"{_safe(obs_id)}.png"
                ap = r.images[obs_id].accumulators["image"].metrics(config.threshold)
                title = f"{r.name} · {obs_id} · cluster {obs.cluster} · AP {_fmt(ap.ap)} · F1@{config.threshold:g} {_fmt(ap.f1)}"
                overlay_paths[(r.name, obs_id)] = plot_overlay(r.predictions[obs_id], obs, p, title=title,
                                                               threshold=config.threshold, max_size=overlay_size,
                                                               all_touched=config.all_touched)

    # ---- HTML
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>sandwatch evaluation</title>"
             f"<style>{_CSS}</style></head><body>",
             "<h1>sandwatch evaluation</h1>",
             f"<p class='note'>split <b>{html.escape(str(split))}</b>; border crop {config.border} px; "
             f"low-confidence labels: <b>{config.low_confidence}</b>; threshold {config.threshold:g}; "
             f"created {metrics['created']}. Average precision is scikit-learn's step-wise definition on "
             "pixels pooled over the split. Scope <i>image</i>: the whole image; <i>aoi</i>: inside the river AOI.</p>"]
    cols = [("model", "model"), ("parameters", "parameters"), ("ap", "AP"), ("precision_at_0.5", "P@0.5"),
            ("recall_at_0.5", "R@0.5"), ("f1_at_0.5", "F1@0.5"), ("best_f1", "best F1"),
            ("best_threshold", "best thr.")]
    parts += ["<h2>Models (whole image)</h2>", _html_table(metrics["comparison"], cols),
              "<h2>Models (inside the AOI)</h2>", _html_table(metrics["comparison_aoi"], cols),
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
        parts.append("<p class='note'>AP is left out (–) for scenes without mine pixels. Overlays: true colour with "
                     "the ground truth outlined in yellow; probability; true positives green, false positives red, "
                     "false negatives blue.</p>")
        for obs_id in r.observations:
            if (r.name, obs_id) in overlay_paths:
                parts.append(_img(overlay_paths[(r.name, obs_id)], f"{r.name} {obs_id}"))
    parts.append("</body></html>")
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
