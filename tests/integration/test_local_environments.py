"""Lambda execution environments as worker processes (relay_local.environments): isolated,
concurrent, ended at the timeout, and all gone after stop()."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from relay_local.environments import EnvironmentExitedError, FunctionSpec, IsolatedFunction
from relay_local.lambda_context import FunctionTimedOutError

HERE = Path(__file__).resolve().parent
TOOLS = HERE.parents[1] / "src" / "tools"


def _function(handler: str, timeout: float = 5, **variables: str) -> IsolatedFunction:
    environment = {"PATH": os.environ["PATH"], "PYTHONPATH": f"{TOOLS}:{HERE}", **variables}
    return IsolatedFunction(FunctionSpec("TestFunction", f"local_handlers.{handler}", timeout, environment))


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def test_overlapping_invocations_run_at_once_each_in_its_own_environment() -> None:
    # Given a function whose module counts its invocations, and a variable only it is given
    os.environ["PARENT_ONLY"] = "the runtime's own"
    function = _function("remember", ONLY_MINE="yes").start()
    try:
        # When two invocations overlap (each holds for a while)
        answers: list[Any] = []
        threads = [
            threading.Thread(target=lambda: answers.append(function.invoke({"hold": 1.0}))) for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # Then they ran in two processes, each with module state of its own
        assert len({answer["pid"] for answer in answers}) == 2
        assert [answer["invocations"] for answer in answers] == [1, 1]
        # And each saw its function's variables and none of the runtime's
        assert {(answer["variable"], answer["leaked"]) for answer in answers} == {("yes", None)}
        # And a later invocation reuses a warm environment
        assert function.invoke({})["invocations"] == 2
        assert function.tally.cold_starts == 2
    finally:
        del os.environ["PARENT_ONLY"]
        pids = {answer["pid"] for answer in answers}
        function.stop()
    # And stop() ends every environment
    assert not any(_alive(pid) for pid in pids)


def test_an_invocation_past_its_timeout_fails_and_nothing_it_does_afterwards_happens(tmp_path: Path) -> None:
    # Given a function with a 1 s timeout whose handler sleeps 2 s, then writes a file
    function = _function("overrun", timeout=1).start()
    mark = tmp_path / "mark"
    try:
        # When it is invoked
        with pytest.raises(FunctionTimedOutError):
            function.invoke({"sleep": 2, "mark": str(mark)})
        # Then its environment was ended at the timeout: the file is never written
        function.invoke({"sleep": 0, "mark": str(tmp_path / "next")})  # a fresh environment serves on
        assert function.tally.timed_out == 1
        assert not mark.exists()
        assert (tmp_path / "next").exists()
    finally:
        function.stop()


def test_an_environment_that_dies_fails_its_invocation_and_is_replaced() -> None:
    # Given a handler that ends its process
    function = _function("exit_now").start()
    try:
        # When it is invoked twice
        for _ in range(2):
            with pytest.raises(EnvironmentExitedError):
                function.invoke({})
        # Then each invocation failed as Runtime.ExitError, and the dead environment was replaced
        assert function.tally.exited == 2
        assert function.tally.cold_starts == 2  # the one start() warmed, then its replacement
    finally:
        function.stop()


def test_a_runtime_killed_outright_leaves_no_execution_environment_behind() -> None:
    # Given a runtime process with a warm execution environment
    script = (
        "import os, sys, time\n"
        "from relay_local.environments import FunctionSpec, IsolatedFunction\n"
        f"spec = FunctionSpec('F', 'local_handlers.remember', 5, {{'PATH': os.environ['PATH'], 'PYTHONPATH': {str(TOOLS) + ':' + str(HERE)!r}}})\n"
        "function = IsolatedFunction(spec).start()\n"
        "print(function.invoke({})['pid'], flush=True)\n"
        "time.sleep(60)\n"
    )
    runtime = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": f"{TOOLS}:{HERE}"},
    )
    assert runtime.stdout is not None
    worker = int(runtime.stdout.readline())
    assert _alive(worker)
    # When the runtime is killed with SIGKILL (no chance to end its workers)
    runtime.kill()
    runtime.wait()
    # Then its execution environment ends by itself soon after
    deadline = time.monotonic() + 30
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(worker)
