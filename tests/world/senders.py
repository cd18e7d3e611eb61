"""The ERPs that send invoices, and when they give up.

| sender                     | per webhook | tries after a failure (delay before each)          | timeout |
| ---                        | ---         | ---                                                | ---     |
| ERPNext / Frappe v14, v15  | 1 invoice   | 1 s, 4 s, then never (3 tries in one job)          | 5 s     |
| ERPNext after April 2026   | 1 invoice   | 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (~27 h)        | 5 s     |
| batching ERP (Standard     | 100         | 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h; the same | 15 s    |
| Webhooks, Svix schedule)   | invoices    | `webhook-id` on every try                          |         |

Sources: frappe/frappe `frappe/integrations/doctype/webhook/webhook.py` (v14/v15), frappe/frappe
PR #38913, the Standard Webhooks spec and Svix's retry schedule (`/work/shared/spec/aws-quotas.md`).
A failure is any answer but 2xx, or no answer within the sender's timeout.
"""

import json
import random
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SenderKind:
    name: str
    invoices_per_webhook: int
    retry_delays: tuple[float, ...]
    timeout_seconds: float
    webhook_id: bool
    """True: Standard Webhooks, one `webhook-id` per delivery, kept on every retry."""


ERPNEXT_V14 = SenderKind("ERPNext v14/v15", 1, (1, 4), 5, webhook_id=False)
ERPNEXT_2026 = SenderKind("ERPNext after April 2026", 1, (300, 1800, 7200, 18000, 36000, 36000), 5, False)
BATCHING_ERP = SenderKind(
    "batching ERP (Standard Webhooks)", 100, (5, 300, 1800, 7200, 18000, 36000, 36000), 15, webhook_id=True
)
SENDERS = {"erpnext-v14": ERPNEXT_V14, "erpnext-2026": ERPNEXT_2026, "batching": BATCHING_ERP}


@dataclass
class Webhook:
    """One delivery: its invoices' keys, its body, and how many tries it has had."""

    number: int
    order_ids: list[str]
    body: str
    webhook_id: str | None
    first_sent_at: float
    tries: int = 0
    done: bool = False


class InvoiceMaker:
    """Invoices of `locations` stores; a share of them e-invoices (IRN, signed invoice, QR:
    3.5-5.5 KB), the rest plain (a few hundred bytes)."""

    def __init__(self, seed: int, *, locations: int, einvoice_share: float) -> None:
        self._rng = random.Random(f"{seed}:invoices")
        self.locations = [f"LOC-{number:03d}" for number in range(1, locations + 1)]
        self.einvoice_share = einvoice_share

    def make(self, order_id: str) -> dict[str, Any]:
        document: dict[str, Any] = {
            "orderId": order_id,
            "invoiceNumber": f"INV-{order_id}",
            "invoiceType": "sale",
            "locationCode": self._rng.choice(self.locations),
            "orderItems": [{"orderItemId": f"{order_id}-1", "quantity": 1}],
        }
        if self._rng.random() < self.einvoice_share:
            signed = self._rng.randint(2_600, 4_200)
            document.update(
                irnNumber="a" * 64,
                ackNumber="1122334455",
                ackDate="2026-12-06 10:00:00",
                signedInvoice="s" * signed,
                invoiceQrCode="q" * 250,
            )
        return document

    def body(self, order_ids: list[str]) -> str:
        return json.dumps([self.make(order_id) for order_id in order_ids], separators=(",", ":"))
