"""Run a Lambda handler in-process the way the Lambda runtime would.

`LambdaFunction` is what the local HTTP API and queue consumer invoke: the template's
handler plus the limits Lambda enforces around it. Each `invoke` gets a fresh
`LambdaContext` (new `aws_request_id`, deadline = now + the function's Timeout), which is
what Powertools' `inject_lambda_context` and the idempotency utility read.

Two runtime rules are emulated because the deployed relay depends on them:
- a handler that overruns its Timeout has failed, whatever it returned (Lambda would have
  killed it; a thread cannot be killed, so the answer is discarded instead);
- the answer crosses a JSON boundary, so an answer that does not serialise is a function
  error (Lambda's `Runtime.MarshalError`), and the caller sees only JSON types.

Not emulated: per-function process isolation. Handlers share this process's environment
variables and its module state, where Lambda gives each execution environment its own
process and one invocation at a time. Functions that share state the handlers mutate per
invocation (the relay's Powertools metric set) pass one `shared_lock`, and their
invocations then run one at a time; the wait does not count against the timeout.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from relay_local.identity import ACCOUNT_ID, REGION

type Handler = Callable[[dict[str, Any], Any], Any]

# One "execution environment" per process: Lambda's log stream names one environment,
# not one invocation, so every context from this process shares its suffix.
_ENVIRONMENT_ID = uuid.uuid4().hex


class HandlerNotFoundError(ImportError):
    """The template's Handler string names no importable callable."""


class FunctionTimedOutError(RuntimeError):
    """The handler returned after its Timeout; Lambda would have ended it as a failure."""


class ResponseNotSerializableError(TypeError):
    """The handler's answer is not JSON; Lambda reports `Runtime.MarshalError`."""


@dataclass(frozen=True)
class LambdaContext:
    """The Lambda context object (python-context-object), as far as Powertools reads it."""

    function_name: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    log_group_name: str
    log_stream_name: str
    deadline_monotonic: float
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    identity: Any = None
    client_context: Any = None
    tenant_id: str | None = None

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the function's Timeout; 0 once it has passed."""
        return max(0, int((self.deadline_monotonic - time.monotonic()) * 1000))


class Function(Protocol):
    """What the local HTTP API, queue consumer and schedules invoke: a LambdaFunction (in this
    process) or a relay_local.environments.IsolatedFunction (in worker processes)."""

    @property
    def name(self) -> str: ...

    @property
    def timeout_seconds(self) -> float: ...

    def new_context(self) -> LambdaContext: ...

    def invoke(self, event: dict[str, Any]) -> Any: ...


@dataclass(frozen=True)
class LambdaFunction:
    """One function of the template: its handler and the limits Lambda applies to it."""

    name: str
    handler: Handler
    timeout_seconds: float
    memory_limit_in_mb: int = 512
    region: str = REGION
    account_id: str = ACCOUNT_ID
    shared_lock: threading.Lock | None = field(default=None, compare=False)
    """Held for each invocation, when given: one invocation at a time among the functions sharing it."""

    def new_context(self) -> LambdaContext:
        """A context for one invocation: fresh request id, deadline from now."""
        day = time.strftime("%Y/%m/%d", time.gmtime())
        return LambdaContext(
            function_name=self.name,
            invoked_function_arn=(f"arn:aws:lambda:{self.region}:{self.account_id}:function:{self.name}"),
            memory_limit_in_mb=self.memory_limit_in_mb,
            log_group_name=f"/aws/lambda/{self.name}",
            log_stream_name=f"{day}/[$LATEST]{_ENVIRONMENT_ID}",
            deadline_monotonic=time.monotonic() + self.timeout_seconds,
        )

    def invoke(self, event: dict[str, Any]) -> Any:
        """Call the handler once and return its answer as Lambda would deliver it.

        Raises whatever the handler raises, `FunctionTimedOutError` when it overran its
        Timeout, and `ResponseNotSerializableError` when its answer is not JSON.
        """
        with self.shared_lock or contextlib.nullcontext():
            context = self.new_context()
            answer = self.handler(event, context)
        if time.monotonic() > context.deadline_monotonic:
            raise FunctionTimedOutError(
                f"{self.name} ran past its {self.timeout_seconds} s timeout "
                f"(request {context.aws_request_id})"
            )
        try:
            return json.loads(json.dumps(answer))
        except (TypeError, ValueError) as error:
            raise ResponseNotSerializableError(
                f"{self.name} returned a value that is not JSON: {error}"
            ) from error


def load_handler(handler: str) -> Handler:
    """Import the callable a template `Handler` names, e.g. `relay.handlers.ingest.lambda_handler`.

    Importing runs the module's top level, exactly as Lambda's cold start does, so any
    import-time failure surfaces here and not on the first request.
    """
    module_name, _, attribute = handler.rpartition(".")
    if not module_name or not attribute:
        raise HandlerNotFoundError(f"Handler {handler!r} is not of the form 'module.function'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise HandlerNotFoundError(f"Handler {handler!r}: {error}") from error
    function = getattr(module, attribute, None)
    if not callable(function):
        raise HandlerNotFoundError(f"Handler {handler!r}: {module_name} has no callable {attribute}")
    return function  # type: ignore[no-any-return]
