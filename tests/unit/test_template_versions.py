"""Every function runs behind its "live" alias, a published version: what a deploy sets must reach that version.

SAM publishes a new version when the function's code or the text of its properties changes, not when a parameter's
value does (its version id hashes `{"Ref": "LogLevel"}`, never the value: aws/serverless-application-model#3820), so
a redeploy that only changes a parameter would leave the alias on the old configuration: SnapStart switched on but
not taking effect, a new client id not used. Each function's VersionDescription carries the values of the parameters
its configuration reads; a change of an AWS::Lambda::Version's Description makes CloudFormation replace it, i.e.
publish a new version, which the alias then points at."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import pytest

from infra.local.template_model import Resolver, Template
from infra.scripts.sam_translate import TEMPLATE as TEMPLATE_PATH
from infra.scripts.sam_translate import load_template, translate
from tests.unit.test_template_hardening import parameters_read

PARAMETERS: dict[str, dict[str, Any]] = load_template()["Parameters"]
CONDITIONS: dict[str, Any] = load_template().get("Conditions", {})
# Parameters whose values can be longer than a version's Description holds (256 characters): a change of one of them
# alone reaches the live alias with the next deploy that publishes a version (docs/configuration.md).
TOO_LONG_FOR_THE_DESCRIPTION = frozenset(
    {
        "OAuthScopes",
        "RedirectUri",
        "AllowedReturnTo",
        "EventBusName",
        "TokenKmsKeyArn",
        "AppName",
        "SupportUrl",
        "LogoUrl",
    }
)
# The webhook delivery function reads its own variables and Powertools' (log level, sampling), none of the broker's
# that Globals gives every function: a change of those leaves its behaviour as it was, and its description holds the
# URL instead (tests/unit/test_webhook_delivery.py runs its handler with nothing else set).
OWN_VARIABLES_ONLY = {"WebhookDeliveryFunction": ("WEBHOOK_", "POWERTOOLS_LOG_LEVEL", "POWERTOOLS_LOGGER_SAMPLE_RATE")}
DESCRIPTION_LIMIT = 256  # AWS::Lambda::Version Description, Lambda's PublishVersion
# A valid value other than the default, for the parameters whose spec does not give one.
OTHER_VALUES = {
    "SmartsheetClientId": "anotherClient_2",
    "OAuthScopes": "READ_SHEETS WRITE_SHEETS",
    "RedirectUri": "https://broker.example.com/callback",
    "AllowedReturnTo": "https://app.example.com",
    "TokenKmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    "TokenReaderArns": "arn:aws:iam::123456789012:role/integration-worker",
    "FrontDoorWebAclArn": (
        "arn:aws:wafv2:us-east-1:123456789012:global/webacl/front-door/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
    ),
    "EventBusName": "integration-events",
    "AllowedRegions": "us,eu,gov,au",
    "RefreshSchedule": "rate(15 minutes)",
    "AlarmEmail": "ops@example.com",
    "DebugLogSampleRate": "0.05",
    "AppName": "Acme Sheets",
    "SupportUrl": "https://acme.example.com/help",
    "LogoUrl": "https://cdn.acme.example.com/logo.png",
    "CustomDomainName": "signin.example.com",
    "WebhookUrl": "https://hooks.example.com/broker",
    "CustomDomainCertificateArn": "arn:aws:acm:us-east-1:123456789012:certificate/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b",
}


def other_value(name: str) -> str:
    spec = PARAMETERS[name]
    default = str(spec.get("Default", ""))
    if name in OTHER_VALUES:
        return OTHER_VALUES[name]
    if "AllowedValues" in spec:
        return next(str(v) for v in spec["AllowedValues"] if str(v) != default)
    if "MaxValue" in spec and str(spec["MaxValue"]) != default:
        return str(spec["MaxValue"])
    if "MinValue" in spec:
        return str(spec["MinValue"])
    raise AssertionError(f"give {name} a valid non-default value in OTHER_VALUES")


@cache
def published(parameters: tuple[tuple[str, str], ...] = ()) -> dict[str, tuple[str, str]]:
    """Function logical id -> (its version's logical id, the version's Description as CloudFormation resolves it)."""
    values = {"SmartsheetClientId": "placeholder-client-id", **dict(parameters)}
    document = translate(parameters=dict(parameters))
    resolver = Resolver(Template(path=TEMPLATE_PATH, document=document), stack_name="stack", parameters=values)
    found = {}
    for logical_id, resource in document["Resources"].items():
        if resource["Type"] == "AWS::Lambda::Version":
            function = resource["Properties"]["FunctionName"]["Ref"]
            description = str(resolver.resolve(resource["Properties"].get("Description", "")))
            found[function] = (logical_id, description)
    return found


def published_with(name: str, value: str) -> dict[str, tuple[str, str]]:
    return published(((name, value),))


@cache
def configuration_reads() -> dict[str, frozenset[str]]:
    """Function logical id -> the parameters its configuration depends on (directly, or through a condition)."""
    document = translate()
    reads = {}
    for logical_id, resource in document["Resources"].items():
        if resource["Type"] != "AWS::Lambda::Function":
            continue
        properties = dict(resource["Properties"])
        if logical_id in OWN_VARIABLES_ONLY:
            variables = properties["Environment"]["Variables"]
            own = {k: v for k, v in variables.items() if k.startswith(OWN_VARIABLES_ONLY[logical_id])}
            properties["Environment"] = {"Variables": own}
        names = parameters_read(properties)
        for condition in names & set(CONDITIONS):
            names |= parameters_read(CONDITIONS[condition])
        reads[logical_id] = frozenset(names & set(PARAMETERS))
    return reads


# ------------------------------------------------------------------------------------------------------------ tests
def test_flipping_snapstart_publishes_a_new_version_of_every_function() -> None:
    off, on = published_with("EnableSnapStart", "false"), published_with("EnableSnapStart", "true")

    assert set(off) == set(on) == set(configuration_reads())
    unchanged = sorted(function for function in off if off[function] == on[function])
    assert not unchanged, f"EnableSnapStart=true would not reach the live alias of {unchanged}"


@pytest.mark.parametrize("parameter", sorted(PARAMETERS))
def test_a_parameter_publishes_new_versions_exactly_of_the_functions_whose_configuration_reads_it(
    parameter: str,
) -> None:
    before, after = published(), published_with(parameter, other_value(parameter))

    changed = {function for function in before if before[function] != after[function]}
    reading = {function for function, reads in configuration_reads().items() if parameter in reads}
    if parameter in TOO_LONG_FOR_THE_DESCRIPTION:
        assert not changed, f"{parameter} is listed as too long for the description, yet it is in one"
        return
    assert changed == reading, (
        f"{parameter}: a new version for {sorted(changed)}, but it configures {sorted(reading)}. Put "
        f"${{{parameter}}} in the VersionDescription of exactly the functions whose properties read it "
        "(template.yaml): "
        "a version published with nothing changed would be the same version, and CloudFormation would then delete "
        "the one the alias points at."
    )


def test_the_description_holds_the_longest_values_the_parameters_admit() -> None:
    longest = {}
    for name, spec in PARAMETERS.items():
        if "AllowedValues" in spec:
            longest[name] = max(spec["AllowedValues"], key=lambda v: len(str(v)))
        elif "MaxLength" in spec:
            longest[name] = "x" * int(spec["MaxLength"])
        elif spec.get("Type") == "Number":
            longest[name] = max((str(spec.get(k, "")) for k in ("MinValue", "MaxValue")), key=len)
    longest["DebugLogSampleRate"] = "0.0001"  # its pattern: up to four decimals
    longest["AllowedRegions"] = "us,eu,gov,au"  # its pattern within its MaxLength
    longest["RefreshSchedule"] = "cron(59/30 * * * ? *)"  # the longest its pattern admits
    longest["CustomDomainName"] = ".".join(["a" * 63] * 3 + ["a" * 61])  # 253: a host name with its pattern
    longest["WebhookUrl"] = "https://" + "a" * (int(PARAMETERS["WebhookUrl"]["MaxLength"]) - len("https://"))
    values = tuple((name, str(value)) for name, value in longest.items() if name not in ("SmartsheetRegion",))
    for function, (_, description) in published(values).items():
        assert 0 < len(description) <= DESCRIPTION_LIMIT, (function, len(description), description)


def test_a_code_change_still_publishes_a_new_version(tmp_path: Path) -> None:
    changed = tmp_path / "template.yaml"
    changed.write_text(TEMPLATE_PATH.read_text(encoding="utf-8").replace("CodeUri: functions/", "CodeUri: other/"))
    before = {
        r["Properties"]["FunctionName"]["Ref"]: lid
        for lid, r in translate()["Resources"].items()
        if r["Type"] == "AWS::Lambda::Version"
    }
    after = {
        r["Properties"]["FunctionName"]["Ref"]: lid
        for lid, r in translate(changed)["Resources"].items()
        if r["Type"] == "AWS::Lambda::Version"
    }

    assert set(before) == set(after)
    assert all(before[f] != after[f] for f in before), "a new package would not be published"


def test_the_parameters_too_long_for_the_description_are_the_ones_the_docs_name() -> None:
    configuration = (TEMPLATE_PATH.parent / "docs" / "configuration.md").read_text(encoding="utf-8")
    [note] = [line for line in configuration.splitlines() if "next deploy that publishes a version" in line]
    assert all(f"`{name}`" in note for name in TOO_LONG_FOR_THE_DESCRIPTION), note
