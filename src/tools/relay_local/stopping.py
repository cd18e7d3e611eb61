"""Stopping `make run` on Ctrl-C or SIGTERM, with a signal handler that can never block.

Python runs a signal handler in the main thread, between two bytecodes of whatever that
thread was doing. If the handler takes a lock the interrupted code already holds, it waits
for itself forever. `threading.Event.set` takes the Event's lock, and `Event.wait(timeout)`
holds that same lock around its timed wait: a SIGTERM landing at the wrong moment hung
`make run` for good, and every further signal stacked another blocked handler (breach 15,
docs/reliability.md).

So the handler here only stores the signal number in a plain attribute, which takes no
lock. The main thread waits in `select` on a self-pipe that `signal.set_wakeup_fd` writes a
byte to as soon as a signal arrives (at C level, before any Python code runs), so the wait
ends at once instead of at the next tick. A second signal while stopping is recorded the
same way and changes nothing.

This module imports nothing heavy, so a small stand-in process can run the very same wait
loop: tests/integration/stop_drill.py does, to stop it hundreds of times quickly.
"""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignal:
    """SIGINT and SIGTERM recorded as a request to stop, from `install()` until `restore()`.

    Install and wait from the main thread only (Python delivers signals there)."""

    def __init__(self) -> None:
        self.received: int | None = None
        """The first stop signal received, if any. Set by the handler; read by the main thread."""
        self._read_fd = -1
        self._write_fd = -1
        self._previous: dict[int, Any] = {}
        self._previous_wakeup_fd = -1

    def install(self) -> StopSignal:
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)  # set_wakeup_fd requires it: a full pipe must not block
        self._previous_wakeup_fd = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._record)
        return self

    def restore(self) -> None:
        """Put back the handlers and wake-up fd found by `install` and close the pipe."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        if self._write_fd >= 0:
            signal.set_wakeup_fd(self._previous_wakeup_fd)
            os.close(self._read_fd)
            os.close(self._write_fd)
            self._read_fd = self._write_fd = -1

    def __enter__(self) -> StopSignal:
        return self.install()

    def __exit__(self, *_: object) -> None:
        self.restore()

    def ignore_further(self) -> None:
        """Everything is stopped: ignore later stop signals until the process has exited.

        Interpreter shutdown puts back the default handlers of signals that have a Python
        handler, so a Ctrl-C during the last second of teardown would kill a process that
        has already stopped cleanly, and it would exit -2 instead of 0. SIG_IGN is left alone."""
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)

    @property
    def requested(self) -> bool:
        return self.received is not None

    def _record(self, signum: int, _frame: FrameType | None) -> None:
        # No lock, no I/O, no call that could take one: the interrupted frame may hold any lock.
        if self.received is None:
            self.received = signum

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for a stop signal; True once one has been received."""
        deadline = time.monotonic() + timeout
        while not self.requested:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            # The handler has run by the time select returns (PEP 475 runs it on EINTR), and
            # the wake-up byte makes select return at once even if the signal came just before.
            select.select([self._read_fd], [], [], remaining)
            self._drain()
        return self.requested

    def _drain(self) -> None:
        try:
            while os.read(self._read_fd, 512):
                pass
        except BlockingIOError:
            pass


def tick_until_stopped(stop: StopSignal, tick: Callable[[], float], every: float) -> None:
    """Call `tick` every `every` seconds until a stop signal arrives.

    `tick` returns how long it took; the pause grows so that ticking never takes more
    than a fifth of the time (a big ledger takes a while to tally)."""
    interval = every
    while not stop.wait(interval):
        took = tick()
        interval = max(every, 5 * took)
