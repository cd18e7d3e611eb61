"""The Ledger port's contract, the same test bodies against the in-memory fake and the DynamoDB
adapter on moto (tests/contract/conftest.py): what ingest, the dispatcher and the reconciler
may rely on, whichever ledger is behind the port."""

import pytest
from drivers import LedgerUnderTest

from factories import invoice
from relay.domain.errors import AcceptRaceError, LedgerUnavailableError
from relay.domain.intake import admit
from relay.domain.invoice import Invoice, InvoiceKey
from relay.domain.ledger import ClaimRefusal, InvoiceStatus, LedgerEntry, WorkList
from relay.domain.messages import QueuedInvoice
from relay.domain.policy import Invoiced, Rejected, RetryLater

NOW = 1_800_000_000.0
LEASE = 120.0


def accepted(ledger: LedgerUnderTest, *documents: Invoice, now: float = NOW) -> list[QueuedInvoice]:
    """Accept new invoices as ingest does; the messages it would queue."""
    recorded = ledger.ledger.get_many(document.key for document in documents)
    admissions = admit(list(documents), recorded, webhook_id="wh-1")
    ledger.ledger.accept(admissions, now=now, correlation_id="wh-1")
    return [
        QueuedInvoice(
            invoice=item.invoice, content_hash=item.content_hash, accepted_at=now, correlation_id="wh-1"
        )
        for item in admissions
    ]


def entry_of(ledger: LedgerUnderTest, key: InvoiceKey) -> LedgerEntry:
    entry = ledger.ledger.get(key)
    assert entry is not None
    return entry


def test_an_accepted_invoice_is_queued_with_its_body_stored(under_test: LedgerUnderTest) -> None:
    # When ingest accepts a new invoice
    (message,) = accepted(under_test, invoice("C-1"))
    # Then the entry is QUEUED, unclaimed, and the reconciler can read the body it queued
    entry = entry_of(under_test, message.invoice.key)
    assert (entry.status, entry.attempts, entry.accepted_at, entry.updated_at) == (
        InvoiceStatus.QUEUED,
        0,
        NOW,
        NOW,
    )
    assert (entry.correlation_id, entry.claim_message_id, entry.lease_owner) == ("wh-1", None, None)
    assert under_test.ledger.body(message.invoice.key) == message  # type: ignore[attr-defined]


def test_accept_is_all_or_nothing_when_one_key_was_recorded_meanwhile(under_test: LedgerUnderTest) -> None:
    # Given a key recorded by another request after this one decided it was new
    accepted(under_test, invoice("C-2"))
    decided = admit([invoice("C-3"), invoice("C-2")], {})
    # When this request writes its decision
    with pytest.raises(AcceptRaceError):
        under_test.ledger.accept(decided, now=NOW + 1, correlation_id="wh-2")
    # Then nothing of it was written: not even the new key
    assert under_test.ledger.get(invoice("C-3").key) is None
    assert entry_of(under_test, invoice("C-2").key).correlation_id == "wh-1"


def test_a_claim_takes_the_key_under_a_lease_naming_its_message(under_test: LedgerUnderTest) -> None:
    (message,) = accepted(under_test, invoice("C-4"))
    claim = under_test.ledger.claim(message, message_id="m-1", owner="w-1", now=NOW + 5, lease_seconds=LEASE)
    assert claim.granted
    entry = entry_of(under_test, message.invoice.key)
    assert (entry.status, entry.lease_owner, entry.lease_until, entry.claim_message_id) == (
        InvoiceStatus.IN_PROGRESS,
        "w-1",
        NOW + 5 + LEASE,
        "m-1",
    )
    assert (entry.attempts, entry.claimed_from, entry.updated_at) == (1, InvoiceStatus.QUEUED, NOW + 5)
    assert claim.entry == entry


