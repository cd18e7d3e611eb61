"""The deployed artifact holds only the relay and its runtime dependencies: `sam build` (no
Docker, python3.13 from the venv) of the template as shipped, then a look inside."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCAL_TOOLS = {"relay_local", "fynd_simulator", "relay_cli", "tests", "moto", "werkzeug", "pytest"}


def _distribution_files(artifact: Path) -> set[str]:
    """Top-level names the installed dependencies own, from their dist-info RECORD files."""
    owned = set()
    for record in artifact.glob("*.dist-info/RECORD"):
        owned.update(line.split("/", 1)[0].split(",", 1)[0] for line in record.read_text().splitlines())
    return owned


def test_the_lambda_package_holds_only_the_relay_and_its_dependencies(tmp_path: Path) -> None:
    # Given the template's functions built as `make build` builds them (they share one CodeUri)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "SAM_CLI_TELEMETRY": "0",
    }
    sam = str(Path(sys.executable).parent / "sam")
    subprocess.run(
        [sam, "build", "IngestFunction", "--template", "template.yaml", "--build-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    artifact = tmp_path / "IngestFunction"
    entries = {path.name for path in artifact.iterdir()}
    # Then the relay is there, nothing of the local tools is, and everything else belongs to a
    # dependency pinned in src/functions/requirements.txt
    assert "relay" in entries
    assert entries & LOCAL_TOOLS == set()
    unowned = entries - _distribution_files(artifact) - {"relay", "requirements.txt"}
    assert {name for name in unowned if not name.endswith(".dist-info")} == set()
    assert not any(path.name.startswith("test") for path in (artifact / "relay").rglob("*"))
