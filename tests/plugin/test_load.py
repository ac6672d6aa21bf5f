from __future__ import annotations

from qgis.core import QgsApplication

import think2seg_qgis


def test_plugin_loads_and_unloads_cleanly(qgis_iface):
    plugin = think2seg_qgis.classFactory(qgis_iface)
    plugin.initGui()
    assert plugin.dock is not None and plugin.dock.windowTitle() == "Think2Seg"
    assert QgsApplication.processingRegistry().providerById("think2seg") is not None
    algorithm = QgsApplication.processingRegistry().algorithmById("think2seg:segment_raster_by_question")
    assert algorithm is not None
    assert algorithm.parameterDefinition("RESUME") and algorithm.parameterDefinition("OVERWRITE")
    plugin.unload()
    assert QgsApplication.processingRegistry().providerById("think2seg") is None
    assert plugin.dock is None
