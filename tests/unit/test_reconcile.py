"""The reconciler's rule (relay.domain.reconcile) over small fakes: which unfinished entries
count as stalled, that each is queued again from its stored invoice at most once per window,
and that one entry's failure never stops the others (breach 11, part 2)."""

import json
from collections.abc import Callable, Sequence

import pytest

from factories import invoice
from relay.domain.invoice import InvoiceKey
from relay.domain.ledger import InvoiceStatus, LedgerEntry
from relay.domain.messages import QueuedInvoice
from relay.domain.ports import LedgerUnavailableError, QueueUnavailableError
from relay.domain.reconcile import Reconciler, ReconcileReport, is_stalled
from relay.observability import metrics

NOW = 1_800_000_000.0
MINUTE = 60.0
WINDOW = 15 * MINUTE


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class LedgerFake:
    """The reconciler's view of the ledger: entries, their stored invoices, the conditional mark."""

    def __init__(self) -> None:
        self.entries: dict[InvoiceKey, LedgerEntry] = {}
        self.bodies: dict[InvoiceKey, QueuedInvoice] = {}
        self.after_listing: Callable[[], None] = lambda: None
        self.failing_marks: set[InvoiceKey] = set()
        self.listed: list[InvoiceStatus] = []

    def add(
        self, order_id: str, status: InvoiceStatus, *, updated_ago: float, **fields: object
    ) -> LedgerEntry:
        message = QueuedInvoice(
            invoice=invoice(order_id), content_hash=invoice(order_id).content_hash(), accepted_at=NOW - 3600
        )
        entry = LedgerEntry(
            key=message.invoice.key,
            status=status,
            content_hash=message.content_hash,
            invoice_number=message.invoice.invoiceNumber,
            attempts=0,
            accepted_at=message.accepted_at,
            updated_at=NOW - updated_ago,
            **fields,  # type: ignore[arg-type]
        )
        self.entries[entry.key] = entry
        self.bodies[entry.key] = message
        return entry

    def stalled(self, status: InvoiceStatus, *, updated_before: float, limit: int) -> list[LedgerEntry]:
        self.listed.append(status)
        found = sorted(
            (e for e in self.entries.values() if e.status is status and e.updated_at < updated_before),
            key=lambda e: e.updated_at,
        )[:limit]
        self.after_listing()
        return found

    def mark_reconciled(self, entry: LedgerEntry, *, now: float) -> bool:
        if entry.key in self.failing_marks:
            raise LedgerUnavailableError("throttled")
        current = self.entries.get(entry.key)
        if current != entry:
            return False
        self.entries[entry.key] = LedgerEntry(**{**vars(entry), "updated_at": now})
        return True

    def body(self, key: InvoiceKey) -> QueuedInvoice | None:
        return self.bodies.get(key)


class QueueFake:
    def __init__(self) -> None:
        self.sent: list[QueuedInvoice] = []
        self.refusing: set[str] = set()

    def send(self, messages: Sequence[QueuedInvoice]) -> None:
        if any(message.invoice.orderId in self.refusing for message in messages):
            raise QueueUnavailableError("1 invoice(s) could not be queued")
        self.sent.extend(messages)

    def send_later(self, message: QueuedInvoice, delay_seconds: int) -> None:
        raise AssertionError("the reconciler queues for now, never later")

    def change_visibility(self, receipt_handle: str, seconds: int) -> None:
        raise AssertionError("the reconciler holds no message")


class World:
    def __init__(self, *, max_per_run: int = 500) -> None:
        self.clock = Clock()
        self.ledger = LedgerFake()
        self.queue = QueueFake()
        self.reconciler = Reconciler(
            ledger=self.ledger,
            queue=self.queue,
            clock=self.clock,
            stall_seconds=WINDOW,
            max_per_run=max_per_run,
        )

    def run(self, seconds_left: float = 60.0) -> ReconcileReport:
        return self.reconciler.reconcile(lambda: seconds_left)

    def sent_orders(self) -> list[str]:
        return [message.invoice.orderId for message in self.queue.sent]


