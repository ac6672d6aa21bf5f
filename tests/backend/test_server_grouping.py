"""The model worker groups waiting questions into one model batch; nothing waits to be grouped."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from think2seg.engine import Engine
from think2seg.models.device import plan_device
from think2seg.models.qwen import QwenPrompter
from think2seg.runs.microbatch import BatchSizer
from think2seg.server.app import create_app
from think2seg.server.settings import ServerSettings
from think2seg.server.worker import BATCH, Group, ModelWorker
from think2seg.testing.tiny_lvlm import question_for

from conftest import BoxSegmenter
from rasters import scene, write_raster

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Recorder:
    """A group's ``run_many``: answers ``item.upper()``; fails a group holding ``"bad"``."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, items: list[str]) -> list[str]:
        self.calls.append(list(items))
        if "bad" in items:
            raise ValueError("a bad item")
        return [item.upper() for item in items]


def sized(size: int) -> Callable[[], BatchSizer]:
    """A Group's sizer: one that plans ``size`` at once."""
    sizer = BatchSizer(size, requested=size)
    return lambda: sizer


def blocked(worker: ModelWorker) -> threading.Event:
    """Occupy the worker until the returned event is set."""
    gate, started = threading.Event(), threading.Event()
    worker.submit(lambda: (started.set(), gate.wait()))
    started.wait(5)
    return gate


def test_waiting_work_of_a_group_runs_as_one_call_up_to_the_limit():
    worker, record = ModelWorker(max_waiting=16), Recorder()
    group = Group("q", record, sized(3))
    gate = blocked(worker)
    futures = [worker.submit_grouped(group, item) for item in "abcde"]
    other = worker.submit(lambda: "alone")
    assert worker.waiting == 6
    gate.set()
    assert [f.result(5) for f in futures] == ["A", "B", "C", "D", "E"] and other.result(5) == "alone"
    assert record.calls == [["a", "b", "c"], ["d", "e"]] and worker.waiting == 0
    worker.stop()


def test_a_request_alone_runs_at_once_and_a_bad_one_fails_alone():
    worker, record = ModelWorker(max_waiting=16), Recorder()
    group = Group("q", record, sized(8))
    assert worker.submit_grouped(group, "x").result(5) == "X" and record.calls == [["x"]]
    gate = blocked(worker)
    futures = [worker.submit_grouped(group, item) for item in ("a", "bad", "c")]
    gate.set()
    assert futures[0].result(5) == "A" and futures[2].result(5) == "C"
    with pytest.raises(ValueError, match="bad item"):
        futures[1].result(5)
    assert record.calls[1:] == [["a", "bad", "c"], ["a"], ["bad"], ["c"]]
    worker.stop()


def test_a_group_out_of_memory_is_split_and_later_groups_stay_smaller():
    calls: list[list[str]] = []

    def run_many(items: list[str]) -> list[str]:
        calls.append(list(items))
        if len(items) > 2:
            raise RuntimeError("CUDA out of memory (simulated)")
        return [item.upper() for item in items]

    worker, sizer = ModelWorker(max_waiting=16), BatchSizer(4, requested=4)
    group = Group("q", run_many, lambda: sizer)
    gate = blocked(worker)
    futures = [worker.submit_grouped(group, item) for item in "abcdef"]
    gate.set()
    assert [f.result(5) for f in futures] == list("ABCDEF")
    assert calls == [list("abcd"), list("ab"), list("cd"), list("ef")] and sizer.size == 2
    worker.stop()


def test_cancelled_and_other_groups_and_batch_work_are_left_out():
    worker, first, second = ModelWorker(max_waiting=16), Recorder(), Recorder()
    one, two = Group("one", first, sized(8)), Group("two", second, sized(8))
    gate = blocked(worker)
    batch = worker.submit(lambda: "tile", priority=BATCH)
    futures = [worker.submit_grouped(one, "a"), worker.submit_grouped(two, "b"), worker.submit_grouped(one, "c")]
    cancelled = worker.submit_grouped(one, "gone")
    assert cancelled.cancel()
    gate.set()
    assert [f.result(5) for f in futures] == ["A", "B", "C"] and batch.result(5) == "tile"
    assert first.calls == [["a", "c"]] and second.calls == [["b"]]
    worker.stop()


class SpyEngine(Engine):
    """The real engine, recording the questions of each batch."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[list[str]] = []

    def infer_batch(self, tiles, question, **kwargs):
        self.batches.append([question] * len(tiles) if isinstance(question, str) else list(question))
        return super().infer_batch(tiles, question, **kwargs)


def test_waiting_questions_share_one_lvlm_batch_and_each_gets_its_own_answer(tmp_path, tiny_lvlm_dir):
    raster = write_raster(tmp_path / "scene.tif", scene(200, 300))
    prompter = QwenPrompter.load(str(tiny_lvlm_dir), device=plan_device("cpu"))
    engine = SpyEngine(prompter, BoxSegmenter())
    settings = ServerSettings(data_roots=(tmp_path,), token_file=tmp_path / "token", batch_size=4)
    words = ["river", "ponds", "airport", "river"]
    with TestClient(create_app(settings, engine, token=TOKEN), base_url="http://127.0.0.1:8765") as client:
        worker = client.app.state.models.worker
        gate = blocked(worker)

        def ask(word: str) -> dict:
            body = {"raster_path": str(raster), "question": question_for(word)}
            reply = client.post("/v1/segment", json=body, headers=AUTH)
            assert reply.status_code == 200, reply.text
            return reply.json()

        with ThreadPoolExecutor(len(words)) as pool:
            replies = [pool.submit(ask, word) for word in words]
            deadline = time.monotonic() + 30
            while worker.waiting < len(words) and time.monotonic() < deadline:
                time.sleep(0.01)
            gate.set()
            replies = [r.result(120) for r in replies]
    assert len(engine.batches) == 1 and sorted(engine.batches[0]) == sorted(question_for(w) for w in words)
    for word, reply in zip(words, replies):
        assert reply["question"] == question_for(word)
        assert (
            len({f["properties"]["instance"] for f in reply["prompts"]["features"]})
            == {"river": 1, "ponds": 2, "airport": 0}[word]
        )
