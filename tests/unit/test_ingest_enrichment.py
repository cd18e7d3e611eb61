"""An ERP that enriches an invoice before it reaches Fynd (relay.domain.intake, Action.REPLACE).

A second version of a QUEUED, unclaimed key, with the same invoiceNumber and only added
fields, replaces the first (202, QUEUED); once claimed or final, different content is a 409.
Whatever the order of the claim and the replacement, Fynd receives the invoice once.
"""

from collections.abc import Callable, Sequence
from dataclasses import replace

import pytest

from factories import invoice
from fakes import InMemoryLedger, World
from relay.domain.errors import ConflictError, QueueUnavailableError
from relay.domain.intake import Action, Admission, InvoiceAcceptance, admit
from relay.domain.invoice import Invoice
from relay.domain.ledger import InvoiceStatus, LedgerEntry
from relay.domain.messages import QueuedInvoice

E_INVOICE = {
    "irnNumber": "a" * 64,
    "ackNumber": "182610045719832",
    "ackDate": "2026-11-20 14:32:05",
    "signedInvoice": "eyJhbGciOi.signed.invoice",
    "invoiceQrCode": "eyJhbGciOi.signed.qr",
}
FIRST = invoice("FY-ENR-1")
ENRICHED = invoice("FY-ENR-1", **E_INVOICE)


@pytest.fixture
def world() -> World:
    return World()


def claim_first_message(world: World) -> None:
    """A dispatcher takes the first version's message and claims it (its call not yet made)."""
    (message,) = world.queue.receive(1)
    claim = world.ledger.claim(
        message.message,
        message_id=message.message_id,
        owner="worker-0",
        now=world.clock(),
        lease_seconds=120,
    )
    assert claim.granted


def test_an_enrichment_of_a_queued_invoice_replaces_it_and_fynd_gets_only_the_enriched_one(
    world: World,
) -> None:
    # Given an invoice accepted without its e-invoice, still QUEUED
    world.accept(FIRST)
    # When the ERP sends it again with the e-invoice fields added
    (admission,) = world.accept(ENRICHED, correlation_id="wh-2")
    # Then it is accepted as a replacement, QUEUED
    assert (admission.action, admission.status) == (Action.REPLACE, InvoiceStatus.QUEUED)
    assert world.ledger.entries[FIRST.key].content_hash == ENRICHED.content_hash()
    # And once the queue drains, Fynd has received the invoice once, with its e-invoice
    world.drain()
    assert world.fynd.sent[FIRST.key] == 1
    (call,) = world.fynd.calls
    assert list(call.invoices) == [ENRICHED]
    assert world.status(FIRST.key) is InvoiceStatus.INVOICED


def test_an_enrichment_after_the_claim_or_when_final_is_a_conflict(world: World) -> None:
    # Given the first version claimed by a dispatcher
    world.accept(FIRST)
    claim_first_message(world)
    # When the enriched version arrives, Then it is refused as a conflict naming the state
    with pytest.raises(ConflictError) as claimed:
        world.accept(ENRICHED, correlation_id="wh-2")
    assert claimed.value.conflicts[0].status is InvoiceStatus.IN_PROGRESS
    # And once final, still a conflict
    other = World()
    other.accept(FIRST)
    other.drain()
    with pytest.raises(ConflictError):
        other.accept(ENRICHED, correlation_id="wh-2")
    assert list(other.fynd.calls[0].invoices) == [FIRST]
    assert len(other.fynd.calls) == 1


@pytest.mark.parametrize(
    ("name", "second"),
    [
        ("a changed field", invoice("FY-ENR-1", invoiceNumber="INV-OTHER", **E_INVOICE)),
        ("a removed field", invoice("FY-ENR-1", orderItems=None)),
        ("a changed item", invoice("FY-ENR-1", orderItems=[{"orderItemId": "I-1", "quantity": 2}])),
    ],
)
def test_a_queued_invoice_changed_rather_than_enriched_is_a_conflict(name: str, second: Invoice) -> None:
    world = World()
    world.accept(invoice("FY-ENR-1", orderItems=[{"orderItemId": "I-1", "quantity": 1}]))
    with pytest.raises(ConflictError):
        world.accept(second, correlation_id="wh-2")


