"""Schemathesis against /openapi.json: no generated request makes the server answer 500."""

from __future__ import annotations

import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings

from think2seg.engine import Engine
from think2seg.server.app import create_app
from think2seg.server.settings import ServerSettings

from conftest import BoxSegmenter, FixedPrompter
from rasters import scene, write_raster

TOKEN = "fuzz-token-0123456789"
ANSWER = '<answer>[{"bbox_2d": [84, 84, 420, 840], "positive_points": [[200, 400], [300, 500]]}]</answer>'
ROOT = Path(tempfile.mkdtemp(prefix="think2seg-fuzz-"))
write_raster(ROOT / "scene.tif", scene(64, 64))
APP = create_app(
    ServerSettings(data_roots=(ROOT,), token_file=ROOT / "token", max_upload_mb=4, allowed_hosts=("testserver",)),
    Engine(FixedPrompter(ANSWER), BoxSegmenter()),
    token=TOKEN,
)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP, headers={"Authorization": f"Bearer {TOKEN}"})


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_generated_request_gets_a_500(case):
    response = case.call(headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code < 500, f"{case.method} {case.path}: {response.status_code} {response.text[:300]}"
