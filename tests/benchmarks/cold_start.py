"""Import cost of each handler as Lambda loads it from the `sam build` output, against boto3 alone.

Lambda's cold start imports the handler module from the function's package (`.aws-sam/build/
<Function>`), with the template's default environment. Each sample is a fresh interpreter
started without site-packages (`-S`): only the standard library and the package are on the
path, as in Lambda. The template builds for arm64, so the package's one native module
(pydantic_core) is replaced by the same version built for this machine, from the venv.

Samples alternate between the modules (boto3, ingest, dispatch, ...) so a change in the
machine's load hits all of them alike; the claim is the ratio of medians, never a time.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pydantic_core

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / ".aws-sam" / "build"

SCRIPT = """
import sys, time
sys.path[:0] = {path!r}
started = time.perf_counter()
import {module}
{after}
elapsed = time.perf_counter() - started
heavy = sorted({{n.split(".")[0] for n in sys.modules}} & {{"aws_xray_sdk", "wrapt", "awscrt"}})
# VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so it would report the forking parent's.
peak_kib = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(elapsed, peak_kib, ",".join(heavy))
"""


@dataclass(frozen=True)
class Subject:
    label: str
    function: str
    module: str
    after: str = ""
    environment: tuple[tuple[str, str], ...] = ()


SUBJECTS = (
    Subject("import boto3", "DispatchFunction", "boto3"),
    Subject("ingest handler", "IngestFunction", "relay.handlers.ingest"),
    Subject("dispatch handler", "DispatchFunction", "relay.handlers.dispatch"),
    Subject("reconcile handler", "ReconcileFunction", "relay.handlers.reconcile"),
    Subject(
        "dispatch handler + X-Ray SDK (XRaySdk=true)",
        "DispatchFunction",
        "relay.handlers.dispatch",
        after="from relay.observability import tracer; tracer.sdk()",
        environment=(("RELAY_XRAY_SDK", "true"),),
    ),
)


def default_environment(task_root: Path) -> dict[str, str]:
    """What Lambda sets, plus the template's Globals with their default parameter values."""
    return {
        "PATH": "/usr/bin:/bin",
        "LAMBDA_TASK_ROOT": str(task_root),
        "AWS_REGION": "ap-south-1",
        "AWS_DEFAULT_REGION": "ap-south-1",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
        "POWERTOOLS_SERVICE_NAME": "invoice-relay",
        "POWERTOOLS_METRICS_NAMESPACE": "FyndInvoiceRelay",
        "POWERTOOLS_LOG_LEVEL": "INFO",
        "RELAY_XRAY_SDK": "false",
    }


def host_native_overlay(directory: Path) -> Path:
    """A directory holding this machine's pydantic_core (the build's is aarch64), first on the path."""
    overlay = directory / "native"
    overlay.mkdir(exist_ok=True)
    link = overlay / "pydantic_core"
    if not link.exists():
        link.symlink_to(Path(pydantic_core.__file__).parent)
    return overlay


def sample(subject: Subject, overlay: Path) -> tuple[float, int, str]:
    task_root = BUILD / subject.function
    script = SCRIPT.format(path=[str(overlay), str(task_root)], module=subject.module, after=subject.after)
    environment = {**default_environment(task_root), **dict(subject.environment)}
    result = subprocess.run(
        [sys.executable, "-S", "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env=environment,
        cwd=task_root,
    )
    seconds, max_rss_kib, heavy = [*result.stdout.split(), ""][:3]
    return float(seconds), int(max_rss_kib), heavy


def measure(runs: int = 9) -> dict[str, object]:
    if not (BUILD / "DispatchFunction" / "relay").is_dir():
        raise SystemExit("no sam build output: run `make build` first (make bench does)")
    samples: dict[str, list[float]] = {subject.label: [] for subject in SUBJECTS}
    rss: dict[str, list[int]] = {subject.label: [] for subject in SUBJECTS}
    heavy: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as directory:
        overlay = host_native_overlay(Path(directory))
        for run in range(runs):
            # Alternate the order too, so no subject always runs right after another.
            order = SUBJECTS if run % 2 == 0 else tuple(reversed(SUBJECTS))
            for subject in order:
                seconds, max_rss, loaded = sample(subject, overlay)
                samples[subject.label].append(seconds * 1000)
                rss[subject.label].append(max_rss)
                heavy[subject.label] = loaded
    baseline = statistics.median(samples["import boto3"])
    rows = {
        label: {
            "median_ms": round(statistics.median(values), 1),
            "ratio_to_boto3": round(statistics.median(values) / baseline, 2),
            "min_ratio_to_boto3": round(min(values) / min(samples["import boto3"]), 2),
            "max_rss_mib": round(statistics.median(rss[label]) / 1024, 1),
            "heavy_modules_loaded": heavy[label].split(",") if heavy[label] else [],
        }
        for label, values in samples.items()
    }
    return {
        "runs": runs,
        "load_average": os.getloadavg()[0],
        "subjects": rows,
        "beyond_boto3_ms": breakdown(),
    }


def _self_times(function: str, module: str, overlay: Path) -> dict[str, int]:
    """Microseconds each module spends on its own import (-X importtime), in a fresh interpreter."""
    task_root = BUILD / function
    script = f"import sys; sys.path[:0] = {[str(overlay), str(task_root)]!r}; import {module}"
    result = subprocess.run(
        [sys.executable, "-S", "-X", "importtime", "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env=default_environment(task_root),
        cwd=task_root,
    )
    times: dict[str, int] = {}
    for line in result.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[0].strip().isdigit():
            times[parts[2].strip()] = int(parts[0])
    return times


def breakdown() -> dict[str, dict[str, float]]:
    """What each handler imports beyond boto3, by top-level package, in milliseconds (one run)."""
    with tempfile.TemporaryDirectory() as directory:
        overlay = host_native_overlay(Path(directory))
        boto3_modules = set(_self_times("DispatchFunction", "boto3", overlay))
        out: dict[str, dict[str, float]] = {}
        for function, module in (
            ("IngestFunction", "relay.handlers.ingest"),
            ("DispatchFunction", "relay.handlers.dispatch"),
        ):
            packages: dict[str, float] = {}
            for name, micros in _self_times(function, module, overlay).items():
                if name not in boto3_modules:
                    top = name.split(".")[0]
                    packages[top] = packages.get(top, 0) + micros / 1000
            ranked = sorted(packages.items(), key=lambda item: -item[1])
            out[module] = {name: round(ms, 1) for name, ms in ranked if ms >= 2}
        return out


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 5), indent=2))
