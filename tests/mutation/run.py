"""`make mutate`: mutation testing (mutmut) of `src/functions/relay/domain` by the fast unit tests.

    .venv/bin/python tests/mutation/run.py [--modules dispatch policy ...] [--jobs 2] [--keep]
    .venv/bin/python tests/mutation/run.py --stage rest --keep --mutants "relay.domain.recovery.*"

Prints the score (killed / non-equivalent mutants), every surviving mutant that is not named
in tests/mutation/equivalent.txt, and exits 1 below --threshold (default 90%).

mutmut 3 names a module by its path from the working directory, and the relay is imported as
`relay` from `src/functions`, so the run happens in a staging copy (build/mutate) where the
package sits at the top: `relay/domain/...` there is `relay.domain...` at import. Nothing in the
repository is changed; mutmut's own files stay in build/mutate. Never part of `make test`.

Each mutant runs only the fast tests that cover its function (mutmut's stats run records which
tests call which function), stopping at the first failure: a killed mutant costs a few tests, a
surviving one every test that reaches it. `--mutants` runs the named mutants (globs, e.g. one
module) again in an existing stage, so a large domain can be measured module by module on one
stats run, and survivors checked again after new tests (copy them into the stage's tests/ and
mutants/tests/ first; a test file the stage's selection does not list needs a new stage).
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STAGE = ROOT / "build" / "mutate"
"""Where the staged copy and mutmut's results live (--stage NAME: build/mutate-NAME)."""
EQUIVALENT = Path(__file__).with_name("equivalent.txt")

MUTATE_EXAMPLES = 150
"""Examples of the stateful property test per mutant (`make test` runs the `ci` profile)."""

FAST_TESTS = [
    "tests/unit/test_batching_and_policy.py",
    "tests/unit/test_call_size.py",
    "tests/unit/test_delivery_properties.py",
    "tests/unit/test_dispatcher.py",
    "tests/unit/test_erpnext_webhook.py",
    "tests/unit/test_fynd_confirmation.py",
    "tests/unit/test_ingest_duplicates.py",
    "tests/unit/test_ingest_properties.py",
    "tests/unit/test_intake_and_ledger_states.py",
    "tests/unit/test_invoice_and_webhook_body.py",
    "tests/unit/test_reconcile.py",
    "tests/unit/test_shipment_info.py",
    "tests/unit/test_signatures.py",
    "tests/unit/test_standard_webhooks.py",
    "tests/unit/test_ingest_breaches.py",
    "tests/unit/test_ingest_time_budget.py",
    "tests/unit/test_fynd_time_budget.py",
    "tests/unit/test_fynd_call_trace.py",
    "tests/unit/test_fynd_client.py",
    "tests/unit/test_ingest_fuzz.py",
    "tests/unit/test_fake_strictness.py",
    "tests/unit/test_dispatch_at_least_once.py",
    "tests/unit/test_dispatch_scale.py",
    "tests/unit/test_dispatch_time_faults.py",
    "tests/unit/test_e_invoice_rule.py",
    "tests/unit/test_enrichment_properties.py",
    "tests/unit/test_ingest_enrichment.py",
    "tests/unit/test_reconcile_backlog_and_parking.py",
    "tests/unit/test_recovery.py",
    "tests/unit/test_recover_since.py",
    "tests/unit/test_recover_schedule.py",
    "tests/unit/test_writeback.py",
    "tests/unit/test_integrating_callback.py",
    "tests/unit/test_status_document.py",
    "tests/contract",
]
"""The fast tests: the domain through the fakes, no local stack, no subprocess (moto in-process
for the contract suite's adapter half)."""

STAGED_CONFTEST = """\
# mutmut 3.7 reads item._nodeid, which pytest 9 no longer has (mutmut 3.8 fixed it but needs a
# click newer than aws-sam-cli allows): the one attribute it reads, under its old name.
from _pytest.nodes import Node
from hypothesis import HealthCheck, settings

if not hasattr(Node, "_nodeid"):
    Node._nodeid = property(lambda node: str(node.nodeid))

# The stateful property test runs HYPOTHESIS_PROFILE (set to "mutate" by run.py): fewer
# examples per mutant, derandomised so every mutant meets the same ones.
settings.register_profile(
    "mutate",
    max_examples=MUTATE_EXAMPLES,
    stateful_step_count=20,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
"""

STAGED_PYPROJECT = """\
[tool.pytest.ini_options]
testpaths = ["tests"]
pythonpath = [".", "src/tools", "tests"]
addopts = "-p no:randomly -p no:cacheprovider"
filterwarnings = ["ignore:No application metrics to publish:UserWarning"]

[tool.mutmut]
source_paths = [{paths}]
also_copy = ["relay", "src", "template.yaml", "events", "docs", "conftest.py"]
pytest_add_cli_args_test_selection = [{tests}]
"""


