"""Properties of ingest over any JSON a client may put in an invoice (hypothesis).

Whatever `packages` and the text fields hold, the answer is a 202 or a 4xx problem, never a
5xx; a refusal writes nothing; and what a 202 queued reads back as exactly the invoice sent."""

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest_harness import ingest_in_process, queued_bodies
from relay.domain.messages import QueuedInvoice

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(codec="utf-8"), max_size=20)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=30,
)
TEXT = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    packages=st.lists(st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4), max_size=3),
    number=TEXT,
    order_id=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True) | TEXT,
    irn=st.none() | TEXT,
)
def test_any_json_in_an_invoice_is_answered_without_a_5xx_and_queued_unchanged(
    packages: list[dict[str, Any]], number: str, order_id: str, irn: str | None
) -> None:
    document: dict[str, Any] = {"orderId": order_id, "invoiceNumber": number, "invoiceType": "sale"}
    document |= {"packages": packages} if packages else {}
    document |= {"irnNumber": irn} if irn is not None else {}
    with ingest_in_process() as ingest:
        # When the invoice is posted, correctly signed
        answer = ingest.post(json.dumps(document))
        # Then it is accepted or refused as the sender's problem, never a 5xx
        assert answer.status in (202, 400, 422), answer
        if answer.status != 202:
            # And a refusal wrote nothing
            assert (ingest.ledger.entries, queued_bodies(ingest.queue)) == ({}, [])
            return
        # And what was queued reads back as the invoice sent, with the ledger's content hash
        (body,) = queued_bodies(ingest.queue)
        message = QueuedInvoice.from_body(body)
        assert message.invoice.model_dump(mode="json", exclude_none=True) == document
        assert ingest.ledger.entries[message.invoice.key].content_hash == message.content_hash
