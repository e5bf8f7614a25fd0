"""The ``sandwatch serve`` web application (Starlette): pages, tiles, vectors, review, labels.

``create_app(project_folder, config)`` builds it; ``sandwatch serve`` runs it with uvicorn.
Routes (``KEY`` is an opaque file key from ``/api/project``, never a path; site names travel as
query parameters, so any name works):

=====================================================  ==========================================
``GET  /``                                              the map page
``GET  /api/project``                                   sites, dates, their file keys
``GET  /tiles/KEY/Z/X/Y.png``                           scene / probability / mask tile
``GET  /api/vector/KEY``                                a registered GeoJSON (polygons of a date)
``GET  /api/aoi?site=S``                                the site's AOI (GeoJSON, EPSG:4326)
``GET  /api/labels?site=S&date=D``                      the label file (annotate view)
``POST /api/labels?site=S&date=D``                      save it (token), earlier version kept
``GET  /api/labels/versions?site=S&date=D``             earlier versions
``GET  /api/labelbox.ndjson?site=S&date=D``             Labelbox export
``POST /api/labelbox?site=S&date=D``                    Labelbox import (token): merged and saved
``GET  /api/alerts``                                    monitoring alerts with their latest review
``POST /api/alerts/ID/review``                          accept / reject / needs field check (token)
=====================================================  ==========================================
"""

from __future__ import annotations

import html
import json
import logging
import os
from importlib import resources
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from sandwatch.errors import SandwatchError
from sandwatch.serve import security as sec
from sandwatch.serve.project import Project
from sandwatch.serve.security import ServeConfig

log = logging.getLogger("sandwatch.serve")
STATIC = Path(str(resources.files("sandwatch.serve") / "static"))


class TooLarge(Exception):
    pass


def error_page(status: int, message: str, api: bool) -> Response:
    """A clear error without traceback: JSON for the API, a small escaped HTML page otherwise."""
    if api:
        return JSONResponse({"error": message}, status_code=status)
    body = (f"<!doctype html><meta charset=utf-8><title>sandwatch: error {status}</title>"
            f"<body style='font-family:sans-serif;margin:2em'><h1>Error {status}</h1><p>{html.escape(message)}</p>"
            "<p><a href='/'>Back to the map</a></p></body>")
    return HTMLResponse(body, status_code=status)


