"""The run core every driver shares: one output policy over both stores, one way through the models."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_batch import OPTIONS_KW, engine, write_scene
from test_eval import Oracle, earthreason

from think2seg.batch.options import BatchOptions
from think2seg.batch.runner import run_batch
from think2seg.errors import InputError, OutputExistsError
from think2seg.eval.datasets import load_samples
from think2seg.eval.runner import EvalParams, evaluate
from think2seg.runs.microbatch import BatchSizer
from think2seg.runs.policy import CLI_TERMS, HTTP_TERMS, Continuation, Opened, open_run
from think2seg.runs.push import batches, push
from think2seg.runs.states import RETRY_STATUSES, TileStatus

# --- the policy, on a store in memory ---------------------------------------------------------------------


class MemoryStore:
    """A RunStore in memory: ``held`` are the stored parameters (None: nothing there)."""

    def __init__(self, held: dict | None, *, complete: bool = True) -> None:
        self.where, self.held, self.is_complete, self.calls = Path("/out/run"), held, complete, []

    def exists(self) -> bool:
        return self.held is not None

    def stored_params(self, policy: Continuation) -> dict | None:
        return self.held

    def complete(self) -> bool:
        return self.is_complete

    def remove(self) -> None:
        self.calls.append("remove")

    def create(self) -> None:
        self.calls.append("create")

    def clean(self, *, retry_failed: bool) -> None:
        self.calls.append(f"clean retry_failed={retry_failed}")


PARAMS = {"question": "river", "tile_size_px": 256}


@pytest.mark.parametrize(
    ("held", "policy", "opened", "calls"),
    [
        (None, Continuation(), Opened.NEW, ["remove", "create"]),
        (None, Continuation(resume=True), Opened.NEW, ["remove", "create"]),
        (PARAMS, Continuation(resume=True), Opened.CONTINUED, ["clean retry_failed=False"]),
        (PARAMS, Continuation(retry_failed=True), Opened.CONTINUED, ["clean retry_failed=True"]),
        (PARAMS, Continuation(overwrite=True), Opened.NEW, ["remove", "create"]),
        (PARAMS, Continuation(resume=True, overwrite=True), Opened.NEW, ["remove", "create"]),
        ({**PARAMS, "tile_size_px": 512}, Continuation(overwrite=True), Opened.NEW, ["remove", "create"]),
    ],
)
def test_the_policy_starts_continues_or_replaces(held, policy, opened, calls):
    store = MemoryStore(held)
    assert open_run(store, PARAMS, policy) is opened and store.calls == calls


def test_a_store_killed_while_being_set_up_starts_again():
    store = MemoryStore(PARAMS, complete=False)
    assert open_run(store, PARAMS, Continuation(resume=True)) is Opened.NEW and store.calls == ["remove", "create"]


@pytest.mark.parametrize(
    ("terms", "resume", "overwrite"),
    [(CLI_TERMS, "--resume", "--overwrite"), (HTTP_TERMS, "resume=true", "overwrite=true")],
)
def test_refusals_touch_nothing_and_say_what_to_do_in_the_clients_terms(terms, resume, overwrite):
    store = MemoryStore(PARAMS)
    with pytest.raises(OutputExistsError, match=f"already exists: .*{resume} to continue .*{overwrite} to start again"):
        open_run(store, PARAMS, Continuation(terms=terms))
    with pytest.raises(InputError, match=rf"other parameters \(tile_size_px: 256 -> 512\).*{overwrite} to start again"):
        open_run(store, {**PARAMS, "tile_size_px": 512}, Continuation(resume=True, terms=terms))
    assert store.calls == []


# --- the policy, on both real stores -------------------------------------------------------------------------


def test_the_batch_output_and_the_eval_cache_follow_the_same_policy(tmp_path):
    raster, _mask = write_scene(tmp_path / "scene.tif")
    output = tmp_path / "out.gpkg"
    run_batch(raster, "segment the field", output, models=engine(), options=BatchOptions(**OPTIONS_KW))
    samples = load_samples("earthreason", earthreason(tmp_path / "er", count=2), "test")
    report = tmp_path / "report.json"
    params = EvalParams("earthreason", "er", "test", "native", 0, None, "oracle")
    evaluate(samples, Oracle(), report, params)
    batch_kw = {"models": engine(), "options": BatchOptions(**OPTIONS_KW)}
    refusals = []
    for again in (
        lambda: run_batch(raster, "segment the field", output, **batch_kw),
        lambda: evaluate(samples, Oracle(), report, params),
    ):
        with pytest.raises(OutputExistsError) as refused:
            again()
        refusals.append(str(refused.value).split(": ", 1)[1])
    assert (
        refusals[0]
        == refusals[1]
        == ("pass --resume to continue the run in it, pass --overwrite to start again, or choose another name")
    )
    with pytest.raises(InputError, match=r"other parameters \(question: .*resume with the same options"):
        run_batch(raster, "segment the road", output, models=engine(), options=BatchOptions(**OPTIONS_KW, resume=True))
    changed = EvalParams("earthreason", "er", "test", "paper", 0, None, "oracle")
    with pytest.raises(InputError, match=r"other parameters \(protocol: .*resume with the same options"):
        evaluate(samples, Oracle(), report, changed, resume=True)


# --- through the models ----------------------------------------------------------------------------------


class Model:
    """Answers ``item * 10``; raises on 13; runs out of memory with more than ``fits`` items at once."""

    def __init__(self, fits: int = 99) -> None:
        self.fits, self.calls = fits, []

    def __call__(self, items: list[int]) -> list[int]:
        self.calls.append(list(items))
        if len(items) > self.fits:
            raise RuntimeError("CUDA out of memory (simulated)")
        if 13 in items:
            raise ValueError(f"cannot take {13}")
        return [item * 10 for item in items]


def test_a_failing_item_fails_alone_with_its_message():
    model = Model()
    outcomes = push([1, 13, 3], model, BatchSizer(3, requested=3))
    assert [o.result for o in outcomes] == [10, None, 30] and [o.failed for o in outcomes] == [False, True, False]
    assert outcomes[1].message == "ValueError: cannot take 13" and isinstance(outcomes[1].error, ValueError)
    assert model.calls == [[1, 13, 3], [1], [13], [3]]


def test_out_of_memory_splits_and_the_size_stays_smaller_and_one_item_out_of_memory_fails_alone():
    model, sizer = Model(fits=2), BatchSizer(8, requested=8)
    outcomes = push(list(range(5)), model, sizer)
    assert [o.result for o in outcomes] == [0, 10, 20, 30, 40] and sizer.size == 2 and sizer.shrinks == 1
    assert [len(b) for b in batches(range(5), sizer)] == [2, 2, 1]
    (alone,) = push([1], Model(fits=0), BatchSizer(1, requested=1))
    assert alone.failed and "out of memory" in alone.message


def test_interrupts_are_never_swallowed():
    def interrupted(items: list[int]) -> list[int]:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        push([1, 2], interrupted, BatchSizer(2, requested=2))


def test_states_of_tiles():
    assert RETRY_STATUSES == ("unparseable", "failed")
    assert not TileStatus.NO_DATA.was_processed and TileStatus.UNPARSEABLE.is_failure
