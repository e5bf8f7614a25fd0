"""Acquisition: from a list of mining sites to analysis-ready Sentinel-2 study areas, through STAC.

``sites`` (plan rectangles) -> ``search`` (a STAC API; clear fraction over each area from
SCL) -> ``dates`` (which dates to take) -> ``fetch`` (the area's window of each date into one
COG, mosaicked, atomic, resumable) -> ``record`` (the project's manifest; ``update`` for
monitoring). See ``docs/design.md`` ("acquire").
"""

from sandwatch.acquire.sites import Area, Site, plan_areas, read_areas, read_sites, write_areas

__all__ = ["Area", "Site", "plan_areas", "read_areas", "read_sites", "write_areas"]
