"""Calls to the think2seg HTTP API.

:class:`AsyncClient` is for the GUI thread: QNetworkAccessManager, never blocking, results by
signal (and the reasoning as it streams). :class:`BlockingClient` is for task threads (QgsTask,
Processing): QgsBlockingNetworkRequest, which must never run on the GUI thread.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from qgis.core import QgsBlockingNetworkRequest, QgsNetworkAccessManager
from qgis.PyQt.QtCore import QByteArray, QObject, QUrl, pyqtSignal
from qgis.PyQt.QtNetwork import QHttpMultiPart, QHttpPart, QNetworkReply, QNetworkRequest

from ..log import guard_slot
from ..settings import Settings
from .errors import ApiError, from_reply, offline, timed_out
from .sse import SseParser

_CONNECTION_ERRORS = {
    QNetworkReply.NetworkError.ConnectionRefusedError,
    QNetworkReply.NetworkError.HostNotFoundError,
    QNetworkReply.NetworkError.RemoteHostClosedError,
    QNetworkReply.NetworkError.TimeoutError,  # connecting timed out: the host does not answer at all
}
# Qt ends a transfer that stays silent longer than the transfer timeout (ours, or QGIS's network
# timeout, whichever is shorter) with OperationCanceledError; a call we abort ourselves is flagged.
_TRANSFER_TIMEOUT = QNetworkReply.NetworkError.OperationCanceledError


def effective_timeout_s(settings: Settings) -> int:
    """The silence after which a request is given up: the plugin's timeout, capped by QGIS's own."""
    qgis_s = QgsNetworkAccessManager.timeout() // 1000
    return min(settings.request_timeout_s, qgis_s) if qgis_s > 0 else settings.request_timeout_s


def _request(settings: Settings, path: str, *, accept: str = "application/json") -> QNetworkRequest:
    request = QNetworkRequest(QUrl(settings.backend_url + path))
    request.setRawHeader(b"Authorization", f"Bearer {settings.token()}".encode())
    request.setRawHeader(b"Accept", accept.encode())
    request.setTransferTimeout(settings.request_timeout_s * 1000)
    return request


class ApiCall(QObject):
    """One request in flight. ``finished`` carries the reply's JSON; ``failed`` an :class:`ApiError`;
    ``ended`` comes last in every case, aborted calls included."""

    reasoning = pyqtSignal(str)
    finished = pyqtSignal(dict)
    failed = pyqtSignal(object)
    ended = pyqtSignal()

    def __init__(self, reply: QNetworkReply, url: str, *, stream: bool, timeout_s: int) -> None:
        super().__init__()
        self._reply, self._url, self._stream, self._timeout_s = reply, url, stream, timeout_s
        self._parser, self._done, self._aborted, self._ended = SseParser(), False, False, False
        reply.readyRead.connect(self._read)
        reply.finished.connect(self._finish)

    def abort(self) -> None:
        """Stop the call; it emits neither ``finished`` nor ``failed`` afterwards."""
        if self._ended:
            return
        self._aborted = True
        if not self._reply.isFinished():  # a finished reply only waits for _finish, which now drops it
            self._reply.abort()

    @guard_slot
    def _read(self) -> None:
        if not self._stream:
            return
        status = self._reply.attribute(QNetworkRequest.Attribute.HttpStatusCodeAttribute) or 0
        if status != 200:
            return
        for name, data in self._parser.feed(bytes(self._reply.readAll())):
            if name == "reasoning":
                self.reasoning.emit(str(data.get("text", "")))
            elif name == "result":
                self._succeed(data)
            elif name == "error":
                error = data.get("error", {})
                self._fail(ApiError(str(error.get("code", "error")), str(error.get("message", "the backend failed"))))

    @guard_slot
    def _finish(self) -> None:
        try:
            if not (self._done or self._aborted):
                self._conclude()
        finally:
            self._ended = True
            self._reply.deleteLater()
            self.ended.emit()

    def _conclude(self) -> None:
        error = self._reply.error()
        status = int(self._reply.attribute(QNetworkRequest.Attribute.HttpStatusCodeAttribute) or 0)
        if error == _TRANSFER_TIMEOUT:
            self._fail(timed_out(self._url, self._timeout_s))
        elif status == 0 and error in _CONNECTION_ERRORS:
            self._fail(offline(self._url, self._reply.errorString()))
        elif status >= 400 or (status == 0 and error != QNetworkReply.NetworkError.NoError):
            self._fail(from_reply(status, bytes(self._reply.readAll()), self._url))
        elif self._stream:
            self._read()
            if not self._done:
                self._fail(ApiError("network", "the backend closed the stream before the result"))
        else:
            try:
                self._succeed(json.loads(bytes(self._reply.readAll()).decode("utf-8")))
            except ValueError:
                self._fail(ApiError("network", f"the backend at {self._url} sent a reply that is not JSON"))

    def _succeed(self, body: dict) -> None:
        if not self._done:
            self._done = True
            self.finished.emit(body)

    def _fail(self, error: ApiError) -> None:
        if not self._done:
            self._done = True
            self.failed.emit(error)


class AsyncClient:
    """Non-blocking calls from the GUI thread; keeps each call alive until it ends."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._calls: set[ApiCall] = set()

    def get(self, path: str) -> ApiCall:
        request = _request(self.settings, path)
        return self._track(QgsNetworkAccessManager.instance().get(request), stream=False)

    def post_json(self, path: str, body: dict, *, stream: bool = False) -> ApiCall:
        request = _request(self.settings, path, accept="text/event-stream" if stream else "application/json")
        request.setHeader(QNetworkRequest.KnownHeaders.ContentTypeHeader, "application/json")
        data = QByteArray(json.dumps(body).encode())
        return self._track(QgsNetworkAccessManager.instance().post(request, data), stream=stream)

    def post_upload(self, path: str, image: bytes, filename: str, meta: dict, *, stream: bool = False) -> ApiCall:
        multipart = QHttpMultiPart(QHttpMultiPart.ContentType.FormDataType)
        multipart.append(
            _part('form-data; name="file"; filename="' + filename + '"', image, "application/octet-stream")
        )
        multipart.append(_part('form-data; name="request"', json.dumps(meta).encode(), "application/json"))
        request = _request(self.settings, path, accept="text/event-stream" if stream else "application/json")
        reply = QgsNetworkAccessManager.instance().post(request, multipart)
        multipart.setParent(reply)  # freed with the reply
        return self._track(reply, stream=stream)

    def _track(self, reply: QNetworkReply, *, stream: bool) -> ApiCall:
        call = ApiCall(reply, self.settings.backend_url, stream=stream, timeout_s=effective_timeout_s(self.settings))
        self._calls.add(call)
        call.ended.connect(lambda: self._calls.discard(call))
        return call


