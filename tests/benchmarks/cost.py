"""The cost per 1 million invoices, from the counts and bytes `make bench` measured (docs/cost.md).

Prices: AWS public list prices for us-east-1 as known on 2025-06-01, written down from memory
because this machine has no internet; check them against the pricing pages before relying on
them. ap-south-1 (Mumbai), where Fynd sellers mostly run, lists most of these within ±10 %.
"""

from typing import Any

PRICES_DATE = "2025-06-01"
REGION = "us-east-1"
PRICES = {
    "lambda_gb_second_arm64": 0.0000133334,
    "lambda_request": 0.20 / 1e6,
    "sqs_request": 0.40 / 1e6,  # standard queue, per 64 KB chunk
    "dynamodb_wru": 0.625 / 1e6,  # on demand, since the November 2024 price cut
    "dynamodb_rru": 0.125 / 1e6,
    "http_api_request": 1.00 / 1e6,  # first 300 M a month, per 512 KB
    "logs_ingest_gb": 0.50,
    "xray_trace": 5.00 / 1e6,  # recorded traces
    "secrets_api_call": 0.05 / 10_000,
    "dynamodb_storage_gb_month": 0.25,
    "dynamodb_pitr_gb_month": 0.20,
}
MONTHLY = {
    "custom_metric": 0.30,
    "alarm": 0.10,
    "secret": 0.40,
    "kms_key": 1.00,
}
MEMORY_GB = 0.5  # template Globals MemorySize 512
PLATFORM_LOG_BYTES = 350
"""Lambda's own START, END and REPORT lines per invocation."""
ACCESS_LOG_BYTES = 400
"""The HTTP API's access log line per request (template.yaml's format, with CloudWatch's envelope)."""
STATE_ITEM_KB = 1
"""The ledger's state item: under 1 KB, so 1 write unit per write, on the table and on an index."""

# Capacity per invoice, for items under 1 KB (the ledger's state item, and the body item of
# the bench's small invoices; a body of k KB costs k units). Single-item writes: 1 WRU per
# request. The accept transaction writes each invoice's state item and body item (2 WRU
# each: transactions cost twice) whatever the number of requests; strongly consistent reads
# cost 1 RRU per item (BatchGetItem, when ingest reads: one item per invoice).
WRU_PER_REQUEST = {"UpdateItem": 1, "PutItem": 1, "DeleteItem": 1}
RRU_PER_REQUEST = {"GetItem": 1}


