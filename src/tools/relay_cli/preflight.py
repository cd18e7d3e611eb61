"""`make deploy`'s first step: AWS credentials and the region, checked before anything is built.

Without it, a machine with no credentials builds for a while, then shows SAM's bare "Unable
to locate credentials" with SAM's own hint (`sam deploy --guided`) beside it, which sends a
new user the wrong way. Here the region is checked against botocore's own list (no network),
credentials are looked up the way every AWS tool does (environment, profile, SSO, instance
role; finding none needs no network either), and only then asks STS who they are, so a
refused or expired key is caught before the build too. Each failure says what to do.

`python -m relay_cli.preflight --region R` exits 0 (and prints the identity it will deploy
as), 2 (no or refused credentials, or no such region: something for the user to set) or
3 (AWS not reachable).
"""

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, ProfileNotFound

_STS_CONFIG = Config(connect_timeout=5, read_timeout=10, retries={"mode": "standard", "max_attempts": 2})

NO_CREDENTIALS = """\
deploy: no AWS credentials found, so nothing was built or deployed.
  Looked where every AWS tool looks: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE,
  ~/.aws/credentials and ~/.aws/config (SSO too), and an instance or container role.
  Give this shell credentials for the account to deploy to, one of:
    export AWS_PROFILE=<profile>                  (a profile in ~/.aws/config; for SSO, first
                                                    `aws sso login --profile <profile>`)
    export AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... [AWS_SESSION_TOKEN=...]
    aws configure                                 (with the AWS CLI: writes ~/.aws/credentials)
  then run the same `make deploy` again."""


class PreflightError(Exception):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Identity:
    arn: str
    account: str
    region: str


def check(region: str, session_factory: Callable[..., boto3.Session] = boto3.Session) -> Identity:
    """Who `make deploy` would deploy as, and where; PreflightError saying what to do otherwise."""
    try:
        session = session_factory(region_name=region) if region else session_factory()
    except ProfileNotFound as error:
        raise PreflightError(
            f"deploy: {error}; set AWS_PROFILE to a profile in ~/.aws/config (or unset it)", 2
        ) from None
    _check_region(session, region)
    try:
        credentials = session.get_credentials()
    except BotoCoreError as error:  # an SSO token that expired, a credential process that failed
        raise PreflightError(
            f"deploy: the AWS credentials could not be loaded: {error}\n"
            "  For an SSO profile: `aws sso login --profile <profile>`, then run `make deploy` again.",
            2,
        ) from None
    if credentials is None:
        raise PreflightError(NO_CREDENTIALS, 2)
    try:
        found = session.client("sts", config=_STS_CONFIG).get_caller_identity()
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "refused")
        raise PreflightError(
            f"deploy: AWS refused these credentials ({code}): they are wrong, expired or disabled.\n"
            "  Renew them (a new key, `aws sso login`, a fresh session token), then run `make deploy` again.",
            2,
        ) from None
    except (EndpointConnectionError, BotoCoreError) as error:
        raise PreflightError(f"deploy: cannot reach AWS (STS in {region}): {error}", 3) from None
    return Identity(arn=found["Arn"], account=found["Account"], region=region)


def _check_region(session: boto3.Session, region: str) -> None:
    known = {
        name
        for partition in session.get_available_partitions()
        for name in session.get_available_regions("cloudformation", partition_name=partition)
    }
    if region not in known:
        raise PreflightError(
            f"deploy: REGION {region!r} is not an AWS region CloudFormation serves"
            " (e.g. ap-south-1 for Mumbai, us-east-1); run `make deploy REGION=...` with one",
            2,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m relay_cli.preflight", description=__doc__)
    parser.add_argument("--region", required=True)
    args = parser.parse_args(argv)
    try:
        identity = check(args.region)
    except PreflightError as error:
        print(error, file=sys.stderr)
        return error.exit_code
    print(f"deploy: deploying as {identity.arn} (account {identity.account}) to {identity.region}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
