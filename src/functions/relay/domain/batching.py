"""Turning an SQS batch into Fynd calls: one location and one invoice type per call, at most
20 invoices and at most MAX_CALL_BYTES of JSON body."""

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence

from relay.domain.delivery import MAX_CALL_BYTES, MAX_ORDERS_PER_CALL, FyndCall, encoded_size
from relay.domain.invoice import Invoice, InvoiceType


def plan_calls(
    invoices: Iterable[Invoice], limit: int = MAX_ORDERS_PER_CALL, max_bytes: int = MAX_CALL_BYTES
) -> list[FyndCall]:
    """Few calls that respect both caps, keeping the invoices' order within each group.

    Each group is cut greedily: an invoice starts a new call when the current one holds
    `limit` invoices or when adding it would take the body above `max_bytes` (the body the
    client sends, `encode_invoices`, so the two cannot drift). An invoice that is above the
    cap on its own still gets a call of its own: Fynd, not us, decides whether to refuse it.

    The caller passes each invoice key once; two invoices for one order (a sale and a credit
    note) land in different calls because they differ in type.
    """
    groups: dict[tuple[str | None, InvoiceType], list[Invoice]] = defaultdict(list)
    for invoice in invoices:
        groups[(invoice.locationCode, invoice.invoiceType)].append(invoice)
    return [
        FyndCall(location_code, invoice_type, tuple(chunk))
        for (location_code, invoice_type), group in groups.items()
        for chunk in _chunks(group, limit, max_bytes)
    ]


def _chunks(items: Sequence[Invoice], limit: int, max_bytes: int) -> Iterator[list[Invoice]]:
    chunk: list[Invoice] = []
    size = 2  # the array's brackets
    for item in items:
        added = encoded_size(item) + (1 if chunk else 0)  # a comma between objects
        if chunk and (len(chunk) >= limit or size + added > max_bytes):
            yield chunk
            chunk, size, added = [], 2, added - 1
        chunk.append(item)
        size += added
    if chunk:
        yield chunk
