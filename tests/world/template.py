"""Every setting the world uses, read from template.yaml, so the model follows the template.

Parameters come from their defaults, overridable (`--param Name=Value` in `make scale`);
timeouts, the event source, the queue, the reconciler's schedule and the alarms come from the
resources. A setting the template does not have yet (a parameter another change adds) falls
back to the figure given here and the report says so.
"""

import re
from dataclasses import dataclass, field
from typing import Any

from relay_local.stack import load_template


@dataclass(frozen=True)
class Alarm:
    name: str
    metrics: tuple[str, ...]
    """Every MetricName the alarm reads (a metric-math alarm sums several)."""
    threshold: float
    period_seconds: int


@dataclass
class TemplateFigures:
    parameters: dict[str, str]
    ingest_timeout: float
    ingest_reserved_concurrency: int
    dispatch_timeout: float
    reconcile_timeout: float
    reconcile_period_seconds: float
    batch_size: int
    batching_window_seconds: float
    max_concurrency: int
    visibility_timeout: float
    retention_seconds: float
    max_receive_count: int
    api_rate: float
    api_burst: float
    reconcile_after_minutes: float
    too_early_deadline_seconds: float
    indexes: tuple[str, ...] = ("ByStatus",)
    """The ledger's GSIs as deployed with these parameters."""
    alarms: list[Alarm] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def read_template(overrides: dict[str, str] | None = None) -> TemplateFigures:
    template = load_template()
    parameters = {name: str(spec.get("Default", "")) for name, spec in template["Parameters"].items()}
    parameters.update(overrides or {})
    resources = template["Resources"]

    def value(node: Any) -> Any:
        if isinstance(node, dict) and "Ref" in node and node["Ref"] in parameters:
            return parameters[node["Ref"]]
        return node

    def function(name: str) -> dict[str, Any]:
        return dict(resources[name]["Properties"])

    ingest, dispatch, reconcile = (
        function(name) for name in ("IngestFunction", "DispatchFunction", "ReconcileFunction")
    )
    source = next(event["Properties"] for event in dispatch["Events"].values() if event.get("Type") == "SQS")
    schedule = next(
        event["Properties"]["Schedule"]
        for event in reconcile["Events"].values()
        if event.get("Type") == "Schedule"
    )
    queue = resources["InvoiceQueue"]["Properties"]
    redrive = queue.get("RedrivePolicy", {})
    route = template.get("Globals", {}).get("HttpApi", {}).get("DefaultRouteSettings", {})
    missing: list[str] = []

    def parameter(name: str, fallback: str) -> str:
        if name not in parameters:
            missing.append(name)
            return fallback
        return parameters[name]

    return TemplateFigures(
        parameters=parameters,
        ingest_timeout=float(value(ingest.get("Timeout", 10))),
        ingest_reserved_concurrency=int(value(ingest.get("ReservedConcurrentExecutions", 1000))),
        dispatch_timeout=float(value(dispatch["Timeout"])),
        reconcile_timeout=float(value(reconcile["Timeout"])),
        reconcile_period_seconds=_rate_seconds(str(value(schedule))),
        batch_size=int(value(source["BatchSize"])),
        batching_window_seconds=float(value(source.get("MaximumBatchingWindowInSeconds", 0))),
        max_concurrency=int(value(source.get("ScalingConfig", {}).get("MaximumConcurrency", 1000))),
        visibility_timeout=float(value(queue["VisibilityTimeout"])),
        retention_seconds=float(value(queue.get("MessageRetentionPeriod", 345_600))),
        max_receive_count=int(value(redrive.get("maxReceiveCount", parameter("MaxReceiveCount", "8")))),
        api_rate=float(value(route.get("ThrottlingRateLimit", 10_000))),
        api_burst=float(value(route.get("ThrottlingBurstLimit", 5_000))),
        reconcile_after_minutes=float(parameter("ReconcileAfterMinutes", "15")),
        too_early_deadline_seconds=float(parameter("TooEarlyDeadlineSeconds", "86400")),
        indexes=_indexes(resources["InvoiceLedgerTable"]["Properties"], parameters),
        alarms=_alarms(resources, value),
        missing=missing,
    )


def _indexes(table: dict[str, Any], parameters: dict[str, str]) -> tuple[str, ...]:
    """The GSIs the table has: plain ones, and ByStatus kept while LegacyByStatusIndex is true."""
    found: list[str] = []
    for index in table.get("GlobalSecondaryIndexes", []):
        if "IndexName" in index:
            found.append(index["IndexName"])
        elif "ByStatus" in repr(index) and parameters.get("LegacyByStatusIndex", "false") == "true":
            found.append("ByStatus")
    return tuple(found)


def _rate_seconds(expression: str) -> float:
    match = re.fullmatch(r"rate\((\d+) (minute|minutes|hour|hours)\)", expression)
    if match is None:
        raise ValueError(f"the model reads rate(N minutes) schedules only, not {expression!r}")
    return int(match.group(1)) * (60 if match.group(2).startswith("minute") else 3600)


def _alarms(resources: dict[str, Any], value: Any) -> list[Alarm]:
    alarms: list[Alarm] = []
    for name, resource in resources.items():
        if resource.get("Type") != "AWS::CloudWatch::Alarm":
            continue
        properties = resource["Properties"]
        names: list[str] = []
        periods: list[int] = []
        _collect(properties, names, periods)
        # Lambda's Errors and Throttles are per function: name them by the function they watch.
        for function in ("IngestFunction", "DispatchFunction", "ReconcileFunction"):
            if function in repr(properties.get("Dimensions", "")) + repr(properties.get("Metrics", "")):
                names = [f"{function}.{metric}" if metric in _PER_FUNCTION else metric for metric in names]
        alarms.append(
            Alarm(
                name,
                tuple(dict.fromkeys(names)),
                float(value(properties.get("Threshold", 0))),
                int(properties.get("Period", periods[0] if periods else 60)),
            )
        )
    return alarms


_PER_FUNCTION = frozenset({"Errors", "Throttles", "Duration"})


def _collect(node: Any, names: list[str], periods: list[int]) -> None:
    if isinstance(node, dict):
        for key, item in node.items():
            if key == "MetricName" and isinstance(item, str):
                names.append(item)
            elif key == "Period" and isinstance(item, int):
                periods.append(item)
            else:
                _collect(item, names, periods)
    elif isinstance(node, list):
        for item in node:
            _collect(item, names, periods)
