"""Two behaviours of moto's DynamoDB that a long local run cannot live with, and the guard.

1. It is not thread-safe. TransactWriteItems deep-copies the table (to roll back on a
   failed condition) while a parallel UpdateItem writes it: "dictionary changed size
   during iteration", a 500, a retried ingest that overruns its timeout. Real DynamoDB
   serialises writes to an item; here every DynamoDB request simply waits its turn.
   SQS requests stay parallel: a long poll must never block the ledger.
2. It keeps every model object it ever made (`instances_tracked`, only read by its web
   dashboard), deep copies included. With the copy above made once per transaction item,
   a thousand invoices held over a gigabyte and slowed every garbage collection, and
   shutting down took seconds. The guard forgets them after each DynamoDB request.

3. TransactWriteItems deep-copies the whole table once per item of the transaction, to
   roll back on failure: a 100-invoice webhook copied the ledger a hundred times and
   passed ingest's 10 s timeout once the table held a few thousand entries. The guard
   lets each DynamoDB request copy a table once; the rollback restores the same state.
   This one stands in for the `copy` module moto's DynamoDB models use, which is why
   pyproject.toml pins moto to the range it was tested with.

The guard is WSGI middleware in front of moto's public application (`MotoServer.wrap`).
"""

import copy
import threading
from collections.abc import Iterable
from typing import Any, cast

import moto.dynamodb.models as dynamodb_models
from moto.core.model_instances import reset_model_data
from moto.dynamodb.models.table import Table

from relay_local.stack import MotoServer


def guard_dynamodb(moto: MotoServer) -> None:
    """Put the guard in front of moto's WSGI app: DynamoDB one request at a time, no hoarding."""
    moto.wrap(_guard)


def _guard(app: Any) -> Any:
    lock = threading.Lock()

    def guarded(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if not str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith("DynamoDB_"):
            return cast(Iterable[bytes], app(environ, start_response))
        with lock:
            dynamodb_models.copy = _TablesCopiedOnce()  # type: ignore[attr-defined,assignment]
            try:
                return list(app(environ, start_response))
            finally:
                dynamodb_models.copy = copy  # type: ignore[attr-defined]
                reset_model_data()

    return guarded


class _TablesCopiedOnce:
    """Stands in for the `copy` module inside moto's DynamoDB backend for one request: a table
    is deep-copied once however many transaction items name it; everything else as usual."""

    def __init__(self) -> None:
        self._tables: dict[int, Table] = {}

    def deepcopy(self, value: Any, memo: dict[int, Any] | None = None) -> Any:
        if isinstance(value, Table):
            if id(value) not in self._tables:
                self._tables[id(value)] = copy.deepcopy(value, memo)
            return self._tables[id(value)]
        return copy.deepcopy(value, memo)
