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
    from _typeshed.wsgi import WSGIApplication

LISTEN_BACKLOG = 128


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
        handler: type[WSGIRequestHandler] | None = None,
    ) -> None:
        listener = socket.create_server(("127.0.0.1", port), backlog=LISTEN_BACKLOG)
        try:
            # werkzeug serves a duplicate of the bound socket's descriptor; this one is closed.
            self._server: BaseWSGIServer = make_server(
                "127.0.0.1",
                listener.getsockname()[1],
                app,
                threaded=True,
                request_handler=handler,
                fd=listener.fileno(),
            )
        finally:
            listener.close()
        self._name = name
        self._thread: threading.Thread | None = None

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
        """Stop accepting, end the serving thread and close the listening socket."""
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
