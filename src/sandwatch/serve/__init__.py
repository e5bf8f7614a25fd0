"""``sandwatch serve``: a local web map over what sandwatch writes.

::

    from sandwatch.serve import Project, ServeConfig, create_app, run
    app = create_app("demo-out", ServeConfig(port=8765))    # a Starlette app (any ASGI server)
    run("demo-out", ServeConfig())                          # uvicorn on 127.0.0.1:8765

Modules: :mod:`~sandwatch.serve.project` (what is in a project folder; the registry of files
that may be served), :mod:`~sandwatch.serve.tiles` (web-mercator PNG tiles from the COGs, rio-tiler,
cached), :mod:`~sandwatch.serve.layers` (GeoJSON layers), :mod:`~sandwatch.serve.review`
(alert decisions; the one interface to the monitoring history), :mod:`~sandwatch.serve.annotate`
and :mod:`~sandwatch.serve.labelbox` (label files, versions, Labelbox NDJSON),
:mod:`~sandwatch.serve.quicklook` (true-colour stretch; ``sandwatch export quicklook``),
:mod:`~sandwatch.serve.security` (settings and the safety rules), :mod:`~sandwatch.serve.app`.
The page and its vendored Leaflet + Leaflet-Geoman live in ``static/``.
"""

from sandwatch.serve.project import Project
from sandwatch.serve.security import ServeConfig


def create_app(*args, **kwargs):
    from sandwatch.serve.app import create_app as _create

    return _create(*args, **kwargs)


def run(project, config: ServeConfig = ServeConfig(), *, db: str | None = None, open_browser: bool = False,
        log_level: str = "warning") -> None:
    """Serve ``project`` with uvicorn until interrupted (Ctrl-C)."""
    import threading
    import webbrowser

    import uvicorn

    app = create_app(project, config, db=db)
    url = f"http://{'127.0.0.1' if config.loopback else config.host}:{config.port}/"
    if open_browser:
        threading.Timer(1.0, webbrowser.open, args=(url,)).start()
    uvicorn.run(app, host=config.host, port=config.port, log_level=log_level, server_header=False)


__all__ = ["Project", "ServeConfig", "create_app", "run"]
