"""Request and reply shapes of the HTTP API (v1). The golden files in tests/fixtures/api follow them.

Coordinates are in map units of the CRS each field names; polygons are never reprojected: replies
are in the raster's (or the uploaded tile's) CRS and say which.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from think2seg.change.compare import MIN_CHANGE_M2
from think2seg.options import MAX_SIDE_PX, MIN_AREA_M2, MIN_SCORE, OVERLAP_PX, SIMPLIFY_PX, TILE_SIZE_PX
from think2seg.runs.microbatch import MAX_BATCH_SIZE
from think2seg.think2seg_rs.prompt import MAX_QUESTION_CHARS

MAX_JOB_WORKERS = 64
MAX_CLASSES = 32
"""Classes one /v1/segment request may ask (one model batch)."""

ClassName = Annotated[str, Field(min_length=1, max_length=100, pattern=r"\S")]
ClassesIn = dict[ClassName, Annotated[str, Field(max_length=MAX_QUESTION_CHARS)]]
"""Class name -> question (a name given twice is refused before validation: see server.guards)."""

Outline = Literal["pixel", "simplify", "smooth", "regularize"]
"""think2seg.geo.outline.OUTLINES, spelled out so the JSON schema lists the choices."""
OUTLINE_HELP = (
    "pixel: exact pixel edges; simplify: Douglas-Peucker; smooth: natural features; regularize: buildings "
    "(right angles). simplify_px is the tolerance (0: 1 px, 1.5 for regularize)"
)

CrsIn = Annotated[str, Field(max_length=10000)] | Annotated[int, Field(ge=1)]
"""A CRS as a request gives it: an EPSG code (32633, "32633" or "EPSG:32633") or WKT."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(_Strict):
    code: str = Field(description="machine-readable reason, e.g. unauthorized, busy, invalid_input")
    message: str = Field(description="what went wrong and what to do")


class ErrorEnvelope(_Strict):
    error: ErrorBody


class GpuInfo(_Strict):
    name: str
    memory_total_mb: int
    memory_free_mb: int


ModelStatus = Literal["loading", "ready", "error"]


class HealthReply(_Strict):
    status: ModelStatus
    message: str = Field(description="what is loading, or why loading failed")
    api_version: str
    version: str
    device: str
    gpu: GpuInfo | None
    models: dict[str, str] = Field(description="lvlm and segmenter ids")
    packages: dict[str, str]
    queue_depth: int = Field(description="interactive requests waiting for the model worker")
    running_jobs: int


class PromptIn(_Strict):
    """One instance's prompts in map coordinates: a box and/or exactly two positive points."""

    box: list[float] | None = Field(None, min_length=4, max_length=4, description="[minx, miny, maxx, maxy]")
    points: list[list[float]] | None = Field(None, min_length=2, max_length=2, description="[[x, y], [x, y]]")

    @model_validator(mode="after")
    def _one_of(self) -> PromptIn:
        if self.box is None and self.points is None:
            raise ValueError("a prompt needs a box, two points, or both")
        if self.points is not None and any(len(p) != 2 for p in self.points):
            raise ValueError("each point is [x, y]")
        if self.box is not None and (self.box[2] <= self.box[0] or self.box[3] <= self.box[1]):
            raise ValueError("a box is [minx, miny, maxx, maxy] with minx < maxx and miny < maxy")
        return self


class SegmentOptions(_Strict):
    """What to segment: a question (LVLM + SAM), or explicit prompts (SAM alone)."""

    question: str | None = Field(None, max_length=MAX_QUESTION_CHARS)
    classes: ClassesIn | None = Field(
        None,
        min_length=1,
        max_length=MAX_CLASSES,
        description="several things at once: class name -> question, all asked of the tile in one model batch; "
        "each polygon gets its class",
    )
    prompts: list[PromptIn] | None = Field(None, min_length=1, max_length=64)
    max_side_px: int = MAX_SIDE_PX.field()
    simplify_px: float = SIMPLIFY_PX.field()
    min_area_m2: float = MIN_AREA_M2.field()
    min_score: float = MIN_SCORE.field()
    outline: Outline = Field("pixel", description=OUTLINE_HELP)
    include_mask: bool = Field(False, description="add the mask as a base64 PNG with its transform")

    @model_validator(mode="after")
    def _question_or_prompts(self) -> SegmentOptions:
        if sum(x is not None for x in (self.question, self.classes, self.prompts)) != 1:
            raise ValueError("give one of a question, classes or explicit prompts")
        if self.question is not None and not self.question.strip():
            raise ValueError('the question is empty: ask what to segment, e.g. "segment the river"')
        _check_classes(self.classes)
        return self


