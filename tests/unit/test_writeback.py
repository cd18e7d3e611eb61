"""Write-back (relay.domain.writeback) over fakes of the ledger and the FIFO queue, with the real
ERPNext and callback adapters talking HTTP to the stubs of tests/writeback_world.py."""

from dataclasses import replace
from typing import Any

import pytest
from standardwebhooks import Webhook

from fakes import FakeClock
from relay.adapters.callback import SignedCallback
from relay.adapters.erpnext import ErpNextSync
from relay.domain.errors import OutcomeRefused, TargetDown
from relay.domain.invoice import InvoiceKey, InvoiceType
from relay.domain.ledger import InvoiceStatus, LastError, LedgerEntry
from relay.domain.policy import Backoff
from relay.domain.standard_webhooks import secret_key
from relay.domain.status import status_document
from relay.domain.writeback import (
    DEAD_LETTERED,
    LedgerChange,
    Outcome,
    Writeback,
    WritebackMessage,
    forward,
    ledger_change,
    outcome_of,
    supersedes,
    sync_fields,
)
from relay_local.signing import new_secret
from writeback_world import CallbackReceiver, FifoQueue, FrappeStub, InProcessHttp, record_of

HOUR = 3600.0
SECRET = new_secret()
API_TOKEN = "relay-key:relay-secret"


def entry(order: str, status: InvoiceStatus, at: float, **fields: object) -> LedgerEntry:
    defaults: dict[str, object] = {
        "key": InvoiceKey(order, InvoiceType.SALE),
        "status": status,
        "content_hash": "h",
        "invoice_number": f"SINV-{order}",
        "attempts": 1,
        "accepted_at": at - 10,
        "updated_at": at,
    }
    return LedgerEntry(**{**defaults, **fields})  # type: ignore[arg-type]


class Ledger(dict[InvoiceKey, LedgerEntry]):
    def get(self, key: InvoiceKey, default: LedgerEntry | None = None) -> LedgerEntry | None:  # type: ignore[override]
        return super().get(key, default)


@pytest.fixture
def frappe() -> FrappeStub:
    return FrappeStub()  # served in this process (InProcessHttp): unit tests keep the network off


@pytest.fixture
def receiver() -> CallbackReceiver:
    return CallbackReceiver(SECRET)


def erpnext(frappe: FrappeStub, token: str = API_TOKEN) -> ErpNextSync:
    return ErpNextSync("http://erp.example", lambda: token, http=InProcessHttp(frappe))  # type: ignore[arg-type]


def callback(receiver: CallbackReceiver, secret: str = SECRET) -> SignedCallback:
    return SignedCallback(
        "https://erp.example/fynd-outcomes", lambda: secret_key(secret), http=InProcessHttp(receiver)
    )  # type: ignore[arg-type]


def writeback(ledger: Ledger, queue: FifoQueue, *targets: object, jitter: float = 0.5) -> Writeback:
    return Writeback(
        ledger=ledger,
        targets=targets,  # type: ignore[arg-type]
        queue=queue,
        backoff=Backoff(30, 900, lambda: jitter, spread=0.25),
        message_seconds=1,
    )


# ---- the six-hour outage ----


