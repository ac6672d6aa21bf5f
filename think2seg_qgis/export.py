"""Export the Think2Seg results (all, or the selected polygons) to a GeoPackage the user picks.

Every results layer takes part, whatever its CRS. Results in one CRS go to the layer name the user
chose; results in several CRSs go to one layer per CRS (the name plus a CRS suffix, e.g.
``think2seg_results_epsg_32633``), each in its own CRS: coordinates are never reprojected silently.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

from qgis.core import QgsProject, QgsVectorFileWriter, QgsVectorLayer

from .errors import ExportError
from .results import crs_key


@dataclass
class ExportChoice:
    path: str
    layer_name: str
    selected_only: bool


def export_results(layers: list[QgsVectorLayer], choice: ExportChoice) -> list[tuple[str, int]]:
    """Write the polygons of ``layers`` (or their selections) to ``choice.path``.

    Returns (layer name, polygon count) per layer written; raises :class:`ExportError`.
    """
    chosen = [layer for layer in layers if _count(layer, choice.selected_only)]
    if not chosen:
        raise ExportError(
            "no polygons are selected: select some in a Think2Seg results layer, or untick “Only the selected polygons”"
            if choice.selected_only
            else "there are no results to export yet: ask a question first"
        )
    if not choice.path:
        raise ExportError("choose the GeoPackage file to export to")
    written = []
    for layer, name in export_names(chosen, choice.layer_name):
        error = export_layer(layer, dataclasses.replace(choice, layer_name=name))
        if error:
            raise ExportError(
                f"cannot write the layer {name} to {choice.path} ({error}): choose a writable folder, or close "
                "programs that have the file open"
            )
        written.append((name, _count(layer, choice.selected_only)))
    return written


def export_names(layers: list[QgsVectorLayer], base: str) -> list[tuple[QgsVectorLayer, str]]:
    """``base`` for a single layer; ``base`` plus a CRS suffix for each of several."""
    if len(layers) == 1:
        return [(layers[0], base)]
    return [(layer, f"{base}_{re.sub(r'[^a-z0-9]+', '_', crs_key(layer.crs()).lower())}") for layer in layers]


def export_layer(layer: QgsVectorLayer, choice: ExportChoice) -> str:
    """Write the layer (or its selection) to a GeoPackage layer; returns '' or the error."""
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = choice.layer_name
    options.onlySelectedFeatures = choice.selected_only
    options.actionOnExistingFile = (
        QgsVectorFileWriter.ActionOnExistingFile.CreateOrOverwriteLayer
        if Path(choice.path).exists()
        else QgsVectorFileWriter.ActionOnExistingFile.CreateOrOverwriteFile
    )
    result = QgsVectorFileWriter.writeAsVectorFormatV3(
        layer, choice.path, QgsProject.instance().transformContext(), options
    )
    error, message = result[0], result[1]
    return "" if error == QgsVectorFileWriter.WriterError.NoError else (message or f"error {error}")


def _count(layer: QgsVectorLayer, selected_only: bool) -> int:
    return layer.selectedFeatureCount() if selected_only else layer.featureCount()
