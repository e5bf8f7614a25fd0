"""``sandwatch serve``'s settings and its safety rules, in one place.

* Bound to 127.0.0.1 by default. Another address (``--host 0.0.0.0``) serves everyone who
  can reach the machine, so it needs ``--token`` (at least 16 characters): every request but
  the vendored static files must then carry it (``?token=`` once in the browser, which sets an
  HttpOnly SameSite=Strict cookie, or the ``X-Sandwatch-Token`` header).
* State-changing requests (POST, PUT, PATCH, DELETE) always need the token in the
  ``X-Sandwatch-Token`` header (the page reads it from its own ``<meta>``; on 127.0.0.1 a
  token is made per run): a cookie alone is never enough and other sites can neither read
  the page nor send that header without a CORS pre-flight we never answer (CSRF-safe). A
  request whose ``Origin`` is not this server is refused too.
* On loopback the ``Host`` header must name loopback (no DNS rebinding).
* Request bodies are capped (:attr:`ServeConfig.max_upload_bytes`); the page has a strict
  Content-Security-Policy (scripts from this server only, nothing from a CDN).
"""

from __future__ import annotations

import getpass
import hmac
import ipaddress
import secrets
from dataclasses import dataclass, field

from sandwatch.errors import SandwatchError

TOKEN_HEADER = "x-sandwatch-token"
TOKEN_COOKIE = "sandwatch_token"
MIN_TOKEN = 16
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _default_reviewer() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in this environment
        return ""


@dataclass(frozen=True)
class ServeConfig:
    """How ``sandwatch serve`` runs (the CLI fills it from its options)."""

    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None                  #: None on loopback: one is made for this run
    max_upload_bytes: int = 10 * 1024 * 1024
    basemap_url: str | None = None            #: an online XYZ tile URL (optional; offline without it)
    cache_tiles: int = 4096                   #: PNG tiles kept in memory (per worker)
    workers: int = 1                          #: server processes (tiles render under the GIL: 2 on 2 cores)
    reviewer: str = field(default_factory=_default_reviewer)

    def __post_init__(self):
        if not (0 < self.port < 65536):
            raise SandwatchError.about("--port", f"{self.port} is not a TCP port", "use 1..65535, e.g. 8765")
        if self.token is not None and len(self.token) < MIN_TOKEN:
            raise SandwatchError.about("--token", f"is shorter than {MIN_TOKEN} characters",
                                       "use a long random secret, e.g. `python -c 'import secrets; "
                                       "print(secrets.token_urlsafe())'`")
        if not self.loopback and self.token is None:
            raise SandwatchError.about(
                f"--host {self.host}", "serves everyone who can reach this machine and needs a token",
                "pass --token SECRET (or SANDWATCH_TOKEN) of at least 16 characters; users open "
                "http://HOST:PORT/?token=SECRET once")
        url = self.basemap_url
        if url is not None and (not url.startswith(("https://", "http://"))
                                or not all(k in url for k in ("{z}", "{x}", "{y}"))):
            raise SandwatchError.about("--basemap", "is not an XYZ tile URL",
                                       "use e.g. https://tile.openstreetmap.org/{z}/{x}/{y}.png")
        if not (1 <= self.workers <= 64):
            raise SandwatchError.about("--workers", f"{self.workers} is not a number of processes", "use 1..64")
        if self.max_upload_bytes < 1024:
            raise SandwatchError.about("--max-upload-mb", "is too small", "allow at least 1 KiB")

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    def run_token(self) -> str:
        return self.token or secrets.token_urlsafe(24)


def same_token(given: str | None, token: str) -> bool:
    return bool(given) and hmac.compare_digest(str(given).encode(), token.encode())


def host_allowed(host_header: str, config: ServeConfig) -> bool:
    """On loopback only loopback names (with any port) are accepted in ``Host``."""
    if not config.loopback:
        return True
    name = host_header.rsplit(":", 1)[0] if not host_header.endswith("]") else host_header
    return is_loopback(name.strip("[]") if name.startswith("[") else name)


def csp(config: ServeConfig) -> str:
    img = "'self' data: blob:"
    if config.basemap_url:
        from urllib.parse import urlsplit

        parts = urlsplit(config.basemap_url.replace("{s}", "a"))
        img += f" {parts.scheme}://{parts.netloc.replace('a.', '*.', 1) if '{s}' in config.basemap_url else parts.netloc}"
    return (f"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src {img}; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'")