def _check_classes(classes: dict[str, str] | None) -> None:
    for name, question in (classes or {}).items():
        if not question.strip():
            raise ValueError(f'class {name!r} has an empty question: ask what to segment, e.g. "segment the roads"')


class SegmentByReference(SegmentOptions):
    """A window of a raster on the backend's disk, read at native resolution up to ``max_side_px``."""

    raster_path: str = Field(min_length=1)
    bounds: list[float] | None = Field(None, min_length=4, max_length=4, description="[minx, miny, maxx, maxy]")
    bounds_crs: CrsIn | None = Field(
        None, description="CRS of bounds and prompts (EPSG code or WKT); default the raster's"
    )


class UploadMeta(SegmentOptions):
    """The JSON ``request`` part of a multipart upload. A GeoTIFF carries its own georeference;
    a PNG or JPEG needs ``transform`` (GDAL order: a, b, c, d, e, f as in rasterio's Affine) and ``crs``."""

    transform: list[float] | None = Field(None, min_length=6, max_length=6)
    crs: CrsIn | None = Field(None, description="EPSG code (32633 or EPSG:32633) or WKT")


class MaskOut(_Strict):
    png_base64: str = Field(description="8-bit PNG: 1 target, 0 background, 255 nodata")
    width: int
    height: int
    transform: list[float] = Field(description="a, b, c, d, e, f of the mask's pixel corners")


class ClassOut(_Strict):
    """One class of a reply: its name (the question when the request named none) and its own answer."""

    name: str
    question: str
    status: Literal["ok", "no_target", "unparseable", "no_data"]
    message: str
    reasoning: str
    raw_answer: str
    polygons: int
    total_area_m2: float | None


class OverlapOut(_Strict):
    """Two classes claim the same ground: both keep their polygons; this is the area they share."""

    class_a: str
    class_b: str
    area_m2: float | None


class SegmentReply(_Strict):
    """A GeoJSON FeatureCollection of the polygons in the tile's CRS, plus the run's fields.

    Each polygon's properties: ``area_m2``, ``instance`` (the answer's instance that produced it)
    and ``score`` (SAM's predicted IoU of that instance's mask: mask quality, not the LVLM's
    certainty; null when the segmenter predicts none). Each prompt feature carries its ``score``.
    """

    model_config = ConfigDict(extra="allow")

    type: Literal["FeatureCollection"]
    features: list[dict[str, Any]]
    crs: dict[str, Any] | None = None
    crs_wkt: str | None
    question: str
    status: Literal["ok", "no_target", "unparseable", "no_data"]
    message: str
    reasoning: str
    raw_answer: str
    model: str
    segmenter: str
    created_at: str
    total_area_m2: float | None
    notes: list[str]
    timings_ms: dict[str, float]
    prompts: dict[str, Any]
    window: dict[str, Any]
    mask: MaskOut | None = None
    classes: list[ClassOut] = Field(description="each question asked: one entry, or one per class")
    class_overlaps: list[OverlapOut] = Field(description="total area per pair of classes whose polygons overlap")
    api_version: str


