"""Each option is defined once (think2seg.options): the CLI, the Python API and the HTTP API refuse
the same bad value with the same message, and take their defaults and limits from it."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from affine import Affine
from fastapi.testclient import TestClient

from think2seg.batch.options import BatchOptions
from think2seg.cli import build_parser, main
from think2seg.engine import Engine
from think2seg.errors import InputError
from think2seg.geo.arrays import tile_from_array
from think2seg.inference import Inference
from think2seg.options import (
    MAX_SIDE_PX,
    MIN_AREA_M2,
    MIN_AREA_NEEDS_CRS,
    OVERLAP_PX,
    PREFETCH,
    SIMPLIFY_PX,
    TILE_SIZE_PX,
)
from think2seg.runs.microbatch import AUTO, BatchSizer
from think2seg.server.app import create_app
from think2seg.server.schemas import JobRequest, SegmentByReference
from think2seg.server.settings import ServerSettings

from conftest import BoxSegmenter, FixedPrompter
from rasters import UTM_TRANSFORM, scene, write_raster

TOKEN = "options-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

# option, bad value as typed, the one message, the commands with its flag, the HTTP routes with its field
CASES = [
    (SIMPLIFY_PX, "-1", "simplify_px must be a number from 0 to 1000 (pixels), got -1", ("segment", "batch"), ("segment", "jobs")),
    (SIMPLIFY_PX, "1000.5", "simplify_px must be a number from 0 to 1000 (pixels), got 1000.5", ("segment", "batch"), ("segment", "jobs")),
    (MIN_AREA_M2, "-2.5", "min_area_m2 must be a number >= 0 (m²), got -2.5", ("segment", "batch"), ("segment", "jobs")),
    (MAX_SIDE_PX, "8", "max_side_px must be a whole number >= 16 (pixels), got 8", ("segment",), ("segment",)),
    (TILE_SIZE_PX, "32", "tile_size_px must be a whole number from 64 to 8192 (pixels), got 32", ("batch",), ("jobs",)),
    (TILE_SIZE_PX, "9000", "tile_size_px must be a whole number from 64 to 8192 (pixels), got 9000", ("batch",), ("jobs",)),
    (OVERLAP_PX, "-1", "overlap_px must be a whole number from 0 to 4096 (pixels), got -1", ("batch",), ("jobs",)),
    (OVERLAP_PX, "5000", "overlap_px must be a whole number from 0 to 4096 (pixels), got 5000", ("batch",), ("jobs",)),
    (PREFETCH, "-1", "prefetch must be a whole number >= 0 (tiles), got -1", ("batch",), ()),
]  # fmt: skip
IDS = [f"{option.name}={text}" for option, text, *_ in CASES]
COMMANDS = [(case, command) for case in CASES for command in case[3]]
ROUTES = [(case, route) for case in CASES for route in case[4]]


def _cli_args(command: str) -> list[str]:
    return ["segment", "scene.tif", "q"] if command == "segment" else ["batch", "scene.tif", "q", "-o", "out.gpkg"]


@pytest.fixture
def engine() -> Engine:
    return Engine(FixedPrompter("<answer>[]</answer>"), BoxSegmenter())


@pytest.fixture
def client(tmp_path):
    settings = ServerSettings(data_roots=(tmp_path,), token_file=tmp_path / "token")
    app = create_app(settings, Engine(FixedPrompter("<answer>[]</answer>"), BoxSegmenter()), token=TOKEN)
    with TestClient(app, base_url="http://127.0.0.1:8765") as test_client:
        yield test_client


def _tile(crs=32633):
    pixels = np.zeros((8, 8, 3), np.uint8)
    transform = UTM_TRANSFORM if crs else Affine.identity()
    return tile_from_array(pixels, transform=transform, crs=crs, pixel_coords=crs is None)


@pytest.mark.parametrize(("case", "command"), COMMANDS, ids=[f"{c[0].name}={c[1]}-{m}" for c, m in COMMANDS])
def test_cli_refuses_with_the_message(capsys, case, command):
    option, text, message, *_ = case
    with pytest.raises(SystemExit) as exit_:
        main([*_cli_args(command), option.flag, text])
    assert exit_.value.code == 2
    assert f"argument {option.flag}: {message}\n" in capsys.readouterr().err


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_python_api_refuses_with_the_message(tmp_path, engine, case):
    option, text, message, *_ = case
    value = json.loads(text)
    calls = []
    if option in (SIMPLIFY_PX, MIN_AREA_M2):
        tile = _tile()
        calls += [
            lambda: engine.segment_tile(tile, "q", **{option.name: value}),
            lambda: engine.vectorize(Inference.no_data(tile, "q"), **{option.name: value}),
            lambda: engine.segment_array(tile.pixels, "q", transform=tile.transform, crs=32633, **{option.name: value}),
        ]
    if option is MAX_SIDE_PX:
        calls.append(lambda: engine.segment_raster(tmp_path / "scene.tif", "q", max_side_px=value))
    if option is not MAX_SIDE_PX:
        calls.append(lambda: BatchOptions(**{option.name: value}))
    for call in calls:
        with pytest.raises(InputError) as refused:
            call()
        assert str(refused.value) == message


@pytest.mark.parametrize(("case", "route"), ROUTES, ids=[f"{c[0].name}={c[1]}-{r}" for c, r in ROUTES])
def test_http_refuses_with_the_message(tmp_path, client, case, route):
    option, text, message, *_ = case
    raster = write_raster(tmp_path / "scene.tif", scene(64, 64))
    body = {"raster_path": str(raster), "question": "q", option.name: json.loads(text)}
    if route == "jobs":
        body["output_path"] = str(tmp_path / "out.gpkg")
    reply = client.post(f"/v1/{route}", json=body, headers=AUTH)
    assert reply.status_code == 422 and reply.json()["error"]["code"] == "invalid_input"
    assert f"{option.name}: {message}" in reply.json()["error"]["message"]
    assert not (tmp_path / "out.gpkg").exists()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), True, "1", None])
def test_only_finite_numbers_and_no_bools(bad):
    for option in (SIMPLIFY_PX, MIN_AREA_M2, TILE_SIZE_PX, PREFETCH):
        with pytest.raises(InputError, match=f"^{option.name} must be a"):
            option.check(bad)
    with pytest.raises(InputError, match="whole number"):
        TILE_SIZE_PX.check(100.5)
    assert TILE_SIZE_PX.check(256.0) == 256 and isinstance(TILE_SIZE_PX.check(np.int64(256)), int)


def test_http_refuses_bools_and_nan_with_the_message():
    with pytest.raises(ValueError, match=r"simplify_px must be a number from 0 to 1000 \(pixels\), got True"):
        SegmentByReference.model_validate_json('{"raster_path": "r", "question": "q", "simplify_px": true}')
    with pytest.raises(ValueError, match="min_area_m2 must be a number >= 0 .*, got nan"):
        SegmentByReference.model_validate_json('{"raster_path": "r", "question": "q", "min_area_m2": NaN}')


def test_a_minimum_area_needs_a_crs_in_the_cli_and_the_python_api(tmp_path, capsys, engine):
    raster = write_raster(tmp_path / "nocrs.tif", scene(40, 50), crs=None, transform=Affine.identity())
    args = ["segment", str(raster), "q", "--json", "--pixel-coords", "--min-area-m2", "5"]
    assert main([*args, "--lvlm", str(tmp_path / "no-model")]) == 1
    assert capsys.readouterr().err.strip() == f"think2seg: error: {MIN_AREA_NEEDS_CRS}"
    with pytest.raises(InputError) as refused:
        engine.segment_tile(_tile(crs=None), "q", min_area_m2=5)
    assert str(refused.value) == MIN_AREA_NEEDS_CRS


def test_defaults_come_from_the_options():
    options = (SIMPLIFY_PX, MIN_AREA_M2, MAX_SIDE_PX, TILE_SIZE_PX, OVERLAP_PX, PREFETCH)
    assert [o.default for o in options] == [0.0, 0.0, 2048, 1024, 128, 4]  # what users rely on
    parsed = {command: vars(build_parser().parse_args(_cli_args(command))) for command in ("segment", "batch")}
    for option in options:
        found = [parsed[c][option.name] for c in parsed if option.name in parsed[c]]
        assert found and all(value == option.default for value in found), option.name
    batch, request = BatchOptions(), SegmentByReference(raster_path="r", question="q")
    job = JobRequest(raster_path="r", output_path="o.gpkg", question="q")
    assert (batch.tile_size_px, batch.overlap_px, batch.prefetch) == (1024, 128, 4)
    assert (request.max_side_px, request.simplify_px, job.tile_size_px, job.overlap_px) == (2048, 0.0, 1024, 128)


def test_the_http_schema_shows_the_limits():
    fields = {**SegmentByReference.model_json_schema()["properties"], **JobRequest.model_json_schema()["properties"]}
    for option in (SIMPLIFY_PX, MIN_AREA_M2, MAX_SIDE_PX, TILE_SIZE_PX, OVERLAP_PX):
        field = fields[option.name]
        assert field["default"] == option.default and field["minimum"] == option.minimum
        assert field.get("maximum") == option.maximum


def test_batch_size_is_auto_everywhere_and_one_on_a_cpu():
    assert BatchOptions().batch_size == AUTO == JobRequest(raster_path="r", output_path="o", question="q").batch_size
    assert build_parser().parse_args(_cli_args("batch")).batch_size == AUTO
    cpu = SimpleNamespace(
        prompter=SimpleNamespace(device=torch.device("cpu"), memory_per_sample=lambda: 2**20),
        segmenter=SimpleNamespace(memory_per_image=lambda: 2**20),
    )
    assert BatchSizer.plan(BatchOptions().batch_size, cpu).size == 1
