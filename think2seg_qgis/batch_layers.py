"""A batch output on the map: its stitched segments (coloured by class for a job with classes) and
its tiles (coloured by status), in a group "Think2Seg › <question or classes> (<file>)". Loading
the same output again replaces its layers, so reruns, resumes and overwrites never leave stale
copies."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProject, QgsSingleSymbolRenderer, QgsVectorLayer

from . import styles
from .errors import ResultsError
from .results import GROUP, add_to_group

OUTPUT_KEY = "think2seg/batch_output"
SEGMENTS_RGB = "255,127,0"


def group_name(question: str, output: str) -> str:
    return f"{question} ({Path(output).name})"


def load_output(
    project: QgsProject, output: str, question: str, *, classes: list[str] | None = None
) -> dict[str, QgsVectorLayer]:
    """Add the output's ``segments`` and ``tiles`` layers (replacing earlier copies); raises ResultsError.

    ``question`` names them (for a job with classes, e.g. “3 classes: buildings, roads, water”); with
    ``classes`` (the job's class names, in order) the segments get one colour per class, as the
    panel's results do."""
    forget_output(project, output)
    layers = {}
    for table, name in (("segments", f"segments — {question}"), ("tiles", "tiles (status)")):
        layer = QgsVectorLayer(f"{output}|layername={table}", name, "ogr")
        if not layer.isValid():
            raise ResultsError(f"the batch output {output} has no readable “{table}” layer: run the batch again")
        layer.setCustomProperty(OUTPUT_KEY, str(Path(output)))
        layers[table] = layer
    segments = layers["segments"]
    if classes and segments.fields().indexOf(styles.CLASS_FIELD) >= 0:
        styles.categorize_classes(segments, list(classes))
    else:
        segments.setRenderer(QgsSingleSymbolRenderer(styles.fill(SEGMENTS_RGB)))
    styles.style_tiles(layers["tiles"])
    for table in ("segments", "tiles"):  # segments above their tiles
        project.addMapLayer(layers[table], False)
        add_to_group(project, layers[table], group_name(question, output))
    return layers


def forget_output(project: QgsProject, output: str) -> None:
    """Remove the layers of an earlier load of ``output`` (and their empty group), closing the file."""
    key = str(Path(output))
    stale = [layer.id() for layer in project.mapLayers().values() if layer.customProperty(OUTPUT_KEY) == key]
    if stale:
        project.removeMapLayers(stale)
    group = project.layerTreeRoot().findGroup(GROUP)
    if group is not None:
        for child in group.findGroups():
            if not child.children():
                group.removeChildNode(child)
