"""The ERP side of write-back, for tests: a Frappe REST stub and a Standard Webhooks receiver
over real HTTP on 127.0.0.1, and an SQS FIFO queue in memory for the domain's batches.

`FrappeStub` answers what the relay uses of Frappe's resource API for `Fynd Invoice Sync`:
GET/POST/PUT with `Authorization: token <key>:<secret>` (401 otherwise), 404 for a missing
record, 409 DuplicateEntryError for a second POST of one name, and an outage switch (503).
It records every write, so a test can read the order in which a record's states arrived.

`FifoQueue` keeps SQS FIFO's rules that write-back relies on: one message group is handed out
in order and not while one of its messages is in flight, a received message is invisible for
the visibility timeout unless the consumer changes it, and a message received more than
`max_receive_count` times moves to the dead-letter queue.
"""

import itertools
import json
import threading
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from standardwebhooks import Webhook

from relay.domain.invoice import InvoiceKey
from relay.domain.writeback import WritebackMessage

RESOURCE = "/api/resource/Fynd Invoice Sync"


class _Server:
    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class FrappeStub(_Server):
    def __init__(self, api_key: str = "relay-key", api_secret: str = "relay-secret") -> None:  # noqa: S107
        self.token = f"token {api_key}:{api_secret}"
        self.records: dict[str, dict[str, Any]] = {}
        self.writes: dict[str, list[dict[str, Any]]] = defaultdict(list)
        """Every POST and PUT body by record name, in the order they were applied."""
        self.requests: list[tuple[str, str]] = []
        self.down = False
        self.answer_next: list[int] = []
        """Statuses to answer the next requests with instead of serving them."""
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: object) -> None:
                pass

            def do_GET(self) -> None:
                stub._serve(self, "GET")

            def do_POST(self) -> None:
                stub._serve(self, "POST")

            def do_PUT(self) -> None:
                stub._serve(self, "PUT")

        super().__init__(Handler)

    def handle(self, method: str, target: str, auth: str | None, raw: bytes) -> tuple[int, bytes]:
        """One request, served in this process (InProcessHttp) or by the HTTP server."""
        body = json.loads(raw or b"null")
        path = unquote(target)
        with self.lock:
            self.requests.append((method, path))
            status, answer = self._answer(method, path, auth, body)
        return status, json.dumps(answer).encode()

    def _serve(self, request: BaseHTTPRequestHandler, method: str) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        status, data = self.handle(
            method, request.path, request.headers.get("Authorization"), request.rfile.read(length)
        )
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    def _answer(self, method: str, path: str, auth: str | None, body: Any) -> tuple[int, Any]:
        if self.down:
            return 503, {"exc_type": "ServiceUnavailable"}
        if self.answer_next:
            status = self.answer_next.pop(0)
            return status, {"exc_type": "ValidationError" if status == 417 else "Error", "exception": "x"}
        if auth != self.token:
            return 401, {"exc_type": "AuthenticationError"}
        if method == "POST" and path == RESOURCE:
            name = body["relay_key"]
            if name in self.records:
                return 409, {"exc_type": "DuplicateEntryError"}
            self.records[name] = {"name": name, "doctype": "Fynd Invoice Sync", **body}
            self.writes[name].append(dict(body))
            return 200, {"data": self.records[name]}
        name = path.removeprefix(RESOURCE + "/")
        if not path.startswith(RESOURCE + "/") or name not in self.records:
            return 404, {"exc_type": "DoesNotExistError"}
        if method == "GET":
            return 200, {"data": self.records[name]}
        self.records[name].update(body)
        self.writes[name].append(dict(body))
        return 200, {"data": self.records[name]}

    def __enter__(self) -> "FrappeStub":
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


