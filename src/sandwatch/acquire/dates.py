"""Which dates to take (``--dates``): the published method's two dates months apart whose
landscape differs most, a monthly series, or every clear date.

The landscape measure is cheap: a coarse read (``COARSE_RES_M``, GDAL uses the COGs'
overviews) of B02, B03, B04, B08 and B11 over the area from each date's best item, turned into
two indices, MNDWI (water) and the bare-soil index BSI; the difference of two dates is the mean
of ``|dMNDWI| + |dBSI|`` over the pixels clear on both (SCL). Among the pairs at least
``min_gap_months`` apart the most different is chosen (ties: the longer gap, then the clearer
dates); more dates are added greedily, each the most different from those already chosen.
"""

from __future__ import annotations

import datetime as dt
import itertools
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sandwatch.acquire.search import Candidate, band_href, read_over_area
from sandwatch.acquire.sites import Area
from sandwatch.errors import SandwatchError, warn_once

#: Pixel size of the landscape measure's coarse read, metres.
COARSE_RES_M = 60.0
INDEX_BANDS = ("B02", "B03", "B04", "B08", "B11")


@dataclass(frozen=True)
class DateChoice:
    """``dates``: ``"all"``, ``"monthly"`` or a number of dates; ``min_clear``: the least clear
    fraction over the area a date must have."""

    dates: str | int = 2
    min_gap_months: float = 3.0
    min_clear: float = 0.8

    @classmethod
    def parse(cls, dates: str, min_gap_months: float = 3.0, min_clear: float = 0.8) -> "DateChoice":
        text = str(dates).strip().lower()
        if text in ("all", "monthly"):
            return cls(text, min_gap_months, min_clear)
        try:
            n = int(text)
        except ValueError:
            n = 0
        if n < 1:
            raise SandwatchError.about("--dates", f"{dates!r} is not a number of dates, 'monthly' or 'all'",
                                       "pass e.g. --dates 2 (the published method), --dates monthly or --dates all")
        return cls(n, min_gap_months, min_clear)


def months_between(a: dt.date, b: dt.date) -> float:
    return abs((b - a).days) / 30.4375


def indices(dn: np.ndarray, offset: float) -> np.ndarray:
    """MNDWI and BSI (2, h, w) from B02, B03, B04, B08, B11 digital numbers."""
    blue, green, red, nir, swir = ((dn[i] - offset) / 10000.0 for i in range(5))
    with np.errstate(invalid="ignore", divide="ignore"):
        mndwi = (green - swir) / (green + swir)
        bsi = ((swir + red) - (nir + blue)) / ((swir + red) + (nir + blue))
    return np.stack([mndwi, bsi])


def landscape(area: Area, item, sign=None, timeout_s: float = 30.0) -> tuple[np.ndarray, np.ndarray]:
    """(indices (2, h, w), clear (h, w)) of one item over the area on the coarse grid."""
    from rasterio.enums import Resampling

    from sandwatch.acquire.search import _failed_read, item_offset
    from sandwatch.imagery.clouds import scl_not_clear

    hrefs = [band_href(item, b, sign) for b in INDEX_BANDS]
    if None in hrefs:
        missing = [b for b, h in zip(INDEX_BANDS, hrefs) if h is None]
        raise SandwatchError.about(f"item {item.id}", f"lacks band(s) {','.join(missing)} for the landscape measure",
                                   "use --dates all or monthly with this collection")
    scl_href = band_href(item, "SCL", sign)
    href = hrefs[0]
    try:          # GDAL/HTTP failures become one line naming the URL, as in the search
        dn = []
        for href in hrefs:
            dn.append(read_over_area(href, area, COARSE_RES_M, Resampling.average, timeout_s, "float32"))
        dn = np.stack(dn)
        clear = (dn > 0).all(axis=0)
        if scl_href is not None:
            href = scl_href
            scl = read_over_area(scl_href, area, COARSE_RES_M, Resampling.nearest, timeout_s)
            clear &= ~scl_not_clear(scl)
    except SandwatchError:
        raise
    except Exception as err:  # noqa: BLE001
        raise _failed_read(href, err) from None
    idx = indices(dn, item_offset(item))
    clear &= np.isfinite(idx).all(axis=0)
    return idx, clear


