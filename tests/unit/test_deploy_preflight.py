"""`make deploy` checks the region and the AWS credentials before it builds (relay_cli.preflight),
and says what to do. Unit tests touch no network: finding no credentials needs none."""

from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from relay_cli import preflight
from relay_cli.preflight import PreflightError, check

AWS_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A machine with no AWS credentials anywhere (and no instance role to ask)."""
    for name in AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.mark.usefixtures("no_credentials")
def test_no_credentials_stops_before_the_build_saying_what_to_do(capsys: pytest.CaptureFixture[str]) -> None:
    # Given a machine with no AWS credentials
    # When make deploy's preflight runs for a real region
    code = preflight.main(["--region", "ap-south-1"])
    # Then it exits 2 and says how to give credentials, and that nothing was built
    err = capsys.readouterr().err
    assert code == 2
    assert "no AWS credentials found, so nothing was built or deployed" in err
    assert "export AWS_PROFILE=" in err
    assert "AWS_ACCESS_KEY_ID" in err
    assert "sam deploy --guided" not in err


@pytest.mark.usefixtures("no_credentials")
def test_a_region_that_does_not_exist_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    # When the region is mistyped / Then it is named, with examples, before anything else
    code = preflight.main(["--region", "ap-south1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "REGION 'ap-south1' is not an AWS region" in err


@pytest.mark.usefixtures("no_credentials")
def test_a_profile_that_does_not_exist_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_PROFILE", "nonesuch")
    with pytest.raises(PreflightError, match="nonesuch") as raised:
        check("ap-south-1")
    assert raised.value.exit_code == 2


class RefusingSts:
    def get_caller_identity(self) -> Any:
        raise ClientError({"Error": {"Code": "ExpiredToken", "Message": "expired"}}, "GetCallerIdentity")


class SessionWithExpiredKey:
    """A session that finds credentials, which STS then refuses."""

    def __init__(self, region_name: str) -> None:
        self._real = boto3.Session(region_name=region_name, aws_access_key_id="a", aws_secret_access_key="b")

    def get_available_partitions(self) -> list[str]:
        return self._real.get_available_partitions()

    def get_available_regions(self, service: str, partition_name: str) -> list[str]:
        return self._real.get_available_regions(service, partition_name=partition_name)

    def get_credentials(self) -> object:
        return self._real.get_credentials()

    def client(self, *_: Any, **__: Any) -> RefusingSts:
        return RefusingSts()


def test_credentials_aws_refuses_are_caught_before_the_build() -> None:
    with pytest.raises(PreflightError, match=r"refused these credentials \(ExpiredToken\)") as raised:
        check("ap-south-1", SessionWithExpiredKey)  # type: ignore[arg-type]
    assert raised.value.exit_code == 2
