"""The streaming accumulator against scikit-learn: random, ties, all negative, all positive, weights."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, precision_recall_curve, precision_score, recall_score

from sandwatch.evaluate.metrics import PRAccumulator, levels_to_probability


def _feed(scores, labels, weights=None, n_chunks=5, **kw):
    acc = PRAccumulator(**kw)
    idx = np.array_split(np.arange(len(scores)), n_chunks)
    for c in idx:
        acc.update(scores[c], labels[c], None if weights is None else weights[c])
    return acc


def _sk_ap(y, s, w=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return average_precision_score(y, s, sample_weight=w)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_float_scores_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(30000) < 0.05
    s = np.clip(rng.normal(0.3 + 0.3 * y, 0.2), 0, 1)
    acc = _feed(s, y)
    m = acc.metrics()
    assert m.exact and m.ap_error_bound == 0
    assert m.ap == pytest.approx(_sk_ap(y, s), abs=1e-9)
    pred = s >= 0.5
    assert m.precision == pytest.approx(precision_score(y, pred), abs=1e-12)
    assert m.recall == pytest.approx(recall_score(y, pred), abs=1e-12)
    assert m.f1 == pytest.approx(f1_score(y, pred), abs=1e-12)
    assert (m.n_positive, m.n_negative) == (int(y.sum()), int((~y).sum()))
    # best F1 equals the max over sklearn's curve
    p, r, t = precision_recall_curve(y, s)
    f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-300), 0)
    assert m.best_f1 == pytest.approx(f1.max(), abs=1e-12)
    assert m.best_threshold == pytest.approx(t[np.argmax(f1[:-1])], abs=0)


def test_uint8_levels_ties_match_sklearn():
    rng = np.random.default_rng(3)
    y = rng.random(50000) < 0.1
    q = rng.integers(0, 256, 50000).astype(np.uint8)
    q[y] = np.maximum(q[y], rng.integers(0, 256, int(y.sum()))).astype(np.uint8)  # heavy ties: 256 levels
    acc = _feed(q, y)
    assert acc.n_distinct == 256
    assert acc.metrics().ap == pytest.approx(_sk_ap(y, q / 255.0), abs=1e-9)
    # the predict encoding: p = (v - 1) / 254, 0 = nodata; level 128 is exactly 0.5 and counts as positive
    p = levels_to_probability(np.array([1, 128, 255]), 1 / 254, -1 / 254)
    assert p.tolist() == [0.0, 0.5, 1.0]
    acc2 = PRAccumulator()
    acc2.update(np.array([128, 127], np.uint8), np.array([1, 0]), scale=1 / 254, offset=-1 / 254)
    m2 = acc2.metrics()
    assert (m2.precision, m2.recall) == (1.0, 1.0)


def test_all_equal_scores_and_adversarial_ties():
    y = np.array([0, 1, 0, 1, 1, 0, 0, 0])
    s = np.full(8, 0.7)
    acc = _feed(s, y, n_chunks=3)
    assert acc.metrics().ap == pytest.approx(_sk_ap(y, s), abs=1e-12) == pytest.approx(3 / 8)
    # ties straddling positives and negatives at several levels
    s2 = np.array([0.9, 0.9, 0.5, 0.5, 0.5, 0.1, 0.1, 0.9])
    acc2 = _feed(s2, y, n_chunks=4)
    assert acc2.average_precision() == pytest.approx(_sk_ap(y, s2), abs=1e-12)


def test_all_negative_and_all_positive():
    s = np.linspace(0, 1, 101)
    neg = _feed(s, np.zeros(101, bool))
    m = neg.metrics()
    assert m.ap is None and m.recall is None and m.best_f1 is None  # undefined: reported as None
    assert neg.average_precision() == _sk_ap(np.zeros(101), s) == 0.0  # sklearn's convention
    assert m.precision == 0.0 and m.n_negative == 101
    pos = _feed(s, np.ones(101, bool))
    mp = pos.metrics()
    assert mp.ap == pytest.approx(_sk_ap(np.ones(101), s)) == pytest.approx(1.0)
    assert mp.precision == 1.0 and mp.recall == pytest.approx(51 / 101)  # 0.50, 0.51 .. 1.00


def test_weights_and_exclusion_match_sklearn():
    rng = np.random.default_rng(5)
    n = 20000
    y = rng.random(n) < 0.08
    s = np.round(np.clip(rng.normal(0.3 + 0.35 * y, 0.2), 0, 1), 3)  # ties through rounding
    w = np.where(rng.random(n) < 0.3, 0.5, 1.0)
    w[rng.random(n) < 0.05] = 0.0  # zero weight: dropped, as sklearn does
    acc = _feed(s, y, w)
    m = acc.metrics()
    assert m.ap == pytest.approx(_sk_ap(y, s, w), abs=1e-9)
    pred = s >= 0.5
    assert m.precision == pytest.approx(precision_score(y, pred, sample_weight=w), abs=1e-12)
    assert m.recall == pytest.approx(recall_score(y, pred, sample_weight=w), abs=1e-12)
    assert m.positive_weight == pytest.approx(w[y].sum())
    # an exclusion mask equals dropping the pixels
    ex = rng.random(n) < 0.2
    acc_ex = PRAccumulator()
    acc_ex.update(s, y, exclude=ex)
    assert acc_ex.metrics().ap == pytest.approx(_sk_ap(y[~ex], s[~ex]), abs=1e-12)
    assert acc_ex.metrics().n_pixels == int((~ex).sum())


def test_merge_equals_pooled_and_mixed_dtypes():
    rng = np.random.default_rng(7)
    y1, y2 = rng.random(5000) < 0.1, rng.random(7000) < 0.02
    s1 = rng.integers(0, 256, 5000).astype(np.uint8)
    s2 = rng.random(7000)
    a, b = PRAccumulator(), PRAccumulator()
    a.update(s1, y1)
    b.update(s2, y2)
    pooled = a.copy().merge(b)
    ref = _sk_ap(np.concatenate([y1, y2]), np.concatenate([s1 / 255.0, s2]))
    assert pooled.metrics().ap == pytest.approx(ref, abs=1e-9)
    assert a.metrics().ap == pytest.approx(_sk_ap(y1, s1 / 255.0), abs=1e-9)  # copy left `a` alone


def test_fallback_bins_stay_within_reported_bound():
    rng = np.random.default_rng(11)
    n = 60000
    y = rng.random(n) < 0.1
    s = np.clip(rng.normal(0.25 + 0.3 * y, 0.15), 0, 1)
    # tiny table and coarse bins so that the fallback creates real ties
    acc = _feed(s, y, n_chunks=6, max_distinct=1000, fallback_bins=2**10)
    m = acc.metrics()
    ref = _sk_ap(y, s)
    assert not m.exact and acc.binned
    assert m.ap_error_bound > 0
    assert abs(m.ap - ref) <= m.ap_error_bound + 1e-12
    assert abs(m.ap - ref) > 1e-7  # the bins did change something: the bound is not vacuous here
    # P/R at 0.5 stay exact because 0.5 is a bin edge
    pred = s >= 0.5
    assert m.precision == pytest.approx(precision_score(y, pred), abs=1e-12)
    # default bins (2**24): float32 scores >= 0.5 are exact; the bound is tiny
    acc24 = _feed(s.astype(np.float32), y, n_chunks=6, max_distinct=1000)
    m24 = acc24.metrics()
    assert abs(m24.ap - _sk_ap(y, s.astype(np.float32))) <= max(m24.ap_error_bound, 1e-12) + 1e-12
    assert m24.ap_error_bound < 1e-4


def test_curve_points_are_thinned_and_monotone_in_threshold():
    rng = np.random.default_rng(2)
    y = rng.random(5000) < 0.2
    s = rng.random(5000)
    pts = _feed(s, y).curve_points(max_points=100)
    assert len(pts["threshold"]) <= 100
    assert np.all(np.diff(pts["threshold"]) < 0)
    assert pts["recall"][-1] == pytest.approx(1.0)


def test_merge_of_weighted_and_unweighted_accumulators():
    rng = np.random.default_rng(9)
    y = rng.random(8000) < 0.1
    s = np.round(rng.random(8000), 2)
    w = np.where(rng.random(8000) < 0.5, 0.5, 1.0)
    w[:4000] = 1.0  # the first half is unweighted
    a, b = PRAccumulator(), PRAccumulator()
    a.update(s[:4000], y[:4000])
    b.update(s[4000:], y[4000:], weights=w[4000:])
    for first, second in ((a.copy(), b), (b.copy(), a)):
        pooled = first.merge(second)
        assert pooled.metrics().ap == pytest.approx(_sk_ap(y, s, w), abs=1e-9)
        assert pooled.metrics().positive_weight == pytest.approx(w[y].sum())
