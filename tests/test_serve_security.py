"""``sandwatch serve`` safety: no path from a URL, escaped user text, tokens, limits, errors."""

from __future__ import annotations

import json
import sqlite3

import pytest

from sandwatch.cli.main import main
from test_serve_api import client_for, project  # noqa: F401  (module-scoped fixture)

TOKEN = "s3cret-token-of-the-field-office"


@pytest.fixture(scope="module")
def local(project):  # noqa: F811
    c, app = client_for(project)
    with c:
        yield c, app


@pytest.mark.parametrize("url", [
    "/tiles/..%2F..%2F..%2Fetc%2Fpasswd/0/0/0.png",
    "/tiles/../../../etc/passwd/0/0/0.png",
    "/tiles/%2Fetc%2Fpasswd/0/0/0.png",
    "/api/vector/..%2F..%2F..%2Fetc%2Fpasswd",
    "/api/vector/%2Fetc%2Fpasswd",
    "/static/../../../../etc/passwd",
    "/static/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "/static/%2e%2e/%2e%2e/app.py",
    "/static/..%2fapp.py",
    "/api/labels?site=..%2F..%2Fetc&date=passwd",
    "/api/labels?site=site00&date=..%2F..%2F..%2Fetc%2Fpasswd",
])
def test_no_path_traversal(local, url):
    c, _ = local
    r = c.get(url)
    assert r.status_code in (400, 404), (url, r.status_code)
    assert "root:" not in r.text and "import " not in r.text and "Traceback" not in r.text


def test_keys_serve_only_their_own_kind(local):
    c, app = local
    entry = app.state.project.sites["site00"].dates[0]
    assert c.get(f"/api/vector/{entry.scene}").status_code == 404        # a scene is no vector
    assert c.get(f"/tiles/{entry.polygons}/14/0/0.png").status_code == 404   # a GeoJSON is no raster
    assert c.get(f"/api/vector/{entry.polygons}").status_code == 200


def test_changes_need_the_token_and_a_same_origin(local, project):  # noqa: F811
    c, app = local
    alert = c.get("/api/alerts").json()["alerts"][0]["id"]
    body = {"decision": "accepted", "reviewer": "x"}
    assert c.post(f"/api/alerts/{alert}/review", json=body).status_code == 403
    assert c.post(f"/api/alerts/{alert}/review", json=body, headers={"X-Sandwatch-Token": "wrong"}).status_code == 403
    evil = {"X-Sandwatch-Token": app.state.token, "Origin": "http://evil.example"}
    assert c.post(f"/api/alerts/{alert}/review", json=body, headers=evil).status_code == 403
    con = sqlite3.connect(project / "monitor" / "site00" / "history.sqlite")
    assert con.execute("SELECT count(*) FROM alert_decisions").fetchone() == (0,)
    con.close()
    # DNS rebinding: a loopback server answers to loopback names only
    assert c.get("/api/project", headers={"Host": "evil.example:8765"}).status_code == 400
    assert c.get("/api/project", headers={"Host": "localhost:8765"}).status_code == 200


def test_all_interfaces_need_a_token_for_everything_and_the_header_for_changes(project):  # noqa: F811
    from sandwatch.errors import SandwatchError
    from sandwatch.serve import ServeConfig

    with pytest.raises(SandwatchError, match="needs a token.*--token"):
        ServeConfig(host="0.0.0.0")
    with pytest.raises(SandwatchError, match="shorter than 16"):
        ServeConfig(host="0.0.0.0", token="short")
    c, app = client_for(project, host="0.0.0.0", token=TOKEN)
    with c:
        assert c.get("/api/project").status_code == 401
        assert c.get("/").status_code == 401
        assert c.get("/static/app.js").status_code == 200                  # vendored files are public
        login = c.get(f"/?token={TOKEN}", follow_redirects=False)
        assert login.status_code == 303 and "httponly" in login.headers["set-cookie"].lower()
        assert "samesite=strict" in login.headers["set-cookie"].lower()
        assert c.get("/api/project").status_code == 200                     # the cookie now
        alert = c.get("/api/alerts").json()["alerts"][0]["id"]
        body = {"decision": "needs field check", "reviewer": "x"}
        r = c.post(f"/api/alerts/{alert}/review", json=body)                # cookie alone: no
        assert r.status_code == 403 and "token" in r.json()["error"]
        ok = c.post(f"/api/alerts/{alert}/review", json=body, headers={"X-Sandwatch-Token": TOKEN})
        assert ok.status_code == 200
        c.cookies.clear()
        assert c.post(f"/api/alerts/{alert}/review", json=body).status_code == 401


