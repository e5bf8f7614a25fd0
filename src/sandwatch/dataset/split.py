"""Geographic clustering of sites and a train/validation split by whole clusters.

Neighbouring river reaches look alike, so a validation image next to a training image says
little about new places. :func:`geographic_split` therefore

1. takes one coordinate per **site** (the mean of its observations' latitude/longitude; a site
   with none gets the centre of its first scene that opens, and its observations are filled
   with it); sites at the very same coordinate (to 1e-6 degree) form one *location*;
2. clusters the locations by great-circle distance (haversine matrix, agglomerative clustering
   with average linkage: deterministic, no seed involved) into ``clusters`` groups; cluster ids
   are numbered west to east by their centre longitude;
3. puts whole clusters into validation: the clusters are visited in an order shuffled by
   ``seed``; a cluster goes to validation when that brings the validation share of
   observations strictly closer to ``val_fraction`` than it was (a tie keeps it in training); the walk stops once the share reaches
   ``val_fraction``. At least one cluster ends on each side. Same manifest + same seed ->
   same split.

Every observation of a site, and every site at one coordinate, is in one cluster and so on one
side of the split.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from sandwatch.dataset.manifest import Manifest
from sandwatch.errors import SandwatchError

EARTH_RADIUS_KM = 6371.0088


@dataclass(frozen=True)
class ClusterRow:
    """One line of the split table."""

    cluster: int
    sites: int
    observations: int
    latitude: float
    longitude: float
    split: str


def haversine_km(lat_lon_a: np.ndarray, lat_lon_b: np.ndarray | None = None) -> np.ndarray:
    """Great-circle distances in km between rows of (lat, lon) degrees (a matrix)."""
    from sklearn.metrics.pairwise import haversine_distances

    a = np.radians(np.asarray(lat_lon_a, dtype=float).reshape(-1, 2))
    b = a if lat_lon_b is None else np.radians(np.asarray(lat_lon_b, dtype=float).reshape(-1, 2))
    return haversine_distances(a, b) * EARTH_RADIUS_KM


def spherical_centre(lat_lon: np.ndarray) -> tuple[float, float]:
    """Centre of points on the sphere (mean unit vector), as (lat, lon) degrees."""
    ll = np.radians(np.asarray(lat_lon, dtype=float).reshape(-1, 2))
    x = np.cos(ll[:, 0]) * np.cos(ll[:, 1])
    y = np.cos(ll[:, 0]) * np.sin(ll[:, 1])
    z = np.sin(ll[:, 0])
    mx, my, mz = x.mean(), y.mean(), z.mean()
    return math.degrees(math.atan2(mz, math.hypot(mx, my))), math.degrees(math.atan2(my, mx))


def _scene_centre(scene_path: str) -> tuple[float, float]:
    """(lat, lon) of the centre of a scene's grid (opens the scene, reads no pixels)."""
    from rasterio.warp import transform_bounds

    from sandwatch.imagery import open_scene

    grid = open_scene(scene_path).grid
    left, bottom, right, top = transform_bounds(grid.crs, "EPSG:4326", *grid.bounds, densify_pts=21)
    return (bottom + top) / 2, (left + right) / 2


def site_coordinates(manifest: Manifest) -> dict[str, tuple[float, float]]:
    """(lat, lon) per site: mean of the observations' coordinates, else the centre of a scene.

    Scenes are opened only for sites none of whose observations has coordinates.
    """
    coords: dict[str, list[tuple[float, float]]] = defaultdict(list)
    scenes: dict[str, list[str]] = defaultdict(list)
    for obs in manifest.observations:
        if obs.latitude is not None and obs.longitude is not None:
            coords[obs.site].append((obs.latitude, obs.longitude))
        scenes[obs.site].append(obs.scene)
    out: dict[str, tuple[float, float]] = {}
    for site in manifest.sites():
        if coords[site]:
            out[site] = spherical_centre(np.array(coords[site]))
            continue
        problems = []
        for scene in scenes[site]:
            try:
                out[site] = _scene_centre(scene)
                break
            except (SandwatchError, ImportError, OSError, ValueError) as err:
                problems.append(f"{scene}: {err}")
        if site not in out:
            raise SandwatchError.about(
                f"site {site}", f"has no latitude/longitude and none of its scenes could be opened ({problems[0]})",
                "add latitude and longitude to its observations in the manifest")
    return out


def cluster_sites(coords: dict[str, tuple[float, float]], clusters: int) -> dict[str, int]:
    """Cluster sites by great-circle distance; returns site -> cluster id (0 = westernmost)."""
    # Sites at one coordinate are one location: they can never be separated.
    locations: dict[tuple[float, float], list[str]] = defaultdict(list)
    for site, (lat, lon) in sorted(coords.items()):
        locations[(round(lat, 6), round(lon, 6))].append(site)
    keys = sorted(locations)
    if clusters < 2:
        raise SandwatchError.about(f"--clusters {clusters}", "is too few to split", "use at least 2 clusters")
    if clusters > len(keys):
        raise SandwatchError.about(
            f"--clusters {clusters}",
            f"is more than the {len(coords)} sites ({len(keys)} distinct locations) of the manifest",
            f"use at most {len(keys)} clusters")
    if clusters == len(keys):
        labels = np.arange(len(keys))
    else:
        from sklearn.cluster import AgglomerativeClustering

        dist = haversine_km(np.array(keys))
        labels = AgglomerativeClustering(n_clusters=clusters, metric="precomputed",
                                         linkage="average").fit_predict(dist)
    # Number clusters west to east (then south to north) by their centre.
    centres = {lab: spherical_centre(np.array([k for k, l in zip(keys, labels) if l == lab]))
               for lab in set(labels.tolist())}
    order = sorted(centres, key=lambda lab: (round(centres[lab][1], 9), round(centres[lab][0], 9)))
    renumber = {lab: i for i, lab in enumerate(order)}
    return {site: renumber[int(lab)] for key, lab in zip(keys, labels) for site in locations[key]}


