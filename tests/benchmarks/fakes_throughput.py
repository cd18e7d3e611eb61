"""The dispatcher's throughput over the port fakes, with AWS-like latency and no moto in the way.

Each ledger request (claim, record) waits `ledger_seconds`, each Fynd call `fynd_seconds`, as
the network would. C workers play C Lambda instances (MaximumConcurrency = C): each takes a
batch of up to `batch_size` visible messages from the queue, runs its own Dispatcher on it
(its own ledger thread pool, as each instance has), and answers the batch. All workers share
one interpreter and its GIL on this 2-core machine, which a fleet of Lambda instances does not:
the figures are a floor. The limit is Fynd's: 20 orders per call, C calls in flight,
`fynd_seconds` each, i.e. 20·C/fynd_seconds invoices per second.
"""

import multiprocessing
import threading
import time
import tracemalloc
from collections.abc import Sequence
from typing import Any

from factories import invoice
from fakes import SETTINGS, InMemoryLedger, RecordingQueue, ScriptedFynd, World
from relay.domain import dispatch as dispatch_module
from relay.domain.dispatch import DispatchLimits
from relay.domain.fynd import FyndCall, FyndReceipt
from relay.domain.invoice import InvoiceKey
from relay.domain.messages import QueuedInvoice
from relay.domain.policy import Verdict
from relay.domain.ports import Claim

_METRICS_LOCK = threading.Lock()


