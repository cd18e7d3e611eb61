"""Ingest's duplicate/conflict rules and the ledger's state machine."""

from dataclasses import replace

import pytest

from factories import invoice
from relay.domain.errors import ConflictError
from relay.domain.intake import Action, admit
from relay.domain.ledger import InvoiceStatus, LedgerEntry, sources_of


def entry_for(order_id: str, status: InvoiceStatus, **fields: object) -> LedgerEntry:
    recorded = invoice(order_id, **fields)
    return LedgerEntry(
        key=recorded.key,
        status=status,
        content_hash=recorded.content_hash(),
        invoice_number=recorded.invoiceNumber,
        attempts=1,
        accepted_at=0.0,
        updated_at=0.0,
    )


def test_new_key_is_created_and_queued() -> None:
    (admission,) = admit([invoice("A")], {})
    assert (admission.action, admission.status, admission.enqueue) == (
        Action.CREATE,
        InvoiceStatus.QUEUED,
        True,
    )


@pytest.mark.parametrize(
    ("status", "action", "enqueue"),
    [
        (InvoiceStatus.QUEUED, Action.ANSWER, False),
        (InvoiceStatus.IN_PROGRESS, Action.ANSWER, False),
        (InvoiceStatus.RETRYING, Action.ANSWER, False),
        (InvoiceStatus.INVOICED, Action.ANSWER, False),
        (InvoiceStatus.REJECTED, Action.ANSWER, False),
    ],
)
def test_same_content_is_a_duplicate_answered_with_its_state(
    status: InvoiceStatus, action: Action, enqueue: bool
) -> None:
    recorded = entry_for("A", status)
    (admission,) = admit([invoice("A")], {recorded.key: recorded})
    assert (admission.action, admission.status, admission.enqueue) == (action, status, enqueue)


def test_a_duplicate_of_a_queued_invoice_whose_send_failed_is_queued_again() -> None:
    # Given an entry ingest recorded QUEUED, then marked when SQS did not take its message
    recorded = replace(entry_for("A", InvoiceStatus.QUEUED), send_failed_at=5.0)
    # When the ERP retries the webhook
    (admission,) = admit([invoice("A")], {recorded.key: recorded})
    # Then the invoice is queued again
    assert (admission.action, admission.status, admission.enqueue) == (
        Action.REQUEUE,
        InvoiceStatus.QUEUED,
        True,
    )


@pytest.mark.parametrize(
    ("status", "webhook_id", "action"),
    [
        (InvoiceStatus.QUEUED, "wh-1", Action.REQUEUE),
        (InvoiceStatus.QUEUED, "wh-2", Action.ANSWER),
        (InvoiceStatus.QUEUED, None, Action.ANSWER),
        (InvoiceStatus.IN_PROGRESS, "wh-1", Action.ANSWER),
    ],
)
def test_the_delivery_that_accepted_a_queued_invoice_resent_queues_it_again(
    status: InvoiceStatus, webhook_id: str | None, action: Action
) -> None:
    # Given an entry accepted by webhook wh-1
    recorded = replace(entry_for("A", status), correlation_id="wh-1")
    # When a request with this webhook-id sends it again
    (admission,) = admit([invoice("A")], {recorded.key: recorded}, webhook_id=webhook_id)
    # Then only wh-1 itself, while QUEUED, queues it again (its sender never heard the 202)
    assert admission.action is action


@pytest.mark.parametrize(
    "status",
    [InvoiceStatus.QUEUED, InvoiceStatus.IN_PROGRESS, InvoiceStatus.RETRYING, InvoiceStatus.INVOICED],
)
def test_different_content_for_a_held_key_is_a_conflict(status: InvoiceStatus) -> None:
    recorded = entry_for("B", status)
    with pytest.raises(ConflictError) as conflict:
        admit([invoice("A"), invoice("B", invoiceNumber="NEW")], {recorded.key: recorded})
    (item,) = conflict.value.conflicts
    assert (item.index, item.key, item.status, item.invoice_number) == (1, recorded.key, status, "INV-B")


def test_corrected_invoice_for_a_rejected_key_starts_over() -> None:
    recorded = entry_for("A", InvoiceStatus.REJECTED)
    (admission,) = admit([invoice("A", invoiceNumber="FIXED")], {recorded.key: recorded})
    assert (admission.action, admission.status) == (Action.RESUBMIT, InvoiceStatus.QUEUED)
    assert admission.previous_hash == recorded.content_hash


def test_final_states_are_never_claimed_again() -> None:
    assert InvoiceStatus.INVOICED not in sources_of(InvoiceStatus.IN_PROGRESS)
    assert InvoiceStatus.REJECTED not in sources_of(InvoiceStatus.IN_PROGRESS)
    assert sources_of(InvoiceStatus.IN_PROGRESS) == {
        InvoiceStatus.QUEUED,
        InvoiceStatus.RETRYING,
        InvoiceStatus.IN_PROGRESS,
    }
    for target in InvoiceStatus:
        assert InvoiceStatus.INVOICED not in sources_of(target)


def test_outcomes_are_recorded_only_from_in_progress() -> None:
    for outcome in (InvoiceStatus.INVOICED, InvoiceStatus.REJECTED, InvoiceStatus.RETRYING):
        assert sources_of(outcome) == {InvoiceStatus.IN_PROGRESS}
    assert InvoiceStatus.QUEUED not in sources_of(InvoiceStatus.INVOICED)
    assert InvoiceStatus.REJECTED in sources_of(InvoiceStatus.QUEUED)


def test_lease_is_live_only_while_in_progress_and_unexpired() -> None:
    held = entry_for("A", InvoiceStatus.IN_PROGRESS)
    held = LedgerEntry(**{**held.__dict__, "lease_until": 100.0})
    assert held.lease_is_live(99.0)
    assert not held.lease_is_live(100.0)
    assert not LedgerEntry(**{**held.__dict__, "status": InvoiceStatus.RETRYING}).lease_is_live(0.0)
