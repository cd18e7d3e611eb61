"""One Lambda execution environment: a process that imports a handler once and serves invocations.

Started by relay_local.environments as `python -m relay_local.worker HANDLER CHANNEL_FD`.
Like Lambda's runtime it imports the handler at start (the cold start: module state, clients
and caches are this process's own), then serves one invocation at a time, for as long as
its parent keeps it warm. Its environment variables are its function's alone.

The protocol, one JSON object per line:
- requests on stdin: `{"event": ..., "context": {...}, "remaining_seconds": 60.0}`;
- answers on the channel fd: first `{"ready": true}` (or `{"initError": ...}`), then one per
  request: `{"answer": ...}` or `{"errorType": ..., "errorMessage": ...}`.
stdout and stderr are the function's log stream; the parent shows them.

The parent enforces the timeout by killing this process, as Lambda ends an execution
environment whose invocation overran: whatever the handler would have done next never
happens. End of stdin ends the process, and so does the parent's death (a watchdog thread
sees the process reparented), so a runtime killed outright leaves no orphan.

One fault lives here because only this process can hit the moment it names:
`RELAY_LOCAL_FAULT_KILL_AFTER_FYND` (a probability) ends the process right after Fynd has
answered an Update Invoice call and before the dispatcher records anything, as a crash or
a timeout at that instant would. It says which orders it left unrecorded on the channel
first (`{"killedAfterFynd": [...]}`), so a chaos run can tell a resend it caused.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import threading
import time
import traceback
import warnings
from typing import IO, Any

from relay_local.lambda_context import LambdaContext, load_handler

KILL_AFTER_FYND = "RELAY_LOCAL_FAULT_KILL_AFTER_FYND"
FAULT_SEED = "RELAY_LOCAL_FAULT_SEED"
KILLED_EXIT_CODE = 137  # what a SIGKILL'd process reports


def main(argv: list[str]) -> int:
    handler_name, channel_fd = argv[0], int(argv[1])
    # The parent decides when this environment ends; a Ctrl-C meant for it must not cut an invocation.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # As in `make run`'s own process (relay_local.cli): an invocation that counted nothing (a
    # status query, a reconciler run that found nothing) makes Powertools warn on the terminal.
    warnings.filterwarnings("ignore", "No application metrics to publish", UserWarning)
    _end_with_parent(os.getppid())
    channel = os.fdopen(channel_fd, "w", encoding="utf-8")
    try:
        handler = load_handler(handler_name)
    except Exception as error:  # any import-time failure is the function's init error, as in Lambda
        traceback.print_exc()
        _send(channel, {"initError": {"errorType": type(error).__name__, "errorMessage": str(error)}})
        return 1
    _arm_kill_after_fynd(channel)
    _send(channel, {"ready": True})
    for line in sys.stdin:
        request = json.loads(line)
        context = LambdaContext(
            **request["context"], deadline_monotonic=time.monotonic() + request["remaining_seconds"]
        )
        _send(channel, _invoke(handler, request["event"], context))
    # Lambda freezes and discards an environment without a clean interpreter shutdown; so does
    # this one (tearing down boto3 and Powertools takes a second, which `make run`'s stop would wait).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _end_with_parent(parent: int) -> None:
    """End this process as soon as the runtime that started it is gone, even mid-invocation:
    a runtime killed with SIGKILL (or any signal it does not handle) leaves no orphan behind."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(KILLED_EXIT_CODE)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _invoke(handler: Any, event: Any, context: LambdaContext) -> dict[str, Any]:
    try:
        answer = handler(event, context)
    except Exception as error:  # the handler's failure is its invocation's answer, as in Lambda
        traceback.print_exc()
        return {"errorType": type(error).__name__, "errorMessage": str(error)}
    finally:
        sys.stdout.flush()
    try:
        json.dumps(answer)
    except (TypeError, ValueError) as error:
        return {"errorType": "Runtime.MarshalError", "errorMessage": f"answer is not JSON: {error}"}
    return {"answer": answer}


def _send(channel: IO[str], message: dict[str, Any]) -> None:
    channel.write(json.dumps(message) + "\n")
    channel.flush()


def _arm_kill_after_fynd(channel: IO[str]) -> None:
    probability = float(os.environ.get(KILL_AFTER_FYND) or 0)
    fynd_module = sys.modules.get("relay.adapters.fynd")
    if probability <= 0 or fynd_module is None:
        return
    seed = os.environ.get(FAULT_SEED)
    chance = random.Random(f"{seed}:{os.getpid()}" if seed else None)  # noqa: S311 - a fault, not a secret
    client = fynd_module.FyndClient
    update_invoices = client.update_invoices

    def answered_then_killed(self: Any, call: Any, *args: Any, **kwargs: Any) -> Any:
        receipt = update_invoices(self, call, *args, **kwargs)
        if chance.random() < probability:
            sys.stdout.flush()
            order_ids = [invoice.orderId for invoice in call.invoices]
            _send(channel, {"killedAfterFynd": order_ids})
            os._exit(KILLED_EXIT_CODE)
        return receipt

    client.update_invoices = answered_then_killed


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
