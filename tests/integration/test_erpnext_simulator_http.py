"""The ERPNext simulator over real HTTP on 127.0.0.1, as the relay's Frappe clients see it.

What a client may rely on is `docs/erpnext/simulator.md`: Frappe's REST resource API, its
token auth, its error answers (status and `exc_type`), `allow_on_submit`, faults.
"""

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import urllib3

from erpnext_simulator import DocTypeMeta, ErpnextSimulator, Fault

SRC = Path(__file__).resolve().parents[2] / "src" / "tools"
SYNC = DocTypeMeta(
    "Fynd Invoice Sync",
    autoname="field:sync_key",
    links={"sales_invoice": "Sales Invoice"},
    mandatory=frozenset({"sync_key"}),
)


@pytest.fixture
def erp() -> Iterator[ErpnextSimulator]:
    with ErpnextSimulator(doctypes=[SYNC]) as simulator:
        simulator.site.define(
            DocTypeMeta(
                "Sales Invoice", is_submittable=True, allow_on_submit=frozenset({"custom_fynd_status"})
            )
        )
        yield simulator


HTTP = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=2, read=5))


def call(
    erp: ErpnextSimulator,
    method: str,
    path: str,
    body: Any = None,
    *,
    auth: str | None = "default",
    query: dict[str, Any] | None = None,
) -> urllib3.BaseHTTPResponse:
    headers = (
        {"Authorization": erp.authorization}
        if auth == "default"
        else ({"Authorization": auth} if auth else {})
    )
    url = f"{erp.url}/api/resource/{quote(path)}"
    if query:
        url += "?" + urlencode({k: v if isinstance(v, str) else json.dumps(v) for k, v in query.items()})
    payload = None if body is None else json.dumps(body).encode()
    return HTTP.request(method, url, body=payload, headers=headers)


def frappe_message(response: urllib3.BaseHTTPResponse) -> str:
    body = response.json()
    return str(json.loads(json.loads(body["_server_messages"])[0])["message"])


def test_a_created_document_is_read_back_by_name_in_frappes_data_envelope(erp: ErpnextSimulator) -> None:
    # Given a site with a submitted Sales Invoice
    created = call(
        erp, "POST", "Sales Invoice", {"name": "SINV-26-00042", "customer_name": "A", "docstatus": 1}
    )
    assert created.status == 200
    # When the sync record is created and read back
    record = call(
        erp, "POST", "Fynd Invoice Sync", {"sync_key": "FY-1#sale", "sales_invoice": "SINV-26-00042"}
    )
    fetched = call(erp, "GET", "Fynd Invoice Sync/FY-1#sale")
    # Then both answer {"data": doc} with the name from its autoname and Frappe's standard fields
    assert record.status == fetched.status == 200
    doc = fetched.json()["data"]
    assert (doc["name"], doc["sales_invoice"], doc["docstatus"]) == ("FY-1#sale", "SINV-26-00042", 0)
    assert {"creation", "modified", "owner"} <= doc.keys()


def test_errors_carry_frappes_status_exc_type_and_server_messages(erp: ErpnextSimulator) -> None:
    call(erp, "POST", "Sales Invoice", {"name": "SINV-1", "docstatus": 1, "grand_total": 10})
    call(erp, "POST", "Fynd Invoice Sync", {"sync_key": "K1", "sales_invoice": "SINV-1"})
    cases = {
        "guest": (call(erp, "GET", "Fynd Invoice Sync", auth=None), 403, "PermissionError"),
        "wrong key": (
            call(erp, "GET", "Fynd Invoice Sync", auth="token erpnext-sim-key:wrong"),
            401,
            "AuthenticationError",
        ),
        "missing": (call(erp, "GET", "Fynd Invoice Sync/NOPE"), 404, "DoesNotExistError"),
        "duplicate": (
            call(erp, "POST", "Fynd Invoice Sync", {"sync_key": "K1", "sales_invoice": "SINV-1"}),
            409,
            "DuplicateEntryError",
        ),
        "link": (
            call(erp, "POST", "Fynd Invoice Sync", {"sync_key": "K2", "sales_invoice": "SINV-404"}),
            417,
            "LinkValidationError",
        ),
        "after submit": (
            call(erp, "PUT", "Sales Invoice/SINV-1", {"grand_total": 11}),
            417,
            "UpdateAfterSubmitError",
        ),
    }
    for name, (response, status, exc_type) in cases.items():
        assert (response.status, response.json()["exc_type"]) == (status, exc_type), name
        assert frappe_message(response), name


def test_a_submitted_invoice_accepts_only_allow_on_submit_fields(erp: ErpnextSimulator) -> None:
    call(erp, "POST", "Sales Invoice", {"name": "SINV-2", "docstatus": 1, "remarks": "x"})
    changed = call(erp, "PUT", "Sales Invoice/SINV-2", {"custom_fynd_status": "INVOICED"})
    refused = call(erp, "PUT", "Sales Invoice/SINV-2", {"remarks": "y"})
    assert changed.status == 200
    assert changed.json()["data"]["custom_fynd_status"] == "INVOICED"
    assert refused.status == 417
    assert erp.site.document("Sales Invoice", "SINV-2")["remarks"] == "x"  # type: ignore[index]


