"""ERPNext's `Fynd Invoice Sync` records over Frappe's REST resource API, with token auth.

One record per invoice key, named by `relay_key` (the DocType's autoname, see
docs/erpnext/fynd_invoice_sync.json), so the record is found by its name and two creators
cannot make two. To deliver an outcome: GET the record; if there is none, POST it (a 409
means someone created it meanwhile: GET again); if it is older than the outcome, PUT the
fields (relay.domain.writeback.supersedes); if it is as new or newer, nothing. The
write-back queue gives one message per key at a time, so nothing else writes the record
between our GET and our PUT.

The record is never written through the Sales Invoice (a submitted invoice takes no edits,
and an edit would fire the invoice's own webhooks); its `sales_invoice` Link shows it on
the invoice's dashboard.

| Frappe answers                         | raised                                          |
| -------------------------------------- | ----------------------------------------------- |
| 2xx                                    | done                                            |
| GET 404                                | (no record: POST)                               |
| POST 409 (DuplicateEntryError)         | (GET again, once)                               |
| 401, 403                               | TargetDown: the API key is wrong for every record |
| 408, 429, 5xx, no answer, timeout      | TargetDown                                      |
| any other 4xx (404 on PUT, 417, ...)   | OutcomeRefused, with Frappe's exception type    |

Frappe's error bodies quote the request's values at times (a Link it could not find); only
the exception's type (`exc_type`) is kept.
"""

import json
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import urllib3

from relay.domain.errors import OutcomeRefused, TargetDown
from relay.domain.writeback import Outcome, supersedes, sync_fields, sync_name

DOCTYPE = "Fynd Invoice Sync"
RESOURCE_PATH = "/api/resource/" + quote(DOCTYPE)
SERVER_TROUBLE = frozenset({408, 429})


class ErpNextSync:
    name = "erpnext"

    def __init__(
        self,
        base_url: str,
        token: Callable[[], str],
        *,
        http: urllib3.PoolManager | None = None,
        timeout: urllib3.Timeout | None = None,
    ) -> None:
        """`token` gives `<api key>:<api secret>` (read from Secrets Manager, cached); it raises
        TargetDown when the secret cannot be read now."""
        self._base = base_url.rstrip("/")
        self._token = token
        self._http = http or urllib3.PoolManager(maxsize=2)
        self._timeout = timeout or urllib3.Timeout(connect=3.0, read=10.0)

    def deliver(self, outcome: Outcome) -> None:
        fields = sync_fields(outcome)
        path = f"{RESOURCE_PATH}/{quote(sync_name(outcome.key), safe='')}"
        recorded = self._read(path)
        if recorded is None:
            status, body = self._request("POST", RESOURCE_PATH, fields)
            if status != 409:
                _settle("POST", status, body)
                return
            recorded = self._read(path)  # created meanwhile (a redelivery, a manual entry)
            if recorded is None:
                raise OutcomeRefused(f"{DOCTYPE} POST answered 409 and GET 404")
        if supersedes(outcome, recorded):
            _settle("PUT", *self._request("PUT", path, fields))

    def _read(self, path: str) -> Mapping[str, Any] | None:
        status, body = self._request("GET", path, None)
        if status == 404:
            return None
        _settle("GET", status, body)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            raise OutcomeRefused(f"{DOCTYPE} GET answered {status} without a record")
        return data

    def _request(self, method: str, path: str, fields: Mapping[str, Any] | None) -> tuple[int, Any]:
        headers = {"Authorization": f"token {self._token()}", "Accept": "application/json"}
        body = None
        if fields is not None:
            headers["Content-Type"] = "application/json"
            body = json.dumps(fields).encode()
        try:
            answer = self._http.request(
                method,
                self._base + path,
                body=body,
                headers=headers,
                timeout=self._timeout,
                retries=False,
                redirect=False,
            )
        except urllib3.exceptions.HTTPError as error:
            raise TargetDown(f"{DOCTYPE} {method} failed ({type(error).__name__})") from None
        try:
            parsed = json.loads(answer.data or b"null")
        except ValueError:
            parsed = None
        return answer.status, parsed


def _settle(method: str, status: int, body: Any) -> None:
    """Nothing for a 2xx; the typed failure otherwise (the table above)."""
    if 200 <= status < 300:
        return
    exc_type = body.get("exc_type") if isinstance(body, dict) else None
    detail = f"{DOCTYPE} {method} answered {status}" + (f" ({exc_type})" if isinstance(exc_type, str) else "")
    if status in (401, 403) or status in SERVER_TROUBLE or status >= 500:
        raise TargetDown(detail)
    raise OutcomeRefused(detail)