def test_a_claim_is_refused_while_another_lease_is_live_and_taken_over_after(
    under_test: LedgerUnderTest,
) -> None:
    (message,) = accepted(under_test, invoice("C-5"))
    under_test.ledger.claim(message, message_id="m-1", owner="w-1", now=NOW, lease_seconds=LEASE)
    # While the lease is live: BUSY, and the refusal shows the holder's message
    busy = under_test.ledger.claim(message, message_id="m-2", owner="w-2", now=NOW + 60, lease_seconds=LEASE)
    assert busy.refusal is ClaimRefusal.BUSY
    assert busy.entry is not None
    assert busy.entry.claim_message_id == "m-1"
    # After it: another worker takes over; the entry says where the claim came from
    taken = under_test.ledger.claim(
        message, message_id="m-2", owner="w-2", now=NOW + LEASE + 1, lease_seconds=LEASE
    )
    assert taken.granted
    entry = entry_of(under_test, message.invoice.key)
    assert (entry.lease_owner, entry.attempts, entry.claimed_from, entry.claim_message_id) == (
        "w-2",
        2,
        InvoiceStatus.IN_PROGRESS,
        "m-2",
    )


def test_a_retrying_key_is_not_claimed_before_its_retry_at_and_is_at_it(under_test: LedgerUnderTest) -> None:
    (message,) = accepted(under_test, invoice("C-6"))
    under_test.ledger.claim(message, message_id="m-1", owner="w-1", now=NOW, lease_seconds=LEASE)
    assert under_test.ledger.record(
        message.invoice.key, RetryLater("fynd_unavailable", "503", 60), owner="w-1", now=NOW + 1, ack_id=None
    )
    entry = entry_of(under_test, message.invoice.key)
    assert (
        entry.status,
        entry.retry_at,
        entry.lease_owner,
        entry.last_error.code if entry.last_error else None,
    ) == (
        InvoiceStatus.RETRYING,
        NOW + 61,
        None,
        "fynd_unavailable",
    )
    early = under_test.ledger.claim(message, message_id="m-2", owner="w-2", now=NOW + 60, lease_seconds=LEASE)
    assert early.refusal is ClaimRefusal.NOT_YET
    due = under_test.ledger.claim(message, message_id="m-2", owner="w-2", now=NOW + 61, lease_seconds=LEASE)
    assert due.granted


def test_other_content_is_superseded_and_a_final_key_is_never_claimed_again(
    under_test: LedgerUnderTest,
) -> None:
    (message,) = accepted(under_test, invoice("C-7"))
    stale = message.model_copy(update={"content_hash": "0" * 64})
    refused = under_test.ledger.claim(stale, message_id="m-0", owner="w-1", now=NOW, lease_seconds=LEASE)
    assert refused.refusal is ClaimRefusal.SUPERSEDED
    under_test.ledger.claim(message, message_id="m-1", owner="w-1", now=NOW, lease_seconds=LEASE)
    assert under_test.ledger.record(
        message.invoice.key, Invoiced(confirmed_by="answer"), owner="w-1", now=NOW + 1, ack_id="ack-1"
    )
    entry = entry_of(under_test, message.invoice.key)
    assert (entry.status, entry.fynd_ack_id, entry.confirmed_by, entry.lease_owner) == (
        InvoiceStatus.INVOICED,
        "ack-1",
        "answer",
        None,
    )
    again = under_test.ledger.claim(
        message, message_id="m-2", owner="w-2", now=NOW + 999, lease_seconds=LEASE
    )
    assert again.refusal is ClaimRefusal.FINAL


def test_only_the_lease_holder_records_a_verdict(under_test: LedgerUnderTest) -> None:
    (message,) = accepted(under_test, invoice("C-8"))
    under_test.ledger.claim(message, message_id="m-1", owner="w-1", now=NOW, lease_seconds=LEASE)
    key = message.invoice.key
    assert not under_test.ledger.record(key, Rejected("IN422", "bad"), owner="w-2", now=NOW + 1, ack_id=None)
    assert entry_of(under_test, key).status is InvoiceStatus.IN_PROGRESS
    assert under_test.ledger.record(key, Rejected("IN422", "bad"), owner="w-1", now=NOW + 1, ack_id=None)
    entry = entry_of(under_test, key)
    assert (entry.status, entry.last_error.code if entry.last_error else None) == (
        InvoiceStatus.REJECTED,
        "IN422",
    )
    # A final entry takes no second verdict, even from the worker that held it
    assert not under_test.ledger.record(key, Invoiced(), owner="w-1", now=NOW + 2, ack_id=None)


