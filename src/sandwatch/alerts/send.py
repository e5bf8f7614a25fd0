"""Sending one outbox message: e-mail over SMTP, or a signed webhook POST.

* **E-mail** (:class:`Mailer`): one SMTP connection per run, opened on the first message
  (``ssl``: implicit TLS; ``starttls``: upgrade after EHLO; ``username``: login). The message
  has a plain-text summary and the alert's PNG (before / after / detection) attached; its
  ``Message-ID`` is derived from the outbox message's id, so a message sent again after a
  crash (see :mod:`sandwatch.monitor.history_alerts`) is recognisably the same.
* **Webhook** (:func:`post_webhook`): ``POST`` of the JSON document with
  ``Content-Type: application/json``, ``X-Sandwatch-Delivery: ID`` (the same on every
  attempt, for receivers to drop repeats) and ``X-Sandwatch-Signature: sha256=HEX``, the
  HMAC-SHA256 of the exact body bytes with the subscriber's secret. A 2xx answer delivers
  it; connection errors, timeouts, 408, 429 and 5xx are retried ``attempts`` times with
  back-off (``backoff_seconds`` x 1, 2, 4, ...); other answers fail at once.

Both raise :class:`DeliveryError` (one line) when the message did not go; it then stays in
the outbox for the next run.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import smtplib
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path

from sandwatch.alerts.subscribers import SmtpSettings, WebhookSettings

SIGNATURE_HEADER = "X-Sandwatch-Signature"
DELIVERY_HEADER = "X-Sandwatch-Delivery"


class DeliveryError(Exception):
    """A message did not go (it stays in the outbox)."""


def sign(body: bytes, key: bytes) -> str:
    """The signature header's value: ``sha256=`` + hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def webhook_body(payload: dict) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def post_webhook(url: str, payload: dict, key: bytes, settings: WebhookSettings = WebhookSettings(), *,
                 sleep: Callable[[float], None] = time.sleep) -> int:
    """POST a signed JSON document (see the module doc); returns the HTTP status."""
    body = webhook_body(payload)
    headers = {"Content-Type": "application/json", "User-Agent": "sandwatch-alerts",
               DELIVERY_HEADER: str(payload["id"]), SIGNATURE_HEADER: sign(body, key)}
    last = "no attempt"
    for attempt in range(settings.attempts):
        if attempt:
            sleep(settings.backoff_seconds * 2 ** (attempt - 1))
        req = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=settings.timeout_seconds) as resp:
                return resp.status
        except urllib.error.HTTPError as err:
            last = f"HTTP {err.code} {err.reason}"
            if not (err.code in (408, 429) or err.code >= 500):
                raise DeliveryError(f"{url}: {last} (not retried)") from None
        except (urllib.error.URLError, OSError) as err:
            last = str(getattr(err, "reason", err))
    raise DeliveryError(f"{url}: {last} after {settings.attempts} attempt(s)")


def email_message(payload: dict, sender: str, to: str, attachment: str | None) -> EmailMessage:
    """The e-mail of an alert: subject, summary, PNG attached."""
    ev = payload["event"]["properties"]
    msg = EmailMessage()
    msg["Subject"] = (f"[sandwatch] {ev['status']} sand-mining alert: {ev['site']} region {ev['region']}, "
                      f"{ev['area_ha']:.2f} ha (first detected {ev['first_date']})")
    msg["From"] = sender
    msg["To"] = to
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = f"<{payload['id']}@sandwatch>"
    msg[DELIVERY_HEADER] = str(payload["id"])
    where = "" if ev["latitude"] is None else (
        f"Where: {ev['latitude']:.5f} N, {ev['longitude']:.5f} E "
        f"(https://www.openstreetmap.org/?mlat={ev['latitude']:.5f}&mlon={ev['longitude']:.5f}#map=16/"
        f"{ev['latitude']:.5f}/{ev['longitude']:.5f})\n")
    msg.set_content(
        f"Sand mining {ev['status']} at site {ev['site']} (alert {ev['key']}, region {ev['region']}).\n\n"
        f"Status: {ev['status']} on {ev['date']}\n"
        f"First detection: {ev['first_date']}; last detection: {ev['last_date']}; detections: {ev['count']}\n"
        f"Area: {ev['area_ha']:.2f} ha ({ev['confirmed_ha']:.2f} ha confirmed)\n"
        f"Confidence: {ev['confidence']:.2f} (mean probability {ev['mean_prob']:.2f})\n{where}\n"
        f"Attached: the place before the first detection, on the alert date, and the alert pixels.\n"
        f"You receive this as subscriber '{payload['subscriber']}' of sandwatch alerts.\n")
    if attachment and Path(attachment).is_file():
        msg.add_attachment(Path(attachment).read_bytes(), maintype="image", subtype="png",
                           filename=Path(attachment).name)
    return msg


class Mailer:
    """One SMTP connection for a run's e-mails (see the module doc)."""

    def __init__(self, settings: SmtpSettings):
        self.settings = settings
        self.smtp: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        where = f"SMTP server {s.host}:{s.port}"
        try:
            context = ssl.create_default_context(cafile=str(s.ca_file) if s.ca_file else None)
            if s.ssl:
                smtp = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout_seconds, context=context)
            else:
                smtp = smtplib.SMTP(s.host, s.port, timeout=s.timeout_seconds)
                if s.starttls:
                    smtp.starttls(context=context)
            if s.username:
                smtp.login(s.username, s.login_password() or "")
        except (OSError, smtplib.SMTPException) as err:
            raise DeliveryError(f"{where}: {err}") from None
        return smtp

    def send(self, payload: dict, to: str, attachment: str | None) -> None:
        msg = email_message(payload, self.settings.sender, to, attachment)
        if self.smtp is None:
            self.smtp = self._connect()
        try:
            refused = self.smtp.send_message(msg)
        except smtplib.SMTPRecipientsRefused as err:
            raise DeliveryError(f"{to}: refused by the SMTP server ({err.recipients})") from None
        except (OSError, smtplib.SMTPException) as err:
            self.close()
            raise DeliveryError(f"SMTP server {self.settings.host}:{self.settings.port}: {err}") from None
        if refused:
            raise DeliveryError(f"{to}: refused by the SMTP server ({refused})")

    def close(self) -> None:
        if self.smtp is not None:
            try:
                self.smtp.quit()
            except (OSError, smtplib.SMTPException):
                pass
            self.smtp = None
