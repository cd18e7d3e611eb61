"""A bounded `make fuzz` inside `make test`: 3,000 hostile requests against the real ingest API."""

import os

from ingest_fuzz import run

REQUESTS = 3_000


def test_no_hostile_request_gets_a_5xx_and_every_accepted_invoice_reaches_its_end() -> None:
    # Given a seeded mix of clean and hostile requests, signed and unsigned (FUZZ_SEED replays one)
    seed = int(os.environ.get("FUZZ_SEED") or 12)
    # When each is resolved by the ingest API in-process, and what was queued is drained
    tally = run(REQUESTS, seed)
    # Then no answer was a 5xx, no refusal wrote anything, and every invoice answered 202 is final
    assert tally.requests == REQUESTS
    assert not [status for status in tally.statuses if status >= 500], tally.summary()
    assert tally.failures == [], tally.summary()
    # And the run was hostile and productive: refusals of every kind, and accepted invoices
    assert {400, 401, 409, 413, 415, 422, 202} <= set(tally.statuses), tally.summary()
    assert len(tally.accepted) > 100