class CallbackReceiver(_Server):
    """Keeps every callback whose Standard Webhooks signature verifies with `secret` (401 else)."""

    def __init__(self, secret: str) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        """(webhook-id, document) of each verified delivery, in arrival order."""
        self.refused = 0
        self.answer_with = 204
        self._verifier = Webhook(secret)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: object) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, _ = receiver.handle("POST", self.path, dict(self.headers.items()), raw)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        super().__init__(Handler)

    def handle(self, method: str, target: str, headers: Mapping[str, str], raw: bytes) -> tuple[int, bytes]:
        try:
            document = self._verifier.verify(raw, dict(headers))
        except Exception:  # the package raises its own WebhookVerificationError
            self.refused += 1
            return 401, b""
        if 200 <= self.answer_with < 300:
            self.received.append((headers["webhook-id"], document))
        return self.answer_with, b""

    def __enter__(self) -> "CallbackReceiver":
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


@dataclass(frozen=True)
class _Answer:
    status: int
    data: bytes


class InProcessHttp:
    """A urllib3.PoolManager stand-in that serves requests with a stub's `handle`, no socket:
    the adapters' own code runs, and unit tests keep the network off."""

    def __init__(self, stub: "FrappeStub | CallbackReceiver") -> None:
        self._stub = stub

    def request(
        self, method: str, url: str, *, body: bytes | None = None, headers: Mapping[str, str], **_: Any
    ) -> _Answer:
        target = "/" + url.split("://", 1)[1].partition("/")[2]
        if isinstance(self._stub, FrappeStub):
            status, data = self._stub.handle(method, target, headers.get("Authorization"), body or b"")
        else:
            status, data = self._stub.handle(method, target, headers, body or b"")
        return _Answer(status, data)


@dataclass
class _Held:
    message_id: str
    key: InvoiceKey
    group_id: str
    visible_at: float
    receive_count: int = 0
    receipt: str | None = None


@dataclass
class FifoQueue:
    """SQS FIFO in memory, on the caller's clock (seconds)."""

    clock: Any
    visibility_timeout: float = 360
    max_receive_count: int = 50
    messages: list[_Held] = field(default_factory=list)
    dead_letters: list[_Held] = field(default_factory=list)
    receive_counts: dict[str, int] = field(default_factory=dict)
    _ids: Any = field(default_factory=itertools.count)

    def send(self, key: InvoiceKey) -> None:
        self.messages.append(_Held(f"m-{next(self._ids)}", key, str(key), self.clock()))

    def receive(self, limit: int = 10) -> list[WritebackMessage]:
        now, batch = self.clock(), []
        busy = {m.group_id for m in self.messages if m.receipt is not None and m.visible_at > now}
        for message in list(self.messages):
            if len(batch) == limit:
                break
            if message.group_id in busy:
                continue
            if message.visible_at > now:
                busy.add(message.group_id)  # a group waits behind its first invisible message
                continue
            if message.receive_count >= self.max_receive_count:
                self.messages.remove(message)
                self.dead_letters.append(message)
                continue
            message.receive_count += 1
            self.receive_counts[message.message_id] = message.receive_count
            message.receipt = f"{message.message_id}/{message.receive_count}"
            message.visible_at = now + self.visibility_timeout
            batch.append(
                WritebackMessage(
                    message.message_id, message.receipt, message.receive_count, message.key, message.group_id
                )
            )
        return batch

    def change_visibility(self, receipt_handle: str, seconds: int) -> None:
        for message in self.messages:
            if message.receipt == receipt_handle:
                message.visible_at = self.clock() + seconds

    def settle(self, batch: list[WritebackMessage], failed: list[str]) -> None:
        """Lambda's partial batch response: delete what did not fail."""
        done = {m.message_id for m in batch} - set(failed)
        self.messages = [m for m in self.messages if m.message_id not in done]

    def next_visible_at(self) -> float | None:
        """When the next message can be handed out: the earliest of each group's first message."""
        heads: dict[str, float] = {}
        for message in self.messages:
            heads.setdefault(message.group_id, message.visible_at)
        return min(heads.values(), default=None)


def record_of(stub: FrappeStub, key: InvoiceKey) -> Mapping[str, Any] | None:
    return stub.records.get(f"{key.order_id}-{key.invoice_type}")
