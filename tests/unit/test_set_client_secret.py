"""make set-client-secret: finds the stack's secret, writes the client secret as a new version (the client id is a
stack parameter), brings back the version an upgrade replaced with a placeholder; clear errors."""

from __future__ import annotations

import getpass
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.core import enable_iam_authentication

from infra.scripts import set_client_secret as script
from infra.scripts.sam_translate import load_template

REGION = "us-east-1"
STACK = "broker-test"
CLIENT_ID = "abc123clientid"
PLACEHOLDER = "generatedplaceholder0123456789ab"
NEW_SECRET = "n3wS3cretFromDeveloperTools"


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A deployed broker as far as the script can see: a stack whose output names the app-credentials secret."""
    monkeypatch.chdir(tmp_path)  # no samconfig.toml unless a test writes one
    for name in ("STACK", "AWS_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        secrets = boto3.client("secretsmanager", region_name=REGION)
        arn = secrets.create_secret(
            Name=f"{STACK}-AppCredentialsSecret",
            SecretString=json.dumps({"placeholder": True, "client_secret": PLACEHOLDER}),  # as CloudFormation made it
        )["ARN"]
        deploy_stack(STACK, {"AppCredentialsSecretArn": arn, "LoginUrl": "https://example.invalid/login"})
        yield {"secrets": secrets, "arn": arn}


def deploy_stack(name: str, outputs: dict[str, str]) -> None:
    template = {
        "Parameters": {"SmartsheetClientId": {"Type": "String", "Default": CLIENT_ID}},
        "Resources": {"Placeholder": {"Type": "AWS::SQS::Queue"}},
        "Outputs": {key: {"Value": value} for key, value in outputs.items()},
    }
    boto3.client("cloudformation", region_name=REGION).create_stack(StackName=name, TemplateBody=json.dumps(template))


def stored(aws: dict[str, Any], stage: str = "AWSCURRENT") -> dict[str, Any]:
    value: dict[str, Any] = json.loads(
        aws["secrets"].get_secret_value(SecretId=aws["arn"], VersionStage=stage)["SecretString"]
    )
    return value


def versions(aws: dict[str, Any]) -> dict[str, list[str]]:
    answer = aws["secrets"].list_secret_version_ids(SecretId=aws["arn"])["Versions"]
    return {v["VersionId"]: sorted(v["VersionStages"]) for v in answer}


def run(argv: list[str], stdin: io.StringIO | None = None) -> int:
    return script.main(argv, stdin=stdin if stdin is not None else io.StringIO(NEW_SECRET + "\n"))


def test_piped_secret_becomes_the_new_current_version_holding_the_secret_alone(
    aws: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["--stack", STACK]) == script.EXIT_OK

    assert stored(aws) == {"client_secret": NEW_SECRET}
    assert stored(aws, "AWSPREVIOUS")["client_secret"] == PLACEHOLDER  # a new version, the old one kept
    out, err = capsys.readouterr()
    assert aws["arn"] in out
    assert f"client id: {CLIENT_ID}" in out  # the stack's parameter, shown for a check
    assert NEW_SECRET not in out + err
    assert err == ""


def test_secret_is_read_from_a_no_echo_prompt_on_a_terminal(
    aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts: list[str] = []

    def hidden_input(prompt: str) -> str:
        prompts.append(prompt)
        return NEW_SECRET

    monkeypatch.setattr(getpass, "getpass", hidden_input)
    terminal = Tty("typed where it would echo\n")

    assert run(["--stack", STACK], stdin=terminal) == script.EXIT_OK

    assert stored(aws)["client_secret"] == NEW_SECRET
    assert len(prompts) == 1
    assert terminal.tell() == 0  # the echoing stream was never read
    assert NEW_SECRET not in capsys.readouterr().out


def test_the_client_id_is_a_stack_parameter_and_the_old_option_says_so(
    aws: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    versions_before = versions(aws)

    assert run(["--stack", STACK, "--client-id", "otherClient_9"]) == script.EXIT_USAGE

    assert "SmartsheetClientId parameter" in capsys.readouterr().err
    assert versions(aws) == versions_before


def test_an_older_secret_with_the_client_id_in_it_is_replaced_whole(aws: dict[str, Any]) -> None:
    aws["secrets"].put_secret_value(
        SecretId=aws["arn"], SecretString=json.dumps({"client_id": CLIENT_ID, "client_secret": "old"})
    )
    assert run(["--stack", STACK]) == script.EXIT_OK
    assert stored(aws) == {"client_secret": NEW_SECRET}


def upgrade_regenerated(aws: dict[str, Any]) -> None:
    """What the first deploy of a template whose generation input changed does: a new placeholder version."""
    aws["secrets"].put_secret_value(SecretId=aws["arn"], SecretString=json.dumps({"client_secret": "the-real-one"}))
    aws["secrets"].put_secret_value(
        SecretId=aws["arn"], SecretString=json.dumps({"placeholder": True, "client_secret": PLACEHOLDER})
    )


def test_restore_previous_brings_back_the_secret_an_upgrade_replaced(
    aws: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    upgrade_regenerated(aws)

    assert run(["--stack", STACK, "--restore-previous"], stdin=io.StringIO("")) == script.EXIT_OK

    assert stored(aws) == {"client_secret": "the-real-one"}
    assert stored(aws, "AWSPREVIOUS")["placeholder"] is True
    assert "the-real-one" not in capsys.readouterr().out


def test_restore_previous_refuses_when_there_is_nothing_to_restore(
    aws: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    # A fresh stack: the placeholder is the only version.
    assert run(["--stack", STACK, "--restore-previous"]) == script.EXIT_NOT_FOUND
    assert "holds no client secret" in capsys.readouterr().err
    # A secret already set: not the placeholder, nothing to bring back.
    assert run(["--stack", STACK]) == script.EXIT_OK
    versions_before = versions(aws)
    assert run(["--stack", STACK, "--restore-previous"]) == script.EXIT_USAGE
    assert "not CloudFormation's placeholder" in capsys.readouterr().err
    assert versions(aws) == versions_before


def test_asking_after_an_upgrade_mentions_that_the_old_secret_can_come_back(
    aws: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    upgrade_regenerated(aws)

    assert run(["--stack", STACK]) == script.EXIT_OK

    assert "--restore-previous" in capsys.readouterr().err
    assert stored(aws) == {"client_secret": NEW_SECRET}


def test_the_placeholder_mark_is_the_one_the_template_and_the_functions_use() -> None:
    from smartsheet_oauth.services import PLACEHOLDER_KEY

    generate = load_template()["Resources"]["AppCredentialsSecret"]["Properties"]["GenerateSecretString"]
    assert json.loads(generate["SecretStringTemplate"]) == {script.PLACEHOLDER_KEY: True}
    assert generate["GenerateStringKey"] == "client_secret"
    assert script.PLACEHOLDER_KEY == PLACEHOLDER_KEY


def test_stack_name_comes_from_the_environment(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STACK", STACK)
    assert run([]) == script.EXIT_OK
    assert stored(aws)["client_secret"] == NEW_SECRET


def test_stack_name_and_region_come_from_samconfig(aws: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "samconfig.toml").write_text(
        f'version = 0.1\n[default.global.parameters]\nstack_name = "someone-else"\n'
        f'[default.deploy.parameters]\nstack_name = "{STACK}"\nregion = "{REGION}"\n',
        encoding="utf-8",
    )
    assert run([]) == script.EXIT_OK
    assert stored(aws)["client_secret"] == NEW_SECRET


def test_the_command_line_wins_over_environment_and_samconfig(
    aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "samconfig.toml").write_text('[default.deploy.parameters]\nstack_name = "wrong"\n', encoding="utf-8")
    monkeypatch.setenv("STACK", "also-wrong")
    assert run(["--stack", STACK]) == script.EXIT_OK


def test_no_stack_name_anywhere_is_a_usage_error(aws: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert run([]) == script.EXIT_USAGE
    err = capsys.readouterr().err
    assert "--stack" in err
    assert "STACK=" in err
    assert stored(aws)["client_secret"] == PLACEHOLDER


def test_unknown_stack(aws: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--stack", "no-such-stack"]) == script.EXIT_NOT_FOUND
    err = capsys.readouterr().err
    assert "no stack named 'no-such-stack'" in err
    assert "Traceback" not in err


def test_stack_without_the_output(aws: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    deploy_stack("not-a-broker", {"Something": "else"})
    assert run(["--stack", "not-a-broker"]) == script.EXIT_NOT_FOUND
    assert "has no AppCredentialsSecretArn output" in capsys.readouterr().err


def test_output_naming_a_deleted_secret(aws: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    aws["secrets"].delete_secret(SecretId=aws["arn"], ForceDeleteWithoutRecovery=True)
    assert run(["--stack", STACK]) == script.EXIT_NOT_FOUND
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("given", "reason"),
    [("", "no client secret"), ("   \n", "no client secret"), ("two words\n", "does not look like")],
)
def test_unusable_secret_changes_nothing(
    aws: dict[str, Any], capsys: pytest.CaptureFixture[str], given: str, reason: str
) -> None:
    versions_before = versions(aws)

    assert run(["--stack", STACK], stdin=io.StringIO(given)) == script.EXIT_USAGE

    assert reason in capsys.readouterr().err
    assert versions(aws) == versions_before


def test_a_secret_that_is_not_json_is_replaced(aws: dict[str, Any]) -> None:
    aws["secrets"].put_secret_value(SecretId=aws["arn"], SecretString="not json")
    assert run(["--stack", STACK]) == script.EXIT_OK
    assert stored(aws) == {"client_secret": NEW_SECRET}


def test_the_secret_cannot_be_given_on_the_command_line(aws: dict[str, Any]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run(["--stack", STACK, "--client-secret", NEW_SECRET])
    assert exit_info.value.code == script.EXIT_USAGE
    assert stored(aws)["client_secret"] == PLACEHOLDER


def test_no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask an instance metadata service
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.chdir(tmp_path)

    assert run(["--stack", STACK]) == script.EXIT_NO_CREDENTIALS

    err = capsys.readouterr().err
    assert "no AWS credentials" in err
    assert "Traceback" not in err


def test_unknown_profile(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.chdir(tmp_path)
    assert run(["--stack", STACK, "--profile", "nobody"]) == script.EXIT_NO_CREDENTIALS
    assert "profile not found" in capsys.readouterr().err


@mock_aws
def test_access_denied_on_write(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    iam = boto3.client("iam", region_name=REGION)
    secrets = boto3.client("secretsmanager", region_name=REGION)
    arn = secrets.create_secret(Name="app", SecretString=json.dumps({"client_id": CLIENT_ID, "client_secret": "x"}))[
        "ARN"
    ]
    iam.create_user(UserName="reader")
    iam.put_user_policy(  # may look, may not write
        UserName="reader",
        PolicyName="read-only",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": ["cloudformation:DescribeStacks", "secretsmanager:GetSecretValue"],
                        "Resource": "*",
                    }
                ],
            }
        ),
    )
    keys = iam.create_access_key(UserName="reader")["AccessKey"]
    deploy_stack(STACK, {"AppCredentialsSecretArn": arn})
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", keys["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", keys["SecretAccessKey"])

    # The setup above runs unchecked; from here moto enforces IAM. A switch, not a count of the setup's calls:
    # a counted budget (set_initial_no_auth_action_count) was spent early by a stray call and failed CI once.
    with enable_iam_authentication():
        assert run(["--stack", STACK]) == script.EXIT_ACCESS_DENIED

    err = capsys.readouterr().err
    assert "access denied while writing the app-credentials secret" in err
    assert "Traceback" not in err


def test_an_unexpected_error_is_one_line_without_the_secret(
    aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def explode(*_args: object) -> str:
        raise RuntimeError(f"something quoted the value {NEW_SECRET}")

    monkeypatch.setattr(script, "put_credentials", explode)

    assert run(["--stack", STACK]) == script.EXIT_UNEXPECTED

    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "RuntimeError" in err
    assert NEW_SECRET not in err