def test_an_erp_down_for_six_hours_gets_every_state_complete_and_in_order(
    frappe: FrappeStub, receiver: CallbackReceiver
) -> None:
    # Given 30 invoices whose final states change while ERPNext and the callback receiver are
    # down for six hours: invoiced; rejected, replayed and then invoiced; dead-lettered, redriven
    # and invoiced
    clock, ledger = FakeClock(), Ledger()
    start = clock()
    outage = (start + 60, start + 60 + 6 * HOUR)
    queue = FifoQueue(clock, visibility_timeout=360, max_receive_count=50)
    work = writeback(ledger, queue, erpnext(frappe), callback(receiver), jitter=0.0)
    changes: list[tuple[float, LedgerEntry]] = []
    for i in range(30):
        order, at = f"FY-{i}", start + 90 + 10 * i
        if i % 3 == 0:
            changes.append((at, entry(order, InvoiceStatus.INVOICED, at, confirmed_by="answer")))
        elif i % 3 == 1:
            error = LastError("IN401", "order cancelled")
            changes.append((at, entry(order, InvoiceStatus.REJECTED, at, last_error=error)))
            changes.append((at + 2 * HOUR, entry(order, InvoiceStatus.QUEUED, at + 2 * HOUR, attempts=0)))
            changes.append((at + 2 * HOUR + 40, entry(order, InvoiceStatus.INVOICED, at + 2 * HOUR + 40)))
        else:
            error = LastError("fynd_unavailable", "Fynd answered 503")
            dead = entry(order, InvoiceStatus.RETRYING, at, last_error=error, dead_lettered_at=at, attempts=8)
            changes.append((at, dead))
            changes.append(
                (at + 3 * HOUR, entry(order, InvoiceStatus.IN_PROGRESS, at + 3 * HOUR, attempts=9))
            )
            changes.append(
                (at + 3 * HOUR + 5, entry(order, InvoiceStatus.INVOICED, at + 3 * HOUR + 5, attempts=9))
            )
    changes.sort(key=lambda change: change[0])
    failed_during_outage = 0

    # When the ledger changes as planned (each change queues its key, as the feed does) and the
    # write-back works the queue batch by batch, sleeping until the next message is visible
    while changes or queue.messages:
        while changes and changes[0][0] <= clock():
            _, changed = changes.pop(0)
            ledger[changed.key] = changed
            queue.send(changed.key)
        frappe.down = outage[0] <= clock() < outage[1]
        receiver.answer_with = 503 if frappe.down else 204
        batch = queue.receive(10)
        if batch:
            report = work.write_back(batch, lambda: 60.0)
            queue.settle(batch, report.failed)
            failed_during_outage += len(report.failed) if frappe.down else 0
            continue
        wake = [t for t in (queue.next_visible_at(), changes[0][0] if changes else None) if t is not None]
        clock.now = max(clock(), min(wake))

    # Then the outage was real, nothing was dead-lettered, and it ended after six hours
    assert failed_during_outage > 0
    assert queue.dead_letters == []
    assert clock() >= outage[1]
    # And every record holds its invoice's last state, exactly
    for key, last in ledger.items():
        assert record_of(frappe, key) is not None
        assert {name: record_of(frappe, key)[name] for name in sync_fields(outcome_of(last))} == sync_fields(  # type: ignore[index]
            outcome_of(last)
        )
        # And the states reached it in order: each write newer than the one before
        written = [write["relay_updated_at"] for write in frappe.writes[f"{key.order_id}-sale"]]
        assert written == sorted(set(written)), key
    # And the callback receiver got each invoice's states in order, ending with the last
    by_key: dict[str, list[str]] = {}
    for _, document in receiver.received:
        by_key.setdefault(document["orderId"], []).append(document["updatedAt"])
    assert sorted(by_key) == sorted(key.order_id for key in ledger)
    for key, last in ledger.items():
        assert by_key[key.order_id] == sorted(by_key[key.order_id])
        assert by_key[key.order_id][-1] == status_document(last)["updatedAt"]


def test_the_default_retries_outlast_a_six_hour_outage_before_the_dead_letter_queue() -> None:
    # Given the template's least WritebackMaxReceiveCount and the back-off at its shortest
    from relay_local.stack import load_template

    template = load_template()
    least = template["Parameters"]["WritebackMaxReceiveCount"]["MinValue"]
    default = template["Parameters"]["WritebackMaxReceiveCount"]["Default"]
    shortest = Backoff(30, 900, lambda: 0.0, spread=0.25)
    # Then the waits before a message is dead-lettered add up to more than six hours
    assert sum(shortest.delay(receive) for receive in range(1, least + 1)) > 6 * HOUR
    assert sum(shortest.delay(receive) for receive in range(1, default + 1)) > 8.5 * HOUR


# ---- one message at a time ----


def test_a_redelivered_message_writes_nothing_new(frappe: FrappeStub) -> None:
    # Given an invoiced entry already written back
    clock, ledger = FakeClock(), Ledger()
    done = entry("FY-1", InvoiceStatus.INVOICED, clock())
    ledger[done.key] = done
    queue = FifoQueue(clock)
    work = writeback(ledger, queue, erpnext(frappe))
    queue.send(done.key)
    batch = queue.receive()
    queue.settle(batch, work.write_back(batch, lambda: 60.0).failed)
    # When the same change is delivered again (SQS at-least-once, the feed's retry)
    queue.send(done.key)
    batch = queue.receive()
    report = work.write_back(batch, lambda: 60.0)
    # Then it succeeds, one record exists and it was written once
    assert report.failed == []
    assert list(frappe.records) == ["FY-1-sale"]
    assert len(frappe.writes["FY-1-sale"]) == 1
    assert [method for method, _ in frappe.requests].count("PUT") == 0


