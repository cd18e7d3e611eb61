"""The one Logger, Tracer and Metrics of the relay, created once and imported everywhere.

Service name and namespace come from POWERTOOLS_SERVICE_NAME and POWERTOOLS_METRICS_NAMESPACE,
which template.yaml sets. Metrics that need their own dimension (a reason, a code) go out as
single metrics so they never share a dimension set with the rest.
"""

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric

logger = Logger()
tracer = Tracer()
metrics = Metrics()


def count(name: str, value: float = 1, **dimensions: str) -> None:
    """Add `value` to the counter `name`, under extra dimensions when given."""
    if not dimensions:
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
        return
    with single_metric(
        name=name,
        unit=MetricUnit.Count,
        value=value,
        namespace=metrics.namespace,
        default_dimensions=metrics.default_dimensions,
    ) as metric:
        for dimension, dimension_value in dimensions.items():
            metric.add_dimension(name=dimension, value=dimension_value)


def measure(name: str, value: float, unit: MetricUnit) -> None:
    metrics.add_metric(name=name, unit=unit, value=value)
