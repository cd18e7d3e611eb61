"""Where `make fuzz` sends its requests: the lead's port fakes (`tests/fakes.py`) wired as in
AWS, ingest writing to them and the real `relay.domain.dispatch.Dispatcher` draining them.

Fynd is scripted: most orders are invoiced; every 37th order is refused for good (IN401, so
its key ends REJECTED and a corrected resend is a resubmission); every 41st is not confirmed
yet for an hour (IN403, retried with back-off on the fake clock, then invoiced).
"""

from fakes import World as PortWorld
from relay.domain.invoice import InvoiceKey
from relay.domain.ledger import InvoiceStatus
from relay.domain.messages import QueuedInvoice

ORDER_POOL = 50_000
REFUSED_EVERY = 37
EARLY_EVERY = 41


class World:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.ports = PortWorld()
        self.clock = self.ports.clock
        self.ledger = self.ports.ledger
        self.queue = self.ports.queue
        for number in range(ORDER_POOL):
            if number % REFUSED_EVERY == 0:
                self.ports.fynd.codes[f"FZ-{number}"] = "IN401"
            elif number % EARLY_EVERY == 0:
                self.ports.fynd.early_until[f"FZ-{number}"] = self.clock.now + 3600

    def footprint(self) -> tuple[int, ...]:
        """Changes whenever ingest writes anything."""
        return (sum(self.ledger.writes.values()), sum(self.queue.requests.values()))

    def check_accepted(self, key: InvoiceKey) -> str | None:
        """What is wrong with an invoice just answered 202, or None. Between drains an entry is
        QUEUED or final; a QUEUED one has a message of its content on the queue (this request's,
        or the one an earlier copy of the webhook queued)."""
        entry = self.ledger.entries.get(key)
        if entry is None:
            return f"{key} answered 202 has no ledger entry"
        if entry.status is InvoiceStatus.QUEUED:
            queued = [QueuedInvoice.from_body(held.body) for held in self.queue.messages.values()]
            if not any(m.invoice.key == key and m.content_hash == entry.content_hash for m in queued):
                return f"{key} is QUEUED but no message of its content is queued"
        return None

    def drain(self) -> None:
        """Dispatch until the queue is empty, moving the fake clock over back-offs."""
        self.ports.drain(max_rounds=1_000_000)

    def final_status(self, key: InvoiceKey) -> str:
        entry = self.ledger.entries.get(key)
        if any(QueuedInvoice.from_body(held.body).invoice.key == key for held in self.queue.dead_letters):
            return "DEAD_LETTERED"
        return "MISSING" if entry is None else str(entry.status)

    def sent_twice(self) -> int:
        """Keys Fynd applied more than once (never expected: no answer is lost in this run)."""
        return sum(1 for count in self.ports.fynd.applied.values() if count > 1)
