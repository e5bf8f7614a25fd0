"""``sandwatch serve`` in a real headless Chromium (Playwright driving Debian's chromium) against
uvicorn on 127.0.0.1, on the demo-like project of ``test_serve_api``: the map loads, the
probability layer paints, the date slider moves, alerts are rejected and accepted (the
history changes), a Low polygon is drawn and saved and ``sandwatch labels rasterize`` burns it.

Set SANDWATCH_SERVE_SHOTS=DIR to keep the screenshots.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from sandwatch.cli.main import main
from test_serve_api import project  # noqa: F401  (module-scoped fixture)

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed (apt-get install -y chromium)")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """uvicorn serving the app on 127.0.0.1 in a thread."""

    def __init__(self, root: Path, **config):
        import uvicorn

        from sandwatch.serve import ServeConfig, create_app

        self.port = free_port()
        self.app = create_app(root, ServeConfig(port=self.port, reviewer="", **config))
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            assert time.time() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


def shot(page, name: str, tmp_path: Path) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path))
    keep = os.environ.get("SANDWATCH_SERVE_SHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / name)
    return path


TILES_DONE = """(sel) => { const imgs = [...document.querySelectorAll(sel)];
  return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0) }"""
#: opaque pixels of the probability layer's loaded tiles (drawn on a canvas: same origin)
PAINTED = """() => { let n = 0; const c = document.createElement('canvas'); c.width = c.height = 256;
  const ctx = c.getContext('2d');
  for (const img of document.querySelectorAll('.leaflet-overlay-pane img.leaflet-tile')) {
    ctx.clearRect(0, 0, 256, 256); ctx.drawImage(img, 0, 0);
    const d = ctx.getImageData(0, 0, 256, 256).data; for (let i = 3; i < d.length; i += 4) if (d[i] > 128) n++; }
  return n; }"""


def test_map_layers_slider_review_and_drawing(project, browser, tmp_path):  # noqa: F811
    from PIL import Image

    with Server(project) as srv:
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(srv.url)
        page.wait_for_selector("body[data-ready='1']", timeout=20000)
        site = page.eval_on_selector("#site", "s => s.value")
        assert site == "site00"
        page.wait_for_function(TILES_DONE, arg=".leaflet-overlay-pane img.leaflet-tile", timeout=20000)
        page.wait_for_function(TILES_DONE, arg=".leaflet-tile-pane img.leaflet-tile", timeout=20000)
        # the probability layer paints: opaque pixels in its tiles, and on screen where it is
        painted = page.evaluate(PAINTED)
        assert painted > 2000, painted
        with_prob = np.asarray(Image.open(shot(page, "map.png", tmp_path)).convert("RGB")).astype(int)
        page.uncheck("#show-prob")
        page.wait_for_function("() => !document.querySelector('.leaflet-overlay-pane img.leaflet-tile')")
        page.wait_for_function(TILES_DONE, arg=".leaflet-tile-pane img.leaflet-tile", timeout=20000)
        without = np.asarray(Image.open(shot(page, "map-noprob.png", tmp_path)).convert("RGB")).astype(int)
        changed = np.abs(with_prob - without).sum(-1) > 60
        assert changed.sum() > 2000, changed.sum()
        page.check("#show-prob")

        # the date slider: label and layers follow
        data = json.loads(page.evaluate("() => JSON.stringify(window.sandwatch.project)"))
        dates = data["sites"][0]["dates"]
        page.locator("#date").fill("1")
        assert page.inner_text("#date-label") == dates[1]["date"]
        page.wait_for_function(TILES_DONE, arg=".leaflet-overlay-pane img.leaflet-tile", timeout=20000)
        srcs = page.eval_on_selector_all(".leaflet-overlay-pane img.leaflet-tile", "l => l.map(i => i.src)")
        assert srcs and all(f"/tiles/{dates[1]['probability']}/" in s for s in srcs)
        # swipe against another date: its scene in the clipped pane
        page.check("#swipe-on")
        page.wait_for_function(TILES_DONE, arg=".leaflet-swipe-pane img.leaflet-tile", timeout=20000)
        assert "rect(" in page.eval_on_selector(".leaflet-swipe-pane", "p => p.style.clip")
        shot(page, "swipe.png", tmp_path)
        page.uncheck("#swipe-on")

        # review: reject one alert, accept another
        page.fill("#reviewer", "Ravi <b>K</b>")
        items = page.locator("#alerts li")
        assert items.count() >= 2
        first, second = items.nth(0), items.nth(1)
        ids = [first.get_attribute("data-alert"), second.get_attribute("data-alert")]
        first.locator("input.comment").fill("bank erosion <script>alert(1)</script>")
        first.locator("button[data-decision='rejected']").click()
        page.wait_for_function("(id) => document.querySelector(`li[data-alert='${id}'] .state.rejected`)", arg=ids[0])
        second.locator("button[data-decision='accepted']").click()
        page.wait_for_function("(id) => document.querySelector(`li[data-alert='${id}'] .state.accepted`)", arg=ids[1])
        assert "bank erosion <script>alert(1)</script>" in page.inner_text(f"li[data-alert='{ids[0]}'] .state")
        con = sqlite3.connect(project / "monitor" / "site00" / "history.sqlite")
        rows = con.execute("SELECT alert_id, decision, reviewer, comment FROM alert_decisions ORDER BY id").fetchall()
        con.close()
        assert rows == [(int(ids[0].split("-")[1]), "rejected", "Ravi <b>K</b>", "bank erosion <script>alert(1)</script>"),
                        (int(ids[1].split("-")[1]), "accepted", "Ravi <b>K</b>", "")]

        # draw a Low polygon on date 0 and save it
        page.locator("#date").fill("0")
        page.wait_for_function("() => /polygon/.test(document.querySelector('#labels-status').textContent)")
        page.select_option("#confidence", "Low")
        page.fill("#note", "drawn in the browser test")
        box = page.locator("#map").bounding_box()
        cx, cy = box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.75
        pts = [(cx, cy), (cx + 60, cy), (cx + 60, cy + 50), (cx, cy + 50)]
        page.click("#draw")
        for x, y in pts:
            page.mouse.click(x, y)
            page.wait_for_timeout(150)
        page.mouse.click(*pts[0])                       # the first vertex closes the ring
        page.wait_for_function("() => /unsaved/.test(document.querySelector('#labels-status').textContent)")
        centre = page.evaluate("([x, y]) => { const p = window.sandwatch_map_point(x, y); return [p.lng, p.lat]; }",
                               [cx + 30 - box["x"], cy + 25 - box["y"]])
        page.click("#save-labels")
        page.wait_for_function("() => /^saved/.test(document.querySelector('#labels-status').textContent)")
        shot(page, "drawn.png", tmp_path)
        assert not errors, errors
        outside = [u for u in requests if not u.startswith(srv.url) and not u.startswith("data:")]
        assert not outside, outside                     # offline: nothing from anywhere else
        entry = srv.app.state.project.sites["site00"].dates[0]
        scene = srv.app.state.project.file(entry.scene)
        labels_path = entry.labels_path
        check_drawn_polygon(labels_path, scene, centre, tmp_path)

        # delete it again (Geoman's removal mode), save: the file loses it, one more version kept
        page.click(".leaflet-pm-icon-delete")
        page.mouse.click(cx + 30, cy + 25)
        page.wait_for_function("() => /unsaved/.test(document.querySelector('#labels-status').textContent)")
        page.click(".leaflet-pm-icon-delete")
        page.click("#save-labels")
        page.wait_for_function("() => /^saved/.test(document.querySelector('#labels-status').textContent)")
        assert not errors, errors
    saved = json.loads(labels_path.read_text())
    assert not [f for f in saved["features"] if f["properties"]["note"] == "drawn in the browser test"]
    assert len(saved["features"]) >= 1
    assert len(list((labels_path.parent / ".versions").glob(f"{labels_path.stem}.*"))) == 2


def check_drawn_polygon(labels_path: Path, scene: Path, centre, tmp_path: Path) -> None:
    """The saved file has the Low polygon; `sandwatch labels rasterize` burns it with weight 0.5."""
    saved = json.loads(labels_path.read_text())
    low = [f for f in saved["features"] if f["properties"]["note"] == "drawn in the browser test"]
    assert len(low) == 1 and low[0]["properties"]["Confidence"] == "Low"
    mask_new, w_new = rasterize(labels_path, scene, tmp_path / "new")
    old = sorted((labels_path.parent / ".versions").glob(f"{labels_path.stem}.*"))
    assert len(old) == 1
    mask_old, _ = rasterize(old[0], scene, tmp_path / "old")
    with rasterio.open(scene) as ds:
        from rasterio.warp import transform

        xs, ys = transform("EPSG:4326", ds.crs, [centre[0]], [centre[1]])
        r, c = ds.index(xs[0], ys[0])
    assert mask_new[r, c] == 1                          # the drawn polygon is in the mask
    if mask_old[r, c] == 0:
        assert w_new[r, c] == pytest.approx(0.5)        # with the weight of a Low polygon
    added = int(mask_new.sum()) - int(mask_old.sum())
    assert added > 50 and (mask_new >= mask_old).all()


def rasterize(labels: Path, scene: Path, out: Path):
    assert main(["labels", "rasterize", str(labels), "--like", str(scene), "-o", str(out / "m.tif"),
                 "--weights", str(out / "w.tif")]) == 0
    with rasterio.open(out / "m.tif") as m, rasterio.open(out / "w.tif") as w:
        return m.read(1), w.read(1)


def test_script_site_name_is_shown_as_text(project, browser, tmp_path):  # noqa: F811
    import yaml

    evil = "<img src=x onerror=alert(1)><script>alert(2)</script>"
    root = tmp_path / "evil"
    shutil.copytree(project / "data", root)
    m = yaml.safe_load((root / "manifest.yaml").read_text())
    for obs in m["observations"]:
        if obs["site"] == "site00":
            obs["site"], obs["id"] = evil, ""
    (root / "manifest.yaml").write_text(yaml.safe_dump(m))
    with Server(root) as srv:
        page = browser.new_page()
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(srv.url)
        page.wait_for_selector("body[data-ready='1']", timeout=20000)
        names = page.eval_on_selector_all("#site option", "l => l.map(o => o.textContent)")
        assert evil in names
        assert page.locator("#side img").count() == 0 and page.locator("#side script").count() == 0
        page.wait_for_timeout(300)
        assert dialogs == []
