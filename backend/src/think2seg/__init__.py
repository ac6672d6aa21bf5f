"""think2seg: ask a question about a raster, get georeferenced polygons (Think2Seg-RS).

Python API::

    from think2seg import Engine

    engine = Engine.load()                       # Think2Seg-RS-3B + SAM 2.1 hiera-small
    result = engine.segment_raster("scene.tif", "segment the flooded fields")
    result.polygons                              # GeoDataFrame in the raster's CRS, area_m2 column
    result.mask, result.instances, result.reasoning, result.status, result.timings_s

    from think2seg import parse_answer

    parse_answer(text)                           # the product's rules (prompts clamped into the view)
    parse_answer(text, mode="reference")         # the reference parser's verdict, values as written
"""

from think2seg._version import __version__
from think2seg.engine import Engine
from think2seg.errors import Think2SegError
from think2seg.geo.arrays import tile_from_array
from think2seg.geo.read import read_tile
from think2seg.models.base import Generation, Prompter, Segmenter
from think2seg.models.weights import DEFAULT_LVLM, DEFAULT_SEGMENTER
from think2seg.output.geojson import to_feature_collection
from think2seg.output.gpkg import write_gpkg
from think2seg.output.maskfile import write_mask_geotiff
from think2seg.result import InstanceResult, ResultStatus, SegmentationResult
from think2seg.think2seg_rs.answer import AnswerMode, AnswerStatus, InstancePrompt, ParsedAnswer, parse_answer
from think2seg.tile import Tile

__all__ = [
    "DEFAULT_LVLM",
    "DEFAULT_SEGMENTER",
    "AnswerMode",
    "AnswerStatus",
    "Engine",
    "Generation",
    "InstancePrompt",
    "InstanceResult",
    "ParsedAnswer",
    "Prompter",
    "ResultStatus",
    "Segmenter",
    "SegmentationResult",
    "Think2SegError",
    "Tile",
    "__version__",
    "parse_answer",
    "read_tile",
    "tile_from_array",
    "to_feature_collection",
    "write_gpkg",
    "write_mask_geotiff",
]
