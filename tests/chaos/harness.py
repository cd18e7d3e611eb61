"""`make chaos`: invoices through the local relay (the `make run` stack) while everything fails.

One seeded run:
- an ERP posts `invoices` invoices in signed webhooks of 1 to 50, `duplicate_share` of them
  copies of invoices it sent before, from `senders` threads, and resends a webhook answered
  503, 429 or not at all, as the interface asks, under the same webhook-id (Standard Webhooks);
- the relay runs as `make run` runs it (relay_local.LocalPipeline, each invocation in a worker
  process of its own), two dispatchers at most (DispatchMaxConcurrency), fast retries;
- Fynd (the simulator) answers each Update Invoice call with the fault the seeded plan gives
  it: 5xx, 429, latency beyond the client's read timeout, commit then drop the answer, a 2xx
  that confirms nothing (when the simulator has it), expired tokens, or nothing wrong;
- the local AWS endpoint throttles DynamoDB and injects transaction conflicts, SQS hands
  messages to two concurrent batches, deletes and visibility changes meet stale receipt
  handles, SendMessageBatch fails some entries; a dispatcher is killed between Fynd's answer
  and its ledger write (relay_local.faults).

Then it waits until the relay has settled every accepted invoice, and reads the figures from
the places that hold the truth: the ledger (final states), the dead-letter queue, and the
simulator's call records (what reached Fynd, and in which call). The relay promises that no
order reaches Fynd twice unless the answer to an earlier send was lost; the harness knows
which answers were lost (the plan, the kill records, the relay's own "ambiguous" verdicts for
answers that came after its timeout on a slow machine), so any other resend is a breach.

Deterministic given the seed as far as a concurrent system can be: the webhooks, the Fynd
fault plan (by call sequence number) and each fault layer's draws are seeded; which batch
meets which draw depends on timing.
"""

from __future__ import annotations

import json
import random
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from typing import Any

import urllib3

from fynd_simulator import SimulatorControl
from fynd_simulator.control import SimulatorControlError
from relay_local.console import Console, FunctionOutput
from relay_local.environments import IsolatedFunction
from relay_local.faults import LocalFaults
from relay_local.pipeline import DISPATCH, LocalPipeline, PipelineConfig
from relay_local.signing import new_secret, signed_headers

FINAL = frozenset({"INVOICED", "REJECTED"})
NO_FAULT: dict[str, object] = {"kind": "latency", "seconds": 0}
UNCONFIRMED_2XX_FAULT: dict[str, object] = {"kind": "unconfirmed", "shape": "any", "commit": True}
"""The simulator's "2xx that confirms nothing" fault: a 200 of a random unconfirming shape
after the call was applied. If a simulator refuses this fault kind, the run leaves it out
and says so."""
_RESEND_STATUSES = frozenset({429, 500, 502, 503, 504})


LEASE_SECONDS = 62
"""The dispatcher's lease in a chaos run: under the queue's 75 s visibility timeout."""
RECONCILER_PERIOD_SECONDS = 30
"""How often the reconciler runs in a chaos run (the template says 5 minutes)."""
RECONCILE_AFTER_MINUTES = 12
"""The template's least stall window, so the reconciler heals a vanished message soonest."""
RECONCILE_HEAL_SECONDS = LEASE_SECONDS + RECONCILE_AFTER_MINUTES * 60 + 2 * RECONCILER_PERIOD_SECONDS + 60
"""The longest a vanished message waits to be healed: the lease, the window, two reconciler
periods, and a minute for the copy to be dispatched."""


@dataclass(frozen=True)
class FyndFaultMix:
    """Share of Update Invoice calls that meet each fault; the rest are answered normally."""

    server_error: float = 0.04
    too_many_requests: float = 0.04
    latency_beyond_timeout: float = 0.02
    commit_then_drop: float = 0.03
    unconfirmed_2xx: float = 0.03
    token_expiry: float = 0.02