def test_a_record_newer_than_the_entry_is_never_overwritten(frappe: FrappeStub) -> None:
    # Given ERPNext holds the invoice's INVOICED state
    target = erpnext(frappe)
    newer = outcome_of(entry("FY-2", InvoiceStatus.INVOICED, 2000.0))
    target.deliver(newer)
    # When an older state arrives (a clock behind, a delivery long delayed)
    older = outcome_of(entry("FY-2", InvoiceStatus.REJECTED, 1000.0, last_error=LastError("IN401", "x")))
    target.deliver(older)
    # Then the record keeps the newer state, and nothing was PUT
    assert record_of(frappe, newer.key)["status"] == "INVOICED"  # type: ignore[index]
    assert [method for method, _ in frappe.requests] == ["GET", "POST", "GET"]
    # And a newer one than that is written
    newest = outcome_of(entry("FY-2", InvoiceStatus.QUEUED, 3000.0, attempts=0))
    target.deliver(newest)
    assert record_of(frappe, newer.key)["status"] == "QUEUED"  # type: ignore[index]


def test_a_message_of_a_group_that_failed_is_not_worked_in_the_same_batch() -> None:
    # Given two messages of one key in one batch and a target that fails the first
    calls: list[str] = []

    class FailsOnce:
        name = "erpnext"

        def deliver(self, outcome: Outcome) -> None:
            calls.append(outcome.status)
            if len(calls) == 1:
                raise OutcomeRefused("417")

    clock, ledger = FakeClock(), Ledger()
    first = entry("FY-3", InvoiceStatus.REJECTED, clock(), last_error=LastError("IN401", "x"))
    ledger[first.key] = first
    queue = FifoQueue(clock)
    work = writeback(ledger, queue, FailsOnce())
    batch = [
        WritebackMessage("m-1", "r-1", 1, first.key, str(first.key)),
        WritebackMessage("m-2", "r-2", 1, first.key, str(first.key)),
    ]
    # When the batch is worked
    report = work.write_back(batch, lambda: 60.0)
    # Then both come back and the second was never tried: it must not overtake the first
    assert report.failed == ["m-1", "m-2"]
    assert calls == ["REJECTED"]


def test_a_target_that_is_down_is_not_called_again_in_the_batch(frappe: FrappeStub) -> None:
    # Given ERPNext down and three invoices of different keys
    frappe.down = True
    clock, ledger = FakeClock(), Ledger()
    queue = FifoQueue(clock)
    for order in ("FY-4", "FY-5", "FY-6"):
        done = entry(order, InvoiceStatus.INVOICED, clock())
        ledger[done.key] = done
        queue.send(done.key)
    work = writeback(ledger, queue, erpnext(frappe))
    # When the batch is worked
    batch = queue.receive()
    report = work.write_back(batch, lambda: 60.0)
    # Then all three come back after a back-off, and ERPNext was asked once
    assert report.failed == [m.message_id for m in batch]
    assert len(frappe.requests) == 1
    assert queue.next_visible_at() == pytest.approx(clock() + 26, abs=1)  # 30 s at receive 1, 3/4 fixed


def test_an_unreadable_message_fails_and_holds_its_group() -> None:
    clock, ledger = FakeClock(), Ledger()
    work = writeback(ledger, FifoQueue(clock))
    batch = [
        WritebackMessage("m-1", "r-1", 1, None, "g"),
        WritebackMessage("m-2", "r-2", 1, InvoiceKey("FY-7", InvoiceType.SALE), "g"),
    ]
    assert work.write_back(batch, lambda: 60.0).failed == ["m-1", "m-2"]


