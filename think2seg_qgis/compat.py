"""Names that moved between QGIS 3.22 and later versions (QGIS 4 / Qt6)."""

from __future__ import annotations

from qgis.core import Qgis, QgsMapLayerType, QgsWkbTypes

if hasattr(Qgis, "WkbType"):  # QGIS >= 3.30
    WKB_POLYGON = Qgis.WkbType.Polygon
    WKB_POINT = Qgis.WkbType.Point
else:
    WKB_POLYGON = QgsWkbTypes.Type.Polygon
    WKB_POINT = QgsWkbTypes.Type.Point

RASTER_LAYER = Qgis.LayerType.Raster if hasattr(Qgis, "LayerType") else QgsMapLayerType.RasterLayer

if Qgis.versionInt() >= 33800:  # QgsField takes QMetaType from 3.38 on (required with Qt6)
    from qgis.PyQt.QtCore import QMetaType

    FIELD_STRING, FIELD_DOUBLE, FIELD_INT = QMetaType.Type.QString, QMetaType.Type.Double, QMetaType.Type.Int
else:
    from qgis.PyQt.QtCore import QVariant

    FIELD_STRING, FIELD_DOUBLE, FIELD_INT = QVariant.Type.String, QVariant.Type.Double, QVariant.Type.Int

if hasattr(Qgis, "GeometryType"):  # QGIS >= 3.30
    GEOMETRY_POLYGON = Qgis.GeometryType.Polygon
else:
    GEOMETRY_POLYGON = QgsWkbTypes.GeometryType.PolygonGeometry

if hasattr(Qgis, "ProcessingNumberParameterType"):  # QGIS >= 3.36
    NUMBER_INTEGER = Qgis.ProcessingNumberParameterType.Integer
else:
    from qgis.core import QgsProcessingParameterNumber

    NUMBER_INTEGER = QgsProcessingParameterNumber.Type.Integer

if hasattr(Qgis, "RasterColorInterpretation"):  # QGIS >= 3.30
    _CI = Qgis.RasterColorInterpretation
    PALETTE_BAND, RED_BAND, GREEN_BAND, BLUE_BAND, ALPHA_BAND = (
        _CI.PaletteIndex,
        _CI.RedBand,
        _CI.GreenBand,
        _CI.BlueBand,
        _CI.AlphaBand,
    )
else:
    from qgis.core import QgsRaster

    PALETTE_BAND, RED_BAND, GREEN_BAND, BLUE_BAND, ALPHA_BAND = (
        QgsRaster.PaletteIndex,
        QgsRaster.RedBand,
        QgsRaster.GreenBand,
        QgsRaster.BlueBand,
        QgsRaster.AlphaBand,
    )

try:  # Qt5 keeps these in QtWidgets; Qt6 moved them to QtGui
    from qgis.PyQt.QtWidgets import QAction, QShortcut, QUndoCommand, QUndoStack
except ImportError:  # pragma: no cover - Qt6
    from qgis.PyQt.QtGui import QAction, QShortcut, QUndoCommand, QUndoStack

__all__ = [
    "ALPHA_BAND",
    "BLUE_BAND",
    "GREEN_BAND",
    "PALETTE_BAND",
    "RED_BAND",
    "FIELD_DOUBLE",
    "FIELD_INT",
    "FIELD_STRING",
    "GEOMETRY_POLYGON",
    "NUMBER_INTEGER",
    "RASTER_LAYER",
    "WKB_POINT",
    "WKB_POLYGON",
    "QAction",
    "QShortcut",
    "QUndoCommand",
    "QUndoStack",
]
