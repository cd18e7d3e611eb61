"""Recovery from ERPNext's Webhook Request Log (relay.domain.recovery) over the fakes: every
failed row is taken in once, a body the relay holds is already known, nothing is sent twice."""

import io
import json
import time
from collections.abc import Iterable

import pytest

import relay.domain.recovery as recovery_module
from factories import invoice, invoice_dict
from fakes import World
from relay.domain.invoice import InvoiceKey, InvoiceType
from relay.domain.ledger import InvoiceStatus
from relay.domain.recovery import WEBHOOK_ID_PREFIX, LoggedRequest, Recovery, RowOutcome, window_start
from relay.observability import logger

RELAY_URL = "https://relay.example/v1/invoices"


class ListedRequestLog:
    """The RequestLog port over rows already filtered, as the adapter's query returns them."""

    def __init__(self, rows: Iterable[LoggedRequest]) -> None:
        self.rows = list(rows)
        self.reads: list[tuple[str, str]] = []

    def failed_requests(self, *, url: str, since: str) -> list[LoggedRequest]:
        self.reads.append((url, since))
        return [row for row in self.rows if row.creation >= since]


def frappe_data(document: object) -> str:
    """The row's `data` as Frappe stores it: frappe.as_json (indent 1, sorted keys)."""
    return json.dumps(document, indent=1, sort_keys=True)


def attempts(
    name: str, document: object, creation: str = "2026-12-01 10:00:00.000000"
) -> list[LoggedRequest]:
    """Frappe v14/v15: three rows per failed delivery, each with the same body."""
    return [LoggedRequest(f"{name}-{n}", creation, frappe_data(document), f"SINV-{name}") for n in (1, 2, 3)]


@pytest.fixture
def world() -> World:
    return World()


def recover(world: World, log: ListedRequestLog, since: str = "2026-12-01 00:00:00"):  # type: ignore[no-untyped-def]
    return Recovery(log=log, intake=world.acceptance).recover(url=RELAY_URL, since=since)


def test_every_failed_delivery_is_taken_in_once_and_reaches_fynd_once(world: World) -> None:
    # Given 20 deliveries ERPNext gave up on, three failed rows each
    log = ListedRequestLog(row for n in range(20) for row in attempts(f"R{n}", invoice_dict(f"FY-REC-{n}")))
    # When recovery runs
    report = recover(world, log)
    # Then it found 60 rows, took in the first of each delivery, and knew the other two
    assert (report.found, report.taken_in, report.already_known, report.refused) == (60, 20, 40, 0)
    # And each invoice reaches Fynd exactly once, under the id of the row it came from
    world.drain()
    keys = [InvoiceKey(f"FY-REC-{n}", InvoiceType.SALE) for n in range(20)]
    assert all(world.fynd.sent[key] == 1 for key in keys)
    assert world.ledger.entries[keys[0]].correlation_id == f"{WEBHOOK_ID_PREFIX}R0-1"
    # When recovery runs again over the same window, Then everything is already known, nothing sent
    again = recover(world, log)
    world.drain()
    assert (again.found, again.taken_in, again.already_known) == (60, 0, 60)
    assert sum(world.fynd.sent.values()) == 20


def test_a_delivery_the_relay_took_in_before_frappe_timed_out_is_already_known(world: World) -> None:
    # Given a webhook the relay accepted, whose answer Frappe did not wait for (ReadTimeout row)
    world_invoice = invoice("FY-REC-T")
    world.accept(world_invoice)
    world.drain()
    log = ListedRequestLog(attempts("T", world_invoice.model_dump(exclude_none=True, mode="json"))[:1])
    # When recovery reads its failed row
    report = recover(world, log)
    # Then it is already known (INVOICED), and Fynd saw the invoice once
    assert (report.taken_in, report.already_known) == (0, 1)
    assert report.rows[0].detail == "FY-REC-T#sale INVOICED"
    world.drain()
    assert world.fynd.sent[world_invoice.key] == 1