def test_a_message_without_the_time_to_work_it_comes_back_at_once() -> None:
    clock, ledger = FakeClock(), Ledger()
    done = entry("FY-8", InvoiceStatus.INVOICED, clock())
    ledger[done.key] = done
    queue = FifoQueue(clock)
    queue.send(done.key)
    work = Writeback(
        ledger=ledger, targets=[], queue=queue, backoff=Backoff(30, 900, lambda: 0.5), message_seconds=20
    )
    batch = queue.receive()
    report = work.write_back(batch, lambda: 10.0)
    assert report.failed == [batch[0].message_id]
    assert queue.next_visible_at() == clock()


def test_an_entry_that_expired_writes_nothing_and_is_done(frappe: FrappeStub) -> None:
    clock = FakeClock()
    queue = FifoQueue(clock)
    queue.send(InvoiceKey("FY-9", InvoiceType.SALE))
    batch = queue.receive()
    report = writeback(Ledger(), queue, erpnext(frappe)).write_back(batch, lambda: 60.0)
    assert (report.failed, report.written, frappe.requests) == ([], [], [])


# ---- what the ERP is told ----


def test_the_outcome_names_dead_letters_already_invoiced_and_rejections() -> None:
    dead = outcome_of(entry("FY-10", InvoiceStatus.RETRYING, 5.0, dead_lettered_at=5.0))
    assert (dead.status, dead.fynd_code) == (DEAD_LETTERED, "")
    assert "dead-letter" in dead.reason
    already = outcome_of(entry("FY-11", InvoiceStatus.INVOICED, 5.0, already_invoiced=True))
    assert (already.status, already.fynd_code) == ("INVOICED", "IN453")
    rejected = outcome_of(
        entry("FY-12", InvoiceStatus.REJECTED, 5.0, last_error=LastError("IN401", "cancelled"))
    )
    assert sync_fields(rejected) == {
        "relay_key": "FY-12-sale",
        "sales_invoice": "SINV-FY-12",
        "fynd_order_id": "FY-12",
        "invoice_type": "sale",
        "status": "REJECTED",
        "fynd_code": "IN401",
        "reason": "cancelled",
        "attempts": 1,
        "relay_updated_at": "1970-01-01T00:00:05.000Z",
    }


# ---- the ERPNext adapter over HTTP ----


def test_erpnext_creates_then_updates_one_record_per_key_with_token_auth(frappe: FrappeStub) -> None:
    target = erpnext(frappe)
    target.deliver(
        outcome_of(entry("FY-20", InvoiceStatus.REJECTED, 10.0, last_error=LastError("IN401", "x")))
    )
    target.deliver(outcome_of(entry("FY-20", InvoiceStatus.INVOICED, 20.0)))
    assert list(frappe.records) == ["FY-20-sale"]
    assert frappe.records["FY-20-sale"]["status"] == "INVOICED"
    assert [method for method, _ in frappe.requests] == ["GET", "POST", "GET", "PUT"]


def test_erpnext_finds_the_record_a_racing_creator_made(frappe: FrappeStub) -> None:
    # Given a record that appears between our GET (404) and our POST
    first = outcome_of(entry("FY-21", InvoiceStatus.REJECTED, 10.0, last_error=LastError("IN401", "x")))
    later = outcome_of(entry("FY-21", InvoiceStatus.INVOICED, 20.0))
    original = frappe.handle

    def racing(method: str, target: str, auth: str | None, raw: bytes) -> tuple[int, bytes]:
        if method == "POST" and "FY-21-sale" not in frappe.records:
            frappe.records["FY-21-sale"] = {"name": "FY-21-sale", **sync_fields(first)}
        return original(method, target, auth, raw)

    frappe.handle = racing  # type: ignore[method-assign]
    # When the later outcome is delivered
    erpnext(frappe).deliver(later)
    # Then the POST's 409 leads to a GET and a PUT, and one record holds the later state
    assert [method for method, _ in frappe.requests] == ["GET", "POST", "GET", "PUT"]
    assert frappe.records["FY-21-sale"]["status"] == "INVOICED"


