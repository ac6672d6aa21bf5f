"""Think2Seg for QGIS: ask a question about a raster, get polygons on the map.

Imports only qgis, qgis.PyQt and the standard library; the models run in the `think2seg serve`
backend, reached over HTTP.
"""


def classFactory(iface):  # QGIS's plugin entry point
    from .plugin import Think2SegPlugin

    return Think2SegPlugin(iface)
