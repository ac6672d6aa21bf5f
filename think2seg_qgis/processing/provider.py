"""Processing provider "Think2Seg" with one algorithm: segment raster by question (a batch job)."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputVectorLayer,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingProvider,
)
from qgis.PyQt.QtGui import QIcon

from .. import compat
from ..api.client import BlockingClient
from ..api.errors import ApiError
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
    INPUT, QUESTION, TILE_SIZE, OVERLAP, RESUME, OVERWRITE, OUTPUT, SEGMENTS = (
        "INPUT",
        "QUESTION",
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
            "writes any folder (temporary outputs included), one started elsewhere only its --data-root folders."
        )

    def createInstance(self) -> SegmentRasterByQuestion:
        return SegmentRasterByQuestion()

    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def initAlgorithm(self, config: dict | None = None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Raster"))
        self.addParameter(QgsProcessingParameterString(self.QUESTION, "Question"))
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
        question = self.parameterAsString(parameters, self.QUESTION, context).strip()
        if not question:
            raise QgsProcessingException("the question is empty: ask what to segment, e.g. 'every solar farm'")
        output = self.parameterAsFileOutput(parameters, self.OUTPUT, context)
        resume = self.parameterAsBool(parameters, self.RESUME, context)
        overwrite = self.parameterAsBool(parameters, self.OVERWRITE, context)
        if resume and overwrite:
            raise QgsProcessingException("choose either RESUME (continue the run) or OVERWRITE (start again), not both")
        settings = Settings()
        request = job_request(
            raster,
            output,
            question,
            tile_size_px=self.parameterAsInt(parameters, self.TILE_SIZE, context),
            overlap_px=self.parameterAsInt(parameters, self.OVERLAP, context),
            resume=resume,
            overwrite=overwrite,
            settings=settings,
        )
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
        feedback.pushInfo(end_text(status))
        segments = f"{output}|layername=segments"
        details = QgsProcessingContext.LayerDetails(f"Think2Seg: {question}", context.project(), self.SEGMENTS)
        context.addLayerToLoadOnCompletion(segments, details)
        return {self.OUTPUT: output, self.SEGMENTS: segments}


def _show_progress(feedback: QgsProcessingFeedback, status: dict) -> None:
    """The job's figures in the algorithm's dialog: the bar, and the tiles, pace, ETA and workers."""
    feedback.setProgress(percent(status))
    feedback.setProgressText(progress_text(status))
