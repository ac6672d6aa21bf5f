"""Results live in a GeoPackage, so nothing is lost if QGIS closes.

The file is ``think2seg_results.gpkg`` beside the saved project, else in the user's QGIS profile
folder. Each raster CRS gets its own tables (polygons, prompt boxes, prompt points), shown as the
layers "Think2Seg results", "Think2Seg prompt boxes" and "Think2Seg prompt points" in a "Think2Seg"
group. Features are written through the data provider, i.e. saved at once; undoing a run deletes
its features again (see :class:`AddRunCommand`).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from qgis.core import (
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsFeatureRequest,
    QgsField,
    QgsFields,
    QgsGeometry,
    QgsProject,
    QgsVectorFileWriter,
    QgsVectorLayer,
)

from . import compat, styles
from .compat import QUndoCommand
from .geojson import to_wkt

ROLE = "think2seg/role"
CRS_KEY = "think2seg/crs"
GROUP = "Think2Seg"
NAMES = {"results": "Think2Seg results", "boxes": "Think2Seg prompt boxes", "points": "Think2Seg prompt points"}
COMMON = [("run_id", compat.FIELD_STRING), ("question", compat.FIELD_STRING), ("created_at", compat.FIELD_STRING)]
FIELDS = {
    "results": COMMON
    + [
        ("status", compat.FIELD_STRING),
        ("model", compat.FIELD_STRING),
        ("segmenter", compat.FIELD_STRING),
        ("area_m2", compat.FIELD_DOUBLE),
        ("raster", compat.FIELD_STRING),
    ],
    "boxes": COMMON + [("instance", compat.FIELD_INT)],
    "points": COMMON + [("instance", compat.FIELD_INT), ("point", compat.FIELD_INT)],
}


def results_path(project: QgsProject) -> Path:
    home = project.homePath()
    if home and project.fileName():
        return Path(home) / "think2seg_results.gpkg"
    return Path(QgsApplication.qgisSettingsDirPath()) / "think2seg" / "results.gpkg"


@dataclass
class RunFeatures:
    """One reply turned into features for the three layers."""

    run_id: str
    crs: QgsCoordinateReferenceSystem
    results: list[QgsFeature]
    boxes: list[QgsFeature]
    points: list[QgsFeature]


class ResultStore:
    """Finds or creates the results layers for a CRS, adds and removes runs."""

    def __init__(self, project: QgsProject) -> None:
        self.project = project

    def layers(self, crs: QgsCoordinateReferenceSystem) -> dict[str, QgsVectorLayer]:
        key = crs_key(crs)
        found = {
            layer.customProperty(ROLE): layer
            for layer in self.project.mapLayers().values()
            if layer.customProperty(ROLE) and layer.customProperty(CRS_KEY) == key
        }
        for role in NAMES:
            if role not in found:
                found[role] = self._create(role, crs)
        return found

    def features(self, reply: dict, crs: QgsCoordinateReferenceSystem, raster: str) -> RunFeatures:
        """Features for a segment reply (GeoJSON in ``crs``)."""
        stamp = {
            "run_id": uuid.uuid4().hex[:16],
            "question": reply.get("question", ""),
            "created_at": reply.get("created_at", ""),
        }
        layers = self.layers(crs)
        results = [
            _feature(
                layers["results"],
                f["geometry"],
                {
                    **stamp,
                    "status": reply.get("status", ""),
                    "model": reply.get("model", ""),
                    "segmenter": reply.get("segmenter", ""),
                    "area_m2": f["properties"].get("area_m2"),
                    "raster": raster,
                },
            )
            for f in reply.get("features", [])
        ]
        boxes, points, counters = [], [], {}
        for f in reply.get("prompts", {}).get("features", []):
            instance = int(f["properties"].get("instance", 0))
            if f["properties"].get("kind") == "box":
                boxes.append(_feature(layers["boxes"], f["geometry"], {**stamp, "instance": instance}))
            else:
                counters[instance] = counters.get(instance, -1) + 1
                points.append(
                    _feature(
                        layers["points"], f["geometry"], {**stamp, "instance": instance, "point": counters[instance]}
                    )
                )
        return RunFeatures(stamp["run_id"], crs, results, boxes, points)

    def add(self, run: RunFeatures) -> None:
        layers = self.layers(run.crs)
        for role, features in (("results", run.results), ("boxes", run.boxes), ("points", run.points)):
            if features:
                layers[role].dataProvider().addFeatures(features)
                layers[role].updateExtents()
                layers[role].triggerRepaint()

    def remove(self, run: RunFeatures) -> None:
        for layer in self.layers(run.crs).values():
            request = QgsFeatureRequest().setFilterExpression(f"\"run_id\" = '{run.run_id}'")
            ids = [feature.id() for feature in layer.getFeatures(request)]
            if ids:
                layer.dataProvider().deleteFeatures(ids)
                layer.triggerRepaint()

    def _create(self, role: str, crs: QgsCoordinateReferenceSystem) -> QgsVectorLayer:
        path = results_path(self.project)
        path.parent.mkdir(parents=True, exist_ok=True)
        table = f"{role}_{re.sub(r'[^a-z0-9]+', '_', crs_key(crs).lower())}"
        if not _has_table(path, table):
            _create_table(path, table, role, crs)
        name = NAMES[role] if not self._other_crs(role, crs) else f"{NAMES[role]} ({crs.authid() or crs.description()})"
        layer = QgsVectorLayer(f"{path}|layername={table}", name, "ogr")
        layer.setCustomProperty(ROLE, role)
        layer.setCustomProperty(CRS_KEY, crs_key(crs))
        styles.apply(layer, role)
        self._add_to_group(layer)
        return layer

    def _other_crs(self, role: str, crs: QgsCoordinateReferenceSystem) -> bool:
        return any(
            layer.customProperty(ROLE) == role and layer.customProperty(CRS_KEY) != crs_key(crs)
            for layer in self.project.mapLayers().values()
        )

    def _add_to_group(self, layer: QgsVectorLayer) -> None:
        self.project.addMapLayer(layer, False)
        root = self.project.layerTreeRoot()
        group = root.findGroup(GROUP) or root.insertGroup(0, GROUP)
        group.addLayer(layer)


def crs_key(crs: QgsCoordinateReferenceSystem) -> str:
    """EPSG:n, or a short hash of the WKT for CRSs without an authority code."""
    return crs.authid() or "wkt_" + hashlib.sha1(crs.toWkt().encode(), usedforsecurity=False).hexdigest()[:10]


def _feature(layer: QgsVectorLayer, geometry: dict, values: dict) -> QgsFeature:
    feature = QgsFeature(layer.fields())
    feature.setGeometry(QgsGeometry.fromWkt(to_wkt(geometry)))
    for name, value in values.items():
        if layer.fields().indexOf(name) >= 0:
            feature.setAttribute(name, value)
    return feature


def _has_table(path: Path, table: str) -> bool:
    if not path.exists():
        return False
    probe = QgsVectorLayer(f"{path}|layername={table}", "probe", "ogr")
    return probe.isValid()


def _create_table(path: Path, table: str, role: str, crs: QgsCoordinateReferenceSystem) -> None:
    fields = QgsFields()
    for name, kind in FIELDS[role]:
        fields.append(QgsField(name, kind))
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = table
    options.actionOnExistingFile = (
        QgsVectorFileWriter.ActionOnExistingFile.CreateOrOverwriteLayer
        if path.exists()
        else QgsVectorFileWriter.ActionOnExistingFile.CreateOrOverwriteFile
    )
    geometry = compat.WKB_POINT if role == "points" else compat.WKB_POLYGON
    writer = QgsVectorFileWriter.create(
        str(path), fields, geometry, crs, QgsProject.instance().transformContext(), options
    )
    error = writer.hasError()
    message = writer.errorMessage()
    del writer  # closes the file
    if error:
        raise OSError(f"cannot create the results table {table} in {path}: {message}")


class AddRunCommand(QUndoCommand):
    """One run on the undo stack: redo adds its features, undo deletes them."""

    def __init__(self, store: ResultStore, run: RunFeatures, text: str) -> None:
        super().__init__(text)
        self.store, self.run = store, run

    def redo(self) -> None:
        self.store.add(self.run)

    def undo(self) -> None:
        self.store.remove(self.run)
