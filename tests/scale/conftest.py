"""The scale world wires the real code to its clock and meters by replacing module globals
(harness.py, `World._install_metrics`: the metrics, the pools, the log level). A process of
`make scale` ends with the run; a test worker goes on to other tests (pytest-xdist hands one
worker tests of every directory), so each test here puts them back."""

from collections.abc import Iterator

import pytest

import relay.domain.dispatch as dispatch_module
import relay.domain.intake as intake_module
import relay.domain.reconcile as reconcile_module
from relay.observability import logger

REPLACED = (
    (dispatch_module, "count"),
    (dispatch_module, "_pool"),
    (intake_module, "count"),
    (reconcile_module, "count"),
    (reconcile_module, "ThreadPoolExecutor"),
)
"""What the world replaces."""


@pytest.fixture(autouse=True)
def relay_as_it_was() -> Iterator[None]:
    saved = [(module, name, getattr(module, name)) for module, name in REPLACED]
    level = logger.log_level
    yield
    for module, name, value in saved:
        setattr(module, name, value)
    logger.setLevel(level)
