"""Processing provider "Think2Seg" with one algorithm: segment raster by question, or by several
classes (one batch job that asks every class of each tile; each polygon has its class)."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingOutputVectorLayer,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingProvider,
)
from qgis.PyQt.QtGui import QIcon

from .. import compat, styles
from ..api.client import BlockingClient
from ..api.errors import ApiError
from ..classes import ClassError, parse_class_lines
from ..jobs import end_text, job_request, percent, progress_text, run_job
from ..settings import Settings
from ..tile import local_file

ICON = Path(__file__).resolve().parent.parent / "icons" / "think2seg.svg"


class Think2SegProvider(QgsProcessingProvider):
    def id(self) -> str:
        return "think2seg"

    def name(self) -> str:
        return "Think2Seg"

    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def loadAlgorithms(self) -> None:
        self.addAlgorithm(SegmentRasterByQuestion())


class SegmentRasterByQuestion(QgsProcessingAlgorithm):
    INPUT, QUESTION, CLASSES, TILE_SIZE, OVERLAP, RESUME, OVERWRITE, OUTPUT, SEGMENTS = (
        "INPUT",
        "QUESTION",
        "CLASSES",
        "TILE_SIZE",
        "OVERLAP",
        "RESUME",
        "OVERWRITE",
        "OUTPUT",
        "SEGMENTS",
    )

    def name(self) -> str:
        return "segment_raster_by_question"

    def displayName(self) -> str:
        return "Segment raster by question"

    def shortHelpString(self) -> str:
        return (
            "Asks one question (e.g. 'every solar farm') over every tile of a raster with the Think2Seg "
            "backend and writes stitched polygons to a GeoPackage (layer 'segments', added to the project when "
            "the run ends). The raster must be a file; a backend started from the Think2Seg panel reads and "
            "writes any folder (temporary outputs included), one started elsewhere only its --data-root folders.\n\n"
            "Several classes instead of the question: one 'name: question' per line (e.g. 'buildings: segment the "
            "buildings'). One job asks every class of each tile (its progress counts tile × class pairs) and writes "
            "them all to the output's 'segments' layer, with the class in its 'class' field and SAM's score in "
            "'score', coloured by class; Resume continues that one file (with the same classes). Settings' "
            "simplification, minimum area, minimum SAM score and outline go with the job."
        )

    def createInstance(self) -> SegmentRasterByQuestion:
        return SegmentRasterByQuestion()

    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def initAlgorithm(self, config: dict | None = None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Raster"))
        self.addParameter(QgsProcessingParameterString(self.QUESTION, "Question", optional=True))
        self.addParameter(
            QgsProcessingParameterString(
                self.CLASSES, "Classes instead (one 'name: question' per line)", multiLine=True, optional=True
            )
        )
        integer = compat.NUMBER_INTEGER
        self.addParameter(
            QgsProcessingParameterNumber(self.TILE_SIZE, "Tile size (px)", integer, 1024, minValue=64, maxValue=8192)
        )
        self.addParameter(
            QgsProcessingParameterNumber(self.OVERLAP, "Overlap (px)", integer, 128, minValue=0, maxValue=4096)
        )
        self.addParameter(QgsProcessingParameterBoolean(self.RESUME, "Resume the run in the output file", False))
        self.addParameter(
            QgsProcessingParameterBoolean(self.OVERWRITE, "Overwrite the output file (start again)", False)
        )
        self.addParameter(
            QgsProcessingParameterFileDestination(self.OUTPUT, "Output GeoPackage", "GeoPackage (*.gpkg)")
        )
        self.addOutput(QgsProcessingOutputVectorLayer(self.SEGMENTS, "Segments"))

    def processAlgorithm(
        self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict:
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        raster = local_file(layer) if layer is not None else None
        if raster is None:
            raise QgsProcessingException(
                "the raster must be a file the Think2Seg backend can read (a file-based GDAL layer)"
            )
        question, classes = self._what(parameters, context)
        output = self.parameterAsFileOutput(parameters, self.OUTPUT, context)
        resume = self.parameterAsBool(parameters, self.RESUME, context)
        overwrite = self.parameterAsBool(parameters, self.OVERWRITE, context)
        if resume and overwrite:
            raise QgsProcessingException("choose either RESUME (continue the run) or OVERWRITE (start again), not both")
        options = {
            "tile_size_px": self.parameterAsInt(parameters, self.TILE_SIZE, context),
            "overlap_px": self.parameterAsInt(parameters, self.OVERLAP, context),
            "resume": resume,
            "overwrite": overwrite,
        }
        status = _run(raster, output, question, classes, options, feedback)
        feedback.pushInfo(end_text(status))
        segments = f"{output}|layername=segments"
        title = ", ".join(classes) if classes else question
        details = QgsProcessingContext.LayerDetails(f"Think2Seg: {title}", context.project(), self.SEGMENTS)
        if classes:
            details.setPostProcessor(_ClassStyle.create(list(classes)))
        context.addLayerToLoadOnCompletion(segments, details)
        return {self.OUTPUT: output, self.SEGMENTS: segments}

    def _what(self, parameters: dict, context: QgsProcessingContext) -> tuple[str, dict[str, str]]:
        """(question, classes): exactly one of them is given."""
        question = self.parameterAsString(parameters, self.QUESTION, context).strip()
        try:
            classes = parse_class_lines(self.parameterAsString(parameters, self.CLASSES, context) or "")
        except ClassError as exc:
            raise QgsProcessingException(str(exc)) from exc
        if question and classes:
            raise QgsProcessingException("give either a QUESTION or CLASSES, not both (leave the other empty)")
        if not question and not classes:
            raise QgsProcessingException(
                "the question is empty: ask what to segment, e.g. 'every solar farm', or give CLASSES, one "
                "'name: question' per line"
            )
        return question, classes


def _run(
    raster: str,
    output: str,
    question: str,
    classes: dict[str, str],
    options: dict,
    feedback: QgsProcessingFeedback,
) -> dict:
    """Run one batch job (the question, or every class of each tile) to its end; returns its status,
    raises QgsProcessingException unless it is done."""
    settings = Settings()
    request = job_request(raster, output, question, classes=classes or None, settings=settings, **options)
    try:
        status = run_job(
            BlockingClient(settings),
            request,
            canceled=feedback.isCanceled,
            progress=lambda status: _show_progress(feedback, status),
        )
    except ApiError as exc:
        raise QgsProcessingException(exc.message) from exc
    if status["state"] != "done":
        raise QgsProcessingException(end_text(status))
    return status


class _ClassStyle(QgsProcessingLayerPostProcessorInterface):
    """Colours the job's segments by class once QGIS loads them (kept alive until then: QGIS
    holds only a pointer)."""

    _alive: list[_ClassStyle] = []

    def __init__(self, names: list[str]) -> None:
        super().__init__()
        self.names = names

    @classmethod
    def create(cls, names: list[str]) -> _ClassStyle:
        processor = cls(names)
        cls._alive.append(processor)
        return processor

    def postProcessLayer(self, layer, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> None:
        if layer is not None and layer.fields().indexOf(styles.CLASS_FIELD) >= 0:
            styles.categorize_classes(layer, self.names)
            layer.triggerRepaint()
        if self in self._alive:  # its one layer is styled: QGIS does not call it again
            self._alive.remove(self)


def _show_progress(feedback: QgsProcessingFeedback, status: dict) -> None:
    """The job's figures in the algorithm's dialog: the bar, and the tiles (or tile × class pairs),
    pace, ETA and workers."""
    feedback.setProgress(percent(status))
    feedback.setProgressText(progress_text(status))
