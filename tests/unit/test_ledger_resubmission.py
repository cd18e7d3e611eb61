"""Issue 18, breach 2: the ledger adapter on DynamoDB (in-process moto, the table built from
template.yaml) and the in-memory fake agree on what a corrected resubmission and an
operator's replay leave behind, and on when a lease has ended. The same test bodies run
against both, so a drift between them fails here."""

from typing import Any

import pytest

from factories import invoice
from fakes import FakeClock, InMemoryLedger
from relay.adapters.ledger import InvoiceLedger
from relay.domain.intake import Action, admit
from relay.domain.invoice import Invoice
from relay.domain.ledger import ClaimRefusal, InvoiceStatus
from relay.domain.messages import QueuedInvoice
from relay.domain.policy import Rejected
from relay.domain.ports import Ledger

TABLE = "InvoiceLedgerTable"
NOW = 1_800_000_000.0
LEASE = 120.0


@pytest.fixture(params=["fake", "dynamodb"])
def ledger(request: pytest.FixtureRequest) -> Ledger:
    if request.param == "fake":
        return InMemoryLedger(FakeClock(NOW))
    return InvoiceLedger(TABLE, request.getfixturevalue("dynamodb"))


def accepted(ledger: Ledger, document: Invoice, *, now: float = NOW) -> QueuedInvoice:
    (admission,) = admit([document], ledger.get_many([document.key]))
    assert admission.action in (Action.CREATE, Action.RESUBMIT)
    ledger.accept([admission], now=now, correlation_id="wh-1")
    return QueuedInvoice(invoice=document, content_hash=admission.content_hash, accepted_at=now)


def rejected_after_a_claim(ledger: Ledger, order_id: str) -> QueuedInvoice:
    """An invoice claimed by message m-1, then refused by Fynd (IN422)."""
    first = accepted(ledger, invoice(order_id))
    assert ledger.claim(first, message_id="m-1", owner="w-1", now=NOW + 1, lease_seconds=LEASE).granted
    assert ledger.record(first.invoice.key, Rejected("IN422", "bad"), owner="w-1", now=NOW + 2, ack_id=None)
    return first


def test_a_corrected_resubmission_starts_as_a_new_entry_and_its_dead_letter_mark_succeeds(
    ledger: Ledger,
) -> None:
    # Given an invoice claimed by message m-1 and rejected
    first = rejected_after_a_claim(ledger, "FIX-1")
    # When the ERP sends it corrected, and the corrected one's message m-2 later leaves for the DLQ
    corrected = accepted(ledger, invoice("FIX-1", invoiceNumber="INV-FIX-1-B"), now=NOW + 10)
    entry = ledger.get(first.invoice.key)
    marked = ledger.mark_dead_lettered(corrected, message_id="m-2", now=NOW + 20)
    # Then the entry holds nothing of the last claim or outcome, and the mark is taken
    assert entry is not None
    assert (entry.status, entry.attempts, entry.content_hash) == (
        InvoiceStatus.QUEUED,
        0,
        corrected.content_hash,
    )
    assert (entry.claim_message_id, entry.claimed_from, entry.lease_owner, entry.lease_until) == (None,) * 4
    assert (entry.last_error, entry.retry_at, entry.dead_lettered_at, entry.send_failed_at) == (None,) * 4
    assert marked


@pytest.mark.parametrize("after", [0.0, 0.001, 5.0])
def test_a_lease_has_ended_at_its_lease_until(ledger: Ledger, after: float) -> None:
    # Given an invoice claimed under a lease until NOW + LEASE
    message = accepted(ledger, invoice("LEASE-1"))
    assert ledger.claim(message, message_id="m-1", owner="w-1", now=NOW, lease_seconds=LEASE).granted
    # When another worker claims it at the lease's end, or after it
    claim = ledger.claim(message, message_id="m-2", owner="w-2", now=NOW + LEASE + after, lease_seconds=LEASE)
    # Then it takes the key (a lease "until T" is over at T: LedgerEntry.lease_is_live)
    assert claim.granted
    assert claim.entry is not None
    assert (claim.entry.lease_owner, claim.entry.claim_message_id) == ("w-2", "m-2")


