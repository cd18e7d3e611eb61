"""Lambda execution environments as worker processes: concurrent, isolated, killable at the timeout.

Lambda runs each execution environment in a process of its own: one invocation at a time,
its own module state (the dispatcher's lease owner, cached clients and secrets, Powertools'
metric set), its own environment variables. It adds environments when invocations overlap,
keeps them warm between invocations, and ends one whose invocation overran its Timeout, so
nothing the handler would have done afterwards happens.

`IsolatedFunction` does the same with relay_local.worker processes. It has the same
`name`, `timeout_seconds`, `new_context()` and `invoke(event)` as the in-process
`LambdaFunction`, so the HTTP API and the queue consumer use either. Invocations run in
parallel, each in an idle environment or a new one (a cold start, which does not count
against the timeout). An invocation that overruns is failed and its process killed; one
whose process dies (`RELAY_LOCAL_FAULT_KILL_AFTER_FYND`, or a crash) is failed the same way.

Each worker is started in a process group of its own: a Ctrl-C at the terminal or a
SIGTERM to `make run`'s group reaches the parent only, which finishes the batches in flight
and then ends every worker (`stop()`), so no process is left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from relay_local import invocation
from relay_local.identity import REGION
from relay_local.lambda_context import (
    FunctionTimedOutError,
    LambdaContext,
    LambdaFunction,
    ResponseNotSerializableError,
)

INIT_TIMEOUT_SECONDS = 30.0
"""Lambda allows 10 s of init; a shared 2-core machine importing boto3 and Powertools needs more."""
_STOP_GRACE_SECONDS = 5.0


class FunctionError(RuntimeError):
    """The handler raised; `error_type` is the exception's class name, as Lambda reports it."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


class RuntimeStoppedError(FunctionError):
    """The local runtime is stopping: no new invocation starts (Runtime.Stopped)."""


class FunctionInitError(FunctionError):
    """The handler could not be imported in a new execution environment (Runtime.ImportModuleError)."""


class EnvironmentExitedError(FunctionError):
    """The execution environment's process ended during the invocation (Runtime.ExitError)."""


@dataclass(frozen=True)
class FunctionSpec:
    """What an execution environment is made from: the template's handler, limits and variables."""

    name: str
    handler: str
    timeout_seconds: float
    environment: Mapping[str, str]
    """The process's whole environment: the function's variables, nothing of the parent's."""
    memory_limit_in_mb: int = 512
    region: str = REGION


@dataclass
class EnvironmentTally:
    """Counters since start, for tests and the chaos report."""

    cold_starts: int = 0
    timed_out: int = 0
    exited: int = 0
    killed_after_fynd: list[list[str]] = field(default_factory=list)
    """Order ids of each call whose answer a killed dispatcher never recorded."""


