"""`make scale`: the real ingest, dispatcher and reconciler in the world of tests/world, on one
discrete-event clock (no sleeping, no threads), and the figures issue 19 asks for.

What is real: InvoiceAcceptance (relay.domain.intake) with ingest's own budget constants
(relay.wiring), parse_invoices on every delivery, the signature check (RequestVerifier) on a
sample; the Dispatcher (relay.domain.dispatch) with the template's settings and its policy; the
Reconciler (relay.domain.reconcile). What is modelled: the ports (tests/world), API Gateway's
token bucket, Lambda's concurrency, batching and timeout, the senders. Parallel work inside a
dispatcher (ledger writes, Shipment Info reads) runs one item after another on the clock but
as a pool of `workers` threads would: each item starts when the first thread comes free
(PoolExecutor), as ThreadPoolExecutor.map does.
"""

import heapq
import inspect
import math
import random
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import relay.domain.dispatch as dispatch_module
import relay.domain.intake as intake_module
import relay.domain.reconcile as reconcile_module
from fakes import FakeQueueAge
from relay import wiring
from relay.adapters.ledger import TRANSACTION_LIMIT
from relay.adapters.work_index import DEFAULT_WORK_SHARDS
from relay.domain.dispatch import Dispatcher, DispatchLimits
from relay.domain.errors import (
    AcceptanceOutOfTime,
    AcceptRaceError,
    ConflictError,
    InvalidInvoices,
    LedgerUnavailableError,
    MalformedBody,
    QueueUnavailableError,
    UnqueueableInvoices,
)
from relay.domain.intake import InvoiceAcceptance
from relay.domain.invoice import InvoiceKey, InvoiceType
from relay.domain.ledger import InvoiceStatus
from relay.domain.policy import code_policy
from relay.domain.ports import Reservation
from relay.domain.reconcile import Reconciler
from relay.domain.signatures import RequestVerifier, SigningSecrets
from relay.domain.webhook import parse_invoices
from relay.observability import logger
from relay.settings import DispatchSettings, ReconcileSettings
from relay_local.signing import new_secret, signed_headers
from world.clock import EventLoop, Invocation, Killed, Latencies, WorldClock
from world.dynamodb import Capacity, WorldLedger
from world.fynd import ANSWER_LOST, TokenBucket, WorldFynd
from world.senders import SENDERS, InvoiceMaker, SenderKind, Webhook
from world.sqs import EVENT_PAYLOAD_BYTES, IN_FLIGHT_QUOTA, WorldQueue
from world.template import TemplateFigures, read_template

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Scenario:
    name: str
    sender: str
    invoices: int
    rate: float
    """Invoices a second the ERPs produce (steady)."""
    burst_rate: float | None = None
    burst_seconds: float = 5
    burst_every_seconds: float = 60
    locations: int = 50
    in403_share: float = 0.12
    in403_minutes: tuple[float, float] = (10, 60)
    lost_share: float = 0.05
    fynd_rate: float = 20
    fynd_read_rate: float | None = 20
    """Fynd's Shipment Info limit of its own; None: reads count against `fynd_rate`."""
    einvoice_share: float = 0.1
    seed: int = 1
    parameters: dict[str, str] = field(default_factory=dict)
    warm_table: bool = False
    delete_at_minutes: float | None = None
    """Delete one waiting message (the oldest visible) at this minute: is its invoice healed?"""
    signature_sample: float = 0.01
    max_hours: float = 48
    in_flight_quota: int = IN_FLIGHT_QUOTA
    """SQS's ~120,000; scaled down with the invoices to see a scaled run meet it."""

    def rate_at(self, elapsed: float) -> float:
        if self.burst_rate and elapsed % self.burst_every_seconds < self.burst_seconds:
            return self.burst_rate
        return self.rate


