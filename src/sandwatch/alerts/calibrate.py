"""Choose ``confirm_prob`` for *your* model from your reviewers' decisions.

The confirmation gate (:attr:`~sandwatch.alerts.model.AlertRules.confirm_prob`) separates
mining from look-alikes the model flags on every date by the mean probability of a region's
detections, so its right value depends on how the model spreads its probabilities. Reviewers
already say which alert regions are mining: *accepted* or *rejected* on the map (``sandwatch
serve``: the history's ``alert_decisions``) or rejected with ``sandwatch alerts reject``
(``alert_reviews``). :func:`calibrate` replays each reviewed site once per candidate gate
(with no rejection applied, so rejected regions can be confirmed again), and counts, among the
reviewed regions, those the gate confirms: precision = accepted / confirmed, recall = accepted
confirmed / accepted. The suggestion is the lowest gate whose precision reaches the target
(the lowest keeps the most mines).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

from sandwatch.alerts.model import AlertRules, PixelAlerts
from sandwatch.errors import SandwatchError

#: candidate gates: 0 (time alone), 0.5 .. 0.95 in steps of 0.05
GATES = (0.0, *(round(0.5 + 0.05 * i, 2) for i in range(10)))
#: fewer reviewed regions than this and the suggestion is flagged as weak
MIN_REVIEWED = 20


@dataclass(frozen=True)
class GateRow:
    gate: float
    confirmed: int          #: reviewed regions the gate confirms
    accepted: int           #: ... of which reviewers accepted
    precision: float        #: accepted / confirmed (nan: none confirmed)
    recall: float           #: accepted confirmed / all accepted (nan: none accepted)


@dataclass
class Calibration:
    rows: list[GateRow]
    accepted: int                        #: reviewed regions accepted (mining)
    rejected: int                        #: reviewed regions rejected (not mining)
    target: float
    suggested: float | None              #: lowest gate reaching ``target`` precision, None if none does
    missing: list[str] = field(default_factory=list)   #: reviewed keys no replay raised (site:key)

    @property
    def weak(self) -> bool:
        return self.accepted + self.rejected < MIN_REVIEWED or not self.accepted or not self.rejected


def reviewed_regions(history, site_id: int) -> dict[str, bool]:
    """Event key -> True (accepted: mining) / False (rejected) of one site's pixel-alert
    regions: the latest map decision, else a ``sandwatch alerts reject`` rejection;
    "needs field check" is no verdict."""
    from sandwatch.monitor.history_alerts import latest_decisions, rejected_keys

    out = {key: False for key in rejected_keys(history, site_id)}
    for k, row in latest_decisions(history).items():
        if isinstance(k, tuple) and k[0] == site_id and row["decision"] in ("accepted", "rejected"):
            out[k[1]] = row["decision"] == "accepted"
    return out


def calibrate(db: str | os.PathLike, sites: list[str] | None = None, rules: AlertRules = AlertRules(),
              gates=GATES, target: float = 0.95, progress: bool = False) -> Calibration:
    """Precision and recall of each gate on the reviewed regions of ``sites`` (default: every
    site with a review); the other rules are ``rules``'. See the module docstring."""
    from sandwatch.alerts.stage import site_series
    from sandwatch.monitor.history import History

    history = History(db, must_exist=True)
    try:
        names = sites or [s.name for s in history.sites()]
        confirmed = {g: {} for g in gates}          # gate -> {site:key -> accepted?}
        truth: dict[str, bool] = {}
        missing: list[str] = []
        for name in names:
            rec = history.site(name)
            if rec is None:
                raise SandwatchError.about(db, f"has no site {name!r}", "check --site (see `sandwatch alerts list`)")
            verdicts = reviewed_regions(history, rec.id)
            if not verdicts:
                continue
            truth.update({f"{name}:{k}": v for k, v in verdicts.items()})
            _, wgrid, aoi, dates = site_series(history, name, rules, progress)
            dates = list(dates)            # read once, replayed once per gate
            raised = set()
            for g in gates:
                state = PixelAlerts(aoi.shape, wgrid.pixel_area_m2, replace(rules, confirm_prob=g))
                for date, mine, observed, prob in dates:
                    for e in state.update(date, mine, observed, prob):
                        raised.add(e.key)
                        if e.status == "confirmed" and e.key in verdicts:
                            confirmed[g][f"{name}:{e.key}"] = verdicts[e.key]
            missing += [f"{name}:{k}" for k in verdicts if k not in raised]
    finally:
        history.close()
    if not truth:
        raise SandwatchError.about(db, "has no reviewed alert region",
                                   "accept or reject alerts on the map (`sandwatch serve`) or with "
                                   "`sandwatch alerts reject`, then calibrate")
    n_acc = sum(truth.values())
    rows = []
    for g in gates:
        hits = confirmed[g]
        acc = sum(hits.values())
        rows.append(GateRow(g, len(hits), acc, acc / len(hits) if hits else float("nan"),
                            acc / n_acc if n_acc else float("nan")))
    ok = [r.gate for r in rows if r.confirmed and r.precision >= target]
    return Calibration(rows, n_acc, len(truth) - n_acc, target, min(ok) if ok else None, missing)
