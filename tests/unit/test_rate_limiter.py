"""The RateLimiter port's behaviour, one suite run against the in-memory fake and the DynamoDB
adapter on moto (FyndRateTable built from template.yaml), so the two cannot drift."""

import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

import pytest

from fakes import InMemoryRateLimiter
from relay.adapters.rate import MAX_SLOWDOWN, SLOW_SECONDS, DynamoRateLimiter
from relay.domain.errors import RateLimiterUnavailableError
from relay.domain.ports import RateLimiter
from relay_local.stack import load_template

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

RATE = 20.0
STEP = 1 / RATE
NOW = 1_800_000_000.0
TABLE = "FyndRateTable"


def near(expected: Any) -> Any:
    """Equal to a microsecond: epoch seconds are too large for approx's relative tolerance."""
    return pytest.approx(expected, abs=1e-6)


def create_rate_table(client: Any) -> None:
    """The pace table as template.yaml declares it."""
    props = load_template()["Resources"][TABLE]["Properties"]
    client.create_table(
        TableName=TABLE,
        AttributeDefinitions=props["AttributeDefinitions"],
        KeySchema=props["KeySchema"],
        BillingMode=props["BillingMode"],
    )


type Limiters = Callable[[], RateLimiter]
"""Each call gives another handle on one shared pace (another dispatcher instance)."""


@pytest.fixture(params=["fake", "dynamodb"])
def limiters(request: pytest.FixtureRequest) -> Iterator[Limiters]:
    if request.param == "fake":
        shared = InMemoryRateLimiter(RATE)
        yield lambda: shared
        return
    client: DynamoDBClient = request.getfixturevalue("dynamodb")
    create_rate_table(client)
    atomic = Atomic(client)
    yield lambda: DynamoRateLimiter(TABLE, cast("DynamoDBClient", atomic), calls_per_second=RATE)


