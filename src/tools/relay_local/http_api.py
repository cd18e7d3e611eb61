"""API Gateway HTTP API (payload format 2.0) in front of one Lambda function, on 127.0.0.1.

Each request becomes the event API Gateway would send for the template's HttpApi routes;
the function's answer becomes the HTTP response by the 2.0 rules: an object with a
`statusCode` is taken as the response (headers, cookies, body, isBase64Encoded); anything
else is a 200 `application/json` whose body is the answer (a string as is, else JSON).

Gateway behaviours the relay's clients can observe are kept: an unmatched route is 404
`{"message":"Not Found"}`, a failing function is 500 `{"message":"Internal Server Error"}`,
and a request body over 10 MB is 413 before the function runs.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote

from relay_local.lambda_context import Function
from relay_local.stack import ACCOUNT_ID

logger = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 10 * 1024 * 1024  # API Gateway HTTP API request payload limit
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_BAD_REQUEST = (400, {"message": "Bad Request"})
_NOT_FOUND = (404, {"message": "Not Found"})
_TOO_LARGE = (413, {"message": "Request Entity Too Large"})
_FAILED = (500, {"message": "Internal Server Error"})


class PayloadTooLargeError(Exception):
    """The request body is over API Gateway's limit."""


@dataclass(frozen=True)
class Route:
    """One HttpApi event: `POST /v1/invoices`, `GET /v1/invoices/{orderId}`, `ANY /{proxy+}`."""

    method: str
    path: str

    @property
    def key(self) -> str:
        return f"{self.method} {self.path}"

    @cached_property
    def _pattern(self) -> tuple[list[str], re.Pattern[str]]:
        names = re.findall(r"\{([^}/]+?)\+?\}", self.path)
        pattern = re.sub(
            r"\\\{[^}/]+?\\\}",
            lambda variable: "(.+)" if variable.group().endswith(r"+\}") else "([^/]+)",
            re.escape(self.path),
        )
        return names, re.compile(pattern)

    def match(self, method: str, raw_path: str) -> dict[str, str] | None:
        """Path parameters (URL-decoded) when this route serves the request, else None."""
        if self.method not in ("ANY", method):
            return None
        names, pattern = self._pattern
        found = pattern.fullmatch(raw_path)
        if found is None:
            return None
        return {name: unquote(value) for name, value in zip(names, found.groups(), strict=True)}

    def precedence(self) -> tuple[bool, int, bool]:
        """API Gateway prefers literal paths, then fewer variables, greedy last, ANY last."""
        return ("+}" in self.path, self.path.count("{"), self.method == "ANY")


