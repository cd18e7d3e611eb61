"""The invoice queue with SQS's quotas (standard queue), and the event source's side of it.

SQS's rules the world applies (docs/scale.md cites each):
- in flight (received, not deleted, not yet visible again): about 120,000; past it a receive
  returns nothing and no error;
- DelaySeconds 0..900 (a longer one is refused);
- a visibility timeout ends at most 12 h after the message's first receive (a change past it is
  refused: the message returns when its current timeout ends, as the adapter's best effort says);
- retention: a message older than the queue's MessageRetentionPeriod is deleted, unseen;
- 256 KiB per message and XML's character set (#x9 #xA #xD #x20-#xD7FF #xE000-#xFFFD
  #x10000-#x10FFFF); anything else is refused (`InvalidMessageContents`);
- after maxReceiveCount receives the next receive moves the message to the dead-letter queue;
- the event source's batch stops before Lambda's 6 MB invocation payload: each record is its
  body (JSON-escaped) and about 700 bytes of fields around it (ids, receipt handle, attributes,
  the queue's ARN), so a batch of e-invoices holds far fewer than `BatchSize`;
- ApproximateAgeOfOldestMessage (CloudWatch) is the age, from its send, of the oldest message not
  deleted (in flight or delayed too) that was received fewer than three times: a message
  received three times or more is moved to the back of the queue and no longer counted
  (`oldest_sent_at`). A message that becomes visible again (any receive count) joins the back
  of the visible line here, behind every message already waiting: the longest wait a standard
  queue's best-effort order can give it.

Messages are kept in a heap by the time they become visible, so a receive costs O(log n)
whatever the depth (1,000,000 messages is a normal day here).
"""

import heapq
import itertools
import re
from collections import Counter, deque
from collections.abc import Callable, Sequence

from relay.domain.errors import QueueUnavailableError
from relay.domain.messages import MAX_MESSAGE_BYTES, QueuedInvoice, ReceivedMessage
from world.clock import Latencies, WorldClock

IN_FLIGHT_QUOTA = 120_000
MAX_DELAY_SECONDS = 900
MAX_VISIBILITY_FROM_RECEIVE = 43_200
EVENT_PAYLOAD_BYTES = 6 * 1024 * 1024
"""Lambda's synchronous invocation payload, which bounds an SQS event source's batch."""
RECORD_ENVELOPE_BYTES = 700
"""An SQS record's fields around its body in the Lambda event."""
AGE_COUNTS_BELOW_RECEIVES = 3
"""A message received this many times or more no longer counts toward ApproximateAgeOfOldestMessage."""
_REFUSED_CHARACTERS = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class Held:
    __slots__ = (
        "body",
        "deleted",
        "first_received_at",
        "in_flight",
        "message_id",
        "parsed",
        "receive_count",
        "sent_at",
        "version",
        "visible_at",
    )

    def __init__(self, message_id: str, body: str, now: float, visible_at: float) -> None:
        self.message_id = message_id
        self.body = body
        self.sent_at = now
        self.visible_at = visible_at
        self.receive_count = 0
        self.first_received_at: float | None = None
        self.version = 0
        self.in_flight = False
        self.deleted = False
        self.parsed: QueuedInvoice | None = None
        """The body as read at its first receive: a body never changes, so every receive reads
        the same message (read once; pydantic's validation was a sixth of a large run)."""


