"""One pace per Fynd credential, shared by every dispatcher instance: a DynamoDB item per
credential in a table of its own (FyndRateTable in template.yaml).

Why DynamoDB and why its own table: Fynd counts calls per credential, not per Lambda
instance, so the pace must live outside the instances; the ledger table already carries a
work index and its own alarms, and an item of another shape in it would be one more case for
every scan, list and migration. The limiter's table holds one small item per credential.

The rule (a reservation pace, close to GCRA): the item holds `nextAt` (the next free start,
epoch seconds), `intervalS` (seconds between starts: 1 / FyndCallsPerSecond) and `slowUntil`.

- `acquire` takes the slot at max(nextAt, now) if it comes by `not_after`, and moves nextAt on
  by one interval. While a backlog keeps nextAt ahead of now, that is one atomic UpdateItem
  (`SET nextAt = nextAt + intervalS`, conditioned on nextAt being between now and not_after):
  dispatchers racing for slots serialise on the item and none has to retry. When the
  credential was idle (nextAt behind now), or a slow spell is over, the slot is written with a
  condition on the values just seen, and a lost race is retried from the values DynamoDB
  returns with the refusal (ReturnValuesOnConditionCheckFailure), never with a second read.
- `throttled` (Fynd answered 429) puts nextAt at now + Retry-After and doubles the interval
  (at most MAX_SLOWDOWN times the configured one) until SLOW_SECONDS after that; the first
  dispatcher to report a 429 does it, the others see nextAt already past their Retry-After.
  After a quiet SLOW_SECONDS the pace goes back to the configured rate: Fynd's limit is not
  published, so the configured rate is the ceiling and a 429 the only signal below it.

Load: one write (about 1 WCU) per Fynd request while the pace is busy (a backlog); on an idle
pace two (the refused atomic step, then the write), three for a dispatcher that loses the
race to write it. At 20 to 50 calls a second, one hot item stays far below a partition's
1,000 WCU/s. Clocks of Lambda
instances agree to milliseconds, well inside one interval.

Every DynamoDB error leaves as RateLimiterUnavailableError (the dispatcher then sends
unpaced: Fynd's own 429 still holds it back).
"""

import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

from botocore.exceptions import BotoCoreError, ClientError

from relay.domain.errors import RateLimiterUnavailableError
from relay.domain.ports import Reservation

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

SLOW_SECONDS = 60.0
"""How long a pace slowed by a 429 stays slow after its Retry-After."""
SLOW_FACTOR = 2.0
MAX_SLOWDOWN = 8.0
RACE_ATTEMPTS = 8
"""Rounds per request before giving up (each lost one means another dispatcher took a slot)."""

_CONFLICT = "ConditionalCheckFailedException"

type _State = tuple[float, float, float]
"""(nextAt, intervalS, slowUntil) as last seen."""


