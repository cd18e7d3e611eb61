"""Breach 15: Ctrl-C or SIGTERM must stop `make run` at any moment, leaving nothing behind.

The hang was a signal handler that took a lock (Event.set) while the frame it interrupted
held it (Event.wait). Whether a stop hangs depends on where the signal lands, so these
tests stop many times at random moments, in three states: idle, busy (work flowing, locks
taken on several threads) and shutting down (more signals while stopping). Each stop must
end with exit 0 within a bound, no process of the run's session alive, no port bound.

- `test_..._drill_cleanly`: 200 stops of tests/integration/stop_drill.py, which starts in a
  tenth of a second and stops through the same relay_local.stopping code as `run`.
- `test_..._real_run`: the real `python -m relay_local run` (moto, simulator, worker
  processes), RELAY_REAL_STOPS times (6 in `make test`, 200 in `make chaos`).

The seed of each test's random moments is in its failure message; set RELAY_STOP_SEED to replay.
"""

import os
import random
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from test_local_run import _URL, LocalRun, port_is_free, session_processes, start_run

DRILL = Path(__file__).with_name("stop_drill.py")
TOOLS = Path(__file__).resolve().parents[2] / "src" / "tools"
STOP_BOUND_SECONDS = 10.0
"""The drill's stop is tenths of a second; anything near this bound is a hang."""
REAL_STOP_BOUND_SECONDS = 60.0
"""A real stop waits for batches in flight (each bounded by the dispatcher's 60 s timeout, far
less with fast retries) on a machine shared with other test workers."""
STATES = ("idle", "busy", "slow-stop")


def _seed() -> int:
    return int(os.environ.get("RELAY_STOP_SEED") or random.SystemRandom().randrange(2**32))


@dataclass(frozen=True)
class StopResult:
    state: str
    signals: tuple[str, ...]
    exit_code: int | None
    """None: still running after the bound (it was then killed)."""
    said_stopped: bool
    leftovers: tuple[int, ...]
    ports_bound: tuple[int, ...]
    last_lines: tuple[str, ...] = ()
    """The end of what it printed, kept for a stop that was not clean."""

    @property
    def clean(self) -> bool:
        return self.exit_code == 0 and self.said_stopped and not self.leftovers and not self.ports_bound


def _signals(chance: random.Random, count: int) -> list[signal.Signals]:
    return [chance.choice((signal.SIGINT, signal.SIGTERM)) for _ in range(count)]


def _wait_line(
    output: tuple[threading.Thread, list[str]], prefix: str, process: subprocess.Popen[str], timeout: float
) -> str | None:
    """The first line starting with `prefix`, once it is read; None if the process ends without
    one (its output read to the end first: a drill may print and exit at once) or in `timeout`."""
    reader, lines = output
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        exited = process.poll() is not None
        if exited:
            reader.join(timeout=deadline - time.monotonic())
        found = next((line for line in lines if line.startswith(prefix)), None)
        if found is not None or exited:
            return found
        time.sleep(0.005)
    return None


def _drill_stop(state: str, chance: random.Random, step: int | None = None) -> StopResult:
    process = subprocess.Popen(
        # -S: stdlib only, a third of the start-up time
        [sys.executable, "-S", str(DRILL), state, *([str(step)] if step is not None else [])],
        env={**os.environ, "PYTHONPATH": str(TOOLS)},
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a session of its own: what it leaves is visible
    )
    lines: list[str] = []
    assert process.stdout is not None
    stdout = process.stdout
    reader = threading.Thread(target=lambda: lines.extend(stdout), daemon=True)
    reader.start()
    # Starting is not what is bounded: a loaded machine may take long.
    ready = _wait_line((reader, lines), "ready", process, 120)
    assert ready is not None, f"drill did not start: {lines}"
    port = int(ready.split()[1])
    if step is not None:  # the drill signals itself
        sig = signal.SIGTERM if step % 2 == 0 else signal.SIGINT
        return _settle(process, f"step {step}", [sig], STOP_BOUND_SECONDS, (reader, lines), [port])
    sent = _signals(chance, 1 + (chance.randrange(1, 4) if state == "slow-stop" else 0))
    time.sleep(chance.uniform(0, 0.15))
    os.killpg(process.pid, sent[0])  # as a terminal's Ctrl-C or `kill -TERM -PGID` reaches it
    if state == "slow-stop":
        _wait_line((reader, lines), "stopping", process, STOP_BOUND_SECONDS)
        for signum in sent[1:]:
            time.sleep(chance.uniform(0, 0.1))
            try:
                os.killpg(process.pid, signum)
            except ProcessLookupError:
                break  # already gone
    return _settle(process, state, sent, STOP_BOUND_SECONDS, (reader, lines), [port])


