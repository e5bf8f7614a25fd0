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

    import socket

    from sandwatch.errors import SandwatchError

    with socket.socket(socket.AF_INET6 if ":" in config.host else socket.AF_INET) as probe:
        try:
            probe.bind((config.host, config.port))
        except OSError as err:
            raise SandwatchError.about(f"--host {config.host} --port {config.port}",
                                       f"cannot be bound ({err.strerror or err})",
                                       "pass another --port, or stop the server already using it") from None
    url = f"http://{'127.0.0.1' if config.loopback else config.host}:{config.port}/"
    if open_browser:
        threading.Timer(1.0, webbrowser.open, args=(url,)).start()
    if config.workers == 1:
        app = create_app(project, config, db=db)
        uvicorn.run(app, host=config.host, port=config.port, log_level=log_level, server_header=False)
        return
    import dataclasses
    import json
    import os

    # several processes (tiles are rendered under the GIL): each worker builds the same app
    spec = {"project": str(project), "db": db, "config": dataclasses.asdict(config) | {"token": config.run_token()}}
    os.environ[SPEC_ENV] = json.dumps(spec)
    create_app(project, config, db=db)          # fail here, in one line, not in every worker
    uvicorn.run("sandwatch.serve:app_from_env", factory=True, workers=config.workers, host=config.host,
                port=config.port, log_level=log_level, server_header=False)


SPEC_ENV = "SANDWATCH_SERVE_SPEC"


def app_from_env():
    """The app of one uvicorn worker, from the spec :func:`run` put in the environment."""
    import json
    import os

    spec = json.loads(os.environ[SPEC_ENV])
    return create_app(spec["project"], ServeConfig(**spec["config"]), db=spec["db"])


__all__ = ["Project", "ServeConfig", "create_app", "run"]
