"""Synthetic demo data that looks like real inputs.

High level::

    from sandwatch.synthetic import write_demo_data
    manifest = write_demo_data("demo/", sites=6, size=512, seed=0)      # -> demo/manifest.yaml

Lower level, for tests of other stages (small scenes with known content)::

    from sandwatch.synthetic import utm_grid, make_scene, write_polygons, write_scene
    grid = utm_grid(85.85, 20.30, size=128)              # 10 m UTM grid (EPSG:32645)
    truth = make_scene("s.tif", grid, mine_mask=mask, annotations="m.geojson")
    truth.mine_mask, truth.surface                       # what is where (Surface codes)

    land = SiteLandscape(plan_sites(6)[0])               # full river landscape of a demo site
    truth = land.scene(0)                                # surface map + mine clusters of date 0
    write_scene("x.tif", render_bands(truth.surface, truth.secondary, truth.weight), grid)
"""

from sandwatch.synthetic.demo import (DemoConfig, KIND_CYCLE, SITE_GROUPS, plan_sites, scene_polygons,
                                      site_grid, write_demo_data, write_site)
from sandwatch.imagery.display import stretch_true_colour
from sandwatch.synthetic.files import (dn_offset_for, mask_to_polygons, reflectance_to_dn, scene_quicklook,
                                       utm_epsg, utm_grid, write_lines, write_polygons, write_quicklook, write_scene)
from sandwatch.synthetic.landscape import SITE_KINDS, MineCluster, SceneTruth, SiteLandscape, SiteSpec
from sandwatch.synthetic.scenes import CLOUD_TOA, cloud_opacity, make_scene, simple_truth, with_clouds
from sandwatch.synthetic.spectra import (RenderOptions, Surface, render_bands, render_reflectance,
                                         smooth_noise, spectra_table, surface_spectrum)

__all__ = [
    "CLOUD_TOA", "cloud_opacity", "with_clouds",
    "DemoConfig", "KIND_CYCLE", "SITE_GROUPS", "SITE_KINDS", "MineCluster", "RenderOptions", "SceneTruth",
    "SiteLandscape", "SiteSpec", "Surface", "dn_offset_for", "make_scene", "mask_to_polygons", "plan_sites",
    "reflectance_to_dn", "render_bands", "render_reflectance", "scene_polygons", "scene_quicklook",
    "simple_truth", "site_grid", "smooth_noise", "spectra_table", "stretch_true_colour", "surface_spectrum",
    "utm_epsg", "utm_grid", "write_demo_data", "write_lines", "write_polygons", "write_quicklook",
    "write_scene", "write_site",
]