class Atomic:
    """A client whose requests run one at a time: DynamoDB applies each conditional write
    atomically, in-process moto does not when threads share it."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return method(*args, **kwargs)

        return call


def starts(limiter: RateLimiter, count: int, *, now: float = NOW, credential: str = "company") -> list[float]:
    found = []
    for _ in range(count):
        slot = limiter.acquire(credential, now=now, not_after=now + 60)
        assert slot.granted
        found.append(slot.at)
    return found


def test_slots_are_one_interval_apart_across_dispatchers(limiters: Limiters) -> None:
    # Given two dispatcher instances on one credential, asking at the same moment
    one, two = limiters(), limiters()
    # When each takes slots in turn
    got = [starts(limiter, 1)[0] for limiter in (one, two, one, two)]
    # Then the slots are the credential's, one interval apart, the first at once
    assert got == near([NOW, NOW + STEP, NOW + 2 * STEP, NOW + 3 * STEP])


def test_no_slot_by_the_time_asked_takes_nothing(limiters: Limiters) -> None:
    limiter = limiters()
    starts(limiter, 3)
    # When a dispatcher needs a slot by now + 0.05 s but the next is at now + 0.15 s
    refused = limiter.acquire("company", now=NOW, not_after=NOW + STEP)
    # Then it is refused with the next slot's time, and that slot is still free for the next asker
    assert (refused.granted, refused.at) == (False, near(NOW + 3 * STEP))
    assert starts(limiter, 1) == near([NOW + 3 * STEP])


def test_an_idle_credential_starts_at_once_without_a_burst(limiters: Limiters) -> None:
    limiter = limiters()
    starts(limiter, 2)
    # When it is asked again a minute later
    later = NOW + 60
    # Then the first slot is at once and the next one interval after: idle time saves no credit
    assert starts(limiter, 2, now=later) == near([later, later + STEP])


def test_a_429_holds_every_dispatcher_and_slows_the_pace(limiters: Limiters) -> None:
    one, two = limiters(), limiters()
    starts(one, 1)
    # When Fynd answers 429 with Retry-After 30 s
    one.throttled("company", now=NOW, retry_after=30)
    # Then no slot comes before 30 s have passed, for any instance, and slots are twice as far apart
    assert starts(two, 2) == near([NOW + 30, NOW + 30 + 2 * STEP])


def test_a_429_reported_twice_slows_the_pace_once(limiters: Limiters) -> None:
    one, two = limiters(), limiters()
    one.throttled("company", now=NOW, retry_after=30)
    # When another instance reports a 429 of the same moment with a shorter Retry-After
    two.throttled("company", now=NOW, retry_after=10)
    # Then the pace is halved once, not twice
    assert starts(one, 2) == near([NOW + 30, NOW + 30 + 2 * STEP])


def test_the_pace_slows_at_most_eightfold(limiters: Limiters) -> None:
    limiter = limiters()
    for n in range(6):
        limiter.throttled("company", now=NOW + n, retry_after=1 + 0.5 * n)
    first, second = starts(limiter, 2, now=NOW + 10)
    assert second - first == near(MAX_SLOWDOWN * STEP)


def test_the_pace_comes_back_after_a_quiet_spell(limiters: Limiters) -> None:
    limiter = limiters()
    limiter.throttled("company", now=NOW, retry_after=5)
    # When no 429 came for SLOW_SECONDS after the Retry-After
    quiet = NOW + 5 + SLOW_SECONDS + 1
    # Then slots are one (configured) interval apart again
    first, second = starts(limiter, 2, now=quiet)
    assert second - first == near(STEP)


def test_credentials_have_paces_of_their_own(limiters: Limiters) -> None:
    limiter = limiters()
    limiter.throttled("company", now=NOW, retry_after=30)
    assert starts(limiter, 1, credential="wh1-user") == near([NOW])


def test_an_unreachable_table_is_the_limiters_own_outage(dynamodb: Any) -> None:
    # Given a limiter whose table does not exist (DynamoDB answers ResourceNotFoundException)
    limiter = DynamoRateLimiter("no-such-table", dynamodb, calls_per_second=RATE)
    # Then both operations raise the port's error, not botocore's
    with pytest.raises(RateLimiterUnavailableError):
        limiter.acquire("company", now=NOW, not_after=NOW + 1)
    with pytest.raises(RateLimiterUnavailableError):
        limiter.throttled("company", now=NOW, retry_after=1)


def test_dispatchers_racing_for_an_idle_pace_all_get_a_slot_of_their_own(limiters: Limiters) -> None:
    # Given eight threads (eight calls of one invocation) asking an idle pace at once
    handles = [limiters() for _ in range(8)]
    got: list[float] = []
    lock = threading.Lock()

    def take(limiter: RateLimiter) -> None:
        slot = limiter.acquire("company", now=NOW, not_after=NOW + 60)
        assert slot.granted
        with lock:
            got.append(slot.at)

    threads = [threading.Thread(target=take, args=(handle,)) for handle in handles]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then each got a slot, one interval apart from the next, none lost to the race
    assert sorted(got) == near([NOW + n * STEP for n in range(8)])


class Racing:
    """A client on which, just before the first conditional write of an idle pace, another
    dispatcher takes a slot: the write is refused and the limiter must try again."""

    def __init__(self, client: Any, rival: Callable[[], object]) -> None:
        self._client = client
        self._rival: Callable[[], object] | None = rival

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def update_item(self, **request: Any) -> Any:
        if self._rival is not None and "nextAt = :next" in request["UpdateExpression"]:
            rival, self._rival = self._rival, None
            rival()
        return self._client.update_item(**request)


def test_a_lost_race_for_an_idle_pace_takes_the_next_slot(dynamodb: Any) -> None:
    # Given an idle credential, and a rival dispatcher that takes a slot in between our read
    # of the idle pace and our write
    create_rate_table(dynamodb)
    rival = DynamoRateLimiter(TABLE, dynamodb, calls_per_second=RATE)
    rival_slots: list[float] = []
    racing = Racing(dynamodb, lambda: rival_slots.append(starts(rival, 1)[0]))
    mine = DynamoRateLimiter(TABLE, cast("DynamoDBClient", racing), calls_per_second=RATE)
    # When we ask for a slot
    slot = mine.acquire("company", now=NOW, not_after=NOW + 60)
    # Then the rival has the first slot and we the next, not the same one
    assert rival_slots == near([NOW])
    assert (slot.granted, slot.at) == (True, near(NOW + STEP))
