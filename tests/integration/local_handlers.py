"""Handlers for the local runtime's own tests (test_local_environments.py), imported by its
worker processes: each keeps module state, so isolation shows."""

import os
import time
from pathlib import Path
from typing import Any

_invocations = 0


def remember(event: Any, context: Any) -> dict[str, Any]:
    """This environment's process, how many invocations it has served, and what it was told."""
    global _invocations
    _invocations += 1
    time.sleep(float(event.get("hold", 0)))
    return {
        "pid": os.getpid(),
        "invocations": _invocations,
        "variable": os.environ.get("ONLY_MINE"),
        "leaked": os.environ.get("PARENT_ONLY"),
        "remaining_ms": context.get_remaining_time_in_millis(),
    }


def overrun(event: Any, context: Any) -> str:
    """Sleeps past the timeout, then leaves a mark: the mark must never appear."""
    time.sleep(float(event["sleep"]))
    Path(event["mark"]).write_text("the handler went on after its timeout")
    return "done"


def exit_now(event: Any, context: Any) -> str:
    os._exit(3)