def choose_validation(cluster_sizes: dict[int, int], val_fraction: float, seed: int = 0) -> set[int]:
    """Which clusters go to validation (the rule in the module docstring); pure, deterministic."""
    if not 0 < val_fraction < 1:
        raise SandwatchError.about(f"--val-fraction {val_fraction}", "must be between 0 and 1 (exclusive)",
                                   "use e.g. 0.2")
    if len(cluster_sizes) < 2:
        raise SandwatchError.about("clusters", "fewer than 2 clusters cannot be split", "use at least 2 clusters")
    total = sum(cluster_sizes.values())
    ids = sorted(cluster_sizes)
    order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    val: set[int] = set()
    n_val = 0
    for cid in order:
        if n_val / total >= val_fraction:
            break
        if len(val) == len(ids) - 1:  # keep at least one training cluster
            break
        target = val_fraction * total
        before = abs(n_val - target)
        after = abs(n_val + cluster_sizes[cid] - target)
        if after < before - 1e-9:  # strictly closer (a tie keeps the cluster in training)
            val.add(cid)
            n_val += cluster_sizes[cid]
    if not val:  # every cluster overshoots on its own: take the smallest (first in seeded order)
        val.add(min(order, key=lambda c: cluster_sizes[c]))
    return val


def geographic_split(manifest: Manifest, clusters: int = 9, val_fraction: float = 0.2, seed: int = 0) -> Manifest:
    """A copy of ``manifest`` with ``cluster`` and ``split`` filled (see the module docstring).

    Raises :class:`SandwatchError` when ``clusters`` exceeds the number of site locations,
    ``val_fraction`` is outside (0, 1), or a site has no coordinates and no scene that opens.
    """
    if not 0 < val_fraction < 1:
        raise SandwatchError.about(f"--val-fraction {val_fraction}", "must be between 0 and 1 (exclusive)",
                                   "use e.g. 0.2")
    if not manifest.observations:
        raise SandwatchError.about("manifest", "has no observations", "add observations before splitting")
    coords = site_coordinates(manifest)
    site_cluster = cluster_sites(coords, clusters)
    sizes: dict[int, int] = defaultdict(int)
    for obs in manifest.observations:
        sizes[site_cluster[obs.site]] += 1
    val = choose_validation(dict(sizes), val_fraction, seed)
    out = manifest.model_copy(deep=True)
    for obs in out.observations:
        obs.cluster = site_cluster[obs.site]
        obs.split = "val" if obs.cluster in val else "train"
        if obs.latitude is None or obs.longitude is None:
            obs.latitude, obs.longitude = coords[obs.site]
    return out


def split_table(manifest: Manifest) -> list[ClusterRow]:
    """One row per cluster of a split manifest: sites, observations, centre, split."""
    by_cluster: dict[int, list] = defaultdict(list)
    for obs in manifest.observations:
        if obs.cluster is None:
            raise SandwatchError.about("manifest", f"observation {obs.id} has no cluster",
                                       "run `sandwatch dataset split` first")
        by_cluster[obs.cluster].append(obs)
    rows = []
    for cid in sorted(by_cluster):
        obs_list = by_cluster[cid]
        site_ll = {}
        for o in obs_list:
            if o.latitude is not None and o.longitude is not None:
                site_ll.setdefault(o.site, (o.latitude, o.longitude))
        lat, lon = spherical_centre(np.array(list(site_ll.values()))) if site_ll else (math.nan, math.nan)
        splits = sorted({o.split or "-" for o in obs_list})
        rows.append(ClusterRow(cid, len({o.site for o in obs_list}), len(obs_list), lat, lon, "/".join(splits)))
    return rows


def format_split_table(rows: list[ClusterRow]) -> str:
    """The split table as text, with a total line per split."""
    lines = [f"{'cluster':>7}  {'sites':>5}  {'observations':>12}  {'lat':>8}  {'lon':>9}  split"]
    for r in rows:
        lines.append(f"{r.cluster:>7}  {r.sites:>5}  {r.observations:>12}  {r.latitude:>8.3f}  {r.longitude:>9.3f}  {r.split}")
    total = sum(r.observations for r in rows) or 1
    for name in ("train", "val"):
        part = [r for r in rows if r.split == name]
        n = sum(r.observations for r in part)
        lines.append(f"{name}: {len(part)} clusters, {sum(r.sites for r in part)} sites, "
                     f"{n} observations ({100 * n / total:.1f} %)")
    return "\n".join(lines)
