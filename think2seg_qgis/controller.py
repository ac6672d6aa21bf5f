"""Runs a question, the class list, or a re-segmentation from the dock and reports in it and the
message bar."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from qgis.core import Qgis, QgsUnitTypes
from qgis.gui import QgsMapCanvas
from qgis.PyQt.QtGui import QTextCursor

from .backend import Backend
from .classes import ClassError, class_counts, class_reasoning, is_classes_reply, overlap_note, run_question
from .dock import Think2SegDock
from .errors import Think2SegError
from .log import guard_slot
from .notify import Notifier
from .prompts import PromptSet
from .segment_run import SegmentRun
from .tile import RENDER, TilePlan
from .wording import area_text, plural

NOT_YET = ("starting", "loading")


def resolution_note(plan: TilePlan, reply: dict) -> str:
    """At which resolution the tile was segmented, and why when it is not the raster's own."""
    transform = (reply.get("window") or {}).get("transform") or []
    used = math.hypot(transform[0], transform[3]) if len(transform) >= 4 else 0.0
    unit = QgsUnitTypes.toAbbreviatedString(plan.crs.mapUnits())
    if plan.mode == RENDER or plan.window is None:
        if plan.note:  # e.g. "fetched at 0.50 m/px from the XYZ service"
            return plan.note
        return (
            f"rendered from the map at {used:.3g} {unit} per pixel (this layer has no pixels of its own to "
            "send: zoom in for finer detail)"
        )
    native = plan.window.pixel_size[0]
    note = f"; {plan.note}" if plan.note else ""
    if used <= 0 or abs(used - native) <= 1e-6 * native:
        return f"at the raster's own resolution ({native:.3g} {unit}){note}"
    return (
        f"decimated to {used:.3g} {unit} per pixel from the raster's {native:.3g} {unit}: the view is larger "
        f"than the largest tile side in Settings; zoom in for full resolution{note}"
    )