class JobRequest(_Strict):
    """A batch run over a raster on the backend's disk; see `think2seg batch` for the options."""

    raster_path: str = Field(min_length=1)
    output_path: str = Field(min_length=1, description="the GeoPackage to write (.gpkg)")
    question: str | None = Field(None, min_length=1, max_length=MAX_QUESTION_CHARS)
    classes: ClassesIn | None = Field(
        None,
        min_length=1,
        max_length=MAX_CLASSES,
        description="several things at once: class name -> question, all asked of each tile in one pass; "
        "each polygon gets its class",
    )
    tile_size_px: int = TILE_SIZE_PX.field()
    overlap_px: int = OVERLAP_PX.field()
    bounds: list[float] | None = Field(None, min_length=4, max_length=4)
    bounds_crs: CrsIn | None = Field(None, description="CRS of bounds (EPSG code or WKT); default the raster's")
    aoi_path: str | None = None
    batch_size: Annotated[int, Field(ge=1, le=MAX_BATCH_SIZE)] | Literal["auto"] = Field(
        "auto", description="tiles per model batch; auto fills the free GPU memory (1 on a CPU)"
    )
    resume: bool = False
    retry_failed: bool = False
    overwrite: bool = False
    simplify_px: float = SIMPLIFY_PX.field()
    min_area_m2: float = MIN_AREA_M2.field()
    min_score: float = MIN_SCORE.field()
    outline: Outline = Field("pixel", description=OUTLINE_HELP)
    workers: int | None = Field(
        None,
        ge=0,
        le=MAX_JOB_WORKERS,
        description="Ray model workers for this job (each loads its own models; 0 runs the job on the server's "
        "own models); default the server's `serve --workers`",
    )

    @model_validator(mode="after")
    def _question_or_classes(self) -> JobRequest:
        if (self.question is None) == (self.classes is None):
            raise ValueError("give a question or classes (one of the two)")
        if self.question is not None and not self.question.strip():
            raise ValueError('the question is empty: ask what to segment, e.g. "every solar farm"')
        _check_classes(self.classes)
        return self


class ChangeRequest(_Strict):
    """Change between two rasters of the same place on the backend's disk; see `think2seg change`.

    The same question about BEFORE and AFTER over the extent both cover (only its part inside
    ``bounds`` when given), each date in one window read up to ``max_side_px``. ``output_path`` gets
    the layers appeared, disappeared, persisted, before_segments, after_segments and runs, all in
    BEFORE's CRS (AFTER is resampled onto BEFORE's grid). Followed as a job: GET/DELETE /v1/jobs/{id}.
    """

    before_path: str = Field(min_length=1, description="the earlier raster (its grid and CRS are used)")
    after_path: str = Field(min_length=1, description="the later raster (any CRS; resampled onto BEFORE's grid)")
    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS)
    output_path: str = Field(min_length=1, description="the GeoPackage to write (.gpkg)")
    bounds: list[float] | None = Field(
        None, min_length=4, max_length=4, description="[minx, miny, maxx, maxy]: compare only there"
    )
    bounds_crs: CrsIn | None = Field(None, description="CRS of bounds (EPSG code or WKT); default BEFORE's")
    overwrite: bool = False
    min_change_m2: float = MIN_CHANGE_M2.field()
    max_side_px: int = MAX_SIDE_PX.field()
    simplify_px: float = SIMPLIFY_PX.field()
    min_area_m2: float = MIN_AREA_M2.field()
    min_score: float = MIN_SCORE.field()
    outline: Outline = Field("pixel", description=OUTLINE_HELP)

    @field_validator("question")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError('the question is empty: ask what to segment, e.g. "every building"')
        return value


class JobStatus(_Strict):
    id: str
    state: Literal["running", "done", "failed", "cancelled"]
    message: str
    question: str = Field(description="the question, or '<n> classes: <names>' for a job that asks several classes")
    classes: list[str] | None = Field(None, description="the class names a job with classes asks, in order; else None")
    raster_path: str
    output_path: str
    tiles_done: int = Field(
        description="tiles finished; with classes, (tile, class) pairs: a tile counts once per class"
    )
    tiles_total: int | None
    failures: int
    polygons: int | None = Field(description="stitched polygons, once the job is done")
    total_area_m2: float | None
    eta_s: float | None
    tiles_per_s: float | None = Field(description="the job's pace, tiles finished per second; None before the first")
    workers: int = Field(description="Ray model workers the job asked for (0: the server's own models)")
    workers_alive: int | None = Field(
        description="Ray workers ready to take tiles now; None without workers or once the job has ended"
    )
    retries: int = Field(description="tiles run again because the worker holding them died")
    created_at: str
    finished_at: str | None


class JobList(_Strict):
    jobs: list[JobStatus]
