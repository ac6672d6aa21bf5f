"""The backend as the dock sees it: a status (offline, starting, loading, ready, error) kept fresh by
health polls, and optionally a `think2seg serve` process this plugin started and will stop.

A backend started here serves this user's QGIS alone (on 127.0.0.1, with the user's token file),
so it is started with ``--any-path``: it reads rasters and writes batch outputs in any folder,
temporary ones included, unless the extra options in Settings restrict it with ``--data-root``.
"""

from __future__ import annotations

import os
import re
import shlex
import time

from qgis.PyQt.QtCore import QObject, QProcess, QTimer, pyqtSignal

from .api.client import ApiCall, AsyncClient
from .api.errors import ApiError
from .log import guard_slot, logger
from .settings import Settings

HEALTH_LINE = re.compile(r'"GET /v1/health HTTP/[\d.]+" 200')
POLL_MS = 3000
STARTING_POLL_MS = 500
LOG_LINES = 2000


class Backend(QObject):
    """Watches the backend's health; starts and stops a local `think2seg serve` on request."""

    statusChanged = pyqtSignal(str, str)  # status, message
    logged = pyqtSignal(str)  # a line the backend started here wrote

    def __init__(self, settings: Settings, client: AsyncClient) -> None:
        super().__init__()
        self.settings, self.client = settings, client
        self.status, self.message, self.health = "offline", "not checked yet", {}
        self.process: QProcess | None = None
        self.log_lines: list[str] = []
        self._started_at = 0.0
        self._stopping = False
        self._call: ApiCall | None = None
        self._call_url = ""
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
        self._call, self._call_url = self.client.get("/v1/health"), self.settings.backend_url
        self._call.finished.connect(self._healthy)
        self._call.failed.connect(self._unreachable)

    def _stale(self) -> bool:
        """Whether the health reply in hand is for a URL the settings no longer name (then ask again)."""
        self._call = None
        if self._call_url == self.settings.backend_url:
            return False
        self.check()
        return True

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
        try:
            arguments = self.serve_arguments()
        except ValueError as exc:
            return f"the extra backend options in Settings cannot be read ({exc}): check their quotes"
        self.process = QProcess(self)
        self.process.setProcessChannelMode(QProcess.ProcessChannelMode.MergedChannels)
        self.process.readyReadStandardOutput.connect(self._read_output)
        self.process.finished.connect(self._exited)
        self.process.errorOccurred.connect(self._process_error)
        self._started_at, self._stopping = time.monotonic(), False
        self.process.start(executable, arguments)
        self._set("starting", f"starting {executable}")
        self._timer.start(STARTING_POLL_MS)
        return ""

    def serve_arguments(self) -> list[str]:
        """`think2seg serve`'s arguments for a backend started here; raises ValueError for bad quotes.

        The prompter folder in Settings becomes ``--lvlm FOLDER`` unless the extra options name an
        ``--lvlm`` themselves (they win, so it is never given twice)."""
        port = self.settings.backend_url.rsplit(":", 1)[-1].split("/")[0]
        arguments = ["serve", "--host", "127.0.0.1", "--port", port if port.isdigit() else "8765"]
        arguments += ["--token-file", self.settings.token_file]
        extra = split_arguments(self.settings.backend_arguments, windows=os.name == "nt")
        lvlm = self.settings.backend_lvlm
        if lvlm and not any(a == "--lvlm" or a.startswith("--lvlm=") for a in extra):
            arguments += ["--lvlm", lvlm]
        return arguments + (extra if "--data-root" in extra else ["--any-path", *extra])

    def stop(self) -> None:
        """Ask the backend this plugin started to stop (SIGTERM: running jobs stay resumable)."""
        if self.owns_process():
            self._stopping = True
            self.process.terminate()

    def stop_and_wait(self, timeout_ms: int = 15000) -> None:
        """Stop it and wait (QGIS is closing, or it restarts); kill it if it does not stop in time."""
        if not self.owns_process():
            return
        self._stopping = True
        self.process.terminate()
        if not self.process.waitForFinished(timeout_ms):
            self.process.kill()
            self.process.waitForFinished(2000)

    def restart(self) -> str:
        """Stop the backend started here and start it again with the current settings."""
        self.stop_and_wait()
        return self.start()

    def owns_process(self) -> bool:
        return self.process is not None and self.process.state() != QProcess.ProcessState.NotRunning

    def describe(self) -> str:
        """Which device and models the backend runs, from its health reply ('' before it answered)."""
        health = self.health
        if not health:
            return ""
        gpu = (health.get("gpu") or {}).get("name")
        device = f"{health.get('device', '?')}" + (f" ({gpu})" if gpu else "")
        models = health.get("models") or {}
        names = " + ".join(str(models[k]).rstrip("/").rsplit("/", 1)[-1] for k in ("lvlm", "segmenter") if k in models)
        return f"{device} · {names} · think2seg {health.get('version', '?')}"

    @guard_slot
    def _healthy(self, health: dict) -> None:
        if self._stale():
            return
        self.health = health
        self._set(str(health.get("status", "error")), str(health.get("message", "")))
        if self.status == "ready":
            self._timer.start(POLL_MS)

    @guard_slot
    def _unreachable(self, error: ApiError) -> None:
        if self._stale():
            return
        self.health = {}
        if self.status == "starting" and time.monotonic() - self._started_at < self.settings.start_timeout_s:
            return
        if self.status == "starting":
            self._set("error", f"the backend did not answer within {self.settings.start_timeout_s} s: see its log")
            return
        self._set("offline", error.message)

    @guard_slot
    def _read_output(self) -> None:
        self.add_log(bytes(self.process.readAllStandardOutput()).decode("utf-8", errors="replace"))

    def add_log(self, text: str) -> None:
        """Keep what the backend wrote (but its health checks) and pass each line on to ``logged``."""
        lines = [line for line in text.splitlines() if not HEALTH_LINE.search(line)]
        self.log_lines.extend(lines)
        del self.log_lines[:-LOG_LINES]
        for line in lines:
            self.logged.emit(line)

    @guard_slot
    def _exited(self, exit_code: int, _status: object) -> None:
        self.health = {}
        if self._stopping:
            logger().info("the backend started from QGIS stopped")
            self._set("offline", "stopped; press Start to start it again")
            return
        logger().warning("the backend started from QGIS exited unexpectedly with code %s", exit_code)
        self._set("error", f"the backend exited unexpectedly (code {exit_code}): see Log for why, then press Start")

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


def split_arguments(text: str, *, windows: bool) -> list[str]:
    """Command-line options as a shell would split them: POSIX rules, or on Windows double quotes
    that group (and are removed) while backslashes stay literal, so ``--lvlm "C:\\My Models\\x"``
    is two arguments. Raises ValueError for an unclosed quote."""
    if not windows:
        return shlex.split(text)
    arguments, current, quoted, started = [], [], False, False
    for char in text:
        if char == '"':
            quoted, started = not quoted, True
        elif char.isspace() and not quoted:
            if started:
                arguments.append("".join(current))
            current, started = [], False
        else:
            current.append(char)
            started = True
    if quoted:
        raise ValueError("a double quote is not closed")
    if started:
        arguments.append("".join(current))
    return arguments
