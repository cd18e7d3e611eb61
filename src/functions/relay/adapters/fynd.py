"""Fynd Konnect's Update Invoice over HTTP, read as tolerantly as ../shared/spec says it must be.

One class, one job: send a FyndCall and return a FyndReceipt, or raise the FyndCallError
that says why no per-order answer can be trusted. Tokens are cached per credential until
shortly before they expire and fetched afresh, once, when Fynd answers 401/403.
"""

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlencode

import urllib3
from aws_lambda_powertools.metrics import MetricUnit

from relay.domain.delivery import (
    FyndAmbiguous,
    FyndAuthError,
    FyndCall,
    FyndCallError,
    FyndReceipt,
    FyndThrottled,
    FyndUnavailable,
    OrderError,
)
from relay.observability import count, measure, tracer

INVOICE_PATH = "/oms/v3/shipment/invoiceUpdate"
TOKEN_PATH = "/aggregator/v1/token"  # noqa: S105 - a path, not a secret
DEFAULT_TOKEN_SECONDS = 3600
"""Fynd does not publish the lifetime; integrators report one hour."""
TOKEN_REFRESH_MARGIN = 300


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str
    location_code: str | None = None
    """Set for location-level credentials, which work for that one location only."""

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, location_code={self.location_code!r})"


class CredentialSource(Protocol):
    def for_location(self, location_code: str | None) -> Credentials: ...