class ExecutionEnvironment:
    """One worker process, one invocation at a time."""

    def __init__(self, spec: FunctionSpec) -> None:
        self.spec = spec
        read_fd, write_fd = os.pipe()
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-u", "-m", "relay_local.worker", spec.handler, str(write_fd)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dict(spec.environment),
            pass_fds=(write_fd,),
            process_group=0,  # signals to make run's group are the parent's to handle
        )
        os.close(write_fd)
        self._channel = read_fd
        self._buffer = b""
        self.current: invocation.Invocation | None = None
        """The invocation running (or last run) here: what its log lines are labelled with."""
        self._logs = threading.Thread(target=self._forward_logs, name=f"{spec.name}-logs", daemon=True)
        self._logs.start()

    def wait_ready(self) -> None:
        message = self._receive(time.monotonic() + INIT_TIMEOUT_SECONDS)
        if message is None or "ready" not in message:
            self.kill()
            error = (message or {}).get("initError") or {}
            raise FunctionInitError(
                str(error.get("errorType", "Runtime.Unknown")),
                f"{self.spec.name}: {error.get('errorMessage', 'the execution environment did not start')}",
            )

    def invoke(self, event: Any, context: LambdaContext, tally: EnvironmentTally) -> dict[str, Any] | None:
        """The worker's answer message, or None when it overran (then it has been killed)."""
        assert self.process.stdin is not None
        request = {
            "event": event,
            "context": {
                name: getattr(context, name)
                for name in (
                    "function_name",
                    "invoked_function_arn",
                    "memory_limit_in_mb",
                    "log_group_name",
                    "log_stream_name",
                    "aws_request_id",
                )
            },
            "remaining_seconds": max(0.0, context.deadline_monotonic - time.monotonic()),
        }
        try:
            self.process.stdin.write(json.dumps(request).encode() + b"\n")
            self.process.stdin.flush()
        except OSError:
            return {"errorType": "Runtime.ExitError", "errorMessage": "execution environment has exited"}
        while True:
            message = self._receive(context.deadline_monotonic)
            if message is None and time.monotonic() >= context.deadline_monotonic:
                self.kill()
                return None
            if message is None:
                self.process.wait()
                return {
                    "errorType": "Runtime.ExitError",
                    "errorMessage": f"execution environment exited with {self.process.returncode}",
                }
            if "killedAfterFynd" in message:
                tally.killed_after_fynd.append(list(message["killedAfterFynd"]))
                continue
            return message

    def end_input(self) -> None:
        """No more invocations: the worker exits once its current one (if any) is answered."""
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):  # the worker is gone already
                self.process.stdin.close()

    def close(self) -> None:
        """End the worker: end of input, then a kill if it does not go within the grace time."""
        self.end_input()
        try:
            self.process.wait(_STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            self.kill()
        self._finish()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self._finish()

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def _finish(self) -> None:
        if self._logs is not threading.current_thread():
            self._logs.join(_STOP_GRACE_SECONDS)
        if self._channel >= 0:
            os.close(self._channel)
            self._channel = -1
        self.end_input()

    def _receive(self, deadline: float) -> dict[str, Any] | None:
        """The next message on the channel; None at the deadline or when the worker is gone."""
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._channel < 0:
                return None
            readable, _, _ = select.select([self._channel], [], [], remaining)
            if not readable:
                continue
            chunk = os.read(self._channel, 65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        return message

    def _forward_logs(self) -> None:
        """The worker's stdout is its log stream: each line to this process's stdout, labelled."""
        stream: IO[bytes] | None = self.process.stdout
        assert stream is not None
        for raw in stream:
            invocation.set_current(self.current)
            sys.stdout.write(raw.decode(errors="replace"))
        invocation.set_current(None)
        stream.close()


class IsolatedFunction:
    """A function of the template, invoked in execution environments of its own (see module doc)."""

    def __init__(self, spec: FunctionSpec) -> None:
        self.spec = spec
        self._clock = LambdaFunction(
            name=spec.name,
            handler=lambda _event, _context: None,
            timeout_seconds=spec.timeout_seconds,
            memory_limit_in_mb=spec.memory_limit_in_mb,
            region=spec.region,
        )
        self._lock = threading.Lock()
        self._idle: list[ExecutionEnvironment] = []
        self._all: set[ExecutionEnvironment] = set()
        self._stopped = False
        self.tally = EnvironmentTally()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def timeout_seconds(self) -> float:
        return self.spec.timeout_seconds

    def new_context(self) -> LambdaContext:
        return self._clock.new_context()

    def start(self) -> IsolatedFunction:
        """Start one environment now, so a handler that cannot be imported fails the start."""
        self._release(self._new_environment())
        return self

    def stop(self) -> None:
        """End every environment. Call after the invokers have stopped (API, consumer, schedules)."""
        with self._lock:
            self._stopped = True
            environments = list(self._all)
            self._all.clear()
            self._idle.clear()
        for environment in environments:
            environment.end_input()
        for environment in environments:
            environment.close()

    def invoke(self, event: dict[str, Any]) -> Any:
        """As LambdaFunction.invoke: the JSON answer, or FunctionError, FunctionTimedOutError,
        ResponseNotSerializableError."""
        environment = self._acquire()
        context = self.new_context()
        environment.current = invocation.invocation_of(self.name, event, context.aws_request_id)
        try:
            message = environment.invoke(event, context, self.tally)
        except BaseException:
            self._discard(environment, kill=True)
            raise
        if message is None:
            self._discard(environment, kill=False)
            with self._lock:
                self.tally.timed_out += 1
            raise FunctionTimedOutError(
                f"{self.name} ran past its {self.timeout_seconds} s timeout (request {context.aws_request_id});"
                " its execution environment was ended"
            )
        if message.get("errorType") == "Runtime.ExitError" or not environment.alive:
            self._discard(environment, kill=True)
            with self._lock:
                self.tally.exited += 1
        else:
            self._release(environment)
        if "answer" in message:
            return message["answer"]
        if message.get("errorType") == "Runtime.MarshalError":
            raise ResponseNotSerializableError(f"{self.name}: {message.get('errorMessage')}")
        error_type = str(message.get("errorType"))
        error_class = EnvironmentExitedError if error_type == "Runtime.ExitError" else FunctionError
        raise error_class(error_type, f"{self.name}: {message.get('errorMessage')}")

    def _acquire(self) -> ExecutionEnvironment:
        with self._lock:
            if self._stopped:
                raise RuntimeStoppedError("Runtime.Stopped", f"{self.name}: the local runtime is stopping")
            while self._idle:
                environment = self._idle.pop()
                if environment.alive:
                    return environment
                self._all.discard(environment)
        return self._new_environment()

    def _new_environment(self) -> ExecutionEnvironment:
        environment = ExecutionEnvironment(self.spec)
        with self._lock:
            self._all.add(environment)
            self.tally.cold_starts += 1
        try:
            environment.wait_ready()
        except FunctionError:
            self._discard(environment, kill=True)
            raise
        return environment

    def _release(self, environment: ExecutionEnvironment) -> None:
        with self._lock:
            if not self._stopped:
                self._idle.append(environment)
                return
        self._discard(environment, kill=False)

    def _discard(self, environment: ExecutionEnvironment, *, kill: bool) -> None:
        with self._lock:
            self._all.discard(environment)
        if kill and environment.alive:
            environment.kill()
        else:
            environment.close()