@dataclass(frozen=True)
class ChaosConfig:
    invoices: int = 10_000
    duplicate_share: float = 0.30
    seed: int = 1
    max_webhook: int = 50
    senders: int = 4
    fynd: FyndFaultMix = field(default_factory=FyndFaultMix)
    aws: LocalFaults = field(
        default_factory=lambda: LocalFaults(
            redeliver=0.05,
            stale_delete=0.03,
            stale_visibility=0.05,
            send_batch_failed=0.02,
            dynamodb_throttle=0.03,
            dynamodb_conflict=0.01,
            kill_after_fynd=0.02,
        )
    )
    read_timeout_seconds: float = 4.0
    """The dispatcher's Fynd read timeout; a latency fault waits longer than this."""
    settle_timeout_seconds: float = 1800.0
    stall_seconds: float = RECONCILE_HEAL_SECONDS
    """Give up settling when the ledger has not changed for this long. A lost message returns
    after the 75 s visibility timeout and a retry waits at most a few seconds, but an invoice
    with no message at all is the reconciler's to heal, RECONCILE_AFTER_MINUTES after its
    entry's lease or retry time (e.g. an accepted invoice whose queue send and send-failed
    mark both failed, as moto timing out on a loaded machine may make them). A stall limit
    below RECONCILE_HEAL_SECONDS would call the reconciler's heal a loss: with 240 s, `make
    test` beside two busy processes and a mutation run once ended with one invoice open. Only
    a run that really stalls pays the wait."""


@dataclass
class ChaosReport:
    seed: int
    sent: int = 0
    """Invoices posted (duplicates included)."""
    duplicates_sent: int = 0
    accepted: int = 0
    """Distinct invoice keys answered 202."""
    final: int = 0
    invoiced: int = 0
    rejected: int = 0
    dead_lettered: int = 0
    not_final: list[str] = field(default_factory=list)
    sent_twice: int = 0
    sent_twice_after_dropped_answer: int = 0
    """Of sent_twice: the order's invoicing call had its answer dropped or delayed past the timeout
    (the fault plan), or confirmed nothing."""
    sent_twice_after_killed_dispatcher: int = 0
    sent_twice_after_client_timeout: int = 0
    """Of sent_twice: no fault, but the relay itself recorded the answer as ambiguous (it came too late)."""
    sent_twice_unexplained: list[str] = field(default_factory=list)
    reconciled: int | None = None
    """None: the template has no reconciler yet."""
    answers: Counter[int] = field(default_factory=Counter)
    """The ERP's HTTP answers by status (resends included); 0 means no answer."""
    fynd_faults: Counter[str] = field(default_factory=Counter)
    in453: int = 0
    """IN453 answers Fynd gave: each one a duplicate that reached Fynd."""
    aws_faults: dict[str, int] = field(default_factory=dict)
    cold_starts: int = 0
    killed_dispatchers: int = 0
    timed_out_invocations: int = 0
    failed_batches: int = 0
    """Dispatcher invocations that failed whole (their messages all return)."""
    fynd_calls: int = 0
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def promises_kept(self) -> bool:
        server_errors = sum(
            count for status, count in self.answers.items() if status >= 500 and status != 503
        )
        return not self.not_final and not self.sent_twice_unexplained and server_errors == 0

    def lines(self) -> list[str]:
        five_xx = {status: count for status, count in sorted(self.answers.items()) if status >= 500}
        return [
            f"chaos run, seed {self.seed}, {self.seconds:.0f} s",
            f"  sent           {self.sent} invoices ({self.duplicates_sent} duplicates)",
            f"  accepted       {self.accepted}",
            f"  final          {self.final} (invoiced {self.invoiced}, rejected {self.rejected})",
            f"  not final      {len(self.not_final)} {self.not_final[:5]}",
            f"  dead-lettered  {self.dead_lettered}",
            f"  sent twice     {self.sent_twice}: after a dropped answer {self.sent_twice_after_dropped_answer},"
            f" after a killed dispatcher {self.sent_twice_after_killed_dispatcher},"
            f" after a late answer (relay timed out) {self.sent_twice_after_client_timeout},"
            f" unexplained {len(self.sent_twice_unexplained)} {self.sent_twice_unexplained[:5]}",
            f"  reconciled     {'n/a (no scheduled reconciler in template.yaml)' if self.reconciled is None else self.reconciled}",
            f"  ERP answers    {dict(sorted(self.answers.items()))} (5xx: {five_xx})",
            f"  Fynd calls     {self.fynd_calls}, faults {dict(sorted(self.fynd_faults.items()))}",
            f"  Fynd IN453     {self.in453} (answers dropped after commit: {self.fynd_faults['commit_then_drop']})",
            f"  AWS faults     {self.aws_faults}",
            f"  runtime        {self.cold_starts} cold starts, {self.killed_dispatchers} dispatchers killed after"
            f" Fynd answered, {self.timed_out_invocations} invocations ended at their timeout,"
            f" {self.failed_batches} dispatcher batches failed whole",
            *(f"  note           {note}" for note in self.notes),
            f"  promises kept  {'yes' if self.promises_kept else 'NO'}",
        ]


