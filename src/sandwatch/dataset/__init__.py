"""Dataset stage: the manifest of observations, statistics, geographic clustering and split.

* :mod:`~sandwatch.dataset.manifest`: the manifest format (``Manifest``, ``Observation``), load/save;
* :mod:`~sandwatch.dataset.importers`: ``import_original_manifest`` (the original project's JSON);
* :mod:`~sandwatch.dataset.split`: ``geographic_split`` (clusters of sites, whole clusters per side);
* :mod:`~sandwatch.dataset.stats`: ``dataset_stats`` (area, mine share inside/outside the AOI).
"""

from sandwatch.dataset.importers import import_original_manifest
from sandwatch.dataset.manifest import Manifest, Observation, load_manifest, save_manifest
from sandwatch.dataset.split import ClusterRow, format_split_table, geographic_split, split_table
from sandwatch.dataset.stats import DatasetStats, ObservationStats, dataset_stats, format_stats, summarize

__all__ = [
    "Manifest", "Observation", "load_manifest", "save_manifest",
    "import_original_manifest",
    "geographic_split", "split_table", "format_split_table", "ClusterRow",
    "dataset_stats", "DatasetStats", "ObservationStats", "summarize", "format_stats",
]
