"""The Webhook Request Log adapter (relay.adapters.frappe_request_log) against the ERPNext
simulator over HTTP: the right rows, every page, and an ERP that refuses or is down."""

import json
from collections.abc import Iterator

import pytest

from erpnext_simulator import ApiKey, ErpnextSimulator, Fault
from relay.adapters.frappe_request_log import FrappeRequestLog
from relay.domain.errors import RequestLogUnavailableError

RELAY_URL = "https://relay.example/v1/invoices"


@pytest.fixture
def erp() -> Iterator[ErpnextSimulator]:
    with ErpnextSimulator() as simulator:
        yield simulator


def log_row(erp: ErpnextSimulator, number: int, *, url: str = RELAY_URL, failed: bool = True) -> str:
    answer = erp.site.insert(
        "Webhook Request Log",
        {
            "webhook": "Fynd Relay - Sales Invoice",
            "reference_doctype": "Sales Invoice",
            "reference_document": f"SINV-{number}",
            "url": url,
            "data": json.dumps({"orderId": f"FY-{number}"}, indent=1, sort_keys=True),
            "response": None if failed else '{"invoices": []}',
            "error": "Traceback ...\nrequests.exceptions.HTTPError: 503 Server Error" if failed else "",
        },
    )
    return str(answer.body["data"]["name"])  # type: ignore[index]


def test_it_reads_every_failed_row_for_the_relays_url_across_pages_oldest_first(
    erp: ErpnextSimulator,
) -> None:
    # Given 7 failed rows for the relay, a success, and a failure for another URL
    wanted = [log_row(erp, n) for n in range(7)]
    log_row(erp, 100, failed=False)
    log_row(erp, 101, url="https://other.example/hook")
    # When the adapter reads with pages of 3
    reader = FrappeRequestLog(erp.url, erp.api_key, erp.api_secret, page_size=3)
    rows = list(reader.failed_requests(url=RELAY_URL, since="2000-01-01 00:00:00"))
    # Then it returns exactly the failed relay rows, with their bodies, in three reads
    assert [row.name for row in rows] == wanted
    assert json.loads(rows[0].data or "") == {"orderId": "FY-0"}
    assert rows[0].reference_document == "SINV-0"
    reads = [r for r in erp.site.requests if r.method == "GET"]
    assert len(reads) == 3


def test_a_refused_key_or_a_down_site_is_request_log_unavailable_without_the_secret(
    erp: ErpnextSimulator,
) -> None:
    log_row(erp, 1)
    erp.site.add_api_key(ApiKey("limited", "limited-secret-value", doctypes=frozenset({"Sales Invoice"})))
    cases = {
        "403 PermissionError": FrappeRequestLog(erp.url, "limited", "limited-secret-value"),
        "401 AuthenticationError": FrappeRequestLog(erp.url, erp.api_key, "wrong-secret-value"),
    }
    for expected, reader in cases.items():
        with pytest.raises(RequestLogUnavailableError) as refused:
            list(reader.failed_requests(url=RELAY_URL, since="2000-01-01"))
        assert expected in str(refused.value)
        assert "secret-value" not in str(refused.value)
    erp.faults.add(Fault("status", status=502))
    with pytest.raises(RequestLogUnavailableError, match="502"):
        list(
            FrappeRequestLog(erp.url, erp.api_key, erp.api_secret).failed_requests(
                url=RELAY_URL, since="2000"
            )
        )