class SlowLedger(InMemoryLedger):
    """The in-memory ledger behind a network round trip per request; its state changes are locked."""

    def __init__(self, *args: Any, delay: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.delay = delay
        self.requests = 0
        self._lock = threading.Lock()

    def claim(self, message: QueuedInvoice, **kwargs: Any) -> Claim:
        time.sleep(self.delay)
        with self._lock:
            self.requests += 1
            return super().claim(message, **kwargs)

    def record(self, key: InvoiceKey, verdict: Verdict, **kwargs: Any) -> bool:
        time.sleep(self.delay)
        with self._lock:
            self.requests += 1
            return super().record(key, verdict, **kwargs)


class SlowFynd(ScriptedFynd):
    def __init__(self, *args: Any, delay: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.delay = delay
        self._lock = threading.Lock()

    def update_invoices(self, call: FyndCall, *, time_budget_seconds: float) -> FyndReceipt:
        time.sleep(self.delay)
        with self._lock:
            return super().update_invoices(call, time_budget_seconds=time_budget_seconds)


def _locked_count(original: Any) -> Any:
    """Powertools' metric set is per process and not thread-safe; Lambda runs one invocation
    per process, here C share one, so their counters take turns."""

    def count(*args: Any, **kwargs: Any) -> None:
        with _METRICS_LOCK:
            original(*args, **kwargs)

    return count


def run(
    concurrency: int,
    invoices: int,
    *,
    batch_size: int = 100,
    ledger_seconds: float = 0.008,
    fynd_seconds: float = 0.2,
    ledger_concurrency: int = 20,
    prefix: str = "T",
) -> dict[str, Any]:
    """Queue `invoices`, drain them with `concurrency` workers (threads of this interpreter), and
    report the rate."""
    world = World(
        settings=DispatchLimits(
            lease_seconds=SETTINGS.lease_seconds,
            max_receive_count=SETTINGS.max_receive_count,
            request_seconds=SETTINGS.request_seconds,
            call_budget_seconds=SETTINGS.call_budget_seconds,
            record_reserve_seconds=SETTINGS.record_reserve_seconds,
            ledger_concurrency=ledger_concurrency,
        )
    )
    clock = time.time
    ledger = SlowLedger(clock, delay=ledger_seconds)
    fynd = SlowFynd(clock, delay=fynd_seconds)
    queue = RecordingQueue(clock)
    world.ledger, world.fynd, world.queue, world.clock = ledger, fynd, queue, clock  # type: ignore[assignment]
    world.acceptance = type(world.acceptance)(ledger=ledger, queue=queue, clock=clock)
    for start in range(0, invoices, 100):
        world.accept(*(invoice(f"{prefix}{n:06}") for n in range(start, min(start + 100, invoices))))
    queue_lock = threading.Lock()
    batches: list[int] = []

    def worker(name: str) -> None:
        dispatcher = world.dispatcher(owner=name)
        while True:
            with queue_lock:
                batch = queue.receive(batch_size)
            if not batch:
                return
            failures = dispatcher.dispatch(batch, lambda: 60.0)
            with queue_lock:
                queue.answer(batch, failures)
                batches.append(len(batch))

    original = dispatch_module.count
    dispatch_module.count = _locked_count(original)  # type: ignore[assignment]
    try:
        started_at = time.time()
        started = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
    finally:
        dispatch_module.count = original  # type: ignore[assignment]
    invoiced = sum(1 for entry in ledger.entries.values() if entry.status.value == "INVOICED")
    sizes: Sequence[int] = [len(call.invoices) for call in fynd.calls]
    limit = 20 * concurrency / fynd_seconds
    rate = invoiced / elapsed
    return {
        "concurrency": concurrency,
        "invoices": invoices,
        "invoiced": invoiced,
        "seconds": round(elapsed, 2),
        "invoices_per_second": round(rate, 1),
        "limit_per_second": limit,
        "share_of_limit": round(rate / limit, 3),
        "fynd_calls": len(sizes),
        "orders_per_call": round(sum(sizes) / len(sizes), 2) if sizes else 0,
        "ledger_requests_per_invoice": round(ledger.requests / invoices, 2),
        "batches": len(batches),
        "started": started_at,
        "ended": started_at + elapsed,
    }


def peak_memory(records: int = 100) -> dict[str, Any]:
    """The dispatcher's Python heap peak on one batch of `records` over the fakes (no latency):
    the batch's own footprint, on top of what the import left (cold_start's RSS)."""
    world = World(settings=SETTINGS)
    for start in range(0, records, 100):
        world.accept(*(invoice(f"MEM-{n:05}") for n in range(start, min(start + 100, records))))
    batch = world.queue.receive(records)
    dispatcher = world.dispatcher()
    tracemalloc.start()
    failures = dispatcher.dispatch(batch, lambda: 60.0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert not failures, failures
    return {"records": len(batch), "peak_python_heap_mib": round(peak / 2**20, 2)}


def _one_instance(args: tuple[int, int, float, float]) -> dict[str, Any]:
    index, invoices, ledger_seconds, fynd_seconds = args
    return run(1, invoices, ledger_seconds=ledger_seconds, fynd_seconds=fynd_seconds, prefix=f"P{index}-")


def run_instances(
    concurrency: int, invoices_each: int, *, ledger_seconds: float = 0.008, fynd_seconds: float = 0.2
) -> dict[str, Any]:
    """C instances as C processes, as Lambda runs them (no shared GIL), each draining its own
    share of the queue over its own fakes (no two instances meet the same key in this load).
    The rate counts from the first instance's start to the last one's end."""
    context = multiprocessing.get_context("fork")
    with context.Pool(concurrency) as pool:
        runs = pool.map(
            _one_instance, [(i, invoices_each, ledger_seconds, fynd_seconds) for i in range(concurrency)]
        )
    invoiced = sum(r["invoiced"] for r in runs)
    elapsed = max(r["ended"] for r in runs) - min(r["started"] for r in runs)
    limit = 20 * concurrency / fynd_seconds
    calls = sum(r["fynd_calls"] for r in runs)
    return {
        "concurrency": concurrency,
        "invoices": invoices_each * concurrency,
        "invoiced": invoiced,
        "seconds": round(elapsed, 2),
        "invoices_per_second": round(invoiced / elapsed, 1),
        "limit_per_second": limit,
        "share_of_limit": round(invoiced / elapsed / limit, 3),
        "fynd_calls": calls,
        "orders_per_call": round(invoiced / calls, 2) if calls else 0,
        "ledger_requests_per_invoice": runs[0]["ledger_requests_per_invoice"],
    }
