"""`send FILE` and `status ORDER_ID`: what an ERP does, from a shell.

`send` signs a JSON file's text exactly as it is on disk (Standard Webhooks, with the
reference package) and posts it to `/v1/invoices`; `status` signs its request line
(`GET /v1/invoices/{orderId}?invoiceType=...`, as sent) and asks for it. Both print the HTTP status and the JSON answer and exit 0 on a
2xx, 1 on any other answer, 2 when they could not ask at all (no secret, unreadable file,
nothing listening). The secret comes from WEBHOOK_SECRET, the API from RELAY_API_URL.
"""

import json
import sys
from collections.abc import Mapping
from http import HTTPStatus
from pathlib import Path
from typing import TextIO
from urllib.parse import quote, urlsplit

import urllib3

from relay_local.environment import DEFAULT_API_URL
from relay_local.signing import check_secret, signed_headers, status_headers

_TIMEOUT = urllib3.Timeout(connect=3.0, read=30.0)


class SendError(Exception):
    """The request could not be made; the message says what to do."""


def target(environ: Mapping[str, str]) -> tuple[str, str]:
    """(secret, API base URL) from the environment, or SendError saying what is missing."""
    secret = environ.get("WEBHOOK_SECRET") or ""
    if not secret:
        raise SendError(
            "WEBHOOK_SECRET is not set: use the secret `make run` printed, e.g.\n"
            "  WEBHOOK_SECRET='whsec_...' make send FILE=events/invoice.json"
        )
    try:
        check_secret(secret)
    except ValueError as error:
        raise SendError(f"WEBHOOK_SECRET: {error}") from None
    return secret, (environ.get("RELAY_API_URL") or DEFAULT_API_URL).rstrip("/")


def not_answering(url: str, error: Exception, environ: Mapping[str, str]) -> str:
    """Why nothing answered, naming the address tried and where it came from: a run on another
    port (RELAY_API_PORT) is the likely cause, and starting a second one would not help."""
    parts = urlsplit(url)
    where = f"{parts.hostname}:{parts.port or 80}"
    source = (
        f"RELAY_API_URL={environ['RELAY_API_URL']}"
        if environ.get("RELAY_API_URL")
        else f"the default, RELAY_API_URL unset ({DEFAULT_API_URL})"
    )
    reason = type(getattr(error, "reason", None) or error).__name__
    return (
        f"nothing answered at {where} ({reason}); that address is {source}.\n"
        "  If `make run` is running, set RELAY_API_URL to the `API` line of its banner"
        " (it serves on RELAY_API_PORT);\n  otherwise start one with `make run`."
    )


def send(path: Path, environ: Mapping[str, str], out: TextIO) -> int:
    secret, api_url = target(environ)
    try:
        body = path.read_text()
    except OSError as error:
        raise SendError(f"cannot read {path}: {error.strerror}") from None
    try:
        json.loads(body)
    except ValueError as error:
        raise SendError(f"{path} is not JSON ({error}); the relay would answer 400") from None
    headers = {"Content-Type": "application/json", **signed_headers(secret, body)}
    return _exchange("POST", f"{api_url}/v1/invoices", body, headers, out, environ)


def status(order_id: str, invoice_type: str, environ: Mapping[str, str], out: TextIO) -> int:
    secret, api_url = target(environ)
    path = f"{urlsplit(api_url).path}/v1/invoices/{quote(order_id, safe='')}"
    query = f"invoiceType={quote(invoice_type, safe='')}"
    return _exchange(
        "GET",
        f"{api_url}/v1/invoices/{quote(order_id, safe='')}?{query}",
        None,
        status_headers(secret, path, query),
        out,
        environ,
    )


def _exchange(
    method: str, url: str, body: str | None, headers: dict[str, str], out: TextIO, environ: Mapping[str, str]
) -> int:
    print(f"{method} {url}  (webhook-id {headers['webhook-id']})", file=out)
    try:
        response = urllib3.request(
            method,
            url,
            body=body.encode() if body is not None else None,
            headers=headers,
            timeout=_TIMEOUT,
            retries=False,
        )
    except urllib3.exceptions.HTTPError as error:
        raise SendError(not_answering(url, error, environ)) from None
    print(f"{response.status} {_reason(response.status)}", file=out)
    text = response.data.decode(errors="replace")
    try:
        print(json.dumps(json.loads(text), indent=2), file=out)
    except ValueError:
        print(text, file=out)
    return 0 if 200 <= response.status < 300 else 1


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def main(command: str, argument: str, invoice_type: str, environ: Mapping[str, str]) -> int:
    try:
        if command == "send":
            return send(Path(argument), environ, sys.stdout)
        return status(argument, invoice_type, environ, sys.stdout)
    except SendError as error:
        print(f"{command}: {error}", file=sys.stderr)
        return 2