def test_the_first_version_resent_after_its_enrichment_is_a_conflict_and_changes_nothing(
    world: World,
) -> None:
    world.accept(FIRST)
    world.accept(ENRICHED, correlation_id="wh-2")
    with pytest.raises(ConflictError):
        world.accept(FIRST, correlation_id="wh-3")
    assert world.ledger.entries[FIRST.key].content_hash == ENRICHED.content_hash()


class RacingLedger(InMemoryLedger):
    """A ledger that runs `before_write` once, between the acceptance's reads and its write:
    the moment a dispatcher's claim can slip in."""

    before_write: Callable[[], None] | None = None

    def accept(self, admissions: Sequence[Admission], *, now: float, correlation_id: str | None) -> None:
        hook = self.before_write
        if hook is not None and any(admission.action is Action.REPLACE for admission in admissions):
            self.before_write = None
            hook()
        super().accept(admissions, now=now, correlation_id=correlation_id)


@pytest.mark.parametrize("claim_at", ["before the read", "between the read and the write", "after the write"])
def test_no_order_of_the_claim_and_the_replacement_sends_the_invoice_twice(claim_at: str) -> None:
    # Given the first version QUEUED, its message on the queue
    world = World()
    world.ledger = RacingLedger(world.clock, world.faults)
    world.acceptance = InvoiceAcceptance(ledger=world.ledger, queue=world.queue, clock=world.clock)
    world.accept(FIRST)
    # When a dispatcher claims the first version at `claim_at` of the enrichment's acceptance
    answer: str
    if claim_at == "before the read":
        claim_first_message(world)
    elif claim_at == "between the read and the write":
        assert isinstance(world.ledger, RacingLedger)
        world.ledger.before_write = lambda: claim_first_message(world)
    try:
        world.accept(ENRICHED, correlation_id="wh-2")
        answer = "202"
    except ConflictError:
        answer = "409"
    if claim_at == "after the write":
        (message,) = [m for m in world.queue.receive(10) if m.message.invoice == FIRST]
        refused = world.ledger.claim(
            message.message,
            message_id=message.message_id,
            owner="worker-0",
            now=world.clock(),
            lease_seconds=120,
        )
        assert not refused.granted  # the first version's message is superseded
        world.queue.answer([message], [])  # and acknowledged: it has nothing left to do
    # Then whatever the dispatchers do next, Fynd receives the invoice exactly once,
    # and it is the version the sender was told about
    world.clock.advance(121)  # a lease the claim left behind runs out
    world.drain()
    assert world.fynd.sent[FIRST.key] == 1
    sent = [item for call in world.fynd.calls for item in call.invoices]
    assert sent == ([ENRICHED] if answer == "202" else [FIRST])
    assert answer == ("409" if claim_at != "after the write" else "202")


@pytest.mark.parametrize(
    "status", [InvoiceStatus.IN_PROGRESS, InvoiceStatus.RETRYING, InvoiceStatus.INVOICED]
)
def test_admit_replaces_only_a_queued_entry_whatever_versions_it_is_given(status: InvoiceStatus) -> None:
    # Given the recorded first version, in a state some dispatcher has reached
    entry = LedgerEntry(
        key=FIRST.key,
        status=status,
        content_hash=FIRST.content_hash(),
        invoice_number=FIRST.invoiceNumber,
        attempts=1,
        accepted_at=0.0,
        updated_at=0.0,
    )
    # When the enriched version is admitted, Then it conflicts; QUEUED, it replaces
    with pytest.raises(ConflictError):
        admit([ENRICHED], {FIRST.key: entry}, queued_versions={FIRST.key: FIRST})
    queued = replace(entry, status=InvoiceStatus.QUEUED, attempts=0)
    (admission,) = admit([ENRICHED], {FIRST.key: queued}, queued_versions={FIRST.key: FIRST})
    assert admission.action is Action.REPLACE