def test_cli_refuses_all_interfaces_without_token(project, capsys, monkeypatch):  # noqa: F811
    monkeypatch.delenv("SANDWATCH_TOKEN", raising=False)
    assert main(["serve", str(project), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs a token" in err and "--token" in err
    assert main(["serve", str(project / "nope")]) == 2
    assert "no such project folder" in capsys.readouterr().err


def test_upload_limit(project):  # noqa: F811
    c, app = client_for(project, max_upload_bytes=4096)
    with c:
        entry = app.state.project.sites["site00"].dates[3]
        before = entry.labels_path.read_bytes()
        big = {"type": "FeatureCollection", "features": [], "pad": "x" * 10000}
        r = c.post("/api/labels", params={"site": "site00", "date": entry.date}, content=json.dumps(big).encode(),
                   headers={"X-Sandwatch-Token": app.state.token})
        assert r.status_code == 413 and "larger than 4096 bytes" in r.json()["error"]
        assert entry.labels_path.read_bytes() == before


def test_script_in_site_name_and_texts_is_data_not_markup(project, tmp_path):  # noqa: F811
    import shutil

    import yaml

    from sandwatch.serve.app import error_page

    evil = "<script>alert('x')</script>"
    root = tmp_path / "evil"
    shutil.copytree(project / "data", root)
    m = yaml.safe_load((root / "manifest.yaml").read_text())
    for obs in m["observations"]:
        obs["site"] = evil if obs["site"] == "site00" else obs["site"]
        obs["id"] = ""
    (root / "manifest.yaml").write_text(yaml.safe_dump(m))
    c, app = client_for(root)
    with c:
        data = c.get("/api/project")
        assert data.headers["content-type"].startswith("application/json")
        assert data.headers["x-content-type-options"] == "nosniff"
        assert evil in [s["name"] for s in data.json()["sites"]]
        page = c.get("/")
        assert "<script>alert" not in page.text
        assert "'unsafe-inline'" not in page.headers["content-security-policy"].split("script-src")[1].split(";")[0]
        aoi = c.get("/api/aoi", params={"site": evil})
        assert aoi.status_code == 200 and aoi.json()["features"]
    html = error_page(400, f"site {evil}: is not in this project", api=False).body.decode()
    assert evil not in html and "&lt;script&gt;" in html


def test_missing_and_corrupt_files_are_clear_errors_not_tracebacks(project, tmp_path):  # noqa: F811
    import shutil

    root = tmp_path / "p"
    shutil.copytree(project / "data", root)
    c, app = client_for(root)
    with c:
        site = app.state.project.sites["site01"]
        scene = app.state.project.file(site.dates[0].scene)
        scene.write_bytes(b"this is not a GeoTIFF" * 100)
        r = c.get(f"/tiles/{site.dates[0].scene}/15/0/0.png")
        assert r.status_code == 400 and "cannot be read" in r.json()["error"] and "Traceback" not in r.text
        app.state.project.file(site.dates[1].scene).unlink()
        r = c.get(f"/tiles/{site.dates[1].scene}/15/0/0.png")
        assert r.status_code == 404 and "not found" in r.json()["error"]
        page = c.get("/no/such/page")
        assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
        assert "Traceback" not in page.text and "Back to the map" in page.text


def test_port_in_use_is_one_line(project, capsys):  # noqa: F811
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", str(project), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--port {port}" in err[0] and "another --port" in err[0]


def test_online_basemap_is_optional_and_only_its_host_is_allowed():
    from sandwatch.errors import SandwatchError
    from sandwatch.serve import ServeConfig
    from sandwatch.serve.security import csp

    assert "img-src 'self' data: blob:;" in csp(ServeConfig())
    osm = ServeConfig(basemap_url="https://{s}.tile.openstreetmap.org/{z}/{x}/{y}.png")
    assert "img-src 'self' data: blob: https://*.tile.openstreetmap.org;" in csp(osm)
    assert "connect-src 'self'" in csp(osm) and "script-src 'self';" in csp(osm)
    for bad in ("javascript:alert(1)//{z}{x}{y}", "https://tiles.example/no-placeholders.png"):
        with pytest.raises(SandwatchError, match="XYZ tile URL"):
            ServeConfig(basemap_url=bad)