def _part(disposition: str, body: bytes, content_type: str) -> QHttpPart:
    part = QHttpPart()
    part.setHeader(QNetworkRequest.KnownHeaders.ContentDispositionHeader, disposition)
    part.setHeader(QNetworkRequest.KnownHeaders.ContentTypeHeader, content_type)
    part.setBody(QByteArray(body))
    return part


class BlockingClient:
    """Blocking calls for worker threads (QgsTask.run, Processing algorithms), never the GUI thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def get(self, path: str) -> dict:
        return self._call(lambda request, blocking: blocking.get(request, True), path)

    def delete(self, path: str) -> dict:
        return self._call(lambda request, blocking: blocking.deleteResource(request), path)

    def post_json(self, path: str, body: dict) -> dict:
        data = QByteArray(json.dumps(body).encode())

        def post(request: QNetworkRequest, blocking: QgsBlockingNetworkRequest) -> int:
            request.setHeader(QNetworkRequest.KnownHeaders.ContentTypeHeader, "application/json")
            return blocking.post(request, data)

        return self._call(post, path)

    def _call(self, send: Callable, path: str) -> dict:
        blocking = QgsBlockingNetworkRequest()
        code = send(_request(self.settings, path), blocking)
        reply = blocking.reply()
        status = int(reply.attribute(QNetworkRequest.Attribute.HttpStatusCodeAttribute) or 0)
        content = bytes(reply.content())
        if code == QgsBlockingNetworkRequest.ErrorCode.TimeoutError or reply.error() == _TRANSFER_TIMEOUT:
            raise timed_out(self.settings.backend_url, effective_timeout_s(self.settings))
        if status == 0 and code != QgsBlockingNetworkRequest.ErrorCode.NoError:
            raise offline(self.settings.backend_url, blocking.errorMessage())
        if status >= 400:
            raise from_reply(status, content, self.settings.backend_url)
        try:
            return json.loads(content.decode("utf-8"))
        except ValueError as exc:
            raise ApiError(
                "network", f"the backend at {self.settings.backend_url} sent a reply that is not JSON"
            ) from exc
