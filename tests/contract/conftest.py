"""One contract, two implementations: every test here runs against the in-memory fake
(tests/fakes.py) and against the adapter on moto, in-process, with the resources built from
template.yaml's own properties (tests/contract/drivers.py). A fake that drifts from its adapter
(issue 18: the ledger fake forgot claim fields DynamoDB kept) fails here at once. Where moto is
looser than AWS, the fake applies AWS's documented rule, named in tests/unit/test_fake_strictness.py.
"""

import socket
from collections.abc import Iterator

import pytest
from drivers import LedgerUnderTest, QueueUnderTest, dynamodb_ledger, fake_ledger, fake_queue, sqs_queue
from moto import mock_aws


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("contract tests must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    with mock_aws():
        yield


@pytest.fixture(params=["fake", "dynamodb"])
def under_test(request: pytest.FixtureRequest) -> LedgerUnderTest:
    if request.param == "fake":
        return fake_ledger()
    request.getfixturevalue("aws")
    return dynamodb_ledger()


@pytest.fixture(params=["fake", "sqs"])
def queue_under_test(request: pytest.FixtureRequest) -> QueueUnderTest:
    if request.param == "fake":
        return fake_queue()
    request.getfixturevalue("aws")
    return sqs_queue()