def test_a_failed_send_is_marked_on_a_queued_entry_only_and_the_claim_clears_it(
    under_test: LedgerUnderTest,
) -> None:
    queued, claimed = accepted(under_test, invoice("C-9"), invoice("C-10"))
    under_test.ledger.claim(claimed, message_id="m-2", owner="w-1", now=NOW, lease_seconds=LEASE)
    assert under_test.ledger.mark_send_failed(queued.invoice.key, now=NOW + 1)
    assert not under_test.ledger.mark_send_failed(claimed.invoice.key, now=NOW + 1)
    entry = entry_of(under_test, queued.invoice.key)
    # Not progress: the reconciler's window (updatedAt) stays where it was
    assert (entry.send_failed_at, entry.updated_at) == (NOW + 1, NOW)
    under_test.ledger.claim(queued, message_id="m-1", owner="w-1", now=NOW + 2, lease_seconds=LEASE)
    assert entry_of(under_test, queued.invoice.key).send_failed_at is None


def test_a_failed_send_mark_on_a_key_never_recorded_records_nothing(under_test: LedgerUnderTest) -> None:
    # Given a key no write ever recorded (ingest marks what a write whose answer was lost may
    # have recorded), When it is marked, Then the mark is refused and no entry appears
    key = invoice("C-NEVER").key
    assert not under_test.ledger.mark_send_failed(key, now=NOW)
    assert under_test.ledger.get(key) is None


def test_only_the_claims_own_message_marks_the_entry_dead_lettered_and_the_next_claim_clears_it(
    under_test: LedgerUnderTest,
) -> None:
    (message,) = accepted(under_test, invoice("C-11"))
    under_test.ledger.claim(message, message_id="m-1", owner="w-1", now=NOW, lease_seconds=LEASE)
    under_test.ledger.record(
        message.invoice.key, RetryLater("fynd_unavailable", "503", 30), owner="w-1", now=NOW + 1, ack_id=None
    )
    assert not under_test.ledger.mark_dead_lettered(message, message_id="m-9", now=NOW + 2)
    assert under_test.ledger.mark_dead_lettered(message, message_id="m-1", now=NOW + 2)
    assert entry_of(under_test, message.invoice.key).dead_lettered_at == NOW + 2
    # The reconciler no longer sees it, however long it waits: it is in the dead-lettered list
    due, _ = under_test.ledger.due(  # type: ignore[attr-defined]
        WorkList.RETRYING, due_by=NOW + 10_000, limit=10, out_of_time=lambda: False
    )
    assert message.invoice.key not in [entry.key for entry in due]
    dead = under_test.ledger.listed(WorkList.DEAD_LETTERED)  # type: ignore[attr-defined]
    assert [entry.key for entry in dead] == [message.invoice.key]
    # An operator's redrive brings the message back: its claim clears the mark
    under_test.ledger.claim(message, message_id="m-1", owner="w-2", now=NOW + 100, lease_seconds=LEASE)
    assert entry_of(under_test, message.invoice.key).dead_lettered_at is None


def test_the_reconcilers_mark_loses_to_any_write_since_its_read(under_test: LedgerUnderTest) -> None:
    old, untouched = accepted(under_test, invoice("C-12"), invoice("C-13"))
    seen, kept = entry_of(under_test, old.invoice.key), entry_of(under_test, untouched.invoice.key)
    # A write after the read (a claim) wins over the reconciler's mark
    under_test.ledger.claim(old, message_id="m-1", owner="w-1", now=NOW + 200, lease_seconds=LEASE)
    assert not under_test.ledger.mark_reconciled(seen, now=NOW + 201)  # type: ignore[attr-defined]
    # An entry nobody wrote meanwhile takes it
    assert under_test.ledger.mark_reconciled(kept, now=NOW + 1000)  # type: ignore[attr-defined]
    assert not under_test.ledger.mark_reconciled(kept, now=NOW + 1001)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("reasons", "error"),
    [
        (("None", "ConditionalCheckFailed", "ThrottlingError"), AcceptRaceError),
        (("ThrottlingError", "None", "None"), LedgerUnavailableError),
        (("None", "TransactionConflict", "None"), LedgerUnavailableError),
    ],
    ids=["condition-beside-throttle-is-a-race", "throttle-is-an-outage", "conflict-is-an-outage"],
)
def test_a_transaction_cancelled_with_mixed_reasons_is_a_race_only_when_a_condition_failed(
    under_test: LedgerUnderTest, reasons: tuple[str, ...], error: type[Exception]
) -> None:
    # Given DynamoDB cancelling the accept transaction with these reasons (one per action)
    under_test.cancel_next(*reasons)
    # When ingest writes a new invoice
    with pytest.raises(error):
        accepted(under_test, invoice("C-15"))
    # Then nothing was written, and the same request succeeds once the cause has passed
    assert under_test.ledger.get(invoice("C-15").key) is None
    accepted(under_test, invoice("C-15"))
    assert entry_of(under_test, invoice("C-15").key).status is InvoiceStatus.QUEUED


