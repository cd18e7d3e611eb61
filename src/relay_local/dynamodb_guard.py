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

What stays: a transaction still copies the whole table once per item, so accepting a
100-invoice webhook gets slower as the local ledger grows (see docs/local-run.md).
"""

import threading
from collections.abc import Iterable
from typing import Any

from moto.core.model_instances import reset_model_data

from relay_local.stack import MotoServer


def guard_dynamodb(moto: MotoServer) -> None:
    """Wrap the started moto server's WSGI app: DynamoDB one request at a time, no hoarding."""
    server = moto._server._server  # the werkzeug server ThreadedMotoServer started
    assert server is not None, "start moto first"
    app, lock = server.app, threading.Lock()

    def guarded(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if not str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith("DynamoDB_"):
            return app(environ, start_response)
        with lock:
            try:
                return list(app(environ, start_response))
            finally:
                reset_model_data()

    server.app = guarded
