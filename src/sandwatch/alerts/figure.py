"""The PNG of one alert: before / after / detection, side by side, around the alert region.

* **before**: true colour of the last valid date before the first detection (the place as
  it was), or a grey panel saying there is none;
* **after**: true colour on the event's date (or the latest valid date before it);
* **detection**: the alert region's pixels in red over the "after" image, dimmed.

Each panel covers the region's bounding box plus a margin (at least 64 px), read from the
monitored scenes (``Scene.quicklook``); a scene no longer on disk gives a grey panel.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import shapely

from sandwatch.grid import Grid, Window
from sandwatch.io import atomic_output


def _panel_window(geom, wgrid: Grid, margin: int = 20, min_px: int = 64) -> Window:
    minx, miny, maxx, maxy = geom.bounds
    w = wgrid.window_from_bounds(minx, miny, maxx, maxy)
    size = max(min_px, w.height + 2 * margin, w.width + 2 * margin)
    r0 = w.row + w.height // 2 - size // 2
    c0 = w.col + w.width // 2 - size // 2
    return Window(r0, c0, size, size)


def _quicklook(scene_path: str | None, window: Window) -> np.ndarray | None:
    if not scene_path:
        return None
    try:
        from sandwatch.imagery import open_scene

        return open_scene(scene_path).quicklook(window, max_size=512)
    except Exception:  # noqa: BLE001 - a moved or unreadable scene: a grey panel, never a failed alert
        return None


def _pick(observations: list[dict], before: dt.date | None = None, upto: dt.date | None = None) -> dict | None:
    valid = [o for o in observations if not o["gap"]]
    if before is not None:
        valid = [o for o in valid if o["date"] < before]
    if upto is not None:
        valid = [o for o in valid if o["date"] <= upto]
    return valid[-1] if valid else None


def alert_png(path: str | Path, event: dict, observations: list[dict], site_grid: Grid, window: Window,
              site: str) -> Path:
    """Write the PNG of ``event`` (a row of ``alert_events``, outline in the grid CRS)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from rasterio.features import rasterize

    wgrid = site_grid.window_grid(window)
    geom = shapely.from_wkt(event["wkt"])
    local = _panel_window(geom, wgrid)
    size = min(local.height, site_grid.height, site_grid.width)        # inside the scene: no clipping
    r0 = int(np.clip(window.row + local.row, 0, site_grid.height - size))
    c0 = int(np.clip(window.col + local.col, 0, site_grid.width - size))
    scene_win = Window(r0, c0, size, size)
    pgrid = site_grid.window_grid(scene_win)
    region = rasterize([geom], out_shape=pgrid.shape, transform=pgrid.transform, fill=0, default_value=1).astype(bool)
    first = _pick(observations, before=event["first_date"])
    last = _pick(observations, upto=event["date"])
    before = _quicklook(first and first["scene"], scene_win)
    after = _quicklook(last and last["scene"], scene_win)
    fig, axes = plt.subplots(1, 3, figsize=(9.6, 3.7), dpi=100)
    try:
        titles = [f"before ({first['date']})" if first else "before (no earlier date)",
                  f"after ({last['date']})" if last else "after (not available)",
                  f"{event['status']}: {event['area_m2'] / 1e4:.2f} ha"]
        for ax, img, title in zip(axes, (before, after, None), titles):
            ax.set_title(title, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            if img is not None:
                ax.imshow(img, interpolation="nearest")
            elif title.startswith(("before", "after")):
                ax.imshow(np.full((*region.shape, 3), 200, np.uint8))
                ax.text(0.5, 0.5, "no image", ha="center", va="center", transform=ax.transAxes, color="0.3")
        base = after if after is not None else np.full((*region.shape, 3), 128, np.uint8)
        if base.shape[:2] != region.shape:
            ys = np.linspace(0, region.shape[0] - 1, base.shape[0]).astype(int)
            xs = np.linspace(0, region.shape[1] - 1, base.shape[1]).astype(int)
            region = region[np.ix_(ys, xs)]
        det = (base.astype(np.float32) * 0.5).astype(np.uint8)
        det[region] = (230, 30, 30)
        axes[2].imshow(det, interpolation="nearest")
        fig.suptitle(f"{site}: alert {event['key']} (first detected {event['first_date']})", fontsize=10)
        fig.tight_layout()
        with atomic_output(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return Path(path)
