"""What a batch job writes, shaped like a `think2seg batch` output (its ``segments`` and ``tiles``
layers, in EPSG:32633 over the sample raster): for the fake backend's ``on_job`` hook and the tests
that load outputs. Uses QGIS's writer (plugin tests run in QGIS's Python)."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransformContext,
    QgsFeature,
    QgsField,
    QgsFields,
    QgsGeometry,
    QgsRectangle,
    QgsVectorFileWriter,
)

from think2seg_qgis import compat

CRS = QgsCoordinateReferenceSystem("EPSG:32633")
POLYGONS_PER_CLASS = 2
SEGMENT_FIELDS = [
    ("question", compat.FIELD_STRING),
    ("class", compat.FIELD_STRING),
    ("area_m2", compat.FIELD_DOUBLE),
    ("score", compat.FIELD_DOUBLE),
]
TILE_FIELDS = [("tile_id", compat.FIELD_INT), ("status", compat.FIELD_STRING), ("class", compat.FIELD_STRING)]


def write_layer(path: str, name: str, fields: list[tuple[str, object]], rows: list[tuple[QgsRectangle, dict]]) -> None:
    """Write (or replace) layer ``name`` of the GeoPackage ``path``: one polygon per (rectangle, attributes)."""
    qfields = QgsFields()
    for field, kind in fields:
        qfields.append(QgsField(field, kind))
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName, options.layerName = "GPKG", name
    options.actionOnExistingFile = (
        QgsVectorFileWriter.ActionOnExistingFile.CreateOrOverwriteLayer
        if Path(path).exists()
        else QgsVectorFileWriter.ActionOnExistingFile.CreateOrOverwriteFile
    )
    writer = QgsVectorFileWriter.create(
        path, qfields, compat.WKB_POLYGON, CRS, QgsCoordinateTransformContext(), options
    )
    assert not writer.hasError(), writer.errorMessage()
    for rect, values in rows:
        feature = QgsFeature(qfields)
        feature.setGeometry(QgsGeometry.fromRect(rect))
        for key, value in values.items():
            feature.setAttribute(key, value)
        writer.addFeature(feature)
    del writer


def asked(body: dict) -> dict[str, str]:
    """Class -> question of a job request, as the backend writes them: a job with one question has
    one class, the question itself."""
    return dict(body["classes"]) if body.get("classes") else {body["question"]: body["question"]}


def write_job_output(body: dict) -> None:
    """The job's output at ``body["output_path"]``: per class, POLYGONS_PER_CLASS polygons (class,
    question, area, SAM score 0.8, 0.9...) and one ok tile."""
    segments, tiles = [], []
    for row, (name, question) in enumerate(asked(body).items()):
        y = 5261616 + 60 * row
        for index in range(POLYGONS_PER_CLASS):
            x = 512000 + 100 * index
            values = {"question": question, "class": name, "area_m2": 2500.0, "score": 0.8 + 0.1 * index}
            segments.append((QgsRectangle(x, y, x + 50, y + 50), values))
        tiles.append((QgsRectangle(512000, 5261616, 512384, 5262000), {"tile_id": 0, "status": "ok", "class": name}))
    write_layer(body["output_path"], "segments", SEGMENT_FIELDS, segments)
    write_layer(body["output_path"], "tiles", TILE_FIELDS, tiles)
