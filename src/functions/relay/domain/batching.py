"""Turning an SQS batch into Fynd calls: one location and one invoice type per call, 20 at most."""

from collections import defaultdict
from collections.abc import Iterable, Sequence

from relay.domain.delivery import MAX_ORDERS_PER_CALL, FyndCall
from relay.domain.invoice import Invoice, InvoiceType


def plan_calls(invoices: Iterable[Invoice], limit: int = MAX_ORDERS_PER_CALL) -> list[FyndCall]:
    """Fewest calls that respect Fynd's limit, keeping the invoices' order within each group.

    The caller passes each invoice key once; two invoices for one order (a sale and a credit
    note) land in different calls because they differ in type.
    """
    groups: dict[tuple[str | None, InvoiceType], list[Invoice]] = defaultdict(list)
    for invoice in invoices:
        groups[(invoice.locationCode, invoice.invoiceType)].append(invoice)
    return [
        FyndCall(location_code, invoice_type, tuple(chunk))
        for (location_code, invoice_type), group in groups.items()
        for chunk in _chunks(group, limit)
    ]


def _chunks(items: Sequence[Invoice], size: int) -> Iterable[Sequence[Invoice]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
