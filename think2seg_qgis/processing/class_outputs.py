"""Several classes in one Processing run: the backend's batch job asks one question, so each class
runs as its own job into its own GeoPackage beside the output (resumable on its own), and their
``segments`` are then gathered into the output's ``segments`` layer, each polygon with its class."""

from __future__ import annotations

import re
from pathlib import Path

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransformContext,
    QgsFeature,
    QgsField,
    QgsFields,
    QgsVectorFileWriter,
    QgsVectorLayer,
    QgsWkbTypes,
)

from .. import compat
from ..errors import ResultsError

SEGMENTS = "segments"
CLASS_FIELD = "class"


def class_outputs(output: str, classes: dict[str, str]) -> dict[str, str]:
    """Where each class's job writes: ``<output stem>.<class>.gpkg`` beside ``output`` (class name ->
    path, one file per class even when two names shorten to the same file name)."""
    base = Path(output)
    paths: dict[str, str] = {}
    for index, name in enumerate(classes, start=1):
        slug = re.sub(r"[^\w-]+", "_", name).strip("_")[:40] or f"class{index}"
        path = base.with_name(f"{base.stem}.{slug}.gpkg")
        if str(path) in paths.values():
            path = base.with_name(f"{base.stem}.{slug}_{index}.gpkg")
        paths[name] = str(path)
    return paths


def merge_segments(sources: dict[str, str], output: str) -> int:
    """Write every class's ``segments`` (class name -> GeoPackage) into ``output``'s ``segments``
    layer (the file is replaced), setting each polygon's ``class`` to its class name. The sources'
    fields are kept (their ``fid`` is renumbered); the CRS is the first source's. Returns the number
    of polygons; raises :class:`~..errors.ResultsError` when a source cannot be read or the output written.
    """
    layers = {name: _segments(path) for name, path in sources.items()}
    fields = _union_fields(list(layers.values()))
    crs = next(iter(layers.values())).crs() if layers else QgsCoordinateReferenceSystem()
    multi = any(QgsWkbTypes.isMultiType(layer.wkbType()) for layer in layers.values())
    kind = QgsWkbTypes.multiType(compat.WKB_POLYGON) if multi else compat.WKB_POLYGON
    writer = _writer(output, fields, crs, kind)
    count = 0
    try:
        for name, layer in layers.items():
            for source in layer.getFeatures():
                feature = QgsFeature(fields)
                geometry = source.geometry()
                if multi:
                    geometry.convertToMultiType()
                feature.setGeometry(geometry)
                for field in source.fields():
                    if fields.indexOf(field.name()) >= 0:
                        feature.setAttribute(field.name(), source[field.name()])
                feature.setAttribute(CLASS_FIELD, name)
                if not writer.addFeature(feature):
                    raise ResultsError(f"cannot write the polygons of “{name}” to {output} ({writer.errorMessage()})")
                count += 1
    finally:
        del writer  # closes the file
    return count


def _segments(path: str) -> QgsVectorLayer:
    layer = QgsVectorLayer(f"{path}|layername={SEGMENTS}", SEGMENTS, "ogr")
    if not layer.isValid():
        raise ResultsError(f"the batch output {path} has no readable “{SEGMENTS}” layer: run its class again")
    return layer


def _union_fields(layers: list[QgsVectorLayer]) -> QgsFields:
    """Every field of the sources once (by name), without the GeoPackage's own ``fid``, plus ``class``."""
    fields = QgsFields()
    for layer in layers:
        for field in layer.fields():
            if field.name().lower() != "fid" and fields.indexOf(field.name()) < 0:
                fields.append(QgsField(field))
    if fields.indexOf(CLASS_FIELD) < 0:
        fields.append(QgsField(CLASS_FIELD, compat.FIELD_STRING))
    return fields


def _writer(output: str, fields: QgsFields, crs: QgsCoordinateReferenceSystem, kind: object) -> QgsVectorFileWriter:
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName, options.layerName = "GPKG", SEGMENTS
    options.actionOnExistingFile = QgsVectorFileWriter.ActionOnExistingFile.CreateOrOverwriteFile
    writer = QgsVectorFileWriter.create(output, fields, kind, crs, QgsCoordinateTransformContext(), options)
    if writer.hasError():
        message = writer.errorMessage()
        del writer
        raise ResultsError(f"cannot write {output} ({message}): check that its folder is writable")
    return writer