class LocalHttpApi:
    """A ThreadingHTTPServer on 127.0.0.1 that invokes `function` for each routed request."""

    def __init__(
        self,
        function: Function,
        routes: Sequence[tuple[str, str]],
        *,
        port: int = 0,
        api_id: str = "local",
    ) -> None:
        self.function = function
        self.api_id = api_id
        self.routes = sorted((Route(method.upper(), path) for method, path in routes), key=Route.precedence)
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _RequestHandler)
        self._server.api = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # how long stop() may wait for the loop to notice
            name=f"{self.function.name}-http",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, close the listening socket and end the serving thread."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> LocalHttpApi:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def route(self, method: str, raw_path: str) -> tuple[Route, dict[str, str]] | None:
        for route in self.routes:
            parameters = route.match(method, raw_path)
            if parameters is not None:
                return route, parameters
        return None


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "relay-local"
    sys_version = ""
    timeout = 60  # idle keep-alive connections end, so no thread waits forever

    def _serve(self) -> None:
        api: LocalHttpApi = self.server.api  # type: ignore[attr-defined]
        request_id = base64.b64encode(secrets.token_bytes(11)).decode()
        raw_path, _, raw_query = self.path.partition("?")
        try:
            body = self._read_body()
        except PayloadTooLargeError:
            self.close_connection = True
            self._write(request_id, *_json_answer(*_TOO_LARGE))
            return
        except ValueError:  # a Content-Length or chunk size that is not a number
            self.close_connection = True
            self._write(request_id, *_json_answer(*_BAD_REQUEST))
            return
        found = api.route(self.command, raw_path)
        if found is None:
            self._write(request_id, *_json_answer(*_NOT_FOUND))
            return
        route, path_parameters = found
        event = self._event(api, route, path_parameters, raw_path, raw_query, body, request_id)
        try:
            answer = api.function.invoke(event)
            status, headers, payload = _http_answer(answer)
        except Exception:
            logger.exception("%s %s failed (request %s)", route.key, raw_path, request_id)
            status, headers, payload = _json_answer(*_FAILED)
        self._write(request_id, status, headers, payload)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            chunks, size = [], 0
            while (length := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                size += length
                if size > MAX_PAYLOAD_BYTES:
                    raise PayloadTooLargeError
                chunks.append(self.rfile.read(length))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        length = int(self.headers.get("content-length") or 0)
        if length > MAX_PAYLOAD_BYTES:
            raise PayloadTooLargeError
        return self.rfile.read(length)

    def _event(
        self,
        api: LocalHttpApi,
        route: Route,
        path_parameters: dict[str, str],
        raw_path: str,
        raw_query: str,
        body: bytes,
        request_id: str,
    ) -> dict[str, Any]:
        """The payload format 2.0 event for this request."""
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]},{value}" if key in headers else value
        source_ip = self.client_address[0]
        headers.setdefault("x-forwarded-for", source_ip)
        headers.setdefault("x-forwarded-port", str(api.port))
        headers.setdefault("x-forwarded-proto", "http")
        cookie_header = headers.pop("cookie", "")
        domain = headers.get("host", api.url.removeprefix("http://"))
        now = time.time()
        event: dict[str, Any] = {
            "version": "2.0",
            "routeKey": route.key,
            "rawPath": raw_path,
            "rawQueryString": raw_query,
            "headers": headers,
            "requestContext": {
                "accountId": ACCOUNT_ID,
                "apiId": api.api_id,
                "domainName": domain,
                "domainPrefix": domain.split(".")[0],
                "http": {
                    "method": self.command,
                    "path": raw_path,
                    "protocol": self.request_version,
                    "sourceIp": source_ip,
                    "userAgent": headers.get("user-agent", ""),
                },
                "requestId": request_id,
                "routeKey": route.key,
                "stage": "$default",
                "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
                "timeEpoch": int(now * 1000),
            },
            "isBase64Encoded": False,
        }
        if cookie_header:
            event["cookies"] = [c.strip() for c in cookie_header.split(";") if c.strip()]
        if raw_query:
            query: dict[str, str] = {}
            for name, value in parse_qsl(raw_query, keep_blank_values=True):
                query[name] = f"{query[name]},{value}" if name in query else value
            event["queryStringParameters"] = query
        if path_parameters:
            event["pathParameters"] = path_parameters
        if body:
            try:
                event["body"] = body.decode("utf-8")
            except UnicodeDecodeError:
                event["body"] = base64.b64encode(body).decode()
                event["isBase64Encoded"] = True
        return event

    def _write(self, request_id: str, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
        self.send_response(status)
        for name, value in [*headers, ("apigw-requestid", request_id)]:
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        logger.info("%s - " + format, self.client_address[0], *args)


for _method in _METHODS:  # API Gateway routes every method; the route table decides
    setattr(_RequestHandler, f"do_{_method}", _RequestHandler._serve)


def _json_answer(status: int, document: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    return status, [("Content-Type", "application/json")], json.dumps(document).encode()


def _http_answer(answer: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """The HTTP response API Gateway makes of a function's answer (payload format 2.0).

    Raises ValueError/TypeError for an answer API Gateway would turn into a 500.
    """
    if not (isinstance(answer, dict) and "statusCode" in answer):
        body = answer if isinstance(answer, str) else json.dumps(answer)
        return 200, [("Content-Type", "application/json")], body.encode()
    status = answer["statusCode"]
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        raise ValueError(f"statusCode {status!r} is not an HTTP status")
    headers = [(str(name), str(value)) for name, value in (answer.get("headers") or {}).items()]
    for name, values in (answer.get("multiValueHeaders") or {}).items():
        headers.extend((str(name), str(value)) for value in values)
    headers.extend(("Set-Cookie", str(cookie)) for cookie in answer.get("cookies") or [])
    body = answer.get("body") or ""
    if not isinstance(body, str):
        raise TypeError(f"body must be a string, not {type(body).__name__}")
    if answer.get("isBase64Encoded"):
        try:
            return status, headers, base64.b64decode(body, validate=True)
        except binascii.Error as error:
            raise ValueError("isBase64Encoded body is not base64") from error
    return status, headers, body.encode()
