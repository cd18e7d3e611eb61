"""`make deploy` on a machine without AWS credentials: it stops before building and says what
to do (relay_cli.preflight), instead of building for a while and then showing SAM's bare
"Unable to locate credentials". Runs the real Makefile; no network (finding no credentials
needs none)."""

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
AWS_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_REGION",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


def test_make_deploy_without_credentials_stops_before_the_build(tmp_path: Path) -> None:
    # Given a shell with no AWS credentials anywhere (and no instance role to ask)
    environment = {name: value for name, value in os.environ.items() if name not in AWS_VARIABLES}
    environment |= {
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"),
        "AWS_CONFIG_FILE": str(tmp_path / "config"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    # When a user deploys with everything else given (the venv taken as installed)
    done = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-o",
            ".venv/.installed",
            "deploy",
            "STACK=first-hour-test",
            "REGION=ap-south-1",
            "FYND_BASE_URL=https://fynd.invalid",
        ],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )
    # Then it exits 2 with what to do, before `sam build` ever ran, and without SAM's misleading hint
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "no AWS credentials found, so nothing was built or deployed" in done.stderr
    assert "export AWS_PROFILE=" in done.stderr
    assert "sam build" not in output
    assert "sam deploy --guided" not in output
