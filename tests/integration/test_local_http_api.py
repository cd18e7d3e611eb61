"""The local HTTP API behaves like API Gateway's HTTP API (payload 2.0) in front of ingest.

Real HTTP requests on 127.0.0.1 reach a stand-in handler through the routes template.yaml
declares for IngestFunction; the tests check the event it is given and the response made
of its answer.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.utilities.parser.models import APIGatewayProxyEventV2Model
from aws_lambda_powertools.utilities.typing import LambdaContext as PowertoolsContext

from relay_local.environments import RuntimeStoppedError
from relay_local.http_api import MAX_PAYLOAD_BYTES, LocalHttpApi
from relay_local.lambda_context import LambdaContext, LambdaFunction
from relay_local.stack import load_template

TEMPLATE_ROUTES = [
    (event["Properties"]["Method"], event["Properties"]["Path"])
    for event in load_template()["Resources"]["IngestFunction"]["Properties"]["Events"].values()
    if event["Type"] == "HttpApi"
]


class StandInIngest:
    """Records the events it is given and answers with `answer(event)`."""

    def __init__(self, answer: Callable[[dict[str, Any]], Any] | None = None) -> None:
        self.answer = answer or (lambda _: {"statusCode": 202, "body": "{}"})
        self.events: list[dict[str, Any]] = []
        self.contexts: list[LambdaContext] = []

    def __call__(self, event: dict[str, Any], context: LambdaContext) -> Any:
        self.events.append(event)
        self.contexts.append(context)
        return self.answer(event)


@pytest.fixture
def serve() -> Iterator[Callable[..., LocalHttpApi]]:
    """Starts a local HTTP API in front of a handler; stops it at the end of the test."""
    started: list[LocalHttpApi] = []

    def start(handler: Callable[[dict[str, Any], Any], Any], timeout: float = 10) -> LocalHttpApi:
        api = LocalHttpApi(LambdaFunction("IngestFunction", handler, timeout), TEMPLATE_ROUTES)
        started.append(api)
        api.start()
        return api

    yield start
    for api in started:
        api.stop()


@dataclass(frozen=True)
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


def request(
    api: LocalHttpApi,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: Sequence[tuple[str, str]] = (),
) -> Answer:
    """One request on its own connection; repeated headers are sent as given."""
    connection = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers:
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return Answer(response.status, response.headers, response.read())
    finally:
        connection.close()


def test_template_declares_the_routes_under_test() -> None:
    assert sorted(TEMPLATE_ROUTES) == [("GET", "/v1/invoices/{orderId}"), ("POST", "/v1/invoices")]


def test_post_becomes_a_payload_2_event(serve: Callable[..., LocalHttpApi]) -> None:
    # Given the API in front of a stand-in ingest handler
    handler = StandInIngest()
    api = serve(handler)
    # When an invoice is posted with a query string, repeated headers and cookies
    before_ms = int(time.time() * 1000)
    request(
        api,
        "POST",
        "/v1/invoices?dryRun=1&tag=a&tag=b%20c",
        b'{"orderId": "FY1"}',
        [
            ("Content-Type", "application/json"),
            ("Webhook-Id", "msg_1"),
            ("X-Trace", "one"),
            ("X-Trace", "two"),
            ("User-Agent", "erp/1.0"),
            ("Cookie", "session=abc; theme=dark"),
        ],
    )
    # Then the handler got API Gateway's payload 2.0 event for route "POST /v1/invoices"
    (event,) = handler.events
    APIGatewayProxyEventV2Model.model_validate(event)
    assert event["version"] == "2.0"
    assert event["routeKey"] == "POST /v1/invoices"
    assert event["rawPath"] == "/v1/invoices"
    assert event["rawQueryString"] == "dryRun=1&tag=a&tag=b%20c"
    assert event["queryStringParameters"] == {"dryRun": "1", "tag": "a,b c"}
    assert event["headers"]["content-type"] == "application/json"
    assert event["headers"]["webhook-id"] == "msg_1"
    assert event["headers"]["x-trace"] == "one,two"
    assert "cookie" not in event["headers"]
    assert event["cookies"] == ["session=abc", "theme=dark"]
    assert event["body"] == '{"orderId": "FY1"}'
    assert event["isBase64Encoded"] is False
    assert "pathParameters" not in event
    context = event["requestContext"]
    assert context["http"] == {
        "method": "POST",
        "path": "/v1/invoices",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": "erp/1.0",
    }
    assert context["routeKey"] == "POST /v1/invoices"
    assert context["stage"] == "$default"
    assert context["requestId"]
    assert context["accountId"] == "123456789012"
    assert context["apiId"] == "local"
    assert context["domainName"] == f"127.0.0.1:{api.port}"
    assert before_ms <= context["timeEpoch"] <= int(time.time() * 1000)
    assert re.fullmatch(r"\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000", context["time"])
    # And a fresh Lambda context with the function's timeout
    assert handler.contexts[0].function_name == "IngestFunction"
    assert 0 < handler.contexts[0].get_remaining_time_in_millis() <= 10_000


def test_path_parameters_are_matched_and_decoded(serve: Callable[..., LocalHttpApi]) -> None:
    # Given the API
    handler = StandInIngest()
    api = serve(handler)
    # When an invoice's status is asked for, with an encoded order id
    request(api, "GET", "/v1/invoices/FY%20123?invoiceType=return")
    # Then the event names the template's route and carries the decoded path parameter
    (event,) = handler.events
    assert event["routeKey"] == "GET /v1/invoices/{orderId}"
    assert event["rawPath"] == "/v1/invoices/FY%20123"
    assert event["pathParameters"] == {"orderId": "FY 123"}
    assert event["queryStringParameters"] == {"invoiceType": "return"}
    assert "body" not in event


def test_binary_body_arrives_base64_encoded(serve: Callable[..., LocalHttpApi]) -> None:
    # Given the API
    handler = StandInIngest()
    api = serve(handler)
    # When a body that is not UTF-8 is posted
    payload = b"\xff\xfe\x00invoice"
    request(api, "POST", "/v1/invoices", payload, [("Content-Type", "application/octet-stream")])
    # Then the handler gets it base64-encoded, flagged as such
    (event,) = handler.events
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == payload


def test_chunked_body_is_delivered_whole(serve: Callable[..., LocalHttpApi]) -> None:
    # Given the API
    handler = StandInIngest()
    api = serve(handler)
    # When a body is sent with chunked transfer encoding
    connection = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    connection.request("POST", "/v1/invoices", body=iter([b'{"a"', b": 1}"]), encode_chunked=True)
    status = connection.getresponse().status
    connection.close()
    # Then the handler sees the whole body
    assert status == 202
    assert handler.events[0]["body"] == '{"a": 1}'


def test_answer_maps_to_status_headers_cookies_and_body(serve: Callable[..., LocalHttpApi]) -> None:
    # Given a handler answering with a full payload 2.0 response
    api = serve(
        StandInIngest(
            lambda _: {
                "statusCode": 422,
                "headers": {"Content-Type": "application/problem+json", "X-Request": "r1"},
                "multiValueHeaders": {"Vary": ["Accept", "Origin"]},
                "cookies": ["a=1; Secure", "b=2"],
                "body": '{"title": "invalid"}',
                "isBase64Encoded": False,
            }
        )
    )
    # When a request is made
    response = request(api, "POST", "/v1/invoices", b"{}")
    # Then the HTTP response carries each part of it
    assert response.status == 422
    assert response.headers.get("Content-Type") == "application/problem+json"
    assert response.headers.get("X-Request") == "r1"
    assert response.headers.get_all("Vary") == ["Accept", "Origin"]
    assert response.headers.get_all("Set-Cookie") == ["a=1; Secure", "b=2"]
    assert response.headers.get("apigw-requestid")
    assert response.body == b'{"title": "invalid"}'


def test_base64_answer_is_decoded(serve: Callable[..., LocalHttpApi]) -> None:
    # Given a handler answering with a base64-encoded binary body
    raw = b"\x89PNG\x00\xff"
    answer = {"statusCode": 200, "body": base64.b64encode(raw).decode(), "isBase64Encoded": True}
    api = serve(StandInIngest(lambda _: answer))
    # When a request is made
    response = request(api, "GET", "/v1/invoices/FY1")
    # Then the client receives the raw bytes
    assert response.body == raw


@pytest.mark.parametrize(
    ("answer", "body"),
    [({"status": "QUEUED"}, b'{"status": "QUEUED"}'), ("Hello from Lambda!", b"Hello from Lambda!")],
    ids=["object", "string"],
)
def test_answer_without_status_code_is_200_json(
    serve: Callable[..., LocalHttpApi], answer: Any, body: bytes
) -> None:
    # Given a handler answering without a statusCode
    api = serve(StandInIngest(lambda _: answer))
    # When a request is made
    response = request(api, "GET", "/v1/invoices/FY1")
    # Then API Gateway's 2.0 rule applies: 200, application/json, the answer as the body
    assert response.status == 200
    assert response.headers.get("Content-Type") == "application/json"
    assert response.body == body


def test_powertools_resolver_round_trip(serve: Callable[..., LocalHttpApi]) -> None:
    # Given a stand-in built like the real ingest handler: Powertools resolver and Logger
    app = APIGatewayHttpResolver()
    logger = Logger(service="invoice-relay")

    @app.get("/v1/invoices/<order_id>")
    def status(order_id: str) -> Response[str]:
        kind = app.current_event.get_query_string_value("invoiceType", "sale")
        return Response(200, "application/json", json.dumps({"orderId": order_id, "type": kind}))

    @logger.inject_lambda_context
    def lambda_handler(event: dict[str, Any], context: PowertoolsContext) -> dict[str, Any]:
        return app.resolve(event, context)

    api = serve(lambda_handler)
    # When the status of an order is asked for
    response = request(api, "GET", "/v1/invoices/FY9?invoiceType=return")
    # Then the resolver routed it and its answer came back as HTTP
    assert response.status == 200
    assert json.loads(response.body) == {"orderId": "FY9", "type": "return"}


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/nothing"), ("DELETE", "/v1/invoices"), ("GET", "/v1/invoices/a/b")],
)
def test_unmatched_route_is_404_without_invoking(
    serve: Callable[..., LocalHttpApi], method: str, path: str
) -> None:
    # Given the API
    handler = StandInIngest()
    api = serve(handler)
    # When a request matches no route of the template
    response = request(api, method, path)
    # Then API Gateway's own 404 answers, and the function is not invoked
    assert response.status == 404
    assert json.loads(response.body) == {"message": "Not Found"}
    assert response.headers.get("Content-Type") == "application/json"
    assert handler.events == []


def test_handler_exception_is_500_and_logged(
    serve: Callable[..., LocalHttpApi], caplog: pytest.LogCaptureFixture
) -> None:
    # Given a handler that raises
    def explode(_: dict[str, Any]) -> Any:
        raise RuntimeError("ledger unreachable")

    api = serve(StandInIngest(explode))
    # When a request reaches it
    with caplog.at_level(logging.ERROR, logger="relay_local.http_api"):
        response = request(api, "POST", "/v1/invoices", b"{}")
    # Then the client gets API Gateway's 500, and the error is in the log
    assert response.status == 500
    assert json.loads(response.body) == {"message": "Internal Server Error"}
    assert "ledger unreachable" in caplog.text


@pytest.mark.parametrize(
    "answer",
    [{"statusCode": "two hundred"}, {"statusCode": 200, "body": {"not": "a string"}}, {1, 2}],
    ids=["bad-status", "body-not-string", "not-json"],
)
def test_malformed_answer_is_500(serve: Callable[..., LocalHttpApi], answer: Any) -> None:
    # Given a handler whose answer API Gateway cannot use
    api = serve(StandInIngest(lambda _: answer))
    # When a request reaches it
    response = request(api, "POST", "/v1/invoices", b"{}")
    # Then the client gets a 500
    assert response.status == 500


def test_handler_past_its_timeout_is_500(serve: Callable[..., LocalHttpApi]) -> None:
    # Given a function with a 0.2 s timeout whose handler takes 0.4 s
    def slow(_: dict[str, Any]) -> Any:
        time.sleep(0.4)
        return {"statusCode": 202}

    api = serve(StandInIngest(slow), timeout=0.2)
    # When a request reaches it
    response = request(api, "POST", "/v1/invoices", b"{}")
    # Then the invocation counts as failed, as Lambda would have ended it
    assert response.status == 500


def test_body_over_10_mb_is_413_without_invoking(serve: Callable[..., LocalHttpApi]) -> None:
    # Given the API
    handler = StandInIngest()
    api = serve(handler)
    # When a request announces a body one byte over API Gateway's 10 MB limit
    connection = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    connection.putrequest("POST", "/v1/invoices")
    connection.putheader("Content-Length", str(MAX_PAYLOAD_BYTES + 1))
    connection.endheaders()
    response = connection.getresponse()
    # Then it is refused with 413 before the function runs
    assert response.status == 413
    assert json.loads(response.read()) == {"message": "Request Entity Too Large"}
    assert handler.events == []
    connection.close()


def test_unreadable_content_length_is_400(serve: Callable[..., LocalHttpApi]) -> None:
    # Given the API
    handler = StandInIngest()
    api = serve(handler)
    # When a request's Content-Length is not a number
    response = request(api, "POST", "/v1/invoices", headers=[("Content-Length", "ten")])
    # Then it is refused as a bad request without invoking the function
    assert response.status == 400
    assert handler.events == []


def test_body_of_exactly_10_mb_is_accepted(serve: Callable[..., LocalHttpApi]) -> None:
    # Given the API
    handler = StandInIngest(lambda event: {"statusCode": 202, "body": str(len(event["body"]))})
    api = serve(handler)
    # When a body of exactly 10 MB is posted
    response = request(api, "POST", "/v1/invoices", b"x" * MAX_PAYLOAD_BYTES)
    # Then the function receives all of it
    assert response.status == 202
    assert response.body == str(MAX_PAYLOAD_BYTES).encode()


def test_stop_frees_the_port_and_the_thread(serve: Callable[..., LocalHttpApi]) -> None:
    # Given a running API
    api = serve(StandInIngest())
    assert request(api, "POST", "/v1/invoices", b"{}").status == 202
    # When it is stopped
    api.stop()
    # Then its serving thread is gone and nothing listens on its port
    assert [t for t in threading.enumerate() if t.name == "IngestFunction-http"] == []
    with pytest.raises(ConnectionRefusedError):
        request(api, "GET", "/v1/invoices/FY1")


def raw_exchange(api: LocalHttpApi, request_bytes: bytes) -> tuple[int, bytes]:
    """Send `request_bytes` as they are on a fresh connection; the status and body of the answer."""
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as connection:
        connection.sendall(request_bytes)
        answer = http.client.HTTPResponse(connection)
        answer.begin()
        return answer.status, answer.read()


def test_folded_header_arrives_unfolded(serve: Callable[..., LocalHttpApi]) -> None:
    # Given the API
    handler = StandInIngest()
    api = serve(handler)
    # When a request carries a header folded over two lines (obsolete line folding)
    status, _ = raw_exchange(
        api,
        b"POST /v1/invoices HTTP/1.1\r\nHost: relay.test\r\nX-Folded: first part\r\n  second part\r\n"
        b"Content-Length: 2\r\n\r\n{}",
    )
    # Then the function gets one header, its lines joined without the line break
    assert status == 202
    (event,) = handler.events
    assert event["headers"]["x-folded"] == "first part  second part"
    assert event["requestContext"]["domainName"] == "relay.test"


def test_chunked_body_over_10_mb_is_413_without_invoking(serve: Callable[..., LocalHttpApi]) -> None:
    # Given the API
    handler = StandInIngest()
    api = serve(handler)
    # When a chunked body (no Content-Length to refuse it by) grows one byte past the limit
    chunk = b"x" * (1024 * 1024)
    chunks = [chunk] * (MAX_PAYLOAD_BYTES // len(chunk)) + [b"x"]
    connection = http.client.HTTPConnection("127.0.0.1", api.port, timeout=30)
    connection.request("POST", "/v1/invoices", body=iter(chunks), encode_chunked=True)
    response = connection.getresponse()
    # Then it is refused with 413 and the function never runs
    assert response.status == 413
    assert json.loads(response.read()) == {"message": "Request Entity Too Large"}
    assert handler.events == []
    connection.close()


def test_malformed_chunk_size_is_400_without_invoking(serve: Callable[..., LocalHttpApi]) -> None:
    # Given the API
    handler = StandInIngest()
    api = serve(handler)
    # When a chunked body's chunk size is not hexadecimal
    status, body = raw_exchange(
        api,
        b"POST /v1/invoices HTTP/1.1\r\nHost: relay.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    )
    # Then it is a bad request and the function never runs
    assert (status, json.loads(body)) == (400, {"message": "Bad Request"})
    assert handler.events == []


def test_an_encoded_slash_stays_inside_its_path_parameter(serve: Callable[..., LocalHttpApi]) -> None:
    # Given the API
    handler = StandInIngest()
    api = serve(handler)
    # When the order id in the path holds an encoded slash
    response = request(api, "GET", "/v1/invoices/FY%2F1")
    # Then the route is matched on the path as sent, and the parameter is decoded after
    assert response.status == 202
    (event,) = handler.events
    assert event["rawPath"] == "/v1/invoices/FY%2F1"
    assert event["pathParameters"] == {"orderId": "FY/1"}


@pytest.mark.parametrize(("method", "path"), [("HEAD", "/v1/invoices/FY1"), ("POST", "/v1/invoices/FY1")])
def test_a_method_without_a_route_on_a_known_path_is_404(
    serve: Callable[..., LocalHttpApi], method: str, path: str
) -> None:
    # Given the API, whose template routes only GET to /v1/invoices/{orderId}
    handler = StandInIngest()
    api = serve(handler)
    # When another method asks for that path (HEAD included, which werkzeug would route to GET)
    response = request(api, method, path)
    # Then API Gateway's 404 answers and the function is not invoked
    assert response.status == 404
    assert handler.events == []


def test_forwarded_headers_are_added_unless_the_client_sent_them(serve: Callable[..., LocalHttpApi]) -> None:
    # Given the API
    handler = StandInIngest()
    api = serve(handler)
    # When one request comes straight from a client and one through a proxy that says so
    request(api, "POST", "/v1/invoices", b"{}")
    request(api, "POST", "/v1/invoices", b"{}", [("X-Forwarded-For", "203.0.113.7")])
    # Then the gateway's own forwarding headers are added, and the proxy's are kept
    direct, proxied = (event["headers"] for event in handler.events)
    assert (direct["x-forwarded-for"], direct["x-forwarded-port"], direct["x-forwarded-proto"]) == (
        "127.0.0.1",
        str(api.port),
        "http",
    )
    assert proxied["x-forwarded-for"] == "203.0.113.7"


def test_each_request_is_one_access_log_line(
    serve: Callable[..., LocalHttpApi], caplog: pytest.LogCaptureFixture
) -> None:
    # Given the API
    api = serve(StandInIngest())
    # When a request is answered
    with caplog.at_level(logging.INFO, logger="relay_local.http_api"):
        request(api, "POST", "/v1/invoices?x=1", b"{}")
    # Then one line says who asked what and the status, on the local API's logger
    lines = [r.getMessage() for r in caplog.records if r.name == "relay_local.http_api"]
    assert lines == ['127.0.0.1 - "POST /v1/invoices?x=1 HTTP/1.1" 202 -']


def test_a_port_in_use_is_an_os_error() -> None:
    # Given a port someone else listens on
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # When the API is made on it, Then it raises OSError (make run reports it) and does not exit
        with pytest.raises(OSError, match="in use"):
            LocalHttpApi(LambdaFunction("IngestFunction", StandInIngest(), 10), TEMPLATE_ROUTES, port=port)


def test_a_request_in_flight_when_the_api_stops_is_answered_and_not_logged_after(
    serve: Callable[..., LocalHttpApi], caplog: pytest.LogCaptureFixture
) -> None:
    # Given a request whose function is still running when `make run` stops the API
    running, stopped = threading.Event(), threading.Event()

    def slow(_: dict[str, Any]) -> Any:
        running.set()
        stopped.wait(10)
        return {"statusCode": 202, "body": "{}"}

    api = serve(StandInIngest(slow))
    answers: list[Answer] = []
    client = threading.Thread(target=lambda: answers.append(request(api, "POST", "/v1/invoices", b"{}")))
    with caplog.at_level(logging.INFO, logger="relay_local.http_api"):
        client.start()
        assert running.wait(10)
        # When the API stops, and only then the function answers
        api.stop()
        stopped.set()
        client.join(10)
    # Then the client still gets its answer, and nothing is logged after the stop
    assert [answer.status for answer in answers] == [202]
    assert [r for r in caplog.records if r.name == "relay_local.http_api"] == []


def test_a_function_that_is_stopping_is_503_without_a_traceback(
    serve: Callable[..., LocalHttpApi], caplog: pytest.LogCaptureFixture
) -> None:
    # Given a function whose runtime is stopping (make run is shutting down)
    def stopping(_: dict[str, Any]) -> Any:
        raise RuntimeStoppedError("Runtime.Stopped", "IngestFunction: the local runtime is stopping")

    api = serve(StandInIngest(stopping))
    # When a request reaches it
    with caplog.at_level(logging.INFO, logger="relay_local.http_api"):
        response = request(api, "POST", "/v1/invoices", b"{}")
    # Then the client is told to come back (503), and the log has the access line, no traceback
    assert (response.status, json.loads(response.body)) == (503, {"message": "Service Unavailable"})
    assert [r.levelno for r in caplog.records if r.name == "relay_local.http_api"] == [logging.INFO]
