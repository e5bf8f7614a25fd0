"""Dataset stage: the manifest of observations, statistics, geographic clustering and split."""

from sandwatch.dataset.manifest import Manifest, Observation, load_manifest, save_manifest

__all__ = ["Manifest", "Observation", "load_manifest", "save_manifest"]
