"""Change between two dates: the same question on BEFORE and on AFTER resampled onto BEFORE's grid.

:mod:`~think2seg.change.align` finds the common extent and writes AFTER resampled onto BEFORE's
grid (a warped VRT); :mod:`~think2seg.change.compare` overlays the two dates' polygons into
``appeared``, ``disappeared`` and ``persisted``; :mod:`~think2seg.change.run` drives it (one window,
or two batch runs when tiled) and writes the GeoPackage.
"""
