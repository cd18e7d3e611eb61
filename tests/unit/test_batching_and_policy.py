"""Grouping invoices into Fynd calls, and what each Fynd answer leads to."""

import pytest

from factories import invoice
from fakes import World
from relay.domain.fynd import (
    FyndAmbiguous,
    FyndCall,
    FyndCallError,
    FyndCallRefused,
    FyndThrottled,
    FyndUnavailable,
    OrderError,
    plan_calls,
)
from relay.domain.invoice import InvoiceType
from relay.domain.ledger import InvoiceStatus
from relay.domain.policy import (
    DEADLINE_PASSED,
    MAX_VISIBILITY_SECONDS,
    Backoff,
    CodePolicy,
    Invoiced,
    Rejected,
    RetryLater,
    code_policy,
    dimension,
    outage_backoff,
    too_early_backoff,
)

DAY = 86_400.0


def policy(jitter: float = 0.0) -> CodePolicy:
    return CodePolicy(Backoff(30, 3600, lambda: jitter), DAY, outage_backoff(30, lambda: jitter))


def test_hundred_invoices_become_five_calls_of_twenty() -> None:
    calls = plan_calls(invoice(f"O-{n}") for n in range(100))
    assert [len(call.invoices) for call in calls] == [20] * 5
    assert [i.orderId for call in calls for i in call.invoices] == [f"O-{n}" for n in range(100)]


def test_calls_are_grouped_by_location_and_type() -> None:
    invoices = [
        invoice("A", locationCode="WH-1"),
        invoice("B"),
        invoice("C", locationCode="WH-2"),
        invoice("D", locationCode="WH-1"),
        invoice("A", invoiceType="return", locationCode="WH-1"),
    ]
    calls = plan_calls(invoices)
    groups = {(c.location_code, c.invoice_type): [i.orderId for i in c.invoices] for c in calls}
    assert groups == {
        ("WH-1", InvoiceType.SALE): ["A", "D"],
        (None, InvoiceType.SALE): ["B"],
        ("WH-2", InvoiceType.SALE): ["C"],
        ("WH-1", InvoiceType.RETURN): ["A"],
    }


def test_a_call_refuses_more_than_twenty_or_a_repeated_order() -> None:
    with pytest.raises(ValueError, match="1 to 20"):
        FyndCall(None, InvoiceType.SALE, tuple(invoice(f"O-{n}") for n in range(21)))
    with pytest.raises(ValueError, match="once"):
        FyndCall(None, InvoiceType.SALE, (invoice("A"), invoice("A", invoiceNumber="2")))


def error(code: str) -> OrderError:
    return OrderError("A", code, f"Fynd says {code}")


def test_success_and_in453_are_invoiced() -> None:
    assert (
        policy().for_order(None, invoice_type=InvoiceType.SALE, attempt=1, accepted_at=0, now=1) == Invoiced()
    )
    assert policy().for_order(
        error("IN453"), invoice_type=InvoiceType.SALE, attempt=1, accepted_at=0, now=1
    ) == Invoiced(already=True, confirmed_by="IN453")


def test_in453_on_a_credit_note_is_no_proof_and_is_retried_for_shipment_info() -> None:
    # Given Fynd answers IN453 ("shipment at or beyond invoiced") to a credit note
    verdict = policy().for_order(
        error("IN453"), invoice_type=InvoiceType.RETURN, attempt=1, accepted_at=0, now=1
    )
    # Then it is not INVOICED: a returned shipment is beyond invoiced whether or not its credit note exists
    assert isinstance(verdict, RetryLater)
    assert verdict.reason == "IN453"
    assert "credit note" in verdict.message


@pytest.mark.parametrize("code", ["IN401", "IN400", "IN422"])
def test_terminal_codes_are_rejected_with_code_and_message(code: str) -> None:
    verdict = policy().for_order(error(code), invoice_type=InvoiceType.SALE, attempt=1, accepted_at=0, now=1)
    assert verdict == Rejected(code, f"Fynd says {code}")


def test_too_early_retries_with_growing_backoff_until_the_deadline() -> None:
    delays = [
        policy().for_order(error("IN403"), invoice_type=InvoiceType.SALE, attempt=n, accepted_at=0, now=10)
        for n in (1, 2, 3)
    ]
    assert [type(v) for v in delays] == [RetryLater] * 3
    assert [v.delay_seconds for v in delays if isinstance(v, RetryLater)] == [15, 30, 60]
    late = policy().for_order(
        error("IN403"), invoice_type=InvoiceType.SALE, attempt=9, accepted_at=0, now=DAY
    )
    assert isinstance(late, Rejected)
    assert late.code == DEADLINE_PASSED


def test_unknown_code_is_retried_not_dropped() -> None:
    verdict = policy().for_order(
        error("IN999"), invoice_type=InvoiceType.SALE, attempt=1, accepted_at=0, now=1
    )
    assert isinstance(verdict, RetryLater)
    assert verdict.reason == "IN999"


def test_backoff_is_capped_and_jittered_within_its_step() -> None:
    assert Backoff(30, 3600, lambda: 0.0).delay(20) == 1800
    assert Backoff(30, 3600, lambda: 0.999).delay(20) == 3598
    assert Backoff(30, 10**9, lambda: 0.999).delay(60) == MAX_VISIBILITY_SECONDS


