"""The one Logger, Tracer and Metrics of the relay, created once and imported everywhere.

Service name and namespace come from POWERTOOLS_SERVICE_NAME and POWERTOOLS_METRICS_NAMESPACE,
which template.yaml sets. Metrics that need their own dimension (a reason, a code) go out as
single metrics so they never share a dimension set with the rest.

Tracing costs nothing at a cold start unless it is asked for. Lambda's active tracing
(template `Tracing: Active`) records every invocation and its init phase without any SDK in
the package. The X-Ray SDK (through Powertools' Tracer) is needed only for the relay's own
subsegments and annotations (the Fynd call, the webhook id) and for patched boto3 calls; it
costs about as much to import as boto3 itself and builds a second botocore session. So it is
imported on the first invocation only when `RELAY_XRAY_SDK` is true (template parameter
`XRaySdk`); otherwise `tracer` is a stand-in whose subsegments and annotations go nowhere.

The dispatcher counts from its worker threads too, and a metric line must reach CloudWatch
whole. Powertools prints an EMF line as two writes (the JSON, then its newline), so a log line
or another metric landing between them would join two documents into one line that CloudWatch
cannot parse, and both would be lost. Counting therefore takes the lock every log line is
written under (the Logger's handler lock): Metrics' own set, a plain dict, is guarded by it too.
"""

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

# Importing Tracer loads no SDK (Powertools imports it lazily); constructing one does.
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric

XRAY_SDK_VARIABLE = "RELAY_XRAY_SDK"
"""true: custom X-Ray subsegments through Powertools' Tracer; anything else: none (the default)."""

logger = Logger()
metrics = Metrics()


class _NoSubsegment:
    """What a subsegment is when the X-Ray SDK is off: it keeps nothing."""

    def put_annotation(self, key: str, value: Any) -> None:
        pass

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        pass


class _NoProvider:
    @contextmanager
    def in_subsegment(self, name: str) -> Iterator[_NoSubsegment]:
        yield _NoSubsegment()


class LazyTracer:
    """Powertools' Tracer, built on first use and only when `RELAY_XRAY_SDK` is true.

    It offers the part of Tracer the relay uses: `capture_lambda_handler`, `put_annotation`
    and `provider.in_subsegment`. The variable is read at the first invocation, never at import.
    """

    def __init__(self) -> None:
        self._tracer: Tracer | None = None
        self._decided = False

    def sdk(self) -> Tracer | None:
        """Powertools' Tracer when the X-Ray SDK is enabled, else None."""
        if not self._decided:
            if os.environ.get(XRAY_SDK_VARIABLE, "false").strip().lower() == "true":
                self._tracer = Tracer()
            self._decided = True
        return self._tracer

    @property
    def provider(self) -> Any:
        """The X-Ray recorder (`in_subsegment`), or one whose subsegments keep nothing."""
        tracer = self.sdk()
        return tracer.provider if tracer is not None else _NoProvider()

    def put_annotation(self, key: str, value: str) -> None:
        tracer = self.sdk()
        if tracer is not None:
            tracer.put_annotation(key, value)

    def capture_lambda_handler[**P, R](self, handler: Callable[P, R]) -> Callable[P, R]:
        """Tracer.capture_lambda_handler around `handler` when the SDK is on; `handler` as is otherwise."""
        captured: dict[int, Callable[P, R]] = {}

        @functools.wraps(handler)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            tracer = self.sdk()
            if tracer is None:
                return handler(*args, **kwargs)
            if id(tracer) not in captured:
                captured.clear()
                captured[id(tracer)] = tracer.capture_lambda_handler(handler)
            return captured[id(tracer)](*args, **kwargs)

        return run

    def forget(self) -> None:
        """Read the variable again at the next use (tests and the local runtime only)."""
        self._tracer = None
        self._decided = False


tracer = LazyTracer()


@contextmanager
def _writing() -> Iterator[None]:
    """Hold the lock every log line is written under (see the module doc)."""
    handler = logger.registered_handler
    handler.acquire()
    try:
        yield
    finally:
        handler.release()


def count(name: str, value: float = 1, **dimensions: str) -> None:
    """Add `value` to the counter `name`, under extra dimensions when given."""
    if not dimensions:
        measure(name, value, MetricUnit.Count)
        return
    with (
        _writing(),
        single_metric(
            name=name,
            unit=MetricUnit.Count,
            value=value,
            namespace=metrics.namespace,
            default_dimensions=metrics.default_dimensions,
        ) as metric,
    ):
        for dimension, dimension_value in dimensions.items():
            metric.add_dimension(name=dimension, value=dimension_value)


def measure(name: str, value: float, unit: MetricUnit) -> None:
    """Add `value` to the metric `name` (Powertools prints the set early when it reaches 100 values)."""
    with _writing():
        metrics.add_metric(name=name, unit=unit, value=value)