def _settle(
    process: subprocess.Popen[str],
    state: str,
    sent: list[signal.Signals],
    bound: float,
    output: tuple[threading.Thread, list[str]],
    ports: list[int],
) -> StopResult:
    """How the stopped process ended. `output` is the thread reading its stdout and the lines
    read so far; the thread is waited for (end of file) before the last line is judged."""
    try:
        code: int | None = process.wait(timeout=bound)
    except subprocess.TimeoutExpired:
        code = None
    leftovers = session_processes(process.pid)
    for pid in leftovers:  # clean up after a failure, so one hang does not stall the others
        os.kill(pid, signal.SIGKILL)
    if code is None:
        process.wait()
    reader, lines = output
    reader.join(timeout=bound)  # every process that held the pipe is gone: it ends at once
    result = StopResult(
        state=state,
        signals=tuple(signum.name for signum in sent),
        exit_code=code,
        said_stopped="".join(lines).rstrip().endswith("stopped"),
        leftovers=tuple(leftovers),
        ports_bound=tuple(port for port in ports if not port_is_free(f"http://127.0.0.1:{port}")),
    )
    return result if result.clean else replace(result, last_lines=tuple(lines[-8:]))


def test_signals_at_random_moments_always_stop_the_drill_cleanly() -> None:
    # Given 200 stand-in runs, each stopped at a random moment by SIGINT or SIGTERM to its group,
    # in equal shares idle, busy, and shutting down with 1-3 more signals arriving meanwhile
    seed = _seed()
    chances = [random.Random(f"{seed}:{index}") for index in range(200)]
    # When each is stopped (four at a time)
    with ThreadPoolExecutor(4) as pool:
        results = list(
            pool.map(lambda index: _drill_stop(STATES[index % 3], chances[index]), range(len(chances)))
        )
    # Then every one exited 0 within the bound, said so, and left no process and no bound port
    unclean = [result for result in results if not result.clean]
    assert unclean == [], f"seed {seed}: {len(unclean)} of {len(results)} stops were not clean: {unclean[:5]}"
    assert {result.state for result in results} == set(STATES)


def test_a_signal_at_every_step_of_the_wait_loop_stops_the_drill_cleanly() -> None:
    # Given the drill, signalling itself at the 1st, 2nd, ... 120th line or call its main thread
    # executes in the wait loop (some dozen passes through it), so that a signal lands inside
    # every lock the loop takes; the old Event-based loop hangs at most of these steps
    steps = range(1, 121)
    # When each is run to its stop (four at a time)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda step: _drill_stop("idle", random.Random(step), step), steps))
    # Then every one exited 0 within the bound and left nothing behind
    unclean = [result for result in results if not result.clean]
    assert unclean == [], f"{len(unclean)} of {len(results)} stepped stops were not clean: {unclean[:5]}"


def _real_stop(state: str, chance: random.Random) -> StopResult:
    run = start_run()
    try:
        run.wait_for_output("Ctrl-C stops everything", timeout=120)
        urls = [run.wait_for_output(rf"{name} +{_URL}").group(1) for name in ("API", "Fynd", "AWS endpoint")]
        run.api_url = urls[0]
        feeding = threading.Event()
        feeder = threading.Thread(target=_feed, args=(run, feeding), daemon=True)
        if state == "busy":
            feeder.start()
            run.wait_for_output(r"received [1-9]", timeout=60)
        sent = _signals(chance, 1 + (chance.randrange(1, 4) if state == "slow-stop" else 0))
        time.sleep(chance.uniform(0, 1.5))
        os.killpg(run.process.pid, sent[0])
        if state == "slow-stop":
            run.wait_for_output("stopping:", timeout=REAL_STOP_BOUND_SECONDS)
            for signum in sent[1:]:
                time.sleep(chance.uniform(0, 0.5))
                if run.process.poll() is None:
                    os.killpg(run.process.pid, signum)
        result = _settle(
            run.process,
            state,
            sent,
            REAL_STOP_BOUND_SECONDS,
            (run.reader, run.output),
            [int(url.rsplit(":", 1)[1]) for url in urls],
        )
        feeding.set()
        return result
    finally:
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait()


def _feed(run: LocalRun, stop: threading.Event) -> None:
    """An ERP posting 10-invoice webhooks until told to stop or the run is gone."""
    batch = 0
    while not stop.is_set() and run.process.poll() is None:
        batch += 1
        invoices = [
            {"orderId": f"FY-STOP-{batch}-{n}", "invoiceNumber": f"INV-{batch}-{n}", "invoiceType": "sale"}
            for n in range(10)
        ]
        try:
            run.post(invoices)
        except Exception:
            return


def test_signals_at_random_moments_always_stop_the_real_run() -> None:
    # Given `python -m relay_local run` started RELAY_REAL_STOPS times, stopped at random moments
    # while idle, while invoices flow, and while shutting down (more signals meanwhile)
    count = int(os.environ.get("RELAY_REAL_STOPS") or 6)
    seed = _seed()
    chances = [random.Random(f"{seed}:{index}") for index in range(count)]
    # When each is stopped (two at a time: each is moto, a simulator and worker processes)
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda index: _real_stop(STATES[index % 3], chances[index]), range(count)))
    # Then every one exited 0 within the bound, printed "stopped", left no process and freed every port
    unclean = [result for result in results if not result.clean]
    assert unclean == [], f"seed {seed}: {len(unclean)} of {count} stops were not clean: {unclean[:5]}"