def test_bodies_the_intake_refuses_are_reported_with_the_reason_and_change_nothing(world: World) -> None:
    world.accept(invoice("FY-REC-C"))
    world.drain()
    rows = [
        LoggedRequest("bad-json", "2026-12-01 10:00:00", "{not json", None),
        LoggedRequest("no-order", "2026-12-01 10:00:01", frappe_data(invoice_dict("")), None),
        LoggedRequest(
            "no-irn",
            "2026-12-01 10:00:02",
            frappe_data(invoice_dict("FY-REC-E", eInvoiceRequired=True)),
            None,
        ),
        LoggedRequest(
            "conflict", "2026-12-01 10:00:03", frappe_data(invoice_dict("FY-REC-C", invoiceNumber="X")), None
        ),
        LoggedRequest("not-sent", "2026-12-01 10:00:04", None, None),
    ]
    report = recover(world, ListedRequestLog(rows))
    outcomes = {row.name: (row.outcome, row.detail.split(":")[0]) for row in report.rows}
    assert outcomes == {
        "bad-json": (RowOutcome.REFUSED, "400"),
        "no-order": (RowOutcome.REFUSED, "422"),
        "no-irn": (RowOutcome.REFUSED, "422"),
        "conflict": (RowOutcome.REFUSED, "409"),
        "not-sent": (RowOutcome.EMPTY, "no body"),
    }
    assert "irnNumber" in report.rows[2].detail
    assert set(world.ledger.entries) == {InvoiceKey("FY-REC-C", InvoiceType.SALE)}
    assert world.status(InvoiceKey("FY-REC-C", InvoiceType.SALE)) is InvoiceStatus.INVOICED


def test_recovery_reads_only_the_window_it_is_given(world: World) -> None:
    log = ListedRequestLog(
        attempts("OLD", invoice_dict("FY-REC-OLD"), "2026-11-01 09:00:00")
        + attempts("NEW", invoice_dict("FY-REC-NEW"), "2026-12-02 09:00:00")
    )
    report = recover(world, log, since="2026-12-01 00:00:00")
    assert log.reads == [(RELAY_URL, "2026-12-01 00:00:00")]
    assert (report.found, report.taken_in) == (3, 1)
    assert set(world.ledger.entries) == {InvoiceKey("FY-REC-NEW", InvoiceType.SALE)}


def test_each_row_is_reported_as_it_is_taken_in_with_what_became_of_each_invoice(world: World) -> None:
    # Given a log holding a new delivery of two invoices, the same again, a refused body, a
    # conflicting one, a row Frappe never sent and one whose body is blank
    world.accept(invoice("FY-REC-C"), invoice("FY-REC-D"))
    two = [invoice_dict("FY-REC-A"), invoice_dict("FY-REC-B", invoiceType="return")]
    rows = [
        LoggedRequest("new", "2026-12-01 10:00:00", frappe_data(two), "SINV-A"),
        LoggedRequest("again", "2026-12-01 10:00:01", frappe_data(two), "SINV-A"),
        LoggedRequest("bad", "2026-12-01 10:00:02", frappe_data([{"orderId": "FY-REC-X"}]), None),
        LoggedRequest(
            "conflict",
            "2026-12-01 10:00:03",
            frappe_data(
                [invoice_dict("FY-REC-C", invoiceNumber="X"), invoice_dict("FY-REC-D", invoiceNumber="Y")]
            ),
            None,
        ),
        LoggedRequest("unsent", "2026-12-01 10:00:04", None, "SINV-U"),
        LoggedRequest("blank", "2026-12-01 10:00:05", " \n", None),
    ]
    seen: list[str] = []
    # When recovery runs, told of each row as it goes
    report = Recovery(log=ListedRequestLog(rows), intake=world.acceptance).recover(
        url=RELAY_URL, since="2026-12-01 00:00:00", on_row=lambda row: seen.append(row.name)
    )
    # Then every row is told in order, and reported with what became of its invoices
    assert seen == ["new", "again", "bad", "conflict", "unsent", "blank"]
    assert [
        (row.name, row.creation, row.outcome, row.detail, row.reference_document) for row in report.rows
    ] == [
        ("new", "2026-12-01 10:00:00", RowOutcome.TAKEN_IN, "FY-REC-A#sale, FY-REC-B#return", "SINV-A"),
        (
            "again",
            "2026-12-01 10:00:01",
            RowOutcome.ALREADY_KNOWN,
            "FY-REC-A#sale QUEUED, FY-REC-B#return QUEUED",
            "SINV-A",
        ),
        (
            "bad",
            "2026-12-01 10:00:02",
            RowOutcome.REFUSED,
            "422: invoiceNumber: Field required; invoiceType: Field required",
            None,
        ),
        (
            "conflict",
            "2026-12-01 10:00:03",
            RowOutcome.REFUSED,
            "409: a different invoice is recorded for FY-REC-C#sale, FY-REC-D#sale",
            None,
        ),
        (
            "unsent",
            "2026-12-01 10:00:04",
            RowOutcome.EMPTY,
            "no body: Frappe did not send this request",
            "SINV-U",
        ),
        ("blank", "2026-12-01 10:00:05", RowOutcome.EMPTY, "no body: Frappe did not send this request", None),
    ]
    # And the summary counts each outcome
    assert report.complete
    assert report.summary() == {"found": 6, "takenIn": 1, "alreadyKnown": 1, "refused": 2, "empty": 2}


