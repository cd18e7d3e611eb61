"""The simulator over HTTP: Frappe's REST resource API under `/api/resource/`, and `/_sim/`.

Standard library only (ThreadingHTTPServer), bound to 127.0.0.1 unless told otherwise. A
write body is JSON (as `requests.post(json=...)` sends it) or a form with a `data` field
holding JSON (as `frappe.client` sends it). Request logs carry the method, the path and the
status; the Authorization header is never logged.
"""

import contextlib
import json
import socket
import sys
import threading
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from erpnext_simulator.answers import DROPPED, Answer, FrappeError, outage
from erpnext_simulator.control import CONTROL_PREFIX, handle_control
from erpnext_simulator.faults import Faults
from erpnext_simulator.site import FrappeSite

RESOURCE_PREFIX = "/api/resource/"
MAX_BODY_BYTES = 5 * 1024 * 1024


class SiteServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], site: FrappeSite, faults: Faults, quiet: bool) -> None:
        self.site = site
        self.faults = faults
        self.quiet = quiet
        self.stopping = threading.Event()
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exception(), OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30
    server: SiteServer

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
        query = {key: values[0] for key, values in parse_qs(url.query, keep_blank_values=True).items()}
        raw = self._read_body()
        if url.path.startswith(CONTROL_PREFIX):
            self._send(handle_control(self.server.site, self.server.faults, method, url.path, raw))
            return
        if not url.path.startswith(RESOURCE_PREFIX):
            self._send(
                Answer(HTTPStatus.NOT_FOUND, {"exc_type": "DoesNotExistError", "exception": "Page not found"})
            )
            return
        doctype, _, name = (unquote(part) for part in url.path.removeprefix(RESOURCE_PREFIX).partition("/"))
        fault = self.server.faults.take(doctype)
        if fault is not None:
            if fault.kind == "latency":
                if self.server.stopping.wait(fault.seconds):
                    self._send(DROPPED)
                    return
            elif fault.kind == "drop":
                self._send(DROPPED)
                return
            else:
                self._send(outage(fault.status), record=(method, url.path))
                return
        answer = self._resource(method, doctype, name, query, raw)
        self._send(answer, record=(method, url.path))

    def _resource(self, method: str, doctype: str, name: str, query: Mapping[str, str], raw: bytes) -> Answer:
        site = self.server.site
        try:
            user = site.authenticate(self.headers.get("Authorization"), doctype)
            if method == "GET":
                return site.get(doctype, name) if name else site.get_list(doctype, query)
            if method == "POST" and not name:
                return site.insert(doctype, _document(raw, self.headers.get("Content-Type")), user=user)
            if method == "PUT" and name:
                return site.update(doctype, name, _document(raw, self.headers.get("Content-Type")), user=user)
            raise FrappeError("PermissionError", f"{method} is not allowed here")
        except FrappeError as error:
            return error.answer()

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        size = int(length) if length and length.isdigit() else 0
        if size > MAX_BODY_BYTES:
            self.close_connection = True
            return b""
        return self.rfile.read(size) if size else b""

    def _send(self, answer: Answer, record: tuple[str, str] | None = None) -> None:
        if record is not None:
            self.server.site.record_request(record[0], record[1], answer.status)
        if answer.drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        body = answer.encoded()
        self.send_response(answer.status)
        self.send_header("Content-Type", "application/json" if answer.body is not None else "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if not self.server.quiet:
            sys.stderr.write(f'erpnext-simulator "{self.command} {urlsplit(self.path).path}" {code}\n')

    def log_message(self, format: str, *args: object) -> None:
        if not self.server.quiet:
            sys.stderr.write(f"erpnext-simulator {format % args}\n")


def _document(raw: bytes, content_type: str | None) -> dict[str, Any]:
    """The write's document: a JSON body, or a form whose `data` field is JSON (frappe.client)."""
    text = raw.decode("utf-8", errors="replace")
    if content_type and content_type.startswith("application/x-www-form-urlencoded"):
        text = parse_qs(text).get("data", ["{}"])[0]
    try:
        document = json.loads(text) if text.strip() else {}
    except ValueError:
        raise FrappeError("ValidationError", "the request body is not JSON") from None
    if not isinstance(document, dict):
        raise FrappeError("ValidationError", "the request body must be a JSON object")
    return document