def test_put_is_a_partial_update_and_a_stale_modified_is_refused(erp: ErpnextSimulator) -> None:
    call(erp, "POST", "Sales Invoice", {"name": "SINV-3"})
    record = call(erp, "POST", "Fynd Invoice Sync", {"sync_key": "K3", "status": "QUEUED", "attempts": 0})
    seen = record.json()["data"]["modified"]
    updated = call(erp, "PUT", "Fynd Invoice Sync/K3", {"status": "INVOICED", "modified": seen})
    assert (updated.json()["data"]["status"], updated.json()["data"]["attempts"]) == ("INVOICED", 0)
    stale = call(
        erp, "PUT", "Fynd Invoice Sync/K3", {"status": "REJECTED", "modified": "2000-01-01 00:00:00.000000"}
    )
    assert (stale.status, stale.json()["exc_type"]) == (417, "TimestampMismatchError")


def test_lists_filter_select_fields_order_and_page_by_twenty_by_default(erp: ErpnextSimulator) -> None:
    for number in range(25):
        erp.site.insert(
            "Webhook Request Log",
            {
                "url": "https://relay.example/v1/invoices" if number % 5 else "https://other.example/hook",
                "data": json.dumps({"n": number}),
                "error": "" if number % 2 else "Traceback ... HTTPError: 503",
            },
        )
    everything = call(erp, "GET", "Webhook Request Log")
    assert len(everything.json()["data"]) == 20  # Frappe's default page
    assert set(everything.json()["data"][0]) == {"name"}  # and only names by default
    wanted = [["url", "=", "https://relay.example/v1/invoices"], ["error", "is", "set"]]
    first = call(
        erp,
        "GET",
        "Webhook Request Log",
        query={
            "filters": wanted,
            "fields": ["name", "data"],
            "order_by": "creation asc",
            "limit_page_length": "5",
        },
    ).json()["data"]
    rest = call(
        erp,
        "GET",
        "Webhook Request Log",
        query={
            "filters": wanted,
            "fields": ["name", "data"],
            "order_by": "creation asc",
            "limit_start": "5",
            "limit_page_length": "5",
        },
    ).json()["data"]
    numbers = [json.loads(row["data"])["n"] for row in first + rest]
    assert numbers == [n for n in range(25) if n % 5 and not n % 2]


def test_faults_answer_outages_drops_and_latency_then_clear(erp: ErpnextSimulator) -> None:
    erp.faults.add(Fault("status", status=503, count=2, doctype="Fynd Invoice Sync"))
    assert call(erp, "GET", "Sales Invoice").status == 200  # another DocType is not down
    assert [call(erp, "GET", "Fynd Invoice Sync").status for _ in range(3)] == [503, 503, 200]
    erp.faults.add(Fault("drop", count=1))
    with pytest.raises(urllib3.exceptions.HTTPError):
        call(erp, "GET", "Sales Invoice")
    erp.faults.add(Fault("latency", seconds=1.0, count=1))
    slow = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(read=0.2))
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        slow.request(
            "GET", f"{erp.url}/api/resource/Sales%20Invoice", headers={"Authorization": erp.authorization}
        )
    assert call(erp, "GET", "Sales Invoice").status == 200


def test_submit_fires_doc_events_and_db_set_fires_on_change_only(erp: ErpnextSimulator) -> None:
    heard: list[tuple[str, str]] = []
    erp.site.on_event(lambda event, doctype, doc: heard.append((event, doctype)))
    call(erp, "POST", "Sales Invoice", {"name": "SINV-9"})
    call(erp, "PUT", "Sales Invoice/SINV-9", {"docstatus": 1})
    erp.site.db_set("Sales Invoice", "SINV-9", {"irn": "abc", "einvoice_status": "Generated"})
    assert [event for event, _ in heard] == [
        "after_insert",
        "on_update",
        "on_change",
        "on_submit",
        "on_change",
        "on_change",  # db_set: on_change only
    ]


def test_the_control_api_seeds_documents_and_lists_requests(erp: ErpnextSimulator) -> None:
    seeded = HTTP.request(
        "POST",
        f"{erp.url}/_sim/docs",
        body=json.dumps({"doctype": "Webhook Request Log", "docs": [{"url": "u", "error": "e"}]}).encode(),
    )
    assert seeded.status == 200
    assert len(seeded.json()["names"]) == 1
    call(erp, "GET", "Webhook Request Log")
    requests = HTTP.request("GET", f"{erp.url}/_sim/requests").json()["requests"]
    assert [(r["method"], r["path"], r["status"]) for r in requests] == [
        ("GET", "/api/resource/Webhook%20Request%20Log", 200)
    ]


def test_python_m_erpnext_simulator_prints_its_url_and_serves_until_sigterm(tmp_path: Path) -> None:
    doctype = tmp_path / "sync.json"
    doctype.write_text(json.dumps({"name": "Fynd Invoice Sync", "autoname": "field:sync_key", "fields": []}))
    process = subprocess.Popen(
        [sys.executable, "-m", "erpnext_simulator", "--port", "0", "--quiet", "--doctype-json", str(doctype)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        answer = HTTP.request(
            "POST",
            f"{url}/api/resource/Fynd%20Invoice%20Sync",
            body=json.dumps({"sync_key": "K"}).encode(),
            headers={"Authorization": "token erpnext-sim-key:erpnext-sim-secret"},
        )
        assert answer.json()["data"]["name"] == "K"
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