def test_a_run_left_with_less_than_its_reserve_takes_in_no_further_row(world: World) -> None:
    # Given three failed deliveries and a clock that leaves the reserve for two rows only
    log = ListedRequestLog(
        LoggedRequest(f"R{n}", "2026-12-01 10:00:00", frappe_data(invoice_dict(f"FY-REC-{n}")), None)
        for n in range(3)
    )
    left = iter([10.0, 5.0, 4.9])
    # When recovery runs with a reserve of 5 s
    report = Recovery(log=log, intake=world.acceptance).recover(
        url=RELAY_URL, since="2026-12-01 00:00:00", seconds_left=lambda: next(left), reserve_seconds=5.0
    )
    # Then it takes in the rows started with the reserve still there, and says it is not complete
    assert [row.name for row in report.rows] == ["R0", "R1"]
    assert report.complete is False
    assert set(world.ledger.entries) == {InvoiceKey(f"FY-REC-{n}", InvoiceType.SALE) for n in range(2)}


def test_a_run_without_a_reserve_takes_in_rows_while_any_time_is_left(world: World) -> None:
    # Given a run with half a second left and no reserve
    log = ListedRequestLog(
        [LoggedRequest("R", "2026-12-01 10:00:00", frappe_data(invoice_dict("FY-REC-R")), None)]
    )
    # When recovery runs
    report = Recovery(log=log, intake=world.acceptance).recover(
        url=RELAY_URL, since="2026-12-01 00:00:00", seconds_left=lambda: 0.5
    )
    # Then the row is taken in
    assert (report.taken_in, report.complete) == (1, True)


def test_the_window_starts_in_utc_whatever_the_machines_time_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a run where local time is not UTC
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        # When the window of a 2-hour look-back is computed / Then it is written in UTC
        assert window_start(1_800_007_200.0, 7200) == "2027-01-15 08:00:00"
    finally:
        monkeypatch.undo()
        time.tzset()


def test_a_run_counts_its_rows_and_logs_its_window_and_outcomes(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the metrics and the log as CloudWatch receives them
    counted: list[tuple[str, float]] = []
    monkeypatch.setattr(recovery_module, "count", lambda name, value=1, **_: counted.append((name, value)))
    stream = io.StringIO()
    handler = logger.registered_handler
    previous, handler.stream = handler.stream, stream  # type: ignore[attr-defined]
    try:
        # When a run takes in two deliveries of three rows each
        rows = attempts("M", invoice_dict("FY-REC-M")) + attempts("N", invoice_dict("FY-REC-N"))
        recover(world, ListedRequestLog(rows))
    finally:
        handler.stream = previous  # type: ignore[attr-defined]
    # Then it counts the rows found and taken in
    assert counted == [("RecoveryRowsFound", 6), ("RecoveryRowsTakenIn", 2)]
    # And logs one line with its window and what became of the rows
    (line,) = [
        document
        for document in map(json.loads, stream.getvalue().splitlines())
        if document["message"] == "recovery from the Webhook Request Log"
    ]
    assert {
        name: line[name] for name in ("url", "since", "complete", "found", "takenIn", "alreadyKnown")
    } == {
        "url": RELAY_URL,
        "since": "2026-12-01 00:00:00",
        "complete": True,
        "found": 6,
        "takenIn": 2,
        "alreadyKnown": 4,
    }
