"""Which function invocation is running on this thread: what the local log view labels lines with.

In Lambda each function has its own process, so the keys Powertools' Logger keeps for an
invocation (function_name, function_request_id, correlation_id) are that invocation's.
Here both functions share one process and one Logger, and invocations run in parallel
threads: a dispatcher line can carry the function name or the correlation id the last
ingest request set. A handler runs and logs on the thread that invoked it, so the thread
knows the truth; `traced` records it there for the duration of each invocation.

The correlation id recorded is the webhook's `webhook-id` header, which is what the
ingest function uses as its correlation id (relay.handlers.ingest.WEBHOOK_ID_PATH). The
dispatcher sets none, as in Lambda.
"""

import functools
import threading
from dataclasses import dataclass
from typing import Any

from relay_local.lambda_context import Handler

_current = threading.local()


@dataclass(frozen=True)
class Invocation:
    function: str
    request_id: str
    correlation_id: str | None


def current() -> Invocation | None:
    """The invocation running on the calling thread, if any."""
    invocation: Invocation | None = getattr(_current, "invocation", None)
    return invocation


def set_current(invocation: Invocation | None) -> None:
    """Label what the calling thread writes from now on (relay_local.environments forwards a
    worker process's log lines on a thread of its own)."""
    _current.invocation = invocation


def invocation_of(function_name: str, event: Any, request_id: str) -> Invocation:
    headers = event.get("headers") if isinstance(event, dict) else None
    webhook_id = headers.get("webhook-id") if isinstance(headers, dict) else None
    return Invocation(function_name, request_id, webhook_id)


def traced(function_name: str, handler: Handler) -> Handler:
    """`handler`, recording its invocation on the thread that runs it."""

    @functools.wraps(handler)
    def run(event: dict[str, Any], context: Any) -> Any:
        _current.invocation = invocation_of(function_name, event, str(context.aws_request_id))
        try:
            return handler(event, context)
        finally:
            _current.invocation = None

    return run