def difference(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> float:
    both = a[1] & b[1]
    if not both.any():
        return 0.0
    return float(np.abs(a[0][:, both] - b[0][:, both]).sum(axis=0).mean())


def choose(cands: list[Candidate], choice: DateChoice,
           measure: Callable[[Candidate], tuple[np.ndarray, np.ndarray]] | None = None) -> list[Candidate]:
    """The chosen dates of one area's candidates (sorted by date). ``measure`` gives a date's
    landscape (needed only for a number of dates)."""
    ok = sorted((c for c in cands if c.clear_fraction >= choice.min_clear), key=lambda c: c.date)
    if choice.dates == "all":
        return ok
    if choice.dates == "monthly":
        best: dict[tuple[int, int], Candidate] = {}
        for c in ok:
            key = (c.date.year, c.date.month)
            if key not in best or c.clear_fraction > best[key].clear_fraction:
                best[key] = c
        return sorted(best.values(), key=lambda c: c.date)
    n = int(choice.dates)
    if n == 1 or len(ok) <= 1:
        return sorted(ok, key=lambda c: (-c.clear_fraction, c.date))[:n]
    if measure is None:
        raise ValueError("choosing a number of dates needs a landscape measure")
    pairs = [(a, b) for a, b in itertools.combinations(ok, 2) if months_between(a.date, b.date) >= choice.min_gap_months]
    if not pairs:
        warn_once("acquire-gap", ok[0].area, f"area {ok[0].area}: no two clear dates are {choice.min_gap_months:g} "
                  "months apart; taking the clearest date only")
        return sorted(ok, key=lambda c: (-c.clear_fraction, c.date))[:1]
    scapes = {c.date: measure(c) for c in ok}
    diff = {(a.date, b.date): difference(scapes[a.date], scapes[b.date]) for a, b in itertools.combinations(ok, 2)}
    a, b = max(pairs, key=lambda p: (round(diff[(p[0].date, p[1].date)], 6), months_between(p[0].date, p[1].date),
                                     p[0].clear_fraction + p[1].clear_fraction))
    chosen = [a, b]
    while len(chosen) < n:
        rest = [c for c in ok if c not in chosen
                and all(months_between(c.date, x.date) >= choice.min_gap_months for x in chosen)]
        if not rest:
            break

        def score(c):
            return min(diff[tuple(sorted((c.date, x.date)))] for x in chosen)

        chosen.append(max(rest, key=lambda c: (round(score(c), 6), c.clear_fraction)))
    return sorted(chosen, key=lambda c: c.date)


def choose_dates(areas: list[Area], cands: list[Candidate], choice: DateChoice, *, sign=None,
                 timeout_s: float = 30.0, item_loader: Callable[[str], object] | None = None,
                 workers: int = 4) -> list[Candidate]:
    """The chosen candidates of every area. ``item_loader(url)`` gives a pystac Item (default:
    ``pystac.Item.from_file``); ``workers`` threads make the coarse reads."""
    import pystac

    load = item_loader or pystac.Item.from_file
    by_area: dict[str, list[Candidate]] = {}
    for c in cands:
        by_area.setdefault(c.area, []).append(c)
    out = []
    for area in areas:
        mine = by_area.get(area.id, [])

        def measure(c: Candidate, area=area):
            try:
                item = load(c.item_urls[0])
            except Exception as err:  # noqa: BLE001 - pystac raises many types for a bad or unreachable item
                raise SandwatchError.about(c.item_urls[0], f"STAC item could not be read ({str(err).splitlines()[0][:160]})",
                                           "check the catalogue is reachable, then run again") from None
            return landscape(area, item, sign, timeout_s)

        if isinstance(choice.dates, int) and choice.dates > 1:      # the coarse reads, in parallel
            ok = [c for c in mine if c.clear_fraction >= choice.min_clear]
            with ThreadPoolExecutor(max(1, workers)) as pool:
                scapes = dict(zip([c.date for c in ok], pool.map(measure, ok), strict=True))
            picked = choose(mine, choice, lambda c, s=scapes: s[c.date])
        else:
            picked = choose(mine, choice, measure)
        if mine and not picked:
            best = max(c.clear_fraction for c in mine)
            warn_once("acquire-clear", area.id, f"area {area.id}: no date is clear enough (best {best:.0%} clear, "
                      f"--min-clear {choice.min_clear:.0%})")
        out += picked
    return out


__all__ = ["DateChoice", "choose", "choose_dates", "landscape", "difference", "indices", "months_between",
           "COARSE_RES_M"]
