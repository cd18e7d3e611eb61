"""The house layout holds: the domain imports no AWS SDK, no HTTP client and no adapter; the
local tools keep to public moto and start functions as light as Lambda does."""

import ast
import re
import subprocess
import sys
from pathlib import Path

DOMAIN = Path(__file__).resolve().parents[2] / "src" / "functions" / "relay" / "domain"
FORBIDDEN = ("boto3", "botocore", "urllib3", "relay.adapters", "relay.handlers", "relay.wiring", "relay.api")


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_domain_modules_import_nothing_from_the_outside_rooms() -> None:
    modules = sorted(DOMAIN.glob("*.py"))
    assert len(modules) > 5
    for path in modules:
        for name in imported_modules(path):
            assert not name.startswith(FORBIDDEN), f"{path.name} imports {name}"


def test_the_local_tools_use_no_private_moto_module_or_attribute() -> None:
    # Given every module of the local tools
    tools = Path(__file__).resolve().parents[2] / "src" / "tools"
    sources = {path: path.read_text() for path in tools.rglob("*.py")}
    assert sources
    # Then none imports a moto module or reaches an attribute whose name starts with "_"
    private = re.compile(r"\bmoto(\.\w+)*\._\w+|_server\._server")
    assert [str(path) for path, text in sources.items() if private.search(text)] == []


def test_a_local_execution_environment_starts_without_the_local_stack_or_an_aws_sdk() -> None:
    # Given a fresh interpreter, as relay_local starts each function's worker process
    src = Path(__file__).resolve().parents[2] / "src"
    script = "import sys, relay_local.worker; print(sorted({'moto', 'boto3', 'botocore', 'yaml'} & set(sys.modules)))"
    # When the worker module is imported, before any handler
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{src / 'functions'}:{src / 'tools'}"},
        check=False,
    )
    # Then it has loaded nothing the handler would not load itself: its cold start is the handler's
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
