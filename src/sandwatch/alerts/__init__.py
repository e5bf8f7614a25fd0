"""Alerts authorities can act on, after monitoring (``sandwatch alerts``).

::

    from sandwatch.alerts import AlertRules, update_alerts, deliver, load_subscribers
    res = update_alerts("monitor/history.sqlite", "site00", "monitor/alerts")    # events + layers
    res.added_events, res.paths["status"], res.paths["geojson"]
    rep = deliver("monitor/history.sqlite", load_subscribers("subs.yaml"), "monitor/alerts", dry_run=True)

The stage reads the monitor's history (its observation rasters) and adds to it:

* :mod:`~sandwatch.alerts.model`: per-pixel alert state (provisional / confirmed / expired /
  rejected, first and last detection, count, confidence) and alert regions at or above the
  minimum mapping unit, each event raised once; arrays only;
* :mod:`~sandwatch.alerts.stage`: :func:`update_alerts` replays a site's history, records its
  events (``alert_events``) and writes :mod:`~sandwatch.alerts.layers` (COGs + GeoJSON);
* :mod:`~sandwatch.alerts.deliver`: subscribers (:mod:`~sandwatch.alerts.subscribers`, YAML)
  get e-mails (with the PNG of :mod:`~sandwatch.alerts.figure`) and signed webhooks
  (:mod:`~sandwatch.alerts.send`) through the outbox of the history database, and feed files;
* :mod:`~sandwatch.alerts.accuracy`: precision, recall and delay on synthetic series
  (``benchmarks/alerts.py``);
* :mod:`~sandwatch.alerts.calibrate`: the confirmation gate for your model from reviewers'
  accepted / rejected alerts (``sandwatch alerts calibrate``).

The tables (``alert_events``, ``alert_reviews``, ``outbox``) are in
:mod:`sandwatch.monitor.history_alerts`, beside the monitor's own.
"""

from sandwatch.alerts.calibrate import Calibration, calibrate
from sandwatch.alerts.deliver import DeliveryReport, deliver
from sandwatch.alerts.layers import DATE_EPOCH, LAYERS, write_layers
from sandwatch.alerts.model import STATUS_NAMES, AlertRules, PixelAlerts, RegionEvent
from sandwatch.alerts.stage import AlertsResult, update_alerts
from sandwatch.alerts.subscribers import Subscribers, load_subscribers

__all__ = [
    "AlertRules", "AlertsResult", "Calibration", "DATE_EPOCH", "DeliveryReport", "LAYERS", "PixelAlerts", "RegionEvent",
    "STATUS_NAMES", "Subscribers", "deliver", "load_subscribers", "update_alerts", "write_layers",
    "calibrate",
]