def stage(modules: list[str], revision: str | None = None) -> None:
    """The staging copy: relay at the top, the tools, tests and template where tests look for them."""
    shutil.rmtree(STAGE, ignore_errors=True)
    STAGE.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    source = ROOT
    if revision:
        # Another revision, code and tests (e.g. `--revision main` for the score before a change).
        source = STAGE.with_name(STAGE.name + "-source")
        shutil.rmtree(source, ignore_errors=True)
        source.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "archive", revision, "src", "tests", "events", "docs", "template.yaml"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        subprocess.run(["tar", "-x", "-C", str(source)], input=archive.stdout, check=True)
    shutil.copytree(source / "src" / "functions" / "relay", STAGE / "relay", ignore=ignore)
    shutil.copytree(source / "src" / "tools", STAGE / "src" / "tools", ignore=ignore)
    shutil.copytree(source / "tests", STAGE / "tests", ignore=ignore)
    shutil.copytree(source / "events", STAGE / "events", ignore=ignore)
    shutil.copytree(source / "docs", STAGE / "docs", ignore=ignore)
    shutil.copy(source / "template.yaml", STAGE / "template.yaml")
    (STAGE / "conftest.py").write_text(STAGED_CONFTEST.replace("MUTATE_EXAMPLES", str(MUTATE_EXAMPLES)))
    domain = "relay/domain"
    paths = [f"{domain}/{module}.py" for module in modules] if modules else [domain]
    tests = [test for test in FAST_TESTS if (STAGE / test).exists()]
    (STAGE / "pyproject.toml").write_text(
        STAGED_PYPROJECT.format(
            paths=", ".join(f'"{path}"' for path in paths), tests=", ".join(f'"{test}"' for test in tests)
        )
    )


def equivalents() -> dict[str, str]:
    """Mutant name -> why it cannot be killed (tests/mutation/equivalent.txt: `name  reason`)."""
    named: dict[str, str] = {}
    for line in EQUIVALENT.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, reason = line.partition(" ")
            named[name] = reason.strip()
    return named


def results() -> dict[str, str]:
    """Every mutant's status, from `mutmut results --all true` (`name: status`)."""
    out = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "mutmut"), "results", "--all", "true"],
        cwd=STAGE,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found: dict[str, str] = {}
    for line in out.splitlines():
        match = re.match(r"\s*(\S+): (.+)$", line)
        if match:
            found[match.group(1)] = match.group(2).strip()
    return found


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--modules", nargs="*", default=[], help="domain modules (default: all of it)")
    parser.add_argument("--jobs", type=int, default=2, help="mutants tested at once")
    parser.add_argument("--threshold", type=float, default=90.0, help="least score, in percent")
    parser.add_argument("--keep", action="store_true", help="reuse build/mutate's results (no new run)")
    parser.add_argument("--revision", default=None, help="a git revision's code and tests, not the work tree")
    parser.add_argument("--stage", default="", help="another staging directory, build/mutate-STAGE")
    parser.add_argument(
        "--mutants", nargs="*", default=[], help="with --keep: run these mutants (globs) again, then report"
    )
    args = parser.parse_args()
    if args.stage:
        global STAGE
        STAGE = STAGE.with_name(f"mutate-{args.stage}")
    started = time.monotonic()
    if not args.keep:
        stage(args.modules, args.revision)
    if not args.keep or args.mutants:
        subprocess.run(
            [str(ROOT / ".venv" / "bin" / "mutmut"), "run", "--max-children", str(args.jobs), *args.mutants],
            cwd=STAGE,
            check=False,
            env={**os.environ, "HYPOTHESIS_PROFILE": "mutate"},
        )
    statuses = results()
    named = equivalents()
    equivalent = {name for name in statuses if name in named}
    counted = {name: status for name, status in statuses.items() if name not in equivalent}
    killed = [name for name, status in counted.items() if status == "killed"]
    surviving = sorted(name for name, status in counted.items() if status != "killed")
    print()
    print(
        f"mutants: {len(statuses)}, equivalent (named in {EQUIVALENT.relative_to(ROOT)}): {len(equivalent)}"
    )
    for name in surviving:
        print(f"  not killed ({counted[name]}): {name}")
    score = 100.0 * len(killed) / len(counted) if counted else 100.0
    print(f"score: {len(killed)}/{len(counted)} non-equivalent mutants killed = {score:.1f}%")
    print(
        f"took {time.monotonic() - started:.0f} s; `mutmut show NAME` in {STAGE.relative_to(ROOT)} shows one"
    )
    return 0 if score >= args.threshold else 1


if __name__ == "__main__":
    sys.exit(main())