@pytest.mark.parametrize(
    ("status", "raised"),
    [
        (401, TargetDown),
        (403, TargetDown),
        (429, TargetDown),
        (500, TargetDown),
        (417, OutcomeRefused),
        (404, OutcomeRefused),
    ],
)
def test_erpnext_failures_are_typed(frappe: FrappeStub, status: int, raised: type[Exception]) -> None:
    # Given ERPNext answers the GET with `status` (404: the POST, the GET found nothing)
    frappe.answer_next = [status] if status != 404 else []
    if status == 404:
        frappe.answer_next = [404, 404]  # no record, then the POST refused (the DocType is missing)
    with pytest.raises(raised) as failure:
        erpnext(frappe).deliver(outcome_of(entry("FY-22", InvoiceStatus.INVOICED, 1.0)))
    # And the message names the status, never the token
    assert str(status) in str(failure.value)
    assert "relay-secret" not in str(failure.value)


def test_a_wrong_api_key_is_refused_as_down(frappe: FrappeStub) -> None:
    with pytest.raises(TargetDown, match="401"):
        erpnext(frappe, "relay-key:wrong").deliver(outcome_of(entry("FY-24", InvoiceStatus.INVOICED, 1.0)))


# ---- the signed callback over HTTP ----


def test_the_callback_is_the_status_document_signed_the_standard_webhooks_way(
    receiver: CallbackReceiver,
) -> None:
    last = entry("FY-30", InvoiceStatus.REJECTED, 7.0, last_error=LastError("IN422", "bad GSTIN"))
    callback(receiver).deliver(outcome_of(last))
    # Then the receiver verified it with the standardwebhooks package and holds the status document
    ((webhook_id, document),) = receiver.received
    assert document == status_document(last)
    assert webhook_id == outcome_of(last).delivery_id
    # And a retry of the same state carries the same webhook-id; a new state a new one
    callback(receiver).deliver(outcome_of(last))
    assert receiver.received[1][0] == webhook_id
    assert outcome_of(replace(last, updated_at=8.0)).delivery_id != webhook_id


def test_a_callback_signed_with_another_secret_does_not_verify(receiver: CallbackReceiver) -> None:
    other = callback(receiver, new_secret())
    with pytest.raises(OutcomeRefused, match="401"):
        other.deliver(outcome_of(entry("FY-31", InvoiceStatus.INVOICED, 1.0)))
    assert (receiver.refused, receiver.received) == (1, [])


@pytest.mark.parametrize(
    ("status", "raised"),
    [(500, TargetDown), (503, TargetDown), (429, TargetDown), (400, OutcomeRefused), (302, OutcomeRefused)],
)
def test_only_a_2xx_acknowledges_a_callback(
    receiver: CallbackReceiver, status: int, raised: type[Exception]
) -> None:
    receiver.answer_with = status
    with pytest.raises(raised, match=str(status)):
        callback(receiver).deliver(outcome_of(entry("FY-32", InvoiceStatus.INVOICED, 1.0)))


def test_the_callback_verifies_with_the_reference_package_directly() -> None:
    # Given the headers and body the callback sends, captured
    sent: dict[str, object] = {}

    class Capture:
        def request(self, method: str, url: str, **kwargs: object) -> object:
            sent.update(kwargs)
            return type("Answer", (), {"status": 200})()

    SignedCallback("https://erp.example", lambda: secret_key(SECRET), http=Capture()).deliver(  # type: ignore[arg-type]
        outcome_of(entry("FY-33", InvoiceStatus.INVOICED, 1.0))
    )
    # Then standardwebhooks verifies them with the secret
    body = sent["body"]
    assert isinstance(body, bytes)
    assert Webhook(SECRET).verify(body, sent["headers"])["orderId"] == "FY-33"  # type: ignore[arg-type]


# ---- the feed ----


def test_the_feed_skips_stored_bodies_and_resumes_at_the_first_change_not_queued() -> None:
    def record(pk: str, number: str) -> dict[str, object]:
        return {"eventID": f"e{number}", "dynamodb": {"Keys": {"pk": {"S": pk}}, "SequenceNumber": number}}

    assert ledger_change(record("body#FY-1#sale", "1")) is None
    assert ledger_change(record("not-a-key", "2")) is None
    changes = [c for c in (ledger_change(record(f"FY-{n}#sale", str(n))) for n in range(3, 6)) if c]
    assert [c.key for c in changes] == [InvoiceKey(f"FY-{n}", InvoiceType.SALE) for n in range(3, 6)]

    class RefusesFromFour:
        def send(self, sent: list[LedgerChange]) -> list[LedgerChange]:
            return [change for change in sent if change.sequence_number >= "4"]

    assert forward(changes, RefusesFromFour()) == changes[1]  # type: ignore[arg-type]
    assert forward(changes, type("All", (), {"send": lambda self, sent: []})()) is None


