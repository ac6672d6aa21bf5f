"""Results live in the project's GeoPackage (see :mod:`.results_file`), so nothing is lost if QGIS closes.

Each raster CRS gets its own tables (polygons, prompt boxes, prompt points), shown as the layers
"Think2Seg results", "Think2Seg prompt boxes" and "Think2Seg prompt points" in a "Think2Seg"
group. Features are written through the data provider, i.e. saved at once, and every write is
checked; undoing a run deletes its features again (see :class:`~.undo.AddRunCommand`). The results
layer is styled by run, so each answer has its own colour and legend entry (untick it to hide it),
or by class once a run asked several classes (see :func:`~.styles.categorize`).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsFeatureRequest,
    QgsField,
    QgsFields,
    QgsGeometry,
    QgsProject,
    QgsRectangle,
    QgsVectorFileWriter,
    QgsVectorLayer,
)

from . import attribution, compat, styles
from .api.errors import ApiError
from .classes import run_instances, run_question
from .errors import ResultsError
from .geojson import to_wkt
from .log import logger
from .results_file import ResultsFile

ROLE = "think2seg/role"
CRS_KEY = "think2seg/crs"
GROUP = "Think2Seg"
ROLES = ("results", "boxes", "points")
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
        ("reasoning", compat.FIELD_STRING),
        ("instance", compat.FIELD_INT),
        ("score", compat.FIELD_DOUBLE),
        ("class", compat.FIELD_STRING),
    ],
    "boxes": COMMON
    + [
        ("instance", compat.FIELD_INT),
        ("reasoning", compat.FIELD_STRING),
        ("score", compat.FIELD_DOUBLE),
        ("class", compat.FIELD_STRING),
    ],
    "points": COMMON
    + [
        ("instance", compat.FIELD_INT),
        ("point", compat.FIELD_INT),
        ("score", compat.FIELD_DOUBLE),
        ("class", compat.FIELD_STRING),
    ],
}
"""``score``: SAM's predicted IoU of the instance's mask (its mask quality, not the LVLM's certainty);
NULL when the backend's segmenter predicts none."""


@dataclass
class RunFeatures:
    """One reply turned into features for the three layers."""

    run_id: str
    crs: QgsCoordinateReferenceSystem
    results: list[QgsFeature]
    boxes: list[QgsFeature]
    points: list[QgsFeature]

    @property
    def empty(self) -> bool:
        return not (self.results or self.boxes or self.points)

    def by_role(self) -> dict[str, list[QgsFeature]]:
        return {"results": self.results, "boxes": self.boxes, "points": self.points}


@dataclass
class Replaced:
    """Features a run replaces, by layer role, in the layers of ``crs``: a re-segment's corrected run
    and the hand-drawn prompts it sent. Their ids are kept current as they are taken and put back."""

    crs: QgsCoordinateReferenceSystem
    features: dict[str, list[QgsFeature]]

    @property
    def empty(self) -> bool:
        return not any(self.features.values())


class ResultStore:
    """Finds or creates the results layers for a CRS, adds and removes runs.

    Every write is checked: a failure raises :class:`~.errors.ResultsError` (read-only or locked
    GeoPackage, full disk) and leaves the layers as they were.
    """

    def __init__(self, project: QgsProject, file: ResultsFile | None = None) -> None:
        self.project = project
        self.file = file or ResultsFile(project)

    def find(self, crs: QgsCoordinateReferenceSystem) -> dict[str, QgsVectorLayer] | None:
        """The three layers for ``crs`` when the project has them; creates nothing."""
        found = self._found(crs)
        return found if len(found) == len(NAMES) else None

    def layers(self, crs: QgsCoordinateReferenceSystem) -> dict[str, QgsVectorLayer]:
        """The three layers for ``crs``, created (tables in the GeoPackage, layers in the project) if missing."""
        found = self._found(crs)
        for role in NAMES:
            if role in found:
                _add_missing_fields(found[role], role)
            else:
                found[role] = self._create(role, crs)
        return found

    def all_layers(self) -> list[QgsVectorLayer]:
        """Every Think2Seg results, box and point layer of the project, whatever its CRS."""
        return [layer for layer in self.project.mapLayers().values() if layer.customProperty(ROLE) in ROLES]

    def results_layers(self) -> list[QgsVectorLayer]:
        """Every Think2Seg results layer of the project, whatever its CRS."""
        return [layer for layer in self.all_layers() if layer.customProperty(ROLE) == "results"]

    def features(
        self, reply: dict, crs: QgsCoordinateReferenceSystem, raster: str, *, question: str = ""
    ) -> RunFeatures:
        """Features for a segment reply (GeoJSON in ``crs``); ``question`` names a re-segment's run, a
        reply with several classes is named by them. Each polygon keeps its ``class`` (its question's
        when the reply names none) and SAM's ``score``."""
        stamp = {
            "run_id": uuid.uuid4().hex[:16],
            "question": question or run_question(reply),
            "created_at": reply.get("created_at", ""),
        }
        layers = self.layers(crs)
        reasoning = reply.get("reasoning", "")
        instance = run_instances(reply)
        run = {
            "status": reply.get("status", ""),
            "model": reply.get("model", ""),
            "segmenter": reply.get("segmenter", ""),
        }
        results = [
            _feature(
                layers["results"],
                f["geometry"],
                {
                    **stamp,
                    **run,
                    "area_m2": f["properties"].get("area_m2"),
                    "raster": raster,
                    "reasoning": reasoning,
                    "instance": instance(f["properties"]),
                    "score": f["properties"].get("score"),
                    "class": f["properties"].get("class") or stamp["question"],
                },
            )
            for f in reply.get("features", [])
        ]
        if results:  # the source's attribution travels with what is derived from it
            attribution.credit_source(layers["results"], self.project, raster)
        boxes, points, counters = [], [], {}
        for f in reply.get("prompts", {}).get("features", []):
            number = instance(f["properties"]) or 0
            values = {**stamp, "instance": number, "score": f["properties"].get("score")}
            values["class"] = f["properties"].get("class") or stamp["question"]
            if f["properties"].get("kind") == "box":
                boxes.append(_feature(layers["boxes"], f["geometry"], {**values, "reasoning": reasoning}))
            else:
                counters[number] = counters.get(number, -1) + 1
                points.append(_feature(layers["points"], f["geometry"], {**values, "point": counters[number]}))
        return RunFeatures(stamp["run_id"], crs, results, boxes, points)

    def add(self, run: RunFeatures) -> None:
        """Save a run's features, all or nothing."""
        layers = self.layers(run.crs)
        try:
            for role, features in run.by_role().items():
                if features:
                    self.write(layers[role], features)
        except ResultsError:
            self.take_back(run)
            raise

    def remove(self, run: RunFeatures) -> None:
        request = QgsFeatureRequest().setFilterExpression(f"\"run_id\" = '{run.run_id}'")
        for layer in self._found(run.crs).values():
            self._delete(layer, [feature.id() for feature in layer.getFeatures(request)])

    def run_extent(self, run: RunFeatures) -> QgsRectangle:
        """The extent of a run's polygons and prompts (in ``run.crs``), as they are now."""
        extent = QgsRectangle()
        request = QgsFeatureRequest().setFilterExpression(f"\"run_id\" = '{run.run_id}'")
        for layer in self._found(run.crs).values():
            for feature in layer.getFeatures(request):
                extent.combineExtentWith(feature.geometry().boundingBox())
        return extent

    def write(self, layer: QgsVectorLayer, features: list[QgsFeature]) -> list[QgsFeature]:
        """Add ``features`` to the layer's file at once; returns them with their new ids."""
        ok, added = layer.dataProvider().addFeatures(features)
        if not ok:
            raise ResultsError(_cannot_save(layer, "add features to"))
        self._changed(layer)
        return added

    def take(self, replaced: Replaced) -> None:
        """Delete the ``replaced`` features (those still there), keeping their current state to put back."""
        for role, layer in (self.find(replaced.crs) or {}).items():
            ids = [feature.id() for feature in replaced.features.get(role, [])]
            current = list(layer.getFeatures(QgsFeatureRequest().setFilterFids(ids))) if ids else []
            self._delete(layer, [feature.id() for feature in current])
            replaced.features[role] = current

    def put_back(self, replaced: Replaced) -> None:
        """Add the ``replaced`` features again (their ids change)."""
        layers = self.layers(replaced.crs)
        for role, features in replaced.features.items():
            if features:
                replaced.features[role] = self.write(layers[role], features)

    def take_back(self, run: RunFeatures) -> None:
        """Remove a run that could be saved only in part (a failure here is logged: the error that
        caused it is the one to report)."""
        try:
            self.remove(run)
        except ResultsError as exc:
            logger().warning("a partly saved run (%s) could not be taken back: %s", run.run_id, exc)

    def _delete(self, layer: QgsVectorLayer, ids: list[int]) -> None:
        if not ids:
            return
        if not layer.dataProvider().deleteFeatures(ids):
            raise ResultsError(_cannot_save(layer, "delete features from"))
        self._changed(layer)

    @staticmethod
    def _changed(layer: QgsVectorLayer) -> None:
        layer.updateExtents()
        if layer.customProperty(ROLE) == "results":
            styles.categorize(layer)
        layer.triggerRepaint()

    def _found(self, crs: QgsCoordinateReferenceSystem) -> dict[str, QgsVectorLayer]:
        key = crs_key(crs)
        return {
            layer.customProperty(ROLE): layer
            for layer in self.project.mapLayers().values()
            if layer.customProperty(ROLE) in ROLES and layer.customProperty(CRS_KEY) == key
        }

    def _create(self, role: str, crs: QgsCoordinateReferenceSystem) -> QgsVectorLayer:
        path = self.file.path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ResultsError(f"cannot create the folder {path.parent} for the results ({exc})") from exc
        table = f"{role}_{re.sub(r'[^a-z0-9]+', '_', crs_key(crs).lower())}"
        if not _has_table(path, table):
            _create_table(path, table, role, crs)
        name = NAMES[role] if not self._other_crs(role, crs) else f"{NAMES[role]} ({crs.authid() or crs.description()})"
        layer = QgsVectorLayer(f"{path}|layername={table}", name, "ogr")
        _add_missing_fields(layer, role)
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
        add_to_group(self.project, layer)


def add_to_group(project: QgsProject, layer: QgsVectorLayer, subgroup: str = "") -> None:
    """Put a layer (already in the project) into the "Think2Seg" group, or a subgroup of it."""
    root = project.layerTreeRoot()
    group = root.findGroup(GROUP) or root.insertGroup(0, GROUP)
    if subgroup:
        group = group.findGroup(subgroup) or group.addGroup(subgroup)
    group.addLayer(layer)


def reply_crs(reply: dict, expected: QgsCoordinateReferenceSystem) -> QgsCoordinateReferenceSystem:
    """The CRS the reply's coordinates are in: ``expected`` when the reply says the same CRS.

    Reads ``crs_wkt``, else the GeoJSON ``crs`` name; raises :class:`~.api.errors.ApiError` when
    the reply names no CRS QGIS knows (its coordinates cannot be placed safely).
    """
    crs = QgsCoordinateReferenceSystem.fromWkt(reply["crs_wkt"]) if reply.get("crs_wkt") else None
    if crs is None or not crs.isValid():
        crs = QgsCoordinateReferenceSystem()
        crs.createFromOgcWmsCrs(str(((reply.get("crs") or {}).get("properties") or {}).get("name", "")))
    if not crs.isValid():
        raise ApiError(
            "invalid_reply",
            "the backend's reply does not say which CRS its polygons are in, so they were not added: "
            "update the think2seg backend",
        )
    return expected if crs == expected else crs


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


def _has_table(path, table: str) -> bool:  # a Path
    if not path.exists():
        return False
    probe = QgsVectorLayer(f"{path}|layername={table}", "probe", "ogr")
    return probe.isValid()


def _fields(role: str) -> QgsFields:
    fields = QgsFields()
    for name, kind in FIELDS[role]:
        fields.append(QgsField(name, kind))
    return fields


def _add_missing_fields(layer: QgsVectorLayer, role: str) -> None:
    """Tables made by an earlier version of the plugin get the fields added since (e.g. reasoning)."""
    missing = [field for field in _fields(role) if layer.fields().indexOf(field.name()) < 0]
    if missing and layer.dataProvider().addAttributes(missing):
        layer.updateFields()


def _create_table(path, table: str, role: str, crs: QgsCoordinateReferenceSystem) -> None:
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
        str(path), _fields(role), geometry, crs, QgsProject.instance().transformContext(), options
    )
    error = writer.hasError()
    message = writer.errorMessage()
    del writer  # closes the file
    if error:
        raise ResultsError(
            f"cannot create the results table {table} in {path} ({message}): check that the folder is "
            "writable and that no other program holds the GeoPackage open"
        )


def _cannot_save(layer: QgsVectorLayer, action: str) -> str:
    errors = layer.dataProvider().errors()
    detail = errors[-1] if errors else "the file is read-only or locked"
    return (
        f"cannot {action} {layer.name()} in {layer.source().split('|')[0]} ({detail}): close other programs "
        "that have this GeoPackage open and check that it is writable, or save the project in a writable folder"
    )
