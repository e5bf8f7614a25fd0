"""Alert accuracy on the synthetic demo time series, where the truth is known.

    .venv/bin/python benchmarks/alerts.py                       # 12 sites x 3 seeds, 256 px, 10 dates
    .venv/bin/python benchmarks/alerts.py --sites 6 --size 128 --seeds 0 1   # the test's series
    .venv/bin/python benchmarks/alerts.py --miss-rate 0.3 --confuser-rate 0.5   # a worse detector

The demo sites (mining that grows, stops, stays or never starts; :mod:`sandwatch.synthetic`)
give, per date, the pixels of every active mining cluster; a simulated detector adds what a
good but imperfect model and cloud mask do (missed pixels, false blobs anywhere, fixed
look-alikes that come back, salt noise, clouds, cloudy gap dates): see
:mod:`sandwatch.alerts.accuracy`. The alert model runs on it with its published rules.
Printed per alert stage (provisional = any alert raised; confirmed): regions, precision,
clusters, recall and delay (valid dates from mining onset to the alert), against the goals
of issue 15 (confirmed: precision >= 0.95, recall >= 0.9, median delay <= 2 observations).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from sandwatch.alerts.accuracy import Detector, measure
from sandwatch.alerts.model import AlertRules

GOALS = {"precision": 0.95, "recall": 0.9, "median_delay": 2.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=12)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--dates", type=int, default=10)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--confirm-k", type=int, default=AlertRules.confirm_k)
    ap.add_argument("--expire-after", type=int, default=AlertRules.expire_n)
    ap.add_argument("--mmu-ha", type=float, default=AlertRules.min_area_m2 / 1e4)
    ap.add_argument("--miss-rate", type=float, default=Detector.miss_rate)
    ap.add_argument("--blobs-per-mpx", type=float, default=Detector.blobs_per_mpx)
    ap.add_argument("--confusers-per-mpx", type=float, default=Detector.confusers_per_mpx)
    ap.add_argument("--confuser-rate", type=float, default=Detector.confuser_rate)
    args = ap.parse_args()
    rules = AlertRules(confirm_k=args.confirm_k, expire_n=args.expire_after, min_area_m2=args.mmu_ha * 1e4)
    det = Detector(miss_rate=args.miss_rate, blobs_per_mpx=args.blobs_per_mpx,
                   confusers_per_mpx=args.confusers_per_mpx, confuser_rate=args.confuser_rate)
    t0 = time.perf_counter()
    scores = measure(args.sites, args.size, args.dates, tuple(args.seeds), det, rules, progress=True)
    took = time.perf_counter() - t0
    print(f"alert accuracy: {args.sites} demo sites x {len(args.seeds)} seed(s), {args.size} px, {args.dates} dates "
          f"every 15 days; rules {rules}; detector {det}  ({took:.1f} s)")
    print(f"{'stage':<12} {'regions':>7} {'true':>5} {'precision':>9} {'clusters':>8} {'found':>5} {'recall':>6} "
          f"{'median delay':>12} {'mean delay':>10}  delays (valid dates)")
    for stage, s in scores.items():
        hist = {int(d): s.delays.count(d) for d in sorted(set(s.delays))}
        mean = float(np.mean(s.delays)) if s.delays else float("nan")
        print(f"{stage:<12} {s.regions:>7} {s.true_regions:>5} {s.precision:>9.3f} {s.clusters:>8} {s.found:>5} "
              f"{s.recall:>6.3f} {s.median_delay:>12.1f} {mean:>10.2f}  {hist}")
    c = scores["confirmed"]
    met = {"precision": c.precision >= GOALS["precision"], "recall": c.recall >= GOALS["recall"],
           "median_delay": c.median_delay <= GOALS["median_delay"]}
    print("goals (confirmed): " + ", ".join(f"{k} {'met' if v else 'NOT met'} ({GOALS[k]})" for k, v in met.items()))


if __name__ == "__main__":
    main()
