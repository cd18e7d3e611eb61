"""Where `make fuzz` sends its requests: the ledger and the queue ingest writes to, and what
later happens to each accepted invoice.

This first world is ingest's alone (the port fakes of `tests/fakes.py` were not on main yet):
`drain` does not dispatch, and an accepted invoice counts as reaching its end when its ledger
entry is QUEUED with a message that reads back with the same content hash, or is final.
"""

import time
from typing import Any

from ingest_harness import MemoryLedger, MemoryQueue
from relay.domain.invoice import InvoiceKey
from relay.domain.ledger import InvoiceStatus
from relay.domain.messages import QueuedInvoice


class IndexedQueue(MemoryQueue):
    """MemoryQueue that also keeps the latest message per key (a fuzz run queues a million)."""

    def __init__(self) -> None:
        super().__init__()
        self.latest: dict[InvoiceKey, QueuedInvoice] = {}

    def send(self, messages: Any) -> None:
        super().send(messages)
        for body in self.bodies[len(self.bodies) - len(messages) :]:
            message = QueuedInvoice.from_body(body)
            self.latest[message.invoice.key] = message


class World:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.clock = time.time
        self.ledger = MemoryLedger()
        self.queue = IndexedQueue()

    def footprint(self) -> tuple[int, ...]:
        """Changes whenever ingest writes anything."""
        return (len(self.ledger.entries), self.ledger.accepts, len(self.queue.bodies))

    def check_accepted(self, key: InvoiceKey) -> str | None:
        """What is wrong with an invoice just answered 202, or None."""
        entry = self.ledger.entries.get(key)
        if entry is None:
            return f"{key} answered 202 has no ledger entry"
        if entry.status is InvoiceStatus.QUEUED:
            message = self.queue.latest.get(key)
            if message is None or message.content_hash != entry.content_hash:
                return f"{key} is QUEUED without a message of its content"
        return None

    def drain(self) -> None:
        """Nothing dispatches in this world."""

    def final_status(self, key: InvoiceKey) -> str:
        problem = self.check_accepted(key)
        entry = self.ledger.entries.get(key)
        if problem or entry is None:
            return "LOST"
        # Not dispatched here: a QUEUED entry with its message is as far as ingest takes it.
        return "INVOICED" if entry.status is InvoiceStatus.QUEUED else str(entry.status)
