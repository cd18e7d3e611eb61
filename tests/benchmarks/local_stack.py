"""The relay and the naive peer measured through the local stack (`make run`'s pipeline).

Proxies sit between the functions and their services: one in front of moto's DynamoDB
(AWS_ENDPOINT_URL_DYNAMODB; it can add latency and it counts requests by operation), one in
front of moto's SQS for the functions and the event source (counting), one in front of the
Fynd simulator (Fynd's latency). The local runtime runs the relay's functions in this process,
one invocation at a time.
"""

import json
import os
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import boto3
import urllib3
from latency_proxy import Exchange, LatencyProxy, sequential_round_trips

from factories import invoice_dict
from fynd_simulator import DEFAULT_PASSWORD, DEFAULT_USERNAME, FyndSimulator
from relay_local.event_source import SqsEventSource
from relay_local.http_api import LocalHttpApi
from relay_local.identity import REGION
from relay_local.lambda_context import LambdaFunction
from relay_local.lambda_events import sqs_record
from relay_local.pipeline import DISPATCH, LocalPipeline, PipelineConfig
from relay_local.signing import new_secret, signed_headers
from relay_local.stack import EventSourceConfig

IGNORED = {"GetQueueAttributes"}
"""The tally's own reads, not the functions' work."""


def by_operation(exchanges: list[Exchange]) -> Counter[str]:
    return Counter(exchange.operation for exchange in exchanges if exchange.operation not in IGNORED)


def per_invoice(counts: Counter[str], invoices: int) -> dict[str, float]:
    return {operation: round(n / invoices, 3) for operation, n in sorted(counts.items())}


class MinimalIngest:
    """The floor for ingest latency: a handler that only calls SQS SendMessage and answers 202."""

    def __init__(self, queue_url: str) -> None:
        self._queue_url = queue_url
        self._sqs: Any = None

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        if self._sqs is None:
            self._sqs = boto3.client("sqs")
        self._sqs.send_message(QueueUrl=self._queue_url, MessageBody=event.get("body") or "{}")
        return {"statusCode": 202, "body": ""}


