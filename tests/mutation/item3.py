"""The property test alone kills each mutant of issue 18 item 3 (tests/mutation/item3/*.patch).

    .venv/bin/python tests/mutation/item3.py

For each patch: apply it to src/functions/relay/domain/dispatch.py, run only
tests/unit/test_delivery_properties.py, expect it to fail, and restore the file (always, even
on Ctrl-C). The unpatched test must pass first. Exits 1 if any mutant survives.

The four mutants undo rules the dispatcher states in its docstring:
1. a back-off meeting several copies holds only the first and acknowledges the rest;
2. a copy of an invoice another worker holds is acknowledged when it is not the holder's own;
3. a record outage waits only for the outage back-off, not the lease;
4. a lost lease acknowledges a retry's message.
"""

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGET = ROOT / "src" / "functions" / "relay" / "domain" / "dispatch.py"
PATCHES = sorted(Path(__file__).with_name("item3").glob("*.patch"))
TEST = ["tests/unit/test_delivery_properties.py"]


def property_test_passes() -> tuple[bool, float, str]:
    started = time.monotonic()
    run = subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "pytest"),
            "-p",
            "no:randomly",
            "-q",
            "--numprocesses",
            "0",
            "-x",
            *TEST,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    failed = [line for line in run.stdout.splitlines() if line.startswith(("E ", "FAILED"))]
    return run.returncode == 0, time.monotonic() - started, (failed[0] if failed else "")[:160]


def main() -> int:
    original = TARGET.read_text()
    for patch in PATCHES:  # each applies to today's dispatch.py, or nothing runs
        subprocess.run(["git", "apply", "--check", str(patch)], cwd=ROOT, check=True)
    passed, seconds, _ = property_test_passes()
    print(f"unpatched: {'passes' if passed else 'FAILS'} ({seconds:.0f} s)")
    if not passed:
        return 1
    survivors = []
    for patch in PATCHES:
        try:
            subprocess.run(["git", "apply", str(patch)], cwd=ROOT, check=True)
            passed, seconds, why = property_test_passes()
        finally:
            TARGET.write_text(original)
        print(f"{patch.stem}: {'SURVIVES' if passed else 'killed'} ({seconds:.0f} s) {why}")
        if passed:
            survivors.append(patch.stem)
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
