"""The live-alias check: each function's `live` alias runs the configuration its $LATEST has. A deploy that changes
only one of the five long parameters (docs/configuration.md) updates $LATEST and publishes no version, so the alias
keeps the old values until the next published version; this finds that drift. Values are never shown, only names."""

from __future__ import annotations

from typing import Any, Final

from infra.admin.doctor.checklist import Check, failed, not_here, passed, unchecked
from infra.admin.doctor.readings import ReadError, StackReader
from infra.admin.target import LIVE_ALIAS

NAME: Final = "live alias"
# What a published version keeps of its configuration and a deploy can change. Not compared: what differs between
# $LATEST and any version by nature (ARN, version, dates, revision, state, SnapStart's optimization status).
SETTINGS: Final = (
    "Runtime",
    "Handler",
    "CodeSha256",
    "Timeout",
    "MemorySize",
    "Architectures",
    "Layers",
    "EphemeralStorage",
    "LoggingConfig",
    "TracingConfig",
    "VpcConfig",
    "KMSKeyArn",
    "Role",
)


def differences(latest: dict[str, Any], live: dict[str, Any]) -> list[str]:
    """The names of what the alias's version runs differently from $LATEST: settings, environment variables."""
    names = [name for name in SETTINGS if _comparable(name, latest.get(name)) != _comparable(name, live.get(name))]
    if latest.get("SnapStart", {}).get("ApplyOn") != live.get("SnapStart", {}).get("ApplyOn"):
        names.append("SnapStart")
    now = latest.get("Environment", {}).get("Variables", {})
    then = live.get("Environment", {}).get("Variables", {})
    names += sorted(name for name in set(now) | set(then) if now.get(name) != then.get(name))
    return names


def _comparable(name: str, value: Any) -> Any:
    if name == "Layers":
        return sorted(layer.get("Arn") for layer in value or [])
    return value


def check_live_versions(reader: StackReader) -> Check:
    if reader.facts.local:
        return not_here(NAME, "locally every function runs template.yaml as it is now: no versions, no alias")
    try:
        functions = reader.functions()
    except ReadError as exc:
        return unchecked(NAME, str(exc), exc.fix)
    if not functions:
        return failed(
            NAME,
            "found no Lambda function among the stack's resources",
            "is it a smartsheet-oauth-broker stack, and has its deployment finished? redeploy (make deploy)",
        )
    drifted: list[tuple[str, str, str]] = []  # (logical id, function, what the note says)
    versions: list[str] = []
    for logical_id, function in sorted(functions.items()):
        try:
            latest = reader.configuration(function)
            live = reader.configuration(function, LIVE_ALIAS)
        except ReadError as exc:
            if not exc.missing:
                return unchecked(NAME, str(exc), exc.fix)
            drifted.append((logical_id, function, f"{logical_id} has no {LIVE_ALIAS} alias"))
            continue
        changed = differences(latest, live)
        version = str(live.get("Version", "?"))
        versions.append(f"{logical_id} {version}")
        if changed:
            drifted.append(
                (
                    logical_id,
                    function,
                    f"{logical_id}: {LIVE_ALIAS} runs version {version}, whose {', '.join(changed)} differ(s) from "
                    "$LATEST",
                )
            )
    if not drifted:
        return passed(
            NAME, f"every function's {LIVE_ALIAS} alias runs its current configuration ({', '.join(versions)})"
        )
    publish = "; ".join(
        f"aws lambda update-alias --function-name {function} --name {LIVE_ALIAS} --function-version $(aws lambda "
        f"publish-version --function-name {function} --query Version --output text)"
        for _, function, _ in drifted
    )
    return failed(
        NAME,
        f"{len(drifted)} function(s) run an older configuration than the stack's: "
        f"{', '.join(logical_id for logical_id, _, _ in drifted)}",
        f"publish $LATEST and point {LIVE_ALIAS} at it: {publish}. A deploy publishes a version only when the code "
        "or a parameter in the version description changes; the five long ones are not (docs/configuration.md)",
        *(note for _, _, note in drifted),
    )
