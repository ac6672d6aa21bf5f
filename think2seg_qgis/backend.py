"""The backend as the dock sees it: a status (offline, starting, loading, ready, error) kept fresh by
health polls, and optionally a `think2seg serve` process this plugin started and will stop."""

from __future__ import annotations

import os
import shlex
import time

from qgis.PyQt.QtCore import QObject, QProcess, QTimer, pyqtSignal

from .api.client import ApiCall, AsyncClient
from .api.errors import ApiError
from .log import guard_slot, logger
from .settings import Settings

POLL_MS = 3000
STARTING_POLL_MS = 500
LOG_LINES = 2000


class Backend(QObject):
    """Watches the backend's health; starts and stops a local `think2seg serve` on request."""

    statusChanged = pyqtSignal(str, str)  # status, message

    def __init__(self, settings: Settings, client: AsyncClient) -> None:
        super().__init__()
        self.settings, self.client = settings, client
        self.status, self.message, self.health = "offline", "not checked yet", {}
        self.process: QProcess | None = None
        self.log_lines: list[str] = []
        self._started_at = 0.0
        self._call: ApiCall | None = None
        self._timer = QTimer(self)
        self._timer.timeout.connect(self.check)

    def watch(self) -> None:
        """Poll health now and every few seconds."""
        self.check()
        self._timer.start(POLL_MS)

    def unwatch(self) -> None:
        """Stop polling (a health check in flight still ends, harmlessly: it only updates ``status``)."""
        self._timer.stop()

    @guard_slot
    def check(self) -> None:
        if self._call is not None:
            return
        self._call = self.client.get("/v1/health")
        self._call.finished.connect(self._healthy)
        self._call.failed.connect(self._unreachable)

    def start(self) -> str:
        """Launch `think2seg serve` on the URL's port; returns '' or why it cannot start."""
        executable = self.settings.backend_executable
        if not executable:
            return (
                "set the backend executable in Think2Seg settings: the `think2seg` command of the backend's "
                "virtual environment, e.g. /path/to/think2seg/.venv/bin/think2seg"
            )
        if not self.settings.backend_is_local():
            return f"the backend URL {self.settings.backend_url} is not on this machine: start it there"
        if self.process is not None and self.process.state() != QProcess.ProcessState.NotRunning:
            return "the backend is already running"
        port = self.settings.backend_url.rsplit(":", 1)[-1].split("/")[0]
        arguments = ["serve", "--host", "127.0.0.1", "--port", port if port.isdigit() else "8765"]
        arguments += ["--token-file", self.settings.token_file]
        try:
            arguments += shlex.split(self.settings.backend_arguments, posix=os.name != "nt")
        except ValueError as exc:
            return f"the extra backend options in settings cannot be read ({exc}): check their quotes"
        self.process = QProcess(self)
        self.process.setProcessChannelMode(QProcess.ProcessChannelMode.MergedChannels)
        self.process.readyReadStandardOutput.connect(self._read_output)
        self.process.finished.connect(self._exited)
        self.process.errorOccurred.connect(self._process_error)
        self._started_at = time.monotonic()
        self.process.start(executable, arguments)
        self._set("starting", f"starting {executable}")
        self._timer.start(STARTING_POLL_MS)
        return ""

    def stop(self) -> None:
        """Ask the backend this plugin started to stop (SIGTERM: running jobs stay resumable)."""
        if self.owns_process():
            self.process.terminate()

    def stop_and_wait(self, timeout_ms: int = 15000) -> None:
        """Stop it and wait (QGIS is closing); kill it if it does not stop in time."""
        if not self.owns_process():
            return
        self.process.terminate()
        if not self.process.waitForFinished(timeout_ms):
            self.process.kill()
            self.process.waitForFinished(2000)

    def owns_process(self) -> bool:
        return self.process is not None and self.process.state() != QProcess.ProcessState.NotRunning

    @guard_slot
    def _healthy(self, health: dict) -> None:
        self._call, self.health = None, health
        self._set(str(health.get("status", "error")), str(health.get("message", "")))
        if self.status == "ready":
            self._timer.start(POLL_MS)

    @guard_slot
    def _unreachable(self, error: ApiError) -> None:
        self._call = None
        if self.status == "starting" and time.monotonic() - self._started_at < self.settings.start_timeout_s:
            return
        if self.status == "starting":
            self._set("error", f"the backend did not answer within {self.settings.start_timeout_s} s: see its log")
            return
        self._set("offline", error.message)

    @guard_slot
    def _read_output(self) -> None:
        text = bytes(self.process.readAllStandardOutput()).decode("utf-8", errors="replace")
        self.log_lines.extend(text.splitlines())
        del self.log_lines[:-LOG_LINES]

    @guard_slot
    def _exited(self, exit_code: int, _status: object) -> None:
        logger().info("the backend exited with code %s", exit_code)
        self._set("offline", f"the backend stopped (exit code {exit_code}); its log is under Log")

    @guard_slot
    def _process_error(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self._set(
                "error", f"cannot run {self.settings.backend_executable}: check the backend executable in settings"
            )

    def _set(self, status: str, message: str) -> None:
        if (status, message) != (self.status, self.message):
            self.status, self.message = status, message
            self.statusChanged.emit(status, message)
