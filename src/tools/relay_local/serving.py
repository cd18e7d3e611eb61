"""A threaded werkzeug server on 127.0.0.1, serving in a thread of its own.

The local HTTP API (relay_local.http_api) and the local AWS endpoint (relay_local.stack's
MotoServer) both run on it. The listening socket is bound here, not by werkzeug: werkzeug
ends the whole process (`sys.exit`) when its port is taken, where an OSError lets
`make run` say which setting to change.
"""

from __future__ import annotations

import socket
import threading
from typing import TYPE_CHECKING, Self

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

if TYPE_CHECKING:
    from collections.abc import Iterable

    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

LISTEN_BACKLOG = 128

_UNAVAILABLE = b'{"message":"Service Unavailable"}'


class RequestHandler(WSGIRequestHandler):
    """werkzeug's handler, silent once its server has stopped.

    Nagle's algorithm is off: werkzeug writes a response's headers and its body apart, and the
    body would wait for the client's delayed ACK of the headers, about 40 ms on Linux."""

    disable_nagle_algorithm = True

    @property
    def server_stopped(self) -> bool:
        """A request in flight outlives `LocalWsgiServer.stop`; what it answers then is not logged."""
        stopped = getattr(self.server, "relay_stopped", None)
        return stopped is not None and stopped.is_set()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if not self.server_stopped:
            super().log_request(code, size)


class LocalWsgiServer:
    """`app` on 127.0.0.1:`port` (0: any free port), one thread per connection.

    The port is bound on construction (OSError when it is taken); `start` serves in a daemon
    thread named `name`; `stop` ends that thread and closes the listening socket."""

    def __init__(
        self,
        app: WSGIApplication,
        *,
        name: str,
        port: int = 0,
        handler: type[RequestHandler] | None = None,
    ) -> None:
        listener = socket.create_server(("127.0.0.1", port), backlog=LISTEN_BACKLOG)
        self._app = app
        self._stopped = threading.Event()
        try:
            # werkzeug serves a duplicate of the bound socket's descriptor; this one is closed.
            self._server: BaseWSGIServer = make_server(
                "127.0.0.1",
                listener.getsockname()[1],
                self._unless_stopped,
                threaded=True,
                request_handler=handler or RequestHandler,
                fd=listener.fileno(),
            )
        finally:
            listener.close()
        self._server.relay_stopped = self._stopped  # type: ignore[attr-defined]  # read by RequestHandler
        self._name = name
        self._thread: threading.Thread | None = None

    def _unless_stopped(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """The app, until `stop`: then 503 at once, for a request accepted just before the stop
        that reaches the app after it, while `make run` shuts down."""
        if self._stopped.is_set():
            start_response("503 Service Unavailable", [("Content-Type", "application/json")])
            return [_UNAVAILABLE]
        return self._app(environ, start_response)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # how long stop() may wait for the loop to notice
            name=self._name,
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, end the serving thread and close the listening socket. A request
        still on its way in is answered 503 from now on, and nothing more is logged."""
        self._stopped.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
