"""The Lambda package (src/functions/requirements.txt) is pinned to what the tests run with."""

import tomllib
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


def pins() -> dict[str, str]:
    lines = (ROOT / "src" / "functions" / "requirements.txt").read_text().splitlines()
    found = {}
    for line in lines:
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", f"{line}: the Lambda package pins exact versions"
            found[requirement.name.lower()] = specifier.version
    return found


def test_every_runtime_dependency_is_pinned_within_its_range() -> None:
    pinned = pins()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for line in project["dependencies"]:
        requirement = Requirement(line)
        name = requirement.name.lower()
        assert name in pinned, f"{name} is a runtime dependency but not in src/functions/requirements.txt"
        assert requirement.specifier.contains(pinned[name]), (
            f"{name}=={pinned[name]} is outside {requirement.specifier}"
        )


def test_tests_run_with_the_pinned_versions() -> None:
    for name, pinned in pins().items():
        assert version(name) == pinned, f"{name}: .venv has {version(name)}, the Lambda package {pinned}"
