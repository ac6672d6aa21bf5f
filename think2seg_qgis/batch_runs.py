"""The batch jobs the plugin runs: starts them (from the Batch… dialog or a Resume button), shows
their progress in the panel, and when each ends loads its layers (a job with classes coloured by
class) and says how it went."""

from __future__ import annotations

from collections.abc import Callable

from qgis.core import Qgis, QgsApplication, QgsProject

from .batch_dialog import BatchChoice
from .batch_layers import forget_output, group_name, load_output
from .errors import Think2SegError
from .jobs import BatchJobTask, end_text, job_request, job_title, progress_text
from .log import guard_slot, logger
from .notify import Notifier
from .settings import Settings
from .tile import crs_text

Level = Qgis.MessageLevel


class BatchJobs:
    """The running batch tasks; ``show(text)`` puts their progress lines in the panel."""

    def __init__(
        self, settings: Settings, project: QgsProject, notify: Notifier, *, show: Callable[[str], None]
    ) -> None:
        self.settings, self.project, self.notify, self.show = settings, project, notify, show
        self.tasks: list[BatchJobTask] = []
        self.closed = False

    def run(self, choice: BatchChoice) -> BatchJobTask:
        """Start the job the Batch… dialog describes (an Overwrite first removes the old layers)."""
        request = job_request(
            choice.raster_path,
            choice.output_path,
            choice.question,
            tile_size_px=choice.tile_size_px,
            overlap_px=choice.overlap_px,
            resume=choice.resume,
            overwrite=choice.overwrite,
            retry_failed=choice.retry_failed,
            bounds=choice.bounds,
            bounds_crs=crs_text(choice.layer.crs()) if choice.bounds else None,
            aoi_path=choice.aoi_path,
            workers=choice.workers,
            classes=choice.classes,
            settings=self.settings,
        )
        if choice.overwrite:
            forget_output(self.project, choice.output_path)  # no stale copy, and the file is not held open
        return self.start(request)

    def start(self, request: dict) -> BatchJobTask:
        task = BatchJobTask(self.settings, request, lambda status, error: self._done(task, status, error))
        task.statusUpdated.connect(lambda _status: self._show())
        self.tasks.append(task)
        QgsApplication.taskManager().addTask(task)
        self._show()
        return task

    def close(self) -> None:
        """Cancel every task (the plugin unloads); later ends are only logged."""
        self.closed = True
        for task in list(self.tasks):
            task.cancel()

    def _show(self) -> None:
        lines = [
            f"Batch “{job_title(task.request)}”: {progress_text(task.last_status)}"
            for task in self.tasks
            if task.last_status is not None
        ]
        self.show("\n".join(lines))

    @guard_slot
    def _done(self, task: BatchJobTask, status: dict | None, error: str) -> None:
        if task in self.tasks:
            self.tasks.remove(task)
        if self.closed:
            logger().info("a batch job ended after the plugin was unloaded: %s", error or (status or {}).get("state"))
            return
        self._show()
        if error or status is None:
            self.notify.say(f"Batch “{job_title(task.request)}” failed: {error}", Level.Critical)
            return
        loaded = self._load(status)
        level = {"done": Level.Success, "cancelled": Level.Info}.get(status["state"], Level.Warning)
        actions = [("Resume", lambda: self.start({**task.request, "resume": True, "overwrite": False}))]
        text = end_text(status) + (f"; its layers are in the group Think2Seg › {loaded}" if loaded else "")
        self.notify.say(text, level, actions=actions if status["state"] == "cancelled" else ())

    def _load(self, status: dict) -> str:
        """Load a job's output layers; returns their group name ('' when there is nothing to show yet)."""
        if status["state"] not in ("done", "cancelled"):
            return ""
        title = job_title(status)
        try:
            load_output(self.project, status["output_path"], title, classes=status.get("classes"))
        except Think2SegError as exc:
            if status["state"] == "done":
                self.notify.say(str(exc), Level.Warning)
            return ""
        return group_name(title, status["output_path"])
