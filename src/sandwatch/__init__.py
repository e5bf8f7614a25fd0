"""sandwatch: find and monitor river sand mining in Sentinel-2 imagery.

The package is split into one sub-package per pipeline stage; data flows one way:

    imagery / labels / aoi -> dataset -> models / train -> predict -> evaluate / monitor

Shared types live in small modules at the top level: :mod:`sandwatch.errors`
(``SandwatchError``), :mod:`sandwatch.grid` (``Grid``, ``Window``), :mod:`sandwatch.bands`
(Sentinel-2 band table, ``BandSpec``, ``Normalization``) and :mod:`sandwatch.io`
(atomic output files).
"""

__version__ = "0.1.0"
