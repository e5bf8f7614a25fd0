"""Pixel metrics in bounded memory: average precision, PR curve, precision/recall/F1.

:class:`PRAccumulator` takes pixels chunk by chunk (scores, labels, optional weights and an
exclusion mask) and keeps only **counts per distinct score**, so memory grows with the number
of distinct scores, never with the number of pixels:

* integer scores (the uint8 probability maps of ``predict``: probability = value / 255) are
  counted with one ``np.bincount`` per chunk: 256 levels, exact;
* float scores keep exact counts per distinct value: each chunk is reduced with
  ``np.unique(..., return_inverse=True)`` + ``np.bincount`` and merged into the sorted table of
  values seen so far;
* **fallback**: when the table would exceed ``max_distinct`` values (default 2**21), it is folded
  into ``2**24 + 1`` fixed bins ``floor(p * 2**24)`` over [0, 1] (``bins`` mode, 256 MB without
  weights). Every float32 probability >= 0.5 is a multiple of 2**-24, so bins are exact there
  and the 0.5 threshold is a bin edge (precision/recall/F1 at 0.5 stay exact); below 0.5 scores
  closer than 6e-8 become ties. The resulting AP error is bounded and reported
  (:attr:`PRMetrics.ap_error_bound`, 0 when exact): within a bin, the step-wise AP sum can move
  by at most ``(bin's positive weight / total positive weight) * (max - min precision the bin
  can reach)``, summed over bins.

From the counts it computes exactly what scikit-learn computes on the pooled pixels:
``average_precision_score`` (step-wise: ``sum_n (R_n - R_{n-1}) P_n`` over distinct score
thresholds, pixels predicted positive when ``score >= threshold``), ``precision_recall_curve``,
and precision, recall and F1 at a threshold (0.5) and at the best-F1 threshold.

Zero-weight pixels are dropped (as scikit-learn does); excluded pixels (``exclude`` mask) too.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

#: Number of fixed bins over [0, 1) in the fallback mode (plus one bin for exactly 1.0).
FALLBACK_BINS = 2**24
#: Default size of the exact table of distinct float scores before falling back to bins.
MAX_DISTINCT = 2**21


@dataclass
class PRMetrics:
    """Summary of an accumulator (JSON-friendly: floats, ints and None)."""

    n_pixels: int                 # pixels counted (after exclusions, weight > 0)
    n_positive: int               # mine pixels counted
    n_negative: int
    positive_weight: float        # sums of sample weights (== counts when unweighted)
    negative_weight: float
    ap: float | None              # None when there is no positive pixel (AP undefined)
    threshold: float              # the fixed threshold (0.5 by default)
    precision: float | None       # at `threshold`; None when nothing is predicted positive
    recall: float | None          # at `threshold`; None without positives
    f1: float | None
    best_threshold: float | None  # threshold of the best F1 on the PR curve
    best_precision: float | None
    best_recall: float | None
    best_f1: float | None
    exact: bool = True            # False once the fallback bins were used
    ap_error_bound: float = 0.0   # bound on |AP - exact AP| (0 when exact)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _as_bool(a) -> np.ndarray:
    a = np.asarray(a)
    return a if a.dtype == bool else a != 0


class PRAccumulator:
    """Exact streaming counts of positives and negatives per distinct score.

    >>> acc = PRAccumulator()
    >>> acc.update(np.array([0.1, 0.9, 0.8]), np.array([0, 1, 0]))
    >>> round(acc.average_precision(), 4)
    1.0

    ``update(scores, labels, weights=None, exclude=None)``: ``scores`` probabilities in [0, 1]
    as floats, or integer levels with probability = ``value * scale + offset`` (default for
    uint8: ``scale=1/255``, see :func:`levels_to_probability`); ``labels`` 0/1 or bool; ``weights`` non-negative sample weights;
    ``exclude`` True where a pixel must not count. All of the same shape.
    """

    def __init__(self, max_distinct: int = MAX_DISTINCT, fallback_bins: int = FALLBACK_BINS):
        self.max_distinct = int(max_distinct)
        self.fallback_bins = int(fallback_bins)
        # exact table (mode "table"): sorted distinct scores, counts and weights
        self._values = np.empty(0, np.float64)
        self._npos = np.empty(0, np.int64)
        self._nneg = np.empty(0, np.int64)
        self._wpos: np.ndarray | None = None  # None while every weight is 1 (weights == counts)
        self._wneg: np.ndarray | None = None
        self.binned = False  # True once folded into fixed bins (mode "bins")

    # ---- accumulation -------------------------------------------------------------------
    def update(self, scores, labels, weights=None, exclude=None, scale: float | None = None,
               offset: float = 0.0) -> None:
        scores = np.asarray(scores)
        labels = _as_bool(labels)
        if scores.shape != labels.shape:
            raise ValueError(f"scores {scores.shape} and labels {labels.shape} differ in shape")
        keep = None
        if exclude is not None:
            exclude = _as_bool(exclude)
            if exclude.shape != scores.shape:
                raise ValueError("exclude mask and scores differ in shape")
            keep = ~exclude
        if weights is not None:
            weights = np.asarray(weights, dtype=np.float64)
            if weights.shape != scores.shape:
                raise ValueError("weights and scores differ in shape")
            if np.any(weights < 0) or not np.all(np.isfinite(weights)):
                raise ValueError("weights must be finite and non-negative")
            nz = weights > 0
            keep = nz if keep is None else keep & nz
            if np.all(weights[keep] == 1.0) if keep is not None else np.all(weights == 1.0):
                weights = None
        if keep is not None:
            scores, labels = scores[keep], labels[keep]
            if weights is not None:
                weights = weights[keep]
        else:
            scores, labels = scores.ravel(), labels.ravel()
            if weights is not None:
                weights = weights.ravel()
        if scores.size == 0:
            return
        if np.issubdtype(scores.dtype, np.integer):
            self._update_integer(scores, labels, weights, scale if scale is not None else _default_scale(scores.dtype),
                                 offset)
        else:
            if scale is not None or offset:
                scores = scores.astype(np.float64) * (1.0 if scale is None else scale) + offset
            if np.isnan(scores).any():
                raise ValueError("scores contain NaN: exclude those pixels")
            self._update_float(scores, labels, weights)

    def _update_integer(self, scores, labels, weights, scale, offset=0.0):
        if scores.min() < 0:
            raise ValueError("integer scores must be non-negative")
        n = int(scores.max()) + 1
        if n > 1 << 20:  # wide integers: treat them as floats
            self._update_float(levels_to_probability(scores, scale, offset), labels, weights)
            return
        idx = scores.astype(np.intp, copy=False)
        npos = np.bincount(idx[labels], minlength=n)
        ntot = np.bincount(idx, minlength=n)
        present = np.flatnonzero(ntot)
        wpos = wneg = None
        if weights is not None:
            wp = np.bincount(idx, weights=np.where(labels, weights, 0.0), minlength=n)
            wt = np.bincount(idx, weights=weights, minlength=n)
            wpos, wneg = wp[present], (wt - wp)[present]
        values = levels_to_probability(present, scale, offset)
        self._merge(values, npos[present], (ntot - npos)[present], wpos, wneg)

    def _update_float(self, scores, labels, weights):
        if self.binned:
            self._add_binned(scores, labels, weights)
            return
        self._merge(*_distinct_counts(scores, labels, weights))

    def _merge(self, values, npos, nneg, wpos, wneg):
        """Merge counts for sorted distinct ``values`` into the table (or the bins)."""
        if self.binned:
            self._add_table_to_bins(values, npos, nneg, wpos, wneg)
            return
        if (wpos is not None) and self._wpos is None:
            self._wpos, self._wneg = self._npos.astype(np.float64), self._nneg.astype(np.float64)
        if wpos is None and self._wpos is not None:
            wpos, wneg = npos.astype(np.float64), nneg.astype(np.float64)
        if len(self._values) == 0:
            allv, inv = values, np.arange(len(values))
            n = len(values)
            old_inv = np.empty(0, np.intp)
        elif len(values) <= 4096 and np.isin(values, self._values).all():
            # common case for uint8 maps: every level already in the table
            pos = np.searchsorted(self._values, values)
            self._npos[pos] += npos
            self._nneg[pos] += nneg
            if self._wpos is not None:
                self._wpos[pos] += wpos
                self._wneg[pos] += wneg
            return
        else:
            allv = np.union1d(self._values, values)
            n = len(allv)
            old_inv = np.searchsorted(allv, self._values)
            inv = np.searchsorted(allv, values)
        def merged(old: np.ndarray, new: np.ndarray) -> np.ndarray:
            """``old`` counts (at ``old_inv``) plus ``new`` ones (at ``inv``) on the ``allv`` table."""
            out = np.zeros(n, old.dtype)
            out[old_inv] = old
            out[inv] += new
            return out

        self._npos, self._nneg = merged(self._npos, npos), merged(self._nneg, nneg)
        if self._wpos is not None:
            self._wpos, self._wneg = merged(self._wpos, wpos), merged(self._wneg, wneg)
        self._values = allv
        if n > self.max_distinct:
            self._fold_into_bins()

    # ---- fallback bins ------------------------------------------------------------------
    def _bin_index(self, values):
        b = np.floor(np.asarray(values, np.float64) * self.fallback_bins)
        return np.clip(b, 0, self.fallback_bins).astype(np.intp)

    def _fold_into_bins(self):
        nb = self.fallback_bins + 1
        values, npos, nneg, wpos, wneg = self._values, self._npos, self._nneg, self._wpos, self._wneg
        self.binned = True
        self._values = None  # bin i stands for scores in [i / bins, (i + 1) / bins)
        self._npos = np.zeros(nb, np.int64)
        self._nneg = np.zeros(nb, np.int64)
        self._wpos = None if wpos is None else np.zeros(nb, np.float64)
        self._wneg = None if wneg is None else np.zeros(nb, np.float64)
        # per bin: lowest and highest original value seen, to know which bins hold ties
        self._distinct = np.zeros(nb, np.int8)  # 0 none, 1 one distinct value, 2 several
        self._first = np.full(nb, np.nan)
        self._add_table_to_bins(values, npos, nneg, wpos, wneg)

    def _note_values(self, idx, values):
        """Track whether a bin received more than one distinct original value."""
        first = self._first[idx]
        fresh = np.isnan(first)
        self._first[idx[fresh]] = values[fresh]
        several = ~fresh & (first != values)
        self._distinct[idx[several]] = 2
        self._distinct[idx[fresh]] = np.maximum(self._distinct[idx[fresh]], 1)
        # two distinct values landing in the same fresh bin within this batch
        u, counts = np.unique(idx[fresh], return_counts=True)
        self._distinct[u[counts > 1]] = 2

    def _add_table_to_bins(self, values, npos, nneg, wpos, wneg):
        idx = self._bin_index(values)
        self._note_values(idx, values)
        if wpos is not None and self._wpos is None:
            self._wpos, self._wneg = self._npos.astype(np.float64), self._nneg.astype(np.float64)
        if self._wpos is not None:
            if wpos is None:
                wpos, wneg = npos.astype(np.float64), nneg.astype(np.float64)
            np.add.at(self._wpos, idx, wpos)
            np.add.at(self._wneg, idx, wneg)
        np.add.at(self._npos, idx, npos)
        np.add.at(self._nneg, idx, nneg)

    def _add_binned(self, scores, labels, weights):
        self._add_table_to_bins(*_distinct_counts(scores, labels, weights))

    # ---- combining ----------------------------------------------------------------------
    def merge(self, other: "PRAccumulator") -> "PRAccumulator":
        """Add another accumulator's counts to this one (pooling images, clusters)."""
        if other.binned and not self.binned:
            self._fold_into_bins()
        if other.binned:
            keep = np.flatnonzero((other._npos + other._nneg) > 0)
            vals = other._level_values(keep)
            wpos = None if other._wpos is None else other._wpos[keep]
            wneg = None if other._wneg is None else other._wneg[keep]
            self._add_table_to_bins(vals, other._npos[keep], other._nneg[keep], wpos, wneg)
            self._distinct[keep[other._distinct[keep] == 2]] = 2
            # the first-values of the other bins were noted by _add_table_to_bins; a bin that
            # holds different first values in both accumulators was marked there as well
            return self
        if len(other._values):
            wpos = None if other._wpos is None else other._wpos
            wneg = None if other._wneg is None else other._wneg
            self._merge(other._values, other._npos, other._nneg, wpos, wneg)
        return self

    def copy(self) -> "PRAccumulator":
        new = PRAccumulator(self.max_distinct, self.fallback_bins)
        return new.merge(self)

    # ---- read-out -----------------------------------------------------------------------
    @property
    def n_distinct(self) -> int:
        return int(np.count_nonzero((self._npos + self._nneg) > 0))

    def _level_values(self, idx: np.ndarray) -> np.ndarray:
        if self._values is None:
            return np.asarray(idx, np.float64) / self.fallback_bins
        return self._values[idx]

    def _weights(self):
        if self._wpos is None:
            return self._npos.astype(np.float64), self._nneg.astype(np.float64)
        return self._wpos, self._wneg

    def _descending(self):
        """Present levels, highest score first: ``(values, positive weight, negative weight, index)``."""
        if self._wpos is None:
            idx = np.flatnonzero((self._npos + self._nneg) > 0)[::-1]
            return (self._level_values(idx), self._npos[idx].astype(np.float64),
                    self._nneg[idx].astype(np.float64), idx)
        idx = np.flatnonzero((self._wpos + self._wneg) > 0)[::-1]
        return self._level_values(idx), self._wpos[idx], self._wneg[idx], idx

    def curve(self):
        """Full PR curve, highest threshold first: ``(thresholds, precision, recall)``.

        ``precision[i]`` and ``recall[i]`` are those of predicting ``score >= thresholds[i]``
        (recall is NaN when there is no positive weight).
        """
        values, wpos, wneg, _ = self._descending()
        tp = np.cumsum(wpos)
        fp = np.cumsum(wneg)
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1e-300), 0.0)
            total = tp[-1] if len(tp) else 0.0
            recall = tp / total if total > 0 else np.full(len(tp), np.nan)
        return values, precision, recall

    def _scan(self):
        """One lean pass over the curve: (AP, best F1 index, values, tp, fp) with few temporaries."""
        values, wpos, wneg, _ = self._descending()
        total = float(wpos.sum())
        tp = np.cumsum(wpos, out=wpos)
        fp = np.cumsum(wneg, out=wneg)
        denom = tp + fp
        # AP = sum_n (R_n - R_{n-1}) P_n = sum_n (w_pos_n / total) * tp_n / (tp_n + fp_n)
        steps = np.diff(tp, prepend=0.0)
        ap = float(np.sum(steps * np.divide(tp, denom, out=np.zeros_like(tp), where=denom > 0)) / total) \
            if total > 0 else 0.0
        del steps
        # F1 = 2 TP / (TP + FP + P)
        denom += total
        f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
        best = int(np.argmax(f1)) if len(f1) else None
        return ap, best, values, tp, fp, total

    def average_precision(self) -> float:
        """scikit-learn's ``average_precision_score`` on the pooled pixels.

        Without positives this is 0.0, as scikit-learn returns (with a warning); the summary
        :meth:`metrics` reports ``None`` instead.
        """
        return self._scan()[0]

    def at_threshold(self, threshold: float) -> tuple[float, float, float, float]:
        """Weighted (TP, FP, FN, TN) when pixels with ``score >= threshold`` are called mine."""
        values, wpos, wneg, _ = self._descending()
        hit = values >= threshold
        tp, fp = float(wpos[hit].sum()), float(wneg[hit].sum())
        fn, tn = float(wpos[~hit].sum()), float(wneg[~hit].sum())
        return tp, fp, fn, tn

    def _ap_error_bound(self) -> float:
        if not self.binned:
            return 0.0
        _, p, n, idx = self._descending()
        d = self._distinct[idx]
        total = p.sum()
        if total <= 0:
            return 0.0
        tp0 = np.cumsum(p) - p
        fp0 = np.cumsum(n) - n
        with np.errstate(invalid="ignore", divide="ignore"):
            pmax = np.where(tp0 + p + fp0 > 0, (tp0 + p) / (tp0 + p + fp0), 1.0)
            pmin = np.where(tp0 + fp0 + n > 0, tp0 / (tp0 + fp0 + n), 0.0)
        err = (p / total) * np.clip(pmax - pmin, 0, 1)
        return float(np.sum(err[d == 2]))

    def metrics(self, threshold: float = 0.5) -> PRMetrics:
        """All the numbers: AP, P/R/F1 at ``threshold`` and at the best-F1 threshold."""
        npos, nneg = int(self._npos.sum()), int(self._nneg.sum())
        tp, fp, fn, tn = self.at_threshold(threshold)
        pw, nw = tp + fn, fp + tn
        precision = tp / (tp + fp) if tp + fp > 0 else None
        recall = tp / (tp + fn) if tp + fn > 0 else None
        f1 = _f1(precision, recall)
        best = (None, None, None, None)
        ap = None
        if pw > 0:
            ap, i, values, tps, fps, total = self._scan()
            btp, bfp = float(tps[i]), float(fps[i])
            best = (float(values[i]), btp / (btp + bfp), btp / total, 2 * btp / (btp + bfp + total))
            del values, tps, fps
        return PRMetrics(
            n_pixels=npos + nneg, n_positive=npos, n_negative=nneg,
            positive_weight=pw, negative_weight=nw, ap=ap, threshold=float(threshold),
            precision=precision, recall=recall, f1=f1,
            best_threshold=best[0], best_precision=best[1], best_recall=best[2], best_f1=best[3],
            exact=not self.binned, ap_error_bound=self._ap_error_bound(),
        )

    def curve_points(self, max_points: int = 512) -> dict:
        """A thinned PR curve for plots and JSON: at most ``max_points`` points (always with
        the first and last), as lists ``threshold``, ``precision``, ``recall``."""
        values, precision, recall = self.curve()
        if len(values) > max_points:
            idx = np.unique(np.linspace(0, len(values) - 1, max_points).round().astype(int))
            values, precision, recall = values[idx], precision[idx], recall[idx]
        return {"threshold": values.tolist(), "precision": precision.tolist(),
                "recall": [None if math.isnan(r) else r for r in recall.tolist()]}