def _unavailable_is_typed[**P, R](method: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except (BotoCoreError, ClientError) as error:
            raise RateLimiterUnavailableError(
                f"Fynd rate limiter unavailable ({type(error).__name__})"
            ) from error

    return wrapper


class DynamoRateLimiter:
    def __init__(self, table_name: str, client: "DynamoDBClient", *, calls_per_second: float) -> None:
        if calls_per_second <= 0:
            raise ValueError("calls_per_second must be positive")
        self._table = table_name
        self._client = client
        self._interval = 1 / calls_per_second

    @_unavailable_is_typed
    def acquire(self, credential: str, *, now: float, not_after: float) -> Reservation:
        """The credential's next slot if it comes by `not_after` (module docstring)."""
        for _ in range(RACE_ATTEMPTS):
            granted, seen = self._next_slot(credential, now=now, not_after=not_after)
            if granted is not None:
                return Reservation(True, granted)
            next_at, interval, slow_until = seen or (now, self._interval, 0.0)
            if interval > self._interval and slow_until <= now:
                interval = self._interval  # a quiet spell after the last 429: back to the set pace
            start = max(next_at, now)
            if start > not_after:
                return Reservation(False, start)
            if seen is not None and next_at >= now and interval == seen[1]:
                continue  # busy again since the refusal: the atomic step serialises us
            won, _ = self._write(
                credential, seen, next_at=start + interval, interval=interval, slow_until=slow_until
            )
            if won:
                return Reservation(True, start)
            # Lost the race to set an idle pace: the winner left it busy, so the atomic step follows.
        raise RateLimiterUnavailableError("Fynd rate limiter: too many lost races")

    def _next_slot(
        self, credential: str, *, now: float, not_after: float
    ) -> tuple[float | None, "_State | None"]:
        """The atomic step while the pace is busy: (the slot taken, None), or (None, the state seen)."""
        try:
            answer = self._client.update_item(
                TableName=self._table,
                Key={"pk": {"S": credential}},
                UpdateExpression="SET nextAt = nextAt + intervalS",
                ConditionExpression="nextAt BETWEEN :now AND :latest AND (intervalS <= :base OR slowUntil > :now)",
                ExpressionAttributeValues={
                    ":now": _n(now),
                    ":latest": _n(not_after),
                    ":base": _n(self._interval),
                },
                ReturnValues="UPDATED_OLD",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            if error.response["Error"]["Code"] != _CONFLICT:
                raise
            return None, _state(cast("Mapping[str, Any] | None", error.response.get("Item")))
        return float(answer["Attributes"]["nextAt"]["N"]), None

    @_unavailable_is_typed
    def throttled(self, credential: str, *, now: float, retry_after: float) -> None:
        """Fynd answered 429: no slot before now + retry_after; the pace halves for a while."""
        until = now + retry_after
        item = self._client.get_item(
            TableName=self._table, Key={"pk": {"S": credential}}, ConsistentRead=True
        )
        seen = _state(item.get("Item"))
        for _ in range(RACE_ATTEMPTS):
            next_at, interval, _slow = seen or (now, self._interval, 0.0)
            if next_at >= until:
                return  # another dispatcher already answered this 429
            slower = min(self._interval * MAX_SLOWDOWN, interval * SLOW_FACTOR)
            won, seen = self._write(
                credential, seen, next_at=until, interval=slower, slow_until=until + SLOW_SECONDS
            )
            if won:
                return
        raise RateLimiterUnavailableError("Fynd rate limiter: too many lost races")

    def _write(
        self,
        credential: str,
        seen: _State | None,
        *,
        next_at: float,
        interval: float,
        slow_until: float,
    ) -> tuple[bool, "_State | None"]:
        """Write the item if it still holds `seen`: (True, None), or (False, the state that won)."""
        values: dict[str, Any] = {":next": _n(next_at), ":interval": _n(interval), ":slow": _n(slow_until)}
        if seen is None:
            condition = "attribute_not_exists(pk)"
        else:
            condition = "nextAt = :seen_next AND intervalS = :seen_interval"
            values |= {":seen_next": _n(seen[0]), ":seen_interval": _n(seen[1])}
        try:
            self._client.update_item(
                TableName=self._table,
                Key={"pk": {"S": credential}},
                UpdateExpression="SET nextAt = :next, intervalS = :interval, slowUntil = :slow",
                ConditionExpression=condition,
                ExpressionAttributeValues=values,
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            if error.response["Error"]["Code"] != _CONFLICT:
                raise
            return False, _state(cast("Mapping[str, Any] | None", error.response.get("Item")))
        return True, None


def _n(value: float) -> dict[str, str]:
    return {"N": repr(float(value))}


def _state(item: Mapping[str, Any] | None) -> _State | None:
    """(nextAt, intervalS, slowUntil) of an item, or None when there is none (or it is partial)."""
    if not item or "nextAt" not in item or "intervalS" not in item:
        return None
    slow = item.get("slowUntil")
    return float(item["nextAt"]["N"]), float(item["intervalS"]["N"]), float(slow["N"]) if slow else 0.0
