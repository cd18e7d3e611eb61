"""The callback receiver printed in docs/integrating.md ("Told, not asked") works as printed
against what the relay's callback adapter (relay.adapters.callback) sends."""

import re
from pathlib import Path
from typing import Any

import pytest

from relay.adapters.callback import SignedCallback
from relay.domain.errors import OutcomeRefused
from relay.domain.invoice import InvoiceKey, InvoiceType
from relay.domain.ledger import InvoiceStatus, LastError, LedgerEntry
from relay.domain.standard_webhooks import secret_key
from relay.domain.writeback import outcome_of
from relay_local.signing import new_secret

GUIDE = (Path(__file__).resolve().parents[2] / "docs" / "integrating.md").read_text()
SECRET = new_secret()


def receiver(secret: str) -> dict[str, Any]:
    found = re.search(r"<!-- tested: python-callback-receiver -->\n```python\n(.*?)```", GUIDE, re.DOTALL)
    assert found, "no tested python-callback-receiver snippet in docs/integrating.md"
    code = found.group(1).replace('CALLBACK_SECRET = "whsec_..."', f"CALLBACK_SECRET = {secret!r}")
    namespace: dict[str, Any] = {}
    exec(code, namespace)  # noqa: S102 - the documentation's own code
    return namespace


class Relayed:
    """The HTTP pool the callback posts with, answering with the receiver's status."""

    def __init__(self, on_callback: Any, tamper: bool = False) -> None:
        self.on_callback, self.tamper, self.answers = on_callback, tamper, list[int]()

    def request(self, method: str, url: str, *, body: bytes, headers: dict[str, str], **_: object) -> object:
        status = self.on_callback(body.replace(b"INVOICED", b"REJECTED") if self.tamper else body, headers)
        self.answers.append(status)
        return type("Answer", (), {"status": status})()


def entry(status: InvoiceStatus, at: float, **fields: object) -> LedgerEntry:
    return LedgerEntry(
        key=InvoiceKey("FY-CB1", InvoiceType.SALE),
        status=status,
        content_hash="h",
        invoice_number="SINV-1",
        attempts=1,
        accepted_at=at - 10,
        updated_at=at,
        **fields,  # type: ignore[arg-type]
    )


def deliver(http: Relayed, ledger_entry: LedgerEntry) -> None:
    SignedCallback("https://erp.example/fynd", lambda: secret_key(SECRET), http=http).deliver(  # type: ignore[arg-type]
        outcome_of(ledger_entry)
    )


def test_the_documented_receiver_keeps_the_newest_state_of_each_invoice() -> None:
    # Given the guide's receiver with the callback secret
    guide = receiver(SECRET)
    http = Relayed(guide["on_callback"])
    rejected = entry(InvoiceStatus.REJECTED, 1_800_000_000.0, last_error=LastError("IN401", "cancelled"))
    invoiced = entry(InvoiceStatus.INVOICED, 1_800_000_100.0)
    # When the relay calls back INVOICED, again (a retry), and then the older REJECTED late
    deliver(http, invoiced)
    deliver(http, invoiced)
    deliver(http, rejected)
    # Then each is acknowledged, and the invoice's stored state is the newest
    assert http.answers == [204, 204, 204]
    assert guide["states"][("FY-CB1", "sale")]["status"] == "INVOICED"


def test_the_documented_receiver_refuses_what_the_relay_did_not_sign() -> None:
    # Given a receiver with another secret, and one whose body is changed on the way
    other = receiver(new_secret())
    tampered = receiver(SECRET)
    for guide, http in (
        (other, Relayed(other["on_callback"])),
        (tampered, Relayed(tampered["on_callback"], True)),
    ):
        # When the relay calls back, Then the receiver answers 401 and stores nothing
        with pytest.raises(OutcomeRefused):  # a 4xx: the relay retries it after a back-off
            deliver(http, entry(InvoiceStatus.INVOICED, 1_800_000_000.0))
        assert http.answers == [401]
        assert guide["states"] == {}