class FyndClient:
    def __init__(
        self,
        base_url: str,
        credentials: CredentialSource,
        *,
        http: urllib3.PoolManager | None = None,
        timeout: urllib3.Timeout | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._credentials = credentials
        self._http = http or urllib3.PoolManager(maxsize=4)
        self._timeout = timeout or urllib3.Timeout(connect=3.0, read=20.0)
        self._clock = clock
        self._tokens: dict[tuple[str, str | None], tuple[str, float]] = {}

    def update_invoices(self, call: FyndCall, *, time_budget_seconds: float | None = None) -> FyndReceipt:
        credentials = self._credentials.for_location(call.location_code)
        query = f"?{urlencode({'locationCode': call.location_code})}" if call.location_code else ""
        body = json.dumps([invoice.to_fynd() for invoice in call.invoices]).encode()
        url = self._base + INVOICE_PATH + query
        with tracer.provider.in_subsegment("## Fynd Update Invoice") as subsegment:
            # Annotations are searchable in X-Ray (annotation.fynd_status = "503"); strings, as
            # Powertools' types take no int. Counts, codes and keys only, never a body or a token.
            subsegment.put_annotation("fynd_orders", str(len(call.invoices)))
            subsegment.put_metadata("invoice_keys", [str(invoice.key) for invoice in call.invoices])
            try:
                started = time.perf_counter()
                response = self._post_refreshing_once(url, body, credentials)
                measure("FyndCallLatency", (time.perf_counter() - started) * 1000, MetricUnit.Milliseconds)
                measure("OrdersPerCall", len(call.invoices), MetricUnit.Count)
                subsegment.put_annotation("fynd_status", str(response.status))
                receipt = _receipt(call, response)
            except FyndCallError as failure:
                subsegment.put_annotation("fynd_failure", failure.reason)
                if failure.status is not None:
                    subsegment.put_annotation("fynd_status", str(failure.status))
                raise
            subsegment.put_annotation("fynd_result", receipt.status)
            subsegment.put_annotation(
                "fynd_codes", ",".join(sorted({e.code for e in receipt.errors.values()}))
            )
            return receipt

    def _post_refreshing_once(
        self, url: str, body: bytes, credentials: Credentials
    ) -> urllib3.BaseHTTPResponse:
        """Fynd answers 401/403 to an expired token: fetch a new one, once."""
        response = self._post(url, body, credentials)
        if response.status in (401, 403):
            count("TokenRefreshes", reason="rejected")
            self._tokens.pop(_cache_key(credentials), None)
            response = self._post(url, body, credentials)
            if response.status in (401, 403):
                count("TokenFailures")
                raise FyndAuthError("Fynd refused a freshly issued token", status=response.status)
        return response

    def _post(self, url: str, body: bytes, credentials: Credentials) -> urllib3.BaseHTTPResponse:
        headers = {"Content-Type": "application/json", "x-access-token": self._token(credentials)}
        try:
            return self._http.request(
                "POST", url, body=body, headers=headers, timeout=self._timeout, retries=False
            )
        except (
            urllib3.exceptions.ConnectTimeoutError,
            urllib3.exceptions.NewConnectionError,
        ) as error:
            raise FyndUnavailable(f"could not connect to Fynd ({type(error).__name__})") from error
        except urllib3.exceptions.HTTPError as error:
            # The request left; Fynd may have applied it. The retry's IN453 will tell.
            raise FyndAmbiguous(f"no answer from Fynd after sending ({type(error).__name__})") from error

    def _token(self, credentials: Credentials) -> str:
        key = _cache_key(credentials)
        cached = self._tokens.get(key)
        if cached and cached[1] > self._clock():
            return cached[0]
        query = urlencode({"username": credentials.username, "password": credentials.password})
        try:
            response = self._http.request(
                "GET", f"{self._base}{TOKEN_PATH}?{query}", timeout=self._timeout, retries=False
            )
        except urllib3.exceptions.HTTPError as error:
            # Never str(error): urllib3 may quote the URL, and the URL carries the password.
            raise FyndUnavailable(f"Fynd token endpoint unreachable ({type(error).__name__})") from error
        if response.status in (400, 401, 403):
            count("TokenFailures")
            raise FyndAuthError(
                f"Fynd refused the credentials of {credentials.username!r}", status=response.status
            )
        if response.status != 200:
            raise _http_failure(response, "Fynd token endpoint")
        token, lifetime = _parse_token(response.data)
        count("TokenRefreshes", reason="fetched")
        margin = min(TOKEN_REFRESH_MARGIN, lifetime / 10)
        self._tokens[key] = (token, self._clock() + lifetime - margin)
        return token


def _cache_key(credentials: Credentials) -> tuple[str, str | None]:
    return credentials.username, credentials.location_code


def _parse_token(data: bytes) -> tuple[str, float]:
    try:
        document = json.loads(data)
        inner = document.get("data") if isinstance(document.get("data"), dict) else document
        token = (
            inner.get("access_token")
            or inner.get("token")
            or document.get("access_token")
            or document.get("token")
        )
        lifetime = float(inner.get("expires_in") or document.get("expires_in") or DEFAULT_TOKEN_SECONDS)
    except (ValueError, TypeError, AttributeError) as error:
        raise FyndUnavailable("Fynd token endpoint answered something that is not a token") from error
    if not isinstance(token, str) or not token:
        raise FyndUnavailable("Fynd token endpoint answered without a token")
    return token, max(lifetime, 1.0)


def _http_failure(response: urllib3.BaseHTTPResponse, what: str) -> FyndCallError:
    retry_after = _retry_after(response.headers.get("Retry-After"))
    if response.status == 429:
        return FyndThrottled(f"{what} is rate limiting (429)", retry_after=retry_after, status=429)
    if response.status >= 500:
        return FyndUnavailable(
            f"{what} failed ({response.status})", retry_after=retry_after, status=response.status
        )
    return FyndCallError(f"{what} refused the call ({response.status})", status=response.status)


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: our own back-off is close enough


def _receipt(call: FyndCall, response: urllib3.BaseHTTPResponse) -> FyndReceipt:
    if response.status != 200:
        raise _http_failure(response, "Fynd Update Invoice")
    try:
        document = json.loads(response.data)
    except ValueError as error:
        raise FyndAmbiguous("Fynd answered 200 with a body that is not JSON") from error
    if not isinstance(document, dict):
        raise FyndAmbiguous("Fynd answered 200 with a body that is not an object")
    data: dict[str, Any] = document["data"] if isinstance(document.get("data"), dict) else document
    meta: dict[str, Any] = document["meta"] if isinstance(document.get("meta"), dict) else {}
    status = str(meta.get("status") or data.get("status") or "SUCCESS").upper()
    ack_id = meta.get("ack_id") or data.get("ack_id")
    raw_errors = data.get("errors") or []
    failed = data.get("failedCount", data.get("failed_count"))
    if not isinstance(raw_errors, list):
        raise FyndAmbiguous("Fynd's errors field is not a list")
    orders = {invoice.orderId for invoice in call.invoices}
    errors: dict[str, OrderError] = {}
    for raw in raw_errors:
        order_error = _order_error(raw)
        if order_error is None or order_error.order_id not in orders:
            raise FyndAmbiguous("Fynd named an error we cannot match to an order of the call")
        errors[order_error.order_id] = order_error
    if status != "SUCCESS" and not errors:
        raise FyndAmbiguous(f"Fynd answered {status} without saying which orders failed")
    if isinstance(failed, int) and failed > len(errors):
        raise FyndAmbiguous(f"Fynd counted {failed} failures but named {len(errors)}")
    return FyndReceipt(call, errors, str(ack_id) if ack_id else None, status)


def _order_error(raw: Any) -> OrderError | None:
    if not isinstance(raw, Mapping):
        return None
    order_id = _first(raw, "orderId", "order_id", "shipmentId", "shipment_id")
    code = _first(raw, "code", "error_code", "errorCode")
    message = _first(raw, "message", "error_message", "errorMessage", "reason") or ""
    if not order_id or not code:
        return None
    return OrderError(order_id, code, message)


def _first(raw: Mapping[str, Any], *names: str) -> str | None:
    for name in names:
        value = raw.get(name)
        if value not in (None, ""):
            return str(value)
    return None