def test_a_lease_is_held_until_its_last_millisecond(ledger: Ledger) -> None:
    # Given an invoice claimed under a lease until NOW + LEASE
    message = accepted(ledger, invoice("LEASE-2"))
    assert ledger.claim(message, message_id="m-1", owner="w-1", now=NOW, lease_seconds=LEASE).granted
    # When another worker tries a millisecond before its end, Then it is BUSY
    claim = ledger.claim(message, message_id="m-2", owner="w-2", now=NOW + LEASE - 0.001, lease_seconds=LEASE)
    assert claim.refusal is ClaimRefusal.BUSY


@pytest.fixture
def dynamodb_ledger(dynamodb: Any) -> InvoiceLedger:
    return InvoiceLedger(TABLE, dynamodb)


def test_a_replayed_invoice_forgets_its_last_claim_and_its_dead_letter_mark_succeeds(
    dynamodb_ledger: InvoiceLedger, dynamodb: Any
) -> None:
    # Given an invoice claimed by message m-1 and rejected
    first = rejected_after_a_claim(dynamodb_ledger, "REPLAY-1")
    entry = dynamodb_ledger.get(first.invoice.key)
    assert entry is not None
    # When an operator replays it (relay replay), and its new message m-2 later leaves for the DLQ
    replayed = dynamodb_ledger.replay(entry, by="ops", reason="fixed", now=NOW + 10)
    marked = dynamodb_ledger.mark_dead_lettered(first, message_id="m-2", now=NOW + 20)
    # Then the item holds nothing a new entry would not, but its history, and the mark is taken
    assert replayed is not None
    item = dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": "REPLAY-1#sale"}}, ConsistentRead=True)["Item"]
    forgotten = {"claimMessageId", "claimedFrom", "leaseOwner", "leaseUntil", "lastErrorCode", "expiresAt"}
    assert forgotten & set(item) == set()
    assert [event.action for event in replayed.history] == ["replay"]
    assert marked


class AnswerLostThenRetried:
    """The DynamoDB client as botocore drives it when an UpdateItem's answer times out: the
    request was applied, and botocore sends it again; the caller sees the retry's answer."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def update_item(self, **request: Any) -> Any:
        self._client.update_item(**request)  # applied; its answer never arrives
        return self._client.update_item(**request)


def test_a_claim_whose_answer_was_lost_and_retried_is_still_granted(dynamodb: Any) -> None:
    # Given a queued invoice, and a ledger whose UpdateItem answers are lost and retried (a loaded moto, or DynamoDB)
    message = accepted(InvoiceLedger(TABLE, dynamodb), invoice("RETRIED-1"))
    ledger = InvoiceLedger(TABLE, AnswerLostThenRetried(dynamodb))
    # When a worker claims it: the first attempt takes it, the retry finds it taken
    claim = ledger.claim(message, message_id="m-1", owner="w-1", now=NOW + 1, lease_seconds=LEASE)
    # Then the claim is granted (it is this request's own), and the worker can record its verdict
    assert claim.granted
    assert claim.entry is not None
    assert (claim.entry.lease_owner, claim.entry.claim_message_id, claim.entry.attempts) == ("w-1", "m-1", 1)
    assert InvoiceLedger(TABLE, dynamodb).record(
        message.invoice.key, Rejected("IN422", "bad"), owner="w-1", now=NOW + 2, ack_id=None
    )


def test_the_same_message_claimed_again_by_a_later_request_is_still_busy(dynamodb: Any) -> None:
    # Given an invoice another worker holds
    ledger = InvoiceLedger(TABLE, dynamodb)
    message = accepted(ledger, invoice("HELD-1"))
    assert ledger.claim(message, message_id="m-1", owner="w-1", now=NOW, lease_seconds=LEASE).granted
    # When a later request for the same message is retried after a lost answer, Then it is BUSY (not its token)
    retried = InvoiceLedger(TABLE, AnswerLostThenRetried(dynamodb))
    claim = retried.claim(message, message_id="m-1", owner="w-1", now=NOW + 1, lease_seconds=LEASE)
    assert claim.refusal is ClaimRefusal.BUSY
