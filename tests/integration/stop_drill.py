"""A stand-in for `python -m relay_local run` that starts in a tenth of a second, to be stopped
hundreds of times (test_local_run_stops.py, breach 15).

It stops the way `run` does, through the very same code: relay_local.stopping's StopSignal
and tick loop. Around it, the parts that make a stop hard, without moto's import cost:
- a ThreadingHTTPServer on a free port (a port a stop must free);
- an execution-environment-like child process in a process group of its own, which only
  this process can end (a process a stop must not leave behind);
- with `busy`: client threads hammering the server and a tick that takes locks, so a signal
  lands while threads hold locks, as invoices flowing do;
- with `slow-stop`: a stop that takes a while, so more signals land while shutting down.

    python -S tests/integration/stop_drill.py idle|busy|slow-stop [STEP]   (PYTHONPATH=src/tools)

With STEP, the drill signals itself (SIGTERM if STEP is even, else SIGINT) at exactly the
STEP-th line or call the main thread executes inside the wait loop (sys.settrace), so a
signal lands at every point of the loop in turn, including inside whatever locks it takes.
That is how the old loop's hang shows every time rather than once in a while.
prints `ready PORT CHILD_PID`, then `stopping`, then `stopped`, and exits 0. It needs the
standard library and relay_local.stopping only, so `-S` (no site-packages) may skip the
virtual environment's start-up cost.
"""

import http.client
import queue
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

from relay_local.stopping import StopSignal, tick_until_stopped


class _Answer(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


def _signal_at_step(step: int) -> None:
    executed = 0
    signum = signal.SIGTERM if step % 2 == 0 else signal.SIGINT

    def trace(_frame: FrameType, event: str, _arg: object) -> object:
        nonlocal executed
        if event in ("call", "line"):
            executed += 1
            if executed == step:
                signal.raise_signal(signum)
        return trace

    sys.settrace(trace)  # type: ignore[arg-type]


def main(mode: str, step: int | None = None) -> int:
    stop = StopSignal().install()  # first, as `run` does
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    serving.start()
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE, process_group=0
    )
    done = threading.Event()
    work: queue.Queue[int] = queue.Queue()
    port = server.server_address[1]

    def client() -> None:
        while not done.is_set():
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/")
            work.put(len(connection.getresponse().read()))
            connection.close()

    def crunch() -> None:
        # Pure-Python work holding the GIL, as moto deep-copying a table does: the main thread
        # then loses the GIL in the middle of its wait, which is where the old handler hung.
        while not done.is_set():
            work.put(sum(range(20_000)))

    busy = mode == "busy"
    clients = [threading.Thread(target=client) for _ in range(2 if busy else 0)]
    clients += [threading.Thread(target=crunch) for _ in range(3 if busy else 0)]
    for thread in clients:
        thread.start()

    def tick() -> float:
        started = time.monotonic()
        while not work.empty():
            work.get_nowait()
        return time.monotonic() - started

    print(f"ready {server.server_address[1]} {child.pid}", flush=True)
    if step is not None:
        _signal_at_step(step)
    tick_until_stopped(stop, tick, every=0.005)
    sys.settrace(None)
    print("stopping", flush=True)
    done.set()
    for thread in clients:
        thread.join()
    if mode == "slow-stop":
        time.sleep(0.3)  # batches in flight finishing
    server.shutdown()
    serving.join()
    server.server_close()
    assert child.stdin is not None
    child.stdin.close()
    child.wait()
    print("stopped", flush=True)
    stop.ignore_further()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None))
