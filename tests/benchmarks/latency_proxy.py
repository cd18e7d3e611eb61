"""An HTTP reverse proxy on 127.0.0.1 that holds every request `delay_seconds` before forwarding it.

Put in front of the local DynamoDB endpoint (AWS_ENDPOINT_URL_DYNAMODB), it gives the ledger the
round-trip time it has in AWS (single-digit milliseconds); in front of the Fynd simulator, Fynd's.
It records each request's operation (the X-Amz-Target header, else the path) and its start
and end, so the benchmark can count requests and sequential round trips.
"""

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import urllib3

_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "host", "content-length"}


@dataclass(frozen=True)
class Exchange:
    operation: str
    started: float
    ended: float


class LatencyProxy:
    def __init__(self, upstream: str, delay_seconds: float = 0.0) -> None:
        self.upstream = upstream.rstrip("/")
        self.delay_seconds = delay_seconds
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()
        self._http = urllib3.PoolManager(maxsize=64, retries=False)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # The headers and the body go out in two writes; with Nagle's algorithm the body
            # waits for the client's delayed ACK of the headers, about 40 ms on Linux.
            disable_nagle_algorithm = True

            def _forward(self) -> None:
                started = time.perf_counter()
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
                if proxy.delay_seconds:
                    time.sleep(proxy.delay_seconds)
                answer = proxy._http.request(
                    self.command, proxy.upstream + self.path, body=body, headers=headers, redirect=False
                )
                payload = answer.data
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    if name.lower() not in _HOP_HEADERS:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                operation = self.headers.get("X-Amz-Target", "").rpartition(".")[2] or self.path.split("?")[0]
                with proxy._lock:
                    proxy.exchanges.append(Exchange(operation, started, time.perf_counter()))

            do_GET = do_POST = do_PUT = do_DELETE = _forward

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "LatencyProxy":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def taken(self) -> list[Exchange]:
        """The exchanges so far, and forget them."""
        with self._lock:
            taken, self.exchanges = self.exchanges, []
        return taken


def sequential_round_trips(exchanges: list[Exchange]) -> int:
    """The longest chain of requests each starting after the previous one ended: the round
    trips a caller waited for one after another (concurrent requests count once)."""
    chain, last_end = 0, float("-inf")
    for exchange in sorted(exchanges, key=lambda e: e.ended):
        if exchange.started >= last_end:
            chain += 1
            last_end = exchange.ended
    return chain
