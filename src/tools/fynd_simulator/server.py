"""The simulator over HTTP: Fynd's three endpoints plus the `/_sim/` control API.

Standard library only (ThreadingHTTPServer), HTTP/1.1 with keep-alive like a real API
front end. Binds 127.0.0.1 unless told otherwise. Request logs carry the method, the
path and query with any password masked, and the status; tokens are never logged.
"""

import contextlib
import re
import socket
import sys
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fynd_simulator.admin import ADMIN_PREFIX, handle_admin
from fynd_simulator.faults import Endpoint, Fault, LatencyFault
from fynd_simulator.replies import DROPPED, Reply, problem
from fynd_simulator.state import SimulatorState

TOKEN_PATH = "/aggregator/v1/token"  # noqa: S105 - a path, not a secret
INVOICE_PATH = "/oms/v3/shipment/invoiceUpdate"
SHIPMENT_INFO_PATH = "/oms/v3/shipment/info"
MAX_BODY_BYTES = 1024 * 1024
_PASSWORD = re.compile(r"(password=)[^&\s\"]*", re.IGNORECASE)


class SimulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], state: SimulatorState, quiet: bool) -> None:
        self.state = state
        self.quiet = quiet
        self.stopping = threading.Event()  # wakes latency faults on stop
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.address_family = family
        super().__init__(address, _Handler)

    def handle_error(self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any) -> None:
        """A client that hung up (or a stop that hung up on it) is no error worth a traceback."""
        if not isinstance(sys.exception(), OSError):
            super().handle_error(request, client_address)

    def drop_connections(self) -> None:
        with self.connections_lock:
            for connection in self.connections:
                _shut(connection)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30  # idle keep-alive connections are closed after this many seconds
    server: SimulatorServer

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")

    def do_DELETE(self) -> None:
        self._route("DELETE")

    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        raw = self._read_body()
        state = self.server.state
        if isinstance(raw, Reply):
            reply = raw
        elif url.path.startswith(ADMIN_PREFIX):
            reply = handle_admin(state, method, url.path, raw)
        elif url.path == TOKEN_PATH and method == "GET":
            username, password = query.get("username", ""), query.get("password", "")
            reply = self._fynd_call("token", lambda f: state.token_request(username, password, f))
        elif url.path == INVOICE_PATH and method == "POST":
            token = self.headers.get("x-access-token")
            reply = self._fynd_call(
                "invoice",
                lambda f: state.invoice_update(
                    path=url.path, query=query, token=token, raw_body=raw, fault=f
                ),
            )
        elif url.path == SHIPMENT_INFO_PATH and method == "GET":
            token = self.headers.get("x-access-token")
            reply = self._fynd_call(
                "shipment", lambda f: state.shipment_info(query=query, token=token, fault=f)
            )
        elif url.path in (TOKEN_PATH, INVOICE_PATH, SHIPMENT_INFO_PATH):
            reply = problem(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} not allowed here")
        else:
            reply = problem(HTTPStatus.NOT_FOUND, f"no route {url.path}")
        self._send(reply)

    def _read_body(self) -> bytes | Reply:
        """The request body, or the refusal when it cannot be read (then the connection closes)."""
        length = self.headers.get("Content-Length")
        if "Transfer-Encoding" in self.headers or (length is not None and not length.isdigit()):
            self.close_connection = True
            return problem(HTTPStatus.LENGTH_REQUIRED, "send a body with a Content-Length")
        size = int(length or 0)
        if size > MAX_BODY_BYTES:
            self.close_connection = True
            return problem(HTTPStatus.CONTENT_TOO_LARGE, f"body over {MAX_BODY_BYTES} bytes")
        return self.rfile.read(size) if size else b""

    def _fynd_call(self, endpoint: Endpoint, call: Callable[[Fault | None], Reply]) -> Reply:
        fault = self.server.state.take_fault(endpoint)
        if isinstance(fault, LatencyFault) and self.server.stopping.wait(fault.seconds):
            return DROPPED  # stopped while waiting: the call is never answered
        return call(fault)

    def _send(self, reply: Reply) -> None:
        if reply.drop:
            # The ambiguous outcome: the work is done, the client never hears about it.
            self.close_connection = True
            _shut(self.connection)
            self._log(f'"{self.command} {_redact(self.path)}" dropped')
            return
        body = reply.encoded_body()
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in reply.headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self._log(f'"{self.command} {_redact(self.path)}" {code}')

    def log_message(self, format: str, *args: object) -> None:
        self._log(_redact(format % args))

    def _log(self, message: str) -> None:
        if not self.server.quiet:
            sys.stderr.write(f"fynd-simulator {self.address_string()} {message}\n")


def _redact(text: str) -> str:
    return _PASSWORD.sub(r"\1***", text)


def _shut(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed by the peer
        connection.shutdown(socket.SHUT_RDWR)