class LocalBench:
    def __init__(self, log_file: Path) -> None:
        self.log_file = log_file
        self.secret = new_secret()
        self.simulator = FyndSimulator(username=DEFAULT_USERNAME, password=DEFAULT_PASSWORD)
        self.dynamodb_proxy = LatencyProxy("http://127.0.0.1:1")
        self.sqs_proxy = LatencyProxy("http://127.0.0.1:1")
        self.fynd_proxy: LatencyProxy | None = None
        self.http = urllib3.PoolManager(maxsize=4, retries=False, timeout=60)
        self.pipeline: LocalPipeline | None = None
        self.queued_before = 0
        self.retried_posts = 0
        """Invoices on the relay's queue before the throughput run (ingest latency's)."""

    def __enter__(self) -> "LocalBench":
        self.simulator.start()
        self.fynd_proxy = LatencyProxy(self.simulator.url).start()
        self.dynamodb_proxy.start()
        self.sqs_proxy.start()
        config = PipelineConfig(
            webhook_secret=self.secret,
            consume=False,
            fynd_base_url=self.fynd_proxy.url,
            environment={
                "AWS_ENDPOINT_URL_DYNAMODB": self.dynamodb_proxy.url,
                "AWS_ENDPOINT_URL_SQS": self.sqs_proxy.url,
            },
        )
        self.pipeline = LocalPipeline(config).start()
        self.dynamodb_proxy.upstream = self.sqs_proxy.upstream = self.pipeline.moto.url
        self.direct_sqs = self.pipeline.sqs()
        # The event source's and the tally's SQS requests go through the counting proxy too.
        counted = boto3.Session(
            aws_access_key_id="local",
            aws_secret_access_key="local",
            region_name=REGION,
        ).client("sqs", endpoint_url=self.sqs_proxy.url)
        self.pipeline.sqs = lambda **_: counted  # type: ignore[method-assign]
        return self

    def __exit__(self, *_: object) -> None:
        if self.pipeline is not None:
            self.pipeline.stop()
        for proxy in (self.dynamodb_proxy, self.sqs_proxy, self.fynd_proxy):
            if proxy is not None:
                proxy.stop()
        self.simulator.stop()

    @property
    def stack(self) -> Any:
        assert self.pipeline is not None
        assert self.pipeline.stack is not None
        return self.pipeline.stack

    def post(self, payload: Any, url: str | None = None) -> int:
        assert self.pipeline is not None
        body = json.dumps(payload)
        headers = {"Content-Type": "application/json", **signed_headers(self.secret, body)}
        target = url or self.pipeline.api_url
        return self.http.request("POST", f"{target}/v1/invoices", body=body, headers=headers).status

    def accept(self, payload: Any) -> None:
        """Post until 202, as an ERP retries a 5xx; moto under load can exceed ingest's AWS timeouts."""
        for _ in range(5):
            status = self.post(payload)
            if status == 202:
                return
            self.retried_posts += 1
            time.sleep(1)
        raise SystemExit(f"ingest answered {status} five times")

    def log_bytes(self) -> int:
        return self.log_file.stat().st_size if self.log_file.exists() else 0

    # ---- ingest latency ----
    def ingest_latency(self, requests: int = 200) -> dict[str, Any]:
        # Its own queue, so the dispatcher never meets these bodies.
        queue_url = self.direct_sqs.create_queue(QueueName="MinimalIngestQueue")["QueueUrl"]
        minimal = LocalHttpApi(
            LambdaFunction(name="MinimalIngest", handler=MinimalIngest(queue_url), timeout_seconds=10),
            [("POST", "/v1/invoices")],
        )
        minimal.start()
        self.queued_before += requests
        posts: dict[str, list[tuple[float, float]]] = {"relay": [], "sqs_only": []}
        refused: Counter[str] = Counter()
        self.dynamodb_proxy.taken()
        self.sqs_proxy.taken()
        log_before = self.log_bytes()
        try:
            for n in range(requests):
                # Alternate, so load changes hit both alike.
                for target, who in ((None, "relay"), (minimal.url, "sqs_only")):
                    started = time.perf_counter()
                    status = self.post(invoice_dict(f"LAT-{n:04}"), target)
                    posts[who].append((started, time.perf_counter()))
                    if status != 202:  # a 503 when moto overran ingest's AWS timeouts: timed, then resent
                        refused[who] += 1
                        if target is None:
                            self.accept(invoice_dict(f"LAT-{n:04}"))
        finally:
            minimal.stop()
        relay_log = self.log_bytes() - log_before
        dynamodb, sqs = self.dynamodb_proxy.taken(), self.sqs_proxy.taken()
        sqs_counts = by_operation(sqs)
        sqs_counts["SendMessage"] -= requests  # the minimal handler's
        total = {who: [(end - start) * 1000 for start, end in spans] for who, spans in posts.items()}
        # The AWS calls each POST waited for, measured at the proxies; what is left is the
        # handler's own time (signature, validation, logging, the local runtime's plumbing).
        waited = {who: _waited_ms(spans, dynamodb + sqs) for who, spans in posts.items()}
        own = {who: [t - w for t, w in zip(total[who], waited[who], strict=True)] for who in posts}
        aws_calls = {who: _calls_per_post(spans, dynamodb + sqs) for who, spans in posts.items()}
        return {
            "requests": requests,
            "answered_other_than_202": dict(refused),
            "relay_ms": _quantiles(total["relay"]),
            "sqs_only_ms": _quantiles(total["sqs_only"]),
            "p50_ratio": round(statistics.median(total["relay"]) / statistics.median(total["sqs_only"]), 2),
            "p99_ratio": round(_p99(total["relay"]) / _p99(total["sqs_only"]), 2),
            "aws_service_ms_p50_by_operation": {
                operation: round(statistics.median(times), 1)
                for operation, times in sorted(_service_times(dynamodb + sqs).items())
                if operation not in IGNORED
            },
            "aws_calls_per_post": aws_calls,
            "own_ms_excluding_aws_calls": {who: _quantiles(samples) for who, samples in own.items()},
            "own_p50_ratio": round(statistics.median(own["relay"]) / statistics.median(own["sqs_only"]), 2),
            "model_p50_ratio_at_8ms_per_aws_call": round(
                (statistics.median(own["relay"]) + 8 * aws_calls["relay"])
                / (statistics.median(own["sqs_only"]) + 8 * aws_calls["sqs_only"]),
                2,
            ),
            "ingest_requests_per_invoice_1_per_webhook": {
                "dynamodb": per_invoice(by_operation(dynamodb), requests),
                "sqs": per_invoice(+sqs_counts, requests),
            },
            "log_bytes_per_webhook": round(relay_log / requests),
        }

    # ---- the ledger's share of one batch ----
    def _queued_event(self, prefix: str, invoices: int) -> dict[str, Any]:
        """Ingest `invoices` in one webhook, then take exactly those messages off the queue."""
        self.accept([invoice_dict(f"{prefix}-{n:04}") for n in range(invoices)])
        arn = self.direct_sqs.get_queue_attributes(QueueUrl=self.stack.queue_url, AttributeNames=["QueueArn"])
        records: list[dict[str, Any]] = []
        while len(records) < invoices:
            messages = self.direct_sqs.receive_message(
                QueueUrl=self.stack.queue_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=1,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            records += [
                sqs_record(m, arn["Attributes"]["QueueArn"], REGION)
                for m in messages
                if f'"orderId":"{prefix}-' in m.get("Body", "")
            ]
        return {"Records": records}

    def _invoke_batch(self, event: dict[str, Any], ledger_delay: float) -> tuple[float, list[Exchange]]:
        assert self.pipeline is not None
        self.dynamodb_proxy.delay_seconds = ledger_delay
        self.dynamodb_proxy.taken()
        started = time.perf_counter()
        answer = self.pipeline.functions[DISPATCH].invoke(event)
        elapsed = time.perf_counter() - started
        self.dynamodb_proxy.delay_seconds = 0
        assert answer == {"batchItemFailures": []}, answer
        exchanges = self.dynamodb_proxy.taken()
        # What the event source does after a successful batch.
        records = event["Records"]
        for start in range(0, len(records), 10):
            self.direct_sqs.delete_message_batch(
                QueueUrl=self.stack.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": r["receiptHandle"]}
                    for i, r in enumerate(records[start : start + 10])
                ],
            )
        return elapsed, exchanges

    def ledger_share(self, delay: float = 0.008, fynd_delay: float = 0.2) -> dict[str, Any]:
        assert self.fynd_proxy is not None
        self.fynd_proxy.delay_seconds = fynd_delay
        self.pipeline.functions[DISPATCH].invoke({"Records": []})  # type: ignore[union-attr]
        self._invoke_batch(self._queued_event("WARM", 20), 0)  # the first invocation builds the clients
        # Alternate and keep the faster of two: moto slows as its table grows and load moves.
        without_runs, with_runs = [], []
        for round_ in range(2):
            without_runs.append(self._invoke_batch(self._queued_event(f"L0{round_}", 100), 0)[0])
            elapsed, exchanges = self._invoke_batch(self._queued_event(f"L8{round_}", 100), delay)
            with_runs.append(elapsed)
        without, with_delay = min(without_runs), min(with_runs)
        call_time, call_exchanges = self._invoke_batch(self._queued_event("C20", 20), delay)
        self.fynd_proxy.delay_seconds = 0
        added = with_delay - without
        return {
            "ledger_delay_ms": delay * 1000,
            "moto_dynamodb_request_ms_p50": round(
                statistics.median((e.ended - e.started) * 1000 for e in exchanges), 1
            ),
            "fynd_delay_ms": fynd_delay * 1000,
            "batch_100_seconds_without_delay": round(without, 3),
            "batch_100_seconds_with_delay": round(with_delay, 3),
            "ledger_adds_seconds": round(added, 3),
            "ledger_share_of_batch": round(added / with_delay, 3),
            "ledger_requests_100": dict(by_operation(exchanges)),
            "sequential_ledger_round_trips_100": sequential_round_trips(exchanges),
            "sequential_ledger_round_trips_20_order_call": sequential_round_trips(call_exchanges),
            "batch_20_seconds_with_delay": round(call_time, 3),
        }

    # ---- throughput through the local stack ----
    def relay_throughput(
        self, invoices: int = 1000, per_webhook: int = 100, fynd_delay: float = 0.2
    ) -> dict[str, Any]:
        assert self.pipeline is not None
        assert self.fynd_proxy is not None
        self.fynd_proxy.delay_seconds = fynd_delay
        self.dynamodb_proxy.taken()
        self.sqs_proxy.taken()
        log_before = self.log_bytes()
        started = time.perf_counter()
        for start in range(0, invoices, per_webhook):
            batch = [invoice_dict(f"BENCH-{n:05}") for n in range(start, start + per_webhook)]
            self.accept(batch)
        accepted = time.perf_counter() - started
        ingest_log = self.log_bytes() - log_before
        ingest_dynamodb = by_operation(self.dynamodb_proxy.taken())
        ingest_sqs = by_operation(self.sqs_proxy.taken())
        log_before = self.log_bytes()
        consumer = self.pipeline.start_consumer()
        started = time.perf_counter()
        _drain(consumer, invoices + self.queued_before)
        drained = time.perf_counter() - started
        consumer.stop()
        self.pipeline.consumer = None
        calls = [
            c for c in self.simulator.state.calls() if c.order_ids and c.order_ids[0].startswith("BENCH-")
        ]
        sizes = [len(c.order_ids) for c in calls]
        all_calls = [c for c in self.simulator.state.calls() if c.order_ids]
        dispatched = self.pipeline.tally().invoiced
        tally = consumer.tally()
        dynamodb = self.dynamodb_proxy.taken()
        event_source = self.stack.event_source(DISPATCH)
        limit = 20 * event_source.max_concurrency / fynd_delay
        return {
            "invoices": invoices,
            "per_webhook": per_webhook,
            "accept_seconds": round(accepted, 2),
            "drain_seconds": round(drained, 2),
            "invoices_drained": dispatched,
            "backlog_drained": tally.received,
            "invoices_per_second": round(tally.deleted / drained, 1),
            "limit_per_second": limit,
            "share_of_limit": round(tally.deleted / drained / limit, 3),
            "batches": tally.batches,
            "fynd_calls_bench": len(sizes),
            "orders_per_call_bench": round(statistics.mean(sizes), 2),
            "orders_per_call_all": round(statistics.mean(len(c.order_ids) for c in all_calls), 2),
            "ingest_requests_per_invoice_100_per_webhook": {
                "dynamodb": per_invoice(ingest_dynamodb, invoices),
                "sqs": per_invoice(ingest_sqs, invoices),
            },
            "ingest_log_bytes_per_webhook_of_100": round(ingest_log / (invoices / per_webhook)),
            "dispatch_requests_per_invoice": {
                "dynamodb": per_invoice(by_operation(dynamodb), tally.deleted),
                "sqs_incl_event_source": per_invoice(by_operation(self.sqs_proxy.taken()), tally.deleted),
            },
            "moto_dynamodb_request_ms_p50": round(
                statistics.median((e.ended - e.started) * 1000 for e in dynamodb), 1
            ),
            "dispatch_log_bytes_per_invoice": round((self.log_bytes() - log_before) / tally.deleted),
            "event_source": {
                "batch_size": event_source.batch_size,
                "window_seconds": event_source.batching_window_seconds,
                "max_concurrency": event_source.max_concurrency,
            },
        }

    # ---- the naive peer through the same stack ----
    def naive_peer(
        self, invoices: int = 100, fynd_delay: float = 0.2, concurrency: int = 1
    ) -> dict[str, Any]:
        assert self.pipeline is not None
        assert self.fynd_proxy is not None
        dynamodb = self.pipeline.dynamodb()
        if "NaivePeerIdempotency" not in dynamodb.list_tables()["TableNames"]:
            dynamodb.create_table(
                TableName="NaivePeerIdempotency",
                KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
            )
        os.environ.update({"NAIVE_FYND_USERNAME": DEFAULT_USERNAME, "NAIVE_FYND_PASSWORD": DEFAULT_PASSWORD})
        import naive_peer

        self.fynd_proxy.delay_seconds = fynd_delay
        prefix = f"NAIVE-C{concurrency}-"
        for start in range(0, invoices, 100):
            self.accept([invoice_dict(f"{prefix}{n:05}") for n in range(start, min(start + 100, invoices))])
        self.dynamodb_proxy.taken()
        self.sqs_proxy.taken()
        log_before = self.log_bytes()
        config = EventSourceConfig(
            queue_url=self.stack.queue_url,
            batch_size=10,
            batching_window_seconds=0,
            max_concurrency=concurrency,
            function_response_types=("ReportBatchItemFailures",),
        )
        function = LambdaFunction(name="NaivePeer", handler=naive_peer.lambda_handler, timeout_seconds=60)
        consumer = SqsEventSource(self.pipeline.sqs(), config, function)
        started = time.perf_counter()
        consumer.start()
        _drain(consumer, invoices)
        drained = time.perf_counter() - started
        consumer.stop()
        calls = [c for c in self.simulator.state.calls() if c.order_ids and c.order_ids[0].startswith(prefix)]
        tally = consumer.tally()
        return {
            "invoices": invoices,
            "max_concurrency": concurrency,
            "drain_seconds": round(drained, 2),
            "invoices_per_second": round(tally.deleted / drained, 2),
            "fynd_calls": len(calls),
            "orders_per_call": round(statistics.mean(len(c.order_ids) for c in calls), 2),
            "dispatch_requests_per_invoice": {
                "dynamodb": per_invoice(by_operation(self.dynamodb_proxy.taken()), tally.deleted),
                "sqs_incl_event_source": per_invoice(by_operation(self.sqs_proxy.taken()), tally.deleted),
            },
            "dispatch_log_bytes_per_invoice": round((self.log_bytes() - log_before) / tally.deleted),
            "batches": tally.batches,
        }