def run_chaos(config: ChaosConfig, *, log_to: Any = None, progress: Any = None) -> ChaosReport:
    started = time.monotonic()
    report = ChaosReport(seed=config.seed)
    chance = random.Random(config.seed)
    secret = new_secret()
    pipeline_config = PipelineConfig(
        webhook_secret=secret,
        isolated=True,
        faults=LocalFaults(**{**vars(config.aws), "seed": config.seed}),
        environment={
            "RETRY_BASE_SECONDS": "1",
            "RETRY_MAX_SECONDS": "4",
            # A lease outlives the longest batch (the dispatcher's 60 s timeout), and a message
            # comes back after the lease: the rule the template keeps with 120 s and 660 s.
            "LEASE_SECONDS": str(LEASE_SECONDS),
            "FYND_CONNECT_TIMEOUT_SECONDS": "1",
            "FYND_READ_TIMEOUT_SECONDS": str(config.read_timeout_seconds),
        },
        visibility_timeout_seconds=75,
        schedule_period_seconds=RECONCILER_PERIOD_SECONDS,
        parameters={"MaxReceiveCount": "50", "ReconcileAfterMinutes": str(RECONCILE_AFTER_MINUTES)},
    )
    output = _Watching(Console(log_to if log_to is not None else _Discard(), live=False))
    pipeline = LocalPipeline(pipeline_config)
    with redirect_stdout(output), _running(pipeline):
        fynd = SimulatorControl(pipeline.fynd_base_url)
        plan = _fynd_plan(fynd, config, chance, report)
        webhooks = _webhooks(config, chance, report)
        if progress is not None:
            print(f"sending {len(webhooks)} webhooks", file=progress, flush=True)
        accepted = _send_all(pipeline, secret, webhooks, config, report)
        report.accepted = len(accepted)
        _settle(pipeline, accepted, config, report, progress)
        _count_fynd(fynd, plan, pipeline, output, report)
        _count_runtime(pipeline, report)
    reconciled = {name: value for name, value in output.metrics.items() if name.startswith("Reconcil")}
    if reconciled or any(pipeline_schedules(pipeline)):
        report.reconciled = int(sum(reconciled.values()))
    report.seconds = time.monotonic() - started
    return report


@contextmanager
def _running(pipeline: LocalPipeline) -> Iterator[LocalPipeline]:
    pipeline.start()
    try:
        yield pipeline
    finally:
        pipeline.stop()


class _Watching(FunctionOutput):
    """The functions' stdout: shown (or discarded), metrics summed, and the invoice keys the
    dispatcher retried as ambiguous collected (its answer came after the relay gave up)."""

    def __init__(self, console: Console) -> None:
        super().__init__(console)
        self.ambiguous_keys: set[str] = set()

    def _route(self, line: str, invocation: Any) -> None:
        if '"fynd_ambiguous"' in line:
            try:
                document = json.loads(line)
            except ValueError:
                document = {}
            if isinstance(document, dict) and document.get("reason") == "fynd_ambiguous":
                self.ambiguous_keys.add(str(document.get("invoice_key")))
        super()._route(line, invocation)


class _Discard:
    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        """Nothing kept."""


def _fynd_plan(
    fynd: SimulatorControl, config: ChaosConfig, chance: random.Random, report: ChaosReport
) -> list[dict[str, object]]:
    """The fault each Update Invoice call gets, by its sequence number (the simulator takes its
    queued faults in order, one per call), queued up front with room for every retry."""
    mix = config.fynd
    kinds: list[tuple[float, dict[str, object]]] = [
        (mix.server_error, {"kind": "status", "status": 503}),
        (mix.too_many_requests, {"kind": "status", "status": 429, "retry_after": 1}),
        (mix.latency_beyond_timeout, {"kind": "latency", "seconds": config.read_timeout_seconds + 2}),
        (mix.commit_then_drop, {"kind": "commit_then_drop"}),
        (mix.token_expiry, {"kind": "expire_tokens"}),
    ]
    try:
        fynd.add_faults(UNCONFIRMED_2XX_FAULT)
        fynd.add_faults(NO_FAULT)  # nothing is sent yet: these two are taken by the first two calls
        kinds.append((mix.unconfirmed_2xx, UNCONFIRMED_2XX_FAULT))
        plan: list[dict[str, object]] = [UNCONFIRMED_2XX_FAULT, NO_FAULT]
    except SimulatorControlError:
        report.notes.append(
            f"2xx answers that confirm nothing: this simulator has no fault {UNCONFIRMED_2XX_FAULT!r}"
            " (branch `fynd` adds one; set UNCONFIRMED_2XX_FAULT in tests/chaos/harness.py to its name)"
        )
        plan = []
    calls = max(200, config.invoices)  # far more than the calls a run makes (20 orders each)
    for _ in range(calls):
        draw = chance.random()
        for share, fault in kinds:
            if draw < share:
                plan.append(fault)
                break
            draw -= share
        else:
            plan.append(NO_FAULT)
    for start in range(2 if len(plan) and plan[0] is UNCONFIRMED_2XX_FAULT else 0, len(plan), 500):
        fynd.add_faults(*plan[start : start + 500])
    return plan


