"""EventBridge schedules: functions with a `Schedule` event in template.yaml, invoked periodically.

Any function of the template with an enabled `Schedule` or `ScheduleV2` event whose
expression is `rate(N minutes|hours|days)` is invoked every N (or every
`period_override` seconds, for tests and `make chaos`, which cannot wait 15 minutes),
with the Scheduled Event payload EventBridge sends, or the event's `Input` when it has one.
The first run comes one period after start, as with EventBridge. A cron() expression is
reported once and not followed. A run that fails is logged; the next one comes on time.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

from relay_local.lambda_context import Function
from relay_local.lambda_events import scheduled_event
from relay_local.stack import Schedule

logger = logging.getLogger(__name__)


class LocalSchedules:
    def __init__(
        self, schedules: Sequence[tuple[Function, Schedule]], *, period_override: float | None = None
    ) -> None:
        self._schedules = list(schedules)
        self._period_override = period_override
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.runs: dict[str, int] = {}
        """Invocations made so far, by function name."""

    def start(self) -> None:
        self._stopping.clear()
        for function, schedule in self._schedules:
            period = self._period_override or schedule.period_seconds
            if period is None:
                logger.warning(
                    "%s: %s is not a rate(); not scheduled locally", function.name, schedule.expression
                )
                continue
            thread = threading.Thread(
                target=self._every,
                args=(function, schedule, period),
                name=f"{function.name}-schedule",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """No new runs; a run in progress finishes (bounded by its function's timeout)."""
        self._stopping.set()
        for thread in self._threads:
            thread.join()
        self._threads.clear()

    def _every(self, function: Function, schedule: Schedule, period: float) -> None:
        next_run = time.monotonic() + period
        while not self._stopping.wait(max(0.0, next_run - time.monotonic())):
            next_run += period
            self.runs[function.name] = self.runs.get(function.name, 0) + 1
            try:
                function.invoke(event_for(schedule))
            except Exception:  # a failed run is the function's; the schedule goes on
                logger.exception("%s: scheduled run failed", function.name)


def event_for(schedule: Schedule) -> dict[str, Any]:
    """What EventBridge sends for a scheduled rule: its Scheduled Event, or the rule's constant Input."""
    if schedule.input is not None:
        event: dict[str, Any] = json.loads(schedule.input)
        return event
    return scheduled_event(schedule.name, event_id=str(uuid.uuid4()), at=time.time())