async def read_body(request: Request, limit: int) -> bytes:
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > limit:
        raise TooLarge()
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise TooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(project: Project | str | os.PathLike, config: ServeConfig = ServeConfig(), *,
               db: str | None = None, review_store=None) -> Starlette:
    """The application over a project folder (or a ready :class:`Project`)."""
    from sandwatch.serve.layers import Layers
    from sandwatch.serve.review import HistoryReviews
    from sandwatch.serve.tiles import TileRenderer

    project = project if isinstance(project, Project) else Project(project, db=db)
    token = config.run_token()
    tiles = TileRenderer(project, cache_tiles=config.cache_tiles)
    layers = Layers(project)
    reviews = review_store if review_store is not None else HistoryReviews(project.histories)
    index_html = (STATIC / "index.html").read_text()

    def page(request: Request):
        if not config.loopback and sec.same_token(request.query_params.get("token"), token):
            resp = RedirectResponse("/", status_code=303)
            resp.set_cookie(sec.TOKEN_COOKIE, token, httponly=True, samesite="strict")
            return resp
        meta = {"token": token, "basemap": config.basemap_url or "", "reviewer": config.reviewer}
        text = index_html.replace("{{CONFIG}}", html.escape(json.dumps(meta), quote=True))
        return HTMLResponse(text)

    def api_project(request: Request):
        return JSONResponse({"root": project.root.name, "sites": project.summary(), "alerts": bool(project.histories),
                             "basemap": config.basemap_url or ""})

    def tile(request: Request):
        p = request.path_params
        png = tiles.tile(p["key"], p["z"], p["x"], p["y"])
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=300"})

    def vector(request: Request):
        path = project.file(request.path_params["key"], "vector")
        return Response(layers.vector_text(path), media_type="application/geo+json")

    def aoi(request: Request):
        return JSONResponse(layers.aoi(project.site(request.query_params.get("site", ""))))

    def _entry(request: Request):
        site = project.site(request.query_params.get("site", ""))
        return site, site.entry(request.query_params.get("date", ""))

    def labels_get(request: Request):
        from sandwatch.serve.annotate import load_labels

        return JSONResponse(load_labels(_entry(request)[1].labels_path))

    async def labels_post(request: Request):
        from sandwatch.serve.annotate import features_from_text, save_labels

        site, entry = _entry(request)
        body = await read_body(request, config.max_upload_bytes)
        fc = features_from_text(body.decode("utf-8", "replace"), f"labels of {site.name} {entry.date}")
        res = await run_in_threadpool(save_labels, entry.labels_path, fc, f"labels of {site.name} {entry.date}")
        log.info("saved %d label polygons for %s %s", res["features"], site.name, entry.date)
        return JSONResponse({"features": res["features"], "version": res["version"]})

    def labels_versions(request: Request):
        from sandwatch.serve.annotate import list_versions

        return JSONResponse({"versions": list_versions(_entry(request)[1].labels_path)})

    def _scene_name(entry) -> str:
        return project.file(entry.scene).name if entry.scene else f"{entry.date}.tif"

    def labelbox_export(request: Request):
        from sandwatch.serve.annotate import load_labels
        from sandwatch.serve.labelbox import to_ndjson

        site, entry = _entry(request)
        text = to_ndjson(load_labels(entry.labels_path), _scene_name(entry))
        name = f"{site.name}_{entry.date}.ndjson"
        return PlainTextResponse(text, media_type="application/x-ndjson",
                                 headers={"Content-Disposition": f'attachment; filename="{name}"'})

    async def labelbox_import(request: Request):
        from sandwatch.serve.annotate import load_labels, save_labels
        from sandwatch.serve.labelbox import from_ndjson

        site, entry = _entry(request)
        body = await read_body(request, config.max_upload_bytes)
        new, skipped = from_ndjson(body.decode("utf-8", "replace"), _scene_name(entry))
        current = load_labels(entry.labels_path)
        merged = {"type": "FeatureCollection", "features": current["features"] + new["features"]}
        res = await run_in_threadpool(save_labels, entry.labels_path, merged, f"labels of {site.name} {entry.date}")
        return JSONResponse({"imported": len(new["features"]), "skipped": skipped, "features": res["features"]})

    def alerts(request: Request):
        return JSONResponse({"alerts": [a.to_dict() for a in reviews.alerts()]})

    async def review(request: Request):
        body = await read_body(request, 64 * 1024)
        try:
            data = json.loads(body)
        except json.JSONDecodeError:
            raise SandwatchError("review: the request is not JSON; send {decision, comment, reviewer}") from None
        if not isinstance(data, dict):
            raise SandwatchError("review: send a JSON object {decision, comment, reviewer}")
        d = await run_in_threadpool(reviews.decide, request.path_params["alert"], str(data.get("decision", "")),
                                    str(data.get("comment", "")), str(data.get("reviewer", "")))
        log.info("alert %s %s by %s", request.path_params["alert"], d.decision, d.reviewer)
        return JSONResponse({"review": d.__dict__})

    routes = [
        Route("/", page), Route("/api/project", api_project),
        Route("/tiles/{key:str}/{z:int}/{x:int}/{y:int}.png", tile),
        Route("/api/vector/{key:str}", vector), Route("/api/aoi", aoi),
        Route("/api/labels", labels_get, methods=["GET"]), Route("/api/labels", labels_post, methods=["POST"]),
        Route("/api/labels/versions", labels_versions), Route("/api/labelbox.ndjson", labelbox_export),
        Route("/api/labelbox", labelbox_import, methods=["POST"]),
        Route("/api/alerts", alerts), Route("/api/alerts/{alert}/review", review, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]

    def is_api(request: Request) -> bool:
        return request.url.path.startswith(("/api/", "/tiles/"))

    async def not_found(request: Request, exc):
        return error_page(404, "not found: no such page, site, date or file in this project", is_api(request))

    async def http_error(request: Request, exc: HTTPException):
        return error_page(exc.status_code, str(exc.detail), is_api(request))

    async def user_error(request: Request, exc: SandwatchError):
        return error_page(400, str(exc), is_api(request))

    async def too_large(request: Request, exc):
        return error_page(413, f"request body larger than {config.max_upload_bytes} bytes; "
                               "upload a smaller file or start the server with a larger --max-upload-mb", True)

    async def server_error(request: Request, exc: Exception):
        log.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        return error_page(500, "internal error: the server log has the details", is_api(request))

    app = Starlette(routes=routes, exception_handlers={
        FileNotFoundError: not_found, HTTPException: http_error, SandwatchError: user_error, TooLarge: too_large,
        Exception: server_error, 404: not_found})
    app.add_middleware(GuardMiddleware, config=config, token=token)
    app.state.project, app.state.tiles, app.state.reviews, app.state.token = project, tiles, reviews, token
    return app


class GuardMiddleware:
    """Host, token, Origin and response-header rules of :mod:`sandwatch.serve.security` (pure ASGI)."""

    def __init__(self, app, config: ServeConfig, token: str):
        self.app, self.config, self.token = app, config, token

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        api = request.url.path.startswith(("/api/", "/tiles/"))
        refusal = self._refusal(request)
        if refusal is not None:
            return await error_page(refusal[0], refusal[1], api)(scope, receive, send)
        headers = [(b"content-security-policy", sec.csp(self.config).encode()),
                   (b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                   (b"referrer-policy", b"no-referrer")]

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + headers
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _refusal(self, request: Request) -> tuple[int, str] | None:
        if not sec.host_allowed(request.headers.get("host", ""), self.config):
            return 400, "this server answers to 127.0.0.1 / localhost only"
        path = request.url.path
        given = request.headers.get(sec.TOKEN_HEADER)
        if not self.config.loopback and not path.startswith("/static/") and not (
                sec.same_token(given, self.token) or sec.same_token(request.cookies.get(sec.TOKEN_COOKIE), self.token)
                or (path == "/" and sec.same_token(request.query_params.get("token"), self.token))):
            return 401, "this server needs its token: open http://HOST:PORT/?token=SECRET (ask who started it)"
        if request.method in sec.UNSAFE_METHODS:
            if not sec.same_token(given, self.token):
                return 403, "changes need the page's token (X-Sandwatch-Token header); reload the page"
            origin = request.headers.get("origin")
            if origin and origin.split("://", 1)[-1] != request.headers.get("host", ""):
                return 403, "request from another site refused"
        return None