# ---- the rule ----


@pytest.mark.parametrize(
    ("status", "updated_ago", "fields", "stalled"),
    [
        # QUEUED: nothing wrote it for the window (ingest crashed before the queue send)
        (InvoiceStatus.QUEUED, 16 * MINUTE, {}, True),
        (InvoiceStatus.QUEUED, 14 * MINUTE, {}, False),
        # RETRYING: its retryAt passed more than the window ago (its message is gone)
        (InvoiceStatus.RETRYING, 30 * MINUTE, {"retry_at": NOW - 16 * MINUTE}, True),
        (InvoiceStatus.RETRYING, 30 * MINUTE, {"retry_at": NOW - 14 * MINUTE}, False),
        (InvoiceStatus.RETRYING, 90 * MINUTE, {"retry_at": NOW + 30 * MINUTE}, False),  # an IN403 back-off
        # IN_PROGRESS: its lease ended more than the window ago (the holder died, its message vanished)
        (InvoiceStatus.IN_PROGRESS, 20 * MINUTE, {"lease_until": NOW - 16 * MINUTE}, True),
        (InvoiceStatus.IN_PROGRESS, 20 * MINUTE, {"lease_until": NOW - 14 * MINUTE}, False),
        (InvoiceStatus.IN_PROGRESS, 20 * MINUTE, {"lease_until": NOW + MINUTE}, False),
        # final entries never, however old
        (InvoiceStatus.INVOICED, 600 * MINUTE, {}, False),
        (InvoiceStatus.REJECTED, 600 * MINUTE, {}, False),
    ],
)
def test_breach_11_stalled_means_no_progress_for_the_window_on_the_status_own_clock(
    status: InvoiceStatus, updated_ago: float, fields: dict[str, float], stalled: bool
) -> None:
    # Given an entry in `status`, last written `updated_ago`
    entry = LedgerFake().add("FY-1", status, updated_ago=updated_ago, **fields)
    # Then it is stalled exactly when its status' clock ran out more than the window ago
    assert is_stalled(entry, now=NOW, stall_seconds=WINDOW) is stalled


def test_breach_11_an_entry_written_within_the_window_is_not_stalled_whatever_its_clock() -> None:
    # Given a RETRYING entry whose retryAt is long past but which was written 5 minutes ago
    # (the reconciler's own mark, or a claim/record that just happened)
    entry = LedgerFake().add("FY-1", InvoiceStatus.RETRYING, updated_ago=5 * MINUTE, retry_at=NOW - 3600)
    # Then it is not stalled
    assert not is_stalled(entry, now=NOW, stall_seconds=WINDOW)


# ---- requeueing ----


def test_breach_11_queued_entry_left_without_a_message_is_queued_again_from_its_stored_invoice() -> None:
    # Given ingest crashed between the ledger transaction and the queue send 20 minutes ago
    world = World()
    entry = world.ledger.add("FY-1", InvoiceStatus.QUEUED, updated_ago=20 * MINUTE, correlation_id="wh-1")
    # When the reconciler runs
    report = world.run()
    # Then the stored message is queued again, exactly as ingest would have queued it
    assert world.queue.sent == [world.ledger.bodies[entry.key]]
    assert report.requeued == {"QUEUED": ["FY-1#sale"]}
    assert (report.failed, report.complete) == ([], True)


