"""The relay's HTTP API as an ERP calls it: signed POST /v1/invoices and signed status GET.

Signing follows docs/interface.md with the reference `standardwebhooks` package:
- POST: the signed content is the raw body, byte for byte as sent;
- GET: the signed content is the request line `GET <path>?<query>` exactly as sent, so a
  captured signature cannot read another order. `invoiceType` is always sent, so the line
  always has its query.
"""

import json
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import urllib3
from standardwebhooks import Webhook

from relay_cli.target import TargetError

_TIMEOUT = urllib3.Timeout(connect=5.0, read=30.0)


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any


def sign(secret: str, content: str, *, msg_id: str | None = None, at: float | None = None) -> dict[str, str]:
    """The three webhook-* headers for `content`."""
    msg_id = msg_id or f"msg_{secrets.token_hex(12)}"
    timestamp = int(time.time() if at is None else at)
    signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(timestamp, UTC), content)
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}


def status_path(order_id: str, invoice_type: str) -> str:
    return f"/v1/invoices/{quote(order_id, safe='')}?invoiceType={quote(invoice_type, safe='')}"


def request_line(method: str, url: str) -> str:
    """`GET <path>?<query>` of a URL, as the status API verifies it."""
    parts = urlsplit(url)
    return f"{method} {parts.path}?{parts.query}"


def status_headers(secret: str, url: str) -> dict[str, str]:
    return sign(secret, request_line("GET", url))


class RelayApi:
    def __init__(self, api_url: str, secret: str, http: urllib3.PoolManager | None = None) -> None:
        self._url = api_url.rstrip("/")
        self._secret = secret
        self._http = http or urllib3.PoolManager(timeout=_TIMEOUT, retries=False)

    def post(self, body: str) -> Answer:
        headers = {"Content-Type": "application/json", **sign(self._secret, body)}
        return self._call("POST", f"{self._url}/v1/invoices", body.encode(), headers)

    def status(self, order_id: str, invoice_type: str = "sale") -> Answer:
        url = self._url + status_path(order_id, invoice_type)
        return self._call("GET", url, None, status_headers(self._secret, url))

    def _call(self, method: str, url: str, body: bytes | None, headers: dict[str, str]) -> Answer:
        try:
            response = self._http.request(method, url, body=body, headers=headers)
        except urllib3.exceptions.HTTPError as error:
            raise TargetError(
                f"no relay answering at {self._url} ({type(error).__name__}): is `make run` serving"
                " on another port? Pass the `API` its banner prints as --api-url (RELAY_API_URL)"
            ) from None
        text = response.data.decode(errors="replace")
        try:
            return Answer(response.status, json.loads(text) if text else None)
        except ValueError:
            return Answer(response.status, text)