def _drain(consumer: SqsEventSource, messages: int, timeout: float = 240) -> None:
    """Wait until the event source has deleted `messages` (the batches succeeded), reading its
    own tally rather than scanning the ledger, which would load moto."""
    deadline = time.monotonic() + timeout
    while consumer.tally().deleted < messages:
        if time.monotonic() > deadline:
            raise SystemExit(
                f"only {consumer.tally().deleted} of {messages} messages done within {timeout} s"
            )
        time.sleep(0.2)


def _within(spans: list[tuple[float, float]], exchanges: list[Exchange]) -> list[list[Exchange]]:
    """The exchanges that started during each span (the POSTs ran one at a time)."""
    return [[e for e in exchanges if start <= e.started <= end] for start, end in spans]


def _waited_ms(spans: list[tuple[float, float]], exchanges: list[Exchange]) -> list[float]:
    """Per span, the time some AWS call of it was in flight (overlapping calls count once)."""
    waited = []
    for calls in _within(spans, exchanges):
        busy, reach = 0.0, float("-inf")
        for call in sorted(calls, key=lambda e: e.started):
            if call.ended > reach:
                busy += call.ended - max(call.started, reach)
                reach = call.ended
        waited.append(busy * 1000)
    return waited


def _calls_per_post(spans: list[tuple[float, float]], exchanges: list[Exchange]) -> float:
    return round(statistics.mean(sequential_round_trips(calls) for calls in _within(spans, exchanges)), 2)


def _service_times(exchanges: list[Exchange]) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {}
    for exchange in exchanges:
        times.setdefault(exchange.operation, []).append((exchange.ended - exchange.started) * 1000)
    return times


def _p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98]


def _quantiles(samples: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(samples), 1), "p99": round(_p99(samples), 1)}