def test_a_corrected_resubmission_starts_over_and_forgets_the_last_claim(under_test: LedgerUnderTest) -> None:
    """Issue 18, breach 2: DynamoDB kept claimMessageId (and the lease fields) where the fake
    built a fresh entry, so the corrected invoice's dead-letter mark was refused."""
    (message,) = accepted(under_test, invoice("C-16"))
    under_test.ledger.claim(message, message_id="m-1", owner="w-1", now=NOW, lease_seconds=LEASE)
    under_test.ledger.record(
        message.invoice.key, Rejected("IN422", "bad"), owner="w-1", now=NOW + 1, ack_id=None
    )
    # When the ERP sends corrected content
    (corrected,) = accepted(under_test, invoice("C-16", invoiceNumber="INV-C-16-fixed"), now=NOW + 10)
    # Then it starts over as a new acceptance would
    entry = entry_of(under_test, corrected.invoice.key)
    assert (entry.status, entry.attempts, entry.content_hash, entry.last_error) == (
        InvoiceStatus.QUEUED,
        0,
        corrected.content_hash,
        None,
    )
    assert (entry.claim_message_id, entry.claimed_from, entry.lease_owner, entry.lease_until) == (
        None,
        None,
        None,
        None,
    )
    # And its own message, dead-lettered before any claim, marks it
    assert under_test.ledger.mark_dead_lettered(corrected, message_id="m-7", now=NOW + 20)


def test_a_send_stamp_moves_a_due_entry_in_its_list_once_per_cover_and_disturbs_no_claim(
    under_test: LedgerUnderTest,
) -> None:
    (message,) = accepted(under_test, invoice("C-20"))
    ledger = under_test.ledger

    def queued_by(due_by: float) -> list[InvoiceKey]:
        found, _ = ledger.due(WorkList.QUEUED, due_by=due_by, limit=10, out_of_time=lambda: False)  # type: ignore[attr-defined]
        return [entry.key for entry in found]

    # When a dispatcher stamps the QUEUED entry before queueing a fresh copy of it
    assert ledger.stamp_sent(message, now=NOW + 10, until=NOW + 460)
    # Then the entry is due at the stamp's end in its own list, and nothing else moved
    entry = entry_of(under_test, message.invoice.key)
    assert (entry.sent_at, entry.due_at) == (NOW + 10, NOW + 460)
    assert (entry.status, entry.updated_at, entry.attempts, entry.lease_owner) == (
        InvoiceStatus.QUEUED,
        NOW,
        0,
        None,
    )
    assert queued_by(NOW + 459) == []
    assert queued_by(NOW + 460) == [message.invoice.key]
    # A second stamp while the first covers it writes nothing; one after it does
    assert not ledger.stamp_sent(message, now=NOW + 20, until=NOW + 470)
    assert entry_of(under_test, message.invoice.key).sent_at == NOW + 10
    assert ledger.stamp_sent(message, now=NOW + 470, until=NOW + 920)
    # And a claim takes the stamped entry as any other, keeping the stamp as a note
    claim = ledger.claim(message, message_id="m-1", owner="w-1", now=NOW + 500, lease_seconds=LEASE)
    assert claim.granted
    entry = entry_of(under_test, message.invoice.key)
    assert (entry.status, entry.due_at, entry.sent_at) == (
        InvoiceStatus.IN_PROGRESS,
        NOW + 500 + LEASE,
        NOW + 470,
    )


