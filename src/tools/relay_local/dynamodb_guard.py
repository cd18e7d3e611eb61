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
   passed ingest's 10 s timeout once the table held a few thousand entries. Even one copy
   per transaction grows with the table (0.6 s at 6,000 items, every other DynamoDB
   request waiting behind it), so a 10,000-invoice chaos run slowed to a crawl. The guard
   makes each request copy a table once, and deep-copy only the items the transaction
   names: a transaction writes no other item, so those are all a rollback must restore;
   the others are shared with the live table. This one stands in for the `copy` module
   moto's DynamoDB models use, which is why pyproject.toml pins moto to the range it was
   tested with.

The guard is WSGI middleware in front of moto's public application (`MotoServer.wrap`).
"""

import copy
import io
import json
import threading
from collections.abc import Iterable, Mapping
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
            dynamodb_models.copy = _RollbackCopies(_named_items(environ))  # type: ignore[attr-defined,assignment]
            try:
                return list(app(environ, start_response))
            finally:
                dynamodb_models.copy = copy  # type: ignore[attr-defined]
                reset_model_data()

    return guarded


def _named_items(environ: dict[str, Any]) -> list[Mapping[str, Any]]:
    """The operations of a TransactWriteItems request (an empty list for any other request),
    read from its body, which is put back for moto to read."""
    if not str(environ.get("HTTP_X_AMZ_TARGET", "")).endswith(".TransactWriteItems"):
        return []
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    environ["wsgi.input"] = io.BytesIO(body)
    try:
        items = json.loads(body).get("TransactItems") or []
    except (ValueError, AttributeError):
        return []  # moto answers the malformed request itself
    return [operation for item in items if isinstance(item, dict) for operation in item.values()]


class _RollbackCopies:
    """Stands in for the `copy` module inside moto's DynamoDB backend for one request: a table
    is copied once however many transaction items name it, with deep copies of only the items
    the transaction names; everything else as usual."""

    def __init__(self, operations: list[Mapping[str, Any]]) -> None:
        self._operations = operations
        self._tables: dict[int, Table] = {}

    def deepcopy(self, value: Any, memo: dict[int, Any] | None = None) -> Any:
        if isinstance(value, Table):
            if id(value) not in self._tables:
                self._tables[id(value)] = self._for_rollback(value)
            return self._tables[id(value)]
        return copy.deepcopy(value, memo)

    def _for_rollback(self, table: Table) -> Table:
        named = {_hash_value(operation, table) for operation in self._operations}
        if not named or None in named:  # not a transaction, or one we cannot read: copy it all
            return copy.deepcopy(table)
        rollback = copy.copy(table)
        rollback.items = copy.copy(table.items)
        for hash_value in table.items:
            if hash_value.value in named:
                rollback.items[hash_value] = copy.deepcopy(table.items[hash_value])
        return rollback


def _hash_value(operation: Mapping[str, Any], table: Table) -> Any:
    """The hash key value (as moto's DynamoType.value holds it) an operation on `table` names;
    "" for an operation on another table, None when it cannot be read."""
    if operation.get("TableName") != table.name:
        return ""
    try:
        key = operation["Item"] if "Item" in operation else operation["Key"]
        (value,) = key[table.hash_key_attr].values()
    except (KeyError, TypeError, ValueError):
        return None
    return value
