"""API Gateway HTTP API (payload format 2.0) in front of one Lambda function, on 127.0.0.1.

Each request becomes the event API Gateway would send for the template's HttpApi routes;
the function's answer becomes the HTTP response by the 2.0 rules: an object with a
`statusCode` is taken as the response (headers, cookies, body, isBase64Encoded); anything
else is a 200 `application/json` whose body is the answer (a string as is, else JSON).

Gateway behaviours the relay's clients can observe are kept: an unmatched route (an unknown
path, or a method the path has no route for) is 404 `{"message":"Not Found"}`, a failing
function is 500 `{"message":"Internal Server Error"}`, and a request body over 10 MB is 413
before the function runs.

werkzeug does the HTTP: its threaded server (relay_local.serving), its request (chunked
bodies, folded and repeated headers) and its routing (the template's routes as a `Map`).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from werkzeug.exceptions import BadRequest, HTTPException, RequestEntityTooLarge
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from relay_local.environments import RuntimeStoppedError
from relay_local.lambda_context import Function
from relay_local.lambda_events import HttpRequest, http_api_event
from relay_local.serving import LocalWsgiServer, RequestHandler

if TYPE_CHECKING:
    from collections.abc import Iterable

    from _typeshed.wsgi import StartResponse, WSGIEnvironment

logger = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 10 * 1024 * 1024  # API Gateway HTTP API request payload limit
_BAD_REQUEST = (400, {"message": "Bad Request"})
_NOT_FOUND = (404, {"message": "Not Found"})
_TOO_LARGE = (413, {"message": "Request Entity Too Large"})
_FAILED = (500, {"message": "Internal Server Error"})
_UNAVAILABLE = (503, {"message": "Service Unavailable"})


@dataclass(frozen=True)
class Route:
    """One HttpApi event: `POST /v1/invoices`, `GET /v1/invoices/{orderId}`, `ANY /{proxy+}`."""

    method: str
    path: str

    @property
    def key(self) -> str:
        return f"{self.method} {self.path}"

    def precedence(self) -> tuple[bool, int, bool]:
        """API Gateway prefers literal paths, then fewer variables, greedy last, ANY last."""
        return ("+}" in self.path, self.path.count("{"), self.method == "ANY")

    def rule(self) -> tuple[Rule, list[str]]:
        """The werkzeug rule matching this route, and the path variables' names in order.

        A variable is a whole path segment: `{name}` matches one segment, `{name+}` the rest
        of the path. werkzeug's argument names must be identifiers, so they are numbered."""
        names: list[str] = []
        segments = []
        for segment in self.path.split("/"):
            if segment.startswith("{") and segment.endswith("}"):
                name = segment[1:-1]
                converter = "path:" if name.endswith("+") else ""
                segments.append(f"<{converter}p{len(names)}>")
                names.append(name.removesuffix("+"))
            else:
                segments.append(segment)
        methods = None if self.method == "ANY" else [self.method]
        return Rule("/".join(segments), methods=methods, endpoint=self), names


