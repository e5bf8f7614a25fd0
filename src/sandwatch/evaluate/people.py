"""The report's first part, for people who do not train models: areas in hectares, a summary in
plain words with the measured numbers in it, and a glossary of every term the tables use.

Areas count the pixels the metrics count (valid, outside the border crop, low-confidence
labels as configured) times the pixel area of the scene's grid, at the report's threshold:

* *mining (labelled)*: pixels inside the mining polygons;
* *flagged*: pixels the model calls mining (probability >= threshold);
* *found*: flagged and labelled (true positives); *missed*: labelled, not flagged (false
  negatives); *false alarm*: flagged, not labelled (false positives).
"""

from __future__ import annotations

import html

from sandwatch.evaluate.core import ModelResult

HECTARE_M2 = 10_000.0

#: Every term of the report, in plain words.
GLOSSARY: tuple[tuple[str, str], ...] = (
    ("flagged", "area the model calls mining: probability at or above the threshold"),
    ("found (true positive)", "flagged area that is inside a labelled mining polygon"),
    ("false alarm (false positive)", "flagged area that no label calls mining"),
    ("missed (false negative)", "labelled mining area the model did not flag"),
    ("threshold", "the probability above which a pixel is called mining (the checkpoint's, fitted on "
                  "validation data, or 0.5); P@0.5, R@0.5 and F1@0.5 are measured there"),
    ("precision (P)", "of the flagged area, the share that is labelled mining"),
    ("recall (R)", "of the labelled mining area, the share that is flagged"),
    ("F1", "one number balancing precision and recall (their harmonic mean); 0 when nothing is found"),
    ("AP (average precision)", "precision averaged over every threshold, weighted by recall gained: 1 is "
                               "perfect, the share of mining pixels is what a random guess gets"),
    ("best F1, best thr.", "the highest F1 over all thresholds, and the threshold where it is reached"),
    ("AOI", "area of interest: land and water within the buffer (1 km by default) of the rivers; "
            "mining is looked for there"),
    ("border crop", "pixels this close to a scene's edge are left out of every number (the model "
                    "sees less context there)"),
    ("low-confidence labels", "polygons an annotator marked Low: counted as mining, ignored, or left out "
                              "as the report's setting says"),
    ("cluster", "a group of sites close to each other; validation clusters are places the model never "
                "saw in training"),
    ("ha", "hectare: 100 m x 100 m = 10 000 m2 = 100 Sentinel-2 pixels of 10 m"),
)


def area_rows(result: ModelResult, scope: str = "image") -> list[dict]:
    """Per scene: labelled, flagged, found, missed and false-alarm area in hectares."""
    t = result.config.threshold
    rows = []
    for obs_id, r in result.images.items():
        acc = r.accumulators.get(scope)
        if acc is None:
            continue
        tp, fp, fn, _ = acc.at_threshold(t)
        ha = r.grid.pixel_area_m2 / HECTARE_M2
        obs = result.observations[obs_id]
        rows.append({"model": result.name, "id": obs_id, "site": obs.site, "date": obs.date.isoformat(),
                     "mining_ha": (tp + fn) * ha, "flagged_ha": (tp + fp) * ha, "found_ha": tp * ha,
                     "missed_ha": fn * ha, "false_alarm_ha": fp * ha,
                     "known_mining": bool(tp + fn > 0)})
    return rows


def summary(result: ModelResult, scope: str = "image", rows: list[dict] | None = None) -> dict:
    """The numbers of the plain-language summary (hectares and shares, None where undefined);
    ``rows``: the result's :func:`area_rows` when already computed."""
    rows = area_rows(result, scope) if rows is None else rows
    mined = [r for r in rows if r["known_mining"]]
    clean = [r for r in rows if not r["known_mining"]]
    flagged = sum(r["flagged_ha"] for r in rows)
    found = sum(r["found_ha"] for r in rows)
    labelled = sum(r["mining_ha"] for r in mined)
    return {
        "scenes": len(rows),
        "scenes_flagged": sum(r["flagged_ha"] > 0 for r in rows),
        "flagged_ha": flagged,
        "scenes_with_mining": len(mined),
        "labelled_ha": labelled,
        "found_ha": found,
        "found_share": found / labelled if labelled > 0 else None,
        "flagged_share_mining": found / flagged if flagged > 0 else None,
        "scenes_without_mining": len(clean),
        "false_alarm_clean_ha": sum(r["false_alarm_ha"] for r in clean),
        "threshold": result.config.threshold,
    }


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.0f} %"


def summary_html(name: str, s: dict, scope: str = "image") -> str:
    """One paragraph in plain words with the numbers ``s`` of :func:`summary` for model ``name``."""
    e = html.escape
    where = "in the whole scenes" if scope == "image" else "inside the river area of interest"
    text = [f"The model <b>{e(name)}</b> flagged <b>{s['flagged_ha']:.1f} ha</b> of likely mining "
            f"in <b>{s['scenes_flagged']}</b> of {s['scenes']} scenes ({where}, at threshold {s['threshold']:g})."]
    if s["scenes_with_mining"]:
        text.append(f"On the {s['scenes_with_mining']} scene(s) with known mining ({s['labelled_ha']:.1f} ha "
                    f"labelled) it finds <b>{_pct(s['found_share'])}</b> of the mined area "
                    f"({s['found_ha']:.1f} ha).")
    else:
        text.append("No scene of this split has labelled mining, so how much mining it finds is not measured here.")
    text.append(f"Of what it flags, <b>{_pct(s['flagged_share_mining'])}</b> is labelled mining.")
    if s["scenes_without_mining"]:
        text.append(f"On the {s['scenes_without_mining']} scene(s) without known mining it flagged "
                    f"<b>{s['false_alarm_clean_ha']:.1f} ha</b>: false alarms to expect where nothing is mined.")
    return "<p class='summary'>" + " ".join(text) + "</p>"


def glossary_html() -> str:
    items = "".join(f"<dt>{html.escape(term)}</dt><dd>{html.escape(text)}</dd>" for term, text in GLOSSARY)
    return f"<dl class='glossary'>{items}</dl>"
