"""The relay started whole on 127.0.0.1 for each test: moto in server mode with the template's
resources, the Fynd simulator, the HTTP API and the queue consumer, all over real HTTP."""

from collections import Counter
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from relay_client import FAST_RETRIES, RelayClient
from relay_local.pipeline import LocalPipeline, PipelineConfig
from relay_local.signing import new_secret


@pytest.fixture
def pipeline_config(request: pytest.FixtureRequest) -> PipelineConfig:
    """Parametrize indirectly with {"environment": ..., "parameters": ..., "consume": ...} to change the run."""
    overrides: dict[str, Any] = getattr(request, "param", {})
    return PipelineConfig(
        webhook_secret=new_secret(),
        environment={**FAST_RETRIES, **overrides.get("environment", {})},
        parameters=overrides.get("parameters", {}),
        consume=overrides.get("consume", True),
    )


@pytest.fixture
def aws_calls() -> Iterator[Counter[str]]:
    """Every AWS API call the relay's own clients make during the test, e.g. "dynamodb.UpdateItem"."""
    calls: Counter[str] = Counter()

    def count(event_name: str, **_: object) -> None:
        calls[event_name.removeprefix("before-call.")] += 1

    # The relay builds its clients lazily from the default session, after this fixture runs.
    session = boto3.setup_default_session() or boto3.DEFAULT_SESSION
    assert session is not None
    session.events.register("before-call", count)
    yield calls
    session.events.unregister("before-call", count)


@pytest.fixture
def relay(pipeline_config: PipelineConfig) -> Iterator[RelayClient]:
    with LocalPipeline(pipeline_config) as pipeline:
        yield RelayClient(pipeline, pipeline_config.webhook_secret)
