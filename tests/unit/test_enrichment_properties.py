"""Enrichment against dispatchers in any order (hypothesis): whatever the interleaving of the
ERP's enrichments with claims, crashes, dispatches and time, Fynd receives the invoice exactly
once, and it is the version the ledger finally holds."""

import contextlib
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_ingest_enrichment import E_INVOICE, RacingLedger

from factories import invoice
from fakes import World
from relay.domain.errors import ConflictError
from relay.domain.intake import InvoiceAcceptance

VERSIONS = [
    invoice("FY-PROP-1"),
    invoice("FY-PROP-1", irnNumber=E_INVOICE["irnNumber"]),
    invoice("FY-PROP-1", **E_INVOICE),
]
KEY = VERSIONS[0].key
STEPS = st.lists(
    st.sampled_from(
        ["dispatch", "claim_and_crash", "advance", "enrich", "enrich_racing_dispatch", "enrich_racing_claim"]
    ),
    max_size=12,
)


def claim_and_crash(world: World) -> None:
    """A worker claims what it receives, then dies before calling Fynd: nothing is acknowledged."""
    batch = world.queue.receive(10)
    for delivery in batch:
        world.ledger.claim(
            delivery.message,
            message_id=delivery.message_id,
            owner="doomed",
            now=world.clock(),
            lease_seconds=120,
        )
    world.queue.crash(batch)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=STEPS, advances=st.lists(st.integers(0, 400), min_size=12, max_size=12))
def test_fynd_gets_the_invoice_once_and_it_is_the_ledgers_version(
    steps: list[str], advances: list[int]
) -> None:
    world = World()
    ledger = RacingLedger(world.clock, world.faults)
    world.ledger = ledger
    world.acceptance = InvoiceAcceptance(ledger=ledger, queue=world.queue, clock=world.clock)
    world.accept(VERSIONS[0])
    next_version = 1

    def enrich(race: Callable[[], None] | None) -> None:
        nonlocal next_version
        if next_version == len(VERSIONS):
            return
        ledger.before_write = race
        with contextlib.suppress(ConflictError):
            world.accept(VERSIONS[next_version], correlation_id=f"wh-{next_version}")
        ledger.before_write = None
        next_version += 1

    for step, seconds in zip(steps, advances, strict=False):
        match step:
            case "dispatch":
                world.run()
            case "claim_and_crash":
                claim_and_crash(world)
            case "advance":
                world.clock.advance(seconds)
            case "enrich":
                enrich(None)
            case "enrich_racing_dispatch":
                enrich(lambda: world.run())
            case "enrich_racing_claim":
                enrich(lambda: claim_and_crash(world))
    # Then, once leases run out, the reconciler has looked and the queue is drained
    for _ in range(3):
        world.clock.advance(1_000)
        world.reconcile()
        world.drain()
    sent = [item for call in world.fynd.calls for item in call.invoices]
    entry = world.ledger.entries[KEY]
    assert len(sent) == 1
    assert sent[0].content_hash() == entry.content_hash