def test_breach_11_each_unfinished_status_is_healed() -> None:
    # Given a stalled entry in each unfinished state, and one that is fine in each
    world = World()
    world.ledger.add("Q-STALLED", InvoiceStatus.QUEUED, updated_ago=16 * MINUTE)
    world.ledger.add("Q-FRESH", InvoiceStatus.QUEUED, updated_ago=MINUTE)
    world.ledger.add("R-STALLED", InvoiceStatus.RETRYING, updated_ago=40 * MINUTE, retry_at=NOW - 20 * MINUTE)
    world.ledger.add("R-WAITING", InvoiceStatus.RETRYING, updated_ago=40 * MINUTE, retry_at=NOW + 20 * MINUTE)
    world.ledger.add(
        "P-STALLED", InvoiceStatus.IN_PROGRESS, updated_ago=30 * MINUTE, lease_until=NOW - 28 * MINUTE
    )
    world.ledger.add("P-HELD", InvoiceStatus.IN_PROGRESS, updated_ago=MINUTE, lease_until=NOW + MINUTE)
    world.ledger.add("DONE", InvoiceStatus.INVOICED, updated_ago=600 * MINUTE)
    # When the reconciler runs
    report = world.run()
    # Then exactly the stalled ones are queued again, each once
    assert sorted(world.sent_orders()) == ["P-STALLED", "Q-STALLED", "R-STALLED"]
    assert report.requeued == {
        "QUEUED": ["Q-STALLED#sale"],
        "RETRYING": ["R-STALLED#sale"],
        "IN_PROGRESS": ["P-STALLED#sale"],
    }
    # And it only ever asked for unfinished states (never a final one, never everything)
    assert set(world.ledger.listed) == {
        InvoiceStatus.QUEUED,
        InvoiceStatus.RETRYING,
        InvoiceStatus.IN_PROGRESS,
    }


def test_breach_11_an_entry_is_queued_again_at_most_once_per_window() -> None:
    # Given a stalled entry whose requeued message is merely slow to be dispatched
    world = World()
    world.ledger.add("FY-1", InvoiceStatus.RETRYING, updated_ago=40 * MINUTE, retry_at=NOW - 20 * MINUTE)
    world.run()
    # When the reconciler runs again every 5 minutes within the window
    for _ in range(2):
        world.clock.now += 5 * MINUTE
        assert world.run().requeued == {}
    # Then it was queued once; and once more only after a whole window without progress
    assert world.sent_orders() == ["FY-1"]
    world.clock.now += 6 * MINUTE
    world.run()
    assert world.sent_orders() == ["FY-1", "FY-1"]


def test_breach_11_an_entry_that_moves_after_it_was_listed_is_left_alone() -> None:
    # Given a stalled QUEUED entry that a dispatcher claims right after the reconciler listed it
    world = World()
    entry = world.ledger.add("FY-1", InvoiceStatus.QUEUED, updated_ago=20 * MINUTE)

    def claimed() -> None:
        world.ledger.entries[entry.key] = LedgerEntry(
            **{
                **vars(entry),
                "status": InvoiceStatus.IN_PROGRESS,
                "updated_at": NOW,
                "lease_until": NOW + 120,
            }
        )

    world.ledger.after_listing = claimed
    # When the reconciler runs
    report = world.run()
    # Then its conditional mark fails and nothing is queued: the entry is moving
    assert world.queue.sent == []
    assert (report.requeued, report.failed) == ({}, [])


def test_breach_11_two_reconcilers_racing_queue_an_entry_once() -> None:
    # Given two reconciler runs over one ledger, the second listing before the first marks
    world = World()
    world.ledger.add("FY-1", InvoiceStatus.QUEUED, updated_ago=20 * MINUTE)
    listed_by_other = world.ledger.stalled(InvoiceStatus.QUEUED, updated_before=NOW - WINDOW, limit=10)
    # When the first run requeues it, and then the second tries with what it listed
    world.run()
    marked = world.ledger.mark_reconciled(listed_by_other[0], now=NOW)
    # Then the second's mark is refused: one message in all
    assert marked is False
    assert world.sent_orders() == ["FY-1"]


# ---- failures are counted, never fatal ----