class Metrics:
    """The relay's `count` calls, by name and reason, and per minute (for the alarms)."""

    def __init__(self, clock: WorldClock) -> None:
        self.clock = clock
        self.totals: Counter[str] = Counter()
        self.per_minute: dict[str, Counter[int]] = defaultdict(Counter)

    def count(self, name: str, value: float = 1, **dimensions: str) -> None:
        self.totals[name] += value
        self.per_minute[name][int(self.clock.now // 60)] += value
        reason = dimensions.get("reason") or dimensions.get("code") or dimensions.get("status")
        if reason:
            self.totals[f"{name}[{reason}]"] += value

    def peak(self, name: str, period_seconds: int) -> float:
        minutes = self.per_minute.get(name)
        if not minutes:
            return 0.0
        span = max(1, period_seconds // 60)
        buckets: Counter[int] = Counter()
        for minute, value in minutes.items():
            buckets[minute // span] += value
        return max(buckets.values())


class PoolExecutor:
    """What the dispatcher's thread pool does to time: `workers` threads, each item started by
    the first thread to come free, as `ThreadPoolExecutor.map` does. Runs the items one by one,
    so the clock stays deterministic; the clock ends when the last item does."""

    def __init__(self, workers: int, clock: WorldClock) -> None:
        self.workers = workers
        self.clock = clock

    def map(self, work: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        results: list[R] = []
        began = self.clock.now
        free_at = [began] * self.workers
        for item in items:
            start = heapq.heappop(free_at)
            self.clock.now = start
            results.append(work(item))
            heapq.heappush(free_at, self.clock.now)
        self.clock.now = max(free_at)
        return iter(results)


class SlotCalendar:
    """The shared pace per Fynd credential (relay.adapters.rate's rule: one start every
    1/`calls_per_second` s) for a world whose invocations run out of order on the clock.

    The deployed limiter keeps one `next_at` per credential; requests reach it in time order,
    so a slot one dispatcher leaves unused goes to the next request of any other. Here each
    invocation runs to its end before the next one starts, even when they overlap in time: a
    `next_at` would put every request of the second after the last of the first, leaving the
    first one's gaps unused, and overlapping dispatchers would take turns instead of sharing
    the pace (more of them would not send faster). So the slots are a calendar: a request takes
    the first free slot at or after its own time, whatever was taken later on the clock. A 429
    blocks the slots until Retry-After (the deployed limiter also slows for a minute; the
    world's pace and Fynd's limit agree, so 429s are rare)."""

    def __init__(self, calls_per_second: float) -> None:
        self.interval = 1 / calls_per_second
        self._next_free: dict[str, dict[int, int]] = {}
        """Per credential: a taken slot's index -> a later index that may be free (path-halved)."""

    def _free_from(self, taken: dict[int, int], index: int) -> int:
        while index in taken:
            following = taken[index]
            if following in taken:
                taken[index] = taken[following]
            index = following
        return index

    def acquire(self, credential: str, *, now: float, not_after: float) -> Reservation:
        taken = self._next_free.setdefault(credential, {})
        index = self._free_from(taken, math.ceil(now / self.interval - 1e-9))
        at = max(now, index * self.interval)
        if at > not_after:
            return Reservation(False, at)
        taken[index] = index + 1
        return Reservation(True, at)

    def throttled(self, credential: str, *, now: float, retry_after: float) -> None:
        taken = self._next_free.setdefault(credential, {})
        first = math.ceil(now / self.interval - 1e-9)
        last = math.ceil((now + retry_after) / self.interval - 1e-9)
        for index in range(first, last):
            taken.setdefault(index, last)


class Simulation:
    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.template: TemplateFigures = read_template(scenario.parameters)
        self.sender: SenderKind = SENDERS[scenario.sender]
        seed = scenario.seed
        self.rng = random.Random(f"{seed}:world")
        self.clock = WorldClock()
        self.loop = EventLoop(self.clock)
        self.latencies = Latencies(seed)
        self.capacity = Capacity(self.clock, warm=scenario.warm_table)
        parameters = self.template.parameters
        warm_units = float(parameters.get("LedgerWarmWriteUnitsPerSecond", "0") or 0)
        if warm_units:
            self.capacity.table_wru = max(self.capacity.table_wru, warm_units)
        self.ledger = WorldLedger(
            self.clock,
            self.latencies,
            self.capacity,
            indexes=self.template.indexes,
            shards=int(parameters.get("WorkIndexShards", DEFAULT_WORK_SHARDS)),
        )
        self.queue = WorldQueue(
            self.clock,
            self.latencies,
            visibility_timeout=self.template.visibility_timeout,
            max_receive_count=self.template.max_receive_count,
            retention_seconds=self.template.retention_seconds,
            in_flight_quota=scenario.in_flight_quota,
        )
        dispatch_defaults = DispatchSettings.model_fields
        self.read_timeout = float(dispatch_defaults["fynd_read_timeout_seconds"].default)
        connect = float(dispatch_defaults["fynd_connect_timeout_seconds"].default)
        self.fynd = WorldFynd(
            self.clock,
            self.latencies,
            rate_per_second=scenario.fynd_rate,
            read_rate_per_second=scenario.fynd_read_rate,
            lost_share=scenario.lost_share,
            read_timeout_seconds=self.read_timeout,
            seed=seed,
        )
        self.metrics = Metrics(self.clock)
        self._install_metrics()
        request_seconds = connect + self.read_timeout
        self.limits = DispatchLimits(
            lease_seconds=float(dispatch_defaults["lease_seconds"].default),
            max_receive_count=self.template.max_receive_count,
            request_seconds=request_seconds,
            call_budget_seconds=2 * request_seconds,
            record_reserve_seconds=float(dispatch_defaults["record_reserve_seconds"].default),
            ledger_concurrency=wiring.LEDGER_CONCURRENCY,
            fynd_concurrency=wiring.FYND_READS_IN_FLIGHT,
            call_concurrency=wiring.FYND_CALLS_IN_FLIGHT,
        )
        # One pace per Fynd credential shared by every dispatcher, as FyndRateTable is deployed
        self.limiter = SlotCalendar(float(self.template.parameters.get("FyndCallsPerSecond", "20")))
        reads = float(self.template.parameters.get("FyndReadsPerSecond", "20"))
        self.read_limiter = SlotCalendar(reads) if reads > 0 else None
        base = float(dispatch_defaults["retry_base_seconds"].default)
        cap = float(dispatch_defaults["retry_max_seconds"].default)
        jitter = random.Random(f"{seed}:jitter").random
        self.policy = code_policy(
            base_seconds=base,
            max_seconds=cap,
            too_early_deadline_seconds=self.template.too_early_deadline_seconds,
            jitter=jitter,
        )
        self.acceptance = InvoiceAcceptance(
            ledger=self.ledger.with_attempts(1),
            queue=self.queue,
            clock=self.clock,
            reserve_seconds=wiring.INGEST_WRITE_RESERVE_SECONDS,
            mark_seconds=wiring.INGEST_ATTEMPT_SECONDS,
            optimistic_limit=TRANSACTION_LIMIT // 2,
        )
        self.queue_age = FakeQueueAge(self.queue, self.clock)  # type: ignore[arg-type]
        self.reconciler = self._reconciler()
        self.api = TokenBucket(self.template.api_rate, self.template.api_burst)
        secret = new_secret()
        self._secret = secret
        self._verifier = RequestVerifier(SigningSecrets.from_entries({"default": secret}))
        self.maker = InvoiceMaker(seed, locations=scenario.locations, einvoice_share=scenario.einvoice_share)
        # Lambda: dispatcher slots (the event source's MaximumConcurrency), ingest instances.
        self.slots = self.template.max_concurrency
        self._dispatchers: dict[int, Dispatcher] = {}
        self._idle: set[int] = set()
        self._ingest_ends: list[float] = []
        # What happened, for the report.
        self.first_sent: dict[str, float] = {}
        self.acknowledged: set[str] = set()
        """Orders whose webhook was answered 202 (whether or not the ERP waited for it)."""
        self.answers: Counter[str] = Counter()
        self.lambda_metrics: Counter[str] = Counter()
        self.ingest_peak = 0
        self.generated = 0
        self.webhooks_done = 0
        self.webhooks_total = 0
        self.signatures_checked = 0
        self.dlq_peak = 0
        self.last_final_at = self.clock.now
        self.wall_seconds = 0.0
        self.invocations = Counter[str]()
        self.reconciler_runs: list[dict[str, int]] = []
        self.deleted: tuple[InvoiceKey, float] | None = None
        self.healed_at: float | None = None
        """When the reconciler queued the deleted message's invoice again."""
        self.backlog_seconds: set[int] = set()
        """Seconds in which a dispatcher invocation that took a full batch was running."""

    def _reconciler(self) -> Reconciler:
        """As relay.wiring builds it, from the settings' defaults and the template."""
        reconcile_defaults = ReconcileSettings.model_fields
        options: dict[str, Any] = {
            "ledger": self.ledger,
            "queue": self.queue,
            "clock": self.clock,
            "stall_seconds": self.template.reconcile_after_minutes * 60,
        }
        accepted = inspect.signature(Reconciler).parameters
        if "queue_age" in accepted:
            options["queue_age"] = self.queue_age
        if "budgets" in accepted:
            options["budgets"] = reconcile_module.Budgets(
                lost=int(reconcile_defaults["max_per_run"].default),
                parked=int(reconcile_defaults["max_parked_per_run"].default),
            )
        if "concurrency" in accepted:
            options["concurrency"] = wiring.LEDGER_CONCURRENCY
        if "max_per_run" in accepted:
            options["max_per_run"] = int(reconcile_defaults["max_per_run"].default)
        return Reconciler(**options)

    # ---- wiring the real code to the world ----
    def _install_metrics(self) -> None:
        for module in (dispatch_module, intake_module, reconcile_module):
            module.count = self.metrics.count  # type: ignore[attr-defined]
        logger.setLevel("CRITICAL")
        clock = self.clock

        def pool(workers: int, name: str) -> PoolExecutor | None:
            return PoolExecutor(workers, clock) if workers > 1 else None

        dispatch_module._pool = pool  # type: ignore[assignment]

        def executor(workers: int, thread_name_prefix: str = "") -> PoolExecutor:
            return PoolExecutor(workers, clock)

        reconcile_module.ThreadPoolExecutor = executor  # type: ignore[attr-defined,assignment]

    # ---- the senders ----
    def _plan_senders(self) -> None:
        scenario = self.scenario
        per = self.sender.invoices_per_webhook
        self.webhooks_total = math.ceil(scenario.invoices / per)
        self.loop.at(self.clock.now, self._next_webhook, 0, 0)

    def _next_webhook(self, number: int, made: int) -> None:
        scenario = self.scenario
        per = self.sender.invoices_per_webhook
        count = min(per, scenario.invoices - made)
        order_ids = [f"SO-{made + index:08d}" for index in range(count)]
        now = self.clock.now
        for order_id in order_ids:
            self.first_sent[order_id] = now
            if self.rng.random() < scenario.in403_share:
                low, high = scenario.in403_minutes
                self.fynd.early_until[order_id] = now + 60 * self.rng.uniform(low, high)
        webhook = Webhook(
            number,
            order_ids,
            self.maker.body(order_ids),
            f"msg_{number:09d}" if self.sender.webhook_id else None,
            now,
        )
        self.generated += count
        self._attempt(webhook)
        if made + count < scenario.invoices:
            rate = scenario.rate_at(now - self.clock.start) / per
            self.loop.at(now + self.rng.expovariate(rate), self._next_webhook, number + 1, made + count)

    def _attempt(self, webhook: Webhook) -> None:
        webhook.tries += 1
        started = self.clock.now
        status = self._post(webhook)
        took = self.clock.now - started
        self.answers[status] += 1
        self.clock.now = started
        if status == "202":
            self.acknowledged.update(webhook.order_ids)
        ok = status == "202" and took <= self.sender.timeout_seconds
        if ok or status in ("409", "422", "400"):
            self._webhook_done(webhook)
            return
        retries = self.sender.retry_delays
        if webhook.tries > len(retries):
            self._webhook_done(webhook)
            return
        self.loop.at(started + took + retries[webhook.tries - 1], self._attempt, webhook)

    def _webhook_done(self, webhook: Webhook) -> None:
        webhook.done = True
        self.webhooks_done += 1

    def _post(self, webhook: Webhook) -> str:
        """API Gateway, then ingest: the HTTP status the ERP sees."""
        if not self.api.take(self.clock.now):
            self.metrics.count("4xx")
            self.metrics.count("WebhooksThrottled")  # the access-log filter's count of 429s
            return "429"
        now = self.clock.now
        while self._ingest_ends and self._ingest_ends[0] <= now:
            import heapq

            heapq.heappop(self._ingest_ends)
        if len(self._ingest_ends) >= self.template.ingest_reserved_concurrency:
            self.metrics.count("IngestFunction.Throttles")
            self.metrics.count("5xx")
            return "500 (Lambda throttled)"
        status = self._ingest(webhook)
        import heapq

        heapq.heappush(self._ingest_ends, self.clock.now)
        self.ingest_peak = max(self.ingest_peak, len(self._ingest_ends))
        if status.startswith("5"):
            self.metrics.count("5xx")
        return status

    def _ingest(self, webhook: Webhook) -> str:
        self.invocations["ingest"] += 1
        margin = wiring.INGEST_ANSWER_MARGIN_SECONDS
        with Invocation(self.clock, self.template.ingest_timeout) as invocation:
            try:
                if self.rng.random() < self.scenario.signature_sample:
                    self.signatures_checked += 1
                    raw = webhook.body.encode()
                    headers = {
                        **signed_headers(self._secret, webhook.body),
                        "content-type": "application/json",
                    }
                    self._verifier.verify(raw, headers)
                invoices = parse_invoices(webhook.body)
                self.acceptance.accept(
                    invoices,
                    correlation_id=webhook.webhook_id,
                    seconds_left=lambda: invocation.seconds_left() - margin,
                )
            except (MalformedBody, InvalidInvoices, UnqueueableInvoices):
                return "422"
            except ConflictError:
                return "409"
            except (
                AcceptanceOutOfTime,
                AcceptRaceError,
                LedgerUnavailableError,
                QueueUnavailableError,
            ) as error:
                self.metrics.count("IngestErrors", reason=type(error).__name__)
                return "503"
            except Killed:
                self.metrics.count("IngestFunction.Errors")
                return "502 (ingest timed out)"
        return "202"

    # ---- the dispatcher (Lambda's SQS event source) ----
    def _wake(self, when: float) -> None:
        if not self._idle:
            return
        for slot in sorted(self._idle):
            self.loop.at(max(when, self.clock.now), self._poll, slot, False)
        self._idle.clear()

    def _poll(self, slot: int, waited: bool) -> None:
        if slot in self._idle:
            return
        visible = self.queue.visible()
        if visible == 0:
            self._idle.add(slot)
            later = self.queue.next_visible_at()
            if later is not None:
                self._idle.discard(slot)
                self.loop.at(max(later, self.clock.now + 1), self._poll, slot, False)
            return
        window = self.template.batching_window_seconds
        if visible < self.template.batch_size and not waited and window > 0:
            self.loop.at(self.clock.now + window, self._poll, slot, True)
            return
        batch = self.queue.receive(self.template.batch_size, max_bytes=EVENT_PAYLOAD_BYTES)
        full = len(batch) >= self.template.batch_size or self.queue.payload_full
        if not batch:  # the in-flight quota: nothing comes back, and no error
            self.loop.at(self.clock.now + 1, self._poll, slot, False)
            return
        self.invocations["dispatch"] += 1
        dispatcher = self._dispatchers.get(slot)
        if dispatcher is None:
            dispatcher = self._dispatchers[slot] = Dispatcher(
                ledger=self.ledger,
                fynd=self.fynd.session(),
                queue=self.queue,
                policy=self.policy,
                settings=self.limits,
                owner=f"dispatch-{slot}",
                clock=self.clock,
                limiter=self.limiter,
                read_limiter=self.read_limiter,
                # A wait for a rate slot or a Retry-After passes on the world's clock, and is
                # killed at the invocation's timeout as a sleep in Lambda would be
                sleep=self.clock.spend,
            )
        with Invocation(self.clock, self.template.dispatch_timeout) as invocation:
            try:
                failures = dispatcher.dispatch(batch, invocation.seconds_left)
            except Killed:
                self.metrics.count("DispatchFunction.Errors")
                failures = None
        if full:
            self.backlog_seconds.update(range(int(invocation.started_at), int(self.clock.now) + 1))
        if failures is not None:
            self.queue.answer(batch, failures)
        self.loop.at(self.clock.now, self._poll, slot, False)

    # ---- the reconciler (a schedule) ----
    def _reconcile(self) -> None:
        self.invocations["reconcile"] += 1
        with Invocation(self.clock, self.template.reconcile_timeout) as invocation:
            try:
                report = self.reconciler.reconcile(invocation.seconds_left)
                requeued = getattr(report, "requeued", {})
                self.reconciler_runs.append({str(status): len(keys) for status, keys in requeued.items()})
                deleted = str(self.deleted[0]) if self.deleted is not None else None
                if self.healed_at is None and any(deleted in keys for keys in requeued.values()):
                    self.healed_at = self.clock.now
            except Killed:
                self.metrics.count("ReconcileFunction.Errors")
            except LedgerUnavailableError:
                self.metrics.count("ReconcileFunction.Errors")
        if not self._finished():
            self.loop.at(self.clock.now + self.template.reconcile_period_seconds, self._reconcile)

    def _delete_one(self) -> None:
        """A message lost on purpose in the middle of a backlog (an operator's purge, a stale
        delete): the oldest one waiting. The reconciler must queue its invoice again."""
        held = self.queue.take_oldest_visible()
        if held is None:
            self.loop.at(self.clock.now + 60, self._delete_one)
            return
        self.deleted = (InvoiceKey.parse(_key(held.body)), self.clock.now)

    # ---- watching ----
    def _tick(self) -> None:
        self.dlq_peak = max(self.dlq_peak, len(self.queue.dead_letters))
        self.queue_age.observe()
        if not self._finished():
            self.loop.at(self.clock.now + 60, self._tick)

    def _finished(self) -> bool:
        if self.webhooks_done < self.webhooks_total:
            return False
        if self.clock.elapsed > self.scenario.max_hours * 3600:
            return True
        # Drained: nothing on the queue, and no wait parked in the ledger still owed a message
        return not self.queue.messages and not any(
            entry.parked and not entry.status.is_final for entry in self.ledger.entries.values()
        )

    def run(self) -> "Report":
        started = time.perf_counter()
        self.queue.on_send = self._wake
        self._plan_senders()
        for slot in range(self.slots):
            self._idle.add(slot)
        self.loop.at(self.clock.now + self.template.reconcile_period_seconds, self._reconcile)
        self.loop.at(self.clock.now + 60, self._tick)
        if self.scenario.delete_at_minutes is not None:
            self.loop.at(self.clock.now + 60 * self.scenario.delete_at_minutes, self._delete_one)
        self.loop.run(until=self.clock.start + self.scenario.max_hours * 3600, stop=self._finished)
        self.wall_seconds = time.perf_counter() - started
        return Report.of(self)


@dataclass
class Report:
    lines: list[str]
    figures: dict[str, Any]

    @classmethod
    def of(cls, sim: Simulation) -> "Report":
        scenario = sim.scenario
        entries = sim.ledger.entries
        generated = sim.generated
        accepted = len(entries)
        statuses = Counter(entry.status for entry in entries.values())
        dead_lettered = sum(
            1
            for entry in entries.values()
            if not entry.status.is_final and entry.dead_lettered_at is not None
        )
        dlq_keys = {InvoiceKey.parse(str(_key(held.body))) for held in sim.queue.dead_letters}
        dead_unmarked = sum(
            1
            for key in dlq_keys
            if key in entries and not entries[key].status.is_final and entries[key].dead_lettered_at is None
        )
        dead_lettered += dead_unmarked
        final = statuses[InvoiceStatus.INVOICED] + statuses[InvoiceStatus.REJECTED]
        # Never lost, counted from other sources than the ledger's own tally: every order
        # answered 202 has an entry, and every unfinished entry still has a message on its
        # way (or sits in the dead-letter queue).
        recorded = {key.order_id for key in entries}
        acknowledged_missing = len(sim.acknowledged - recorded)
        live = {_key(held.body) for held in sim.queue.messages.values()}
        # A parked wait has no message by design: the reconciler owes it one when it is due
        stranded = sum(
            1
            for key, entry in entries.items()
            if not entry.status.is_final
            and entry.dead_lettered_at is None
            and not entry.parked
            and str(key) not in live
            and key not in dlq_keys
        )
        unfinished = accepted - final - dead_lettered
        lost = generated - accepted
        early = sim.fynd.early_until
        latencies = sorted(
            at - sim.first_sent[key.order_id]
            for key, at in sim.ledger.invoiced_at.items()
            if key.order_id not in early
        )
        invoiced_times = list(sim.ledger.invoiced_at.values())
        drain = (max(invoiced_times) - sim.clock.start) if invoiced_times else 0.0
        calls = sim.fynd.orders_per_call
        requests = sim.fynd.requests
        fynd_requests = requests["calls"] + requests["reads"] + requests["throttled"]
        index_peaks = _index_peaks(sim.capacity.peak)
        throttles: Counter[str] = Counter()
        throttles.update({f"dynamodb {name}": value for name, value in sim.capacity.throttles.items()})
        throttles["api gateway 429"] = sim.answers["429"]
        throttles["ingest lambda (reserved concurrency)"] = sim.answers["500 (Lambda throttled)"]
        throttles["fynd 429"] = requests["throttled"]
        throttles["sqs in-flight quota (empty receives)"] = sim.queue.quota_hits
        throttles = Counter({name: value for name, value in throttles.items() if value})
        alarms = _alarms(sim)
        reconciled = int(sim.metrics.totals["Reconciled"])
        healed: str | None = None
        if sim.deleted is not None:
            key, at = sim.deleted
            entry = entries.get(key)
            done = sim.ledger.invoiced_at.get(key)
            healed = (
                f"{key} deleted at {(at - sim.clock.start) / 60:.0f} min: "
                + (
                    f"queued again {(sim.healed_at - at) / 60:.1f} min later, "
                    if sim.healed_at is not None
                    else "never queued again, "
                )
                + (
                    f"INVOICED {(done - at) / 60:.1f} min later"
                    if done
                    else f"now {entry.status if entry else None}"
                )
            )
        timing, timing_lines = _timing(sim)
        figures: dict[str, Any] = {
            **timing,
            "scenario": scenario.name,
            "seed": scenario.seed,
            "invoices": generated,
            "accepted": accepted,
            "lost_at_edge": lost,
            "final": final,
            "invoiced": statuses[InvoiceStatus.INVOICED],
            "rejected": statuses[InvoiceStatus.REJECTED],
            "dead_lettered": dead_lettered,
            "unfinished": unfinished,
            "sent_twice": len(sim.fynd.resent_keys),
            "sent_twice_by_reason": dict(sim.fynd.resent),
            "drain_hours": round(drain / 3600, 2),
            "p50_seconds": _quantile(latencies, 0.5),
            "p99_seconds": _quantile(latencies, 0.99),
            "orders_per_call": round(statistics.fmean(calls), 2) if calls else 0,
            "fynd_calls": requests["calls"],
            "fynd_reads": requests["reads"],
            "fynd_429_share": round(requests["throttled"] / fynd_requests, 3) if fynd_requests else 0,
            "index_peak_wcu": index_peaks,
            "table_peak_wru": sim.capacity.peak.get("table.write", 0),
            "throttles": dict(throttles),
            "in_flight_peak": sim.queue.in_flight_peak,
            "reconciler_copies": reconciled,
            "reconciled_by_status": {
                status: int(value)
                for name, value in sim.metrics.totals.items()
                if name.startswith("Reconciled[")
                for status in [name[len("Reconciled[") : -1]]
            },
            "alarms": alarms,
            "deleted_message": healed,
            "erp_answers": dict(sim.answers),
            "dead_letter_reasons": {
                name[len("DeadLettered[") : -1]: int(value)
                for name, value in sim.metrics.totals.items()
                if name.startswith("DeadLettered[")
            },
            "sqs_refused": dict(sim.queue.refused),
            "expired": len(sim.queue.expired),
            "invocations": dict(sim.invocations),
            "simulated_hours": round(sim.clock.elapsed / 3600, 2),
            "wall_seconds": round(sim.wall_seconds, 1),
            "events": sim.loop.handled,
            "template": {
                "ApiThrottlingRateLimit": sim.template.api_rate,
                "ApiThrottlingBurstLimit": sim.template.api_burst,
                "DispatchMaxConcurrency": sim.template.max_concurrency,
                "DispatchBatchSize": sim.template.batch_size,
                "IngestReservedConcurrency": sim.template.ingest_reserved_concurrency,
            },
            "acknowledged_but_missing": acknowledged_missing,
            "stranded": stranded,
            "accounting_ok": generated == lost + final + dead_lettered + unfinished
            and acknowledged_missing == 0
            and stranded == 0,
        }
        lines = [
            f"== {scenario.name} (seed {scenario.seed}; {sim.sender.name}; Fynd {scenario.fynd_rate:g} calls/s,"
            + (
                " reads counted with them)"
                if scenario.fynd_read_rate is None
                else f" {scenario.fynd_read_rate:g} reads/s)"
            ),
            f"  accepted {accepted} of {generated}; lost at the edge (ERP gave up) {lost}",
            f"  final {final} (invoiced {figures['invoiced']}, rejected {figures['rejected']});"
            f" dead-lettered {dead_lettered} {figures['dead_letter_reasons']}; unfinished {unfinished}",
            f"  sent twice {figures['sent_twice']} {figures['sent_twice_by_reason']}",
            f"  drain {figures['drain_hours']} h; webhook->INVOICED (confirmed orders) p50"
            f" {figures['p50_seconds']} s, p99 {figures['p99_seconds']} s",
            f"  Fynd: {requests['calls']} calls ({figures['orders_per_call']} orders/call),"
            f" {requests['reads']} Shipment Info reads, 429 share {figures['fynd_429_share']}",
            *timing_lines,
            f"  peak WCU per index partition {index_peaks}; table peak WRU {figures['table_peak_wru']:.0f}",
            f"  throttles {dict(throttles)}",
            f"  in-flight peak {sim.queue.in_flight_peak}; reconciler copies {reconciled}"
            f" {figures['reconciled_by_status']}",
            f"  alarms fired: {', '.join(alarms) or 'none'}",
            *([f"  a message deleted on purpose: {healed}"] if healed else []),
            f"  ERP answers {dict(sim.answers)}; answered 202 but not in the ledger {acknowledged_missing};"
            f" unfinished with no message on its way {stranded}",
            f"  simulated {figures['simulated_hours']} h in {figures['wall_seconds']} s"
            f" ({sim.loop.handled} events); accounting {'adds up' if figures['accounting_ok'] else 'DOES NOT ADD UP'}",
        ]
        return cls(lines, figures)


TARGET_CONFIRMED_SECONDS = 10
"""Issue 19: webhook to INVOICED for confirmed orders, at p99."""
TARGET_AFTER_CONFIRMATION_SECONDS = 600
"""Issue 19: an IN403 order final within 10 minutes of its confirmation."""
TARGET_NOT_WAITING_SECONDS = 65 * 60
"""Issue 19: every invoice not waiting for confirmation final within 65 minutes of its first webhook."""
ORDERS_PER_CALL = 20


def _timing(sim: Simulation) -> tuple[dict[str, Any], list[str]]:
    """Where the time goes, against issue 19's targets: the dispatcher's pace while a backlog
    lasts; for confirmed orders the wait before Fynd first sees them and the time after it
    (answered, or after a lost answer); IN403 orders from their confirmation to final."""
    fynd = sim.fynd
    early = fynd.early_until
    first_webhook = sim.first_sent
    confirmed: list[float] = []
    before_fynd: list[float] = []
    after_answered: list[float] = []
    after_lost: list[float] = []
    after_confirmation: list[float] = []
    for key, at in sim.ledger.invoiced_at.items():
        order = key.order_id
        if order in early:
            after_confirmation.append(at - early[order])
            continue
        confirmed.append(at - first_webhook[order])
        sent_at = fynd.first_sent_at.get(key)
        if sent_at is None:
            continue
        before_fynd.append(sent_at - first_webhook[order])
        (after_lost if fynd.applied_by.get(key) == ANSWER_LOST else after_answered).append(at - sent_at)
    for values in (confirmed, before_fynd, after_answered, after_lost, after_confirmation):
        values.sort()
    backlog = sim.backlog_seconds
    per_second = fynd.per_second

    def in_backlog(kind: str) -> float:
        counts = per_second.get(kind, Counter())
        return sum(counts.get(second, 0) for second in backlog) / len(backlog) if backlog else 0.0

    rate, read_rate = sim.scenario.fynd_rate, sim.scenario.fynd_read_rate
    pace = {kind: round(in_backlog(kind), 2) for kind in ("calls", "reads", "throttled", "orders")}
    # The share of the calls' limit used: with the reads, when Fynd counts them together.
    used = pace["calls"] + pace["throttled"] + (pace["reads"] if read_rate is None else 0)
    figures: dict[str, Any] = {
        "backlog_seconds": len(backlog),
        "backlog_pace": pace,
        "backlog_requests_share": round(used / rate, 3),
        "backlog_orders_share": round(pace["orders"] / (rate * ORDERS_PER_CALL), 3),
        "backlog_orders_per_call": round(pace["orders"] / pace["calls"], 2) if pace["calls"] else 0,
        "confirmed_max_seconds": round(confirmed[-1], 1) if confirmed else None,
        "confirmed_over_target": sum(1 for value in confirmed if value > TARGET_CONFIRMED_SECONDS),
        "not_waiting_over_65_min": sum(1 for value in confirmed if value > TARGET_NOT_WAITING_SECONDS),
        "before_fynd_p50_p99": (_quantile(before_fynd, 0.5), _quantile(before_fynd, 0.99)),
        "after_answered_p50_p99": (_quantile(after_answered, 0.5), _quantile(after_answered, 0.99)),
        "after_lost_p50_p99": (_quantile(after_lost, 0.5), _quantile(after_lost, 0.99)),
        "in403_after_confirmation_p50_p99_max": (
            _quantile(after_confirmation, 0.5),
            _quantile(after_confirmation, 0.99),
            round(after_confirmation[-1], 1) if after_confirmation else None,
        ),
        "in403_over_10_min": sum(
            1 for value in after_confirmation if value > TARGET_AFTER_CONFIRMATION_SECONDS
        ),
    }
    lines = [
        f"  confirmed orders: max {figures['confirmed_max_seconds']} s; over {TARGET_CONFIRMED_SECONDS} s"
        f" {figures['confirmed_over_target']} of {len(confirmed)}; over 65 min {figures['not_waiting_over_65_min']};"
        f" webhook->first send p50/p99 {figures['before_fynd_p50_p99']} s; first send->INVOICED p50/p99"
        f" answered {figures['after_answered_p50_p99']} s ({len(after_answered)}),"
        f" answer lost {figures['after_lost_p50_p99']} s ({len(after_lost)})",
        f"  IN403 orders, confirmation->INVOICED p50/p99/max {figures['in403_after_confirmation_p50_p99_max']} s;"
        f" over 10 min {figures['in403_over_10_min']} of {len(after_confirmation)}",
        f"  while backlogged ({len(backlog)} s): {pace['calls']} calls/s + {pace['throttled']} 429s/s"
        + (
            f" + {pace['reads']} reads/s = {figures['backlog_requests_share']:.0%} of Fynd's {rate:g}/s;"
            if read_rate is None
            else f" = {figures['backlog_requests_share']:.0%} of Fynd's {rate:g} calls/s;"
            f" {pace['reads']} reads/s of {read_rate:g};"
        )
        + f" {pace['orders']:.0f} orders/s sent = {figures['backlog_orders_share']:.0%} of"
        f" {rate:g} x {ORDERS_PER_CALL} ({figures['backlog_orders_per_call']} orders/call)",
    ]
    return figures, lines


def _index_peaks(peaks: dict[str, float]) -> dict[str, float]:
    """Peak WCU per index partition: ByStatus's by status; ByDue's highest shard per list."""
    found: dict[str, float] = {}
    for name, peak in sorted(peaks.items()):
        if name.endswith(":read") or "/" not in name or name.startswith("table."):
            continue
        index, _, partition = name.partition("/")
        label = f"{index}/{partition.split('#', 1)[0]}" + ("#max shard" if "#" in partition else "")
        found[label] = max(found.get(label, 0), peak)
    return found


def _key(body: str) -> str:
    from relay.domain.messages import QueuedInvoice

    return str(QueuedInvoice.from_body(body).invoice.key)


def _quantile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, int(share * len(values)))], 1)


_GAUGES = {"ApproximateNumberOfMessagesVisible", "ApproximateAgeOfOldestMessage"}


def _alarms(sim: Simulation) -> list[str]:
    """The template's alarms that the run's metrics would have put in ALARM. An alarm on a part
    the world does not model (the write-back's queue and stream) is left out."""
    fired: list[str] = []
    for alarm in sim.template.alarms:
        if alarm.name.startswith("Writeback"):
            continue
        value = 0.0
        for metric in alarm.metrics:
            if metric == "ApproximateNumberOfMessagesVisible":
                value += sim.dlq_peak
            elif metric == "ApproximateAgeOfOldestMessage":
                value += sim.queue.oldest_age_peak
            else:
                value += sim.metrics.peak(metric, alarm.period_seconds)
        if value > alarm.threshold:
            fired.append(alarm.name)
    return fired


SCENARIOS: dict[str, Callable[[int, int], Scenario]] = {
    "erpnext": lambda invoices, seed: Scenario(
        "ERPNext v14 at 300/s, bursts to 600/s",
        "erpnext-v14",
        invoices,
        rate=280,
        burst_rate=600,
        seed=seed,
    ),
    "batching": lambda invoices, seed: Scenario(
        "batching ERP at 2,000/s", "batching", invoices, rate=2000, seed=seed
    ),
}
_ = InvoiceType
