"""Frappe's `Webhook Request Log` over its REST API: the rows recovery reads (relay.domain.recovery).

`GET /api/resource/Webhook Request Log` with `Authorization: token <key>:<secret>`, filtered
to the relay's URL, rows created since a time, and an `error` set (the attempt did not end
in a 2xx; Frappe leaves `error` empty on success), oldest first, `page_size` rows a page
(Frappe's default page is 20, so the adapter always names its own). The fields read are
those Frappe's `log_request` writes (v14/v15): `name`, `creation`, `data`,
`reference_document`, `webhook`.

Any answer but a 200 with Frappe's `{"data": [...]}` is RequestLogUnavailableError naming the
status and Frappe's `exc_type` (403 PermissionError: the key's user may not read the log;
401 AuthenticationError: a wrong key). Nothing of the Authorization header is ever logged or
raised.
"""

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import urllib3

from relay.domain.errors import RequestLogUnavailableError
from relay.domain.recovery import LoggedRequest

DOCTYPE = "Webhook Request Log"
FIELDS = ["name", "creation", "data", "reference_document", "webhook"]


class FrappeRequestLog:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        api_secret: str,
        *,
        http: urllib3.PoolManager | None = None,
        page_size: int = 100,
        timeout_seconds: float = 20.0,
    ) -> None:
        self._url = f"{base_url.rstrip('/')}/api/resource/{quote(DOCTYPE)}"
        self._authorization = f"token {api_key}:{api_secret}"
        self._http = http or urllib3.PoolManager(retries=urllib3.Retry(total=2, backoff_factor=0.5))
        self._page_size = page_size
        self._timeout = urllib3.Timeout(connect=5.0, read=timeout_seconds)

    def failed_requests(self, *, url: str, since: str) -> Iterator[LoggedRequest]:
        filters = [["url", "=", url], ["creation", ">=", since], ["error", "is", "set"]]
        start = 0
        while True:
            rows = self._page(filters, start)
            for row in rows:
                yield LoggedRequest(
                    name=str(row["name"]),
                    creation=str(row.get("creation") or ""),
                    data=row.get("data") if isinstance(row.get("data"), str) else None,
                    reference_document=row.get("reference_document"),
                    webhook=row.get("webhook"),
                )
            if len(rows) < self._page_size:
                return
            start += len(rows)

    def _page(self, filters: list[list[str]], start: int) -> list[dict[str, Any]]:
        query = urlencode(
            {
                "filters": json.dumps(filters),
                "fields": json.dumps(FIELDS),
                "order_by": "creation asc",
                "limit_start": str(start),
                "limit_page_length": str(self._page_size),
            }
        )
        try:
            response = self._http.request(
                "GET",
                f"{self._url}?{query}",
                headers={"Authorization": self._authorization, "Accept": "application/json"},
                timeout=self._timeout,
            )
        except urllib3.exceptions.HTTPError as error:
            raise RequestLogUnavailableError(f"ERPNext did not answer ({type(error).__name__})") from None
        try:
            body = json.loads(response.data)
        except ValueError:
            body = None
        if response.status != 200 or not isinstance(body, dict) or not isinstance(body.get("data"), list):
            exc_type = body.get("exc_type") if isinstance(body, dict) else None
            raise RequestLogUnavailableError(
                f"ERPNext answered {response.status}"
                + (f" {exc_type}" if exc_type else "")
                + " to a Webhook Request Log read"
            )
        return [row for row in body["data"] if isinstance(row, dict) and row.get("name")]
