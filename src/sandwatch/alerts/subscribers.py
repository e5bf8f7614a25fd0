"""Who gets which alerts, and how: the subscribers file (YAML), typed and checked.

::

    smtp:                          # needed when a subscriber has e-mails
      host: smtp.example.org
      port: 587
      starttls: true               # STARTTLS after connecting (default false)
      ssl: false                   # implicit TLS (SMTPS, usually port 465)
      username: alerts             # login (optional); the password from the environment:
      password_env: SANDWATCH_SMTP_PASSWORD
      sender: sandwatch@example.org
      ca_file: null                # CA bundle (PEM) of a server with a private certificate
    webhook:
      attempts: 4                  # tries per message and run
      backoff_seconds: 2.0         # waits 2, 4, 8 s between them
      timeout_seconds: 10
    subscribers:
      - name: district-mining-office
        emails: [officer@example.org]
        webhooks:
          - url: https://example.org/sandwatch-hook
            secret_env: HOOK_SECRET          # or secret: "..." (HMAC-SHA256 key)
        sites: [site00, site01]              # default: every site
        area: [79.0, 20.5, 80.5, 21.5]       # lon/lat box (default: anywhere)
        min_status: confirmed                # provisional (also gets expiries) | confirmed
        min_area_ha: 0.2
        feed: feeds/                         # GeoJSON + CSV feed files for this subscriber

A mistake is one line naming the file, the entry and the fix.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sandwatch.errors import SandwatchError

_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*$")


def check_email(value: str) -> str:
    value = value.strip()
    if not _EMAIL.match(value) or ".." in value or len(value) > 254:
        raise ValueError(f"{value!r} is not an e-mail address (write name@domain)")
    return value


def check_url(value: str) -> str:
    value = value.strip()
    u = urlparse(value)
    if u.scheme not in ("http", "https") or not u.hostname or " " in value:
        raise ValueError(f"{value!r} is not an http(s) URL (write https://host/path)")
    try:
        u.port
    except ValueError:
        raise ValueError(f"{value!r} has an invalid port") from None
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SmtpSettings(_Strict):
    host: str
    port: int = Field(25, ge=1, le=65535)
    starttls: bool = False
    ssl: bool = False
    username: str | None = None
    password: str | None = None
    password_env: str | None = None
    sender: str
    ca_file: Path | None = None          #: CA bundle for a server with a private certificate (default: the system's)
    timeout_seconds: float = Field(30.0, gt=0)

    _sender = field_validator("sender")(classmethod(lambda cls, v: check_email(v)))

    def login_password(self) -> str | None:
        if self.password is not None:
            return self.password
        return os.environ.get(self.password_env) if self.password_env else None


class WebhookSettings(_Strict):
    attempts: int = Field(4, ge=1, le=20)
    backoff_seconds: float = Field(2.0, ge=0)
    timeout_seconds: float = Field(10.0, gt=0)


class Webhook(_Strict):
    url: str
    secret: str | None = None
    secret_env: str | None = None

    _url = field_validator("url")(classmethod(lambda cls, v: check_url(v)))

    @model_validator(mode="after")
    def _one_secret(self):
        if (self.secret is None) == (self.secret_env is None):
            raise ValueError("give exactly one of secret or secret_env (the HMAC-SHA256 key)")
        return self

    def key(self) -> bytes:
        value = self.secret if self.secret is not None else os.environ.get(self.secret_env or "")
        if not value:
            raise SandwatchError.about(f"${self.secret_env}", f"is not set (the secret of webhook {self.url})",
                                       "export it before running")
        return value.encode()


class Subscriber(_Strict):
    name: str = Field(min_length=1, max_length=200)
    emails: tuple[str, ...] = ()
    webhooks: tuple[Webhook, ...] = ()
    sites: tuple[str, ...] | None = None
    area: tuple[float, float, float, float] | None = None
    min_status: Literal["provisional", "confirmed"] = "confirmed"
    min_area_ha: float = Field(0.0, ge=0)
    feed: Path | None = None

    @field_validator("emails", mode="before")
    @classmethod
    def _emails(cls, v):
        return tuple(check_email(str(x)) for x in ([v] if isinstance(v, str) else v or ()))

    @field_validator("webhooks", mode="before")
    @classmethod
    def _webhooks(cls, v):
        return [{"url": x} if isinstance(x, str) else x for x in ([v] if isinstance(v, (str, dict)) else v or ())]

    @model_validator(mode="after")
    def _something(self):
        if not (self.emails or self.webhooks or self.feed):
            raise ValueError("has no emails, webhooks or feed: give at least one")
        if self.area is not None and not (self.area[0] < self.area[2] and self.area[1] < self.area[3]):
            raise ValueError("area must be [min_lon, min_lat, max_lon, max_lat]")
        return self


class Subscribers(_Strict):
    smtp: SmtpSettings | None = None
    webhook: WebhookSettings = WebhookSettings()
    subscribers: tuple[Subscriber, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _smtp_when_needed(self):
        if any(s.emails for s in self.subscribers) and self.smtp is None:
            raise ValueError("subscribers have e-mails but there is no smtp section (host, port, sender)")
        names = [s.name for s in self.subscribers]
        if len(set(names)) != len(names):
            raise ValueError("subscriber names must be unique")
        return self


def load_subscribers(path: str | os.PathLike) -> Subscribers:
    """Read and check a subscribers file: one-line :class:`SandwatchError` on any mistake."""
    from sandwatch.io import read_yaml_mapping

    path = Path(path)
    data = read_yaml_mapping(path, what="subscribers file")
    try:
        subs = Subscribers.model_validate(data)
    except ValidationError as err:
        e = err.errors()[0]
        where = ".".join(str(x) for x in e["loc"]) or "top level"
        msg = str(e["msg"]).removeprefix("Value error, ")
        raise SandwatchError.about(path, f"{where}: {msg}",
                                   "fix that entry (see `sandwatch alerts deliver --help` for the format)") from None
    base = path.resolve().parent
    fixed = [s.model_copy(update={"feed": base / s.feed}) if s.feed is not None and not s.feed.is_absolute() else s
             for s in subs.subscribers]
    smtp = subs.smtp
    if smtp is not None and smtp.ca_file is not None:
        ca = smtp.ca_file if smtp.ca_file.is_absolute() else base / smtp.ca_file
        if not ca.is_file():
            raise SandwatchError.about(path, f"smtp.ca_file: no such file {ca}", "give the CA bundle's path (PEM)")
        smtp = smtp.model_copy(update={"ca_file": ca})
    return subs.model_copy(update={"subscribers": tuple(fixed), "smtp": smtp})
