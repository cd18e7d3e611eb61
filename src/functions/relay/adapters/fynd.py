"""Fynd Konnect over HTTP: Update Invoice and Get Shipment Info, read as docs/fynd-update-invoice.md
says they must be (the reading itself is fynd_answers.py).

One class, one job per endpoint: send a FyndCall and return a FyndReceipt, or read one
order's Shipment Info; or raise the FyndCallError that says why no answer can be trusted.
Tokens are cached per credential until shortly before they expire and fetched afresh,
once, when Fynd answers 401/403.

Time: every method takes `time_budget_seconds` and finishes inside it, token fetch and one
refresh included. One monotonic deadline is set on entry; each request gets
`urllib3.Timeout(total=...)` from what is left (never more than the configured connect +
read), and a token fetch at most half of what is left, so a slow token endpoint cannot eat
the time the call itself needs. urllib3's total bounds connecting and each read; a server
that trickles bytes could still overrun it slightly, which the dispatcher's margin covers.

| out of time                                         | raised           |
| --------------------------------------------------- | ---------------- |
| before the POST is sent (token fetch included)      | FyndNotSent      |
| after a 401, before the second POST (nothing applied) | FyndNotSent     |
| while waiting for the POST's answer                 | FyndAmbiguous    |

Whole-call HTTP answers to Update Invoice:

| status                          | raised                                         |
| ------------------------------- | ---------------------------------------------- |
| 200, 201                        | receipt, or FyndAmbiguous (confirmation rule)  |
| other 2xx (202 means queued), 3xx | FyndAmbiguous                                |
| 401/403 twice                   | FyndAuthError                                  |
| 429                             | FyndThrottled (Retry-After kept)               |
| 408                             | FyndUnavailable (the request never arrived)    |
| 404, 405, 410, 415              | FyndCallError: our endpoint or media type is wrong for every call, so splitting would reject good invoices |
| any other 4xx (400, 413, 422)   | FyndCallRefused with the status and a short reason |
| 5xx                             | FyndUnavailable                                |
| connection refused or not made  | FyndNotSent (nothing left: no Shipment Info read next time) |

`credential_for` names the credential a location's calls use: the unit of Fynd's rate limit,
which the dispatcher's rate limiter counts (relay.domain.ports.RateLimiter).
"""

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlencode

import urllib3
from aws_lambda_powertools.metrics import MetricUnit

from relay.adapters.fynd_answers import read_receipt, read_shipment_info, refusal_detail
from relay.domain.fynd import (
    FyndAmbiguous,
    FyndAuthError,
    FyndCall,
    FyndCallError,
    FyndCallRefused,
    FyndNotSent,
    FyndReceipt,
    FyndThrottled,
    FyndUnavailable,
    encode_invoices,
)
from relay.domain.shipment import ShipmentInfo
from relay.observability import count, measure, tracer

INVOICE_PATH = "/oms/v3/shipment/invoiceUpdate"
SHIPMENT_INFO_PATH = "/oms/v3/shipment/info"
TOKEN_PATH = "/aggregator/v1/token"  # noqa: S105 - a path, not a secret
DEFAULT_TOKEN_SECONDS = 3600
"""Fynd does not publish the lifetime; integrators report one hour."""
TOKEN_REFRESH_MARGIN = 300
MIN_REQUEST_SECONDS = 0.5
"""No request is started with less time than this left: a POST cut short by our own
deadline is an ambiguous outcome we chose to create."""
TOKEN_SHARE = 0.5
"""A token fetch may use at most this share of the time left."""
NOT_ABOUT_THE_BODY = frozenset({404, 405, 410, 415})
CONFIRMING_HTTP = frozenset({200, 201})


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


class _Deadline:
    def __init__(self, seconds: float, monotonic: Callable[[], float]) -> None:
        self._monotonic = monotonic
        self._end = monotonic() + seconds

    def left(self) -> float:
        return self._end - self._monotonic()


