"""The scale world's shared Fynd pace (tests/scale/harness.py SlotCalendar): invocations run
out of order on the clock there, and overlapping dispatchers must still share one pace."""

from scale.harness import SlotCalendar


def test_a_dispatcher_run_later_takes_the_slots_an_earlier_run_left_free() -> None:
    # Given a pace of 10 starts a second, and one dispatcher (run first) that sent at 0 s and 1 s
    pace = SlotCalendar(10)
    assert pace.acquire("company", now=0.0, not_after=0.0).at == 0.0
    assert pace.acquire("company", now=1.0, not_after=1.0).at == 1.0

    # When another dispatcher whose requests come between them on the clock runs after it
    starts = [pace.acquire("company", now=0.0, not_after=5.0).at for _ in range(3)]

    # Then it takes the free slots from its own time on, not only those after the first's last
    assert starts == [0.1, 0.2, 0.30000000000000004]


def test_the_pace_holds_and_a_429_blocks_until_retry_after() -> None:
    # Given a pace of 10 a second, every slot of the first half second taken
    pace = SlotCalendar(10)
    for _ in range(5):
        assert pace.acquire("company", now=0.0, not_after=1.0).granted
    # Then the next start is at 0.5 s, and none is granted before it
    assert not pace.acquire("company", now=0.0, not_after=0.4).granted
    # And after a 429 at 1 s with Retry-After 1, no start before 2 s
    pace.throttled("company", now=1.0, retry_after=1.0)
    assert pace.acquire("company", now=1.0, not_after=10.0).at == 2.0
    # And another credential keeps its own pace
    assert pace.acquire("location-7", now=0.0, not_after=0.0).at == 0.0