class RunController:
    """One run at a time: Enter or Run while a run is in flight is refused with a message.

    ``on_reply(reply, plan, prompt_set, summary)`` gets the reply, the plan of the request it
    answers, the re-segment's prompts (None for a question) and the result line.
    """

    def __init__(
        self,
        dock: Think2SegDock,
        run: SegmentRun,
        backend: Backend,
        canvas: QgsMapCanvas,
        notifier: Notifier,
        on_reply: Callable[[dict, TilePlan, PromptSet | None, str], None],
    ) -> None:
        self.dock, self.segment, self.backend, self.canvas = dock, run, backend, canvas
        self.notify, self.on_reply = notifier, on_reply
        self.started = 0.0
        self._prompts: PromptSet | None = None
        run.reasoning.connect(self._reasoning)
        run.finished.connect(self._finished)
        run.failed.connect(self._failed)
        dock.cancel_button.clicked.connect(self.cancel)

    @guard_slot
    def ask(self) -> None:
        """Ask the question, or the class list when the panel's “Several classes” is ticked."""
        if self.dock.classes_on():
            self._ask_classes()
            return
        question = self.dock.question_text()
        if not question:
            self.notify.say("type a question first, e.g. “segment the river”", Qgis.MessageLevel.Warning)
            return
        if self._start(question=question):
            self.dock.settings.remember(question)
            self.dock.reload_history()

    def _ask_classes(self) -> None:
        classes = self.checked_classes()
        if classes and self._start(classes=classes):
            self.dock.reasoning.setPlainText(
                f"Asking {plural(len(classes), 'class', 'classes')}: {', '.join(classes)}. "
                "Each one's reasoning appears here once all are answered."
            )

    def checked_classes(self) -> dict[str, str]:
        """The panel's class list as a request's ``classes`` (name -> question, in the rows' order);
        {} after telling the user what to change when it cannot be sent or is empty."""
        try:
            classes = self.dock.class_list.classes()
        except ClassError as exc:
            self.notify.say(str(exc), Qgis.MessageLevel.Warning)
            return {}
        if not classes:
            self.notify.say(
                "the class list is empty: add a class (a name and what to segment, e.g. buildings: “segment the "
                "buildings”), or untick “Several classes” to ask the question",
                Qgis.MessageLevel.Warning,
            )
        return classes

    def resegment(self, prompt_set: PromptSet) -> None:
        if not prompt_set.prompts:
            self.notify.say(
                "no prompts to re-segment: run a question first, draw a box or points, or tick an instance "
                "in the Think2Seg panel",
                Qgis.MessageLevel.Warning,
            )
            return
        if self._start(prompts=prompt_set.prompts):
            self._prompts = prompt_set

    @guard_slot
    def cancel(self) -> None:
        if not self.segment.busy():
            return
        self.segment.cancel()
        self._prompts = None
        self.dock.set_running(False)
        self.dock.result.setText("Cancelled: nothing was added.")

    def close(self) -> None:
        """Abort the run in flight and stop listening (the plugin unloads; the dock goes away)."""
        self.segment.cancel()
        self._prompts = None
        for signal, slot in (
            (self.segment.reasoning, self._reasoning),
            (self.segment.finished, self._finished),
            (self.segment.failed, self._failed),
        ):
            signal.disconnect(slot)

    def _start(self, **what: object) -> bool:
        if self.segment.busy():
            self.notify.say("a run is already in progress: wait for it to finish, or press Cancel")
            return False
        if self.backend.status in NOT_YET:
            self.notify.say(
                f"the backend is still {self.backend.status} ({self.backend.message}): ask again when the "
                "Think2Seg panel says “Backend ready”"
            )
            return False
        try:
            self.segment.start(self.canvas, self.dock.layer(), **what)
        except Think2SegError as exc:
            self.notify.say(str(exc), Qgis.MessageLevel.Warning)
            return False
        self.dock.reasoning.clear()
        self.started = time.monotonic()
        self.dock.set_running(True)
        self.dock.result.setText("Working…")
        return True

    @guard_slot
    def _reasoning(self, text: str) -> None:
        self.dock.reasoning.moveCursor(QTextCursor.MoveOperation.End)
        self.dock.reasoning.insertPlainText(text)

    @guard_slot
    def _finished(self, reply: dict, plan: TilePlan) -> None:
        prompts, self._prompts = self._prompts, None
        self.dock.set_running(False)
        status = reply.get("status", "")
        if is_classes_reply(reply):
            reply = {**reply, "question": run_question(reply)}  # several classes have no question of their own
            self.dock.reasoning.setPlainText(f"{class_reasoning(reply)}\n\n→ {_prompts_line(reply)}")
            unreadable = [entry.get("name", "") for entry in reply["classes"] if entry.get("status") == "unparseable"]
            if unreadable:
                self.notify.say(
                    f"the model's answer for {', '.join(unreadable)} could not be read; its text is in the "
                    "Think2Seg panel"
                )
        elif status != "unparseable" and reply.get("reasoning"):  # the streamed raw text ends tidied up
            self.dock.reasoning.setPlainText(f"{reply['reasoning']}\n\n→ {_prompts_line(reply)}")
        elif status == "unparseable":
            self.notify.say("the model's answer could not be read; its text is in the Think2Seg panel")
        summary = self.summary(reply, plan, prompts)
        self.dock.result.setText(summary)
        self.on_reply(reply, plan, prompts, summary)

    def summary(self, reply: dict, plan: TilePlan, prompts: PromptSet | None) -> str:
        """The result line: what was asked, what came back, how long it took, at which resolution."""
        count = len(reply.get("features", []))
        label = f"“{reply.get('question', '')}”"
        several = is_classes_reply(reply)
        if prompts is not None:
            label = f"re-segment of “{prompts.question}”" if prompts.question else "re-segment"
        elif several:
            names = [str(entry.get("name", "")) for entry in reply.get("classes", [])]
            label = f"{plural(len(names), 'class', 'classes')} ({', '.join(names)})"
        found = (
            f"{plural(count, 'polygon')}, {area_text(reply.get('total_area_m2') or 0.0)}" if count else "no polygons"
        )
        if several:
            found += f" ({class_counts(reply)})"
        overlaps = overlap_note(reply)
        seconds = time.monotonic() - self.started
        line = f"{label} — {reply.get('status', '')}: {found} in {seconds:.1f} s"
        return f"{line}; {overlaps + '; ' if overlaps else ''}{resolution_note(plan, reply)}"

    @guard_slot
    def _failed(self, error: Think2SegError) -> None:
        self._prompts = None
        self.dock.set_running(False)
        self.dock.result.setText(f"Failed: {error}")
        self.notify.say(str(error), Qgis.MessageLevel.Critical)


def _prompts_line(reply: dict) -> str:
    features = reply.get("prompts", {}).get("features", [])
    if not features:
        return "no prompts: the model found no target here"
    instances = len({(f["properties"].get("class"), f["properties"].get("instance")) for f in features})
    return f"{plural(instances, 'instance')} (boxes and points) on the map"