def test_breach_11_a_stalled_entry_without_a_stored_invoice_is_reported_and_not_retried_every_run() -> None:
    # Given a stalled entry accepted before invoices were stored, and one whose stored invoice
    # belongs to other content (a racer's body)
    world = World()
    old = world.ledger.add("OLD-1", InvoiceStatus.QUEUED, updated_ago=20 * MINUTE)
    del world.ledger.bodies[old.key]
    other = world.ledger.add("RACED-1", InvoiceStatus.QUEUED, updated_ago=20 * MINUTE)
    world.ledger.bodies[other.key] = world.ledger.bodies[other.key].model_copy(
        update={"content_hash": "other"}
    )
    # When the reconciler runs twice, 5 minutes apart
    first = world.run()
    world.clock.now += 5 * MINUTE
    second = world.run()
    # Then nothing is sent, both are reported once, and the next run leaves them for a window
    assert world.queue.sent == []
    assert sorted(first.failed) == ["OLD-1#sale", "RACED-1#sale"]
    assert second.failed == []


def test_breach_11_a_refused_send_or_ledger_outage_on_one_entry_does_not_stop_the_others() -> None:
    # Given three stalled entries: the queue refuses the first, the ledger fails marking the second
    world = World()
    world.ledger.add("A-REFUSED", InvoiceStatus.QUEUED, updated_ago=30 * MINUTE)
    b = world.ledger.add("B-THROTTLED", InvoiceStatus.QUEUED, updated_ago=25 * MINUTE)
    world.ledger.add("C-FINE", InvoiceStatus.QUEUED, updated_ago=20 * MINUTE)
    world.queue.refusing.add("A-REFUSED")
    world.ledger.failing_marks.add(b.key)
    # When the reconciler runs
    report = world.run()
    # Then the third is queued and the two failures are reported
    assert world.sent_orders() == ["C-FINE"]
    assert report.failed == ["A-REFUSED#sale", "B-THROTTLED#sale"]


def test_breach_11_a_ledger_outage_while_listing_fails_the_run_for_the_next_schedule() -> None:
    # Given a ledger that cannot be queried
    world = World()

    def unavailable(*_: object, **__: object) -> list[LedgerEntry]:
        raise LedgerUnavailableError("unreachable")

    world.ledger.stalled = unavailable  # type: ignore[method-assign]
    # When the reconciler runs, Then the run fails (Lambda counts an error; the alarm sees it)
    with pytest.raises(LedgerUnavailableError):
        world.run()


# ---- bounded work ----


def test_breach_11_a_run_requeues_at_most_its_limit_oldest_first_and_the_next_run_continues() -> None:
    # Given five stalled entries and a limit of three per run
    world = World(max_per_run=3)
    for minutes, order in enumerate(["E", "D", "C", "B", "A"]):
        world.ledger.add(order, InvoiceStatus.QUEUED, updated_ago=(20 + minutes) * MINUTE)
    # When the reconciler runs twice
    first = world.run()
    second = world.run()
    # Then the oldest three go first, the run says it stopped early, and the next run takes the rest
    assert world.sent_orders()[:3] == ["A", "B", "C"]
    assert first.complete is False
    assert sorted(world.sent_orders()) == ["A", "B", "C", "D", "E"]
    assert (second.requeued, second.complete) == ({"QUEUED": ["D#sale", "E#sale"]}, True)


def test_breach_11_a_run_stops_before_the_invocation_runs_out_of_time() -> None:
    # Given stalled entries, and an invocation with less time left than the reconciler keeps in hand
    world = World()
    world.ledger.add("FY-1", InvoiceStatus.QUEUED, updated_ago=20 * MINUTE)
    # When it runs, Then it queues nothing and says it stopped early
    report = world.run(seconds_left=1.0)
    assert (world.queue.sent, report.complete) == ([], False)


def test_breach_11_requeues_are_counted_by_status(capsys: pytest.CaptureFixture[str]) -> None:
    # Given one stalled RETRYING entry
    world = World()
    world.ledger.add("FY-1", InvoiceStatus.RETRYING, updated_ago=40 * MINUTE, retry_at=NOW - 20 * MINUTE)
    capsys.readouterr()
    # When the reconciler runs
    world.run()
    metrics.flush_metrics()
    # Then Reconciled is published once with the status it was found in
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    reconciled = [doc for doc in documents if "Reconciled" in doc]
    assert [(doc["Reconciled"], doc["status"]) for doc in reconciled] == [([1.0], "RETRYING")]