def _webhooks(config: ChaosConfig, chance: random.Random, report: ChaosReport) -> list[list[dict[str, str]]]:
    sent: list[dict[str, str]] = []
    webhooks: list[list[dict[str, str]]] = []
    while len(sent) < config.invoices:
        size = min(chance.randint(1, config.max_webhook), config.invoices - len(sent))
        webhook: list[dict[str, str]] = []
        for _ in range(size):
            if sent and chance.random() < config.duplicate_share:
                webhook.append(chance.choice(sent))
                report.duplicates_sent += 1
            else:
                number = len(sent) - report.duplicates_sent + 1
                order_id = f"CH{config.seed}-{number}"
                invoice = {"orderId": order_id, "invoiceNumber": f"INV-{order_id}", "invoiceType": "sale"}
                if chance.random() < 0.02:  # a few Fynd refuses for good
                    invoice["orderId"] = f"CANCELLED-{order_id}"
                webhook.append(invoice)
            sent.append(webhook[-1])
        webhooks.append(webhook)
    report.sent = len(sent)
    return webhooks


def _send_all(
    pipeline: LocalPipeline,
    secret: str,
    webhooks: list[list[dict[str, str]]],
    config: ChaosConfig,
    report: ChaosReport,
) -> set[str]:
    http = urllib3.PoolManager(maxsize=config.senders, retries=False, timeout=urllib3.Timeout(total=30))
    accepted: set[str] = set()
    lock = threading.Lock()

    def send(webhook: list[dict[str, str]]) -> None:
        body = json.dumps(webhook)
        # One id for every attempt: a Standard Webhooks sender resends the same message.
        webhook_id = f"msg_{secrets.token_hex(12)}"
        for attempt in range(20):
            try:
                response = http.request(
                    "POST",
                    f"{pipeline.api_url}/v1/invoices",
                    body=body,
                    headers={
                        "Content-Type": "application/json",
                        **signed_headers(secret, body, msg_id=webhook_id),
                    },
                )
                status = response.status
            except urllib3.exceptions.HTTPError:
                status = 0
            with lock:
                report.answers[status] += 1
            if status == 202:
                keys = {
                    f"{item['orderId']}#{item['invoiceType']}"
                    for item in json.loads(response.data)["invoices"]
                }
                with lock:
                    accepted.update(keys)
                return
            if status not in _RESEND_STATUSES and status != 0:
                return
            time.sleep(min(5.0, 0.2 * 2**attempt))

    with ThreadPoolExecutor(config.senders, thread_name_prefix="erp") as erp:
        list(erp.map(send, webhooks))
    return accepted


def _settle(
    pipeline: LocalPipeline, accepted: set[str], config: ChaosConfig, report: ChaosReport, progress: Any
) -> None:
    """Wait until every accepted key is final in the ledger or its message is dead-lettered."""
    dynamodb, sqs = pipeline.dynamodb(observer=True), pipeline.sqs(observer=True)
    stack = pipeline.stack
    assert stack is not None
    deadline = time.monotonic() + config.settle_timeout_seconds
    last_change = time.monotonic()
    last: tuple[Any, ...] = ()
    while True:
        statuses = _ledger(dynamodb, stack.table_name)
        dead = _dead_lettered(sqs, stack.dead_letter_queue_url)
        open_keys = sorted(key for key in accepted if statuses.get(key) not in FINAL and key not in dead)
        now = time.monotonic()
        if (snapshot := (tuple(sorted(statuses.items())), len(dead))) != last:
            last, last_change = snapshot, now
        # Stalled: nothing moved for longer than a lost message takes to return and be retried.
        if not open_keys or now > deadline or now - last_change > config.stall_seconds:
            break
        if progress is not None:
            print(
                f"settling: {len(open_keys)} open, e.g. {open_keys[:3]} | {pipeline.tally().line()}",
                file=progress,
            )
        time.sleep(5)
    report.final = sum(1 for key in accepted if statuses.get(key) in FINAL)
    report.invoiced = sum(1 for key in accepted if statuses.get(key) == "INVOICED")
    report.rejected = sum(1 for key in accepted if statuses.get(key) == "REJECTED")
    report.dead_lettered = len(dead & accepted)
    report.not_final = open_keys