def test_each_target_reads_its_own_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given both targets configured, each with its own secret
    from relay import wiring
    from relay.settings import WritebackSettings

    monkeypatch.setattr(wiring, "erpnext_token", lambda arn: f"token-from-{arn}")
    monkeypatch.setattr(wiring, "callback_key", lambda arn: f"key-from-{arn}".encode())
    settings = WritebackSettings.model_validate(
        {
            "LEDGER_TABLE_NAME": "t",
            "INVOICE_QUEUE_URL": "q",
            "WRITEBACK_QUEUE_URL": "w",
            "ERPNEXT_URL": "https://erp.example",
            "ERPNEXT_CREDENTIALS_SECRET_ARN": "erp-arn",
            "RELAY_CALLBACK_URL": "https://hooks.example/fynd",
            "CALLBACK_SECRET_ARN": "callback-arn",
        }
    )
    erp_target, callback_target = wiring._writeback_targets(settings)
    # Then ERPNext authenticates with the ERPNext secret and the callback signs with its own
    assert erp_target._token() == "token-from-erp-arn"  # type: ignore[attr-defined]
    assert callback_target._secret_key() == b"key-from-callback-arn"  # type: ignore[attr-defined]


def test_a_target_without_its_url_is_not_written_to() -> None:
    from relay import wiring
    from relay.settings import WritebackSettings

    settings = WritebackSettings.model_validate(
        {
            "LEDGER_TABLE_NAME": "t",
            "INVOICE_QUEUE_URL": "q",
            "WRITEBACK_QUEUE_URL": "w",
            "ERPNEXT_URL": "",
            "RELAY_CALLBACK_URL": "",
        }
    )
    assert wiring._writeback_targets(settings) == []


@pytest.mark.parametrize(
    ("environ", "complaint"),
    [
        ({"ERPNEXT_URL": "http://127.0.0.1:8000"}, "ERPNEXT_API_KEY"),
        ({"ERPNEXT_URL": "erp.local", "ERPNEXT_API_KEY": "k", "ERPNEXT_API_SECRET": "s"}, "http"),
        ({"RELAY_CALLBACK_URL": "http://127.0.0.1:9000/hook"}, "RELAY_CALLBACK_SECRET"),
        ({"RELAY_CALLBACK_URL": "http://127.0.0.1:9000/hook", "RELAY_CALLBACK_SECRET": "plain"}, "whsec_"),
    ],
)
def test_a_half_configured_local_write_back_stops_the_run(environ: dict[str, str], complaint: str) -> None:
    from relay_local.environment import SettingsError, writeback_targets

    with pytest.raises(SettingsError, match=complaint):
        writeback_targets(environ)


def test_the_local_write_back_takes_the_spec_variables() -> None:
    from relay_local.environment import writeback_targets

    targets = writeback_targets(
        {
            "ERPNEXT_URL": "http://127.0.0.1:8000/",
            "ERPNEXT_API_KEY": "k",
            "ERPNEXT_API_SECRET": "s",
            "RELAY_CALLBACK_URL": "http://127.0.0.1:9000/hook",
            "RELAY_CALLBACK_SECRET": SECRET,
        }
    )
    assert (targets.erpnext_url, targets.erpnext_api_key, targets.erpnext_api_secret) == (
        "http://127.0.0.1:8000",
        "k",
        "s",
    )
    assert (targets.callback_url, targets.callback_secret, targets.any) == (
        "http://127.0.0.1:9000/hook",
        SECRET,
        True,
    )
    assert writeback_targets({}).any is False


class ScriptedTarget:
    """A write-back target that takes every outcome, or fails with the errors it is given, in turn."""

    def __init__(self, name: str, *failures: Exception) -> None:
        self.name = name
        self.failures = list(failures)
        self.delivered: list[InvoiceKey] = []

    def deliver(self, outcome: Outcome) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.delivered.append(outcome.key)


class Visibility:
    def __init__(self) -> None:
        self.changes: list[tuple[str, int]] = []

    def change_visibility(self, receipt_handle: str, seconds: int) -> None:
        self.changes.append((receipt_handle, seconds))