class WorldQueue:
    def __init__(
        self,
        clock: WorldClock,
        latencies: Latencies,
        *,
        visibility_timeout: float,
        max_receive_count: int,
        retention_seconds: float,
        in_flight_quota: int = IN_FLIGHT_QUOTA,
    ) -> None:
        self.clock = clock
        self.latencies = latencies
        self.visibility_timeout = visibility_timeout
        self.max_receive_count = max_receive_count
        self.retention_seconds = retention_seconds
        self.in_flight_quota = in_flight_quota
        self.messages: dict[str, Held] = {}
        self._heap: list[tuple[float, int, Held, int]] = []
        self._visible: deque[Held] = deque()
        self._by_age: list[tuple[float, int, Held]] = []
        self._ids = itertools.count(1)
        self._seq = itertools.count()
        self.in_flight = 0
        self.in_flight_peak = 0
        self.dead_letters: list[Held] = []
        self.expired: list[Held] = []
        self.refused: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self.oldest_age_peak = 0.0
        self.quota_hits = 0
        self.payload_full = False
        """The last receive stopped at `max_bytes`."""
        self.on_send: Callable[[float], None] = lambda when: None

    # ---- the port (relay.domain.ports.InvoiceQueue) ----
    def send(self, messages: Sequence[QueuedInvoice]) -> None:
        """SendMessageBatch in batches of 10, sent at once: one round trip."""
        self.requests["send"] += 1
        self.clock.spend(self.latencies.draw("sqs.send"))
        bodies = [(message, message.to_body()) for message in messages]
        refused = [message.invoice.key for message, body in bodies if self._refusal(body)]
        if refused:
            raise QueueUnavailableError("SQS refused messages (world)", unsent=refused)
        for _, body in bodies:
            self._put(body, 0)
        self.on_send(self.clock.now)

    def send_later(self, message: QueuedInvoice, delay_seconds: int) -> None:
        self.requests["send_later"] += 1
        if not 0 <= delay_seconds <= MAX_DELAY_SECONDS:
            raise ValueError(f"SQS refuses DelaySeconds {delay_seconds} (0..{MAX_DELAY_SECONDS})")
        self.clock.spend(self.latencies.draw("sqs.send"))
        body = message.to_body()
        reason = self._refusal(body)
        if reason:
            raise QueueUnavailableError(f"SQS refused the message ({reason})", unsent=[message.invoice.key])
        self._put(body, delay_seconds)
        self.on_send(self.clock.now + delay_seconds)

    def change_visibility(self, receipt_handle: str, seconds: int) -> None:
        self.requests["change_visibility"] += 1
        self.clock.spend(self.latencies.draw("sqs.change"))
        held = self._by_handle(receipt_handle)
        if held is None or not held.in_flight:
            self.refused["stale receipt handle"] += 1
            return
        now = self.clock.now
        if now + seconds - (held.first_received_at or now) > MAX_VISIBILITY_FROM_RECEIVE:
            self.refused["visibility past 12 h from the first receive"] += 1
            return
        self._schedule(held, now + seconds)

    # ---- the event source ----
    def visible(self) -> int:
        """Messages a receive could take now (after moving the due ones out of flight)."""
        self._ripen()
        return len(self._visible)

    def receive(self, limit: int, *, max_bytes: int | None = None) -> list[ReceivedMessage]:
        """Up to `limit` visible messages, and (the event source's batch) up to `max_bytes` of
        records; `payload_full` says whether the bytes, not the limit, ended the batch."""
        self._ripen()
        now = self.clock.now
        self.payload_full = False
        if self.in_flight >= self.in_flight_quota:
            self.quota_hits += 1
            return []
        batch: list[ReceivedMessage] = []
        payload = 0
        while self._visible and len(batch) < limit and self.in_flight < self.in_flight_quota:
            held = self._visible.popleft()
            if held.deleted:
                continue
            if now - held.sent_at > self.retention_seconds:
                self._drop(held)
                self.expired.append(held)
                continue
            if held.receive_count >= self.max_receive_count:
                self._drop(held)
                self.dead_letters.append(held)
                continue
            if max_bytes is not None:
                record = len(held.body) + held.body.count('"') + RECORD_ENVELOPE_BYTES
                if payload + record > max_bytes:
                    self._visible.appendleft(held)
                    self.payload_full = True
                    break
                payload += record
            held.receive_count += 1
            if held.first_received_at is None:
                held.first_received_at = now
            held.in_flight = True
            self.in_flight += 1
            self._schedule(held, now + self.visibility_timeout)
            batch.append(
                ReceivedMessage(
                    held.message_id,
                    f"{held.message_id}/{held.receive_count}",
                    held.receive_count,
                    held.parsed or self._read(held),
                )
            )
        if self.in_flight > self.in_flight_peak:
            self.in_flight_peak = self.in_flight
        if self._visible:
            self.oldest_age_peak = max(self.oldest_age_peak, now - self._visible[0].sent_at)
        return batch

    def answer(self, batch: Sequence[ReceivedMessage], failures: Sequence[str]) -> None:
        """ReportBatchItemFailures: every message of the batch not named is deleted."""
        failed = set(failures)
        for delivery in batch:
            if delivery.message_id not in failed:
                held = self._by_handle(delivery.receipt_handle)
                if held is not None:
                    self._drop(held)

    def next_visible_at(self) -> float | None:
        self._ripen()
        if self._visible:
            return self.clock.now
        while self._heap:
            visible_at, _, held, version = self._heap[0]
            if held.deleted or held.version != version:
                heapq.heappop(self._heap)
                continue
            return visible_at
        return None

    def take_oldest_visible(self) -> Held | None:
        """Delete the oldest visible message, unseen (a test's purge); None when none is visible."""
        self._ripen()
        while self._visible:
            held = self._visible.popleft()
            if not held.deleted:
                self._drop(held)
                return held
        return None

    def oldest_sent_at(self) -> float:
        """When the oldest message still on the queue (in flight or not) that was received fewer
        than three times was sent; now if none: what CloudWatch's ApproximateAgeOfOldestMessage
        reports (relay.adapters.queue_age). A message leaves this count for good at its third
        receive (receive counts only grow)."""
        while self._by_age and (
            self._by_age[0][2].deleted or self._by_age[0][2].receive_count >= AGE_COUNTS_BELOW_RECEIVES
        ):
            heapq.heappop(self._by_age)
        return self._by_age[0][0] if self._by_age else self.clock.now

    # ---- inside ----
    @staticmethod
    def _read(held: Held) -> QueuedInvoice:
        held.parsed = QueuedInvoice.from_body(held.body)
        return held.parsed

    def _refusal(self, body: str) -> str | None:
        if len(body.encode()) > MAX_MESSAGE_BYTES:
            self.refused["too large"] += 1
            return "too large"
        if _REFUSED_CHARACTERS.search(body):
            self.refused["InvalidMessageContents"] += 1
            return "InvalidMessageContents"
        return None

    def _put(self, body: str, delay: float) -> None:
        now = self.clock.now
        held = Held(f"m-{next(self._ids)}", body, now, now + delay)
        self.messages[held.message_id] = held
        heapq.heappush(self._by_age, (now, next(self._seq), held))
        if delay <= 0:
            self._visible.append(held)
        else:
            heapq.heappush(self._heap, (held.visible_at, next(self._seq), held, held.version))

    def _schedule(self, held: Held, visible_at: float) -> None:
        held.version += 1
        held.visible_at = visible_at
        heapq.heappush(self._heap, (visible_at, next(self._seq), held, held.version))

    def _ripen(self) -> None:
        now = self.clock.now
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, held, version = heapq.heappop(heap)
            if held.deleted or held.version != version:
                continue
            if held.in_flight:
                held.in_flight = False
                self.in_flight -= 1
            held.version += 1
            self._visible.append(held)

    def _drop(self, held: Held) -> None:
        held.deleted = True
        held.parsed = None  # the heaps keep a deleted message until it reaches their top
        if held.in_flight:
            held.in_flight = False
            self.in_flight -= 1
        self.messages.pop(held.message_id, None)

    def _by_handle(self, receipt_handle: str) -> Held | None:
        """The message a handle names while that receive is its latest: a handle goes stale when
        the message is received again."""
        message_id, _, receive = receipt_handle.partition("/")
        held = self.messages.get(message_id)
        if held is None or held.deleted or str(held.receive_count) != receive:
            return None
        return held