def _ledger(dynamodb: Any, table: str) -> dict[str, str]:
    statuses: dict[str, str] = {}
    pages = dynamodb.get_paginator("scan").paginate(
        TableName=table,
        ProjectionExpression="pk, #status",
        ExpressionAttributeNames={"#status": "status"},
    )
    for page in pages:
        for item in page.get("Items", []):
            if "status" in item:
                statuses[item["pk"]["S"]] = item["status"]["S"]
    return statuses


_dead_seen: dict[str, set[str]] = {}


def _dead_lettered(sqs: Any, queue_url: str) -> set[str]:
    """Invoice keys of messages on the dead-letter queue (peeked: made visible again at once)."""
    keys = _dead_seen.setdefault(queue_url, set())
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=30).get(
            "Messages", []
        )
        if not messages:
            return set(keys)
        for message in messages:
            invoice = json.loads(message["Body"]).get("invoice", {})
            keys.add(f"{invoice.get('orderId')}#{invoice.get('invoiceType')}")


def _count_fynd(
    fynd: SimulatorControl,
    plan: list[dict[str, object]],
    pipeline: LocalPipeline,
    output: _Watching,
    report: ChaosReport,
) -> None:
    calls = fynd.calls()
    report.fynd_calls = len(calls)
    lost_kinds = {"commit_then_drop", "latency_beyond", "unconfirmed"}
    killed = {
        order_id
        for function in pipeline.functions.values()
        if isinstance(function, IsolatedFunction)
        for order_ids in function.tally.killed_after_fynd
        for order_id in order_ids
    }
    invoiced_by: dict[str, str] = {}
    resent: set[str] = set()
    for call in calls:
        fault = plan[call.seq - 1] if call.seq <= len(plan) else NO_FAULT
        kind = _fault_name(fault)
        report.fynd_faults[kind] += 1
        for outcome in call.outcomes:
            order_id = outcome.order_id
            if outcome.code is None:
                invoiced_by[order_id] = kind if kind in lost_kinds else "answered"
            elif outcome.code == "IN453":
                report.in453 += 1
                if order_id in invoiced_by:
                    resent.add(order_id)
    report.sent_twice = len(resent)
    late = _relay_ambiguous(output)
    for order_id in sorted(resent):
        if invoiced_by[order_id] in lost_kinds:
            report.sent_twice_after_dropped_answer += 1
        elif order_id in killed:
            report.sent_twice_after_killed_dispatcher += 1
        elif order_id in late:
            report.sent_twice_after_client_timeout += 1
        else:
            report.sent_twice_unexplained.append(order_id)


def _fault_name(fault: dict[str, object]) -> str:
    if fault is NO_FAULT:
        return "none"
    if fault is UNCONFIRMED_2XX_FAULT:
        return "unconfirmed"
    if fault["kind"] == "latency":
        return "latency_beyond"
    if fault["kind"] == "status":
        return f"status_{fault['status']}"
    return str(fault["kind"])


def _relay_ambiguous(output: _Watching) -> set[str]:
    """Order ids the dispatcher itself logged as retried after an ambiguous Fynd outcome."""
    return {key.split("#", 1)[0] for key in output.ambiguous_keys}


def pipeline_schedules(pipeline: LocalPipeline) -> list[str]:
    """Names of the functions the template schedules (a reconciler, once merged)."""
    stack = pipeline.stack
    assert stack is not None
    return [logical_id for logical_id in stack.function_ids() if stack.function_schedules(logical_id)]


def _count_runtime(pipeline: LocalPipeline, report: ChaosReport) -> None:
    for function in pipeline.functions.values():
        if isinstance(function, IsolatedFunction):
            report.cold_starts += function.tally.cold_starts
            report.timed_out_invocations += function.tally.timed_out
            report.killed_dispatchers += len(function.tally.killed_after_fynd)
    if pipeline.fault_layer is not None:
        report.aws_faults = dict(vars(pipeline.fault_layer.counts))
    if pipeline.consumer is not None:
        report.aws_faults["redelivered"] = pipeline.consumer.tally().redelivered
        report.failed_batches = pipeline.consumer.tally().failed_batches
    assert DISPATCH in pipeline.functions
