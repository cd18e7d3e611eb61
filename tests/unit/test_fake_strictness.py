"""The fakes are as strict as AWS where moto (or the happy path) is not: each of AWS's
documented rules the fakes apply is named here, so a test built on the fakes meets it.

The rules the adapters share with the fakes run against both in tests/contract; these are the
ones moto does not apply (characters, stale receipt handles, retention, the transaction limit).
"""

import boto3
import pytest
from moto import mock_aws

from factories import invoice
from fakes import FakeClock, InMemoryLedger, RecordingQueue, sqs_refuses
from relay.domain.errors import LedgerUnavailableError, QueueUnavailableError
from relay.domain.intake import admit
from relay.domain.messages import QueuedInvoice

DAY = 86_400


def message(order_id: str = "S-1", **fields: str) -> QueuedInvoice:
    return QueuedInvoice(
        invoice=invoice(order_id, **fields), content_hash="h", accepted_at=0.0, correlation_id="wh-1"
    )


@pytest.mark.parametrize("character", ["\ufffe", "\uffff"])
def test_sqs_refuses_a_body_holding_a_character_outside_its_set(character: str) -> None:
    """SendMessage allows #x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD | #x10000-#x10FFFF and
    answers InvalidMessageContents to anything else (issue 18, breach 1)."""
    queue = RecordingQueue(FakeClock())
    refused = message(invoiceNumber=f"INV{character}1")
    with pytest.raises(QueueUnavailableError) as error:
        queue.send([message("S-0"), refused])
    assert error.value.unsent == (refused.invoice.key,)
    assert [held.body for held in queue.messages.values()] == [message("S-0").to_body()]
    with pytest.raises(QueueUnavailableError):
        queue.send_later(refused, 30)


def test_sqs_refuses_raw_control_characters_and_takes_every_character_inside_its_set() -> None:
    """(JSON writes control characters escaped, so only U+FFFE and U+FFFF reach a body raw.)"""
    assert all(sqs_refuses(f"a{character}b") for character in ["\x00", "\x01", "\x0b", "\x1f", "\ud800"])
    assert not sqs_refuses("tab\t newline\n return\r é \ud7ff \ue000 \ufffd 😀 \U0010ffff")


def test_moto_takes_the_characters_sqs_refuses_which_is_why_the_fake_carries_the_rule(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If this fails, moto has learnt the rule, and the contract suite can check it on moto too."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    with mock_aws():
        sqs = boto3.client("sqs", region_name="ap-south-1")
        url = sqs.create_queue(QueueName="loose")["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="INV\ufffe1")
        assert sqs.receive_message(QueueUrl=url)["Messages"][0]["Body"] == "INV\ufffe1"


def test_a_stale_receipt_handle_deletes_nothing_by_default_and_may_delete_on_a_standard_queue() -> None:
    """DeleteMessage: "Amazon SQS can delete a message from a queue even if a visibility timeout
    setting causes the message to be locked by another consumer." Off by default (the usual
    case); the property test turns it on."""
    queue = RecordingQueue(FakeClock())
    queue.send([message()])
    (first,) = queue.receive()
    second = queue.redeliver(first.message_id)  # another consumer holds it now
    assert second is not None
    queue.answer([first], [])
    assert first.message_id in queue.messages
    queue.stale_handles_delete = True
    queue.answer([first], [])
    assert queue.messages == {}


def test_a_message_expires_after_the_queues_retention() -> None:
    """MessageRetentionPeriod 345600 (4 days) in template.yaml: SQS deletes older messages."""
    clock = FakeClock()
    queue = RecordingQueue(clock)
    queue.send([message()])
    clock.advance(4 * DAY - 1)
    queue.expire()
    assert len(queue.messages) == 1
    clock.advance(1)
    assert queue.receive() == []
    assert [QueuedInvoice.from_body(held.body).invoice.orderId for held in queue.expired] == ["S-1"]


def test_a_dead_letter_expires_counted_from_its_first_send_not_from_its_move() -> None:
    """SQS: "The expiration of a message is always based on its original enqueue timestamp": a
    message dead-lettered on day 3 leaves the 14-day dead-letter queue on day 14, not day 17."""
    clock = FakeClock()
    queue = RecordingQueue(clock, max_receive_count=1)
    queue.send([message()])
    (delivery,) = queue.receive()
    clock.advance(3 * DAY)
    queue.change_visibility(delivery.receipt_handle, 0)
    assert queue.receive() == []  # over its receives: moved to the dead-letter queue
    assert len(queue.dead_letters) == 1
    clock.advance(11 * DAY - 1)
    queue.expire()
    assert len(queue.dead_letters) == 1
    clock.advance(1)
    queue.expire()
    assert queue.dead_letters == []


def test_one_transaction_holds_at_most_100_actions() -> None:
    """TransactWriteItems takes at most 100 actions (a ValidationException beyond): the fake
    refuses a write of more, and writes none of it."""
    ledger = InMemoryLedger(FakeClock())
    admissions = admit([invoice(f"T-{n}") for n in range(101)], {})
    with pytest.raises(LedgerUnavailableError, match="100 actions"):
        ledger.accept(admissions, now=0.0, correlation_id=None)
    assert ledger.entries == {}
    ledger.accept(admissions[:100], now=0.0, correlation_id=None)
    assert len(ledger.entries) == 100
