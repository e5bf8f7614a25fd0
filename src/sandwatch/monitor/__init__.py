"""Monitoring over time: mined area per site and date, alerts when mining starts, grows or
stops, and a site history database.

::

    from sandwatch.monitor import monitor_site, site_report
    result = monitor_site("best.pt", "site00", "site00/rivers.geojson", scenes, "monitor/")
    result.paths["timeseries_csv"], result.added_alerts
    print(format_report(site_report("monitor/history.sqlite")))

The arithmetic (per-date figures, the alert rules) is in :mod:`~sandwatch.monitor.series`,
the observed-pixel tests (SCL, L1C clouds) in :mod:`~sandwatch.monitor.clouds`, the database
in :mod:`~sandwatch.monitor.history`.
"""

from sandwatch.imagery.clouds import CLOUD_TESTS
from sandwatch.monitor.clouds import SCL_NOT_OBSERVED, L1CCloudTest, cloud_method, observed_mask, scl_not_observed
from sandwatch.monitor.history import History, database_url
from sandwatch.monitor.report import SiteSummary, alert_text, format_report, open_alerts, site_report
from sandwatch.monitor.outputs import plot_series, write_outputs
from sandwatch.monitor.run import (DB_NAME, MonitorConfig, MonitorResult, monitor_site, read_observation_raster,
                                   scene_fingerprint)
from sandwatch.monitor.series import (ALERT_KINDS, AlertConfig, AlertEvent, AlertTracker, DateFigures, date_figures,
                                      trend)

__all__ = [
    "ALERT_KINDS", "AlertConfig", "AlertEvent", "AlertTracker", "CLOUD_TESTS", "DB_NAME", "DateFigures", "History",
    "L1CCloudTest", "MonitorConfig", "MonitorResult", "SCL_NOT_OBSERVED", "SiteSummary", "cloud_method",
    "database_url", "date_figures", "format_report", "monitor_site", "observed_mask", "open_alerts",
    "plot_series", "read_observation_raster", "scene_fingerprint", "scl_not_observed", "site_report", "trend", "Trend", "alert_text",
    "write_outputs",
]
