"""What AWS hands a Lambda function, one builder per event source.

- `http_api_event`: API Gateway's HTTP API, payload format 2.0, for one request;
- `sqs_record`: one record of the SQS event Lambda's event source mapping builds from a
  received message;
- `scheduled_event`: EventBridge's Scheduled Event.

The local runtime builds its live events with them (relay_local.http_api, .event_source,
.schedules) and the sample events of events/ are built with them too (relay_local.events),
so a sample cannot drift from what the local run, and AWS, hands the functions.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from relay_local.identity import ACCOUNT_ID, REGION

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import MessageAttributeValueOutputTypeDef, MessageTypeDef


@dataclass(frozen=True)
class HttpRequest:
    """One HTTP request as the gateway received it."""

    method: str
    target: str
    """The request target as sent: the raw (still encoded) path, then `?` and the query if any."""
    headers: Sequence[tuple[str, str]]
    """Every header line as received, repeated names included."""
    body: bytes
    source_ip: str
    protocol: str = "HTTP/1.1"

    @property
    def raw_path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def raw_query(self) -> str:
        return self.target.partition("?")[2]


def http_api_event(
    request: HttpRequest,
    route_key: str,
    path_parameters: Mapping[str, str],
    *,
    api_id: str,
    domain: str,
    request_id: str,
    at: float,
) -> dict[str, Any]:
    """The payload format 2.0 event API Gateway hands the function of route `route_key` for `request`.

    Header names are lower-cased and a repeated header's values joined with commas; the
    Cookie header becomes `cookies`; the query string's parameters are decoded, repeated
    ones joined with commas; a body that is not UTF-8 is base64-encoded and flagged. The
    domain is the Host header's, else `domain`. `at` is the request's time (epoch seconds).
    """
    raw_path, raw_query, body = request.raw_path, request.raw_query, request.body
    combined: dict[str, str] = {}
    for name, value in request.headers:
        key = name.lower()
        combined[key] = f"{combined[key]},{value}" if key in combined else value
    cookie_header = combined.pop("cookie", "")
    domain = combined.get("host", domain)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": raw_path,
        "rawQueryString": raw_query,
    }
    cookies = [cookie.strip() for cookie in cookie_header.split(";") if cookie.strip()]
    if cookies:
        event["cookies"] = cookies
    event["headers"] = combined
    if raw_query:
        query: dict[str, str] = {}
        for name, value in parse_qsl(raw_query, keep_blank_values=True):
            query[name] = f"{query[name]},{value}" if name in query else value
        event["queryStringParameters"] = query
    if path_parameters:
        event["pathParameters"] = dict(path_parameters)
    event["requestContext"] = {
        "accountId": ACCOUNT_ID,
        "apiId": api_id,
        "domainName": domain,
        "domainPrefix": domain.split(".")[0],
        "http": {
            "method": request.method,
            "path": raw_path,
            "protocol": request.protocol,
            "sourceIp": request.source_ip,
            "userAgent": combined.get("user-agent", ""),
        },
        "requestId": request_id,
        "routeKey": route_key,
        "stage": "$default",
        "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(at)),
        "timeEpoch": int(at * 1000),
    }
    event["isBase64Encoded"] = False
    if body:
        try:
            event["body"] = body.decode("utf-8")
        except UnicodeDecodeError:
            event["body"] = base64.b64encode(body).decode()
            event["isBase64Encoded"] = True
    return event


def sqs_record(message: MessageTypeDef, queue_arn: str, region: str) -> dict[str, Any]:
    """The record Lambda builds for one received message (an item of an SQS event's "Records")."""
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message.get("Body", ""),
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": {
            name: _lambda_attribute(value) for name, value in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }
    if "MD5OfMessageAttributes" in message:
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    return record


def _lambda_attribute(value: MessageAttributeValueOutputTypeDef) -> dict[str, Any]:
    """An SQS message attribute as Lambda spells it: camelCase, binary as base64 text."""
    attribute: dict[str, Any] = {}
    if "StringValue" in value:
        attribute["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        attribute["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
    attribute["stringListValues"] = list(value.get("StringListValues", []))
    attribute["binaryListValues"] = [
        base64.b64encode(item).decode() for item in value.get("BinaryListValues", [])
    ]
    attribute["dataType"] = value["DataType"]
    return attribute


def scheduled_event(rule: str, *, event_id: str, at: float) -> dict[str, Any]:
    """What EventBridge hands a function for scheduled rule `rule`: no payload, the rule and the time."""
    return {
        "version": "0",
        "id": event_id,
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT_ID,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)),
        "region": REGION,
        "resources": [f"arn:aws:events:{REGION}:{ACCOUNT_ID}:rule/{rule}"],
        "detail": {},
    }