class LocalHttpApi(LocalWsgiServer):
    """A threaded werkzeug server on 127.0.0.1 that invokes `function` for each routed request."""

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
        rules = [route.rule() for route in self.routes]
        # Rules are tried in this order where werkzeug ranks them alike; no slash is merged or added.
        self._map = Map([rule for rule, _ in rules], merge_slashes=False, strict_slashes=False)
        self._variables = {route: names for route, (_, names) in zip(self.routes, rules, strict=True)}
        super().__init__(self._serve, name=f"{function.name}-http", port=port, handler=_RequestHandler)

    def route(self, method: str, raw_path: str) -> tuple[Route, dict[str, str]] | None:
        """The route serving `method raw_path` and its path parameters (URL-decoded), else None."""
        try:
            route, arguments = self._map.bind("").match(raw_path, method=method)
        except HTTPException:  # no route for the path (404), or none for its method (405)
            return None
        if route.method not in ("ANY", method):  # werkzeug lets HEAD use a GET rule; API Gateway does not
            return None
        names = self._variables[route]
        return route, {names[int(key[1:])]: unquote(value) for key, value in arguments.items()}

    def _serve(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request_id = base64.b64encode(secrets.token_bytes(11)).decode()
        response = self._answer(_GatewayRequest(environ), request_id)
        response.headers["apigw-requestid"] = request_id
        return response(environ, start_response)

    def _answer(self, request: Request, request_id: str) -> Response:
        # The request target as the client sent it, undoing the WSGI encoding of werkzeug's server.
        target = str(request.environ["REQUEST_URI"]).encode("latin-1").decode()
        method = str(request.environ["REQUEST_METHOD"])
        try:
            body = _read_body(request)
        except RequestEntityTooLarge:
            return _json_answer(*_TOO_LARGE)
        except BadRequest:  # a Content-Length or chunk size that is not a number, a body cut short
            return _json_answer(*_BAD_REQUEST)
        source_ip = request.remote_addr or ""
        headers = [(name.lower(), value) for name, value in request.headers.items()]
        forwarded = {
            "x-forwarded-for": source_ip,
            "x-forwarded-port": str(self.port),
            "x-forwarded-proto": "http",
        }
        headers += [item for item in forwarded.items() if item[0] not in request.headers]
        received = HttpRequest(
            method, target, headers, body, source_ip, str(request.environ["SERVER_PROTOCOL"])
        )
        found = self.route(method, received.raw_path)
        if found is None:
            return _json_answer(*_NOT_FOUND)
        route, path_parameters = found
        domain = self.url.removeprefix("http://")
        event = http_api_event(
            received,
            route.key,
            path_parameters,
            api_id=self.api_id,
            domain=domain,
            request_id=request_id,
            at=time.time(),
        )
        try:
            return _http_answer(self.function.invoke(event))
        except RuntimeStoppedError:  # a request that arrived as `make run` shuts down
            return _json_answer(*_UNAVAILABLE)
        except Exception:
            logger.exception("%s %s failed (request %s)", route.key, received.raw_path, request_id)
            return _json_answer(*_FAILED)


class _GatewayRequest(Request):
    # One byte over the limit: a chunked body that reaches it is over the limit (werkzeug
    # stops reading there without saying whether more was coming).
    max_content_length = MAX_PAYLOAD_BYTES + 1


class _GatewayResponse(Response):
    default_mimetype = None  # a function's answer without Content-Type gets none


def _read_body(request: Request) -> bytes:
    """The whole body: chunked or by Content-Length, at most MAX_PAYLOAD_BYTES.

    Raises RequestEntityTooLarge when Content-Length is over the limit (nothing is read) or
    a chunked body goes over it; BadRequest for an unreadable length or a body cut short."""
    announced = request.headers.get("Content-Length")
    if announced is not None and not (announced.isascii() and announced.strip().isdigit()):
        raise BadRequest(f"Content-Length {announced!r} is not a number")
    if (request.content_length or 0) > MAX_PAYLOAD_BYTES:
        raise RequestEntityTooLarge
    body = request.get_data()
    if len(body) > MAX_PAYLOAD_BYTES:
        raise RequestEntityTooLarge
    return body


class _RequestHandler(RequestHandler):
    """werkzeug's handler with the local API's name and its access log on this module's logger."""

    sys_version = ""
    timeout = 60  # a client that sends nothing for a minute is dropped, so no thread waits forever

    @property
    def server_version(self) -> str:  # type: ignore[override]  # werkzeug makes it a property too
        return "relay-local"

    def send_response(self, code: int, message: str | None = None) -> None:
        # http.server's reason phrase ("Not Found"), not werkzeug's upper-cased one ("NOT FOUND").
        super().send_response(code)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if not self.server_stopped:
            self.log("info", '"%s" %s %s', self.requestline, code, size)

    def log(self, type: str, message: str, *args: Any) -> None:
        level = logging.ERROR if type == "error" else logging.INFO
        logger.log(level, "%s - " + message, self.address_string(), *args)


def _json_answer(status: int, document: Any) -> Response:
    return _GatewayResponse(json.dumps(document), status=status, content_type="application/json")


def _http_answer(answer: Any) -> Response:
    """The HTTP response API Gateway makes of a function's answer (payload format 2.0).

    Raises ValueError/TypeError for an answer API Gateway would turn into a 500.
    """
    if not (isinstance(answer, dict) and "statusCode" in answer):
        body = answer if isinstance(answer, str) else json.dumps(answer)
        return _GatewayResponse(body.encode(), status=200, content_type="application/json")
    status = answer["statusCode"]
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        raise ValueError(f"statusCode {status!r} is not an HTTP status")
    headers = [(str(name), str(value)) for name, value in (answer.get("headers") or {}).items()]
    for name, values in (answer.get("multiValueHeaders") or {}).items():
        headers.extend((str(name), str(value)) for value in values)
    headers.extend(("Set-Cookie", str(cookie)) for cookie in answer.get("cookies") or [])
    headers = [(name, value) for name, value in headers if name.lower() != "content-length"]
    body = answer.get("body") or ""
    if not isinstance(body, str):
        raise TypeError(f"body must be a string, not {type(body).__name__}")
    payload = body.encode()
    if answer.get("isBase64Encoded"):
        try:
            payload = base64.b64decode(body, validate=True)
        except binascii.Error as error:
            raise ValueError("isBase64Encoded body is not base64") from error
    return _GatewayResponse(payload, status=status, headers=headers)