def _f1(p, r):
    """F1 of precision ``p`` and recall ``r``; 0 when nothing of the mining is found (also when
    nothing is flagged, so that precision is undefined); None without any mining to find."""
    if r is not None and r == 0:
        return 0.0
    if p is None or r is None:
        return None
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def _default_scale(dtype) -> float:
    if dtype == np.uint8:
        return 1.0 / 255.0
    if dtype == np.uint16:
        return 1.0 / 65535.0
    return 1.0


def levels_to_probability(values, scale: float, offset: float = 0.0) -> np.ndarray:
    """Integer levels to probabilities, ``value * scale + offset`` (GDAL's band scale/offset).

    When ``scale`` is ``1/k`` for an integer ``k`` (uint8 maps: 1/255, or 1/254 with offset
    -1/254 as ``sandwatch.predict`` writes them) this is computed as ``(value - o) / k`` so that
    e.g. level 128 of ``(v - 1) / 254`` is exactly 0.5 and lands on the right side of 0.5.
    """
    v = np.asarray(values, dtype=np.float64)
    k = 1.0 / scale
    if abs(k - round(k)) < 1e-6 * max(1.0, abs(k)):
        k = float(round(k))
        o = -offset * k
        if abs(o - round(o)) < 1e-6:
            o = float(round(o))
        return (v - o) / k
    return v * scale + offset


def _distinct_counts(scores, labels, weights):
    """Sorted distinct scores with their positive/negative counts (and weight sums, or None)."""
    u, inv = np.unique(scores, return_inverse=True)
    inv = inv.ravel()
    ntot = np.bincount(inv, minlength=len(u))
    npos = np.bincount(inv[labels], minlength=len(u))
    wpos = wneg = None
    if weights is not None:
        wpos = np.bincount(inv, weights=np.where(labels, weights, 0.0), minlength=len(u))
        wneg = np.bincount(inv, weights=weights, minlength=len(u)) - wpos
    return u.astype(np.float64), npos, ntot - npos, wpos, wneg