def test_call_failures_retry_and_honour_retry_after() -> None:
    throttled = policy().for_call_failure(FyndThrottled("slow down", retry_after=500), receive_count=1)
    assert (throttled.reason, throttled.delay_seconds) == ("fynd_throttled", 500)
    down = policy().for_call_failure(FyndUnavailable("503"), receive_count=2)
    # Three quarters of the 60 s step is fixed; jitter 0 adds nothing
    assert (down.reason, down.delay_seconds) == ("fynd_unavailable", 45)


def test_breach_08_outage_backoff_by_receive_count_is_capped_at_fifteen_minutes() -> None:
    # Given the worst jitter (the shortest waits)
    backoff = outage_backoff(30, lambda: 0.0)
    # Then each receive waits longer, never above 900 s
    waits = [backoff.delay(receive) for receive in range(1, 12)]
    assert waits == sorted(waits)
    assert max(waits) <= 900
    assert outage_backoff(30, lambda: 0.999).delay(40) == 900
    # And the 7 waits before the 8th (last) receive outlast a 30-minute outage
    assert sum(waits[:7]) > 30 * 60


def test_breach_14_unknown_codes_become_other_as_a_metric_dimension() -> None:
    assert dimension("IN401") == "IN401"
    assert dimension("IN403_DEADLINE") == "IN403_DEADLINE"
    assert dimension("IN999-brand-new") == "other"
    assert dimension("fynd_throttled", frozenset({"fynd_throttled"})) == "fynd_throttled"


def test_a_credit_note_answered_in453_is_not_marked_invoiced() -> None:
    # Given a credit note Fynd answers IN453 (its shipment is past invoiced, as every return is)
    world = World()
    credit_note = invoice("R-1", invoiceType="return")
    world.fynd.codes["R-1"] = "IN453"
    world.accept(credit_note)
    # When it is dispatched
    failures = world.run()
    # Then it waits to be retried (its retry reads Shipment Info first), never INVOICED on IN453 alone
    entry = world.ledger.entries[credit_note.key]
    assert entry.status is InvoiceStatus.RETRYING
    assert entry.last_error is not None
    assert entry.last_error.code == "IN453"
    assert not entry.already_invoiced
    assert len(failures) == 1  # its message comes back after the back-off


@pytest.mark.parametrize(
    ("failure_type", "words"),
    [
        (FyndCallError, "Fynd Update Invoice refused the call (401)"),
        (FyndUnavailable, "Fynd Update Invoice failed (502)"),
        (FyndAmbiguous, "Fynd answered 202, which confirms nothing"),
    ],
    ids=["call error", "unavailable", "ambiguous"],
)
def test_a_whole_call_failure_keeps_the_clients_words_for_the_ledger(
    failure_type: type[FyndCallError], words: str
) -> None:
    # Given a whole-call failure the Fynd client described
    failure = failure_type(words)
    # When the policy decides the retry
    verdict = policy().for_call_failure(failure, receive_count=1)
    # Then the retry carries the client's words, which the ledger and the status API show
    assert verdict.message == words


def test_an_ambiguous_failure_with_retry_after_waits_at_least_that_long() -> None:
    # Given an answer in doubt that asks for 600 s
    doubt = FyndAmbiguous("Fynd's 503 does not confirm the orders", retry_after=600, status=503)
    # When the policy decides the retry
    verdict = policy().for_call_failure(doubt, receive_count=1)
    # Then it waits out Retry-After, and says what Fynd answered
    assert (verdict.reason, verdict.delay_seconds) == ("fynd_ambiguous", 600)
    assert doubt.status == 503


def test_an_invoice_refused_alone_is_rejected_with_fynds_reason() -> None:
    # Given a whole-call 413 for an invoice sent on its own
    refused = FyndCallRefused("Fynd Update Invoice refused the whole call (413): too large", status=413)
    # When the policy rejects it
    verdict = policy().refused_alone(refused)
    # Then the rejection names the status and Fynd's reason
    assert verdict == Rejected(
        "FYND_REFUSED",
        "Fynd refused this invoice on its own (HTTP 413): "
        "Fynd Update Invoice refused the whole call (413): too large",
    )
    assert (refused.code, refused.detail) == ("HTTP413", str(refused))


def test_the_deployed_policy_backs_off_each_kind_of_wait_on_its_own_curve() -> None:
    # Given the policy as deployed: 30 s base, 1 h cap, jitter at its top
    deployed = code_policy(
        base_seconds=30, max_seconds=3600, too_early_deadline_seconds=DAY, jitter=lambda: 0.999
    )
    unknown = error("IN999")
    # When each kind of wait is decided
    retry = deployed.for_order(unknown, invoice_type=InvoiceType.SALE, attempt=10, accepted_at=0, now=1)
    early = deployed.for_order(
        error("IN403"), invoice_type=InvoiceType.SALE, attempt=10, accepted_at=0, now=1
    )
    outage = deployed.for_call_failure(FyndUnavailable("503"), receive_count=10)
    first = deployed.for_order(unknown, invoice_type=InvoiceType.SALE, attempt=1, accepted_at=0, now=1)
    # Then an unknown code grows to the 1 h cap, IN403 to its own cap, an outage to 15 minutes,
    # each from the 30 s base with its own share of jitter
    assert isinstance(retry, RetryLater)
    assert isinstance(early, RetryLater)
    assert (retry.delay_seconds, early.delay_seconds, outage.delay_seconds) == (3598, 299, 900)
    assert isinstance(first, RetryLater)
    assert first.delay_seconds == 30
    assert too_early_backoff(100, lambda: 0.0).delay(1) == 80  # four fifths of the step fixed