class FyndClient:
    def __init__(
        self,
        base_url: str,
        credentials: CredentialSource,
        *,
        http: urllib3.PoolManager | None = None,
        timeout: urllib3.Timeout | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """`timeout` caps one request (its connect and connect + read); the budget caps them all."""
        self._base = base_url.rstrip("/")
        self._credentials = credentials
        self._http = http or urllib3.PoolManager(maxsize=4)
        limits = timeout or urllib3.Timeout(connect=3.0, read=20.0)
        self._connect_seconds = _seconds(limits.connect_timeout, 3.0)
        self._request_seconds = self._connect_seconds + _seconds(limits.read_timeout, 20.0)
        self._clock = clock
        self._monotonic = monotonic
        self._tokens: dict[tuple[str, str | None], tuple[str, float]] = {}

    def update_invoices(self, call: FyndCall, *, time_budget_seconds: float) -> FyndReceipt:
        """Send one call within the budget. A receipt only when the answer positively confirms
        every order it does not name; otherwise the FyndCallError that says why (module table)."""
        deadline = _Deadline(time_budget_seconds, self._monotonic)
        credentials = self._credentials.for_location(call.location_code)
        query = f"?{urlencode({'locationCode': call.location_code})}" if call.location_code else ""
        body = encode_invoices(call.invoices)
        url = self._base + INVOICE_PATH + query
        with tracer.provider.in_subsegment("## Fynd Update Invoice") as subsegment:
            # Annotations are searchable in X-Ray (annotation.fynd_status = "503"); strings, as
            # Powertools' types take no int. Counts, codes and keys only, never a body or a token.
            subsegment.put_annotation("fynd_orders", str(len(call.invoices)))
            subsegment.put_metadata("invoice_keys", [str(invoice.key) for invoice in call.invoices])
            try:
                started = time.perf_counter()
                response = self._send("POST", url, body, credentials, deadline)
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

    def credential_for(self, location_code: str | None) -> str:
        """The username a location's calls go out with (FyndCallError when it cannot be read)."""
        return self._credentials.for_location(location_code).username

    def shipment_info(
        self, order_id: str, location_code: str | None, *, time_budget_seconds: float
    ) -> ShipmentInfo:
        """One order's Get Shipment Info entry. A read changes nothing at Fynd, so every way of
        getting no answer is FyndUnavailable (FyndThrottled for 429). A 404 or an answer
        without the order is `found=False`, which proves nothing."""
        deadline = _Deadline(time_budget_seconds, self._monotonic)
        credentials = self._credentials.for_location(location_code)
        params = {"orderId": order_id, **({"locationCode": location_code} if location_code else {})}
        url = f"{self._base}{SHIPMENT_INFO_PATH}?{urlencode(params)}"
        with tracer.provider.in_subsegment("## Fynd Shipment Info") as subsegment:
            try:
                response = self._send("GET", url, None, credentials, deadline)
                subsegment.put_annotation("fynd_status", str(response.status))
                if response.status == 404:
                    return ShipmentInfo(order_id, found=False)
                if not 200 <= response.status < 300:
                    raise _http_failure(response, "Fynd Shipment Info", refusable=False)
            except FyndCallError as failure:
                subsegment.put_annotation("fynd_failure", failure.reason)
                raise
            return read_shipment_info(order_id, response.data)

    def _send(
        self, method: str, url: str, body: bytes | None, credentials: Credentials, deadline: _Deadline
    ) -> urllib3.BaseHTTPResponse:
        """One request with a token; Fynd answers 401/403 to an expired token: fetch a new one, once."""
        response = self._request(method, url, body, self._token(credentials, deadline), deadline)
        if response.status in (401, 403):
            count("TokenRefreshes", reason="rejected")
            self._tokens.pop(_cache_key(credentials), None)
            response = self._request(method, url, body, self._token(credentials, deadline), deadline)
            if response.status in (401, 403):
                count("TokenFailures")
                raise FyndAuthError("Fynd refused a freshly issued token", status=response.status)
        return response

    def _request(
        self, method: str, url: str, body: bytes | None, token: str, deadline: _Deadline
    ) -> urllib3.BaseHTTPResponse:
        timeout = self._timeout(deadline.left(), share=1.0)
        headers = {"x-access-token": token}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            return self._http.request(method, url, body=body, headers=headers, timeout=timeout, retries=False)
        except (
            urllib3.exceptions.ConnectTimeoutError,
            urllib3.exceptions.NewConnectionError,
        ) as error:
            raise FyndNotSent(f"could not connect to Fynd ({type(error).__name__})") from error
        except urllib3.exceptions.HTTPError as error:
            if method == "GET":
                raise FyndUnavailable(f"no answer from Fynd ({type(error).__name__})") from error
            # The request left; Fynd may have applied it. The retry's IN453 will tell.
            raise FyndAmbiguous(f"no answer from Fynd after sending ({type(error).__name__})") from error

    def _timeout(self, left: float, *, share: float) -> urllib3.Timeout:
        """The request's whole allowance, or FyndNotSent when too little is left to start it."""
        allowed = min(self._request_seconds, left * share)
        if allowed < MIN_REQUEST_SECONDS:
            raise FyndNotSent(f"out of time before the request ({max(left, 0):.2f} s left)")
        return urllib3.Timeout(total=allowed, connect=min(self._connect_seconds, allowed))

    def _token(self, credentials: Credentials, deadline: _Deadline) -> str:
        key = _cache_key(credentials)
        cached = self._tokens.get(key)
        if cached and cached[1] > self._clock():
            return cached[0]
        query = urlencode({"username": credentials.username, "password": credentials.password})
        timeout = self._timeout(deadline.left(), share=TOKEN_SHARE)
        try:
            response = self._http.request(
                "GET", f"{self._base}{TOKEN_PATH}?{query}", timeout=timeout, retries=False
            )
        except urllib3.exceptions.HTTPError as error:
            # Never str(error): urllib3 may quote the URL, and the URL carries the password.
            raise FyndNotSent(f"Fynd token endpoint unreachable ({type(error).__name__})") from error
        if response.status in (400, 401, 403):
            count("TokenFailures")
            raise FyndAuthError(
                f"Fynd refused the credentials of {credentials.username!r}", status=response.status
            )
        if response.status != 200:
            raise _http_failure(response, "Fynd token endpoint", refusable=False)
        token, lifetime = _parse_token(response.data)
        count("TokenRefreshes", reason="fetched")
        margin = min(TOKEN_REFRESH_MARGIN, lifetime / 10)
        self._tokens[key] = (token, self._clock() + lifetime - margin)
        return token


def _seconds(value: object, default: float) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


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
        raise FyndNotSent("Fynd token endpoint answered something that is not a token") from error
    if not isinstance(token, str) or not token:
        raise FyndNotSent("Fynd token endpoint answered without a token")
    return token, max(lifetime, 1.0)


def _http_failure(response: urllib3.BaseHTTPResponse, what: str, *, refusable: bool) -> FyndCallError:
    status = response.status
    retry_after = _retry_after(response.headers.get("Retry-After"))
    if status == 429:
        return FyndThrottled(f"{what} is rate limiting (429)", retry_after=retry_after, status=429)
    if status >= 500 or status == 408:
        return FyndUnavailable(f"{what} failed ({status})", retry_after=retry_after, status=status)
    if refusable and 400 <= status < 500 and status not in NOT_ABOUT_THE_BODY:
        detail = refusal_detail(status, response.data)
        return FyndCallRefused(
            f"{what} refused the whole call ({status}): {detail}", status=status, detail=detail
        )
    return FyndCallError(f"{what} refused the call ({status})", status=status)


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: our own back-off is close enough


def _receipt(call: FyndCall, response: urllib3.BaseHTTPResponse) -> FyndReceipt:
    """The confirmation rule (fynd_answers.read_receipt): only positive proof is a receipt."""
    if response.status in CONFIRMING_HTTP:
        return read_receipt(call, response.status, response.data)
    if 200 <= response.status < 400:
        raise FyndAmbiguous(
            f"Fynd answered {response.status}, which confirms nothing", status=response.status
        )
    raise _http_failure(response, "Fynd Update Invoice", refusable=True)