def test_a_send_stamp_leaves_a_live_lease_a_running_back_off_and_every_entry_it_must_not_move(
    under_test: LedgerUnderTest,
) -> None:
    ledger = under_test.ledger
    leased, retried, parked, dead, final, stale = accepted(
        under_test, *(invoice(f"C-{n}") for n in range(21, 27))
    )
    for message in (leased, retried, parked, dead, final):
        ledger.claim(
            message, message_id=f"m-{message.invoice.orderId}", owner="w-1", now=NOW, lease_seconds=LEASE
        )
    ledger.record(
        retried.invoice.key, RetryLater("fynd_unavailable", "503", 30), owner="w-1", now=NOW + 1, ack_id=None
    )
    ledger.record(
        parked.invoice.key, RetryLater("fynd_unavailable", "503", 3600), owner="w-1", now=NOW + 1, ack_id=None
    )
    ledger.record(
        dead.invoice.key, RetryLater("fynd_unavailable", "503", 30), owner="w-1", now=NOW + 1, ack_id=None
    )
    assert ledger.mark_dead_lettered(dead, message_id=f"m-{dead.invoice.orderId}", now=NOW + 2)
    ledger.record(final.invoice.key, Invoiced(), owner="w-1", now=NOW + 1, ack_id="ack")
    before = {message.invoice.key: entry_of(under_test, message.invoice.key) for message in (leased, retried)}
    # A live lease and a back-off still running: the entry is not due, nothing is written
    assert not ledger.stamp_sent(leased, now=NOW + 10, until=NOW + 460)
    assert not ledger.stamp_sent(retried, now=NOW + 10, until=NOW + 460)
    assert {key: entry_of(under_test, key) for key in before} == before
    # Once due (the back-off over, the lease ended with nobody to renew it), each is stamped
    # in its own list, status and lease untouched
    assert ledger.stamp_sent(retried, now=NOW + 40, until=NOW + 490)
    found, _ = ledger.due(WorkList.RETRYING, due_by=NOW + 490, limit=10, out_of_time=lambda: False)  # type: ignore[attr-defined]
    assert [entry.key for entry in found] == [retried.invoice.key]
    assert ledger.stamp_sent(leased, now=NOW + LEASE + 1, until=NOW + LEASE + 451)
    entry = entry_of(under_test, leased.invoice.key)
    assert (entry.status, entry.lease_owner, entry.lease_until, entry.due_at) == (
        InvoiceStatus.IN_PROGRESS,
        "w-1",
        NOW + LEASE,
        NOW + LEASE + 451,
    )
    # A parked, a dead-lettered and a final entry are never stamped, however late
    late = NOW + 10_000
    for message in (parked, dead, final):
        assert not ledger.stamp_sent(message, now=late, until=late + 450)
    assert entry_of(under_test, parked.invoice.key).parked
    # Nor a copy of other content than the entry holds
    other = stale.model_copy(update={"content_hash": "other-content"})
    assert not ledger.stamp_sent(other, now=NOW + 10, until=NOW + 460)
    assert entry_of(under_test, stale.invoice.key).sent_at is None


def test_a_corrected_resubmission_forgets_the_send_stamp(under_test: LedgerUnderTest) -> None:
    (message,) = accepted(under_test, invoice("C-27"))
    assert under_test.ledger.stamp_sent(message, now=NOW + 10, until=NOW + 460)
    under_test.ledger.claim(message, message_id="m-1", owner="w-1", now=NOW + 500, lease_seconds=LEASE)
    under_test.ledger.record(
        message.invoice.key, Rejected("IN422", "bad"), owner="w-1", now=NOW + 501, ack_id=None
    )
    (corrected,) = accepted(under_test, invoice("C-27", invoiceNumber="INV-C-27-fixed"), now=NOW + 600)
    entry = entry_of(under_test, corrected.invoice.key)
    assert (entry.status, entry.sent_at, entry.due_at) == (InvoiceStatus.QUEUED, None, NOW + 600)
