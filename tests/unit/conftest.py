"""Unit tests run with the network switched off: any socket connect fails the test. AWS is
in-process moto (no socket), with resources built from template.yaml's own properties."""

import io
import json
import socket
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from moto import mock_aws

import relay.domain.dispatch as dispatch_module
from contract.drivers import create_table
from relay.observability import logger

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

TABLE = "InvoiceLedgerTable"


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("unit tests must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


@pytest.fixture
def logged() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The relay's log lines so far, as the JSON documents CloudWatch receives (the on-call's view)."""
    stream = io.StringIO()
    handler = logger.registered_handler
    # Swapped, not setStream: that flushes the stream it replaces, which a runner may have closed.
    previous, handler.stream = handler.stream, stream  # type: ignore[attr-defined]
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines() if line]
    handler.stream = previous  # type: ignore[attr-defined]


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, float, dict[str, str]]]:
    """Every metric the dispatcher counts, with its dimensions (a test module of another part of
    the relay defines its own `counted` for that part's metrics)."""
    seen: list[tuple[str, float, dict[str, str]]] = []

    def count(name: str, value: float = 1, **dimensions: str) -> None:
        seen.append((name, value, dimensions))

    monkeypatch.setattr(dispatch_module, "count", count)
    return seen


@pytest.fixture
def dynamodb(monkeypatch: pytest.MonkeyPatch) -> Iterator["DynamoDBClient"]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    with mock_aws():
        client = boto3.client("dynamodb", region_name="ap-south-1")
        create_table(client)
        yield client
