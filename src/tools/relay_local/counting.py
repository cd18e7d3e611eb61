"""Counters that many threads add to, read as one consistent snapshot.

The event source counts its batches and messages, the fault layer the faults it injected;
both keep their counters in a frozen dataclass of ints held by a `Counters`.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


class Counters[T: DataclassInstance]:
    """A frozen dataclass of int counters, replaced whole under a lock on each addition."""

    def __init__(self, start: T) -> None:
        self._value = start
        self._lock = threading.Lock()

    def add(self, **deltas: int) -> None:
        """Add each delta (negative to take back) to the counter of that name."""
        with self._lock:
            current = self._value
            changed = {name: getattr(current, name) + delta for name, delta in deltas.items()}
            self._value = dataclasses.replace(current, **changed)

    def read(self) -> T:
        with self._lock:
            return self._value