def message(order: str) -> WritebackMessage:
    return WritebackMessage(f"m-{order}", f"h-{order}", 1, InvoiceKey(order, InvoiceType.SALE), f"g-{order}")


def invoiced(*orders: str) -> Ledger:
    """A ledger holding each order's sale INVOICED."""
    return Ledger({message(order).key: entry(order, InvoiceStatus.INVOICED, 100.0) for order in orders})


def ten_second_writeback(
    ledger: Ledger, *targets: object, queue: Visibility | None = None, **options: Any
) -> Writeback:
    """A Writeback whose every message may take 10 s, backing off without jitter."""
    return Writeback(
        ledger=ledger,
        targets=targets,  # type: ignore[arg-type]
        queue=queue or Visibility(),
        backoff=Backoff(60, 3600, lambda: 0.0),
        message_seconds=10,
        **options,
    )


def test_a_target_down_is_skipped_for_the_batch_and_the_other_target_still_gets_every_outcome() -> None:
    # Given two invoices, ERPNext down at the first outcome and the callback receiver up
    ledger = invoiced("A", "B")
    erpnext = ScriptedTarget("erpnext", TargetDown("erpnext answered 503"))
    callback = ScriptedTarget("callback")
    failures: list[tuple[InvoiceKey, str, str]] = []
    writeback = ten_second_writeback(
        ledger,
        erpnext,
        callback,
        on_failure=lambda key, target, error: failures.append((key, target, str(error))),
    )
    # When the batch of both is written back
    report = writeback.write_back([message("A"), message("B")], lambda: 60.0)
    # Then ERPNext is asked once and told of nothing more; the callback receiver gets both
    assert erpnext.delivered == []
    assert callback.delivered == [message("A").key, message("B").key]
    # And the failure is reported once, naming the invoice, the target and the error
    assert failures == [(message("A").key, "erpnext", "erpnext answered 503")]
    # And both messages come back (ERPNext still owes them), none reported written
    assert (report.written, report.failed) == ([], ["m-A", "m-B"])


def test_a_batch_reports_the_invoices_every_target_took() -> None:
    ledger = invoiced("A")
    writeback = ten_second_writeback(ledger, ScriptedTarget("callback"))
    report = writeback.write_back([message("A")], lambda: 60.0)
    assert (report.written, report.failed) == ([message("A").key], [])


def test_a_message_is_still_worked_with_exactly_its_time_left() -> None:
    # Given an invocation with exactly the time one message may take
    ledger = invoiced("A")
    callback = ScriptedTarget("callback")
    queue = Visibility()
    writeback = ten_second_writeback(ledger, callback, queue=queue)
    # When the message is written back / Then it is worked, not put back
    report = writeback.write_back([message("A")], lambda: 10.0)
    assert (callback.delivered, report.failed, queue.changes) == ([message("A").key], [], [])


def test_a_record_erpnext_answers_with_nulls_or_numbers_is_already_written() -> None:
    # Given the record ERPNext holds for the outcome, with empty fields as null and attempts as a number
    outcome = outcome_of(entry("A", InvoiceStatus.INVOICED, 100.0))
    recorded = {**sync_fields(outcome), "fynd_code": None, "reason": None, "attempts": 1}
    # When the write-back compares it / Then there is nothing to write
    assert not supersedes(outcome, recorded)
    # And a record of the same time whose status differs is written over
    assert supersedes(outcome, {**recorded, "status": "REJECTED"})
    # And so is one with no time of the relay's (made by hand), and no record at all
    assert supersedes(outcome, {**recorded, "relay_updated_at": None})
    assert supersedes(outcome, None)


def test_out_of_time_every_remaining_message_comes_back_at_once_unworked() -> None:
    # Given two messages and less time left than one message may take
    ledger = invoiced("A", "B")
    callback = ScriptedTarget("callback")
    queue = Visibility()
    writeback = ten_second_writeback(ledger, callback, queue=queue)
    # When the batch is written back
    report = writeback.write_back([message("A"), message("B")], lambda: 9.0)
    # Then neither is worked, and both come back at once (none is deleted unwritten)
    assert (callback.delivered, report.failed, queue.changes) == (
        [],
        ["m-A", "m-B"],
        [("h-A", 0), ("h-B", 0)],
    )