def ledger_write_units(body_kb: float, *, naive: bool = False) -> dict[str, float]:
    """Write units one invoice costs the ledger table and its ByStatus index, by step.

    DynamoDB bills each item write 1 unit per KB, rounded up, and a transaction twice. An index
    write costs the same per projected item (ByStatus projects ALL), and a write that changes an
    item's index key costs two: the old index entry deleted, the new one put. The relay's entry
    moves QUEUED → IN_PROGRESS → final, so it writes QUEUED in (1), moves to IN_PROGRESS (2) and
    leaves the index when INVOICED (1): 4 units. The naive peer shares ingest (the same accept
    transaction and QUEUED put) and leaves QUEUED for INVOICED once (1 delete), but writes its
    idempotency record twice (put, update).
    """
    body_units = max(1, -(-body_kb // 1))
    accept = 2 * (STATE_ITEM_KB + body_units)  # the state item and the body item, transactionally
    if naive:
        return {"accept": accept, "idempotency": 2, "ledger": 1, "index": 1 + 1}
    return {"accept": accept, "claim": 1, "record": 1, "index": 1 + 2 + 1}


def storage_gb_per_million(body_kb: float) -> float:
    """What a million invoices keep in the table while they live: the state item and the body
    item (kept 35 days), plus the index's copy of unfinished ones (gone once final)."""
    return 1e6 * (STATE_ITEM_KB + body_kb) / 1e6


def _dynamodb(per_invoice: dict[str, float], body_kb: float = 1) -> float:
    wru = sum(n * WRU_PER_REQUEST.get(op, 0) for op, n in per_invoice.items())
    rru = sum(n * RRU_PER_REQUEST.get(op, 0) for op, n in per_invoice.items())
    if per_invoice.get("TransactWriteItems"):
        wru += ledger_write_units(body_kb)["accept"]
    if per_invoice.get("BatchGetItem"):
        rru += 1
    return wru * PRICES["dynamodb_wru"] + rru * PRICES["dynamodb_rru"]


def estimate(
    *,
    invoices_per_webhook: int,
    ingest_dynamodb: dict[str, float],
    ingest_sqs: dict[str, float],
    ingest_seconds_per_webhook: float,
    ingest_log_bytes_per_webhook: float,
    dispatch_dynamodb: dict[str, float],
    dispatch_sqs: dict[str, float],
    dispatch_seconds_per_invoice: float,
    dispatch_invocations_per_invoice: float,
    dispatch_log_bytes_per_invoice: float,
    fynd_calls_per_invoice: float,
    index_write_units: float,
    traced_share: float = 1.0,
) -> dict[str, Any]:
    """Dollars per 1 million invoices by service, and Fynd calls per 1 million. `index_write_units`:
    what one invoice writes to the ByStatus index (`ledger_write_units`), which no request count shows."""
    n = 1e6
    webhooks = n / invoices_per_webhook
    ingest_invocations = webhooks
    dispatch_invocations = n * dispatch_invocations_per_invoice
    lambda_cost = (ingest_invocations + dispatch_invocations) * PRICES["lambda_request"] + (
        webhooks * ingest_seconds_per_webhook + n * dispatch_seconds_per_invoice
    ) * MEMORY_GB * PRICES["lambda_gb_second_arm64"]
    log_bytes = (
        webhooks * (ingest_log_bytes_per_webhook + PLATFORM_LOG_BYTES + ACCESS_LOG_BYTES)
        + n * dispatch_log_bytes_per_invoice
        + dispatch_invocations * PLATFORM_LOG_BYTES
    )
    lines = {
        "Lambda (requests + GB-s)": lambda_cost,
        "API Gateway HTTP API": webhooks * PRICES["http_api_request"],
        "SQS": n * (sum(ingest_sqs.values()) + sum(dispatch_sqs.values())) * PRICES["sqs_request"],
        "DynamoDB": n
        * (
            _dynamodb(ingest_dynamodb)
            + _dynamodb(dispatch_dynamodb)
            + index_write_units * PRICES["dynamodb_wru"]
        ),
        "CloudWatch Logs ingestion": log_bytes / 1e9 * PRICES["logs_ingest_gb"],
        "X-Ray traces": (ingest_invocations + dispatch_invocations) * traced_share * PRICES["xray_trace"],
    }
    lines = {name: round(dollars, 3) for name, dollars in lines.items()}
    largest = max(lines, key=lambda name: lines[name])
    return {
        "per_million_invoices_usd": lines,
        "total_usd": round(sum(lines.values()), 2),
        "largest_line": largest,
        "fynd_calls_per_million": round(n * fynd_calls_per_invoice),
        "log_mb_per_million": round(log_bytes / 1e6, 1),
    }


def alarm_metrics(template: dict[str, Any]) -> int:
    """CloudWatch bills an alarm per metric it reads: a metric-math alarm over five series is five."""
    total = 0
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::CloudWatch::Alarm":
            series = resource["Properties"].get("Metrics")
            total += sum(1 for query in series if "MetricStat" in query) if series else 1
    return total


def fixed_monthly(custom_metrics: int, alarms: int, secrets: int = 3, kms_keys: int = 1) -> float:
    """What the stack costs per month whatever the volume (metrics, alarm metrics, secrets, the
    topic's key)."""
    return round(
        custom_metrics * MONTHLY["custom_metric"]
        + alarms * MONTHLY["alarm"]
        + secrets * MONTHLY["secret"]
        + kms_keys * MONTHLY["kms_key"],
        2,
    )