def test_two_enrichments_racing_settle_on_the_fuller_one_or_refuse_the_other() -> None:
    # Given the first version QUEUED, and two enrichments: one adds the IRN, the next adds the rest
    irn_only = invoice("FY-ENR-1", irnNumber=E_INVOICE["irnNumber"])
    world = World()
    world.ledger = RacingLedger(world.clock, world.faults)
    world.acceptance = InvoiceAcceptance(ledger=world.ledger, queue=world.queue, clock=world.clock)
    world.accept(FIRST)
    # When the IRN-only version is written between the full version's read and its write
    assert isinstance(world.ledger, RacingLedger)
    world.ledger.before_write = lambda: world.accept(irn_only, correlation_id="wh-2")
    (admission,) = world.accept(ENRICHED, correlation_id="wh-3")
    # Then the full version, which only adds to the IRN-only one, replaces it in turn
    assert admission.action is Action.REPLACE
    world.drain()
    assert [item for call in world.fynd.calls for item in call.invoices] == [ENRICHED]


def test_a_replacement_whose_queue_send_failed_is_sent_once_by_the_reconciler(world: World) -> None:
    # Given the first version QUEUED
    world.accept(FIRST)
    # When the enrichment is recorded but SQS refuses its message (the sender gets a 503)
    world.faults.fail("queue.send", QueueUnavailableError("SQS down (fake)"))
    with pytest.raises(QueueUnavailableError):
        world.accept(ENRICHED, correlation_id="wh-2")
    # Then the first version's message finds its content superseded and is dropped
    world.drain()
    assert world.fynd.calls == []
    # And the reconciler queues the stored enrichment, which reaches Fynd once
    world.clock.advance(1_000)
    world.reconcile()
    world.drain()
    assert [item for call in world.fynd.calls for item in call.invoices] == [ENRICHED]


@pytest.mark.parametrize(
    ("status", "second", "answer"),
    [
        (InvoiceStatus.QUEUED, FIRST, Action.ANSWER),  # the same invoice again
        (InvoiceStatus.QUEUED, invoice("FY-ENR-1", invoiceNumber="INV-OTHER"), None),  # another number
        (InvoiceStatus.IN_PROGRESS, ENRICHED, None),  # an enrichment after the claim
        (InvoiceStatus.INVOICED, ENRICHED, None),  # an enrichment once final
    ],
)
def test_only_a_possible_enrichment_reads_the_stored_invoice(
    world: World, status: InvoiceStatus, second: Invoice, answer: Action | None
) -> None:
    # Given the first version recorded, in `status`
    world.accept(FIRST)
    world.ledger.entries[FIRST.key] = replace(world.ledger.entries[FIRST.key], status=status)
    # When `second` arrives
    if answer is None:
        with pytest.raises(ConflictError):
            world.accept(second, correlation_id="wh-2")
    else:
        (admission,) = world.accept(second, correlation_id="wh-2")
        assert admission.action is answer
    # Then it was decided (a duplicate answered, or a conflict) from the entry alone: no stored
    # invoice was read, as a read per key costs
    assert world.faults.calls["ledger.body"] == 0


def test_an_enrichment_reads_the_stored_invoice_once() -> None:
    world = World()
    world.accept(FIRST)
    world.accept(ENRICHED, correlation_id="wh-2")
    assert world.faults.calls["ledger.body"] == 1


def test_a_stored_invoice_for_other_content_is_no_version_to_enrich(world: World) -> None:
    # Given the invoice recorded with its acknowledgement, while the body stored for its key is
    # a racer's, for other content (the invoice without it)
    acknowledged = invoice("FY-ENR-1", ackNumber="182610045719832")
    world.accept(acknowledged)
    world.ledger.bodies[FIRST.key] = QueuedInvoice(
        invoice=FIRST,
        content_hash=FIRST.content_hash(),
        accepted_at=world.clock.now,
        correlation_id="wh-racer",
    ).to_body()
    # When a version that adds the IRN to the racer's invoice, but drops the acknowledgement, arrives
    with_irn = invoice("FY-ENR-1", irnNumber="a" * 64)
    # Then it is a conflict with what is recorded, not an enrichment of the racer's body
    with pytest.raises(ConflictError):
        world.accept(with_irn, correlation_id="wh-2")
    assert world.ledger.entries[FIRST.key].content_hash == acknowledged.content_hash()
